//! Splitting a program that notifies into two filters the kernel combines back into it.
//!
//! Why. `SECCOMP_FILTER_FLAG_LOG` (which the runtime sets so that refused calls reach the
//! kernel log, where the supervisor counts them) logs every action but ALLOW, USER_NOTIF
//! included (`kernel.seccomp.actions_logged` defaults to all of them, and a sandbox must not
//! change host sysctls). A filter that notifies every `connect` would then print an audit
//! line per connect, flooding the log and using up the kernel's printk rate limit that the
//! real denials need. The flag is per filter, and with several filters the kernel runs them
//! all and acts on the strongest action (KILL_PROCESS > KILL_THREAD > TRAP > ERRNO >
//! USER_NOTIF > TRACE > LOG > ALLOW). So a program P is installed as two:
//! - the **policy filter**: P with every `return USER_NOTIF` turned into `return ALLOW`
//!   (installed with `LOG`: its refusals are logged, nothing it returns is a notification);
//! - the **notify filter**: P with every other return turned into `return ALLOW` (installed
//!   with `NEW_LISTENER`, without `LOG`).
//!
//! Input: a program. Output: `None` when it never returns USER_NOTIF, else the two programs.
//! Invariant (tested for every syscall number and boundary arguments in
//! `tests/seccomp_differential.rs`): for every input, [`combine`] of the two verdicts equals
//! the original's, so the pair is exactly the program the bundle holds.

use super::bpf::{BPF_A, BPF_RET, SockFilter};
use super::spec::{RET_ACTION_FULL, RET_ALLOW, RET_USER_NOTIF};

fn is_notify(i: &SockFilter) -> bool {
    i.class() == BPF_RET && i.code & 0x18 != BPF_A && i.k & RET_ACTION_FULL == RET_USER_NOTIF
}

/// `(policy filter, notify filter)` of `program`, or `None` if it never notifies.
pub fn split(program: &[SockFilter]) -> Option<(Vec<SockFilter>, Vec<SockFilter>)> {
    if !program.iter().any(is_notify) {
        return None;
    }
    let policy = program.iter().map(|i| if is_notify(i) { SockFilter::ret(RET_ALLOW) } else { *i }).collect();
    let notify = program
        .iter()
        .map(|i| if i.class() == BPF_RET && !is_notify(i) { SockFilter::ret(RET_ALLOW) } else { *i })
        .collect();
    Some((policy, notify))
}

/// The action the kernel takes when two filters return `a` and `b`: the stronger one (the
/// numerically lower action as a signed 32-bit value, as `seccomp_run_filters` compares).
pub fn combine(a: u32, b: u32) -> u32 {
    let rank = |r: u32| (r & RET_ACTION_FULL) as i32;
    if rank(b) < rank(a) { b } else { a }
}
