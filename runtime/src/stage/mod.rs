//! The launch stages, one module each, in the order they run:
//!
//! ```text
//! supervisor (outside)                         child (inside the new namespaces)
//! 1  verify      bundle signature, digests,
//!                expiry, serial; parameters
//!    ── every artifact is decoded and validated here, before any namespace exists ──
//! 2  cgroup      create the leaf, write limits
//! 5  nftables    host mode: load the table that
//!                matches the leaf's sockets
//! 3  namespaces  clone(user, mount, pid, ipc,   → waits on the "go" pipe
//!                uts[, net]); write id maps;
//!                verify the namespaces        → G
//!                                               3  namespaces  hostname, lo up
//! 2  cgroup      move the child into the leaf,  4  mounts      mount plan + pivot_root (or private
//!                verify membership                             propagation and a fresh /proc)
//! 5  nftables    none mode: load the table into
//!                the child's netns, verify
//!                over netlink
//!    netlog      none/proxy: default routes to
//!                lo, NFLOG socket for denials → N   (waits for N)
//!                                               3  namespaces  unshare the cgroup ns (rooted at the leaf)
//!                                               6  caps        switch uid/gid, drop every capability set
//!                                               7  no_new_privs
//!                                               11 init        leave the supervisor's session; a pty's
//!                                                              slave becomes the controlling terminal
//!                                               8  landlock    (verified: fully enforced at the bundle's ABI)
//!                                               9  seccomp     last filter installed (verified: mode 2);
//!                                                              everything after it must pass it
//!                                               10 fds         close every inherited fd but the report
//!                                                              and status pipes
//!                                               11 init        fork: the parent stays pid 1 (signals,
//!                                                              reaping, wall time, the agent's status);
//!                                               12 exec        the child (pid 2) reports "ok" + timings
//!                                                              + facts and execs the agent
//! ```
//!
//! Why this order: the cgroup leaf exists (limits written) before the child, and the child
//! is in it before any agent code can run; the nftables table of host mode needs the leaf's path;
//! namespaces come before mounts (the mount plan needs a private mount namespace) and
//! before nftables of none mode (the rules live in the child's network namespace, loaded
//! from outside because the child cannot run `nft`); capabilities are needed for mounts and
//! are dropped right after; no_new_privs must precede Landlock and seccomp (both require it
//! without CAP_SYS_ADMIN); seccomp is last because every later syscall must pass it; fds
//! are closed at the very end so that the report pipe stays usable to say why a stage failed.
//! The session is left (and the pty taken) before Landlock and seccomp, which need not allow
//! `setsid` or `TIOCSCTTY`; the init is forked after them, so it is as restricted as the agent.
//! After `clone` the child parses nothing: every stage's `Child*` struct holds decoded,
//! validated data (C strings, numbers, the artifacts' typed values) in memory the child shares
//! copy-on-write. AEGIS's own child stages make raw syscalls only; the mount plan and
//! Landlock apply functions allocate while resolving launch paths inside the new root (safe:
//! the supervisor is single-threaded when it clones). The cgroup migration and the none-mode
//! nftables load overlap with the child's mount stage (`N` byte); both are in place and
//! verified before the child drops capabilities, and so before anything of the agent runs.

pub mod caps;
pub mod cgroup;
pub mod exec;
pub mod fds;
pub mod init;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod netlog;
pub mod nftables;
pub mod no_new_privs;
pub mod proxy;
pub mod seccomp;
pub mod verify;

/// Stage ids as reported by the child over the report pipe (stable: they index timings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Stage {
    Verify = 0,
    Cgroup = 1,
    Namespaces = 2,
    Mounts = 3,
    Nftables = 4,
    Caps = 5,
    NoNewPrivs = 6,
    Landlock = 7,
    Seccomp = 8,
    Fds = 9,
    Exec = 10,
    Init = 11,
}

/// Number of stages (length of timing arrays).
pub const STAGES: usize = 12;

impl Stage {
    pub const ALL: [Stage; STAGES] = [
        Stage::Verify,
        Stage::Cgroup,
        Stage::Namespaces,
        Stage::Mounts,
        Stage::Nftables,
        Stage::Caps,
        Stage::NoNewPrivs,
        Stage::Landlock,
        Stage::Seccomp,
        Stage::Fds,
        Stage::Exec,
        Stage::Init,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Verify => "verify",
            Stage::Cgroup => "cgroup",
            Stage::Namespaces => "namespaces",
            Stage::Mounts => "mounts",
            Stage::Nftables => "nftables",
            Stage::Caps => "capabilities",
            Stage::NoNewPrivs => "no_new_privs",
            Stage::Landlock => "landlock",
            Stage::Seccomp => "seccomp",
            Stage::Fds => "fds",
            Stage::Exec => "exec",
            Stage::Init => "init",
        }
    }

    pub fn from_u32(v: u32) -> Option<Stage> {
        Stage::ALL.get(v as usize).copied()
    }
}
