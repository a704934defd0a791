//! IR `[network]` → `nftables.json` (via [`aegis_targets::nftables::lower`]).
//!
//! `host` mode: every allowed endpoint becomes an accept rule in the agent's chain (names
//! are resolved at launch into named sets), DNS only to the declared resolvers, the rest
//! logged and dropped. `deny` endpoints need no rule of their own, since nothing is
//! accepted unless an allow rule matches: an allow that a deny overlaps at all (same
//! protocol, a shared port, the same name or intersecting networks) is left out, the
//! stricter reading, and the loss report says so.
//! `none`/`proxy` mode: the ruleset for the agent's own namespace (loopback, and in proxy
//! mode the proxy port plus the addresses of single-address TCP endpoints, which the
//! supervisor serves with transparent forwards: [`proxy_forwards`]); the proxy checks names.

use aegis_targets::nftables::{self as nft, Endpoint, Host, NetMode, NetPolicy, Proto, Ruleset};

use super::{Loss, LossReport};
use crate::ir::{Destination, NetworkMode, Policy, Protocol};

/// Port the AEGIS egress proxy listens on, on loopback inside the agent's namespace.
pub const PROXY_PORT: u16 = 3128;

fn host_of(d: &Destination) -> Option<Host> {
    match d {
        Destination::Name(n) => Some(Host::Name(n.clone())),
        Destination::Wildcard(_) => None,
        Destination::Network(c) if c.prefix == c.max_prefix() => Some(Host::Ip(c.addr)),
        Destination::Network(c) => Some(Host::Cidr { addr: c.addr, prefix: c.prefix }),
    }
}

/// At most this many ports per endpoint get a transparent forward (one listener each).
pub const MAX_FORWARD_PORTS: u32 = 64;

/// A `deny` endpoint that overlaps `e` at all (same protocol, a shared port, the same name
/// or intersecting networks).
fn overlapping_deny<'a>(net: &'a crate::ir::Network, e: &crate::ir::Endpoint) -> Option<&'a crate::ir::Endpoint> {
    net.deny.iter().find(|d| {
        d.protocol == e.protocol
            && d.ports.iter().any(|dp| e.ports.iter().any(|ep| dp.first <= ep.last && ep.first <= dp.last))
            && match (&d.destination, &e.destination) {
                (Destination::Network(a), Destination::Network(b)) => a.contains(b.addr) || b.contains(a.addr),
                (a, b) => a == b,
            }
    })
}

/// Proxy mode: the allowed endpoints the supervisor serves with a transparent TCP forward
/// (the address is added to the namespace's loopback, connections are relayed to the real
/// address), and the other IP endpoints with the reason they are not forwarded (they stay
/// reachable through `CONNECT`, when a deny does not overlap them). Single source of truth
/// for the nftables artifact and for `aegis-exec`.
pub fn proxy_forwards(net: &crate::ir::Network) -> (Vec<&crate::ir::Endpoint>, Vec<(&crate::ir::Endpoint, String)>) {
    let mut yes = Vec::new();
    let mut no = Vec::new();
    if net.mode != NetworkMode::Proxy {
        return (yes, no);
    }
    for e in &net.allow {
        let Destination::Network(c) = &e.destination else { continue };
        let ports: u32 = e.ports.iter().map(|p| u32::from(p.last) - u32::from(p.first) + 1).sum();
        let why = if c.prefix != c.max_prefix() {
            Some("a network, not one address: only CONNECT through the proxy reaches it".to_string())
        } else if e.protocol != Protocol::Tcp {
            Some("UDP is not forwarded: the agent cannot reach it".to_string())
        } else if ports > MAX_FORWARD_PORTS {
            Some(format!("more than {MAX_FORWARD_PORTS} ports: only CONNECT through the proxy reaches it"))
        } else if c.addr.is_loopback() && e.ports.iter().any(|p| p.first <= PROXY_PORT && PROXY_PORT <= p.last) {
            Some(format!("port {PROXY_PORT} on loopback is the proxy itself"))
        } else {
            overlapping_deny(net, e).map(|d| format!("overlaps deny {d}: not forwarded (the proxy still checks CONNECTs)"))
        };
        match why {
            None => yes.push(e),
            Some(w) => no.push((e, w)),
        }
    }
    (yes, no)
}

pub fn lower(policy: &Policy, losses: &mut LossReport) -> Result<Ruleset, String> {
    let net = &policy.network;
    let mode = match net.mode {
        NetworkMode::None => NetMode::None,
        NetworkMode::Proxy => NetMode::Proxy { port: PROXY_PORT },
        NetworkMode::Host => NetMode::Host,
    };
    let mut endpoints = Vec::new();
    if net.mode == NetworkMode::Host {
        for e in &net.allow {
            // A deny that overlaps this endpoint at all: kernel rules cannot subtract names
            // or partial ranges exactly, so the stricter reading drops the allow.
            if let Some(d) = overlapping_deny(net, e) {
                losses.push(Loss {
                    layer: "nftables",
                    rule: format!("allow {e} with deny {d}"),
                    what: "nftables cannot subtract a denied endpoint from an overlapping allowed one".into(),
                    enforced: format!("stricter: {e} is not allowed at all"),
                });
                continue;
            }
            let Some(host) = host_of(&e.destination) else { continue };
            endpoints.push(Endpoint {
                host,
                ports: e.ports.iter().map(|p| nft::PortRange { lo: p.first, hi: p.last }).collect(),
                protocols: vec![match e.protocol {
                    Protocol::Tcp => Proto::Tcp,
                    Protocol::Udp => Proto::Udp,
                }],
            });
        }
    }
    let (forwards, not_forwarded) = proxy_forwards(net);
    for e in forwards {
        let Some(host) = host_of(&e.destination) else { continue };
        endpoints.push(Endpoint {
            host,
            ports: e.ports.iter().map(|p| nft::PortRange { lo: p.first, hi: p.last }).collect(),
            protocols: vec![Proto::Tcp],
        });
    }
    for (e, why) in not_forwarded {
        losses.push(Loss {
            layer: "proxy",
            rule: format!("allow {e}"),
            what: "no transparent TCP forward for this endpoint".into(),
            enforced: why,
        });
    }
    let resolvers = if net.mode == NetworkMode::Host { net.dns.iter().map(|r| r.address).collect() } else { vec![] };
    nft::lower(&policy.agent.name, &NetPolicy { mode, endpoints, resolvers }).map_err(|e| e.to_string())
}
