//! Launch: loading an instance's table where the agent's packets pass, checking the kernel
//! has it, and deleting it again.
//!
//! Input: the JSON from [`Ruleset::fill`](super::Ruleset::fill) and its table name. Output: a
//! [`LoadedTable`]. Three places: the host's namespace ([`apply()`], or [`start_host_load`]
//! then [`HostLoad::finish`] with the cgroup dispatch rule), a running agent's namespace
//! ([`load_into`] then [`verify_on`]), or a namespace made for an agent not yet cloned
//! ([`load_in_new_netns`]). Invariants: a table that is not confirmed present over netlink
//! is an error, never assumed; from the moment a host-namespace load started, every failure
//! and every drop deletes the table; [`sweep_stale`] deletes only `aegis_*` tables whose
//! supervisor is gone.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::kernel::{Dispatch, add_dispatch, delete_table, list_tables, table_present, table_present_on};
use super::names::table_pid;
use super::nft::{AgentNs, NftIn, finish_nft, nft_binary, run_nft, spawn_nft};
use super::{FAMILY, NftError};

/// A table loaded by [`apply`] into the host's namespace (deleted by
/// [`LoadedTable::remove`] or on drop), or into an agent's own namespace (it dies with the
/// namespace; nothing to delete).
#[derive(Debug)]
pub struct LoadedTable {
    table: String,
    removed: bool,
}

/// Loads `json` (from [`Ruleset::fill`](super::Ruleset::fill), whose table is `table`) into
/// the host's namespace and, in `host` mode, the `dispatch` rule ([`add_dispatch`]); then
/// checks the table is there. On any failure the table is deleted again.
/// ([`start_host_load`] is the same in two steps, so the load can start before the agent's
/// leaf exists.)
pub fn apply(json: &[u8], table: &str, dispatch: Option<Dispatch>) -> Result<LoadedTable, NftError> {
    let load = start_host_load(json, table)?;
    match dispatch {
        Some(d) => load.finish(d),
        None => load.finish_plain(),
    }
}

/// A host-namespace table load running in the background (`nft` started before the
/// agent's cgroup leaf exists: the table does not depend on it); [`HostLoad::finish`] adds
/// the dispatch rule once the leaf exists. The agent must not run before it finished.
pub struct HostLoad {
    child: Option<std::process::Child>,
    table: String,
}

impl Drop for HostLoad {
    /// An abandoned load: stop `nft` and delete whatever it committed.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = delete_table(&self.table, None);
        }
    }
}

/// Starts `nft -j -f -` with `json` in the caller's (the host's) namespace.
pub fn start_host_load(json: &[u8], table: &str) -> Result<HostLoad, NftError> {
    let child = spawn_nft(&["-j", "-f", "-"], json, NftIn::Here, "loading the ruleset")?;
    Ok(HostLoad { child: Some(child), table: table.to_string() })
}

impl HostLoad {
    /// Waits for `nft`, adds the dispatch rule over netlink (no second `nft`), and checks
    /// the table is there. On failure the table is deleted.
    pub fn finish(self, dispatch: Dispatch) -> Result<LoadedTable, NftError> {
        self.finish_with(Some(dispatch))
    }

    /// [`HostLoad::finish`] without a dispatch rule (a table that hooks itself).
    pub fn finish_plain(self) -> Result<LoadedTable, NftError> {
        self.finish_with(None)
    }

    fn finish_with(mut self, dispatch: Option<Dispatch>) -> Result<LoadedTable, NftError> {
        // From here the table is deleted on every failure (LoadedTable's Drop).
        let loaded = LoadedTable { table: self.table.clone(), removed: false };
        if let Some(c) = self.child.take() {
            finish_nft(c, "loading the ruleset")?;
        }
        if let Some(d) = dispatch {
            add_dispatch(&self.table, d)?;
        }
        // The check asks the kernel directly over netlink (no further `nft` process).
        if !table_present(&self.table, None)? {
            return Err(NftError::Missing(format!("{FAMILY} {}", self.table)));
        }
        Ok(loaded)
    }
}

/// Loads `json` into a running agent's network namespace ([`AgentNs`]), running `during`
/// while `nft` works (`during` always runs). Verify with [`verify_on`] afterwards: the
/// caller may not be able to enter that namespace itself.
pub fn load_into<R>(json: &[u8], ns: &AgentNs, during: impl FnOnce() -> R) -> (Result<(), NftError>, R) {
    let what = "loading the ruleset into the agent's network namespace";
    let child = spawn_nft(&["-j", "-f", "-"], json, NftIn::Agent(ns), what);
    let r = during();
    (child.and_then(|c| finish_nft(c, what)).map(|_| ()), r)
}

