//! Stage 8, Landlock.
//!
//! Input: the bundle's `landlock.json` and the launch parameters. Output, in the child: the
//! ruleset enforced with `landlock_restrict_self`, and a status that must be "fully enforced
//! at the bundle's ABI" when the layer is required. Invariants: this build does not yet link
//! the Landlock target's apply function, so a bundle that carries `landlock.json` and
//! requires it is refused with "not implemented: landlock" (never silently skipped); a
//! best-effort one runs and the report says "not enforced".

use crate::child::Fail;
use crate::exit::RunError;
use crate::stage::verify::Verified;

/// Child-side plan (empty until the Landlock target is wired in).
pub struct ChildLandlock {
    _private: (),
}

pub const FILE: &str = "landlock.json";

/// Supervisor side. Returns the child plan and the report detail.
pub fn prepare(v: &Verified) -> Result<(ChildLandlock, Option<String>), RunError> {
    let present = v.files.contains_key(FILE) || v.manifest.kernel.landlock_abi.is_some();
    if !present {
        return Ok((ChildLandlock { _private: () }, None));
    }
    if v.required("landlock") {
        return Err(RunError::NotImplemented { layer: "landlock" });
    }
    Ok((
        ChildLandlock { _private: () },
        Some("landlock.json present but not applied: the Landlock stage is not implemented in this build".into()),
    ))
}

impl ChildLandlock {
    /// A plan that applies nothing (the layer is absent from the bundle).
    pub fn placeholder() -> ChildLandlock {
        ChildLandlock { _private: () }
    }
}

pub fn apply_in_child(_l: &ChildLandlock) -> Result<(), Fail> {
    Ok(())
}

pub fn describe(_what: u32) -> &'static str {
    "landlock"
}
