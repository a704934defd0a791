//! What the nftables lowering takes: a [`NetPolicy`] (the network mode and the granted
//! endpoints and resolvers), as the compiler builds it from the policy's IR.
//!
//! Input: nothing (plain data; serde for the tests and tools that write policies by hand).
//! Output: the types [`super::lower()`] reads. Invariants: none checked here: the lowering
//! validates names, ports and prefixes and refuses what a mode cannot express.
//! [`NetMode`] is the one network-mode enum of this target (`Ruleset::mode` reads it back
//! from an artifact's shape).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// How the agent reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum NetMode {
    /// Own network namespace with loopback only.
    None,
    /// Host network, egress filtered by the agent's cgroup.
    Host,
    /// Own network namespace; loopback to the egress proxy port only.
    Proxy { port: u16 },
}

impl NetMode {
    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Host => "host",
            NetMode::Proxy { .. } => "proxy",
        }
    }
}

/// Where an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Host {
    /// A DNS name, resolved at launch into named sets.
    Name(String),
    Ip(IpAddr),
    Cidr { addr: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub(super) fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// One granted destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: Host,
    pub ports: Vec<PortRange>,
    pub protocols: Vec<Proto>,
}

/// Input of the lowering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    pub mode: NetMode,
    pub endpoints: Vec<Endpoint>,
    /// DNS servers the agent may query (udp/tcp 53); nothing else gets DNS.
    pub resolvers: Vec<IpAddr>,
}
