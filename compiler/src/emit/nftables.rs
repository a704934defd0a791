//! IR `[network]` → `nftables.json` (via [`aegis_targets::nftables::lower`]).
//!
//! `host` mode: every allowed endpoint becomes an accept rule in the agent's chain (names
//! are resolved at launch into named sets), DNS only to the declared resolvers, the rest
//! logged and dropped. `deny` endpoints need no rule of their own, since nothing is
//! accepted unless an allow rule matches: an allow that a deny overlaps at all (same
//! protocol, a shared port, the same name or intersecting networks) is left out, the
//! stricter reading, and the loss report says so.
//! `none`/`proxy` mode: the ruleset for the agent's own namespace (loopback, and in proxy
//! mode the proxy port only); the proxy checks names.

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
            let overlapping = net.deny.iter().find(|d| {
                d.protocol == e.protocol
                    && d.ports.iter().any(|dp| e.ports.iter().any(|ep| dp.first <= ep.last && ep.first <= dp.last))
                    && match (&d.destination, &e.destination) {
                        (Destination::Network(a), Destination::Network(b)) => a.contains(b.addr) || b.contains(a.addr),
                        (a, b) => a == b,
                    }
            });
            if let Some(d) = overlapping {
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
    let resolvers = if net.mode == NetworkMode::Host { net.dns.iter().map(|r| r.address).collect() } else { vec![] };
    nft::lower(&policy.agent.name, &NetPolicy { mode, endpoints, resolvers }).map_err(|e| e.to_string())
}
