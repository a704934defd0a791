//! OCI / Docker seccomp profile interop.
//!
//! Input of [`import`]: a Docker profile or an OCI runtime-spec `linux.seccomp` object
//! (`defaultAction`, `defaultErrnoRet`, `syscalls[{names, action, errnoRet, args,
//! includes, excludes}]`). Output: a [`SeccompSpec`] plus notes on what was dropped.
//! Treatment: the agent holds no capabilities, so rules with `includes.caps` are dropped
//! and rules with `excludes.caps` kept; `includes/excludes.arches` restrict a rule to the
//! architectures AEGIS supports (or drop it); `minKernel` is satisfied (AEGIS needs 5.11+);
//! names unknown on x86_64 and aarch64 (32-bit-only calls) are dropped; args of one entry
//! are a conjunction, except — as runc does — when two args share an index, then each arg is
//! its own rule; conditional rules are tried before unconditional ones.
//! Input of [`export`]: a spec and the architectures. Output: a runtime-spec
//! `linux.seccomp` JSON object (what runc, crun, podman, Docker `--security-opt seccomp=`
//! and Kubernetes `localhost/` profiles read) and a list of losses where OCI's unordered
//! rule sets cannot say exactly what AEGIS's first-match rules say, each marked wider,
//! stricter or unrecorded ([`Effect`]). What the AEGIS supervisor answers (USER_NOTIF): the
//! destination checks of [`DESTINATION_CALLS`] are exported allowed (wider: no other runtime
//! checks `[network] unix` grants), other argument-dependent notifications take the default
//! action (stricter: `AF_UNIX` datagram sockets), and unconditional ones stay
//! `SCMP_ACT_NOTIFY` (the exec gate: runc refuses the profile without a seccomp agent, fail
//! closed). Conditions on one argument that admit a single value are exported as one
//! `SCMP_CMP_EQ` (runc ORs conditions that share an argument). Invariant: the export is
//! deterministic (sorted names, actions in a fixed order).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Value, json};

use super::hardening::DESTINATION_CALLS;
use super::spec::{Action, ArgCond, CLONE3, CmpOp, ENOSYS, EPERM, Rule, SeccompSpec};
use super::syscalls::{self, Arch};

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("seccomp profile: invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("seccomp profile: unknown action {0:?}")]
    Action(String),
    #[error("seccomp profile: unknown comparison operator {0:?}")]
    Op(String),
    #[error(
        "seccomp profile: {name}: MASKED_EQ whose valueTwo has bits outside the mask never matches"
    )]
    MaskedNeverHolds { name: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u16>,
    #[serde(default)]
    syscalls: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    names: Vec<String>,
    action: String,
    errno_ret: Option<u16>,
    #[serde(default)]
    args: Option<Vec<OciArg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    caps: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciArg {
    index: u8,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: String,
}

/// An imported profile.
#[derive(Debug, Clone)]
pub struct Imported {
    pub spec: SeccompSpec,
    /// What was dropped and why, one line each (deterministic order).
    pub notes: Vec<String>,
}

fn arch_of(name: &str) -> Option<Arch> {
    match name {
        "amd64" | "SCMP_ARCH_X86_64" | "x86_64" => Some(Arch::X86_64),
        "arm64" | "SCMP_ARCH_AARCH64" | "aarch64" => Some(Arch::Aarch64),
        _ => None,
    }
}

fn action_of(
    name: &str,
    errno: Option<u16>,
    default_errno: Option<u16>,
) -> Result<Action, OciError> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_ERRNO" => Action::Errno(errno.or(default_errno).unwrap_or(EPERM)),
        "SCMP_ACT_TRAP" => Action::Trap(0),
        "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(0)),
        "SCMP_ACT_NOTIFY" => Action::UserNotif,
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        other => return Err(OciError::Action(other.to_owned())),
    })
}

