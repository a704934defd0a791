//! Destination names and addresses as an agent may spell them, and the address ranges the
//! proxy never dials unless a policy CIDR grants them.
//!
//! Input: the host part of a `CONNECT` authority, an absolute-form URL or a `Host` header.
//! Output: a [`Host`]: a canonical IP address or a lower-case DNS name. Invariants: every
//! spelling of an IPv4 address that a resolver or URL parser would accept (`127.1`,
//! `0x7f000001`, `2130706433`, `0177.0.0.1`) parses to the address it means, never to a
//! name; IPv4-mapped and NAT64 IPv6 forms are classified by the IPv4 address they carry;
//! a host whose last label is numeric is an address or an error, never a DNS name (as in
//! the WHATWG URL standard), so no spelling can slip a special address past the name rules.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    /// Lower case, no trailing dot, letters/digits/`-`/`_` labels.
    Name(String),
}

impl Host {
    /// The form used in policy queries and audit records (`[v6]` without brackets).
    pub fn text(&self) -> String {
        match self {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Canonical form of an address: IPv4-mapped IPv6 becomes the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// One part of an inet_aton-style IPv4 address: decimal, octal (leading 0) or hex (0x).
fn ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // "0x" alone is 0 for inet_aton.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 20 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn looks_numeric(label: &str) -> bool {
    !label.is_empty()
        && (label.bytes().all(|b| b.is_ascii_digit())
            || label
                .strip_prefix("0x")
                .or_else(|| label.strip_prefix("0X"))
                .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())))
}

/// inet_aton semantics: 1 to 4 parts, the last fills the remaining bytes.
fn parse_ipv4_any(s: &str) -> Result<Ipv4Addr, String> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return Err(format!("`{s}`: an IPv4 address has at most 4 parts"));
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        nums.push(ipv4_part(p).ok_or_else(|| format!("`{s}`: `{p}` is not a number"))?);
    }
    let (last, init) = nums.split_last().ok_or_else(|| format!("`{s}`: empty address"))?;
    let mut value: u64 = 0;
    for n in init {
        if *n > 255 {
            return Err(format!("`{s}`: part {n} is larger than 255"));
        }
        value = (value << 8) | n;
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return Err(format!("`{s}`: last part {last} does not fit"));
    }
    value = (value << rest_bits) | last;
    u32::try_from(value).map(Ipv4Addr::from).map_err(|_| format!("`{s}`: out of range"))
}

/// Parses a host (no port). IPv6 must be bracketed (`[::1]`).
pub fn parse_host(raw: &str) -> Result<Host, String> {
    if raw.is_empty() {
        return Err("empty host".into());
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("`{raw}`: unterminated `[`"))?;
        if inner.contains('%') {
            return Err(format!("`{raw}`: IPv6 zone identifiers are not accepted"));
        }
        let v6: Ipv6Addr = inner.parse().map_err(|_| format!("`{raw}` is not an IPv6 address"))?;
        return Ok(Host::Ip(canonical_ip(IpAddr::V6(v6))));
    }
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 {
        return Err(format!("`{raw}` is not a valid host name (length)"));
    }
    let last = name.rsplit('.').next().unwrap_or("");
    if looks_numeric(last) {
        return parse_ipv4_any(name).map(|v4| Host::Ip(IpAddr::V4(v4)));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("`{raw}` is not a valid host name (label `{label}`)"));
        }
    }
    Ok(Host::Name(name.to_string()))
}

/// Parses `host:port` (CONNECT authority); `default_port` applies when no port is given.
pub fn parse_authority(s: &str, default_port: Option<u16>) -> Result<(Host, u16), String> {
    let (host, port) = if s.starts_with('[') {
        match s.rfind("]:") {
            Some(i) => (&s[..=i], Some(&s[i + 2..])),
            None => (s, None),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("`{s}`: `{p}` is not a port number")),
        },
        None => default_port.ok_or_else(|| format!("`{s}`: a port is required"))?,
    };
    Ok((parse_host(host)?, port))
}

/// Why an address is never dialled unless a policy CIDR grants it; `None` for ordinary
/// addresses (public or private networks).
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    special(ip).map(|(why, _)| why)
}

