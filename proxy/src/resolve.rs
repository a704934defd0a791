//! Name resolution for the proxy, done by the supervisor (the agent has no DNS).
//!
//! Input: a [`Host`] and port; pinned answers (`aegis-exec --resolve NAME=IP`, like curl's
//! `--resolve`). Output: the addresses to vet and dial. Invariants: an IP host resolves to
//! itself; a pinned name never reaches the system resolver; the caller dials only the
//! addresses returned here after [`crate::gate::Gate::vet`], so a name cannot be re-resolved
//! to something else between the check and the connect (no DNS rebinding window).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, ToSocketAddrs};

use crate::addr::{Host, canonical_ip};

#[derive(Clone, Debug, Default)]
pub struct Resolver {
    pins: BTreeMap<String, Vec<IpAddr>>,
}

impl Resolver {
    /// Parses `NAME=IP[,IP...]` pins.
    pub fn with_pins(pins: &[String]) -> Result<Resolver, String> {
        let mut map: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for p in pins {
            let (name, ips) = p.split_once('=').ok_or_else(|| format!("--resolve {p}: expected NAME=IP"))?;
            let Ok(Host::Name(name)) = crate::addr::parse_host(name) else {
                return Err(format!("--resolve {p}: `{name}` is not a host name"));
            };
            for ip in ips.split(',') {
                let ip: IpAddr = ip
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| format!("--resolve {p}: `{ip}` is not an IP address"))?;
                map.entry(name.clone()).or_default().push(canonical_ip(ip));
            }
        }
        Ok(Resolver { pins: map })
    }

    pub fn lookup(&self, host: &Host, port: u16) -> Result<Vec<IpAddr>, String> {
        match host {
            Host::Ip(ip) => Ok(vec![*ip]),
            Host::Name(n) => {
                if let Some(p) = self.pins.get(n) {
                    return Ok(p.clone());
                }
                let addrs = (n.as_str(), port).to_socket_addrs().map_err(|e| format!("cannot resolve {n}: {e}"))?;
                let mut out: Vec<IpAddr> = Vec::new();
                for a in addrs {
                    let ip = canonical_ip(a.ip());
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Addresses configured on this host's interfaces (the supervisor's network namespace).
pub fn own_addresses() -> HashSet<IpAddr> {
    let mut set = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below; we only read it.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return set;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: AF_INET means sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                set.insert(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
            } else if family == libc::AF_INET6 {
                // SAFETY: AF_INET6 means sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                set.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: freeing the list getifaddrs gave us.
    unsafe { libc::freeifaddrs(head) };
    set
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn pins_win_and_ips_resolve_to_themselves() {
        let r = Resolver::with_pins(&["Gmail.GoogleAPIs.com=10.1.2.3,::ffff:10.1.2.4".into()]).unwrap();
        let h = crate::addr::parse_host("gmail.googleapis.com").unwrap();
        assert_eq!(r.lookup(&h, 443).unwrap(), vec!["10.1.2.3".parse::<IpAddr>().unwrap(), "10.1.2.4".parse().unwrap()]);
        let ip = Host::Ip("10.9.9.9".parse().unwrap());
        assert_eq!(r.lookup(&ip, 1).unwrap(), vec!["10.9.9.9".parse::<IpAddr>().unwrap()]);
        assert!(Resolver::with_pins(&["x".into()]).is_err());
        assert!(Resolver::with_pins(&["a.com=notip".into()]).is_err());
    }

    #[test]
    fn own_addresses_include_loopback() {
        assert!(own_addresses().contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
    }
}