fn cond_of(name: &str, a: &OciArg) -> Result<ArgCond, OciError> {
    let op = match a.op.as_str() {
        "SCMP_CMP_EQ" => CmpOp::Eq,
        "SCMP_CMP_NE" => CmpOp::Ne,
        "SCMP_CMP_LT" => CmpOp::Lt,
        "SCMP_CMP_LE" => CmpOp::Le,
        "SCMP_CMP_GT" => CmpOp::Gt,
        "SCMP_CMP_GE" => CmpOp::Ge,
        "SCMP_CMP_MASKED_EQ" => {
            // Like runc and libseccomp: a missing valueTwo is 0 (Docker's clone rule).
            let datum = a.value_two.unwrap_or(0);
            if datum & !a.value != 0 {
                return Err(OciError::MaskedNeverHolds {
                    name: name.to_owned(),
                });
            }
            return Ok(ArgCond::new(a.index, CmpOp::MaskedEq(a.value), datum));
        }
        other => return Err(OciError::Op(other.to_owned())),
    };
    Ok(ArgCond::new(a.index, op, a.value))
}

/// Which of our architectures a rule applies to (`None`: drop it).
fn arches_of(inc: Option<&Filter>, exc: Option<&Filter>) -> Option<Option<Arch>> {
    let mut set: BTreeSet<Arch> = Arch::ALL.into_iter().collect();
    if let Some(list) = inc
        .and_then(|f| f.arches.as_ref())
        .filter(|l| !l.is_empty())
    {
        set.retain(|a| list.iter().any(|n| arch_of(n) == Some(*a)));
    }
    if let Some(list) = exc.and_then(|f| f.arches.as_ref()) {
        set.retain(|a| !list.iter().any(|n| arch_of(n) == Some(*a)));
    }
    match set.len() {
        0 => None,
        1 => Some(set.into_iter().next()),
        _ => Some(None),
    }
}

/// Import a Docker/OCI seccomp profile.
pub fn import(json_text: &str) -> Result<Imported, OciError> {
    let p: Profile = serde_json::from_str(json_text)?;
    let default_action = action_of(&p.default_action, p.default_errno_ret, p.default_errno_ret)?;
    let mut notes = Vec::new();
    let mut conditional: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    let mut unconditional: BTreeMap<String, Vec<Rule>> = BTreeMap::new();
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    for (i, e) in p.syscalls.iter().enumerate() {
        if let Some(caps) = e
            .includes
            .as_ref()
            .and_then(|f| f.caps.as_ref())
            .filter(|c| !c.is_empty())
        {
            notes.push(format!(
                "entry {i} ({}): needs {} which the agent never holds: dropped",
                e.names.join(","),
                caps.join(",")
            ));
            continue;
        }
        let Some(only_arch) = arches_of(e.includes.as_ref(), e.excludes.as_ref()) else {
            notes.push(format!(
                "entry {i} ({}): for other architectures only: dropped",
                e.names.join(",")
            ));
            continue;
        };
        let action = action_of(&e.action, e.errno_ret, p.default_errno_ret)?;
        for name in &e.names {
            if !syscalls::is_known_name(name) {
                unknown.insert(name.clone());
                continue;
            }
            let args = e.args.as_deref().unwrap_or(&[]);
            let conds: Vec<ArgCond> = args
                .iter()
                .map(|a| cond_of(name, a))
                .collect::<Result<_, _>>()?;
            let shared_index = conds
                .iter()
                .enumerate()
                .any(|(j, c)| conds.iter().skip(j + 1).any(|d| d.index == c.index));
            let sets: Vec<Vec<ArgCond>> = if shared_index {
                conds.iter().map(|c| vec![*c]).collect()
            } else {
                vec![conds]
            };
            for conds in sets {
                let rule = Rule {
                    action,
                    only_arch,
                    conds,
                };
                let into = if rule.conds.is_empty() {
                    &mut unconditional
                } else {
                    &mut conditional
                };
                into.entry(name.clone()).or_default().push(rule);
            }
        }
    }
    if !unknown.is_empty() {
        notes.push(format!(
            "{} names unknown on x86_64 and aarch64 dropped: {}",
            unknown.len(),
            unknown.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    let mut spec = SeccompSpec::new(default_action);
    for (name, rules) in conditional {
        spec.syscalls.entry(name).or_default().extend(rules);
    }
    for (name, rules) in unconditional {
        spec.syscalls.entry(name).or_default().extend(rules);
    }
    Ok(Imported { spec, notes })
}

/// A spec as an OCI `linux.seccomp` object.
#[derive(Debug, Clone)]
pub struct Exported {
    pub json: Value,
    /// Where the OCI profile says less than the spec, one each.
    pub losses: Vec<OciLoss>,
}

/// What a runtime reading the export does differently from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It allows calls the spec refuses or sends to the supervisor.
    Wider,
    /// It refuses calls the spec allows or sends to the supervisor.
    Stricter,
    /// The same verdicts, but nothing records the refusals.
    Unrecorded,
}

/// One difference between the export and the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLoss {
    /// Starts with the syscall names concerned (`name, name: ...`) where there are some.
    pub what: String,
    pub effect: Effect,
}

impl OciLoss {
    fn new(effect: Effect, what: String) -> OciLoss {
        OciLoss { what, effect }
    }
}

fn scmp_arch(a: Arch) -> &'static str {
    match a {
        Arch::X86_64 => "SCMP_ARCH_X86_64",
        Arch::Aarch64 => "SCMP_ARCH_AARCH64",
    }
}

