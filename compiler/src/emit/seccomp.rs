//! IR `[syscalls]` (and the rest of the policy) → per-architecture seccomp programs.
//!
//! The base set (`default`, or an imported OCI profile) is first **hardened** by what the
//! policy does not grant (no network → no INET sockets; no explicit `allow` of a dangerous
//! group → that group denied; see `aegis_targets::seccomp::Hardening`), then the policy's own
//! `[syscalls]` rules are applied on top, so an explicit, visible `allow = ["ptrace"]` (which
//! the lints flag) is the only way to get a dangerous call back. Denials use the policy's
//! errno. Every policy mediates connections ([`ConnectGate::Mediate`]): the supervisor
//! checks pathname unix sockets against `[network] unix`. Invariants: every program passes the constant-action cache check (each always
//! allowed syscall is decided from arch and number alone); same policy, same bytes.

use aegis_targets::seccomp::{
    self, Action, ConnectGate, ExecGate, Hardening, Rule, SeccompSpec, SockFilter, SyscallWeights, oci,
    syscalls::Arch,
};

use super::{EmitError, Loss, LossReport};
use crate::ir::{Checked, FsAccess, NetworkMode, SyscallAction, SyscallBase};

fn err(message: impl Into<String>) -> EmitError {
    EmitError::new("seccomp", message)
}

fn explicitly_allowed(policy: &Checked, names: &[&str]) -> bool {
    policy
        .syscalls
        .rules
        .iter()
        .any(|r| matches!(r.action, SyscallAction::Allow | SyscallAction::Log) && names.contains(&r.name.as_str()))
}

/// Whether the policy has protected or denied paths below a write grant (every user write
/// grant brings the built-in protections), whose names the file helper guards.
pub fn mediates_file_entries(policy: &Checked) -> bool {
    let fs = &policy.filesystem;
    fs.rules.iter().any(|r| r.protection)
        || fs.rules_of(FsAccess::Write).any(|w| w.origin.is_some() && fs.rules.iter().any(|r| matches!(r.access, FsAccess::Deny | FsAccess::Read) && r.path != w.path && w.path.covers(&r.path)))
}

/// The spec for the OCI export: `spec` before the file calls were sent to the supervisor.
/// Those notifications only make sense with aegis-exec's file helper, whose protected names
/// are enforced together with the mount plan and the Landlock ruleset that no other runtime
/// applies; exported as the policy's own rules (allowed), said in the loss report. Exporting
/// them as the default action would refuse every `open(O_CREAT)` to other runtimes.
pub fn without_file_mediation(policy: &Checked, losses: &mut LossReport) -> Result<Option<SeccompSpec>, EmitError> {
    if !mediates_file_entries(policy) {
        return Ok(None);
    }
    let mut scratch = LossReport::new();
    let mut p = policy.clone().into_inner();
    // A policy without user write grants mediates nothing.
    p.filesystem.rules.retain(|r| !(r.protection || (r.access == FsAccess::Write && r.origin.is_some())));
    let p = Checked::check(p).map_err(|v| EmitError::wrap("seccomp", v))?;
    let spec = spec(&p, &mut scratch)?;
    losses.push(Loss {
        layer: aegis_targets::bundle::contract::SECCOMP_OCI,
        rule: "OCI export for docker/podman/runc/Kubernetes".into(),
        what: "creating, removing and renaming directory entries is answered by aegis-exec's file helper (it guards the protected paths of write grants that do not exist at launch, with the mount plan and Landlock ruleset other runtimes do not apply)".into(),
        enforced: "WIDER in seccomp.oci.json: exported as allowed; the BPF artifacts aegis-exec installs are exact".into(),
    });
    Ok(Some(spec))
}

