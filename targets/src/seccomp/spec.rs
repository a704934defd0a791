//! The seccomp input type ([`SeccompSpec`]) and its reference meaning ([`decide`]).
//!
//! Input: what the compiler lowers a policy into — a default action, and per syscall name an
//! ordered list of [`Rule`]s (argument conditions, all of which must hold, and an action).
//! Output of [`decide`]: the action the kernel must take for one `seccomp_data`. Invariants
//! (the whole meaning, in order): a foreign `arch` kills the process; a number unknown on the
//! filter's architecture (x32 numbers, -1, holes, future syscalls) returns ENOSYS; `clone3`
//! returns ENOSYS (libc falls back to `clone`, whose flags a filter can check); otherwise the
//! first rule of that syscall whose conditions all hold decides, and with none the
//! `default_action`. Argument comparisons are unsigned 64-bit. [`decide`] is the oracle every
//! emitted program is tested against: keep it small and obviously right.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::syscalls::{self, Arch};

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_KILL_THREAD`.
pub const RET_KILL_THREAD: u32 = 0x0000_0000;
/// `SECCOMP_RET_TRAP`.
pub const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_ERRNO`.
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_USER_NOTIF`.
pub const RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// `SECCOMP_RET_TRACE`.
pub const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_LOG`.
pub const RET_LOG: u32 = 0x7ffc_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ACTION_FULL`.
pub const RET_ACTION_FULL: u32 = 0xffff_0000;
/// `SECCOMP_RET_DATA`.
pub const RET_DATA: u32 = 0x0000_ffff;

/// `ENOSYS` (unknown numbers, `clone3`).
pub const ENOSYS: u16 = 38;
/// `EPERM` (policy denials).
pub const EPERM: u16 = 1;

/// What the kernel does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "data")]
pub enum Action {
    /// Run the syscall.
    Allow,
    /// Run the syscall and log it (audit).
    Log,
    /// Do not run it; return `-1` with this errno (1..=4095).
    Errno(u16),
    /// Send SIGSYS to the thread.
    Trap(u16),
    /// Notify a ptrace tracer with this data (ENOSYS without one).
    Trace(u16),
    /// Ask the supervisor over the user-notification fd.
    UserNotif,
    /// Kill the calling thread.
    KillThread,
    /// Kill the whole process (unknown architecture, policy kill).
    KillProcess,
}

impl Action {
    /// The `SECCOMP_RET_*` value of this action.
    pub const fn to_ret(self) -> u32 {
        match self {
            Action::Allow => RET_ALLOW,
            Action::Log => RET_LOG,
            Action::Errno(e) => RET_ERRNO | e as u32,
            Action::Trap(d) => RET_TRAP | d as u32,
            Action::Trace(d) => RET_TRACE | d as u32,
            Action::UserNotif => RET_USER_NOTIF,
            Action::KillThread => RET_KILL_THREAD,
            Action::KillProcess => RET_KILL_PROCESS,
        }
    }

    /// Decode a filter's return value the way the kernel does (`SECCOMP_RET_ACTION_FULL`);
    /// unknown actions are treated by the kernel as KILL_PROCESS, and so here.
    pub const fn from_ret(ret: u32) -> Action {
        let data = (ret & RET_DATA) as u16;
        match ret & RET_ACTION_FULL {
            RET_ALLOW => Action::Allow,
            RET_LOG => Action::Log,
            RET_ERRNO => Action::Errno(data),
            RET_TRAP => Action::Trap(data),
            RET_TRACE => Action::Trace(data),
            RET_USER_NOTIF => Action::UserNotif,
            RET_KILL_THREAD => Action::KillThread,
            _ => Action::KillProcess,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Allow => f.write_str("ALLOW"),
            Action::Log => f.write_str("LOG"),
            Action::Errno(e) => write!(f, "ERRNO({e})"),
            Action::Trap(d) => write!(f, "TRAP({d})"),
            Action::Trace(d) => write!(f, "TRACE({d})"),
            Action::UserNotif => f.write_str("USER_NOTIF"),
            Action::KillThread => f.write_str("KILL_THREAD"),
            Action::KillProcess => f.write_str("KILL_PROCESS"),
        }
    }
}

/// An unsigned 64-bit comparison of one syscall argument against a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", content = "mask")]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & mask) == value`. Use mask `0xffff_ffff` for C `int`/`unsigned int`
    /// arguments: the kernel truncates them, so the upper half is attacker garbage.
    MaskedEq(u64),
}

