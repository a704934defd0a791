//! What a filter costs: instructions executed per syscall under a weighted syscall mix.
//!
//! Input: a program (ours, or any raw filter such as libseccomp's export), its [`Arch`] and
//! [`SyscallWeights`]. Output: a [`CostProfile`] — weighted mean instructions per syscall,
//! the longest path through the program, its length. Invariant: costs are measured by
//! running the program in the [`emulator`](super::emulator) (arguments zero), so they count
//! exactly what the kernel's interpreter or JIT executes; the longest path is computed over
//! the jump graph (an upper bound: it may include paths no input takes).

use super::bpf::{BPF_JA, BPF_JMP, BPF_RET, SockFilter};
use super::codegen::SyscallWeights;
use super::emulator::{EmuError, run_counted};
use super::spec::{Action, SeccompData, SeccompSpec};
use super::syscalls::Arch;

/// Cost of one program under one mix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostProfile {
    /// Mean instructions executed per syscall, weighted by the mix.
    pub weighted_mean: f64,
    /// The most instructions executed for any syscall number 0..=highest (arguments zero).
    pub max_executed: usize,
    /// Longest path through the jump graph.
    pub longest_path: usize,
    /// Program length in instructions.
    pub len: usize,
}

/// Longest path (in executed instructions) from the first instruction to a `ret`.
pub fn longest_path(program: &[SockFilter]) -> usize {
    let n = program.len();
    let mut best = vec![0usize; n + 1];
    for pc in (0..n).rev() {
        let Some(ins) = program.get(pc) else { continue };
        let at = |t: usize| best.get(t).copied().unwrap_or(0);
        let here = 1 + match ins.class() {
            BPF_RET => 0,
            BPF_JMP if ins.code & 0xf0 == BPF_JA => at(pc + 1 + ins.k as usize),
            BPF_JMP => at(pc + 1 + usize::from(ins.jt)).max(at(pc + 1 + usize::from(ins.jf))),
            _ => at(pc + 1),
        };
        if let Some(slot) = best.get_mut(pc) {
            *slot = here;
        }
    }
    best.first().copied().unwrap_or(0)
}

/// Measure `program` for `arch` under `weights`.
pub fn measure(
    program: &[SockFilter],
    arch: Arch,
    weights: &SyscallWeights,
) -> Result<CostProfile, EmuError> {
    let mut total = 0u64;
    let mut weighted = 0u64;
    let mut max_executed = 0;
    for (nr, name) in arch.table() {
        let o = run_counted(program, &SeccompData::new(arch, *nr, [0; 6]))?;
        max_executed = max_executed.max(o.executed);
        let w = weights.get(name);
        total += w;
        weighted += w * o.executed as u64;
    }
    let weighted_mean = if total == 0 {
        0.0
    } else {
        weighted as f64 / total as f64
    };
    Ok(CostProfile {
        weighted_mean,
        max_executed,
        longest_path: longest_path(program),
        len: program.len(),
    })
}

fn action_json(a: Action) -> serde_json::Value {
    let (kind, data) = match a {
        Action::Allow => ("allow", 0),
        Action::Log => ("log", 0),
        Action::Errno(e) => ("errno", e),
        Action::Trap(d) => ("trap", d),
        Action::Trace(d) => ("trace", d),
        Action::UserNotif => ("notify", 0),
        Action::KillThread => ("kill_thread", 0),
        Action::KillProcess => ("kill_process", 0),
    };
    serde_json::json!([kind, data])
}

/// The rule set of `spec` for `arch` in the input format of
/// `bench-data/libseccomp_filter.py`, to build libseccomp's filter for the same policy.
/// Only specs without overlapping first-match rules mean the same thing there.
pub fn libseccomp_rules(spec: &SeccompSpec, arch: Arch) -> serde_json::Value {
    use super::spec::CmpOp;
    let mut rules = Vec::new();
    for name in spec.syscalls.keys() {
        if arch.nr(name).is_none() {
            continue;
        }
        for r in spec.rules_for(arch, name) {
            let conds: Vec<serde_json::Value> = r
                .conds
                .iter()
                .map(|c| {
                    let (op, mask) = match c.op {
                        CmpOp::Eq => ("eq", 0),
                        CmpOp::Ne => ("ne", 0),
                        CmpOp::Lt => ("lt", 0),
                        CmpOp::Le => ("le", 0),
                        CmpOp::Gt => ("gt", 0),
                        CmpOp::Ge => ("ge", 0),
                        CmpOp::MaskedEq(m) => ("masked_eq", m),
                    };
                    serde_json::json!([c.index, op, c.value, mask])
                })
                .collect();
            rules.push(serde_json::json!([name, action_json(r.action), conds]));
        }
    }
    rules.push(serde_json::json!([
        "clone3",
        action_json(Action::Errno(super::spec::ENOSYS)),
        []
    ]));
    serde_json::json!({ "default": action_json(spec.default_action), "rules": rules })
}