/// What the policy grants, as the seccomp hardening sees it.
pub fn hardening(policy: &Checked) -> Hardening {
    let has_exec = policy.filesystem.rules.iter().any(|r| r.access == FsAccess::Exec && r.origin.is_some());
    Hardening {
        inet_network: policy.network.mode != NetworkMode::None,
        exec: if has_exec { ExecGate::Allow } else { ExecGate::Notify },
        // Every policy: a pathname unix socket is reachable only through a `[network] unix`
        // grant, which only the supervisor can check (the address is in the agent's memory).
        connect: ConnectGate::Mediate,
        namespaces: explicitly_allowed(policy, &["unshare", "setns"]),
        mount: explicitly_allowed(policy, &["mount", "umount2", "pivot_root", "move_mount", "fsmount", "open_tree"]),
        bpf: explicitly_allowed(policy, &["bpf"]),
        perf_event_open: explicitly_allowed(policy, &["perf_event_open"]),
        keyring: explicitly_allowed(policy, &["keyctl", "add_key", "request_key"]),
        userfaultfd: explicitly_allowed(policy, &["userfaultfd"]),
        ptrace: explicitly_allowed(policy, &["ptrace", "process_vm_readv", "process_vm_writev"]),
        io_uring: explicitly_allowed(policy, &["io_uring_setup", "io_uring_enter", "io_uring_register"]),
        tty_injection: false,
        personality: explicitly_allowed(policy, &["personality"]),
    }
}

fn retarget_errno(action: &mut Action, from: u16, to: u16) {
    if *action == Action::Errno(from) {
        *action = Action::Errno(to);
    }
}

/// The full syscall decision for the policy: hardened base + the policy's own rules.
pub fn spec(policy: &Checked, losses: &mut LossReport) -> Result<SeccompSpec, EmitError> {
    let mut spec = match &policy.syscalls.base {
        SyscallBase::Default => seccomp::base_spec(),
        SyscallBase::Oci { path, resolved } => {
            let text = std::fs::read_to_string(resolved).map_err(|e| err(format!("cannot read OCI profile {path}: {e}")))?;
            let imported = oci::import(&text).map_err(|e| err(format!("OCI profile {path}: {e}")))?;
            for note in imported.notes {
                losses.push(Loss {
                    layer: "seccomp",
                    rule: format!("base = {{ oci = \"{path}\" }}"),
                    what: note,
                    enforced: "the stricter reading (the rule is not granted)".into(),
                });
            }
            imported.spec
        }
    };
    // The connect gate goes last, so that a `[syscalls] allow = ["connect"]` (or `socket`)
    // lets the call run but never past the supervisor's unix socket check.
    let h = hardening(policy);
    Hardening { connect: ConnectGate::Allow, ..h }.apply(&mut spec);
    for r in &policy.syscalls.rules {
        let action = match r.action {
            SyscallAction::Allow => Action::Allow,
            SyscallAction::Deny(e) => Action::Errno(e),
            SyscallAction::Log => Action::Log,
            SyscallAction::Kill => Action::KillProcess,
        };
        spec.set(&r.name, vec![Rule::always(action)]);
    }
    if h.connect == ConnectGate::Mediate {
        seccomp::hardening::mediate_connections(&mut spec);
    }
    // Below a write grant, a protected or denied path that does not exist at launch is a
    // name only the supervisor's file helper can refuse (docs/policy.md). See
    // [`without_file_mediation`] for the OCI export.
    if mediates_file_entries(policy) {
        seccomp::hardening::mediate_file_entries(&mut spec);
    }
    let errno = policy.syscalls.default_errno;
    if errno != seccomp::spec::EPERM {
        retarget_errno(&mut spec.default_action, seccomp::spec::EPERM, errno);
        for (name, rules) in spec.syscalls.iter_mut() {
            // Explicit per-syscall errno choices were set above and stay as written.
            if policy.syscalls.rules.iter().any(|r| &r.name == name) {
                continue;
            }
            for rule in rules.iter_mut() {
                retarget_errno(&mut rule.action, seccomp::spec::EPERM, errno);
            }
        }
    }
    spec.validate().map_err(|e| EmitError::wrap("seccomp", e))?;
    Ok(spec)
}

/// Programs for every architecture, each checked for the constant-action cache property.
pub fn programs(spec: &SeccompSpec) -> Result<Vec<(Arch, Vec<SockFilter>)>, EmitError> {
    let programs = seccomp::compile_all(spec, &SyscallWeights::agent_mix()).map_err(|e| EmitError::wrap("seccomp", e))?;
    let mut out = Vec::new();
    for (arch, program) in programs {
        seccomp::check_cacheable(spec, arch, &program).map_err(|e| EmitError::wrap("seccomp", e))?;
        out.push((arch, program));
    }
    Ok(out)
}
