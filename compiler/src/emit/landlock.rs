//! IR filesystem (and TCP) rules → `landlock.json` (the mount plan is [`super::mounts`]).
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
//!
//! Older kernels: per handled item above ABI 1 the artifact records which other layer
//! enforces it on a kernel that lacks it ([`record_fallbacks`]; the reasoning is in
//! `aegis_targets::landlock::compat`): `refer` is stricter without it, `truncate` is made
//! up for by the mount plan only after checking that every writable mount of the plan lies
//! inside a grant that includes `truncate`, TCP rights and the abstract-socket scope by the
//! agent's own network namespace (not in force for root's host mode, which shares the
//! host's), the signal scope by its pid namespace. Each fallback is in the loss report; the
//! bundle's manifest asks for the lowest ABI with every fallback in force, and the runtime
//! decides per launch which are.

use std::collections::BTreeSet;

use aegis_targets::landlock::{
    self as ll, Fallback, FsRight, FsRule, LandlockArtifact, NetRight, NetRule, PathTemplate, Scope,
};
use aegis_targets::mounts::{MountKind, MountPlan};

use aegis_targets::bundle::contract::PROXY_PORT;

use super::{EmitError, Loss, LossReport};
use crate::ir::{Checked, FsAccess, Layer, Level, NetworkMode, Protocol};
use crate::source::SourceMap;

/// More TCP ports than this (wide ranges, `*`) are left to nftables alone: one Landlock
/// rule per port would bloat the artifact for no gain.
const MAX_LANDLOCK_PORTS: usize = 1024;

fn err(message: impl Into<String>) -> EmitError {
    EmitError::new("landlock", message)
}