/// Checks over `sock` (a NETLINK_NETFILTER socket of the agent's namespace, opened by a
/// process with CAP_NET_ADMIN there) that `table` exists. The table lives and dies with
/// that namespace.
pub fn verify_on(sock: &std::os::fd::OwnedFd, table: &str) -> Result<LoadedTable, NftError> {
    if !table_present_on(sock, table)? {
        return Err(NftError::Missing(format!("{FAMILY} {table}")));
    }
    Ok(LoadedTable { table: table.to_string(), removed: true })
}

/// Which step of [`loopback_up`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopbackStep {
    /// Opening the socket the ioctls go through.
    Socket,
    /// SIOCGIFFLAGS / SIOCSIFFLAGS on `lo`.
    Flags,
}

/// Sets `lo` up in the calling thread's network namespace (idempotent). Raw syscalls only
/// (socket, ioctl, close): callable between fork and exec. `Err` is the step and errno.
pub fn loopback_up() -> Result<(), (LoopbackStep, i32)> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err((LoopbackStep::Socket, errno()));
    }
    // SAFETY: an all-zero ifreq is valid; we fill the name and flags.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let ok = unsafe {
        libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0
        }
    };
    let e = errno();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(s) };
    if ok { Ok(()) } else { Err((LoopbackStep::Flags, e)) }
}

/// A network namespace made for an agent that does not exist yet: `nft` runs in it
/// (loading the table) while the supervisor prepares and clones the agent into it. The
/// namespace belongs to the supervisor's (initial) user namespace, so the agent holds no
/// capability over it, not even to take `lo` down.
pub struct PendingNetns {
    /// The namespace (an open `/proc/<nft>/ns/net`): setns into it before clone.
    pub ns: std::fs::File,
    /// `None` once finished.
    child: Option<std::process::Child>,
    table: String,
}

impl Drop for PendingNetns {
    /// An abandoned load (the launch failed first): stop and reap `nft`.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `nft -j -f -` in a new network namespace (unshared, loopback up, before exec)
/// with `json` on stdin. Returns as soon as the namespace exists; the load goes on.
pub fn load_in_new_netns(json: &[u8], table: &str) -> Result<PendingNetns, NftError> {
    let what = "loading the ruleset into a new network namespace";
    let mut cmd = Command::new(nft_binary()?);
    cmd.args(["-j", "-f", "-"]).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and makes raw syscalls only
    // (unshare, then socket, ioctl, close in `loopback_up`), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            loopback_up().map_err(|(_, e)| std::io::Error::from_raw_os_error(e))
        });
    }
    // `spawn` returns once exec succeeded, so the namespace exists now; nft cannot finish
    // before it has read stdin, which is written after the namespace is opened.
    let mut child = cmd.spawn().map_err(|source| NftError::Spawn { what, source })?;
    let ns = match std::fs::File::open(format!("/proc/{}/ns/net", child.id())) {
        Ok(f) => f,
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NftError::Spawn { what: "opening the new network namespace", source });
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(json).map_err(|source| NftError::Spawn { what, source })?;
    }
    Ok(PendingNetns {
        ns,
        child: Some(child),
        table: table.to_string(),
    })
}

impl PendingNetns {
    /// Waits for `nft` and verifies the table over netlink. The returned table lives and
    /// dies with the namespace (it is not deleted on drop).
    pub fn finish(mut self) -> Result<LoadedTable, NftError> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", self.ns.as_raw_fd()));
        if let Some(c) = self.child.take() {
            finish_nft(c, "loading the ruleset")?;
        }
        if !table_present(&self.table, Some(&path))? {
            return Err(NftError::Missing(format!("{FAMILY} {}", self.table)));
        }
        Ok(LoadedTable {
            table: self.table.clone(),
            removed: true,
        })
    }
}

impl LoadedTable {
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Deletes the table. Idempotent.
    pub fn remove(&mut self) -> Result<(), NftError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        delete_table(&self.table, None).map(|_| ())
    }

    /// Forgets the table without deleting it (used when its namespace is gone).
    pub fn disarm(&mut self) {
        self.removed = true;
    }
}

impl Drop for LoadedTable {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Whether a `table inet <table>` exists in the current (host) network namespace.
pub fn table_exists(table: &str) -> bool {
    run_nft(&["list", "table", FAMILY, table], b"", "listing").is_ok()
}

/// Deletes `inet aegis_*` tables of the host namespace whose supervisor pid
/// ([`table_pid`]) is not alive (left by a supervisor killed with SIGKILL). Netlink only (a
/// dump and one delete per stale table, no `nft` process), so the runtime can afford it
/// after every host-mode launch. Returns the deleted table names; nothing when the caller
/// may not list tables (not root).
pub fn sweep_stale(alive: &dyn Fn(i32) -> bool) -> Vec<String> {
    let Ok(tables) = list_tables(None) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in tables {
        if !name.starts_with("aegis_") {
            continue;
        }
        let Some(pid) = table_pid(&name) else { continue };
        if alive(pid) {
            continue;
        }
        if let Ok(true) = delete_table(&name, None) {
            removed.push(name);
        }
    }
    removed
}
