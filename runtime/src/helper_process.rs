//! Isolation shared by the helper processes the sandbox's child forks before the agent's
//! exec (the connect broker, the file helper): each serves the supervisor over one control
//! socket and must not be reachable or steerable by the agent.
//!
//! Input: the helper's control socket and the pid of the process that forked it. Effect,
//! in this order: the helper dies with its parent (and does not run at all if the parent is
//! already gone), is not dumpable (the agent, same uid, cannot ptrace it or open its /proc
//! files), leads a session of its own (the terminal's Ctrl-C / Ctrl-Z go to the agent's
//! group, not here) and keeps only the control socket open (no report pipe, whose EOF tells
//! the supervisor the agent exec'd; no terminal; nothing of the supervisor's).
//! Async-signal-safe: it runs in a freshly forked child.

use std::os::fd::RawFd;

/// Isolates the calling helper process as the module docs say; `_exit(0)` if `parent` is gone.
pub(crate) fn isolate(control: RawFd, parent: libc::pid_t) {
    // SAFETY: prctl/getppid/setsid/close_range with integer arguments; _exit never returns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::setsid();
        if control > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, (control - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (control + 1) as u32, u32::MAX, 0u32);
    }
}