/// The policy's filesystem rules as the targets take them; origins as `file:line:col`.
pub fn fs_rules(policy: &Checked, sources: &SourceMap) -> Result<Vec<FsRule>, EmitError> {
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

pub(super) fn push_losses(losses: &mut LossReport, layer: &'static str, from: Vec<ll::Loss>) {
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

/// The Landlock artifact (`landlock.json`) of the policy's rules, with the fallbacks older
/// kernels need recorded against `plan`, the mount plan of the same rules.
pub fn emit(
    policy: &Checked,
    rules: &[FsRule],
    plan: &MountPlan,
    losses: &mut LossReport,
) -> Result<LandlockArtifact, EmitError> {
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
    record_fallbacks(policy, &mut artifact, plan, losses);
    artifact.validate().map_err(|e| EmitError::wrap("landlock", e))?;
    Ok(artifact)
}

/// Writable mounts of the plan that no Landlock grant with `truncate` covers (the mount
/// plan makes up for `truncate` only when this is empty). A minimal `/dev` has one writable
/// mount with regular files, its `shm` tmpfs; `/proc`, masks and read-only binds have none.
fn writable_mounts_without_truncate(artifact: &LandlockArtifact, plan: &MountPlan) -> Vec<String> {
    let covered = |target: &PathTemplate| {
        artifact
            .path_rules
            .iter()
            .any(|r| r.access.contains(&FsRight::Truncate) && (r.path == *target || r.path.contains(target)))
    };
    let mut out = Vec::new();
    for e in &plan.entries {
        let writable: Vec<PathTemplate> = match e.kind {
            MountKind::Bind { writable: true, .. } | MountKind::Tmpfs { .. } => vec![e.target.clone()],
            MountKind::Dev { .. } => {
                let shm = format!("{}/shm", e.target);
                PathTemplate::parse(&shm).into_iter().collect()
            }
            MountKind::Bind { writable: false, .. } | MountKind::Mask | MountKind::Proc => vec![],
        };
        out.extend(writable.iter().filter(|t| !covered(t)).map(|t| t.to_string()));
    }
    out
}

/// Records, per handled item above ABI 1, the layer that enforces it on a kernel without
/// it (module docs), and says so in the loss report.
pub fn record_fallbacks(policy: &Checked, artifact: &mut LandlockArtifact, plan: &MountPlan, losses: &mut LossReport) {
    let own_netns = policy.network.mode != NetworkMode::Host;
    let mut note = |right: String, enforced: String| {
        losses.push(Loss {
            layer: "landlock",
            rule: format!("Landlock {right} on older kernels"),
            what: "the kernel's Landlock ABI may lack it (Debian 12 and Amazon Linux 2023: 6.1, ABI 2; Ubuntu 22.04: 5.15, ABI 1)".into(),
            enforced,
        });
    };
    if artifact.handled_fs.contains(&FsRight::Refer) {
        artifact.fallbacks.fs.insert(FsRight::Refer, Fallback::Stricter);
        note(
            "`refer` (ABI 2, Linux 5.19)".into(),
            "the stricter reading: without it every rename or link into another directory fails (EXDEV)".into(),
        );
    }
    if artifact.handled_fs.contains(&FsRight::Truncate) {
        let open = writable_mounts_without_truncate(artifact, plan);
        if open.is_empty() {
            artifact.fallbacks.fs.insert(FsRight::Truncate, Fallback::MountPlan);
            note(
                "`truncate` (ABI 3, Linux 6.2)".into(),
                "by the mount plan where the launch has a mount namespace (outside the write grants everything is read-only: truncate fails with EROFS); a launch without one needs ABI 3 and is refused below it".into(),
            );
        } else {
            note(
                "`truncate` (ABI 3, Linux 6.2)".into(),
                format!("only by Landlock: writable mounts without a write grant ({}) keep the mount plan from making up for it; kernels below ABI 3 are refused", open.join(", ")),
            );
        }
    }
    // TCP rules and abstract UNIX sockets: the agent's own network namespace, where the
    // launch gives it one (every mode but root's host mode, which shares the host's).
    let netns_note = if own_netns {
        "by the agent's own network namespace where the launch has one; a launch without namespaces needs the ABI".to_string()
    } else {
        "by the agent's own network namespace where the launch forwards the granted endpoints into one (host mode run by a user, or without a cgroup2 tree); root's host mode shares the host's namespace and needs the ABI".to_string()
    };
    for r in artifact.handled_net.clone() {
        artifact.fallbacks.net.insert(r, Fallback::NetworkNamespace);
    }
    if !artifact.handled_net.is_empty() {
        note("TCP rules (ABI 4, Linux 6.7)".into(), netns_note.clone());
    }
    for s in artifact.scopes.clone() {
        let (fallback, enforced) = match s {
            Scope::Signal => (
                Fallback::PidNamespace,
                "by the agent's own pid namespace where the launch has one; a launch without namespaces needs the ABI".to_string(),
            ),
            Scope::AbstractUnixSocket => (Fallback::NetworkNamespace, netns_note.clone()),
        };
        artifact.fallbacks.scopes.insert(s, fallback);
        note(format!("scope `{s}` (ABI 6, Linux 6.12)"), enforced);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
    use super::*;
    use aegis_targets::mounts::MountEntry;

    fn rule(path: &str, access: ll::FsAccess) -> FsRule {
        FsRule { path: PathTemplate::parse(path).unwrap(), access, origin: path.into() }
    }

    fn entry(target: &str, kind: MountKind) -> MountEntry {
        MountEntry { target: PathTemplate::parse(target).unwrap(), kind, origin: Default::default() }
    }

    #[test]
    fn truncate_is_made_up_for_only_when_every_writable_mount_is_a_write_grant() {
        let rules = [rule("/usr", ll::FsAccess::Read), rule("/srv/w", ll::FsAccess::Write)];
        let artifact = ll::lower_fs(&rules).artifact;
        let mut plan = MountPlan {
            entries: vec![
                entry("/srv/w", MountKind::Bind { writable: true, exec: false }),
                entry("/srv/w/sub", MountKind::Bind { writable: true, exec: false }),
                entry("/usr", MountKind::Bind { writable: false, exec: true }),
                entry("/proc", MountKind::Proc),
            ],
            ..Default::default()
        };
        assert!(writable_mounts_without_truncate(&artifact, &plan).is_empty());
        // A writable mount that no write grant covers (a private /tmp without its grant, a
        // /dev whose shm has no write grant) keeps the plan from making up for truncate.
        plan.entries.push(entry("/tmp", MountKind::Tmpfs { size_bytes: 1 << 20, exec: false }));
        plan.entries.push(entry("/dev", MountKind::Dev { shm_size_bytes: 1 << 20 }));
        assert_eq!(writable_mounts_without_truncate(&artifact, &plan), vec!["/tmp".to_string(), "/dev/shm".into()]);
        let with = [rules[0].clone(), rules[1].clone(), rule("/tmp", ll::FsAccess::Write), rule("/dev/shm", ll::FsAccess::Write)];
        let artifact = ll::lower_fs(&with).artifact;
        assert!(writable_mounts_without_truncate(&artifact, &plan).is_empty());
    }
}
