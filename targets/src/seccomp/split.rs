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
//! `tests/all/seccomp_differential.rs`): for every input, [`combine`] of the two verdicts equals
//! the original's, so the pair is exactly the program the bundle holds.
//!
//! **Routed denials** ([`split_routed`]). A denial the program answers with an errno leaves
//! no trace an unprivileged user can read (the kernel log is root's). So the runtime moves
//! every policy denial ([`is_routed_denial`]: ERRNO, except ENOSYS, which every program
//! returns by design for unknown numbers and `clone3`) from the policy filter to the notify
//! filter: the kernel then asks the supervisor, which runs the bundle's program on the
//! call's registers, answers with exactly the errno it returns, and records the denial
//! (`runtime/src/unotify/deny.rs`). Invariant: [`combine`] of the two verdicts is USER_NOTIF
//! where the program returns a routed denial and equals the program everywhere else; with
//! no supervisor the kernel answers a notification with ENOSYS (still refused). Always
//! allowed syscalls stay ALLOW in both filters, decided from arch and number alone.
//!
//! **Tracing** ([`notify_also`]): a prefix on the notify filter that sends a set of syscall
//! numbers of one architecture to the supervisor too (it observes, the kernel decides).

use super::bpf::{BPF_A, BPF_JEQ, BPF_JMP, BPF_K, BPF_RET, OFF_ARCH, OFF_NR, SockFilter};
use super::spec::{ENOSYS, RET_ACTION_FULL, RET_ALLOW, RET_DATA, RET_ERRNO, RET_USER_NOTIF};
use super::syscalls::Arch;

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

/// Whether `i` returns a constant (not the accumulator).
fn is_const_ret(i: &SockFilter) -> bool {
    i.class() == BPF_RET && i.code & 0x18 != BPF_A
}

/// Whether return value `k` is a policy denial the supervisor answers and records: ERRNO
/// with any errno but ENOSYS (unknown numbers and `clone3`, by design, not by policy).
pub fn is_routed_denial(k: u32) -> bool {
    k & RET_ACTION_FULL == RET_ERRNO && k & RET_DATA != u32::from(ENOSYS)
}

/// `(policy filter, notify filter)` of `program` with every routed denial
/// ([`is_routed_denial`]) sent to the supervisor as well as the program's own
/// notifications. Both filters keep the program's instructions, so both decide always
/// allowed syscalls from arch and number alone.
pub fn split_routed(program: &[SockFilter]) -> (Vec<SockFilter>, Vec<SockFilter>) {
    let to_supervisor = |i: &SockFilter| is_notify(i) || (is_const_ret(i) && is_routed_denial(i.k));
    let policy = program.iter().map(|i| if to_supervisor(i) { SockFilter::ret(RET_ALLOW) } else { *i }).collect();
    let notify = program
        .iter()
        .map(|i| match () {
            _ if to_supervisor(i) => SockFilter::ret(RET_USER_NOTIF),
            _ if is_const_ret(i) => SockFilter::ret(RET_ALLOW),
            _ => *i,
        })
        .collect();
    (policy, notify)
}

/// A syscall the notify filter sends to the supervisor as well (tracing): its number, and
/// optionally a flag of one argument that exempts the call (`newfstatat` with `AT_EMPTY_PATH`
/// is `fstat`, which names no path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traced {
    pub nr: u32,
    /// `(argument index, mask)`: the call is not sent when any bit of the mask is set in the
    /// argument's low 32 bits.
    pub unless: Option<(u8, u32)>,
}

/// `filter` with a prefix that returns USER_NOTIF for the `traced` syscalls of `arch`
/// (any other architecture, any other number, and an exempted call go on to `filter`
/// unchanged). `None` when the prefix would not fit the jump offsets (too many entries).
pub fn notify_also(filter: &[SockFilter], arch: Arch, traced: &[Traced]) -> Option<Vec<SockFilter>> {
    if traced.is_empty() {
        return Some(filter.to_vec());
    }
    let plain: Vec<u32> = traced.iter().filter(|t| t.unless.is_none()).map(|t| t.nr).collect();
    let cond: Vec<(u32, u8, u32)> = traced.iter().filter_map(|t| t.unless.map(|(i, m)| (t.nr, i, m))).collect();
    // [0] A = arch; [1] arch ? next : program; [2] A = nr; then one `jeq nr -> ret` per
    // plain entry; then per conditional entry `jeq nr ? next : skip 2`, `A = arg`, `jset
    // mask ? program : ret`; then `ja program`; `ret NOTIF`; the program.
    let body = plain.len() + 3 * cond.len();
    let ret_at = 3 + body + 1;
    let prog_at = ret_at + 1;
    let off = |from: usize, to: usize| u8::try_from(to.checked_sub(from + 1)?).ok();
    let mut out = Vec::with_capacity(filter.len() + prog_at);
    out.push(SockFilter::load(OFF_ARCH));
    out.push(SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, arch.audit_arch(), 0, off(1, prog_at)?));
    out.push(SockFilter::load(OFF_NR));
    for nr in plain {
        let at = out.len();
        out.push(SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, nr, off(at, ret_at)?, 0));
    }
    for (nr, index, mask) in cond {
        out.push(SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 2));
        out.push(SockFilter::load(super::bpf::arg_lo(index)));
        let at = out.len();
        out.push(SockFilter::jump(BPF_JMP | super::bpf::BPF_JSET | BPF_K, mask, off(at, prog_at)?, off(at, ret_at)?));
    }
    out.push(SockFilter::jump(BPF_JMP | super::bpf::BPF_JA, 1, 0, 0));
    out.push(SockFilter::ret(RET_USER_NOTIF));
    out.extend_from_slice(filter);
    Some(out)
}

/// The action the kernel takes when two filters return `a` and `b`: the stronger one (the
/// numerically lower action as a signed 32-bit value, as `seccomp_run_filters` compares).
pub fn combine(a: u32, b: u32) -> u32 {
    let rank = |r: u32| (r & RET_ACTION_FULL) as i32;
    if rank(b) < rank(a) { b } else { a }
}
