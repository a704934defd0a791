//! Stage 10, close inherited file descriptors: everything but stdin/stdout/stderr, the
//! report pipe and the init's status pipe (both close-on-exec, so the agent never holds
//! them). Input: the descriptors to keep. Output: no other descriptor of the supervisor
//! (audit log, keys, bundle files) reaches the agent.
//! `close_range` is tried first; if the seccomp filter or kernel refuses it, a close loop.

use crate::stage::report::Fail;
use crate::stage::Stage;

pub const WHAT_CLOSE: u32 = 1;

fn close_range(lo: u32, hi: u32) -> bool {
    // SAFETY: close_range(2) with integer arguments.
    unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0u32) == 0 }
}

/// Closes every descriptor from 3 up except those in `keep` (negative entries: none).
pub fn apply_in_child(keep: [i32; 2]) -> Result<(), Fail> {
    let mut k = [u32::MAX; 2];
    for (d, s) in k.iter_mut().zip(keep) {
        if s >= 0 {
            *d = u32::try_from(s).map_err(|_| Fail::check(Stage::Fds, WHAT_CLOSE))?;
        }
    }
    k.sort_unstable();
    let [a, b] = k;
    // The gaps below, between and above the kept descriptors.
    let mut ok = true;
    let mut lo = 3u32;
    for hi in [a, b] {
        if hi == u32::MAX {
            break;
        }
        if hi > lo {
            ok &= close_range(lo, hi - 1);
        }
        lo = lo.max(hi.saturating_add(1));
    }
    ok &= close_range(lo, u32::MAX);
    if !ok {
        // Fallback: close up to the soft limit of open files.
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let max = lim.rlim_cur.min(1 << 20) as u32;
        for fd in 3..max {
            if !k.contains(&fd) {
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
