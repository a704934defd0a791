//! Observing nftables denials in the agent's own network namespace (`none` and `proxy`
//! modes).
//!
//! Input: the agent's pid (its `/proc/<pid>/ns/net`, where the supervisor has just loaded
//! the table of [`aegis_targets::nftables`]). Output: an [`Observer`], a netlink socket bound
//! to the table's NFLOG group ([`NFLOG_GROUP`]), whose records [`Observer::drain`] turns into
//! one line per denied packet, e.g. `connect to 10.233.1.2:443/tcp outside the proxy
//! (dropped and rejected)`. Why both steps: the namespace has only loopback, so a direct
//! connect to an outside address fails with ENETUNREACH before any packet exists; default
//! routes `0.0.0.0/0 dev lo` and `::/0 dev lo` (RTM_NEWROUTE over rtnetlink) make the packet
//! exist and reach the output hook, where the table logs it to NFLOG (the kernel log is
//! silent for non-initial namespaces unless the host sets `nf_log_all_netns`) and rejects it.
//! Invariants: the routes are only added after the table is loaded (without the table they
//! would turn a fast ENETUNREACH into a hang); the socket is created from a short-lived
//! thread that entered the namespace, so the supervisor's own namespace never changes; it is
//! CLOEXEC and opened after the agent was cloned, so the agent never holds it; every parser
//! checks every length and never panics, whatever bytes the kernel (or a test) hands it.
//! The same small rtnetlink helpers also add the addresses of the proxy's transparent
//! forwards to the namespace's loopback ([`add_loopback_address`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub use aegis_targets::nftables::NFLOG_GROUP;

/// Bytes of each denied packet copied to us: enough for an IPv6 header, a few extension
/// headers and the ports.
pub const COPY_RANGE: u32 = 128;

/// Errors while setting up the observer.
#[derive(Debug, thiserror::Error)]
pub enum NetlogError {
    #[error("netlog: {what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> NetlogError {
    NetlogError::Os {
        what,
        source: std::io::Error::last_os_error(),
    }
}

fn errno(what: &'static str, e: i32) -> NetlogError {
    NetlogError::Os {
        what,
        source: std::io::Error::from_raw_os_error(e),
    }
}

/// The NFLOG listener of one agent's network namespace.
#[derive(Debug)]
pub struct Observer {
    fd: OwnedFd,
    context: &'static str,
    gap: Option<String>,
}

/// Enters the network namespace of `pid` on a helper thread, routes every outside
/// destination to `lo` and binds a netlink socket to [`NFLOG_GROUP`]. `context` ends each
/// record's destination (`"outside the proxy"`, `"in network mode none"`).
pub fn observe(pid: libc::pid_t, context: &'static str) -> Result<Observer, NetlogError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(|source| NetlogError::Os {
        what: "opening the agent's network namespace",
        source,
    })?;
    let t = std::thread::Builder::new()
        .name("aegis-netlog".into())
        .spawn(move || -> Result<(OwnedFd, Option<String>), NetlogError> {
            // SAFETY: setns on a namespace fd we opened; it affects this helper thread only,
            // which ends right after.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(os("entering the agent's network namespace"));
            }
            // The socket first: if it cannot be bound, no route is added, and a direct
            // connect keeps failing fast with ENETUNREACH.
            let sock = nflog_socket()?;
            crate::stage::namespaces::loopback_up().map_err(|(_, e)| errno("bringing lo up", e))?;
            add_default_route_to_lo(libc::AF_INET as u8)?;
            // A host without IPv6 (disabled in the namespace) has no IPv6 to reach: IPv4 is
            // still observed, and the report names the gap.
            let gap = add_default_route_to_lo(libc::AF_INET6 as u8).err().map(|e| e.to_string());
            Ok((sock, gap))
        })
        .map_err(|source| NetlogError::Os { what: "spawning the netlog thread", source })?;
    match t.join() {
        Ok(r) => r.map(|(fd, gap)| Observer { fd, context, gap }),
        Err(_) => Err(errno("netlog thread", libc::EIO)),
    }
}

