//! Emitting kernel artifacts from the IR, and packing them into a bundle.
//!
//! Input: a [`Checked`] policy (the compiler's `lower` returns one; nothing builds one
//! without checking it). Output: [`Artifacts`], the
//! deterministic bytes of every bundle file (artifact + text twin), plus a [`LossReport`]
//! of every rule a kernel mechanism cannot express exactly and how it is enforced instead
//! (always the stricter reading). One submodule per target, each with one `emit` function
//! that takes the [`Checked`] policy (seccomp has two steps: the `spec`, then its `programs`
//! per architecture). Words: the compiler's `lower` turns syntax into IR; `emit` turns IR
//! into a target's artifact; a target crate's own `lower` turns that into kernel form.
//! Invariants: same policy and compiler version, same bytes; an artifact is only emitted for
//! a target whose emit succeeded (a failure is an error, never a missing file).

pub mod bundle;
pub mod cgroup;
pub mod landlock;
pub mod mounts;
pub mod nftables;
pub mod seccomp;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aegis_targets::bundle::contract;
use aegis_targets::seccomp::oci::Effect;
use crate::ir::Checked;
use crate::source::SourceMap;

fn text_file(mut s: String) -> Vec<u8> {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s.into_bytes()
}

/// A rule that a kernel mechanism cannot express exactly.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Loss {
    pub layer: &'static str,
    /// The rule as the policy states it.
    pub rule: String,
    /// What the mechanism cannot do.
    pub what: String,
    /// What is enforced instead (always at least as strict as the policy).
    pub enforced: String,
}

pub type LossReport = Vec<Loss>;

pub fn render_losses(losses: &[Loss]) -> String {
    let mut s = String::from("# AEGIS loss report: rules no kernel mechanism expresses exactly, and what is enforced instead.\n");
    if losses.is_empty() {
        s.push_str("no losses: every rule is enforced exactly as written.\n");
    }
    for l in losses {
        let _ = writeln!(s, "\n[{}] {}\n  cannot: {}\n  enforced: {}", l.layer, l.rule, l.what, l.enforced);
    }
    s
}

/// Every file of a bundle except the manifest and its signature, by file name.
pub struct Artifacts {
    pub files: BTreeMap<String, Vec<u8>>,
    pub losses: LossReport,
    /// Lowest Landlock ABI a host needs, with every fallback layer in force (None: no
    /// Landlock artifact).
    pub landlock_abi: Option<u32>,
    /// The policy digest (`sha256:<hex>`), computed once: it serialises the whole IR.
    pub digest: String,
}

/// An error from a target's emit (the policy is valid but a target cannot express it), one
/// type for every target: which target, what it said, and the target's own typed error
/// when there was one (a validation or encoding failure), kept as the `source`.
#[derive(Debug, thiserror::Error)]
#[error("{target}: {message}")]
pub struct EmitError {
    pub target: &'static str,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl EmitError {
    /// The policy asks `target` for something it cannot express, in words.
    pub fn new(target: &'static str, message: impl Into<String>) -> EmitError {
        EmitError { target, message: message.into(), source: None }
    }

    /// The target's own error; its text is the message.
    pub fn wrap(target: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> EmitError {
        EmitError { target, message: e.to_string(), source: Some(Box::new(e)) }
    }
}

fn pretty_json(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

pub fn emit(policy: &Checked, sources: &SourceMap) -> Result<Artifacts, EmitError> {
    let mut files = BTreeMap::new();
    let mut losses = LossReport::new();

    let rules = landlock::fs_rules(policy, sources)?;
    let plan = mounts::emit(policy, &rules, &mut losses)?;
    let ll = landlock::emit(policy, &rules, &plan, &mut losses)?;
    // What a host needs at least: the ABI with every fallback in force (the runtime
    // decides per launch which are).
    let landlock_abi = Some(ll.floor_abi().0);
    files.insert(contract::LANDLOCK.to_string(), text_file(ll.to_json().map_err(|e| EmitError::wrap("landlock", e))?));
    files.insert(contract::LANDLOCK_TEXT.to_string(), ll.render_text().into_bytes());
    files.insert(contract::MOUNTS.to_string(), text_file(plan.to_json().map_err(|e| EmitError::wrap("mounts", e))?));
    files.insert(contract::MOUNTS_TEXT.to_string(), plan.render_text().into_bytes());

    let cg = cgroup::emit(policy);
    files.insert(contract::CGROUP.to_string(), cg.to_json());
    files.insert(contract::CGROUP_TEXT.to_string(), cg.to_text().into_bytes());

    let nft = nftables::emit(policy, &mut losses)?;
    files.insert(contract::NFTABLES.to_string(), nft.to_json());
    files.insert(contract::NFTABLES_TEXT.to_string(), nft.to_text().into_bytes());

    let spec = seccomp::spec(policy, &mut losses)?;
    for (arch, program) in seccomp::programs(&spec)? {
        files.insert(contract::seccomp_bpf_file(arch), aegis_targets::seccomp::to_bytes(&program));
        files.insert(contract::seccomp_asm_file(arch), aegis_targets::seccomp::disassemble(&program, Some(arch)).into_bytes());
    }
    let oci_spec = seccomp::without_file_mediation(policy, &mut losses)?;
    let oci = aegis_targets::seccomp::oci::export(oci_spec.as_ref().unwrap_or(&spec), &aegis_targets::seccomp::syscalls::Arch::ALL);
    files.insert(contract::SECCOMP_OCI.to_string(), pretty_json(&oci.json));
    for l in oci.losses {
        // The OCI profile is an interop export for other runtimes; aegis-exec installs the
        // exact BPF artifacts. Say plainly when the export is wider than the policy.
        let enforced = match l.effect {
            Effect::Wider => "WIDER in seccomp.oci.json than the policy (other runtimes would allow it); the BPF artifacts aegis-exec installs are exact",
            Effect::Stricter => "stricter in seccomp.oci.json; the BPF artifacts aegis-exec installs are exact",
            Effect::Unrecorded => "the same refusals in seccomp.oci.json, without a record; aegis-exec records each",
        };
        losses.push(Loss { layer: contract::SECCOMP_OCI, rule: "OCI export for docker/podman/runc/Kubernetes".into(), what: l.what, enforced: enforced.into() });
    }

    files.insert(contract::POLICY_IR.to_string(), pretty_json(&policy.to_json()));
    let digest = policy.digest();
    files.insert(contract::POLICY_DIGEST.to_string(), format!("{digest}\n").into_bytes());
    losses.sort_by(|a, b| (a.layer, &a.rule, &a.what).cmp(&(b.layer, &b.rule, &b.what)));
    losses.dedup();
    files.insert(contract::LOSS_REPORT.to_string(), render_losses(&losses).into_bytes());
    Ok(Artifacts { files, losses, landlock_abi, digest })
}
