//! Running the `nft` binary: found at a fixed set of absolute paths, started with an empty
//! environment, in the caller's namespaces or joined to a running agent's user and network
//! namespaces ([`AgentNs`]).
//!
//! Input: `nft` arguments and its stdin. Output: a started child ([`spawn_nft`]) or its
//! stdout ([`run_nft`]); a non-zero exit is [`NftError::Nft`] with nft's stderr. Invariants:
//! never the caller's `PATH` or environment (`nft` runs with the supervisor's privileges);
//! the code between fork and exec makes raw system calls only.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::NftError;

/// Directories searched for `nft`, in order: never the caller's `PATH` (a launcher's PATH
/// may hold anything, and `nft` runs with the supervisor's privileges).
pub const NFT_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"];

/// The `nft` binary: the first executable regular file named `nft` in [`NFT_DIRS`].
pub fn nft_binary() -> Result<PathBuf, NftError> {
    use std::os::unix::fs::PermissionsExt as _;
    NFT_DIRS
        .iter()
        .map(|d| Path::new(d).join("nft"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| NftError::Spawn {
            what: "finding nft",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no nft in {} (install the nftables package)", NFT_DIRS.join(", ")),
            ),
        })
}

/// The namespaces of a running agent that `nft` joins to load its table: its user namespace
/// (joined first: there the helper holds CAP_NET_ADMIN over the agent's network namespace,
/// whoever launched it, and keeps it across exec as an ambient capability) and its network
/// namespace.
#[derive(Debug)]
pub struct AgentNs {
    user: std::fs::File,
    net: std::fs::File,
}

impl AgentNs {
    /// Opens `/proc/<pid>/ns/{user,net}`.
    pub fn of_pid(pid: i32) -> Result<AgentNs, NftError> {
        let open = |ns: &str| {
            std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).map_err(|source| NftError::Spawn {
                what: "opening the agent's namespaces",
                source,
            })
        };
        Ok(AgentNs { user: open("user")?, net: open("net")? })
    }
}

/// Where `nft` runs: the caller's namespaces, or an agent's.
#[derive(Clone, Copy)]
pub(super) enum NftIn<'a> {
    Here,
    Agent(&'a AgentNs),
}

/// CAP_NET_ADMIN (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// In a forked child before exec: joins the agent's user then network namespace and makes
/// CAP_NET_ADMIN ambient, so that `nft` (not uid 0 in that namespace when the launcher is
/// not root) keeps it. Raw syscalls only.
fn join_agent_ns(user: i32, net: i32) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let err = std::io::Error::last_os_error;
    // SAFETY: setns on namespace fds the parent opened; this process is single-threaded
    // (just forked) and shares no fs struct, as joining a user namespace requires.
    if unsafe { libc::setns(user, libc::CLONE_NEWUSER) } != 0 {
        return Err(err());
    }
    // SAFETY: as above.
    if unsafe { libc::setns(net, libc::CLONE_NEWNET) } != 0 {
        return Err(err());
    }
    let mut hdr = Header { version: V3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a header and two data structs we own.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) != 0 {
            return Err(err());
        }
        data[0].inheritable |= 1 << CAP_NET_ADMIN;
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) != 0 {
            return Err(err());
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, CAP_NET_ADMIN as libc::c_ulong, 0, 0) != 0 {
            return Err(err());
        }
    }
    Ok(())
}

/// Starts `nft` (at its absolute path, with an empty environment) with `args` and `input`
/// on stdin (closed after writing), in the caller's namespaces or an agent's.
pub(super) fn spawn_nft(args: &[&str], input: &[u8], place: NftIn, what: &'static str) -> Result<std::process::Child, NftError> {
    let mut cmd = Command::new(nft_binary()?);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let NftIn::Agent(ns) = place {
        let (user, net) = (ns.user.as_raw_fd(), ns.net.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and makes raw syscalls
        // only (setns, capget, capset, prctl); the fds live until `spawn` has returned.
        unsafe {
            cmd.pre_exec(move || join_agent_ns(user, net));
        }
    }
    let mut child = cmd.spawn().map_err(|source| NftError::Spawn { what, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        // nft reads all of stdin before it answers, and our inputs are far below the pipe
        // buffer, so writing before reading cannot deadlock.
        stdin.write_all(input).map_err(|source| NftError::Spawn { what, source })?;
    }
    Ok(child)
}

pub(super) fn finish_nft(child: std::process::Child, what: &'static str) -> Result<Vec<u8>, NftError> {
    let out = child.wait_with_output().map_err(|source| NftError::Spawn { what, source })?;
    if !out.status.success() {
        return Err(NftError::Nft {
            what,
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Runs `nft` with `args` and `input` on stdin in the caller's namespaces. Returns stdout.
pub fn run_nft(args: &[&str], input: &[u8], what: &'static str) -> Result<Vec<u8>, NftError> {
    finish_nft(spawn_nft(args, input, NftIn::Here, what)?, what)
}
