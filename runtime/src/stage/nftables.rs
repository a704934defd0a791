//! Stage 5, nftables.
//!
//! Input: the bundle's `nftables.json` and network mode. Output: the agent's table loaded
//! and verified present — in `host` mode into the host's network namespace with the
//! dispatch rule matching the agent's cgroup2 leaf (host names resolved now, at launch,
//! into the named sets), in `none`/`proxy` mode into the agent's own network namespace
//! (made before the agent and loaded while it is prepared and cloned; or, if that cannot
//! start, loaded from outside with `setns` while the child waits). Invariants: `host` mode without a ruleset,
//! or on a host without a cgroup2 tree, is refused when nftables is required (the agent
//! would have unfiltered host network); the table is deleted on every exit path
//! ([`LoadedTable`]'s `Drop`); in `none` mode it dies with the namespace. The table name
//! (`aegis_<agent>_<supervisor pid>_<nonce>`) and the log prefix are the launch's
//! [`Instance`]'s, so concurrent runs of one agent do not collide or read each other's
//! denials.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use aegis_targets::bundle::NetworkMode;
use aegis_targets::cgroup::Leaf;
use aegis_targets::nftables::{self as nft, LoadedTable, NetMode, Proto, Ruleset};

use crate::exit::RunError;
use crate::report::{Layer, LayerStatus};
use crate::stage::Instance;
use crate::stage::verify::Verified;

pub const FILE: &str = aegis_targets::bundle::contract::NFTABLES;

pub struct Prepared {
    pub ruleset: Ruleset,
    pub table: String,
    /// The prefix of this launch's log lines (host mode: found in the kernel log).
    pub log_prefix: String,
    /// The nft JSON to load (sets filled).
    pub json: Vec<u8>,
    pub resolved: BTreeMap<String, Vec<IpAddr>>,
    /// Host mode in the agent's own namespace ([`super::forward`]); `json` is then the
    /// own-namespace variant.
    pub forwarded: Option<Forwarded>,
}

/// What host mode forwards from the agent's own namespace, and why it is forwarded.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub tcp: Vec<SocketAddr>,
    pub udp: Vec<SocketAddr>,
    pub why: &'static str,
}

/// How `host` mode is enforced for a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMode {
    /// In the host's network namespace, matching the agent's sockets by cgroup2 path: root
    /// with a cgroup2 tree.
    Cgroup,
    /// In the agent's own network namespace, the supervisor forwarding the granted
    /// endpoints ([`super::forward`]): anyone else. `why` says which.
    Forwarded { why: &'static str },
}

impl HostMode {
    /// Root on a host with a cgroup2 tree (pure v2 or hybrid) filters the host's namespace;
    /// everyone else gets the forwarded mode.
    pub fn decide(root: bool, layout: Option<&aegis_targets::cgroup::Layout>) -> HostMode {
        use aegis_targets::cgroup::Layout;
        match (root, layout) {
            (true, Some(Layout::V2 { .. } | Layout::Hybrid { .. })) => HostMode::Cgroup,
            (true, _) => HostMode::Forwarded {
                why: "no cgroup2 tree to match the agent's sockets by in the host's network namespace",
            },
            (false, _) => HostMode::Forwarded {
                why: "the launcher is not root, so the host's own network namespace cannot be filtered",
            },
        }
    }
}

/// Network mode of the launch (from the manifest; the ruleset's shape must agree).
pub fn mode(v: &Verified) -> NetworkMode {
    v.manifest.network_mode
}

fn sanitize(agent: &str) -> String {
    agent
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(32)
        .collect()
}