fn action_json(a: Action) -> (&'static str, Option<u16>) {
    match a {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Log => ("SCMP_ACT_LOG", None),
        Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
        Action::Trap(_) => ("SCMP_ACT_TRAP", None),
        Action::Trace(_) => ("SCMP_ACT_TRACE", None),
        Action::UserNotif => ("SCMP_ACT_NOTIFY", None),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
    }
}

fn arg_json(c: &ArgCond) -> Value {
    let (op, value, two) = match c.op {
        CmpOp::Eq => ("SCMP_CMP_EQ", c.value, None),
        CmpOp::Ne => ("SCMP_CMP_NE", c.value, None),
        CmpOp::Lt => ("SCMP_CMP_LT", c.value, None),
        CmpOp::Le => ("SCMP_CMP_LE", c.value, None),
        CmpOp::Gt => ("SCMP_CMP_GT", c.value, None),
        CmpOp::Ge => ("SCMP_CMP_GE", c.value, None),
        CmpOp::MaskedEq(m) => ("SCMP_CMP_MASKED_EQ", m, Some(c.value)),
    };
    let mut v = json!({ "index": c.index, "value": value, "op": op });
    if let (Some(t), Some(o)) = (two, v.as_object_mut()) {
        o.insert("valueTwo".to_owned(), json!(t));
    }
    v
}

fn entry_json(names: Vec<String>, action: Action, args: Option<&[ArgCond]>) -> Value {
    let (act, errno) = action_json(action);
    let mut v = json!({ "names": names, "action": act });
    if let Some(o) = v.as_object_mut() {
        if let Some(e) = errno {
            o.insert("errnoRet".to_owned(), json!(e));
        }
        if let Some(a) = args {
            o.insert(
                "args".to_owned(),
                Value::Array(a.iter().map(arg_json).collect()),
            );
        }
    }
    v
}