/// The special range an address is in: why it is special, and the range's prefix length
/// in the address's canonical family. A grant opens such an address only when its network
/// lies inside that range (its prefix is at least this long): `0.0.0.0/0` is not a grant
/// of the metadata service, `169.254.169.254/32` is.
pub fn special(ip: IpAddr) -> Option<(&'static str, u8)> {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address that the gateway will dial.
            // Local-use NAT64 (64:ff9b:1::/48, RFC 8215) may embed it the same way.
            if seg[0] == 0x64 && seg[1] == 0xff9b && (seg[2..6].iter().all(|s| *s == 0) || seg[2] == 1) {
                let o = v6.octets();
                return Some(match special_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15])) {
                    Some((why, p)) => (why, 96 + p),
                    None => ("NAT64 address", 96),
                });
            }
            if v6.is_loopback() {
                Some(("loopback", 128))
            } else if v6.is_unspecified() {
                Some(("unspecified address (reaches this host)", 128))
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some(("link-local", 10))
            } else if seg[0] & 0xff00 == 0xff00 {
                Some(("multicast", 8))
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some(("cloud metadata service", 128))
            } else if seg[0..6].iter().all(|s| *s == 0) {
                // IPv4-compatible (deprecated) ::a.b.c.d
                Some(("IPv4-compatible IPv6 address", 96))
            } else {
                None
            }
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<(&'static str, u8)> {
    let o = v4.octets();
    // AWS/GCP/Azure IMDS, Alibaba, ECS task metadata, Azure WireServer.
    if v4 == Ipv4Addr::new(169, 254, 169, 254)
        || v4 == Ipv4Addr::new(100, 100, 100, 200)
        || v4 == Ipv4Addr::new(169, 254, 170, 2)
        || v4 == Ipv4Addr::new(168, 63, 129, 16)
    {
        Some(("cloud metadata service", 32))
    } else if o[0] == 127 {
        Some(("loopback", 8))
    } else if o[0] == 0 {
        Some(("unspecified address (reaches this host)", 8))
    } else if o[0] == 169 && o[1] == 254 {
        Some(("link-local", 16))
    } else if o[0] >= 224 {
        Some(("multicast, broadcast or reserved", 4))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn every_spelling_of_loopback_and_metadata_is_an_address() {
        for (s, want) in [
            ("127.1", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("[::ffff:169.254.169.254]", "169.254.169.254"),
            ("[::ffff:a9fe:a9fe]", "169.254.169.254"),
            ("169.254.43518", "169.254.169.254"),
            ("0xA9FEA9FE", "169.254.169.254"),
            ("[::1]", "::1"),
            ("0", "0.0.0.0"),
        ] {
            assert_eq!(parse_host(s).unwrap(), ip(want), "{s}");
            assert!(special_range(want.parse().unwrap()).is_some(), "{want}");
        }
        assert_eq!(special_range("64:ff9b::a9fe:a9fe".parse().unwrap()), Some("cloud metadata service"));
        assert_eq!(special_range("fd00:ec2::254".parse().unwrap()), Some("cloud metadata service"));
        assert_eq!(special_range("168.63.129.16".parse().unwrap()), Some("cloud metadata service"));
        assert_eq!(special_range("64:ff9b:1::a9fe:a9fe".parse().unwrap()), Some("cloud metadata service"));
    }

    #[test]
    fn numeric_last_label_that_is_not_an_address_is_an_error_not_a_name() {
        for s in ["1.2.3.4.5", "256.1.1.1", "example.123", "0x", "1.2.3.0x1ff", "4294967296"] {
            assert!(!matches!(parse_host(s), Ok(Host::Name(_))), "{s}");
        }
        assert_eq!(parse_host("1.2.3.0x1").unwrap(), ip("1.2.3.1"));
    }

    #[test]
    fn names_are_lower_cased_and_checked() {
        assert_eq!(parse_host("Example.COM.").unwrap(), Host::Name("example.com".into()));
        assert_eq!(parse_host("1password.com").unwrap(), Host::Name("1password.com".into()));
        for bad in ["", "a..b", "-a.com", "a b.com", "*.example.com", "a%2e.com", "[::1", "[fe80::1%eth0]", "::1"] {
            assert!(parse_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(parse_authority("example.com:443", None).unwrap(), (Host::Name("example.com".into()), 443));
        assert_eq!(parse_authority("[::1]:8080", None).unwrap(), (ip("::1"), 8080));
        assert_eq!(parse_authority("example.com", Some(80)).unwrap().1, 80);
        assert!(parse_authority("example.com", None).is_err());
        for bad in ["example.com:0", "example.com:65536", "example.com:+1", "example.com:", "[::1]:x"] {
            assert!(parse_authority(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn ordinary_addresses_are_not_special() {
        for s in ["10.233.1.2", "192.168.1.1", "8.8.8.8", "2001:db8::1", "fd12::1"] {
            assert_eq!(special_range(s.parse().unwrap()), None, "{s}");
        }
    }
}