/// Parses the ruleset and resolves host names (before any namespace exists). `host` is how
/// a `host`-mode ruleset will be enforced (ignored in other modes).
pub fn prepare(v: &Verified, instance: &Instance, host: HostMode) -> Result<Option<Prepared>, RunError> {
    let net = mode(v);
    let Some(bytes) = v.file(FILE) else {
        if net == NetworkMode::Host && v.required("nftables") {
            return Err(RunError::Refused(
                "network mode `host` needs nftables.json (egress filter); the bundle has none".into(),
            ));
        }
        return Ok(None);
    };
    let ruleset = Ruleset::from_json(bytes).map_err(|e| RunError::Refused(e.to_string()))?;
    let shape = ruleset.mode();
    let agrees = matches!(
        (net, shape),
        (NetworkMode::Host, NetMode::Host) | (NetworkMode::None, NetMode::None) | (NetworkMode::Proxy, NetMode::Proxy { .. })
    );
    if !agrees {
        return Err(RunError::Refused(format!(
            "nftables.json is a `{}` ruleset but the manifest says network mode `{:?}`",
            shape.name(),
            net
        )));
    }
    let mut resolved = BTreeMap::new();
    for hs in ruleset.host_sets() {
        // Resolution failure leaves the set empty: the name is then simply unreachable.
        let addrs: Vec<IpAddr> = (hs.name.as_str(), 0u16)
            .to_socket_addrs()
            .map(|it| it.map(|sa| sa.ip()).collect())
            .unwrap_or_default();
        resolved.insert(hs.name.clone(), addrs);
    }
    let table = nft::instance_table(&sanitize(&v.manifest.agent), instance.pid, instance.nonce);
    let log_prefix = nft::instance_log_prefix(&v.manifest.agent, &instance.id());
    let (json, forwarded) = if let (NetworkMode::Host, HostMode::Forwarded { why }) = (net, host) {
        let targets = ruleset.forward_targets(&resolved).map_err(|why| RunError::Unavailable {
            layer: "nftables",
            why: format!(
                "network mode `host` without root forwards each granted address and port from the agent's own network namespace, and {why}; fix: grant single addresses and a few ports, use network mode `proxy` (names and wide networks through the proxy), or run aegis-exec as root"
            ),
        })?;
        let pick = |p: Proto| targets.iter().filter(|(_, q)| *q == p).map(|(a, _)| *a).collect::<Vec<_>>();
        (
            ruleset.fill_own_netns(&table, &log_prefix, &resolved),
            Some(Forwarded { tcp: pick(Proto::Tcp), udp: pick(Proto::Udp), why }),
        )
    } else {
        (ruleset.fill(&table, &log_prefix, &resolved), None)
    };
    Ok(Some(Prepared {
        ruleset,
        table,
        log_prefix,
        json,
        resolved,
        forwarded,
    }))
}

fn resolved_text(p: &Prepared) -> String {
    if p.resolved.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = p
        .resolved
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}->{}",
                if v.is_empty() { "(unresolved)".to_string() } else { v.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(",") }
            )
        })
        .collect();
    format!("; resolved {}", parts.join(" "))
}

/// Host mode, started before the agent's cgroup leaf exists: `nft` loads the table into
/// the host's namespace in the background (the table does not depend on the leaf; only the
/// dispatch rule does), overlapping with the leaf's creation and the agent's setup. `None`
/// (with the report line) when it cannot start and the layer is best-effort.
pub fn start_host(v: &Verified, p: &Prepared) -> Result<Result<nft::HostLoad, Layer>, RunError> {
    match nft::start_host_load(&p.json, &p.table) {
        Ok(l) => Ok(Ok(l)),
        Err(e) if v.required("nftables") => Err(RunError::Unavailable { layer: "nftables", why: e.to_string() }),
        Err(e) => Ok(Err(Layer::new("nftables", LayerStatus::NotEnforced, format!("best-effort: {e}")))),
    }
}

