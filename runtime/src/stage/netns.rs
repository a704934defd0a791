//! Stage 5 (inside), the agent's network namespace set up from within: the sockets that
//! must live there and the routes that make denials visible.
//!
//! Input: a [`ChildNet`] built by the supervisor before clone (prebuilt netlink requests,
//! socket addresses; nothing is parsed or allocated after clone). Output, in two steps:
//! [`ChildNet::create`], before the `N` byte, adds the transparent forwards' addresses to
//! `lo`, binds the proxy's listener on `127.0.0.1:3128` and one listener per forward, opens
//! the NFLOG socket (bound to the table's log group) and a sock_diag socket, and puts each
//! into a [`Sink`] with its [`Tag`] (the handoff channel in the child: the supervisor gets
//! them, the child's copies are closed); [`ChildNet::route`], once the supervisor has loaded
//! and verified the table, adds the default routes to `lo` ([`super::netlog`] says why).
//!
//! Who runs it: the child, while it still holds the capabilities of its user namespace
//! (before the caps stage), which owns its network namespace — for root and non-root
//! supervisors alike. When the supervisor made the namespace itself before clone (root's
//! premade namespace, owned by the initial user namespace, where the child has no
//! capability), the supervisor runs the same two steps on its own thread while it is inside
//! that namespace for the clone, collecting the sockets directly.
//!
//! Invariants: a listener, an address or the handoff that fails stops the launch (the proxy
//! would not be the agent's way out); an NFLOG socket that cannot be set up is reported
//! (a message without a descriptor, `arg` = errno) and no route is added (a direct connect
//! then keeps failing fast with ENETUNREACH, unrecorded); no descriptor stays in the child.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::stage::report::Fail;
use crate::handoff::{Sink, Tag};
use crate::stage::Stage;
use crate::stage::netlog::{self, Request};

pub const WHAT_RTNL: u32 = 1;
pub const WHAT_ADDRESS: u32 = 2;
pub const WHAT_LISTEN_SOCKET: u32 = 3;
pub const WHAT_BIND: u32 = 4;
pub const WHAT_LISTEN: u32 = 5;
pub const WHAT_HANDOFF: u32 = 6;
pub const WHAT_NETFILTER: u32 = 7;

/// A socket to create and bind: its tag, index, kind (a TCP listener, or a UDP socket) and
/// address.
pub struct Listen {
    pub tag: Tag,
    pub index: u32,
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
    family: libc::c_int,
    ty: libc::c_int,
}

impl Listen {
    /// A TCP listener.
    pub fn new(tag: Tag, index: u32, a: SocketAddr) -> Listen {
        Listen::of_type(tag, index, a, libc::SOCK_STREAM)
    }

    /// A bound UDP socket.
    pub fn udp(tag: Tag, index: u32, a: SocketAddr) -> Listen {
        Listen::of_type(tag, index, a, libc::SOCK_DGRAM)
    }

    fn of_type(tag: Tag, index: u32, a: SocketAddr, ty: libc::c_int) -> Listen {
        // SAFETY: an all-zero sockaddr_storage is valid; we fill one variant below.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let (len, family) = match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
                unsafe { std::ptr::write((&mut addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>(), sin) };
                (std::mem::size_of::<libc::sockaddr_in>(), libc::AF_INET)
            }
            SocketAddr::V6(v6) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: v6.port().to_be(),
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                    sin6_scope_id: 0,
                };
                // SAFETY: as above.
                unsafe { std::ptr::write((&mut addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>(), sin6) };
                (std::mem::size_of::<libc::sockaddr_in6>(), libc::AF_INET6)
            }
        };
        Listen {
            tag,
            index,
            addr,
            len: len as libc::socklen_t,
            family,
            ty,
        }
    }

    /// socket, SO_REUSEADDR (as std's TcpListener), bind, and listen for TCP. Raw syscalls
    /// only.
    fn open(&self) -> Result<RawFd, (u32, i32)> {
        // SAFETY: socket(2) with integer arguments.
        let fd = unsafe { libc::socket(self.family, self.ty | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err((WHAT_LISTEN_SOCKET, crate::errno::last()));
        }
        let one: libc::c_int = 1;
        // SAFETY: setsockopt/bind/listen on our socket with a live sockaddr of `len` bytes.
        let r = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>() as libc::socklen_t);
            if libc::bind(fd, (&self.addr as *const libc::sockaddr_storage).cast(), self.len) != 0 {
                Err(WHAT_BIND)
            } else if self.ty == libc::SOCK_STREAM && libc::listen(fd, 128) != 0 {
                Err(WHAT_LISTEN)
            } else {
                Ok(fd)
            }
        };
        r.map_err(|what| {
            let e = crate::errno::last();
            // SAFETY: closing the socket we opened.
            unsafe { libc::close(fd) };
            (what, e)
        })
    }
}

