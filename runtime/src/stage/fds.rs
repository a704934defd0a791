//! Stage 10, close inherited file descriptors: everything but stdin/stdout/stderr and the
//! report pipe (close-on-exec, so it closes itself at exec). Input: the report fd. Output:
//! no other descriptor of the supervisor (audit log, keys, bundle files) reaches the agent.
//! `close_range` is tried first; if the seccomp filter or kernel refuses it, a close loop.

use crate::child::Fail;
use crate::stage::Stage;

pub const WHAT_CLOSE: u32 = 1;

fn close_range(lo: u32, hi: u32) -> bool {
    // SAFETY: close_range(2) with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) == 0 }
}

pub fn apply_in_child(keep: i32) -> Result<(), Fail> {
    let keep = u32::try_from(keep).map_err(|_| Fail::check(Stage::Fds, WHAT_CLOSE))?;
    let ok = (keep <= 3 || close_range(3, keep - 1)) && close_range(keep + 1, u32::MAX);
    if !ok {
        // Fallback: close up to the soft limit of open files.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let max = lim.rlim_cur.min(1 << 20) as u32;
        for fd in 3..max {
            if fd != keep {
                // SAFETY: closing descriptors we own; EBADF for unused ones is fine.
                unsafe { libc::close(fd as i32) };
            }
        }
    }
    Ok(())
}

pub fn describe(_what: u32) -> &'static str {
    "closing inherited file descriptors"
}
