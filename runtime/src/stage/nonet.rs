//! Network limits without a network namespace (user namespaces blocked, proxy mode).
//!
//! Why: proxy mode's only way out is normally the agent's own network namespace, which
//! holds nothing but the proxy. Without user namespaces there is none, so two kernel layers
//! stand in for it: Landlock (ABI 4) makes the proxy's host loopback port the agent's only
//! TCP destination and forbids binding any TCP port
//! ([`super::landlock::ChildLandlock::only_tcp_to`]); and this filter refuses every Internet
//! socket that is not TCP (UDP, ICMP ping, SCTP, raw), which Landlock does not govern.
//!
//! Input: nothing (the filter is the same for every launch). Output, in the child after
//! no_new_privs and Landlock, before the bundle's own seccomp program: a second seccomp
//! filter that answers `socket(AF_INET|AF_INET6, type, protocol)` with EPERM unless `type`
//! (without its flags) is `SOCK_STREAM` and `protocol` is 0 or TCP. Invariants: it allows
//! everything else (the bundle's program decides the rest, and the kernel applies both);
//! it knows the `socket` number of x86_64 and aarch64 only and allows other architectures
//! untouched, where the bundle's program refuses them first; raw syscalls, no allocation.

use crate::stage::report::Fail;
use crate::stage::Stage;

pub const WHAT_INSTALL: u32 = 1;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const SOCKET_X86_64: u32 = 41;
const SOCKET_AARCH64: u32 = 198;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
// struct seccomp_data offsets.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16;
const OFF_ARG1: u32 = 24;
const OFF_ARG2: u32 = 32;
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
const BPF_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

const fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt: 0, jf: 0, k }
}

const fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code: BPF_JEQ_K, jt, jf, k }
}

/// The program (see the module doc). A jump skips `jt`/`jf` instructions; the comments say
/// where each lands (checked by the unit test below).
fn program() -> [libc::sock_filter; 20] {
    [
        stmt(BPF_LD_W_ABS, OFF_ARCH),                   // 0
        jeq(AUDIT_ARCH_X86_64, 2, 0),                   // 1: → 4
        jeq(AUDIT_ARCH_AARCH64, 3, 0),                  // 2: → 6
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),             // 3: other architectures
        stmt(BPF_LD_W_ABS, OFF_NR),                     // 4
        jeq(SOCKET_X86_64, 2, 13),                      // 5: → 8 | → 19 allow
        stmt(BPF_LD_W_ABS, OFF_NR),                     // 6
        jeq(SOCKET_AARCH64, 0, 11),                     // 7: → 8 | → 19 allow
        stmt(BPF_LD_W_ABS, OFF_ARG0),                   // 8: domain
        jeq(libc::AF_INET as u32, 1, 0),                // 9: → 11
        jeq(libc::AF_INET6 as u32, 0, 8),               // 10: → 11 | → 19 allow
        stmt(BPF_LD_W_ABS, OFF_ARG1),                   // 11: type
        stmt(BPF_AND_K, 0xf),                           // 12: without SOCK_NONBLOCK/CLOEXEC
        jeq(libc::SOCK_STREAM as u32, 0, 4),            // 13: → 14 | → 18 refuse
        stmt(BPF_LD_W_ABS, OFF_ARG2),                   // 14: protocol
        jeq(0, 3, 0),                                   // 15: → 19 allow
        jeq(libc::IPPROTO_TCP as u32, 2, 0),            // 16: → 19 allow
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32), // 17: refuse (protocol)
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32), // 18: refuse (type)
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),             // 19
    ]
}

/// Child-side plan: whether to install the filter.
#[derive(Debug, Default, Clone, Copy)]
pub struct ChildNoNet {
    pub stream_only: bool,
}

/// Installs the filter (after no_new_privs, which it requires without CAP_SYS_ADMIN).
pub fn apply_in_child(n: &ChildNoNet) -> Result<(), Fail> {
    if !n.stream_only {
        return Ok(());
    }
    let prog = program();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) reads the program we own for the
    // duration of the call.
    if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER as libc::c_ulong, &fprog as *const libc::sock_fprog, 0, 0) } != 0 {
        return Err(Fail::errno(Stage::Seccomp, WHAT_INSTALL));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    /// Every jump of the program lands inside it, and every path ends in a return.
    #[test]
    fn every_jump_lands_on_an_instruction() {
        let p = program();
        for (i, ins) in p.iter().enumerate() {
            if ins.code == BPF_JEQ_K {
                for off in [ins.jt, ins.jf] {
                    assert!(i + 1 + (off as usize) < p.len(), "instruction {i} jumps out");
                }
            }
        }
        assert_eq!(p[p.len() - 1].code, BPF_RET_K);
    }

    /// The filter for real, in a forked child: TCP sockets are made, UDP, ICMP and SCTP
    /// ones are refused with EPERM, and a Unix datagram socket is untouched.
    #[test]
    fn only_tcp_internet_sockets_are_made() {
        // SAFETY: fork in a test; the child only makes syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child: prctl, socket and _exit with integer arguments.
            let code = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if apply_in_child(&ChildNoNet { stream_only: true }).is_err() {
                    libc::_exit(10);
                }
                let ok = |d, t, p| libc::socket(d, t, p) >= 0;
                let eperm = |d, t, p| libc::socket(d, t, p) < 0 && crate::errno::last() == libc::EPERM;
                let checks = [
                    ok(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
                    ok(libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_TCP),
                    eperm(libc::AF_INET, libc::SOCK_DGRAM, 0),
                    eperm(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0),
                    eperm(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
                    eperm(libc::AF_INET, libc::SOCK_STREAM, 132), // SCTP
                    eperm(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
                    ok(libc::AF_UNIX, libc::SOCK_DGRAM, 0),
                ];
                checks.iter().position(|c| !c).map(|i| 20 + i as i32).unwrap_or(0)
            };
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "{status}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "check {} failed (10: install)", libc::WEXITSTATUS(status) - 20);
    }
}
