//! Observing nftables denials in the agent's own network namespace (`none` and `proxy`
//! modes).
//!
//! Input: a NETLINK_NETFILTER socket made in the agent's namespace and bound to the table's
//! NFLOG group ([`NFLOG_GROUP`]) by the requests of [`nflog_requests`] (sent by
//! [`super::netns`], from inside the namespace). Output: an [`Observer`], whose records
//! [`Observer::drain`] turns into one line per denied packet, e.g. `connect to
//! 10.233.1.2:443/tcp outside the proxy (dropped and rejected)`. Why routes too: the
//! namespace has only loopback, so a direct connect to an outside address fails with
//! ENETUNREACH before any packet exists; default routes `0.0.0.0/0 dev lo` and `::/0 dev lo`
//! ([`default_route_to_lo`]) make the packet exist and reach the output hook, where the table
//! logs it to NFLOG (the kernel log is silent for non-initial namespaces unless the host sets
//! `nf_log_all_netns`) and rejects it. Invariants: the routes are only added after the table
//! is loaded (without the table they would turn a fast ENETUNREACH into a hang); requests are
//! built here, before clone, and sent with [`request_raw`] (raw syscalls, a stack buffer), so
//! the child can send them; every parser checks every length and never panics, whatever bytes
//! the kernel (or a test) hands it. The same builders make the addresses of the proxy's
//! transparent forwards on the namespace's loopback ([`loopback_address`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub use aegis_targets::nftables::NFLOG_GROUP;

use crate::handoff::{self, Message, Tag};
use crate::stage::netns::Routed;

/// Bytes of each denied packet copied to us: enough for an IPv6 header, a few extension
/// headers and the ports.
pub const COPY_RANGE: u32 = 128;

/// The NFLOG listener of one agent's network namespace.
#[derive(Debug)]
pub struct Observer {
    fd: OwnedFd,
    context: &'static str,
    gap: Option<String>,
}

/// The observer out of the messages the agent's namespace handed over (tag
/// [`Tag::Nflog`]) and the routes that were added (see [`super::netns`]). `Err` says why
/// denials are not observed.
pub fn observer_from(msgs: &mut Vec<Message>, routed: Routed, context: &'static str) -> Result<Observer, String> {
    let Some(m) = handoff::take(msgs, Tag::Nflog, 0).or_else(|| msgs.iter().position(|m| m.tag == Tag::Nflog).map(|i| msgs.remove(i))) else {
        return Err("no NFLOG socket was made".into());
    };
    let errno = |e: i32| std::io::Error::from_raw_os_error(e);
    let Some(fd) = m.fd else {
        let step = match m.index {
            NFLOG_STEP_SOCKET => "netfilter netlink socket",
            NFLOG_STEP_BIND => "binding the NFLOG group",
            _ => "setting the NFLOG copy mode",
        };
        return Err(format!("{step}: {}", errno(m.arg as i32)));
    };
    handoff::check_socket(&Message { fd: Some(fd.try_clone().map_err(|e| e.to_string())?), ..m }, libc::AF_NETLINK, libc::SOCK_RAW).map_err(|e| e.to_string())?;
    if routed.v4 != 0 {
        return Err(format!("adding 0.0.0.0/0 dev lo: {}", errno(routed.v4)));
    }
    let gap = (routed.v6 != 0).then(|| format!("adding ::/0 dev lo: {}", errno(routed.v6)));
    Ok(Observer::new(fd, context, gap))
}

impl Observer {
    /// The observer of the NFLOG socket `fd` (made in the agent's namespace by
    /// [`super::netns`]); `context` ends each record's destination (`"outside the proxy"`,
    /// `"in network mode none"`); `gap` names what is not observed (an IPv6 route that could
    /// not be added).
    pub fn new(fd: OwnedFd, context: &'static str, gap: Option<String>) -> Observer {
        Observer { fd, context, gap }
    }

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

// ── netlink requests (built by the supervisor before clone, sent raw by the child) ───

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
/// `lo` is interface 1 in every network namespace (the kernel's `LOOPBACK_IFINDEX`), so the
/// requests can be built before the namespace exists.
pub const LO_INDEX: u32 = 1;

/// One netlink request (sequence number 1): [`aegis_targets::netlink::message`].
fn nl_message(ty: u16, flags: u16, preamble: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    aegis_targets::netlink::message(ty, flags, 1, preamble, attrs)
}

/// One prebuilt request and whether its answer decides anything.
#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Vec<u8>,
    /// `false`: the kernel's answer is read and ignored.
    pub checked: bool,
}

/// Steps of the NFLOG setup, as reported in a failed [`crate::handoff::Tag::Nflog`] message.
pub const NFLOG_STEP_SOCKET: u32 = 0;
pub const NFLOG_STEP_BIND: u32 = 1;
pub const NFLOG_STEP_MODE: u32 = 2;

