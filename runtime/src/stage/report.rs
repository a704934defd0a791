//! The child → supervisor report pipe: how the child says which stage failed, or that every
//! stage applied and was verified (with per-stage timings and facts for the enforcement
//! report).
//!
//! Input (child side): the stages' results, each failure a [`Fail`] (stage, a code from that
//! stage's `WHAT_*`, errno) and the facts a stage found (`INFO_*` slots). Output (supervisor
//! side): the last complete [`ChildReport`] read before EOF, and a failure turned into the
//! [`RunError`] the user sees ([`stage_failure`]). Invariants: a report is one fixed-size,
//! `repr(C)` write of plain integers, so the child builds and writes it without allocating;
//! the pipe is close-on-exec, so EOF after an `ok = 1` report means `execve` succeeded; a
//! report of the wrong size or magic is ignored, never trusted.

use crate::exit::RunError;
use crate::stage::{self, STAGES, Stage};

/// Exit code of a child that failed before exec (the supervisor maps it to 126/127).
pub const CHILD_FAILED: i32 = 121;
/// First bytes of every report (catches a short or foreign write).
pub const REPORT_MAGIC: u32 = 0xAE61_5001;

/// Fixed-size message from the child to the supervisor.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChildReport {
    pub magic: u32,
    /// 1: every stage applied and verified, exec follows. 0: failed at `stage`.
    pub ok: u32,
    pub stage: u32,
    /// Stage-specific code saying what failed (see [`Fail`]).
    pub what: u32,
    pub errno: i32,
    pub _pad: u32,
    /// Nanoseconds spent in each stage in the child.
    pub stage_ns: [u64; STAGES],
    /// Facts for the enforcement report (indices `INFO_*`).
    pub info: [u32; INFO_LEN],
    /// NUL-padded text of a failure (the error a target's apply function returned).
    pub msg: [u8; MSG_LEN],
}

pub const INFO_LEN: usize = 14;
pub const MSG_LEN: usize = 512;
pub const INFO_MOUNTS_MOUNTED: usize = 0;
pub const INFO_MOUNTS_SKIPPED: usize = 1;
pub const INFO_MEMFD_NOEXEC: usize = 2;
/// 0 absent, 1 fully, 2 partially, 3 not enforced.
pub const INFO_LANDLOCK_STATUS: usize = 3;
pub const INFO_LANDLOCK_ABI: usize = 4;
pub const INFO_LANDLOCK_DETAILS: usize = 5;
pub const INFO_SECCOMP_MODE: usize = 6;
pub const INFO_SECCOMP_LEN: usize = 7;
/// errno of the default route to `lo` for IPv4 / IPv6 (0 = added; see `stage::netns`).
pub const INFO_NET_ROUTE4_ERRNO: usize = 8;
pub const INFO_NET_ROUTE6_ERRNO: usize = 9;
/// errno of writing `vm.memfd_noexec` (0 = set or not asked for).
pub const INFO_MEMFD_ERRNO: usize = 10;
/// 1 when the bounding set was emptied and the securebits locked (see `stage::caps`).
pub const INFO_CAPS_BOUNDING: usize = 11;
/// errno of entering the working directory when the agent started in `/` instead.
pub const INFO_CWD_ERRNO: usize = 12;
/// How many host files of a fresh /proc are hidden (see `stage::mounts`).
pub const INFO_HOST_HIDDEN: usize = 13;

impl ChildReport {
    pub const SIZE: usize = std::mem::size_of::<ChildReport>();

    pub fn zeroed() -> ChildReport {
        ChildReport {
            magic: REPORT_MAGIC,
            ok: 0,
            stage: 0,
            what: 0,
            errno: 0,
            _pad: 0,
            stage_ns: [0; STAGES],
            info: [0; INFO_LEN],
            msg: [0; MSG_LEN],
        }
    }

    /// Stores `text` (truncated) as the failure message.
    pub fn set_msg(&mut self, text: &str) {
        self.msg = [0; MSG_LEN];
        for (d, s) in self.msg.iter_mut().take(MSG_LEN - 1).zip(text.bytes()) {
            *d = s;
        }
    }

    /// The failure message, if any.
    pub fn msg(&self) -> String {
        let end = self.msg.iter().position(|&b| b == 0).unwrap_or(MSG_LEN);
        String::from_utf8_lossy(self.msg.get(..end).unwrap_or_default()).into_owned()
    }

