//! A launch without user namespaces (and so without any namespace): whether it may go on,
//! and what it gets instead.
//!
//! Input: the verified bundle, why there are no user namespaces, the network facts and the
//! host's Landlock ABI. Output: a refusal naming its fix for what the bundle requires and
//! Landlock + seccomp + cgroup cannot give, or the replacements ([`NoUserNamespaces`]): the
//! run's own /tmp, the environment pointing at it, and in proxy mode the proxy on a host
//! loopback port kept the only way out by Landlock and seccomp. Invariants: never silently
//! weaker: what is lost is said in the report's lines returned here; `doctor` decides with
//! the same [`refusal_without_user_namespaces`], so its verdict is the launch's.

use crate::exit::RunError;
use crate::identity::Identity;
use crate::report::{Layer, LayerStatus};
use crate::stage;
use crate::stage::verify::Verified;

/// What a launch without user namespaces (and so without any namespace) gets instead: the
/// run's own /tmp, the environment pointing at it, and in proxy mode the proxy on a host
/// loopback port kept the only way out by Landlock and seccomp ([`stage::proxy::HostListener`]).
pub(super) struct NoUserNamespaces {
    pub(super) tmp: stage::mounts::PrivateTmp,
    pub(super) env: Vec<(String, String)>,
    pub(super) tmp_note: String,
    pub(super) host_proxy: Option<stage::proxy::HostListener>,
    pub(super) nonet: stage::nonet::ChildNoNet,
    /// The nftables line, when the network is not filtered at all.
    pub(super) nft_layer: Option<Layer>,
}

/// Whether a launch may go on without user namespaces (and so without any namespace):
/// `Err` with the refusal (naming its fix) for what the bundle requires and Landlock +
/// seccomp + cgroup cannot give; `why` says why there are none, `kernel` is the host's
/// Landlock ABI. `net` is (proxy mode, cgroup-matched host mode, forwarded host mode).
/// `doctor` applies the same function to the probed host, so its verdict is the launch's.
pub(crate) fn refusal_without_user_namespaces(
    v: &Verified,
    why: &str,
    (proxy_mode, host_net, forwarded): (bool, bool, Option<&stage::nftables::Forwarded>),
    kernel: aegis_targets::landlock::Abi,
) -> Result<(), RunError> {
    if v.required("namespaces") {
        return Err(RunError::Unavailable {
            layer: "namespaces",
            why: format!("{why}; fix: allow unprivileged user namespaces on this host, or make the policy's namespaces and mounts layers best-effort (Landlock + seccomp only)"),
        });
    }
    if proxy_mode && v.required("nftables") {
        // Without its own network namespace only Landlock and seccomp could keep the proxy
        // the only way out, and Landlock tells TCP destinations apart by port, not address:
        // weaker than the namespace the policy requires.
        return Err(RunError::Unavailable {
            layer: "network",
            why: format!(
                "network mode `proxy` needs a network namespace to be the only route out: {why}; fix: allow unprivileged user namespaces on this host; with nftables \"best-effort\" it runs with Landlock + seccomp instead (TCP to the proxy's port only, told apart by port, not address)"
            ),
        });
    }
    if proxy_mode && (kernel.0 < 4 || v.file(stage::landlock::FILE).is_none()) {
        // The proxy on a host loopback port is the only way out only while Landlock's TCP
        // port rules (ABI 4) keep every other TCP destination closed.
        return Err(RunError::Unavailable {
            layer: "network",
            why: format!(
                "network mode `proxy` without a network namespace needs Landlock ABI 4 (TCP port rules) and a Landlock ruleset to keep the proxy the only way out; this kernel's ABI is {}{}; fix: allow unprivileged user namespaces on this host, or run it on Linux {}+",
                kernel.0,
                if v.file(stage::landlock::FILE).is_some() { "" } else { ", and the bundle has no ruleset" },
                aegis_targets::landlock::compat::linux_release(aegis_targets::landlock::Abi(4))
            ),
        });
    }
    if !proxy_mode && !host_net && v.required("nftables") {
        // Network mode `none` is a network namespace, and so is `host` mode for a launcher
        // that cannot filter the host's namespace; without one the agent would have the
        // host's network. Only a bundle that makes this best-effort runs.
        return Err(RunError::Unavailable {
            layer: "network",
            why: format!(
                "{}: {why}; fix: allow unprivileged user namespaces on this host{}",
                match forwarded {
                    Some(f) => format!("network mode `host` needs a network namespace here ({}), to forward only the granted endpoints", f.why),
                    None => "network mode `none` needs a network namespace".to_string(),
                },
                if forwarded.is_some() { ", or run aegis-exec as root on a host with a cgroup2 tree (host mode then filters the host's own namespace)" } else { "" }
            ),
        });
    }
    Ok(())
}