/// The requests that make a NETLINK_NETFILTER socket the listener of [`NFLOG_GROUP`], in
/// order: make nfnetlink_log the namespace's logger for both families (older kernels need
/// it; newer ones accept and ignore it, so those answers are not checked), bind the group,
/// set the copy mode.
pub fn nflog_requests() -> Vec<Request> {
    let ty = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let pre = |family: u8, res_id: u16| {
        let r = res_id.to_be_bytes();
        [family, 0, r[0], r[1]]
    };
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for cmd in [NFULNL_CFG_CMD_PF_UNBIND, NFULNL_CFG_CMD_PF_BIND] {
            out.push(Request {
                msg: nl_message(ty, flags, &pre(family, 0), &[(NFULA_CFG_CMD, &[cmd])]),
                checked: false,
            });
        }
    }
    out.push(Request {
        msg: nl_message(ty, flags, &pre(libc::AF_UNSPEC as u8, NFLOG_GROUP), &[(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND])]),
        checked: true,
    });
    // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    // One packet per message, sent at once: the default batches up to 100 packets for a
    // second, and an agent that exits sooner would take its denials with its namespace.
    let qthresh = 1u32.to_be_bytes();
    out.push(Request {
        msg: nl_message(ty, flags, &pre(libc::AF_UNSPEC as u8, NFLOG_GROUP), &[(NFULA_CFG_MODE, &mode), (NFULA_CFG_QTHRESH, &qthresh)]),
        checked: true,
    });
    out
}

/// `ip route add default dev lo` for `family` (AF_INET or AF_INET6): RTM_NEWROUTE with
/// RTA_OIF. EEXIST is fine.
pub fn default_route_to_lo(family: u8) -> Vec<u8> {
    const RTA_OIF: u16 = 4;
    // struct rtmsg { family, dst_len, src_len, tos, table, protocol, scope, type; u32 flags }
    let mut rtm = vec![family, 0, 0, 0, libc::RT_TABLE_MAIN, libc::RTPROT_STATIC, libc::RT_SCOPE_LINK, libc::RTN_UNICAST];
    rtm.extend_from_slice(&0u32.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    nl_message(libc::RTM_NEWROUTE, flags, &rtm, &[(RTA_OIF, &LO_INDEX.to_ne_bytes())])
}

/// `ip addr add IP/32 dev lo` (or /128): RTM_NEWADDR with IFA_LOCAL and IFA_ADDRESS, no
/// duplicate address detection; EEXIST is fine. Used for the proxy's transparent forwards.
pub fn loopback_address(ip: IpAddr) -> Vec<u8> {
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const IFA_F_NODAD: u8 = 0x02;
    let (family, prefix, bytes) = match ip {
        IpAddr::V4(v4) => (libc::AF_INET as u8, 32u8, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, 128u8, v6.octets().to_vec()),
    };
    // struct ifaddrmsg { family, prefixlen, flags, scope; u32 index }
    let mut ifa = vec![family, prefix, IFA_F_NODAD, libc::RT_SCOPE_HOST];
    ifa.extend_from_slice(&LO_INDEX.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
    nl_message(libc::RTM_NEWADDR, flags, &ifa, &[(IFA_LOCAL, &bytes), (IFA_ADDRESS, &bytes)])
}

/// A raw netlink socket of `protocol` in the calling thread's network namespace. `Err` is
/// the errno. Raw syscalls only (callable in the child).
pub fn raw_socket(protocol: libc::c_int) -> Result<RawFd, i32> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 { Err(last_errno()) } else { Ok(fd) }
}

/// A NETLINK_NETFILTER socket (raw; see [`raw_socket`]).
pub fn netfilter_socket() -> Result<RawFd, i32> {
    raw_socket(NETLINK_NETFILTER)
}

fn last_errno() -> i32 {
    crate::errno::last()
}

/// Sends `msg` (which asks for an ACK) on `sock` and returns the kernel's answer (0 =
/// success, else its errno); `Err` is a local errno (send or receive failed). Raw syscalls
/// and a stack buffer only: callable in the child between clone and exec.
pub fn request_raw(sock: RawFd, msg: &[u8]) -> Result<i32, i32> {
    // SAFETY: sending our buffer on our socket (addressed to the kernel by default).
    if unsafe { libc::send(sock, msg.as_ptr().cast(), msg.len(), 0) } != msg.len() as isize {
        return Err(last_errno());
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: receiving into our stack buffer.
        let n = unsafe { libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = last_errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        let data = buf.get(..n as usize).unwrap_or_default();
        let mut off = 0usize;
        while let (Some(len), Some(ty)) = (read_u32_ne(data, off), read_u16_ne(data, off + 4)) {
            let len = len as usize;
            if len < NLMSG_HDR {
                break;
            }
            if ty == libc::NLMSG_ERROR as u16 {
                return Ok(read_i32(data, off + NLMSG_HDR).map(|e| e.wrapping_neg()).unwrap_or(libc::EIO));
            }
            off = off.saturating_add(aegis_targets::netlink::align4(len));
        }
        if n == 0 {
            return Err(libc::EIO);
        }
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
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code: a failed unwrap is a failed test, with its message")]
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
