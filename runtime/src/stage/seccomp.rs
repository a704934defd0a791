//! Stage 9, seccomp (the last restriction, installed just before exec).
//!
//! Input: the bundle's `seccomp.<arch>.bpf` for this machine's architecture. Output, in the
//! child: the filter installed (no_new_privs is already set) and seccomp mode 2 verified.
//! Invariants: this build does not yet link the seccomp target's apply function, so a bundle
//! that carries a seccomp program and requires it is refused with "not implemented: seccomp"
//! (never silently skipped); a best-effort one runs and the report says "not enforced".

use crate::child::Fail;
use crate::exit::RunError;
use crate::stage::verify::Verified;

/// Child-side plan (empty until the seccomp target is wired in).
pub struct ChildSeccomp {
    _private: (),
}

/// Supervisor side. Returns the child plan and the report detail.
pub fn prepare(v: &Verified) -> Result<(ChildSeccomp, Option<String>), RunError> {
    let present = v.files.keys().any(|k| k.starts_with("seccomp.")) || v.manifest.kernel.seccomp;
    if !present {
        return Ok((ChildSeccomp { _private: () }, None));
    }
    if v.required("seccomp") {
        return Err(RunError::NotImplemented { layer: "seccomp" });
    }
    Ok((
        ChildSeccomp { _private: () },
        Some("seccomp program present but not installed: the seccomp stage is not implemented in this build".into()),
    ))
}

impl ChildSeccomp {
    /// A plan that applies nothing (the layer is absent from the bundle).
    pub fn placeholder() -> ChildSeccomp {
        ChildSeccomp { _private: () }
    }
}

pub fn apply_in_child(_s: &ChildSeccomp) -> Result<(), Fail> {
    Ok(())
}

pub fn describe(_what: u32) -> &'static str {
    "seccomp"
}
