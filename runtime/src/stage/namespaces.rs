//! Stage 3, namespaces and uid/gid maps.
//!
//! Input: the network mode and whether namespaces are required or best-effort. Output: a
//! child created by `clone` in new user, mount, pid, ipc, uts and (unless `host` mode)
//! network namespaces; its uid/gid maps; in the child, a new cgroup namespace (unshared
//! after the supervisor moved it into the leaf, so the leaf is its root), the hostname, and
//! loopback up. Invariants: the agent is pid 1 of its pid namespace; [`verify`] compares
//! `/proc/<child>/ns/*` with the supervisor's own and fails the launch if any required one is
//! shared; the child checks `/proc/self/ns/cgroup` changed.
//!
//! Identity ([`crate::identity`]): the maps are identity maps of the agent's ids (`U U 1`,
//! `G G 1`), plus `0 0 1` when `aegis-exec` runs as root. The child does its setup with the
//! capabilities it holds in the new user namespace (as uid 0 of it under a root launcher,
//! as U under an unprivileged one) and in the `caps` stage settles on the agent's ids for
//! good, drops every capability and sets no_new_privs, so nothing it execs can get back to
//! uid 0. An unprivileged map writer must deny setgroups first (kernel rule).

use std::ffi::CString;
use std::os::unix::fs::MetadataExt as _;

use crate::stage::report::Fail;
use crate::exit::RunError;
use crate::identity::Identity;
use crate::stage::Stage;

pub const WHAT_CGROUPNS: u32 = 1;
pub const WHAT_CGROUPNS_SAME: u32 = 2;
pub const WHAT_HOSTNAME: u32 = 3;
pub const WHAT_LO_SOCKET: u32 = 4;
pub const WHAT_LO_UP: u32 = 5;

/// What the child does in this stage.
pub struct ChildNs {
    pub new_cgroupns: bool,
    pub hostname: Option<CString>,
    pub lo_up: bool,
}

/// Namespaces a launch creates; `Isolation::None` is the Landlock + seccomp + cgroup mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// user, mount, pid, ipc, uts, cgroup, and net unless `host_net`.
    Full { host_net: bool },
    /// No namespaces (user namespaces unavailable and the bundle allows best-effort).
    None,
}

impl Isolation {
    pub fn clone_flags(self) -> libc::c_int {
        match self {
            Isolation::Full { host_net } => {
                let mut f = libc::CLONE_NEWUSER
                    | libc::CLONE_NEWNS
                    | libc::CLONE_NEWPID
                    | libc::CLONE_NEWIPC
                    | libc::CLONE_NEWUTS;
                if !host_net {
                    f |= libc::CLONE_NEWNET;
                }
                f
            }
            Isolation::None => 0,
        }
    }

    /// `/proc/<pid>/ns/<name>` entries that must differ from the supervisor's.
    pub fn expected(self) -> Vec<&'static str> {
        match self {
            Isolation::Full { host_net } => {
                let mut v = vec!["user", "mnt", "pid", "ipc", "uts"];
                if !host_net {
                    v.push("net");
                }
                v
            }
            Isolation::None => vec![],
        }
    }
}

/// `clone(2)` with `flags` and fork semantics (child continues on a copy of this stack).
/// Returns the child's pid in the parent and 0 in the child.
///
/// # Safety
/// The caller must be single-threaded, and the child must only run code that neither
/// allocates nor takes locks before it execs or `_exit`s.
pub unsafe fn clone_child(flags: libc::c_int) -> Result<libc::pid_t, i32> {
    // SAFETY: raw clone without CLONE_VM and a null stack behaves like fork(2); the caller
    // upholds the single-thread / async-signal-safe contract stated above.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        Err(crate::errno::last())
    } else {
        Ok(r as libc::pid_t)
    }
}

/// `struct clone_args` of clone3(2) (the fields up to `cgroup`, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Like [`clone_child`], but the child is born in the cgroup2 directory `cgroup_dir` (an
/// `O_PATH` fd) with `CLONE_INTO_CGROUP`: no migration afterwards, so no wait for the
/// kernel's cgroup migration lock (an RCU grace period, milliseconds). `Ok(None)` when
/// the kernel refuses the flag (too old, or a cgroup that cannot take the process): the
/// caller clones the plain way and migrates.
///
/// # Safety
/// As [`clone_child`].
pub unsafe fn clone_child_into(flags: libc::c_int, cgroup_dir: i32) -> Result<Option<libc::pid_t>, i32> {
    let args = CloneArgs {
        flags: (flags as u32 as u64) | 0x2_0000_0000, // CLONE_INTO_CGROUP
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork(2); `args`
    // lives across the call; the caller upholds the single-thread contract.
    let r = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
    if r >= 0 {
        return Ok(Some(r as libc::pid_t));
    }
    match crate::errno::last() {
        libc::ENOSYS | libc::E2BIG | libc::EOPNOTSUPP | libc::EBUSY | libc::EBADF => Ok(None),
        e => Err(e),
    }
}

/// Writes the uid/gid maps of a child created with `CLONE_NEWUSER` ([`Identity::maps`]).
pub fn write_maps(pid: libc::pid_t, id: &Identity) -> Result<(), RunError> {
    if !id.root {
        // An unprivileged writer may only map its own ids, and gids only after denying
        // setgroups.
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny").map_err(|e| RunError::internal("writing setgroups", e))?;
    }
    let (umap, gmap) = id.maps();
    std::fs::write(format!("/proc/{pid}/uid_map"), &umap).map_err(|e| RunError::internal("writing uid_map", format!("{}: {e}", umap.trim().replace('\n', ", "))))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &gmap).map_err(|e| RunError::internal("writing gid_map", format!("{}: {e}", gmap.trim().replace('\n', ", "))))?;
    Ok(())
}