impl Observer {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// What is not observed (an IPv6 route that could not be added), if anything.
    pub fn gap(&self) -> Option<&str> {
        self.gap.as_deref()
    }

    /// Reads every pending message (non-blocking) and hands one line per denied packet to
    /// `sink`. A full socket buffer (ENOBUFS: the kernel dropped records) is reported as one
    /// line too, so losses are visible.
    pub fn drain(&self, sink: &mut dyn FnMut(String)) {
        let mut buf = vec![0u8; 65536];
        loop {
            // SAFETY: receiving into our buffer on our socket.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        sink(format!("some denied packets were not reported (NFLOG socket buffer full) {}", self.context));
                        continue;
                    }
                    _ => return,
                }
            }
            if n == 0 {
                return;
            }
            for line in parse_messages(buf.get(..n as usize).unwrap_or_default(), self.context) {
                sink(line);
            }
        }
    }
}

// ── netlink plumbing ───────────────────────────────────────────────────────────────────

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_PF_BIND: u8 = 3;
const NFULNL_CFG_CMD_PF_UNBIND: u8 = 4;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLMSG_HDR: usize = 16;
const NFGENMSG: usize = 4;

/// One netlink request (sequence number 1): [`aegis_targets::netlink::message`].
fn nl_message(ty: u16, flags: u16, preamble: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    aegis_targets::netlink::message(ty, flags, 1, preamble, attrs)
}

fn socket(protocol: libc::c_int, what: &'static str) -> Result<OwnedFd, NetlogError> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(os(what));
    }
    // SAFETY: a fresh fd nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `msg` (which asks for an ACK) and returns the kernel's errno (0 = success).
fn request(sock: &OwnedFd, msg: &[u8], what: &'static str) -> Result<i32, NetlogError> {
    // SAFETY: sending our buffer on our socket (connected to the kernel by default).
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } != msg.len() as isize {
        return Err(os(what));
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(os(what));
        }
        let data = buf.get(..n as usize).unwrap_or_default();
        for (ty, body) in messages(data) {
            if ty == libc::NLMSG_ERROR as u16 {
                return Ok(read_i32(body, 0).map(|e| -e).unwrap_or(libc::EIO));
            }
        }
    }
}

fn nflog_socket() -> Result<OwnedFd, NetlogError> {
    let sock = socket(NETLINK_NETFILTER, "netfilter netlink socket")?;
    let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let pre = |family: u8, res_id: u16| {
        let r = res_id.to_be_bytes();
        [family, 0, r[0], r[1]]
    };
    // Make nfnetlink_log the namespace's logger for both families (older kernels need it;
    // newer ones accept and ignore it, so its answer is not checked).
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for cmd in [NFULNL_CFG_CMD_PF_UNBIND, NFULNL_CFG_CMD_PF_BIND] {
            request(&sock, &nl_message(ty, flags, &pre(family, 0), &[(NFULA_CFG_CMD, &[cmd])]), "NFLOG pf bind")?;
        }
    }
    let bind = nl_message(ty, flags, &pre(libc::AF_UNSPEC as u8, NFLOG_GROUP), &[(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])]);
    match request(&sock, &bind, "NFLOG group bind")? {
        0 => {}
        e => return Err(errno("binding the NFLOG group", e)),
    }
    // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    // One packet per message, sent at once: the default batches up to 100 packets for a
    // second, and an agent that exits sooner would take its denials with its namespace.
    let qthresh = 1u32.to_be_bytes();
    let cfg = nl_message(ty, flags, &pre(libc::AF_UNSPEC as u8, NFLOG_GROUP), &[(NFULA_CFG_MODE, &mode), (NFULA_CFG_QTHRESH, &qthresh)]);
    match request(&sock, &cfg, "NFLOG copy mode")? {
        0 => Ok(sock),
        e => Err(errno("setting the NFLOG copy mode", e)),
    }
}