    /// Decodes a report read from the pipe.
    pub fn from_bytes(b: &[u8]) -> Option<ChildReport> {
        if b.len() != Self::SIZE {
            return None;
        }
        let mut r = ChildReport::zeroed();
        // SAFETY: `ChildReport` is repr(C) plain old data (integers only), `b` has exactly
        // SIZE bytes, and every bit pattern is a valid value of its fields.
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut r as *mut ChildReport).cast::<u8>(), Self::SIZE);
        }
        (r.magic == REPORT_MAGIC).then_some(r)
    }
}

/// A failed step inside the child: stage, what (a code from that stage's `WHAT_*`), errno.
#[derive(Debug, Clone, Copy)]
pub struct Fail {
    pub stage: Stage,
    pub what: u32,
    pub errno: i32,
}

impl Fail {
    /// A failure carrying the current `errno`.
    pub fn errno(stage: Stage, what: u32) -> Fail {
        Fail {
            stage,
            what,
            errno: crate::errno::last(),
        }
    }
    /// A verification failure (no errno).
    pub fn check(stage: Stage, what: u32) -> Fail {
        Fail { stage, what, errno: 0 }
    }
}

/// Writes one report (child side; one `write`, no allocation).
pub fn write_report(fd: i32, r: &ChildReport) {
    // SAFETY: writes SIZE bytes from a live repr(C) struct; the result is ignored because
    // there is nothing more the child could do about a failed report.
    unsafe {
        libc::write(fd, (r as *const ChildReport).cast(), ChildReport::SIZE);
    }
}

/// Reads reports until EOF; returns the last complete one.
pub fn read_reports(fd: i32) -> Option<ChildReport> {
    let mut last = None;
    let mut buf = [0u8; ChildReport::SIZE];
    loop {
        let mut got = 0;
        while got < buf.len() {
            let rest = buf.get_mut(got..).unwrap_or_default();
            // SAFETY: reading into the remaining part of our buffer.
            let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
            if n < 0 && crate::errno::last() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                return last;
            }
            got += n as usize;
        }
        if let Some(r) = ChildReport::from_bytes(&buf) {
            last = Some(r);
        }
    }
}

/// The error a failed child's report stands for.
pub fn child_failure(r: &ChildReport) -> RunError {
    stage_failure(Stage::from_u32(r.stage).unwrap_or(Stage::Exec), r.what, r.errno, &r.msg())
}

/// A failed step of the child's stages that the supervisor ran itself (premade namespace).
pub fn fail_error(f: Fail, msg: &str) -> RunError {
    stage_failure(f.stage, f.what, f.errno, msg)
}

/// A stage's failure in words: the stage's own description of `what`, the errno, and the
/// message a target's apply function returned.
pub fn stage_failure(stage: Stage, what: u32, errno: i32, msg: &str) -> RunError {
    // The command is not there, or not runnable, in the sandbox's view of the files: the
    // user's to fix (a grant, a path), not a fault of the supervisor.
    let not_runnable = (stage == Stage::Exec && what == stage::exec::WHAT_EXECVE).then(|| stage::exec::not_runnable_hint(errno)).flatten();
    let what = match stage {
        Stage::Namespaces => stage::namespaces::describe(what),
        Stage::Mounts => stage::mounts::describe(what),
        Stage::Caps => stage::caps::describe(what),
        Stage::NoNewPrivs => stage::no_new_privs::describe(what),
        Stage::Landlock => stage::landlock::describe(what),
        Stage::Seccomp => stage::seccomp::describe(what),
        Stage::Fds => stage::fds::describe(what),
        Stage::Nftables => stage::netns::describe(what),
        Stage::Init => stage::init::describe(what),
        _ => stage::exec::describe(what),
    };
    let errno = if errno != 0 { format!(": {}", std::io::Error::from_raw_os_error(errno)) } else { String::new() };
    let why = if msg.is_empty() { format!("{what}{errno}") } else { format!("{what}{errno}: {msg}") };
    if let Some(hint) = not_runnable {
        return RunError::CommandNotRunnable { why: format!("{why}; {hint}") };
    }
    match stage {
        Stage::Exec => RunError::internal("exec", why),
        // The agent's network namespace could not be given its sockets: the network layer
        // (proxy, forwards) is not available.
        Stage::Nftables => RunError::Unavailable { layer: "network", why },
        s => RunError::NotVerified { layer: s.name(), why },
    }
}