/// What to set up in the agent's network namespace (see the module doc).
#[derive(Default)]
pub struct ChildNet {
    /// RTM_NEWADDR requests for the forwards' addresses on `lo`.
    pub addresses: Vec<Vec<u8>>,
    /// Listeners, in the order they are handed over.
    pub listeners: Vec<Listen>,
    /// NFLOG requests: observe denials (none/proxy mode with a table).
    pub nflog: Vec<Request>,
    /// Default routes to `lo` (IPv4, IPv6), added by [`ChildNet::route`].
    pub routes: [Vec<u8>; 2],
    /// Hand over a sock_diag socket (the proxy names the connecting process with it).
    pub diag: bool,
    /// Hand over a NETLINK_NETFILTER socket first (the supervisor verifies the table that
    /// `nft` loads into this namespace through it: it may not be able to enter it).
    pub netfilter: bool,
    /// A forward that cannot be made (its address, its socket) is handed over as a failure
    /// (`arg` = errno) instead of stopping the launch: host mode, where a target that is not
    /// forwarded is only unreachable. In proxy mode every forward must exist.
    pub optional: bool,
}

/// What the agent's network namespace gets (see [`ChildNet::plan`]).
#[derive(Default)]
pub struct NetSpec<'a> {
    /// The proxy's listener on `127.0.0.1:3128` (proxy mode).
    pub proxy: bool,
    /// Forwarded TCP and UDP targets (proxy mode's transparent forwards: TCP only).
    pub tcp: &'a [SocketAddr],
    pub udp: &'a [SocketAddr],
    /// Forwards may fail one by one (host mode).
    pub optional: bool,
    /// A table will be loaded: observe denials (NFLOG, routes).
    pub observe: bool,
    /// The supervisor verifies that table through a socket of ours.
    pub verify: bool,
}

/// What [`ChildNet::route`] achieved: the errno of the IPv4 and the IPv6 route (0 = added).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routed {
    pub v4: i32,
    pub v6: i32,
}

fn fail(what: u32, errno: i32) -> Fail {
    Fail {
        stage: Stage::Nftables,
        what,
        errno,
    }
}