/// `ip route add default dev lo` (and `-6`): RTM_NEWROUTE with RTA_OIF; EEXIST is fine.
fn add_default_route_to_lo(family: u8) -> Result<(), NetlogError> {
    const RTA_OIF: u16 = 4;
    // SAFETY: if_nametoindex with a NUL-terminated constant.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(os("finding lo"));
    }
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }
    let mut rtm = vec![family, 0, 0, 0, libc::RT_TABLE_MAIN, libc::RTPROT_STATIC, libc::RT_SCOPE_LINK, libc::RTN_UNICAST];
    rtm.extend_from_slice(&0u32.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let msg = nl_message(libc::RTM_NEWROUTE, flags, &rtm, &[(RTA_OIF, &index.to_ne_bytes())]);
    let sock = socket(libc::NETLINK_ROUTE, "rtnetlink socket")?;
    match request(&sock, &msg, "adding a default route to lo")? {
        0 => Ok(()),
        e if e == libc::EEXIST => Ok(()),
        e => Err(errno(if family == libc::AF_INET as u8 { "adding 0.0.0.0/0 dev lo" } else { "adding ::/0 dev lo" }, e)),
    }
}

/// `ip addr add IP/32 dev lo` (or /128): RTM_NEWADDR with IFA_LOCAL and IFA_ADDRESS, no
/// duplicate address detection; EEXIST is fine. Used for the proxy's transparent forwards.
pub fn add_loopback_address(ip: std::net::IpAddr) -> Result<(), NetlogError> {
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const IFA_F_NODAD: u8 = 0x02;
    let (family, prefix, bytes) = match ip {
        std::net::IpAddr::V4(v4) => (libc::AF_INET as u8, 32u8, v4.octets().to_vec()),
        std::net::IpAddr::V6(v6) => (libc::AF_INET6 as u8, 128u8, v6.octets().to_vec()),
    };
    // SAFETY: if_nametoindex with a NUL-terminated constant.
    let index = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if index == 0 {
        return Err(os("finding lo"));
    }
    // struct ifaddrmsg { family, prefixlen, flags, scope; u32 index }
    let mut ifa = vec![family, prefix, IFA_F_NODAD, libc::RT_SCOPE_HOST];
    ifa.extend_from_slice(&index.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    let msg = nl_message(libc::RTM_NEWADDR, flags, &ifa, &[(IFA_LOCAL, &bytes), (IFA_ADDRESS, &bytes)]);
    let sock = socket(libc::NETLINK_ROUTE, "rtnetlink socket")?;
    match request(&sock, &msg, "adding an address to lo")? {
        0 => Ok(()),
        e if e == libc::EEXIST => Ok(()),
        e => Err(errno("adding an address to lo", e)),
    }
}

// ── parsers (pure; no panics on any bytes) ─────────────────────────────────────────────

fn read_u16_ne(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes([*s.first()?, *s.get(1)?]))
}

fn read_u16_be(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn read_u32_ne(b: &[u8], at: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_ne_bytes(s))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    read_u32_ne(b, at).map(|v| v as i32)
}

/// The netlink messages in one datagram as (type, body after the 16-byte header). Stops at
/// the first malformed header.
fn messages(data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let (Some(len), Some(ty)) = (read_u32_ne(data, off), read_u16_ne(data, off + 4)) {
        let len = len as usize;
        let Some(end) = off.checked_add(len) else { break };
        if len < NLMSG_HDR || end > data.len() {
            break;
        }
        out.push((ty, data.get(off + NLMSG_HDR..end).unwrap_or_default()));
        off = off.saturating_add(aegis_targets::netlink::align4(len));
    }
    out
}

/// Attributes (type without the nested/byte-order flags, payload) of `data`.
fn attributes(data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while let (Some(len), Some(ty)) = (read_u16_ne(data, off), read_u16_ne(data, off + 2)) {
        let len = len as usize;
        let Some(end) = off.checked_add(len) else { break };
        if len < 4 || end > data.len() {
            break;
        }
        out.push((ty & 0x3fff, data.get(off + 4..end).unwrap_or_default()));
        off = off.saturating_add(aegis_targets::netlink::align4(len));
    }
    out
}