/// `args[index] <op> value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArgCond {
    /// Argument index, 0..=5.
    pub index: u8,
    #[serde(flatten)]
    pub op: CmpOp,
    pub value: u64,
}

impl ArgCond {
    pub const fn new(index: u8, op: CmpOp, value: u64) -> ArgCond {
        ArgCond { index, op, value }
    }

    /// Whether the condition holds for these arguments.
    pub fn holds(&self, args: &[u64; 6]) -> bool {
        let Some(&a) = args.get(usize::from(self.index)) else {
            return false;
        };
        let v = self.value;
        match self.op {
            CmpOp::Eq => a == v,
            CmpOp::Ne => a != v,
            CmpOp::Lt => a < v,
            CmpOp::Le => a <= v,
            CmpOp::Gt => a > v,
            CmpOp::Ge => a >= v,
            CmpOp::MaskedEq(m) => a & m == v,
        }
    }
}

/// Conditions (a conjunction; empty = always) and the action when they all hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conds: Vec<ArgCond>,
    pub action: Action,
    /// Restrict the rule to one architecture (arch-specific OCI rules); `None` = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_arch: Option<Arch>,
}

impl Rule {
    /// A rule without conditions.
    pub const fn always(action: Action) -> Rule {
        Rule {
            conds: Vec::new(),
            action,
            only_arch: None,
        }
    }

    /// A rule that applies when every condition holds.
    pub fn when(conds: Vec<ArgCond>, action: Action) -> Rule {
        Rule {
            conds,
            action,
            only_arch: None,
        }
    }

    pub fn applies_to(&self, arch: Arch) -> bool {
        self.only_arch.is_none_or(|a| a == arch)
    }

    pub fn matches(&self, args: &[u64; 6]) -> bool {
        self.conds.iter().all(|c| c.holds(args))
    }
}

/// The seccomp artifact's input: what the compiler lowers a policy into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompSpec {
    /// For known syscalls that have no rule or no matching rule (usually `Errno(EPERM)`).
    pub default_action: Action,
    /// Per syscall name, rules in priority order: the first whose conditions hold decides.
    pub syscalls: BTreeMap<String, Vec<Rule>>,
}

/// The register state a filter sees (`struct seccomp_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeccompData {
    pub nr: u32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    pub const fn new(arch: Arch, nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr,
            arch: arch.audit_arch(),
            instruction_pointer: 0,
            args,
        }
    }

    /// The 64-byte kernel layout (native little-endian on both supported architectures).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        let mut put = |off: usize, bytes: &[u8]| {
            if let Some(dst) = b.get_mut(off..off + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        };
        put(0, &self.nr.to_le_bytes());
        put(4, &self.arch.to_le_bytes());
        put(8, &self.instruction_pointer.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            put(16 + 8 * i, &a.to_le_bytes());
        }
        b
    }
}

/// The syscall `clone3` always returns ENOSYS: its flags live in memory a filter cannot read.
pub const CLONE3: &str = "clone3";

/// Errors that make a spec impossible to emit faithfully.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("seccomp spec: syscall {name:?} does not exist on any supported architecture")]
    UnknownSyscall { name: String },
    #[error("seccomp spec: {name}: argument index {index} is out of range (0..=5)")]
    ArgIndex { name: String, index: u8 },
    #[error(
        "seccomp spec: {name}: argument {index} is a pointer; a filter sees the address, not \
         the memory, so a condition on it enforces nothing (only == 0 / != 0, a NULL test, is \
         meaningful)"
    )]
    PointerArg { name: String, index: u8 },
    #[error(
        "seccomp spec: {name}: condition (args[{index}] & {mask:#x}) == {value:#x} can never \
         hold (value has bits outside the mask)"
    )]
    NeverHolds {
        name: String,
        index: u8,
        mask: u64,
        value: u64,
    },
    #[error("seccomp spec: {what}: errno {errno} is outside 1..=4095")]
    Errno { what: String, errno: u16 },
}

impl SeccompSpec {
    /// An empty spec: every known syscall gets `default_action`.
    pub fn new(default_action: Action) -> SeccompSpec {
        SeccompSpec {
            default_action,
            syscalls: BTreeMap::new(),
        }
    }

