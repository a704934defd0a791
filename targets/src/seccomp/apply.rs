//! Installing a filter on the calling process, and reading back the seccomp state.
//!
//! Input: a program (from the bundle's `seccomp.<arch>.bpf` via `from_bytes`) and
//! [`ApplyOptions`]. Output: the filter is attached to every thread of the calling process,
//! or a typed error with the errno. Invariants: `PR_SET_NO_NEW_PRIVS` is set first (required
//! for an unprivileged filter and wanted anyway: a setuid binary must not escape); `TSYNC`
//! is always requested so a multi-threaded process is covered on every thread (the kernel
//! refuses atomically, naming the thread, if one cannot be synchronised);
//! `SECCOMP_FILTER_FLAG_SPEC_ALLOW` is never set: it would turn off the Spectre-v4 (SSB)
//! mitigation the kernel otherwise applies to seccomp'd tasks, trading an information-leak
//! defence for a few percent of speed in the very process we distrust. [`apply`] does not
//! allocate, so it is safe between `fork` and `exec` of a multi-threaded parent. This is the
//! last step before `exec`: after it, only the syscalls the filter allows can run.

use super::bpf::{BPF_MAXINSNS, SockFilter};

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: libc::c_ulong = 16;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 32;

/// How to install the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOptions {
    /// `SECCOMP_FILTER_FLAG_LOG`: log every non-ALLOW action to the audit log.
    pub log: bool,
}

/// Why installing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("seccomp: program of {len} instructions is empty or longer than 4096")]
    BadLength { len: usize },
    #[error("seccomp: prctl(PR_SET_NO_NEW_PRIVS) failed: errno {errno}")]
    NoNewPrivs { errno: i32 },
    #[error("seccomp: seccomp(SET_MODE_FILTER) failed: errno {errno}")]
    Install { errno: i32 },
    #[error("seccomp: TSYNC could not synchronise thread {tid} (it has a conflicting filter)")]
    Tsync { tid: i64 },
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Install `program` on all threads of the calling process (no_new_privs + TSYNC).
pub fn apply(program: &[SockFilter], opts: ApplyOptions) -> Result<(), ApplyError> {
    install(program, opts, 0).map(|_| ())
}

/// Like [`apply`], and return the user-notification listener fd (for `USER_NOTIF` actions,
/// e.g. [`ExecGate::Notify`](super::hardening::ExecGate)); hand it to the supervisor
/// before the next syscall the filter sends there. Uses `TSYNC_ESRCH`, which lets TSYNC
/// and `NEW_LISTENER` be combined (Linux 5.7+), and `WAIT_KILLABLE_RECV` where the kernel
/// has it (5.19+): once the supervisor has taken a notification, only a fatal signal ends
/// the wait. Without it a signal handler firing in the agent (Go's preemption signal, a
/// timer) abandons a call the supervisor may already have performed, and the restarted
/// call would see its effects (a `connect` made twice answers `EISCONN`).
pub fn apply_with_listener(
    program: &[SockFilter],
    opts: ApplyOptions,
) -> Result<std::os::fd::OwnedFd, ApplyError> {
    let base = SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    let fd = match install(program, opts, base | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
        // Kernels before 5.19 do not know the flag.
        Err(ApplyError::Install { errno: libc::EINVAL }) => install(program, opts, base)?,
        r => r?,
    };
    let fd = i32::try_from(fd).map_err(|_| ApplyError::Install { errno: libc::EBADF })?;
    // SAFETY: with NEW_LISTENER the kernel returned a fresh fd that nothing else owns.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn install(
    program: &[SockFilter],
    opts: ApplyOptions,
    extra: libc::c_ulong,
) -> Result<i64, ApplyError> {
    if program.is_empty() || program.len() > BPF_MAXINSNS {
        return Err(ApplyError::BadLength { len: program.len() });
    }
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(ApplyError::NoNewPrivs { errno: errno() });
    }
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        // `SockFilter` and `libc::sock_filter` are both the kernel's `struct sock_filter`
        // field for field; the kernel only reads through this pointer.
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    let mut flags = SECCOMP_FILTER_FLAG_TSYNC | extra;
    if opts.log {
        flags |= SECCOMP_FILTER_FLAG_LOG;
    }
    // SAFETY: `prog` points to `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    match rc {
        rc if rc < 0 => Err(ApplyError::Install { errno: errno() }),
        rc if extra & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 => Ok(rc),
        0 => Ok(0),
        rc => Err(ApplyError::Tsync { tid: rc }),
    }
}

// `SockFilter` must have the kernel layout for the pointer cast above.
const _: () = {
    assert!(std::mem::size_of::<SockFilter>() == std::mem::size_of::<libc::sock_filter>());
    assert!(std::mem::align_of::<SockFilter>() == std::mem::align_of::<libc::sock_filter>());
};

/// The `Seccomp:` mode of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disabled,
    Strict,
    Filter,
}

/// Seccomp state read from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub mode: Mode,
    /// `Seccomp_filters:` (Linux 5.9+): number of filters attached.
    pub filters: Option<u32>,
}

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("seccomp: reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("seccomp: {path} has no parsable `Seccomp:` line")]
    Missing { path: String },
}

/// Parse the text of a `/proc/<pid>/status` file.
pub fn parse_status(text: &str) -> Option<Status> {
    let mut mode = None;
    let mut filters = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Seccomp:") {
            mode = match v.trim() {
                "0" => Some(Mode::Disabled),
                "1" => Some(Mode::Strict),
                "2" => Some(Mode::Filter),
                _ => None,
            };
        } else if let Some(v) = line.strip_prefix("Seccomp_filters:") {
            filters = v.trim().parse().ok();
        }
    }
    mode.map(|mode| Status { mode, filters })
}

/// The calling process's seccomp state (for the runtime's verification after `apply`).
pub fn current_mode() -> Result<Status, StatusError> {
    status_of("/proc/self/status")
}

/// The seccomp state in a `status` file, e.g. `/proc/1234/status`.
pub fn status_of(path: &str) -> Result<Status, StatusError> {
    let text = std::fs::read_to_string(path).map_err(|source| StatusError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_status(&text).ok_or_else(|| StatusError::Missing {
        path: path.to_owned(),
    })
}
