//! Step 5 of a launch, record: what was enforced, for whom, before the agent's own records.
//!
//! Input: what the earlier steps decided and found (the child's facts in its final report's
//! `INFO_*` slots, the supervisor's own layers). Output: one line per layer in the
//! enforcement report (fully, partially or not enforced, with details), and the launch's
//! records queued in the audit log (parameters, the report, the agent's start). Invariants:
//! a layer's status is what was verified, never what was asked for; every line says why a
//! layer is weaker than the policy wants.

use aegis_audit::Event;

use super::PARAMS_NOTE;
use super::confirm::Confirmed;
use super::prepare::Prepared;
use super::spawn::Spawned;
use crate::audit::Audit;
use crate::report::{EnforcementReport, Layer, LayerStatus};
use crate::stage::namespaces::Isolation;
use crate::stage::report::{INFO_CAPS_BOUNDING, INFO_CWD_ERRNO, INFO_HOST_HIDDEN, INFO_LANDLOCK_ABI, INFO_LANDLOCK_DETAILS, INFO_LANDLOCK_STATUS, INFO_LEN, INFO_MEMFD_ERRNO, INFO_MEMFD_NOEXEC, INFO_MOUNTS_MOUNTED, INFO_MOUNTS_SKIPPED, INFO_SECCOMP_LEN, INFO_SECCOMP_MODE};
use crate::stage;

/// Completes the agent's line and pushes every layer's line, in the report's order.
/// `proxy_layer`: the proxy's line, when the services started one.
pub(super) fn layers(report: &mut EnforcementReport, p: &mut Prepared, s: &Spawned, c: &Confirmed, proxy_layer: Option<Layer>, audit: &Audit) {
    let (v, iso, info) = (&p.v, s.iso, &c.report.info);
    if let Some((line, _)) = report.identity.as_mut() {
        match info[INFO_CWD_ERRNO] as i32 {
            0 => line.push_str(&format!("; runs {} in {}", p.command_path.display(), p.cwd.display())),
            e => line.push_str(&format!(
                "; runs {} in / ({} is not in the sandbox: {})",
                p.command_path.display(),
                p.cwd.display(),
                std::io::Error::from_raw_os_error(e)
            )),
        }
    }
    report.push(s.cg_layer.clone());
    report.push(match iso {
        Isolation::Full { .. } => Layer::new(
            "namespaces",
            LayerStatus::Fully,
            format!(
                "new {},cgroup namespaces; pid 1 is aegis's init, the agent (pid 2) its child, with the same uid and gid inside and on the host",
                c.setup.ns_detail
            ),
        ),
        Isolation::None => Layer::new("namespaces", LayerStatus::NotEnforced, s.userns_note.clone()),
    });
    let plan_applied = v.file(stage::mounts::FILE).is_some() && matches!(iso, Isolation::Full { .. });
    report.push(mounts_layer(iso, plan_applied, &s.mounts_detail, &s.tmp_note, info));
    if !p.host_net && p.nftp.is_none() && matches!(iso, Isolation::Full { .. }) {
        p.nft_layer = Layer::new("nftables", LayerStatus::Fully, "network mode none: own network namespace with loopback only (no ruleset needed)");
    }
    report.push(p.nft_layer.clone());
    if let Some(l) = proxy_layer {
        report.push(l);
    }
    report.push(caps_layer(info, s.cap_last));
    report.push(Layer::new("no_new_privs", LayerStatus::Fully, "set and verified"));
    report.landlock_abi = Some(aegis_targets::landlock::kernel_abi().0).filter(|a| *a > 0);
    let in_force = aegis_targets::landlock::InForce {
        pid_namespace: matches!(iso, Isolation::Full { .. }),
        network_namespace: matches!(iso, Isolation::Full { host_net: false }),
        mount_plan: plan_applied,
    };
    report.push(landlock_layer(p.landlock_note.take(), info, &s.landlock_min_abi, in_force));
    let mediated = p.mediation.as_ref().filter(|_| c.notify_server.is_some()).map(|m| m.describe());
    report.push(seccomp_layer(p.seccomp_note.take(), info, mediated));
    report.push(Layer::new("fds", LayerStatus::Fully, "inherited descriptors above 2 closed"));
    report.push(match &s.terminal {
        Some(t) => Layer::new("terminal", LayerStatus::Fully, t.describe()),
        None => Layer::new("terminal", LayerStatus::Fully, "no terminal among the agent's stdio; it runs in a session of its own, without a controlling terminal"),
    });
    report.push(Layer::new(
        "init",
        LayerStatus::Fully,
        "an init inside every layer forwards signals to the agent, reaps, resumes a stopped agent, enforces the wall time (also while the supervisor is stopped) and reports the agent's status",
    ));
    report.push(audit.layer());
}