/// Host mode, before the agent may run: waits for the load of [`start_host`] (running
/// `during`, the cgroup migration, meanwhile), adds the rule that sends the sockets of the
/// agent's cgroup2 leaf to its chain (over netlink), and verifies the table.
pub fn finish_host<R>(v: &Verified, p: &Prepared, load: nft::HostLoad, leaf: Option<&Leaf>, during: impl FnOnce() -> R) -> (Result<(Option<LoadedTable>, Layer), RunError>, R) {
    let r = during();
    let fail = |why: String| -> Result<(Option<LoadedTable>, Layer), RunError> {
        if v.required("nftables") {
            Err(RunError::Unavailable { layer: "nftables", why })
        } else {
            Ok((None, Layer::new("nftables", LayerStatus::NotEnforced, format!("best-effort: {why}"))))
        }
    };
    let Some((dir, level)) = leaf.and_then(|l| Some((l.unified_dir()?.to_path_buf(), l.unified()?.1))) else {
        return (fail("host mode matches the agent's sockets by cgroup v2 path, and no cgroup2 leaf exists (v1-only host or no cgroup)".into()), r);
    };
    let res = nft::Dispatch::of_dir(&dir, level).and_then(|d| load.finish(d));
    let out = match res {
        Ok(t) => Ok((
            Some(t),
            Layer::new(
                "nftables",
                LayerStatus::Fully,
                format!(
                    "host mode: table inet {} matches socket cgroupv2 level {level} \"{}\"{}",
                    p.table,
                    nft::nft_cgroup_path(&dir).unwrap_or_else(|_| dir.display().to_string()),
                    resolved_text(p)
                ),
            ),
        )),
        Err(e) => fail(e.to_string()),
    };
    (out, r)
}

/// The report line and error policy of a table loaded into the agent's own namespace.
fn own_netns_result(v: &Verified, p: &Prepared, res: Result<LoadedTable, nft::NftError>) -> Result<(Option<LoadedTable>, Layer), RunError> {
    match res {
        Ok(t) => Ok((
            Some(t),
            Layer::new(
                "nftables",
                LayerStatus::Fully,
                match &p.forwarded {
                    Some(f) => format!(
                        "host mode in the agent's own network namespace ({}): table inet {} verified over netlink, only the granted endpoints pass{}",
                        f.why,
                        p.table,
                        resolved_text(p)
                    ),
                    None => format!("table inet {} in the agent's network namespace (loopback only), verified over netlink", p.table),
                },
            ),
        )),
        Err(e) if v.required("nftables") => Err(RunError::Unavailable {
            layer: "nftables",
            why: e.to_string(),
        }),
        Err(e) => Ok((None, Layer::new("nftables", LayerStatus::NotEnforced, format!("best-effort: {e}")))),
    }
}

/// none/proxy mode, the fast path: the agent's network namespace is created before the
/// agent, and `nft` loads the table into it while the supervisor prepares and clones (the
/// agent is born in it). `None` when that cannot start; the launch then loads the table
/// after clone ([`load_in_child_netns`]).
pub fn start_premade(p: &Prepared) -> Option<nft::PendingNetns> {
    nft::load_in_new_netns(&p.json, &p.table).ok()
}

/// Waits for the table of [`start_premade`], running `during` (the cgroup migration) first.
pub fn finish_premade<R>(v: &Verified, p: &Prepared, pending: nft::PendingNetns, during: impl FnOnce() -> R) -> (Result<(Option<LoadedTable>, Layer), RunError>, R) {
    let r = during();
    (own_netns_result(v, p, pending.finish()), r)
}

/// none/proxy mode: loads the table into the child's network namespace by an `nft` that
/// joins the child's user and network namespaces (so it works for an unprivileged
/// supervisor too), running `during` (the cgroup migration) while `nft` works; then
/// `verify_sock` (called only after a successful load) must yield a NETLINK_NETFILTER
/// socket of that namespace, handed over by the child, to check the table through.
pub fn load_in_child_netns<R>(
    v: &Verified,
    p: &Prepared,
    pid: libc::pid_t,
    during: impl FnOnce() -> R,
    verify_sock: impl FnOnce() -> Result<std::os::fd::OwnedFd, RunError>,
) -> (Result<(Option<LoadedTable>, Layer), RunError>, R) {
    let ns = match nft::AgentNs::of_pid(pid) {
        Ok(ns) => ns,
        Err(e) => return (own_netns_result(v, p, Err(e)), during()),
    };
    let (res, r) = nft::load_into(&p.json, &ns, during);
    let res = match res {
        Ok(()) => match verify_sock() {
            Ok(sock) => nft::verify_on(&sock, &p.table),
            Err(e) => return (Err(e), r),
        },
        Err(e) => Err(e),
    };
    (own_netns_result(v, p, res), r)
}
