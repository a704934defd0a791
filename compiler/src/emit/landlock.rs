//! IR filesystem (and TCP) rules → `landlock.json` and `mounts.json`.
//!
//! Both targets take the same rule list (`aegis_targets::landlock::FsRule`, path templates
//! that keep `${PARAM}` until launch), so the Landlock ruleset and the mount plan can never
//! disagree about which subtree is granted. Denied paths inside allowed trees are masked by
//! the mount plan (exact) or, on hosts without mount namespaces, split at launch; the
//! target's own losses come back into the bundle's loss report.
//! TCP: in `host` mode Landlock additionally restricts `connect` to the allowed TCP ports
//! (nftables is the exact layer, this is defence in depth; needs ABI 4) and refuses `bind`
//! (the language grants no listening), and scopes abstract UNIX sockets, which belong to
//! the host's network namespace there (ABI 6). IPC scopes
//! (abstract UNIX sockets, signals; ABI 6) and the TCP restriction in `none`/`proxy` modes
//! duplicate what the agent's own pid and network namespaces already give, so they are
//! added only when `namespaces` is best-effort and Landlock may be the only wall left:
//! the bundle's minimum ABI stays as low as the policy allows.

use std::collections::BTreeSet;

use aegis_targets::landlock::{
    self as ll, FsRule, LandlockArtifact, NetRight, NetRule, PathTemplate, Scope,
};
use aegis_targets::mounts::{self, MountPlan, PlanOptions};

use super::{EmitError, Loss, LossReport, nftables::PROXY_PORT};
use crate::ir::{FsAccess, Layer, Level, NetworkMode, Policy, Protocol};
use crate::source::SourceMap;

/// More TCP ports than this (wide ranges, `*`) are left to nftables alone: one Landlock
/// rule per port would bloat the artifact for no gain.
const MAX_LANDLOCK_PORTS: usize = 1024;

fn err(message: impl Into<String>) -> EmitError {
    EmitError { target: "landlock", message: message.into() }
}

/// The policy's filesystem rules as the targets take them; origins as `file:line:col`.
pub fn fs_rules(policy: &Policy, sources: &SourceMap) -> Result<Vec<FsRule>, EmitError> {
    policy
        .filesystem
        .rules
        .iter()
        .map(|r| {
            let path = PathTemplate::parse(&r.path.to_string()).map_err(|e| err(format!("{}: {e}", r.path)))?;
            let access = match r.access {
                FsAccess::Read => ll::FsAccess::Read,
                FsAccess::Write => ll::FsAccess::Write,
                FsAccess::Exec => ll::FsAccess::Exec,
                FsAccess::Deny => ll::FsAccess::Deny,
            };
            let origin = match r.origin {
                Some(o) => format!("{} {} ({})", r.access.word(), r.path, sources.locate(o)),
                None => if r.protection { format!("built-in protection {}: {}", r.path, r.note) } else { format!("built-in {} {}: {}", r.access.word(), r.path, r.note) },
            };
            Ok(FsRule { path, access, origin })
        })
        .collect()
}

fn push_losses(losses: &mut LossReport, layer: &'static str, from: Vec<ll::Loss>) {
    for l in from {
        losses.push(Loss {
            layer,
            rule: l.rule,
            what: l.what,
            enforced: if l.stricter_reading {
                "the stricter reading (access may be refused that the policy allows)".into()
            } else {
                "NOT fully enforced by this layer; see the other layers".into()
            },
        });
    }
}

pub fn landlock(policy: &Policy, rules: &[FsRule], losses: &mut LossReport) -> Result<LandlockArtifact, EmitError> {
    let lowered = ll::lower_fs(rules);
    push_losses(losses, "landlock", lowered.losses);
    let mut artifact = lowered.artifact;
    let namespaces_may_be_missing = policy.enforcement.level(Layer::Namespaces) == Level::BestEffort;
    let host_network = policy.network.mode == NetworkMode::Host;
    if namespaces_may_be_missing {
        artifact.scopes = BTreeSet::from([Scope::AbstractUnixSocket, Scope::Signal]);
    } else if host_network {
        // Abstract UNIX sockets belong to the network namespace: in host mode the agent
        // shares the host's, and only this scope keeps it from the host's sockets (ABI 6).
        artifact.scopes = BTreeSet::from([Scope::AbstractUnixSocket]);
    }
    let ports: Option<BTreeSet<u16>> = match policy.network.mode {
        NetworkMode::None if namespaces_may_be_missing => Some(BTreeSet::new()),
        NetworkMode::Proxy if namespaces_may_be_missing => Some(BTreeSet::from([PROXY_PORT])),
        NetworkMode::None | NetworkMode::Proxy => None,
        NetworkMode::Host => {
            let mut set = BTreeSet::new();
            let mut too_many = false;
            for e in policy.network.allow.iter().filter(|e| e.protocol == Protocol::Tcp) {
                for r in &e.ports {
                    if usize::from(r.last - r.first) + set.len() >= MAX_LANDLOCK_PORTS {
                        too_many = true;
                    } else {
                        set.extend(r.first..=r.last);
                    }
                }
            }
            // DNS over TCP to the resolvers.
            if !policy.network.dns.is_empty() {
                set.insert(53);
            }
            (!too_many).then_some(set)
        }
    };
    let wide = policy.network.mode == NetworkMode::Host && ports.is_none();
    match ports {
        Some(ports) => {
            // The policy grants no listening: in host mode a bound port would serve anyone on
            // the host network, so `bind` is handled with no rule (denied).
            artifact.handled_net = if host_network {
                BTreeSet::from([NetRight::ConnectTcp, NetRight::BindTcp])
            } else {
                BTreeSet::from([NetRight::ConnectTcp])
            };
            artifact.net_rules =
                ports.into_iter().map(|port| NetRule { port, access: BTreeSet::from([NetRight::ConnectTcp]) }).collect();
        }
        None if !wide => {}
        None => losses.push(Loss {
            layer: "landlock",
            rule: "[network] allow with port ranges or `*`".into(),
            what: "more TCP ports than Landlock rules are worth".into(),
            enforced: "TCP destinations are enforced by nftables only (exact); Landlock does not restrict connect".into(),
        }),
    }
    artifact.normalize();
    artifact.validate().map_err(|e| err(e.to_string()))?;
    Ok(artifact)
}

pub fn mount_plan(policy: &Policy, rules: &[FsRule], losses: &mut LossReport) -> Result<MountPlan, EmitError> {
    let opts = PlanOptions { tmp_size_bytes: Some(policy.filesystem.tmp_size), ..PlanOptions::default() };
    let (plan, plan_losses) = mounts::plan_from_rules(rules, &opts);
    push_losses(losses, "mounts", plan_losses);
    plan.validate().map_err(|e| EmitError { target: "mounts", message: e.to_string() })?;
    Ok(plan)
}