impl ChildNet {
    /// The plan for the agent's own network namespace (see [`NetSpec`]). Forward `i` of
    /// `tcp` is handed over as [`Tag::Forward`] `i`; of `udp`, as [`Tag::UdpForward`]
    /// `tcp.len() + i` (one numbering for the launch's whole forward list).
    pub fn plan(spec: NetSpec) -> ChildNet {
        let mut net = ChildNet {
            netfilter: spec.verify,
            optional: spec.optional,
            ..ChildNet::default()
        };
        let mut seen = std::collections::BTreeSet::new();
        for a in spec.tcp.iter().chain(spec.udp) {
            if !a.ip().is_loopback() && seen.insert(a.ip()) {
                net.addresses.push(netlog::loopback_address(a.ip()));
            }
        }
        if spec.proxy {
            let proxy_addr = SocketAddr::from(([127, 0, 0, 1], crate::stage::proxy::PORT));
            net.listeners.push(Listen::new(Tag::ProxyListener, 0, proxy_addr));
            net.diag = true;
        }
        for (i, a) in spec.tcp.iter().enumerate() {
            net.listeners.push(Listen::new(Tag::Forward, i as u32, *a));
        }
        for (i, a) in spec.udp.iter().enumerate() {
            net.listeners.push(Listen::udp(Tag::UdpForward, (spec.tcp.len() + i) as u32, *a));
        }
        if spec.observe {
            net.nflog = netlog::nflog_requests();
            net.routes = [
                netlog::default_route_to_lo(libc::AF_INET as u8),
                netlog::default_route_to_lo(libc::AF_INET6 as u8),
            ];
        }
        net
    }

    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.listeners.is_empty() && self.nflog.is_empty() && !self.diag && !self.netfilter
    }

    /// Step one (see the module doc). Returns an rtnetlink socket of the namespace for
    /// [`ChildNet::route`] (or -1 when there are no routes to add); the caller closes it.
    pub fn create(&self, sink: &mut dyn Sink) -> Result<RawFd, Fail> {
        // First: the supervisor waits for it to verify the table while we go on.
        if self.netfilter {
            let fd = netlog::netfilter_socket().map_err(|e| fail(WHAT_NETFILTER, e))?;
            sink.put(Tag::Netfilter, 0, 0, Some(fd)).map_err(|e| fail(WHAT_HANDOFF, e))?;
        }
        let need_rtnl = !self.addresses.is_empty() || !self.nflog.is_empty();
        let rtnl = if need_rtnl {
            netlog::raw_socket(libc::NETLINK_ROUTE).map_err(|e| fail(WHAT_RTNL, e))?
        } else {
            -1
        };
        let close_rtnl = || {
            if rtnl >= 0 {
                // SAFETY: closing the socket we opened.
                unsafe { libc::close(rtnl) };
            }
        };
        for a in &self.addresses {
            match netlog::request_raw(rtnl, a) {
                Ok(0) | Ok(libc::EEXIST) => {}
                // Optional forwards: the sockets bound to this address fail below, one by
                // one, and are reported.
                Ok(_) | Err(_) if self.optional => {}
                Ok(e) | Err(e) => {
                    close_rtnl();
                    return Err(fail(WHAT_ADDRESS, e));
                }
            }
        }
        for l in &self.listeners {
            let put = match l.open() {
                Ok(fd) => sink.put(l.tag, l.index, 0, Some(fd)),
                Err((_, e)) if self.optional && l.tag != Tag::ProxyListener => sink.put(l.tag, l.index, e as u32, None),
                Err((what, e)) => {
                    close_rtnl();
                    return Err(fail(what, e));
                }
            };
            put.map_err(|e| {
                close_rtnl();
                fail(WHAT_HANDOFF, e)
            })?;
        }
        if self.diag {
            let r = match netlog::raw_socket(libc::NETLINK_SOCK_DIAG) {
                Ok(fd) => sink.put(Tag::SockDiag, 0, 0, Some(fd)),
                Err(e) => sink.put(Tag::SockDiag, 0, e as u32, None),
            };
            r.map_err(|e| {
                close_rtnl();
                fail(WHAT_HANDOFF, e)
            })?;
        }
        let mut observed = false;
        if !self.nflog.is_empty() {
            let r = match self.nflog_socket() {
                Ok(fd) => {
                    observed = true;
                    sink.put(Tag::Nflog, 0, 0, Some(fd))
                }
                Err((step, e)) => sink.put(Tag::Nflog, step, e as u32, None),
            };
            r.map_err(|e| {
                close_rtnl();
                fail(WHAT_HANDOFF, e)
            })?;
        }
        if !observed {
            // Nobody listens: no route, so a direct connect keeps failing fast.
            close_rtnl();
            return Ok(-1);
        }
        Ok(rtnl)
    }

    fn nflog_socket(&self) -> Result<RawFd, (u32, i32)> {
        let sock = netlog::netfilter_socket().map_err(|e| (netlog::NFLOG_STEP_SOCKET, e))?;
        for (i, r) in self.nflog.iter().enumerate() {
            let step = if i + 1 == self.nflog.len() { netlog::NFLOG_STEP_MODE } else { netlog::NFLOG_STEP_BIND };
            match netlog::request_raw(sock, &r.msg) {
                Ok(0) => {}
                Ok(_) if !r.checked => {}
                Ok(e) | Err(e) => {
                    // SAFETY: closing the socket we opened.
                    unsafe { libc::close(sock) };
                    return Err((step, e));
                }
            }
        }
        Ok(sock)
    }

    /// Step two: the default routes to `lo` through `rtnl` (from [`ChildNet::create`]),
    /// which it closes. Only called once the table is loaded and verified.
    pub fn route(&self, rtnl: RawFd) -> Routed {
        if rtnl < 0 {
            return Routed::default();
        }
        let add = |msg: &[u8]| match netlog::request_raw(rtnl, msg) {
            Ok(0) | Ok(libc::EEXIST) => 0,
            Ok(e) | Err(e) => e,
        };
        let [v4, v6] = &self.routes;
        // IPv6 only when IPv4 worked: a half-routed namespace is reported as not observed.
        let v4 = add(v4);
        let v6 = if v4 == 0 { add(v6) } else { v4 };
        // SAFETY: closing the socket handed to us.
        unsafe { libc::close(rtnl) };
        Routed { v4, v6 }
    }
}

/// Human text for a failure in this stage.
pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_RTNL => "rtnetlink socket in the agent's network namespace",
        WHAT_ADDRESS => "adding a transparent forward's address to lo",
        WHAT_LISTEN_SOCKET => "socket for a proxy listener",
        WHAT_BIND => "binding a proxy listener in the agent's network namespace",
        WHAT_LISTEN => "listen on a proxy listener",
        WHAT_HANDOFF => "handing a socket to the supervisor",
        WHAT_NETFILTER => "netfilter netlink socket in the agent's network namespace",
        _ => "network namespace setup",
    }
}