/// One line per NFULNL_MSG_PACKET in `data` (one received datagram). Other messages
/// (NLMSG_DONE of a batch, errors) are skipped.
pub fn parse_messages(data: &[u8], context: &str) -> Vec<String> {
    messages(data)
        .into_iter()
        .filter(|(ty, _)| *ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
        .map(|(_, body)| {
            let attrs = attributes(body.get(NFGENMSG..).unwrap_or_default());
            let payload = attrs.iter().find(|(t, _)| *t == NFULA_PAYLOAD).map(|(_, p)| *p);
            let prefix = attrs
                .iter()
                .find(|(t, _)| *t == NFULA_PREFIX)
                .map(|(_, p)| String::from_utf8_lossy(p.split(|b| *b == 0).next().unwrap_or_default()).trim().to_string());
            let what = payload.and_then(describe_packet).unwrap_or_else(|| "a packet (headers not readable)".into());
            match prefix {
                // The table's prefix (`aegis:<agent>:deny`) is ours; anything else is named.
                Some(p) if !p.is_empty() && !p.starts_with("aegis:") => format!("{what} {context} (dropped and rejected; log prefix {p:?})"),
                _ => format!("{what} {context} (dropped and rejected)"),
            }
        })
        .collect()
}

/// Destination of an IP packet: `connect to 10.0.0.1:443/tcp`, `send to [2001:db8::1]:53/udp`,
/// `packet to 10.0.0.1 (icmp)`. `None` when no IP header can be read.
pub fn describe_packet(p: &[u8]) -> Option<String> {
    let version = p.first()? >> 4;
    let (dst, mut proto, l4): (IpAddr, u8, Option<&[u8]>) = match version {
        4 => {
            let ihl = usize::from(p.first()? & 0x0f) * 4;
            if ihl < 20 {
                return None;
            }
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            let frag_offset = read_u16_be(p, 6)? & 0x1fff;
            // Only the first fragment carries the ports.
            (IpAddr::V4(Ipv4Addr::from(dst)), *p.get(9)?, if frag_offset == 0 { p.get(ihl..) } else { None })
        }
        6 => {
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let (proto, l4) = skip_ipv6_extensions(*p.get(6)?, p.get(40..).unwrap_or_default());
            (IpAddr::V6(Ipv6Addr::from(dst)), proto, l4)
        }
        _ => return None,
    };
    let host = match dst {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let port = l4.and_then(|l| read_u16_be(l, 2));
    if version == 6 && proto == 58 {
        proto = 1; // name ICMPv6 like ICMP below
    }
    Some(match (proto, port) {
        (6, Some(port)) => format!("connect to {host}:{port}/tcp"),
        (17, Some(port)) => format!("send to {host}:{port}/udp"),
        (6, None) => format!("packet to {host} (tcp)"),
        (17, None) => format!("packet to {host} (udp)"),
        (1, _) => format!("packet to {host} ({})", if version == 6 { "icmpv6" } else { "icmp" }),
        (n, _) => format!("packet to {host} (protocol {n})"),
    })
}

/// Walks IPv6 extension headers (hop-by-hop, routing, fragment, destination options) to the
/// upper-layer protocol; a non-first fragment has no upper-layer header to read.
fn skip_ipv6_extensions(mut next: u8, mut rest: &[u8]) -> (u8, Option<&[u8]>) {
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                let (Some(n), Some(len)) = (rest.first(), rest.get(1)) else { return (next, None) };
                let skip = (usize::from(*len) + 1) * 8;
                next = *n;
                rest = match rest.get(skip..) {
                    Some(r) => r,
                    None => return (next, None),
                };
            }
            44 => {
                let (Some(n), Some(off)) = (rest.first(), read_u16_be(rest, 2)) else { return (next, None) };
                next = *n;
                if off >> 3 != 0 {
                    return (next, None);
                }
                rest = rest.get(8..).unwrap_or_default();
            }
            _ => return (next, Some(rest)),
        }
    }
    (next, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn ipv4_tcp(dst: [u8; 4], port: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    fn ipv6(next: u8, dst: Ipv6Addr, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, rest.len() as u8, next, 64];
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(rest);
        p
    }

    /// A NFULNL_MSG_PACKET as the kernel sends it: nfgenmsg, then PACKET_HDR, PREFIX, PAYLOAD.
    fn packet_msg(prefix: &str, payload: &[u8]) -> Vec<u8> {
        let mut pre = prefix.as_bytes().to_vec();
        pre.push(0);
        nl_message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET, 0, &[2, 0, 0, 1], &[(1, &[8, 0, 3, 0]), (NFULA_PREFIX, &pre), (NFULA_PAYLOAD, payload)])
    }

    #[test]
    fn a_tcp_connect_is_named_by_destination_and_port() {
        let msg = packet_msg("aegis:inbox:deny ", &ipv4_tcp([10, 233, 1, 2], 443));
        assert_eq!(parse_messages(&msg, "outside the proxy"), ["connect to 10.233.1.2:443/tcp outside the proxy (dropped and rejected)"]);
    }

    #[test]
    fn ipv6_udp_through_extension_headers_and_icmp() {
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        // hop-by-hop (8 bytes), then UDP to port 53.
        let mut rest = vec![17, 0, 0, 0, 0, 0, 0, 0];
        rest.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        assert_eq!(describe_packet(&ipv6(0, dst, &rest)).unwrap(), "send to [2001:db8::1]:53/udp");
        assert_eq!(describe_packet(&ipv6(58, dst, &[128, 0, 0, 0])).unwrap(), "packet to [2001:db8::1] (icmpv6)");
        // A non-first fragment has no ports.
        let frag = [6, 0, 0, 0x10, 0, 0, 0, 1];
        assert_eq!(describe_packet(&ipv6(44, dst, &frag)).unwrap(), "packet to [2001:db8::1] (tcp)");
    }

    #[test]
    fn two_messages_in_one_datagram_and_a_done_are_read() {
        let mut d = packet_msg("aegis:a:deny ", &ipv4_tcp([1, 1, 1, 1], 53));
        d.extend(packet_msg("aegis:a:deny ", &ipv4_tcp([8, 8, 8, 8], 80)));
        d.extend(nl_message(libc::NLMSG_DONE as u16, 0, &[0, 0, 0, 0], &[]));
        let lines = parse_messages(&d, "in network mode none");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].starts_with("connect to 8.8.8.8:80/tcp in network mode none"), "{lines:?}");
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let full = packet_msg("aegis:a:deny ", &ipv4_tcp([10, 0, 0, 1], 22));
        for cut in 0..full.len() {
            let lines = parse_messages(&full[..cut], "x");
            // A cut message is either skipped whole (its length is past the end) or read.
            assert!(lines.len() <= 1);
        }
        // A payload cut inside the IP header is named as unreadable, not guessed.
        let short = packet_msg("aegis:a:deny ", &ipv4_tcp([10, 0, 0, 1], 22)[..12]);
        assert_eq!(parse_messages(&short, "x"), ["a packet (headers not readable) x (dropped and rejected)"]);
        // A cut after the addresses but before the ports names the host without a port.
        assert_eq!(describe_packet(&ipv4_tcp([10, 0, 0, 1], 22)[..21]).unwrap(), "packet to 10.0.0.1 (tcp)");
        let mut seed = 0x1234_5678u32;
        for _ in 0..20_000 {
            let len = (seed % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = parse_messages(&bytes, "x");
            let _ = describe_packet(&bytes);
            let _ = attributes(&bytes);
        }
        // Lengths that claim more than is there, or overflow.
        let mut bad = full.clone();
        bad[..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_messages(&bad, "x").is_empty());
    }

    #[test]
    fn a_foreign_prefix_is_named() {
        let msg = packet_msg("other ", &ipv4_tcp([10, 0, 0, 1], 22));
        assert_eq!(parse_messages(&msg, "x"), ["connect to 10.0.0.1:22/tcp x (dropped and rejected; log prefix \"other\")"]);
    }
}
