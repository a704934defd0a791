//! Host mode in the agent's own network namespace: the supervisor's relays.
//!
//! Why: `host` mode filters the host's network namespace by the agent's cgroup, which only
//! root can do (and only with a cgroup2 tree). Otherwise the agent gets its own network
//! namespace, the host-mode table is loaded there (every packet of the namespace goes
//! through the agent chain), and the supervisor forwards exactly the address:port pairs the
//! chain accepts (`Ruleset::forward_targets`: names resolved at launch, DNS resolvers
//! included): each address is put on the namespace's `lo` with a listener (TCP) or a socket
//! (UDP) bound to it ([`super::netns`] makes them inside and hands them over), and the
//! supervisor relays what arrives to the real address from the host's namespace. Nothing
//! else has a way out; a grant that is not a small set of single addresses is refused at
//! launch ([`super::nftables::prepare`]), never widened.
//!
//! Input: the handed-over sockets and their targets. Output: relay threads that run until
//! the supervisor exits. Invariants: every socket is checked (kind, namespace, address)
//! before use; the relays are bounded (at most [`MAX_TCP`] connections and [`MAX_FLOWS`] UDP
//! flows at once; more are refused, not queued), so the agent cannot make the supervisor
//! spend without limit; a target that could not be forwarded (an IPv6 address in a
//! namespace without IPv6) is reported, and is simply unreachable: stricter, never wider.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aegis_targets::nftables::Proto;

use crate::exit::RunError;
use crate::handoff::{self, Message, Tag};

/// Concurrent forwarded TCP connections.
pub const MAX_TCP: usize = 128;
/// Concurrent UDP flows (agent source address × target).
pub const MAX_FLOWS: usize = 64;
/// A UDP flow with no traffic for this long is closed.
const FLOW_IDLE: Duration = Duration::from_secs(60);
/// How long the supervisor waits to reach a target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets to relay, out of the handoff.
#[derive(Debug, Default)]
pub struct Forwards {
    tcp: Vec<(TcpListener, SocketAddr)>,
    udp: Vec<(UdpSocket, SocketAddr)>,
    /// Targets that could not be forwarded: (target, protocol, why).
    pub missing: Vec<(SocketAddr, Proto, String)>,
}

impl Forwards {
    /// Takes the forward sockets out of `msgs`: tag FORWARD (TCP) or UDP_FORWARD, `index`
    /// into `targets`. Each is checked: the right kind, in the agent's network namespace
    /// (`agent_netns`), bound to its target.
    pub fn from_handoff(msgs: &mut Vec<Message>, targets: &[(SocketAddr, Proto)], agent_netns: u64) -> Result<Forwards, RunError> {
        let mut f = Forwards::default();
        for (i, (target, proto)) in targets.iter().enumerate() {
            let tag = match proto {
                Proto::Tcp => Tag::Forward,
                Proto::Udp => Tag::UdpForward,
            };
            let Some(m) = handoff::take(msgs, tag, i as u32) else {
                return Err(RunError::internal("host-mode forwards", format!("no socket for {target}/{proto:?}")));
            };
            if m.fd.is_none() {
                f.missing.push((*target, *proto, std::io::Error::from_raw_os_error(m.arg as i32).to_string()));
                continue;
            }
            let family = if target.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
            let ty = if *proto == Proto::Tcp { libc::SOCK_STREAM } else { libc::SOCK_DGRAM };
            handoff::check_socket(&m, family, ty)?;
            let fd = m.fd.ok_or_else(|| RunError::internal("host-mode forwards", "socket vanished"))?;
            if handoff::socket_netns_ino(&fd)? != agent_netns {
                return Err(RunError::NotVerified {
                    layer: "nftables",
                    why: format!("the forward socket for {target} is not in the agent's network namespace"),
                });
            }
            let bound_to = |a: std::io::Result<SocketAddr>| -> Result<(), RunError> {
                match a {
                    Ok(a) if a == *target => Ok(()),
                    other => Err(RunError::NotVerified {
                        layer: "nftables",
                        why: format!("the forward socket for {target} is bound to {other:?}"),
                    }),
                }
            };
            match proto {
                Proto::Tcp => {
                    let l = TcpListener::from(fd);
                    bound_to(l.local_addr())?;
                    f.tcp.push((l, *target));
                }
                Proto::Udp => {
                    let u = UdpSocket::from(fd);
                    bound_to(u.local_addr())?;
                    f.udp.push((u, *target));
                }
            }
        }
        Ok(f)
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        let list = |v: Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(" ") };
        let tcp = list(self.tcp.iter().map(|(_, a)| a.to_string()).collect());
        let udp = list(self.udp.iter().map(|(_, a)| a.to_string()).collect());
        let mut s = format!("forwarded by the supervisor: tcp {tcp}; udp {udp}");
        if !self.missing.is_empty() {
            let m: Vec<String> = self.missing.iter().map(|(a, p, why)| format!("{a}/{p:?} ({why})")).collect();
            s.push_str(&format!("; NOT forwarded (unreachable): {}", m.join(", ")));
        }
        s
    }

    /// Starts the relays (threads that live as long as the supervisor).
    pub fn start(self) -> Result<(), RunError> {
        let active = Arc::new(AtomicUsize::new(0));
        if !self.tcp.is_empty() {
            let tcp = self.tcp;
            std::thread::Builder::new()
                .name("aegis-fwd-tcp".into())
                .spawn(move || accept_loop(tcp, active))
                .map_err(|e| RunError::internal("starting the TCP forwards", e))?;
        }
        if !self.udp.is_empty() {
            let udp = self.udp;
            std::thread::Builder::new()
                .name("aegis-fwd-udp".into())
                .spawn(move || udp_loop(udp))
                .map_err(|e| RunError::internal("starting the UDP forwards", e))?;
        }
        Ok(())
    }
}

fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> bool {
    // SAFETY: poll on pollfd structs we own.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    r > 0 || (r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR))
}

/// Accepts on every listener; each connection is relayed to its listener's target in its
/// own thread, at most [`MAX_TCP`] at once.
fn accept_loop(listeners: Vec<(TcpListener, SocketAddr)>, active: Arc<AtomicUsize>) {
    let mut fds: Vec<libc::pollfd> = listeners.iter().map(|(l, _)| libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    loop {
        if !poll(&mut fds, -1) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        for (pfd, (l, target)) in fds.iter_mut().zip(&listeners) {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            let Ok((client, _)) = l.accept() else { continue };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_TCP {
                active.fetch_sub(1, Ordering::SeqCst);
                drop(client);
                continue;
            }
            let (target, mine) = (*target, active.clone());
            let spawned = std::thread::Builder::new().name("aegis-fwd-conn".into()).spawn(move || {
                if let Ok(up) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
                    let _ = up.set_nodelay(true);
                    let _ = client.set_nodelay(true);
                    aegis_proxy::relay::tcp(client, up, || ());
                }
                mine.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// One UDP flow: the agent's source address on one forward socket, and the host-side
/// socket connected to that forward's target.
struct Flow {
    upstream: UdpSocket,
    last: Instant,
}

/// Relays datagrams: agent → (forward socket) → host socket connected to the target, and
/// the target's answers back to the agent's source address.
fn udp_loop(sockets: Vec<(UdpSocket, SocketAddr)>) {
    let mut flows: HashMap<(usize, SocketAddr), Flow> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let keys: Vec<(usize, SocketAddr)> = flows.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = sockets.iter().map(|(s, _)| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        fds.extend(keys.iter().filter_map(|k| flows.get(k)).map(|f| libc::pollfd { fd: f.upstream.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        if !poll(&mut fds, 5_000) {
            flows.retain(|_, f| f.last.elapsed() < FLOW_IDLE);
            continue;
        }
        for (i, (sock, target)) in sockets.iter().enumerate() {
            if fds.get(i).is_none_or(|p| p.revents == 0) {
                continue;
            }
            let Ok((n, src)) = sock.recv_from(&mut buf) else { continue };
            let key = (i, src);
            if !flows.contains_key(&key) {
                flows.retain(|_, f| f.last.elapsed() < FLOW_IDLE);
                if flows.len() >= MAX_FLOWS {
                    continue;
                }
                let bind: SocketAddr = if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                let Ok(up) = UdpSocket::bind(bind) else { continue };
                if up.connect(target).is_err() {
                    continue;
                }
                flows.insert(key, Flow { upstream: up, last: Instant::now() });
            }
            if let Some(f) = flows.get_mut(&key) {
                f.last = Instant::now();
                let _ = f.upstream.send(buf.get(..n).unwrap_or_default());
            }
        }
        for (k, pfd) in keys.iter().zip(fds.iter().skip(sockets.len())) {
            if pfd.revents == 0 {
                continue;
            }
            let Some(f) = flows.get_mut(k) else { continue };
            if let Ok(n) = f.upstream.recv(&mut buf) {
                f.last = Instant::now();
                if let Some((sock, _)) = sockets.get(k.0) {
                    let _ = sock.send_to(buf.get(..n).unwrap_or_default(), k.1);
                }
            }
        }
    }
}
