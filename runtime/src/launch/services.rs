//! Step 4 of a launch, services: what the supervisor runs for the agent once it exec'd.
//!
//! Input: the descriptors the child handed over (drained now: every message of the child is
//! queued once it exec'd), the tables the launch loaded, the proxy's plan. Output: the NFLOG
//! observer, the relays of host mode without root, the proxy ([`Services`]), and the
//! nftables and proxy lines of the report. Invariants: every handed-over socket is checked
//! (kind, namespace, address) before use; the sandbox's own processes are never taken for
//! the agent's.

use aegis_audit::Event;

use super::confirm::Confirmed;
use super::prepare::Prepared;
use super::spawn::Spawned;
use crate::exit::RunError;
use crate::handoff;
use crate::report::{Layer, LayerStatus};
use crate::stage::namespaces::Isolation;
use crate::stage::report::{INFO_NET_ROUTE4_ERRNO, INFO_NET_ROUTE6_ERRNO};
use crate::stage;

/// What [`start_services`] started: the NFLOG observer, the proxy and its report line.
pub(super) type Services = (Option<stage::netlog::Observer>, Option<std::sync::Arc<aegis_proxy::server::Proxy>>, Option<Layer>);

/// Starts the services from what the child handed over; takes the loaded table into
/// `table`. `events`: where the proxy records its decisions.
pub(super) fn start(
    p: &mut Prepared,
    s: &mut Spawned,
    c: &mut Confirmed,
    table: &mut Option<aegis_targets::nftables::LoadedTable>,
    events: std::sync::mpsc::Sender<Event>,
) -> Result<Services, RunError> {
    let mut handed = std::mem::take(&mut c.early);
    handed.extend(s.handoff_rx.drain()?);
    if let Some((col, _, _)) = s.premade_net.take() {
        handed.extend(col.0);
    }
    let routed = c.setup.routed.take().unwrap_or(stage::netns::Routed {
        v4: c.report.info[INFO_NET_ROUTE4_ERRNO] as i32,
        v6: c.report.info[INFO_NET_ROUTE6_ERRNO] as i32,
    });
    let procs_file = s.leaf.as_ref().and_then(|l| l.procs_files().into_iter().next());
    start_services(
        handed,
        NetFacts { proxy_mode: p.proxy_mode, forwarded: p.forwarded.as_ref(), iso: s.iso, agent_netns: c.setup.agent_netns, routed },
        (c.setup.nft_child.take(), c.setup.host_table.take()),
        (table, &mut p.nft_layer),
        p.proxy_prep.take().map(|pp| (pp, s.host_proxy.take())),
        (s.pid, procs_file, std::mem::take(&mut c.helpers), events),
    )
}

/// A table a launch loaded (none when its best-effort load failed) and its report line.
pub(super) type TableLoad = (Option<aegis_targets::nftables::LoadedTable>, Layer);

/// The network facts [`start_services`] decides from.
struct NetFacts<'a> {
    proxy_mode: bool,
    forwarded: Option<&'a stage::nftables::Forwarded>,
    iso: Isolation,
    agent_netns: u64,
    /// The default routes to `lo` (added by the child, or by the supervisor in its premade
    /// namespace).
    routed: stage::netns::Routed,
}

