//! Stage 2, cgroup: create the agent's leaf and write its limits (before the child exists),
//! then (stage 3) move the child in and verify membership from `/proc/<pid>/cgroup`.
//!
//! Input: the bundle's `cgroup.json`. Output: a [`Leaf`] that the supervisor owns and
//! removes on every exit path (its `Drop` kills what is left and removes the directories).
//! Invariants: a bundle without `cgroup.json` runs without limits only if it marks `cgroup`
//! best-effort or declares no cgroup versions; a required cgroup that cannot be created
//! stops the launch (exit 126).

use aegis_targets::cgroup::{CgroupSpec, Layout, Leaf};

use crate::exit::RunError;
use crate::report::{Layer, LayerStatus};
use crate::stage::verify::Verified;

pub const FILE: &str = "cgroup.json";

/// Parsed before anything is created.
pub struct Prepared {
    pub spec: CgroupSpec,
    pub layout: Layout,
}

/// Parses `cgroup.json` and detects the layout (no side effects).
pub fn prepare(v: &Verified) -> Result<Option<Prepared>, RunError> {
    let Some(bytes) = v.file(FILE) else {
        if v.required("cgroup") && !v.manifest.kernel.cgroup_versions.is_empty() {
            return Err(RunError::Refused("the bundle requires cgroup limits but has no cgroup.json".into()));
        }
        return Ok(None);
    };
    let spec = CgroupSpec::from_json(bytes).map_err(|e| RunError::Refused(e.to_string()))?;
    let layout = match Layout::detect() {
        Ok(l) => l,
        Err(e) if v.required("cgroup") => {
            return Err(RunError::Unavailable {
                layer: "cgroup",
                why: e.to_string(),
            });
        }
        Err(_) => return Ok(None),
    };
    Ok(Some(Prepared { spec, layout }))
}

/// Creates the leaf. Best-effort failures give `Ok((None, report))`.
pub fn create(v: &Verified, p: Option<&Prepared>, instance: &str) -> Result<(Option<Leaf>, Layer), RunError> {
    let Some(p) = p else {
        return Ok((None, Layer::new("cgroup", LayerStatus::NotEnforced, "no cgroup.json in bundle or no cgroup fs")));
    };
    match Leaf::create(&p.spec, &p.layout, instance) {
        Ok(leaf) => {
            let r = leaf.report();
            let status = if r.partial.is_empty() { LayerStatus::Fully } else { LayerStatus::Partially };
            let mut detail = format!(
                "{} layout, leaf {}: {}",
                r.layout,
                leaf.name(),
                r.settings.iter().map(|s| format!("{}={}", s.file, s.value)).collect::<Vec<_>>().join(" ")
            );
            if !r.partial.is_empty() {
                detail.push_str(&format!("; partial: {}", r.partial.join("; ")));
            }
            Ok((Some(leaf), Layer::new("cgroup", status, detail)))
        }
        Err(e) if v.required("cgroup") => Err(RunError::Unavailable {
            layer: "cgroup",
            why: e.to_string(),
        }),
        Err(e) => Ok((None, Layer::new("cgroup", LayerStatus::NotEnforced, format!("best-effort: {e}")))),
    }
}

/// Moves the child into the leaf and verifies it is a member in every hierarchy.
pub fn enter(leaf: &Leaf, pid: libc::pid_t, born_in_unified: bool) -> Result<(), RunError> {
    let added = if born_in_unified { leaf.add_pid_except_unified(pid) } else { leaf.add_pid(pid) };
    added.map_err(|e| RunError::Unavailable {
        layer: "cgroup",
        why: e.to_string(),
    })?;
    leaf.verify_member(pid).map_err(|e| RunError::NotVerified {
        layer: "cgroup",
        why: e.to_string(),
    })
}

