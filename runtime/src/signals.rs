//! Signals of the supervisor: the forwarded ones (and SIGCHLD) are blocked from the very
//! start of a launch and read through a signalfd, so a SIGTERM to `aegis-exec` at any point
//! goes through the normal cleanup path instead of killing the supervisor mid-way. The job
//! control stops (SIGTSTP, SIGTTIN, SIGTTOU) are read the same way and ignored: the
//! supervisor is never stopped by a key (the wall-time limit keeps its clock; the agent's
//! init enforces it too, for the uncatchable SIGSTOP). SIGWINCH is blocked too and read by
//! the terminal relay's own signalfd ([`crate::tty`]). The agent restores the original mask
//! just before exec.

use std::time::Duration;

use crate::exit::RunError;

/// Signals forwarded to the agent.
pub const FORWARDED: [libc::c_int; 6] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

/// Job control stops: never stop the supervisor.
pub const JOB_CONTROL: [libc::c_int; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// Signals that ask the agent to stop: after one of them the supervisor kills the agent if
/// it is still alive [`KILL_GRACE`] later (an agent that is pid 1 of its namespace ignores
/// signals it has no handler for).
pub const TERMINATING: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

pub const KILL_GRACE: Duration = Duration::from_secs(2);

pub struct Signals {
    pub old_mask: libc::sigset_t,
    pub fd: i32,
}

/// One signal read from the signalfd.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub signo: i32,
    /// True when the kernel sent it (e.g. a terminal's Ctrl-C to the supervisor's process
    /// group). It is forwarded all the same: the agent runs in a session of its own.
    pub from_kernel: bool,
}

impl Signals {
    pub fn block() -> Result<Signals, RunError> {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers to sigset_t values we own.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in FORWARDED.iter().chain(JOB_CONTROL.iter()).chain([libc::SIGCHLD].iter()) {
                libc::sigaddset(&mut set, *s);
            }
            let mut blocked = set;
            libc::sigaddset(&mut blocked, libc::SIGWINCH);
            if libc::sigprocmask(libc::SIG_BLOCK, &blocked, &mut old) != 0 {
                return Err(RunError::os("blocking signals"));
            }
        }
        // SAFETY: signalfd on a valid set; a new fd is returned.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(RunError::os("signalfd"));
        }
        Ok(Signals { old_mask: old, fd })
    }

    /// Reads every pending signal.
    pub fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let sz = std::mem::size_of::<libc::signalfd_siginfo>();
            // SAFETY: reading exactly one siginfo into our struct.
            let n = unsafe { libc::read(self.fd, (&mut info as *mut libc::signalfd_siginfo).cast(), sz) };
            if n != sz as isize {
                return out;
            }
            out.push(Received {
                signo: info.ssi_signo as i32,
                from_kernel: info.ssi_code == libc::SI_KERNEL,
            });
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: closing our fd and restoring the mask we saved.
        unsafe {
            libc::close(self.fd);
            libc::sigprocmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }
}