/// After the agent exec'd: the NFLOG observer of its namespace's table, the relays of host
/// mode without root, the proxy (on its listener in the agent's namespace, or on the
/// host's loopback without one). Takes the table the launch loaded (`own`: the agent's
/// namespace; `host`: the host's, observed through the kernel log instead) into `table` and
/// completes the nftables report line; returns the observer, the proxy and the proxy's
/// report line. Every handed-over socket is checked before use. `helpers`: the sandbox's
/// own processes in the agent's leaf (the connect broker), which the proxy never takes for
/// the agent's.
fn start_services(
    mut handed: Vec<handoff::Message>,
    net: NetFacts,
    (own, host): (Option<TableLoad>, Option<TableLoad>),
    (table, nft_layer): (&mut Option<aegis_targets::nftables::LoadedTable>, &mut Layer),
    proxy: Option<(stage::proxy::Prepared, Option<stage::proxy::HostListener>)>,
    (pid, procs_file, helpers, events): (libc::pid_t, Option<std::path::PathBuf>, Vec<aegis_proxy::exe::Helper>, std::sync::mpsc::Sender<Event>),
) -> Result<Services, RunError> {
    // With an own-namespace table loaded, outside destinations are routed to lo and NFLOG
    // is read, so a direct connect is stopped at once and recorded. Not a reason to refuse
    // the launch (the table stops everything either way), but the report says what is
    // observed. (Host mode's table logs to the kernel log instead.)
    let mut nflog = None;
    if let Some((t, mut layer)) = own {
        if t.is_some() {
            let context = match (net.proxy_mode, net.forwarded) {
                (true, _) => "outside the proxy",
                (false, Some(_)) => "outside the granted endpoints",
                (false, None) => "in network mode none",
            };
            match stage::netlog::observer_from(&mut handed, net.routed, context) {
                Ok(o) => {
                    layer.detail.push_str(&format!(
                        "; denials observed (other destinations routed to lo, logged to NFLOG group {}, {})",
                        stage::netlog::NFLOG_GROUP,
                        if net.forwarded.is_some() { "dropped" } else { "rejected" }
                    ));
                    if let Some(gap) = o.gap() {
                        layer.detail.push_str(&format!(" except IPv6 ({gap})"));
                    }
                    nflog = Some(o);
                }
                Err(e) => layer.detail.push_str(&format!("; denials NOT observed ({e}): a direct connect fails unrecorded")),
            }
        }
        *table = t;
        *nft_layer = layer;
    }
    if let Some((t, layer)) = host {
        *table = t;
        *nft_layer = layer;
    }
    // Host mode in the agent's own namespace: the supervisor relays the granted endpoints.
    if let (Some(fw), Isolation::Full { .. }) = (net.forwarded, net.iso) {
        use aegis_targets::nftables::Proto;
        let targets: Vec<_> = fw.tcp.iter().map(|a| (*a, Proto::Tcp)).chain(fw.udp.iter().map(|a| (*a, Proto::Udp))).collect();
        let f = stage::forward::Forwards::from_handoff(&mut handed, &targets, net.agent_netns)?;
        nft_layer.detail.push_str(&format!("; {}", f.summary()));
        f.start()?;
    }
    let Some((p, host_proxy)) = proxy else { return Ok((nflog, None, None)) };
    let summary = p.summary.clone();
    let forwards = p.forwards.len();
    if let Isolation::Full { .. } = net.iso {
        let l = stage::proxy::listeners_from(&mut handed, &p.forwards, net.agent_netns)?;
        let handle = stage::proxy::start(p, l, pid, procs_file, helpers, events)?;
        return Ok((nflog, Some(handle), Some(Layer::new("proxy", LayerStatus::Fully, summary))));
    }
    let Some(h) = host_proxy else { return Ok((nflog, None, None)) };
    let port = h.port;
    let handle = stage::proxy::start_host(p, h, pid, helpers, events)?;
    *nft_layer = Layer::new(
        "nftables",
        LayerStatus::NotEnforced,
        "best-effort: no network namespace; the proxy is kept the only way out by Landlock (TCP by port) and seccomp (no other Internet sockets) instead",
    );
    let layer = Layer::new(
        "proxy",
        LayerStatus::Partially,
        format!(
            "egress proxy on the host's 127.0.0.1:{port} (no network namespace): Landlock makes TCP port {port} the agent's only TCP destination, but by port, not address (port {port} of another host is reachable too); non-TCP Internet sockets refused by seccomp; connections from processes outside the agent refused; {}",
            if forwards > 0 { format!("{forwards} transparent forward(s) NOT available (their endpoints are reachable through the proxy only)") } else { "no transparent forwards".to_string() }
        ),
    );
    Ok((nflog, Some(handle), Some(layer)))
}