/// What only the AEGIS supervisor can answer, in terms other runtimes understand: the
/// destination checks ([`DESTINATION_CALLS`]) are allowed (wider: they exist for the
/// `[network] unix` grants, which no other runtime knows), another conditional USER_NOTIF
/// takes the default action (stricter: `AF_UNIX` datagram sockets, which the supervisor
/// refuses anyway), and an unconditional one stays USER_NOTIF (runc refuses such a profile
/// without a seccomp agent: fail closed).
fn without_supervisor(spec: &SeccompSpec, losses: &mut Vec<OciLoss>) -> SeccompSpec {
    let mut out = spec.clone();
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for (name, rules) in out.syscalls.iter_mut() {
        if !rules.iter().any(|r| r.action == Action::UserNotif) {
            continue;
        }
        if DESTINATION_CALLS.contains(&name.as_str()) {
            for r in rules.iter_mut().filter(|r| r.action == Action::UserNotif) {
                r.action = Action::Allow;
            }
            allowed.push(name.clone());
            continue;
        }
        let mut changed = false;
        for r in rules.iter_mut() {
            if r.action == Action::UserNotif && !r.conds.is_empty() {
                r.action = spec.default_action;
                changed = true;
            }
        }
        if changed {
            refused.push(name.clone());
            simplify_single_exception(rules, spec.default_action);
        }
    }
    if !allowed.is_empty() {
        losses.push(OciLoss::new(
            Effect::Wider,
            format!(
                "{}: AEGIS's supervisor checks the destination of each call (in memory a \
                 filter cannot read) and lets a pathname unix socket be reached only through \
                 a `[network] unix` grant; no other runtime has it, so these calls are \
                 allowed and a container reaches every unix socket its mounts show (mount \
                 no host socket the policy does not grant). Network destinations are not \
                 seccomp's to decide under either runtime",
                allowed.join(", ")
            ),
        ));
    }
    if !refused.is_empty() {
        losses.push(OciLoss::new(
            Effect::Stricter,
            format!(
                "{}: the calls AEGIS's supervisor answers for some arguments (AF_UNIX \
                 datagram sockets, which it refuses with EACCES) take the default action, and \
                 so do calls the remaining rules cannot tell apart from them",
                refused.join(", ")
            ),
        ));
    }
    out
}

/// `args[i] < 0x26`-style text of `conds`, for loss lines.
fn conds_text(conds: &[ArgCond]) -> String {
    let one = |c: &ArgCond| match c.op {
        CmpOp::Eq => format!("args[{}] == {:#x}", c.index, c.value),
        CmpOp::Ne => format!("args[{}] != {:#x}", c.index, c.value),
        CmpOp::Lt => format!("args[{}] < {:#x}", c.index, c.value),
        CmpOp::Le => format!("args[{}] <= {:#x}", c.index, c.value),
        CmpOp::Gt => format!("args[{}] > {:#x}", c.index, c.value),
        CmpOp::Ge => format!("args[{}] >= {:#x}", c.index, c.value),
        CmpOp::MaskedEq(m) => format!("(args[{}] & {m:#x}) == {:#x}", c.index, c.value),
    };
    conds.iter().map(one).collect::<Vec<_>>().join(" && ")
}

/// The one value of an argument that satisfies all `conds` (each about that argument), if
/// exactly one does: an `==` that the others admit, or the smallest value the masked
/// comparisons admit when an upper bound excludes the next one (and so every larger one),
/// as in `args[0] < 38 && (args[0] & 0xffffffff) == 1`.
fn only_value(index: u8, conds: &[ArgCond]) -> Option<u64> {
    let holds = |v: u64, cs: &[ArgCond]| {
        let mut args = [0u64; 6];
        if let Some(a) = args.get_mut(usize::from(index)) {
            *a = v;
        }
        cs.iter().all(|c| c.holds(&args))
    };
    if let Some(eq) = conds.iter().find(|c| c.op == CmpOp::Eq) {
        return holds(eq.value, conds).then_some(eq.value);
    }
    let mask = conds.iter().fold(0u64, |m, c| match c.op {
        CmpOp::MaskedEq(k) => m | k,
        _ => m,
    });
    let smallest = conds.iter().fold(0u64, |d, c| match c.op {
        CmpOp::MaskedEq(k) => d | (c.value & k),
        _ => d,
    });
    if mask == 0 || !holds(smallest, conds) {
        return None;
    }
    if mask == u64::MAX {
        return Some(smallest);
    }
    // Every other admitted value is at least `smallest` plus the lowest free bit.
    let next = smallest | (1u64 << (!mask).trailing_zeros());
    let bounds: Vec<ArgCond> = conds
        .iter()
        .filter(|c| matches!(c.op, CmpOp::Lt | CmpOp::Le))
        .copied()
        .collect();
    (!holds(next, &bounds)).then_some(smallest)
}

/// `conds` with the conditions on each argument reduced to one (runc ORs conditions that
/// share an argument), or `None` if some argument's conditions admit more than one value.
fn one_per_argument(conds: &[ArgCond]) -> Option<Vec<ArgCond>> {
    let mut out = Vec::new();
    for index in 0u8..6 {
        let mine: Vec<ArgCond> = conds.iter().filter(|c| c.index == index).copied().collect();
        match mine.as_slice() {
            [] => {}
            [c] => out.push(*c),
            _ => out.push(ArgCond::new(index, CmpOp::Eq, only_value(index, &mine)?)),
        }
    }
    Some(out)
}

