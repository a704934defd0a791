//! Stage 2, cgroup: create the agent's leaf and write its limits (before the child exists),
//! then (stage 3) move the child in and verify membership from `/proc/<pid>/cgroup`.
//!
//! Input: the bundle's `cgroup.json`. Output: a [`Leaf`] that the supervisor owns and
//! removes on every exit path (its `Drop` kills what is left and removes the directories).
//! Where: as root, under each hierarchy root (`<root>/aegis/`); as an unprivileged user, on
//! cgroup v2, under a subtree delegated to them ([`Layout::placement`]: the supervisor's own
//! delegated cgroup, e.g. a `systemd-run --user --scope -p Delegate=yes` scope, or
//! `user@UID.service` around it). Invariants: a bundle without `cgroup.json` runs without
//! limits only if it marks `cgroup` best-effort or declares no cgroup versions; a required
//! cgroup that cannot be created stops the launch (exit 126) — when this user has no
//! writable cgroup, before anything is created, with the exact `systemd-run` line that
//! gives one; best-effort runs without limits and the report says why.

use aegis_targets::cgroup::{CgroupSpec, Layout, Leaf, Placement};

use crate::exit::RunError;
use crate::report::{Layer, LayerStatus};
use crate::stage::verify::Verified;

pub const FILE: &str = aegis_targets::bundle::contract::CGROUP;

/// Parsed before anything is created.
pub struct Prepared {
    pub spec: CgroupSpec,
    pub layout: Layout,
    /// Where the leaf goes; `Err` (best-effort bundles only): why there is no cgroup.
    pub placement: Result<Placement, String>,
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
    let placement = match layout.placement() {
        Ok(p) => Ok(p),
        Err(e) if v.required("cgroup") => {
            return Err(RunError::Unavailable {
                layer: "cgroup",
                why: e.to_string(),
            });
        }
        Err(e) => Err(e.to_string()),
    };
    Ok(Some(Prepared { spec, layout, placement }))
}

/// Creates the leaf. Best-effort failures give `Ok((None, report))`.
pub fn create(v: &Verified, p: Option<&Prepared>, instance: &str) -> Result<(Option<Leaf>, Layer), RunError> {
    let Some(p) = p else {
        return Ok((None, Layer::new("cgroup", LayerStatus::NotEnforced, "no cgroup.json in bundle or no cgroup fs")));
    };
    let placement = match &p.placement {
        Ok(pl) => pl,
        Err(why) => return Ok((None, Layer::new("cgroup", LayerStatus::NotEnforced, format!("best-effort: {why}")))),
    };
    match Leaf::create(&p.spec, &p.layout, placement, instance) {
        Ok(leaf) => {
            let r = leaf.report();
            let status = if r.partial.is_empty() { LayerStatus::Fully } else { LayerStatus::Partially };
            let mut detail = format!(
                "{} layout, {}, leaf {}: {}",
                r.layout,
                r.placement,
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