/// Checks every expected namespace of `pid` differs from the supervisor's.
pub fn verify(pid: libc::pid_t, iso: Isolation) -> Result<String, RunError> {
    let mut new = Vec::new();
    for ns in iso.expected() {
        let mine = std::fs::metadata(format!("/proc/self/ns/{ns}"))
            .map_err(|e| RunError::internal("reading /proc/self/ns", e))?;
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))
            .map_err(|e| RunError::internal("reading the child's /proc/<pid>/ns", e))?;
        if mine.ino() == theirs.ino() && mine.dev() == theirs.dev() {
            return Err(RunError::NotVerified {
                layer: "namespaces",
                why: format!("the agent shares the supervisor's {ns} namespace"),
            });
        }
        new.push(ns);
    }
    Ok(new.join(","))
}

fn ns_ino(path: &[u8]) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten by stat(2).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated (callers pass literals ending in \0).
    let r = unsafe { libc::stat(path.as_ptr().cast(), &mut st) };
    (r == 0).then_some(st.st_ino)
}

/// Moves the calling thread into the network namespace `ns` (an open `/proc/.../ns/net`).
pub fn enter_net(ns: &std::fs::File) -> Result<(), RunError> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace fd we hold open.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(RunError::os("setns(CLONE_NEWNET)"));
    }
    Ok(())
}

/// Sets `lo` up in the calling thread's network namespace ([`aegis_targets::nftables::loopback_up`];
/// raw syscalls only, so the child may call it). `Err` is (`WHAT_LO_SOCKET` or `WHAT_LO_UP`,
/// errno).
pub fn loopback_up() -> Result<(), (u32, i32)> {
    use aegis_targets::nftables::LoopbackStep;
    aegis_targets::nftables::loopback_up().map_err(|(step, errno)| {
        let what = match step {
            LoopbackStep::Socket => WHAT_LO_SOCKET,
            LoopbackStep::Flags => WHAT_LO_UP,
        };
        (what, errno)
    })
}

/// Child side, right after the go byte: hostname and loopback up.
pub fn apply_in_child(ns: &ChildNs) -> Result<(), Fail> {
    if let Some(h) = &ns.hostname {
        let b = h.as_bytes();
        // SAFETY: pointer and length of a live CString's bytes.
        if unsafe { libc::sethostname(b.as_ptr().cast(), b.len()) } != 0 {
            return Err(Fail::errno(Stage::Namespaces, WHAT_HOSTNAME));
        }
    }
    if ns.lo_up {
        loopback_up().map_err(|(what, errno)| Fail {
            stage: Stage::Namespaces,
            what,
            errno,
        })?;
    }
    Ok(())
}

/// Child side, after the supervisor moved us into the cgroup leaf: a new cgroup namespace
/// rooted at the leaf, verified by the changed `/proc/self/ns/cgroup` inode.
pub fn enter_cgroupns(ns: &ChildNs) -> Result<(), Fail> {
    if !ns.new_cgroupns {
        return Ok(());
    }
    let before = ns_ino(b"/proc/self/ns/cgroup\0");
    // SAFETY: unshare with a constant flag.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        return Err(Fail::errno(Stage::Namespaces, WHAT_CGROUPNS));
    }
    let after = ns_ino(b"/proc/self/ns/cgroup\0");
    if before.is_none() || before == after {
        return Err(Fail::check(Stage::Namespaces, WHAT_CGROUPNS_SAME));
    }
    Ok(())
}

/// Human text for a child failure in this stage.
pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_CGROUPNS => "unshare(CLONE_NEWCGROUP)",
        WHAT_CGROUPNS_SAME => "cgroup namespace unchanged after unshare",
        WHAT_HOSTNAME => "sethostname",
        WHAT_LO_SOCKET => "socket for loopback setup",
        WHAT_LO_UP => "bringing loopback up",
        _ => "namespaces",
    }
}
