//! Stage 8, Landlock.
//!
//! Input: the bundle's `landlock.json` (decoded and validated by the supervisor), the launch
//! parameters, and whether the bundle requires the layer. Output, in the child (after the
//! mount plan, so paths resolve inside the new root; after no_new_privs):
//! `aegis_targets::landlock::apply` enforces the ruleset and returns a status. Invariants:
//! a required layer must come back "fully enforced" at an ABI at least the artifact's
//! `min_abi`, otherwise the child refuses to exec (exit 126); the supervisor checks the
//! kernel's ABI before anything is created, so an old kernel is refused early and precisely.

use aegis_targets::landlock::{Abi, Enforcement, LandlockArtifact, Mode, Params, RestrictFlag, kernel_abi};

use crate::child::{ChildReport, Fail, INFO_LANDLOCK_ABI, INFO_LANDLOCK_DETAILS, INFO_LANDLOCK_STATUS, INFO_LEN};
use crate::exit::RunError;
use crate::stage::Stage;
use crate::stage::verify::Verified;

pub const FILE: &str = "landlock.json";
pub const WHAT_APPLY: u32 = 1;
pub const WHAT_NOT_FULL: u32 = 2;

/// Child-side plan.
pub struct ChildLandlock {
    plan: Option<(LandlockArtifact, Params, Mode)>,
}

impl ChildLandlock {
    /// A plan that applies nothing (the layer is absent from the bundle).
    pub fn placeholder() -> ChildLandlock {
        ChildLandlock { plan: None }
    }
}

/// Supervisor side: decodes the artifact, checks the kernel ABI. Returns the child plan
/// and, when the layer is absent or skipped, the report detail.
pub fn prepare(v: &Verified) -> Result<(ChildLandlock, Option<String>), RunError> {
    let Some(bytes) = v.file(FILE) else {
        if v.manifest.kernel.landlock_abi.is_some() && v.required("landlock") {
            return Err(RunError::Refused("the manifest requires Landlock but the bundle has no landlock.json".into()));
        }
        return Ok((ChildLandlock::placeholder(), Some("no landlock.json in bundle".into())));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| RunError::Refused("landlock.json is not UTF-8".into()))?;
    let art = LandlockArtifact::from_json(text).map_err(|e| RunError::Refused(format!("landlock.json: {e}")))?;
    let mode = if v.required("landlock") { Mode::Required } else { Mode::BestEffort };
    let kernel = kernel_abi();
    if mode == Mode::Required && kernel < art.min_abi {
        return Err(RunError::Unavailable {
            layer: "landlock",
            why: format!("this kernel's Landlock ABI is {}, the bundle requires {}", kernel.0, art.min_abi.0),
        });
    }
    let params = crate::stage::mounts::params(v)?;
    // Audit: by default Landlock does not log denials after the exec that starts the agent.
    // Where the kernel can (ABI 7), ask it to, so the supervisor can record them from the
    // kernel log. This is host-side observability, not policy: it is not in the artifact,
    // so the bundle's minimum ABI stays what the policy needs.
    let mut art = art;
    if kernel >= RestrictFlag::LogNewExecOn.since() {
        art.restrict_flags.insert(RestrictFlag::LogNewExecOn);
    }
    Ok((ChildLandlock { plan: Some((art, params, mode)) }, None))
}

/// The artifact's minimum ABI, for the report.
pub fn min_abi(l: &ChildLandlock) -> Option<Abi> {
    l.plan.as_ref().map(|(a, _, _)| a.min_abi)
}

pub fn apply_in_child(l: &ChildLandlock, info: &mut [u32; INFO_LEN], msg: &mut ChildReport) -> Result<(), Fail> {
    let Some((art, params, mode)) = &l.plan else {
        return Ok(());
    };
    match aegis_targets::landlock::apply(art, params, *mode) {
        Ok(st) => {
            info[INFO_LANDLOCK_STATUS] = match st.status {
                Enforcement::FullyEnforced => 1,
                Enforcement::PartiallyEnforced => 2,
                Enforcement::NotEnforced => 3,
            };
            info[INFO_LANDLOCK_ABI] = st.abi_in_use.0;
            info[INFO_LANDLOCK_DETAILS] = (st.details.len() + st.losses.len()) as u32;
            if *mode == Mode::Required && (st.status != Enforcement::FullyEnforced || st.abi_in_use < art.min_abi) {
                msg.set_msg(&format!("status {:?} at ABI {}; details: {}", st.status, st.abi_in_use.0, st.details.join("; ")));
                return Err(Fail::check(Stage::Landlock, WHAT_NOT_FULL));
            }
            Ok(())
        }
        Err(e) => {
            msg.set_msg(&e.to_string());
            Err(Fail::check(Stage::Landlock, WHAT_APPLY))
        }
    }
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_APPLY => "applying the Landlock ruleset",
        WHAT_NOT_FULL => "Landlock not fully enforced at the bundle's ABI",
        _ => "landlock",
    }
}
