//! Which allowed endpoints the supervisor forwards in proxy mode, and which a deny overlaps.
//!
//! Input: a policy's [`Network`]. Output: the endpoints that get a transparent TCP forward and
//! the others with the reason they do not. Invariant: the one definition both the compiler
//! (the namespace's nftables table, the loss report) and `aegis-exec` (the forwards it
//! starts) use, so the table and the forwards cannot disagree.

use aegis_targets::bundle::contract::PROXY_PORT;

use super::{Destination, Endpoint, Network, NetworkMode, Protocol};

/// At most this many ports per endpoint get a transparent forward (one listener each).
pub const MAX_FORWARD_PORTS: u32 = 64;

impl Network {
    /// A `deny` endpoint that overlaps `e` at all (same protocol, a shared port, the same name
    /// or intersecting networks).
    pub fn overlapping_deny(&self, e: &Endpoint) -> Option<&Endpoint> {
        self.deny.iter().find(|d| {
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
    pub fn proxy_forwards(&self) -> (Vec<&Endpoint>, Vec<(&Endpoint, String)>) {
            let mut yes = Vec::new();
        let mut no = Vec::new();
        if self.mode != NetworkMode::Proxy {
            return (yes, no);
        }
        for e in &self.allow {
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
                self.overlapping_deny(e).map(|d| format!("overlaps deny {d}: not forwarded (the proxy still checks CONNECTs)"))
            };
            match why {
                None => yes.push(e),
                Some(w) => no.push((e, w)),
            }
        }
        (yes, no)
    }
}