/// Rules OCI's unordered rule sets can express, at least as strict as `rules` (first-match
/// order, where an exception taking the `default` action shadows later rules): `[C →
/// default, always → A]` with one invertible comparison `C` is exactly `[¬C → A]`; otherwise
/// a rule after an exception is kept only if it cannot match where the exception does, and
/// an unconditional rule after one is dropped (its calls get the default action).
fn simplify_single_exception(rules: &mut Vec<Rule>, default: Action) {
    invert_single_exception(rules, default);
    let mut exceptions: Vec<Vec<ArgCond>> = Vec::new();
    let mut out = Vec::new();
    for r in rules.iter() {
        if r.action == default {
            if r.conds.is_empty() {
                break;
            }
            exceptions.push(r.conds.clone());
            continue;
        }
        let overlaps = exceptions.iter().any(|e| {
            let both: Vec<ArgCond> = e.iter().chain(&r.conds).copied().collect();
            super::hardening::satisfiable(&both)
        });
        // (An unconditional rule overlaps every exception.)
        if !overlaps {
            out.push(r.clone());
        }
    }
    *rules = out;
}

/// `[C → default, always → A]` with one invertible comparison `C` is `[¬C → A]`.
fn invert_single_exception(rules: &mut Vec<Rule>, default: Action) {
    let inverse = |op: CmpOp| match op {
        CmpOp::Eq => Some(CmpOp::Ne),
        CmpOp::Ne => Some(CmpOp::Eq),
        CmpOp::Lt => Some(CmpOp::Ge),
        CmpOp::Ge => Some(CmpOp::Lt),
        CmpOp::Le => Some(CmpOp::Gt),
        CmpOp::Gt => Some(CmpOp::Le),
        CmpOp::MaskedEq(_) => None,
    };
    if let [first, last] = rules.as_slice()
        && first.action == default
        && first.only_arch.is_none()
        && last.conds.is_empty()
        && last.only_arch.is_none()
        && last.action != default
        && let [c] = first.conds.as_slice()
        && let Some(op) = inverse(c.op)
    {
        let action = last.action;
        *rules = vec![Rule::when(vec![ArgCond::new(c.index, op, c.value)], action)];
    }
}

/// Whether `a` lets the call run (its exceptions lost, the export is wider).
fn permissive_outcome(a: Action) -> bool {
    matches!(a, Action::Allow | Action::Log | Action::Trace(_) | Action::UserNotif)
}

