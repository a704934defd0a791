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
//! supervisor serves with transparent forwards: [`crate::ir::Network::proxy_forwards`]); the proxy checks names.

use aegis_targets::bundle::contract::PROXY_PORT;
use aegis_targets::nftables::{self as nft, Endpoint, Host, NetMode, NetPolicy, Proto, Ruleset};

use super::{EmitError, Loss, LossReport};
use crate::ir::{Checked, Destination, NetworkMode, Protocol};

fn host_of(d: &Destination) -> Option<Host> {
    match d {
        Destination::Name(n) => Some(Host::Name(n.clone())),
        Destination::Wildcard(_) => None,
        Destination::Network(c) if c.prefix == c.max_prefix() => Some(Host::Ip(c.addr)),
        Destination::Network(c) => Some(Host::Cidr { addr: c.addr, prefix: c.prefix }),
    }
}

pub fn emit(policy: &Checked, losses: &mut LossReport) -> Result<Ruleset, EmitError> {
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
            if let Some(d) = net.overlapping_deny(e) {
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
    let (forwards, not_forwarded) = net.proxy_forwards();
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
    nft::lower(&policy.agent.name, &NetPolicy { mode, endpoints, resolvers }).map_err(|e| EmitError::wrap("nftables", e))
}
