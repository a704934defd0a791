//! Network endpoints.
//!
//! An endpoint is a destination (a host name, a `*.`-wildcard name, or an IP network in
//! CIDR form; a single IP is a /32 or /128 network), a set of ports, and a protocol.
//! Host names are lower-case, without a trailing dot; `*.example.com` matches every name
//! that ends in `.example.com` (never `example.com` itself, never `evilexample.com`).
//! Invariants: CIDRs are canonical (no host bits set), port ranges are non-empty and within
//! 1..=65535, protocols are TCP or UDP.

use std::fmt;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub const ANY: PortRange = PortRange { first: 1, last: 65535 };
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    pub fn is_any(&self) -> bool {
        self.prefix == 0
    }

    pub fn max_prefix(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Parses `a.b.c.d`, `a.b.c.d/n`, `v6`, `v6/n`. Errors say what is wrong and, for host
    /// bits set, what the canonical network is.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                let n: u8 = p.parse().map_err(|_| format!("prefix length `{p}` is not a number"))?;
                if n > max {
                    return Err(format!("prefix length /{n} is longer than /{max}"));
                }
                n
            }
        };
        let c = Cidr { addr, prefix };
        let canon = c.network();
        if canon.addr != addr {
            return Err(format!("host bits are set; the network is {canon}"));
        }
        Ok(c)
    }

    fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.prefix)) };
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr { addr, prefix: self.prefix }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix == self.max_prefix() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// An exact host name.
    Name(String),
    /// `*.suffix`: any name strictly below `suffix`.
    Wildcard(String),
    Network(Cidr),
}

impl Destination {
    pub fn is_name(&self) -> bool {
        !matches!(self, Destination::Network(_))
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Name(n) => f.write_str(n),
            Destination::Wildcard(s) => write!(f, "*.{s}"),
            Destination::Network(c) => write!(f, "{c}"),
        }
    }
}

impl serde::Serialize for Destination {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let looks_ip = s.contains(':') || s.contains('/') || s.parse::<IpAddr>().is_ok();
        if looks_ip {
            Cidr::parse(&s).map(Destination::Network).map_err(serde::de::Error::custom)
        } else {
            parse_host_name(&s).map_err(serde::de::Error::custom)
        }
    }
}

/// Validates and normalises a DNS host name, optionally with a leading `*.`.
pub fn parse_host_name(s: &str) -> Result<Destination, String> {
    let lower = s.trim_end_matches('.').to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest.to_string()),
        None => (false, lower.clone()),
    };
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if name.len() > 253 {
        return Err("host names are at most 253 characters".into());
    }
    if name.contains('*') {
        return Err("`*` may only be the whole first label, as in `*.example.com`".into());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row)".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("label `{label}` has characters other than a-z, 0-9, `-`"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    if wild && !name.contains('.') {
        return Err("a wildcard needs at least two labels after `*.` (`*.com` would match a whole TLD)".into());
    }
    if name.split('.').next_back().is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit())) {
        return Err("looks like an IP address but is not a valid one".into());
    }
    Ok(if wild { Destination::Wildcard(name) } else { Destination::Name(name) })
}

/// Whether the query host name `name` (lower-case) matches destination `d`.
pub fn name_matches(d: &Destination, name: &str) -> bool {
    match d {
        Destination::Name(n) => n == name,
        Destination::Wildcard(suffix) => {
            name.len() > suffix.len() + 1
                && name.ends_with(suffix.as_str())
                && name.as_bytes().get(name.len() - suffix.len() - 1) == Some(&b'.')
        }
        Destination::Network(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_only_strict_subdomains() {
        let d = parse_host_name("*.example.com").unwrap();
        assert!(name_matches(&d, "api.example.com"));
        assert!(name_matches(&d, "a.b.example.com"));
        assert!(!name_matches(&d, "example.com"));
        assert!(!name_matches(&d, "evilexample.com"));
        assert!(!name_matches(&d, "example.com.evil.com"));
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("11.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("300.0.0.0").is_err());
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn host_names_are_normalised_and_checked() {
        assert_eq!(parse_host_name("API.GitHub.com.").unwrap(), Destination::Name("api.github.com".into()));
        assert!(parse_host_name("a..b").is_err());
        assert!(parse_host_name("-a.com").is_err());
        assert!(parse_host_name("a*.com").is_err());
        assert!(parse_host_name("*.com").is_err());
        assert!(parse_host_name("1.2.3.999").is_err());
    }
}