/// Queues the launch's records (parameters, the enforcement report, the agent's start) and
/// writes them: nothing of the agent runs unrecorded past this point.
pub(super) fn start_records(audit: &mut Audit, report: &EnforcementReport, p: &Prepared, pid: libc::pid_t) -> Result<(), crate::exit::RunError> {
    let v = &p.v;
    if !v.params.is_empty() {
        // For `aegis why`: the policy's parameterised rules are judged with these values.
        let values: std::collections::BTreeMap<&str, String> = v.params.iter().map(|(k, p)| (k.as_str(), p.display().to_string())).collect();
        audit.queue(Event::Note { component: "aegis-exec".into(), message: format!("{PARAMS_NOTE}{}", serde_json::to_string(&values).unwrap_or_default()) });
    }
    audit.queue(report.to_event());
    audit.queue(Event::AgentStarted {
        command: v.command.clone(),
        pid: pid as u32,
        identity: Some(p.ident.to_audit()),
    });
    audit.flush()
}

/// The report's mounts line, from the child's facts.
fn mounts_layer(iso: Isolation, plan_applied: bool, detail: &str, tmp_note: &str, info: &[u32; INFO_LEN]) -> Layer {
    let hidden = if info[INFO_HOST_HIDDEN] == stage::mounts::hidden_count() { "hidden" } else { "NOT hidden" };
    if plan_applied {
        return Layer::new(
            "mounts",
            if info[INFO_MOUNTS_SKIPPED] == 0 { LayerStatus::Fully } else { LayerStatus::Partially },
            format!(
                "{detail}: {} mounted, {} skipped (missing on this host), {}; /proc/cmdline {hidden}; pivot_root, host tree detached",
                info[INFO_MOUNTS_MOUNTED],
                info[INFO_MOUNTS_SKIPPED],
                match (info[INFO_MEMFD_NOEXEC], info[INFO_MEMFD_ERRNO] as i32) {
                    (1, _) => "memfd_noexec 2 (memfd code cannot be executed)".to_string(),
                    (_, 0) => "memfd_noexec not asked for".to_string(),
                    (_, libc::EACCES) | (_, libc::EPERM) => "memfd_noexec NOT set (the vm.memfd_noexec sysctl is writable by the host's root only, even in the agent's own pid namespace)".to_string(),
                    (_, e) => format!("memfd_noexec NOT set ({})", std::io::Error::from_raw_os_error(e)),
                },
            ),
        );
    }
    match iso {
        Isolation::Full { .. } => Layer::new("mounts", LayerStatus::Partially, format!("{detail}; /proc/cmdline {hidden}")),
        Isolation::None => Layer::new("mounts", LayerStatus::NotEnforced, format!("{detail}{tmp_note}")),
    }
}

/// The report's capabilities line.
fn caps_layer(info: &[u32; INFO_LEN], cap_last: u32) -> Layer {
    if info[INFO_CAPS_BOUNDING] == 1 {
        Layer::new("capabilities", LayerStatus::Fully, format!("all sets and bounding set empty (caps 0..={cap_last}), securebits locked"))
    } else {
        Layer::new(
            "capabilities",
            LayerStatus::Fully,
            "effective, permitted, inheritable and ambient sets empty; the bounding set and securebits stay as they were (an unprivileged launch without a user namespace lacks CAP_SETPCAP), and no_new_privs keeps execve from granting anything",
        )
    }
}

/// The report's Landlock line (`note`: why the layer was not applied); `namespaces` and
/// `plan_applied` say what else of this launch enforces what an old ABI lacks.
fn landlock_layer(note: Option<String>, info: &[u32; INFO_LEN], needs: &stage::landlock::Needs, in_force: aegis_targets::landlock::InForce) -> Layer {
    if let Some(n) = note {
        return Layer::new("landlock", LayerStatus::NotEnforced, n);
    }
    Layer::new(
        "landlock",
        match info[INFO_LANDLOCK_STATUS] {
            1 => LayerStatus::Fully,
            2 => LayerStatus::Partially,
            _ => LayerStatus::NotEnforced,
        },
        needs.detail(info[INFO_LANDLOCK_ABI], info[INFO_LANDLOCK_DETAILS], in_force),
    )
}

/// The report's seccomp line (`note`: why the layer was not applied; `mediated`: what the
/// supervisor answers for the filter).
fn seccomp_layer(note: Option<String>, info: &[u32; INFO_LEN], mediated: Option<String>) -> Layer {
    match (note, info[INFO_SECCOMP_MODE]) {
        (Some(n), _) => Layer::new("seccomp", LayerStatus::NotEnforced, n),
        (None, 2) => Layer::new(
            "seccomp",
            LayerStatus::Fully,
            match mediated {
                Some(m) => format!("filter of {} instructions installed; Seccomp mode 2 verified; {m}", info[INFO_SECCOMP_LEN]),
                None => format!("filter of {} instructions installed; Seccomp mode 2 verified", info[INFO_SECCOMP_LEN]),
            },
        ),
        (None, m) => Layer::new("seccomp", LayerStatus::NotEnforced, format!("mode {m} after install")),
    }
}
