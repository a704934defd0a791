//! Shared fixtures of the seccomp tests.

use aegis_targets::seccomp::*;

/// A spec whose x86_64 program is over 1,000 instructions: every third syscall gets two
/// argument-checked rules, which pushes shared returns out of a conditional jump's 255-step
/// range, so the code generator must emit `BPF_JA` trampolines.
pub fn spec_needing_trampolines() -> SeccompSpec {
    let mut spec = SeccompSpec::new(Action::Errno(1));
    for (i, (_, name)) in Arch::X86_64.table().iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        if aegis_targets::seccomp::syscalls::is_pointer_arg(name, 0) {
            continue;
        }
        spec.push(name, Rule::when(vec![ArgCond::new(0, CmpOp::Eq, i as u64)], Action::Allow));
        spec.push(name, Rule::when(vec![ArgCond::new(0, CmpOp::Gt, 1 << 40)], Action::Errno(3)));
    }
    spec
}
