//! IR filesystem rules → `mounts.json`, the mount/namespace plan.
//!
//! Input: a checked policy and its filesystem rules as the targets take them
//! ([`super::landlock::fs_rules`], the same list the Landlock ruleset is built from, so the
//! two can never disagree about which subtree is granted). Output: the validated
//! [`MountPlan`] (read-only binds, masks for denied paths, the private `/tmp`, a minimal
//! `/dev`, a fresh `/proc`), its losses in the bundle's loss report.

use aegis_targets::landlock::FsRule;
use aegis_targets::mounts::{self, MountPlan, PlanOptions};

use super::{EmitError, LossReport};
use crate::ir::Checked;

/// The mount plan of `rules`, validated.
pub fn emit(policy: &Checked, rules: &[FsRule], losses: &mut LossReport) -> Result<MountPlan, EmitError> {
    let opts = PlanOptions { tmp_size_bytes: Some(policy.filesystem.tmp_size), ..PlanOptions::default() };
    let (plan, plan_losses) = mounts::plan_from_rules(rules, &opts);
    super::landlock::push_losses(losses, "mounts", plan_losses);
    plan.validate().map_err(|e| EmitError::wrap("mounts", e))?;
    Ok(plan)
}