    /// Append a rule for `name` (after its existing rules).
    pub fn push(&mut self, name: &str, rule: Rule) -> &mut Self {
        self.syscalls.entry(name.to_owned()).or_default().push(rule);
        self
    }

    /// Replace all rules of `name` by `rules`.
    pub fn set(&mut self, name: &str, rules: Vec<Rule>) -> &mut Self {
        self.syscalls.insert(name.to_owned(), rules);
        self
    }

    /// Allow `name` unconditionally (replacing its rules).
    pub fn allow(&mut self, name: &str) -> &mut Self {
        self.set(name, vec![Rule::always(Action::Allow)])
    }

    /// Check everything the code generator relies on.
    pub fn validate(&self) -> Result<(), SpecError> {
        let check_errno = |what: &str, a: Action| match a {
            Action::Errno(e) if e == 0 || e > 4095 => Err(SpecError::Errno {
                what: what.to_owned(),
                errno: e,
            }),
            _ => Ok(()),
        };
        check_errno("default action", self.default_action)?;
        for (name, rules) in &self.syscalls {
            if !syscalls::is_known_name(name) {
                return Err(SpecError::UnknownSyscall { name: name.clone() });
            }
            for rule in rules {
                check_errno(name, rule.action)?;
                for c in &rule.conds {
                    if c.index > 5 {
                        return Err(SpecError::ArgIndex {
                            name: name.clone(),
                            index: c.index,
                        });
                    }
                    // A pointer compared with NULL is the one meaningful test of a pointer
                    // (e.g. `sendto` with or without a destination address).
                    let null_test = matches!(c.op, CmpOp::Eq | CmpOp::Ne) && c.value == 0;
                    if syscalls::is_pointer_arg(name, c.index) && !null_test {
                        return Err(SpecError::PointerArg {
                            name: name.clone(),
                            index: c.index,
                        });
                    }
                    if let CmpOp::MaskedEq(mask) = c.op
                        && c.value & !mask != 0
                    {
                        return Err(SpecError::NeverHolds {
                            name: name.clone(),
                            index: c.index,
                            mask,
                            value: c.value,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The rules of syscall `name` that apply on `arch`, in order.
    pub fn rules_for(&self, arch: Arch, name: &str) -> Vec<&Rule> {
        self.syscalls
            .get(name)
            .map(|rs| rs.iter().filter(|r| r.applies_to(arch)).collect())
            .unwrap_or_default()
    }

    /// The action for syscall `nr` of `arch` if it does not depend on the arguments.
    pub fn constant_action(&self, arch: Arch, nr: u32) -> Option<Action> {
        let Some(name) = arch.syscall_name(nr) else {
            return Some(Action::Errno(ENOSYS));
        };
        if name == CLONE3 {
            return Some(Action::Errno(ENOSYS));
        }
        let mut seen: Option<Action> = None;
        for rule in self.rules_for(arch, name) {
            if seen.is_some_and(|s| s != rule.action) {
                return None;
            }
            seen = Some(rule.action);
            if rule.conds.is_empty() {
                return seen;
            }
        }
        match seen {
            Some(s) if s != self.default_action => None,
            _ => Some(self.default_action),
        }
    }

    /// Syscalls of `arch` that are allowed whatever the arguments (sorted by number).
    pub fn always_allowed(&self, arch: Arch) -> Vec<u32> {
        arch.table()
            .iter()
            .map(|(nr, _)| *nr)
            .filter(|nr| self.constant_action(arch, *nr) == Some(Action::Allow))
            .collect()
    }
}

/// The reference decision: what the filter emitted for `filter_arch` must return for `data`.
pub fn decide(spec: &SeccompSpec, filter_arch: Arch, data: &SeccompData) -> Action {
    if data.arch != filter_arch.audit_arch() {
        return Action::KillProcess;
    }
    let Some(name) = filter_arch.syscall_name(data.nr) else {
        return Action::Errno(ENOSYS);
    };
    if name == CLONE3 {
        return Action::Errno(ENOSYS);
    }
    spec.rules_for(filter_arch, name)
        .into_iter()
        .find(|r| r.matches(&data.args))
        .map_or(spec.default_action, |r| r.action)
}
