//! The launch stages, one module each, in the order they run:
//!
//! ```text
//! supervisor (outside)                         child (inside the new namespaces)
//! 1  verify      bundle signature, digests,
//!                expiry, serial; parameters
//!    ── every artifact is decoded and validated here, before any namespace exists ──
//! 5  nftables    host mode (root, cgroup2): `nft`
//!                starts loading the table into
//!                the host's namespace (background)
//! 2  cgroup      create the leaf, write limits
//! 3  namespaces  clone(user, mount, pid, ipc,   → waits on the "go" pipe
//!                uts[, net]); write id maps;
//!                verify the namespaces        → G
//!                                               3  namespaces  hostname, lo up
//! 2  cgroup      move the child into the leaf,  4  mounts      mount plan + pivot_root (or private
//!                verify membership                             propagation and a fresh /proc)
//! 5  nftables    host mode: the leaf's dispatch 5  netns       proxy and forward listeners, NFLOG
//!                rule over netlink, verify;                    socket: made here, handed to the
//!                none/proxy (and host mode                     supervisor (`handoff`), closed here
//!                without root): load the table
//!                into the child's netns (or its
//!                premade one), verify over netlink
//!                                        → N (table in place) or n (none)
//!                                               5  netns       N: default routes to lo (denials seen)
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
//!    after exec: drain the handoff, check each socket (kind, namespace, address), start the
//!    proxy and the NFLOG reader
//! ```
//!
//! Why this order: the cgroup leaf exists (limits written) before the child, and the child
//! is in it before any agent code can run; the host-mode table's dispatch rule needs the
//! leaf (the table itself does not, so its load starts first and overlaps the rest);
//! namespaces come before mounts (the mount plan needs a private mount namespace) and
//! before nftables of none mode (the rules live in the child's network namespace, loaded
//! from outside because the child cannot run `nft`); the sockets of the agent's network
//! namespace are made by the child (`netns`) because only it holds the capabilities of the
//! user namespace that owns that network namespace (an unprivileged supervisor cannot even
//! enter it), and before the caps stage for the same reason; the routes to lo wait for the
//! table (without it they would turn a fast ENETUNREACH into a hang); capabilities are
//! needed for mounts and are dropped right after; no_new_privs must precede Landlock and
//! seccomp (both require it without CAP_SYS_ADMIN); seccomp is last because every later
//! syscall must pass it; fds are closed at the very end so that the report pipe stays usable
//! to say why a stage failed. When the supervisor premade the agent's network namespace
//! (root, none/proxy mode with a table: `nft` loads it while the agent is prepared), that
//! namespace belongs to the supervisor's user namespace, and the supervisor runs the
//! `netns` steps itself while it is inside for the clone.
//! The session is left (and the pty taken) before Landlock and seccomp, which need not allow
//! `setsid` or `TIOCSCTTY`; the init is forked after them, so it is as restricted as the agent.
//! After `clone` the child parses nothing: every stage's `Child*` struct holds decoded,
//! validated data (C strings, numbers, the artifacts' typed values, prebuilt netlink
//! requests) in memory the child shares copy-on-write. AEGIS's own child stages make raw
//! syscalls only; the mount plan and Landlock apply functions allocate while resolving launch
//! paths inside the new root (safe: the supervisor is single-threaded when it clones). The
//! cgroup migration and the none-mode nftables load overlap with the child's mount and netns
//! stages (`N` byte); both are in place and verified before the child drops capabilities,
//! and so before anything of the agent runs.
//!
//! A child stage fails with a [`report::Fail`] (its stage, a code from its `WHAT_*`, the
//! errno); [`crate::child`] writes it to the supervisor over the report pipe ([`report`]),
//! which also carries the facts stages find for the enforcement report (`report::INFO_*`).
//! Stages import from [`report`] and [`crate::errno`], never from [`crate::child`], which
//! only sequences them.

pub mod caps;
pub mod cgroup;
pub mod exec;
pub mod fds;
pub mod forward;
pub mod init;
pub mod landlock;
pub mod mounts;
pub mod namespaces;
pub mod netlog;
pub mod netns;
pub mod nftables;
pub mod nonet;
pub mod no_new_privs;
pub mod proxy;
pub mod report;
pub mod seccomp;
pub mod verify;

/// One launch's identity on this host. Everything a launch creates that other launches can
/// see (cgroup leaf, host-mode nftables table, kernel log prefix) is named by it, never by
/// the agent alone: two launches of one agent at once (or two test suites) must not
/// collide. The supervisor's pid lets a later run sweep what a killed supervisor left; the
/// random nonce keeps apart supervisors with one pid in different pid namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    pub pid: u32,
    pub nonce: u32,
}

impl Instance {
    pub fn new() -> Instance {
        let mut nonce = [0u8; 4];
        // SAFETY: getrandom writes at most 4 bytes into our buffer.
        let got = unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), nonce.len(), libc::GRND_NONBLOCK) };
        let mut nonce = u32::from_ne_bytes(nonce);
        if got != 4 {
            // No entropy yet (early boot): the clock still separates launches.
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime into our struct.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
            nonce = ts.tv_nsec as u32 ^ (ts.tv_sec as u32).rotate_left(16);
        }
        Instance { pid: std::process::id(), nonce }
    }

    /// `<pid>-<nonce>`: the cgroup leaf's suffix and the kernel log prefix's middle.
    pub fn id(&self) -> String {
        format!("{}-{:08x}", self.pid, self.nonce)
    }
}

impl Default for Instance {
    fn default() -> Instance {
        Instance::new()
    }
}

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