/// What a launch without user namespaces gets instead (after
/// [`refusal_without_user_namespaces`]): the run's own /tmp in place of the private one, and
/// the proxy on a host loopback port in proxy mode.
pub(super) fn without_user_namespaces(
    v: &Verified,
    ident: &Identity,
    why: &str,
    (proxy_mode, host_net, forwarded): (bool, bool, Option<&stage::nftables::Forwarded>),
    proxy_prep: Option<&stage::proxy::Prepared>,
    env: &[(String, String)],
    landlock: &mut stage::landlock::ChildLandlock,
) -> Result<NoUserNamespaces, RunError> {
    refusal_without_user_namespaces(v, why, (proxy_mode, host_net, forwarded), aegis_targets::landlock::kernel_abi())?;
    // No mount namespace, so no private /tmp: the run gets its own directory instead (never
    // the host's /tmp), granted by Landlock in place of /tmp.
    let tmp = stage::mounts::PrivateTmp::create(&v.manifest.agent, ident.uid, ident.gid, !ident.root)?;
    let moved = landlock.retarget_tmp(tmp.path())?;
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "TMPDIR").cloned().collect();
    for (k, val) in env.iter_mut() {
        if k == "HOME" {
            *val = tmp.path().display().to_string();
        }
    }
    env.push(("TMPDIR".into(), tmp.path().display().to_string()));
    env.sort();
    let tmp_note = format!(
        "; private /tmp is {} (the agent's, mode 0700, {}TMPDIR and HOME point there; removed at exit)",
        tmp.path().display(),
        if moved { "granted by Landlock in place of /tmp; " } else { "" }
    );
    let mut host_proxy = None;
    let mut nonet = stage::nonet::ChildNoNet::default();
    if proxy_mode {
        // The proxy on a host loopback port, Landlock's only TCP destination, only TCP at
        // all, connections admitted from the agent's processes only.
        let host = stage::proxy::host_listener()?;
        if !landlock.only_tcp_to(host.port) {
            // Checked above (the bundle has a ruleset): a plan without one is a bug here.
            return Err(RunError::internal("proxy mode without a network namespace", "no Landlock ruleset to add the proxy's port rule to"));
        }
        if let Some(p) = proxy_prep {
            env = p.relocate(&env, host.port, tmp.path())?;
        }
        nonet = stage::nonet::ChildNoNet { stream_only: true };
        // Agent processes that daemonize stay the supervisor's descendants, so the proxy can
        // still tell them apart from strangers.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        host_proxy = Some(host);
    }
    let nft_layer = (!host_net && !proxy_mode).then(|| {
        Layer::new(
            "nftables",
            LayerStatus::NotEnforced,
            format!(
                "best-effort: no network namespace{}, the agent has the host's network UNFILTERED (Landlock TCP rules still apply if the bundle has them)",
                forwarded.map(|f| format!(" and {}", f.why)).unwrap_or_default()
            ),
        )
    });
    Ok(NoUserNamespaces { tmp, env, tmp_note, host_proxy, nonet, nft_layer })
}