/// Export `spec` for `arches` as an OCI runtime-spec `linux.seccomp` object.
pub fn export(spec: &SeccompSpec, arches: &[Arch]) -> Exported {
    let mut losses = Vec::new();
    let spec = &without_supervisor(spec, &mut losses);
    let exists = |n: &str| arches.iter().any(|a| a.nr(n).is_some());
    // Unconditional outcomes, grouped by action.
    let mut plain: BTreeMap<Action, BTreeSet<String>> = BTreeMap::new();
    let mut conditional: Vec<Value> = Vec::new();
    plain
        .entry(Action::Errno(ENOSYS))
        .or_default()
        .insert(CLONE3.to_owned());
    for (name, all_rules) in &spec.syscalls {
        if name == CLONE3 || !exists(name) {
            continue;
        }
        let rules: Vec<&Rule> = all_rules
            .iter()
            .filter(|r| r.only_arch.is_none_or(|a| arches.contains(&a)))
            .collect();
        if rules.iter().any(|r| r.only_arch.is_some()) && arches.len() > 1 {
            losses.push(OciLoss::new(
                Effect::Wider,
                format!("{name}: rule for one architecture exported for all"),
            ));
        }
        // Rules up to the first unconditional one; its action (or the default) is the tail.
        let cut = rules.iter().position(|r| r.conds.is_empty()).unwrap_or(rules.len());
        let (conds, rest) = rules.split_at(cut);
        let tail = rest.first().map_or(spec.default_action, |r| r.action);
        let actions: BTreeSet<Action> = conds
            .iter()
            .map(|r| r.action)
            .filter(|a| *a != tail)
            .collect();
        if actions.is_empty() {
            if tail != spec.default_action {
                plain.entry(tail).or_default().insert(name.clone());
            }
            continue;
        }
        if actions.len() > 1 || tail != spec.default_action {
            // First-match rules OCI cannot express: keep the unconditional outcome.
            let exceptions: Vec<String> = conds
                .iter()
                .filter(|r| r.action != tail)
                .map(|r| format!("{} when {}", r.action, conds_text(&r.conds)))
                .collect();
            let why = if name == "ioctl" {
                " (0x5412 is TIOCSTI, 0x541c TIOCLINUX: a process in the container can push \
                 input into its terminal)"
            } else {
                ""
            };
            let effect = if permissive_outcome(tail) {
                Effect::Wider
            } else {
                Effect::Stricter
            };
            losses.push(OciLoss::new(
                effect,
                format!(
                    "{name}: AEGIS's first-match rules answer {} before {tail}; OCI's rule \
                     sets are unordered, so it is exported as {tail} for all arguments{why}",
                    exceptions.join(", ")
                ),
            ));
            if tail != spec.default_action {
                plain.entry(tail).or_default().insert(name.clone());
            }
            continue;
        }
        let mut dropped = Vec::new();
        for r in conds.iter().filter(|r| r.action != tail) {
            match one_per_argument(&r.conds) {
                Some(args) => {
                    let e = entry_json(vec![name.clone()], r.action, Some(&args));
                    if !conditional.contains(&e) {
                        conditional.push(e);
                    }
                }
                None => dropped.push(format!("{} when {}", r.action, conds_text(&r.conds))),
            }
        }
        if !dropped.is_empty() {
            losses.push(OciLoss::new(
                if permissive_outcome(tail) { Effect::Wider } else { Effect::Stricter },
                format!(
                    "{name}: conditions on one argument that admit more than one value \
                     (runc would OR them): {} dropped, {tail} instead",
                    dropped.join("; ")
                ),
            ));
        }
    }
    let notified: Vec<&String> = spec
        .syscalls
        .iter()
        .filter(|(n, rs)| exists(n) && rs.iter().any(|r| r.action == Action::UserNotif))
        .map(|(n, _)| n)
        .collect();
    if !notified.is_empty() {
        let names: Vec<&str> = notified.iter().map(|n| n.as_str()).collect();
        losses.push(OciLoss::new(
            Effect::Stricter,
            format!(
                "{}: answered by the AEGIS supervisor (SCMP_ACT_NOTIFY), which no other \
                 runtime has: runc refuses to start the container unless \
                 linux.seccomp.listenerPath names a seccomp agent (\"seccomp listenerPath is \
                 not set\"), and a foreign agent would not know the policy",
                names.join(", ")
            ),
        ));
    }
    let refuses = |a: Action| matches!(a, Action::Errno(e) if e != ENOSYS);
    if refuses(spec.default_action)
        || spec.syscalls.values().flatten().any(|r| refuses(r.action))
    {
        losses.push(OciLoss::new(
            Effect::Unrecorded,
            "every refusal: AEGIS's supervisor answers each one with the program's errno and \
             records it (which call, its arguments, the rule that refused it); another runtime \
             refuses with the same errno and records nothing"
                .to_owned(),
        ));
    }
    let (def, def_errno) = action_json(spec.default_action);
    let mut syscalls: Vec<Value> = plain
        .into_iter()
        .map(|(a, names)| entry_json(names.into_iter().collect(), a, None))
        .collect();
    syscalls.extend(conditional);
    let mut obj = json!({
        "defaultAction": def,
        "architectures": arches.iter().map(|a| scmp_arch(*a)).collect::<Vec<_>>(),
        "syscalls": syscalls,
    });
    if let (Some(e), Some(o)) = (def_errno, obj.as_object_mut()) {
        o.insert("defaultErrnoRet".to_owned(), json!(e));
    }
    Exported { json: obj, losses }
}
