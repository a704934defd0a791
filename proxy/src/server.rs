//! The proxy server: a pool of threads waiting in `accept`; the one the kernel wakes handles
//! that connection to its end.
//!
//! Input: a listening socket (created by the supervisor inside the agent's network
//! namespace, never inherited by the agent) and a [`Proxy`] configuration. Output: relayed
//! traffic for what the policy allows, `403` with an `X-Aegis-Reason` header for what it
//! denies, and one audit event per decision on the configured channel.
//!
//! Per connection, the first request decides the shape:
//! - `CONNECT host:port`: the destination is checked; an `[api.*]` host is **inspected**
//!   (TLS terminated with the sandbox CA, every request on the connection checked against
//!   the API's HTTP rules, the credential injected into allowed requests, forwarded over
//!   verified TLS); any other allowed host is **tunnelled** after its ClientHello's SNI
//!   was checked against the CONNECT host (port 22 may carry SSH instead of TLS).
//! - `GET http://host/...` (absolute form): checked the same way, forwarded over plain TCP,
//!   never with a credential.
//! - `POST /.aegis/v1/check`: the decision endpoint ([`crate::decision`]).
//! - On a transparent-forward listener ([`spawn_forward`]): a direct TCP connection to a
//!   single-address endpoint, checked like a CONNECT to it and relayed.
//!
//! Invariants: names are resolved by the supervisor and only vetted addresses are dialled
//! ([`Gate::vet`]); what is forwarded is exactly what was evaluated (the canonical path);
//! a request the checker cannot frame unambiguously is refused, never forwarded.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use aegis_audit::{Event, Verdict as AuditVerdict};
use aegis_policy::eval::{Decision, Verdict};
use aegis_policy::ir::api::{CanonicalRequest, canonical_request};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConnection, StreamOwned};

use crate::addr::{Host, parse_authority};
use crate::exe::AgentProcs;
use crate::fronting::Target;
use crate::records::{Budget, Records, Usage, thread_cpu_ns};
use crate::gate::{ApiGate, Gate, rule_text};
use crate::http1::{self, Framing, Header, Request};
use crate::resolve::Resolver;
use crate::sni::{self, Hello};
use crate::tls::SandboxCa;

const MAX_HEAD: usize = 64 * 1024;
const MAX_CONNECTIONS: usize = 256;
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_DECISION_BODY: u64 = 64 * 1024;

/// Sees every decision the proxy makes, before aggregation (learn mode's observer).
pub type Observer = Box<dyn Fn(&Event) + Send + Sync>;

/// Everything a proxy needs; shared by all connection threads.
pub struct Proxy {
    pub gate: Gate,
    pub ca: SandboxCa,
    pub upstream_tls: Arc<ClientConfig>,
    pub resolver: Resolver,
    /// This host's own addresses (refused unless a CIDR grants them).
    pub own_addresses: HashSet<IpAddr>,
    pub agent: AgentProcs,
    /// Which tunnels could reach a declared API's server.
    pub fronting: crate::fronting::Fronting,
    records: Arc<Records>,
    usage: Arc<Usage>,
    budget: Budget,
    active: AtomicUsize,
    /// Sees every decision before the records aggregate them (learn mode keeps each path).
    observer: Option<Observer>,
}

impl Proxy {
    pub fn new(gate: Gate, ca: SandboxCa, upstream_tls: Arc<ClientConfig>, resolver: Resolver, agent: AgentProcs, events: Sender<Event>) -> Proxy {
        let usage = Arc::new(Usage::default());
        let budget = Budget::new(gate.policy().resources.cpu_millicores.map(|l| l.value));
        Proxy {
            records: Records::start(events, usage.clone()),
            usage,
            budget,
            gate,
            ca,
            upstream_tls,
            resolver,
            own_addresses: crate::resolve::own_addresses(),
            agent,
            fronting: crate::fronting::Fronting::default(),
            active: AtomicUsize::new(0),
            observer: None,
        }
    }

    /// Calls `f` with every decision the proxy records, before aggregation.
    pub fn set_observer(&mut self, f: Observer) {
        self.observer = Some(f);
    }
}

impl Proxy {
    /// Connections being served right now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Sends the records still being aggregated and a usage note: call it after the last
    /// connection ended, before the audit log is closed.
    pub fn flush_records(&self) {
        self.records.flush();
    }

    /// The proxy's work for the agent so far.
    pub fn usage(&self) -> &Usage {
        &self.usage
    }
}

/// Idle acceptors kept waiting in `accept` (so a new connection never waits for a thread
/// to be created), and the most kept when load drops.
const MIN_IDLE: usize = 4;
const MAX_IDLE: usize = 16;

/// A pool of threads blocked in `accept` on one listener: the one the kernel wakes serves
/// the connection itself; a spawner thread tops the pool up in the background when fewer
/// than [`MIN_IDLE`] are left, up to [`MAX_CONNECTIONS`] busy ones (further connections
/// wait in the listen backlog); surplus idle threads retire.
struct Pool {
    idle: AtomicUsize,
    wake: std::sync::Condvar,
    lock: std::sync::Mutex<()>,
}

type Handler = fn(&Proxy, TcpStream);

fn start_pool(name: &'static str, listener: TcpListener, proxy: Arc<Proxy>, handler: Handler) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = Arc::new(listener);
    let pool = Arc::new(Pool {
        idle: AtomicUsize::new(0),
        wake: std::sync::Condvar::new(),
        lock: std::sync::Mutex::new(()),
    });
    std::thread::Builder::new().name(name.into()).spawn(move || {
        loop {
            while pool.idle.load(Ordering::Acquire) < MIN_IDLE && proxy.active.load(Ordering::Acquire) < MAX_CONNECTIONS {
                pool.idle.fetch_add(1, Ordering::AcqRel);
                let (l, p, pl) = (listener.clone(), proxy.clone(), pool.clone());
                if std::thread::Builder::new().name("aegis-proxy-conn".into()).spawn(move || acceptor(&l, &p, &pl, handler)).is_err() {
                    pool.idle.fetch_sub(1, Ordering::AcqRel);
                    break;
                }
            }
            let Ok(guard) = pool.lock.lock() else { return };
            // Re-checked every second as well, in case a wake-up was missed.
            let _ = pool.wake.wait_timeout(guard, Duration::from_secs(1));
        }
    })
}

fn acceptor(listener: &TcpListener, proxy: &Proxy, pool: &Pool, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            // Out of descriptors or memory: back off instead of spinning on the error.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        proxy.active.fetch_add(1, Ordering::AcqRel);
        if pool.idle.fetch_sub(1, Ordering::AcqRel) <= MIN_IDLE {
            pool.wake.notify_one();
        }
        handler(proxy, stream);
        proxy.active.fetch_sub(1, Ordering::AcqRel);
        if pool.idle.load(Ordering::Acquire) >= MAX_IDLE {
            return;
        }
        pool.idle.fetch_add(1, Ordering::AcqRel);
    }
}

/// Starts serving the proxy port. Runs until the process exits.
pub fn spawn(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<std::thread::JoinHandle<()>> {
    start_pool("aegis-proxy", listener, proxy, |p, s| Conn::new(p, s).run())
}

/// Serves one connection the caller accepted itself (and admitted: `aegis-exec` without a
/// network namespace checks that the peer is one of the agent's processes first). Returns
/// when the connection ends.
pub fn serve(proxy: &Proxy, stream: TcpStream) {
    proxy.active.fetch_add(1, Ordering::AcqRel);
    Conn::new(proxy, stream).run();
    proxy.active.fetch_sub(1, Ordering::AcqRel);
}

/// Serves one transparent TCP forward: connections to `target` inside the agent's
/// namespace (the supervisor put `target`'s address on its loopback) are checked like a
/// CONNECT to `target` and relayed to the real address. Audit mode `tcp`.
pub fn spawn_forward(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<std::thread::JoinHandle<()>> {
    // The target is the address the agent connected to: the accepted socket's own address.
    start_pool("aegis-proxy-fwd", listener, proxy, |p, s| {
        if let Ok(t) = s.local_addr() {
            Conn::new(p, s).forward_tcp(t);
        }
    })
}

/// One audit record in the making.
struct Record {
    mode: &'static str,
    host: String,
    port: u16,
    method: Option<String>,
    path: Option<String>,
    verdict: Verdict,
    rule: Option<String>,
    reason: String,
    up: u64,
    down: u64,
}

impl Record {
    fn new(mode: &'static str, host: &str, port: u16) -> Record {
        Record {
            mode,
            host: host.to_string(),
            port,
            method: None,
            path: None,
            verdict: Verdict::Deny,
            rule: None,
            reason: String::new(),
            up: 0,
            down: 0,
        }
    }
    fn decided(mut self, d: &Decision) -> Record {
        self.verdict = d.verdict;
        self.rule = rule_text(d);
        self.reason = d.reason.clone();
        self
    }
    fn denied(mut self, reason: impl Into<String>) -> Record {
        self.verdict = Verdict::Deny;
        self.reason = reason.into();
        self
    }
}

type Upstream = BufReader<StreamOwned<ClientConnection, TcpStream>>;
type ClientTls = BufReader<StreamOwned<ServerConnection, TcpStream>>;

/// What an inspected connection's requests are judged by.
struct Gated<'g> {
    /// The API whose rules apply (inspect mode); `None`: a checked tunnel.
    api: Option<&'g ApiGate>,
    /// The decision that admitted the tunnel.
    tunnel: &'g Decision,
    /// Why a tunnel to a host that is not an API is checked (domain fronting).
    fronting: Option<&'g str>,
}

/// Whether to keep serving requests on a connection.
enum Next {
    Continue,
    Close,
}

struct Conn<'a> {
    p: &'a Proxy,
    stream: TcpStream,
    /// Inode of the agent's end of the connection (one sock_diag lookup at accept).
    inode: Option<u64>,
    /// The executable behind the connection, resolved once, at a moment the proxy waits
    /// anyway (for the upstream's answer, or while a tunnel relays).
    exe: Option<Option<String>>,
    /// The program decisions are made for, when a grant names programs: the executable of
    /// every process holding the agent's end (`None` inside: unknown, or several).
    program: Option<Option<String>>,
    /// The thread's CPU time when this connection was last accounted.
    cpu_mark: u64,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.account();
    }
}

impl<'a> Conn<'a> {
    fn new(p: &'a Proxy, stream: TcpStream) -> Conn<'a> {
        let inode = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(peer), Ok(ours)) => p.agent.socket_inode(peer, ours),
            _ => None,
        };
        p.usage.connections.fetch_add(1, Ordering::Relaxed);
        Conn { p, stream, inode, exe: None, program: None, cpu_mark: thread_cpu_ns() }
    }

    /// The program asking, for grants that name programs (`None` when no grant does, or
    /// when it cannot be told which single program holds the connection).
    fn program(&mut self) -> Option<String> {
        if !self.p.gate.needs_program() {
            return None;
        }
        if self.program.is_none() {
            let holders = self.inode.and_then(|i| self.p.agent.holders_of_inode(i)).unwrap_or_default();
            if self.exe.is_none() {
                self.exe = Some(holders.first().cloned());
            }
            self.program = Some(match holders.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            });
        }
        self.program.clone().flatten()
    }

    fn resolve_exe(&mut self) {
        if self.exe.is_none() {
            self.exe = Some(self.inode.and_then(|i| self.p.agent.exe_of_inode(i)));
        }
    }

    fn emit(&mut self, r: Record) {
        self.resolve_exe();
        let exe = self.exe.clone().flatten();
        let ev = Event::ProxyRequest {
            mode: r.mode.into(),
            host: r.host,
            port: r.port,
            method: r.method,
            path: r.path,
            decision: match r.verdict {
                Verdict::Allow => AuditVerdict::Allow,
                Verdict::Deny => AuditVerdict::Deny,
            },
            rule: r.rule,
            reason: r.reason,
            bytes_up: r.up,
            bytes_down: r.down,
            exe,
            count: 1,
        };
        if let Some(o) = &self.p.observer {
            o(&ev);
        }
        self.p.records.send(ev);
    }

    /// Charges the CPU this connection's thread used since the last call to the agent.
    fn account(&mut self) {
        let now = thread_cpu_ns();
        let spent = now.saturating_sub(self.cpu_mark);
        self.cpu_mark = now;
        self.p.usage.cpu_ns.fetch_add(spent, Ordering::Relaxed);
        self.p.budget.charge(spent);
    }

    /// Before more work for the agent: account for the last, and wait while the agent's CPU
    /// budget for this second is spent.
    fn pace(&mut self) {
        self.account();
        let waited = self.p.budget.wait();
        self.p.usage.throttled_ns.fetch_add(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn run(mut self) {
        let _ = self.stream.set_nodelay(true);
        let _ = self.stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let Ok(read_half) = self.stream.try_clone() else { return };
        let mut rd = BufReader::with_capacity(64 * 1024, read_half);
        loop {
            let req = match read_request(&mut rd) {
                Ok(Some(r)) => r,
                Ok(None) | Err(http1::HttpError::IdleTimeout) => return,
                Err(e) => {
                    let reason = format!("malformed request: {e}");
                    reply(&mut &self.stream, e.status(), &reason);
                    self.emit(Record::new("forward", "?", 0).denied(reason));
                    return;
                }
            };
            self.pace();
            let next = if req.head.method == "CONNECT" {
                self.connect(req, rd);
                return;
            } else if req.head.target.starts_with('/') {
                self.decision_endpoint(&req, &mut rd)
            } else if req.head.target.len() > 7 && req.head.target.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
                self.forward_plain(&req, &mut rd)
            } else {
                let reason = "only CONNECT, absolute http:// requests and the decision endpoint are served";
                reply(&mut &self.stream, 400, reason);
                self.emit(Record::new("forward", "?", 0).denied(format!("{reason} (target `{}`)", req.head.target)));
                Next::Close
            };
            if matches!(next, Next::Close) || !req.keep_alive {
                return;
            }
        }
    }

    fn forward_tcp(mut self, target: SocketAddr) {
        let host = Host::Ip(crate::addr::canonical_ip(target.ip()));
        let (d, addrs) = match self.admit(&host, target.port(), "tcp") {
            Ok(x) => x,
            Err((_, r)) => return self.emit(*r),
        };
        let rec = Record::new("tcp", &host.text(), target.port()).decided(&d);
        // A raw forward cannot be terminated: one that could reach an API's server is refused.
        let dial_it = || dial(&addrs, target.port());
        if let Some(why) = self.p.fronting.assess(&self.p.gate, &self.p.resolver, Target { host: &host, port: target.port(), addrs: &addrs }, true, &dial_it) {
            return self.emit(Record::new("tcp", &host.text(), target.port()).denied(format!("{why}: a transparent forward cannot be checked for domain fronting (use CONNECT {host}:{})", target.port())));
        }
        let up = match dial(&addrs, target.port()) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("allowed, but the destination did not answer: {e}");
                return self.emit(Record { reason, ..rec });
            }
        };
        let Ok(client) = self.stream.try_clone() else { return };
        let (u, dn) = crate::relay::tcp(client, up, || self.resolve_exe());
        self.emit(Record { up: u, down: dn, ..rec });
    }

    /// Destination check + resolution + vetting. `Err` carries the status to answer and the
    /// record: 403 for what the policy refuses (the destination, or only refused addresses),
    /// 502 for a name that cannot be resolved (not a denial: the destination is allowed).
    fn admit(&mut self, host: &Host, port: u16, mode: &'static str) -> Result<(Decision, Vec<IpAddr>), (u16, Box<Record>)> {
        let program = self.program();
        let d = self.p.gate.destination(host, port, program.as_deref());
        let rec = || Record::new(mode, &host.text(), port);
        if d.verdict == Verdict::Deny {
            return Err((403, Box::new(rec().decided(&d))));
        }
        let found = self.p.resolver.lookup(host, port).map_err(|why| {
            let reason = format!("allowed, but {why}");
            (502, Box::new(Record { reason, ..rec().decided(&d) }))
        })?;
        let addrs = self.p.gate.vet(host, port, &found, &self.p.own_addresses).map_err(|why| (403, Box::new(rec().denied(why))))?;
        Ok((d, addrs))
    }

    /// Answers `status` with the record's reason (a denial text unless it is a 502) and
    /// records it.
    fn refuse(&mut self, status: u16, r: Record) {
        if status == 502 {
            reply(&mut &self.stream, status, &r.reason);
        } else {
            deny_reply(&mut &self.stream, status, &r.reason);
        }
        self.emit(r);
    }

    fn connect(mut self, req: Request, rd: BufReader<TcpStream>) {
        let (host, port) = match parse_authority(&req.head.target, None) {
            Ok(hp) => hp,
            Err(e) => {
                let r = Record::new("tunnel", &req.head.target, 0).denied(format!("bad CONNECT target: {e}"));
                return self.refuse(400, r);
            }
        };
        let api = self.p.gate.api_or_learn(&host, port);
        let mode = if api.is_some() { "inspect" } else { "tunnel" };
        let (d, addrs) = match self.admit(&host, port, mode) {
            Ok(x) => x,
            Err((status, r)) => return self.refuse(status, *r),
        };
        let rec = || Record::new(mode, &host.text(), port);
        if self.stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
            return self.emit(Record {
                reason: format!("{}; the agent left before the tunnel opened", d.reason),
                ..rec().decided(&d)
            });
        }
        // Nothing is dialled before the ClientHello passed the SNI check. After the 200,
        // a refusal can only close the connection; the record says why.
        let first = match self.client_hello(&host, port, rd) {
            Ok(f) => f,
            Err(why) => return self.emit(rec().denied(why)),
        };
        let ssh = first.starts_with(b"SSH-");
        match api {
            Some(_) if ssh => self.emit(rec().denied("an inspected API carries TLS, not SSH")),
            Some(api) => self.inspect(host, port, Some(api), d, addrs, first, None),
            None => {
                let dial_it = || dial(&addrs, port);
                let slot = self.p.budget.handshake();
                let fronting = self.p.fronting.assess(&self.p.gate, &self.p.resolver, Target { host: &host, port, addrs: &addrs }, !ssh, &dial_it);
                drop(slot);
                match fronting {
                    Some(why) => self.inspect(host, port, None, d, addrs, first, Some(why)),
                    None => self.tunnel(host, port, d, addrs, first),
                }
            }
        }
    }

    /// Reads (not peeks) the agent's first bytes on an opened tunnel until its ClientHello is
    /// complete (or, on port 22, an SSH banner starts them), and judges the server name
    /// against the CONNECT host: `Err(why)` refuses the tunnel. The bytes are returned so
    /// they can be sent upstream (or to the TLS terminator) first.
    fn client_hello(&mut self, host: &Host, port: u16, rd: BufReader<TcpStream>) -> Result<Vec<u8>, String> {
        let _ = self.stream.set_read_timeout(Some(HELLO_TIMEOUT));
        let mut first = rd.buffer().to_vec();
        drop(rd);
        let mut buf = [0u8; 4096];
        let verdict = loop {
            let h = sni::parse(&first);
            if h != Hello::Incomplete || first.len() > sni::MAX_HELLO {
                break h;
            }
            if port == 22 && first.starts_with(b"SSH-") {
                break Hello::NotTls;
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => break Hello::Incomplete,
                Ok(n) => first.extend_from_slice(buf.get(..n).unwrap_or_default()),
            }
        };
        let _ = self.stream.set_read_timeout(None);
        match (&verdict, host) {
            (Hello::Sni(n), Host::Name(h)) if n == h => Ok(first),
            (Hello::Sni(n), _) => Err(format!("TLS server name `{n}` differs from the CONNECT host `{host}`")),
            (Hello::NoSni, Host::Ip(_)) => Ok(first),
            (Hello::NoSni, Host::Name(_)) => Err(format!("TLS ClientHello has no server name; it must name `{host}`")),
            (Hello::NotTls, _) if port == 22 && first.starts_with(b"SSH-") => Ok(first),
            (Hello::NotTls, _) => Err("the tunnel carries neither TLS nor (on port 22) SSH".to_string()),
            (Hello::Malformed(why), _) => Err(format!("malformed TLS ClientHello: {why}")),
            (Hello::Incomplete, _) => Err("the client closed or sent no complete ClientHello".to_string()),
        }
    }

    /// Relays an opened tunnel whose first bytes (`first`, already checked) go upstream first.
    fn tunnel(mut self, host: Host, port: u16, d: Decision, addrs: Vec<IpAddr>, first: Vec<u8>) {
        let rec = || Record::new("tunnel", &host.text(), port);
        let mut up = match dial(&addrs, port) {
            Ok(s) => s,
            Err(e) => {
                // The 200 was sent: a TLS client reads a fatal alert (internal_error), not a
                // status. The record has the reason.
                if !first.starts_with(b"SSH-") {
                    let _ = self.stream.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50]);
                }
                let reason = format!("allowed, but no vetted address answered: {e}");
                return self.emit(Record { reason, ..rec().decided(&d) });
            }
        };
        if let Err(e) = up.write_all(&first) {
            return self.emit(Record {
                reason: format!("{}; the upstream closed before the ClientHello was delivered: {e}", d.reason),
                ..rec().decided(&d)
            });
        }
        let Ok(client) = self.stream.try_clone() else { return };
        let (up_bytes, down_bytes) = crate::relay::tcp(client, up, || self.resolve_exe());
        let mut r = rec().decided(&d);
        r.up = up_bytes + first.len() as u64;
        r.down = down_bytes;
        self.emit(r);
    }

    /// Terminates an opened tunnel (its ClientHello `early` already checked) with the sandbox
    /// CA and checks every request: against `api`'s rules (inspect mode), or, for a tunnel
    /// that could reach an API's server (`fronting` says why: a *checked* tunnel), only
    /// that each request names the CONNECT host.
    #[allow(clippy::too_many_arguments)]
    fn inspect(mut self, host: Host, port: u16, api: Option<ApiGate>, d: Decision, addrs: Vec<IpAddr>, early: Vec<u8>, fronting: Option<String>) {
        let mode = if api.is_some() { "inspect" } else { "checked" };
        let rec = || Record::new(mode, &host.text(), port);
        let cfg = match self.p.ca.server_config(&host) {
            Ok(c) => c,
            Err(e) => return self.emit(rec().denied(format!("internal: {e}"))),
        };
        let Ok(mut sconn) = ServerConnection::new(cfg) else { return };
        // The whole ClientHello was read already; rustls takes it a buffer at a time.
        let mut rest = early.as_slice();
        while !rest.is_empty() {
            match sconn.read_tls(&mut rest) {
                Ok(n) if n > 0 && sconn.process_new_packets().is_ok() => {}
                _ => return self.emit(rec().denied("TLS handshake with the agent failed")),
            }
        }
        let Ok(sock) = self.stream.try_clone() else { return };
        let mut tls = StreamOwned::new(sconn, sock);
        // Handshakes are the proxy's most expensive work for the agent: paced and bounded.
        self.pace();
        let slot = self.p.budget.handshake();
        self.p.usage.handshakes.fetch_add(1, Ordering::Relaxed);
        // The upstream connection (dial + verified TLS handshake) is made while the agent's
        // handshake completes: the destination is admitted and the server name checked, and
        // nothing is sent to it before a request passes the rules.
        let (handshake_ok, early_upstream) = std::thread::scope(|scope| {
            let dialer = std::thread::Builder::new()
                .name("aegis-proxy-dial".into())
                .spawn_scoped(scope, || dial_tls(&self.p.upstream_tls, &host, &addrs, port));
            let mut ok = true;
            while tls.conn.is_handshaking() {
                if tls.conn.complete_io(&mut tls.sock).is_err() {
                    ok = false;
                    break;
                }
            }
            let up = dialer.ok().and_then(|h| h.join().ok()).and_then(Result::ok);
            (ok, up)
        });
        drop(slot);
        if !handshake_ok {
            self.emit(rec().denied("TLS handshake with the agent failed (does it trust the sandbox CA?)"));
            return;
        }
        let mut client: ClientTls = BufReader::with_capacity(64 * 1024, tls);
        let mut upstream: Option<Upstream> = early_upstream;
        loop {
            let req = match read_request(&mut client) {
                Ok(Some(r)) => r,
                Ok(None) | Err(http1::HttpError::IdleTimeout) => return,
                Err(e) => {
                    let reason = format!("malformed request: {e}");
                    reply(client.get_mut(), e.status(), &reason);
                    self.emit(rec().denied(reason));
                    return;
                }
            };
            self.pace();
            let gate = Gated { api: api.as_ref(), tunnel: &d, fronting: fronting.as_deref() };
            match self.inspect_one(&host, port, &gate, &addrs, req, &mut client, &mut upstream) {
                Next::Continue => {}
                Next::Close => {
                    let _ = client.get_mut().flush();
                    client.get_mut().conn.send_close_notify();
                    let _ = client.get_mut().flush();
                    return;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn inspect_one(
        &mut self,
        host: &Host,
        port: u16,
        gate: &Gated,
        addrs: &[IpAddr],
        req: Request,
        client: &mut ClientTls,
        upstream: &mut Option<Upstream>,
    ) -> Next {
        let method = req.head.method.clone();
        let mut rec = Record::new(if gate.api.is_some() { "inspect" } else { "checked" }, &host.text(), port);
        rec.method = Some(method.clone());
        let target = req.head.target.clone();
        let raw_path = target.split(['?', '#']).next().unwrap_or("").to_string();
        rec.path = Some(raw_path.clone());
        let refuse = |this: &mut Self, client: &mut ClientTls, status: u16, rec: Record| {
            deny_reply(client.get_mut(), status, &rec.reason);
            this.emit(rec);
            Next::Close
        };
        // The authority must be the host the tunnel was opened for.
        let authority_ok = |a: &str| match parse_authority(a, Some(port)) {
            Ok((h, p)) => h == *host && p == port,
            Err(_) => false,
        };
        match (&req.host, gate.fronting) {
            (Some(h), _) if authority_ok(h) => {}
            (Some(h), Some(why)) => return refuse(self, client, 403, rec.denied(format!("domain fronting: Host `{h}` differs from the CONNECT host `{host}`, and {why}"))),
            (Some(h), None) => return refuse(self, client, 403, rec.denied(format!("Host `{h}` differs from the CONNECT host `{host}`"))),
            (None, _) => return refuse(self, client, 400, rec.denied("request without a Host header")),
        }
        if !target.starts_with('/') {
            return refuse(self, client, 400, rec.denied("inside a tunnel, requests must use a path (origin form)"));
        }
        // An API's request is judged by its rules in canonical form; a checked tunnel's by
        // the tunnel's own grant, and forwarded as sent.
        let (d, out_target, credential) = match gate.api {
            Some(api) => {
                let request = match api_request(&req, &target) {
                    Ok(r) => r,
                    Err(why) => return refuse(self, client, 400, rec.denied(format!("request refused: {why}"))),
                };
                let canonical = request.path();
                rec.path = Some(canonical.clone());
                // TRACE makes a server echo the request, headers included: with the injected
                // credential, that would hand the secret to the agent. No rule can allow it.
                if method == "TRACE" || method == "TRACK" {
                    return refuse(self, client, 403, rec.denied("TRACE echoes the request back, with the credential the proxy adds: never forwarded"));
                }
                let program = self.program();
                let d = self.p.gate.http(api, &method, &canonical, program.as_deref());
                (d, request.target(), api.credential.as_ref())
            }
            None => {
                let mut d = gate.tunnel.clone();
                if let Some(why) = gate.fronting {
                    d.reason = format!("{}; checked for domain fronting: {why}", d.reason);
                }
                (d, target.clone(), None)
            }
        };
        if d.verdict == Verdict::Deny {
            return refuse(self, client, 403, rec.decided(&d));
        }
        let keep_upgrade = match req.upgrade.as_deref() {
            None => false,
            Some("websocket") => true,
            Some(other) => return refuse(self, client, 403, rec.denied(format!("upgrade to `{other}` is not allowed (only websocket)"))),
        };
        // Build exactly what was evaluated, for the host it was evaluated for.
        let mut headers: Vec<Header> = with_host(http1::forwardable_headers(&req, keep_upgrade), host, port, 443);
        if let Some(c) = credential {
            headers.retain(|h| !h.name.eq_ignore_ascii_case(&c.header));
            headers.push(Header {
                name: c.header.clone(),
                value: c.value.expose().as_bytes().to_vec(),
            });
        }
        if req.expect_continue && client.get_mut().write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            let reason = format!("{}; the agent left before sending the body", d.reason);
            self.emit(Record { reason, ..rec.decided(&d) });
            return Next::Close;
        }
        // Dial (or reuse) the upstream connection.
        // A kept (or early) upstream connection the server closed meanwhile is replaced
        // before anything is sent on it.
        if upstream.as_mut().is_some_and(is_stale) {
            *upstream = None;
        }
        if upstream.is_none() {
            let slot = self.p.budget.handshake();
            let dialled = dial_tls(&self.p.upstream_tls, host, addrs, port);
            drop(slot);
            match dialled {
                Ok(u) => *upstream = Some(u),
                Err(e) => {
                    let r = rec.decided(&d);
                    let reason = format!("allowed, but the upstream failed: {e}");
                    reply(client.get_mut(), 502, &reason);
                    self.emit(Record { reason, ..r });
                    return Next::Close;
                }
            }
        }
        let Some(up) = upstream.as_mut() else { return Next::Close };
        let upgrade = keep_upgrade.then_some("websocket");
        let sent = {
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, up.get_mut());
            http1::write_request_head(&mut w, &method, &out_target, &headers, upgrade)
                .map_err(|e| Sent::Failed(e.to_string()))
                .and_then(|_| match gate.api {
                    Some(_) => send_body(client, &mut w, &req),
                    None => http1::copy_body(client, &mut w, req.framing, None).map_err(|e| Sent::Failed(e.to_string())),
                })
                .and_then(|n| w.flush().map(|_| n).map_err(|e| Sent::Failed(e.to_string())))
        };
        let up_bytes = match sent {
            Ok(n) => n,
            Err(Sent::Refused(why)) => {
                // The upstream never got the end of this request: drop the connection.
                *upstream = None;
                return refuse(self, client, 400, rec.denied(format!("request refused: {why}")));
            }
            Err(Sent::Failed(e)) => {
                *upstream = None;
                let reason = format!("allowed, but forwarding the request failed: {e}");
                reply(client.get_mut(), 502, &reason);
                self.emit(Record { reason, ..rec.decided(&d) });
                return Next::Close;
            }
        };
        let mut rec = rec.decided(&d);
        rec.up = up_bytes;
        // While the upstream works on its answer.
        self.resolve_exe();
        match relay_response(&method, up, client.get_mut(), true) {
            Relayed::Done { down, framing, upstream_closes } => {
                rec.down = down;
                self.emit(rec);
                if upstream_closes || framing == Framing::UntilClose {
                    *upstream = None;
                }
                if framing == Framing::UntilClose || !req.keep_alive { Next::Close } else { Next::Continue }
            }
            Relayed::Switching(resp) => self.switch_protocols(resp, keep_upgrade, rec, client, upstream),
            Relayed::AgentLeft => {
                *upstream = None;
                let reason = format!("{}; the agent left before the response", rec.reason);
                self.emit(Record { reason, ..rec });
                Next::Close
            }
            Relayed::Unusable(reason) => {
                *upstream = None;
                reply(client.get_mut(), 502, &reason);
                self.emit(Record { reason, ..rec });
                Next::Close
            }
            Relayed::CutShort(why) => {
                *upstream = None;
                rec.reason = format!("{}; {why}", rec.reason);
                self.emit(rec);
                Next::Close
            }
        }
    }

    /// An allowed WebSocket upgrade the upstream accepted: relay both ways until the end.
    fn switch_protocols(&mut self, resp: http1::ResponseHead, keep_upgrade: bool, mut rec: Record, client: &mut ClientTls, upstream: &mut Option<Upstream>) -> Next {
        if !keep_upgrade {
            *upstream = None;
            self.emit(Record {
                reason: "upstream switched protocols without an allowed upgrade".into(),
                verdict: Verdict::Deny,
                ..rec
            });
            return Next::Close;
        }
        if http1::write_response_head(client.get_mut(), &resp).is_err() {
            let reason = format!("{}; the agent left before the upgrade completed", rec.reason);
            self.emit(Record { reason, ..rec });
            return Next::Close;
        }
        let _ = client.get_mut().flush();
        let Some(up) = upstream.take() else { return Next::Close };
        let from_client = client.buffer().to_vec();
        let from_up = up.buffer().to_vec();
        let mut up_stream = up.into_inner();
        let cs = client.get_mut();
        let (u, dn) = crate::relay::tls((&mut cs.conn, &mut cs.sock), (&mut up_stream.conn, &mut up_stream.sock), (from_client, from_up));
        rec.up += u;
        rec.down += dn;
        self.emit(rec);
        Next::Close
    }

    /// `GET http://host/path` from a proxy-aware client: plain HTTP, checked like inspect
    /// mode for API hosts (no credential is ever sent in clear), like a tunnel otherwise.
    fn forward_plain(&mut self, req: &Request, rd: &mut BufReader<TcpStream>) -> Next {
        let rest = req.head.target.get(7..).unwrap_or("");
        let (authority, path_q) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
            None => (rest, "/"),
        };
        let mut rec = Record::new("forward", authority, 80);
        rec.method = Some(req.head.method.clone());
        let (host, port) = match parse_authority(authority, Some(80)) {
            Ok(hp) => hp,
            Err(e) => {
                self.refuse(400, rec.denied(format!("bad URL authority: {e}")));
                return Next::Close;
            }
        };
        rec.host = host.text();
        rec.port = port;
        if authority.contains('@') {
            self.refuse(400, rec.denied("user information in the URL is not accepted"));
            return Next::Close;
        }
        if let Some(h) = &req.host
            && parse_authority(h, Some(80)).ok() != Some((host.clone(), port))
        {
            self.refuse(403, rec.denied(format!("Host `{h}` differs from the URL's host `{host}`")));
            return Next::Close;
        }
        let raw_path = path_q.split(['?', '#']).next().unwrap_or("/");
        rec.path = Some(raw_path.to_string());
        let (d, addrs) = match self.admit(&host, port, "forward") {
            Ok(x) => x,
            Err((status, mut r)) => {
                r.method = rec.method.take();
                r.path = rec.path.take();
                self.refuse(status, *r);
                return Next::Close;
            }
        };
        // An API's request is checked like an inspected one; any other allowed host gets
        // the target as sent.
        let (d, out_target, checked) = match self.p.gate.api_for(&host, port) {
            Some(api) => {
                let api = api.clone();
                let request = match api_request(req, path_q) {
                    Ok(r) => r,
                    Err(why) => {
                        self.refuse(400, rec.denied(format!("request refused: {why}")));
                        return Next::Close;
                    }
                };
                rec.path = Some(request.path());
                let program = self.program();
                (self.p.gate.http(&api, &req.head.method, &request.path(), program.as_deref()), request.target(), true)
            }
            None => (d, path_q.to_string(), false),
        };
        if d.verdict == Verdict::Deny {
            self.refuse(403, rec.decided(&d));
            return Next::Close;
        }
        if req.upgrade.is_some() {
            self.refuse(403, rec.denied("protocol upgrades are not forwarded over plain HTTP"));
            return Next::Close;
        }
        let mut rec = rec.decided(&d);
        let mut up = match dial(&addrs, port) {
            Ok(s) => s,
            Err(e) => {
                let reason = format!("allowed, but no vetted address answered: {e}");
                reply(&mut &self.stream, 502, &reason);
                self.emit(Record { reason, ..rec });
                return Next::Close;
            }
        };
        let mut headers = with_host(http1::forwardable_headers(req, false), &host, port, 80);
        headers.push(Header {
            name: "Connection".into(),
            value: b"close".to_vec(),
        });
        if req.expect_continue && self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            let reason = format!("{}; the agent left before sending the body", rec.reason);
            self.emit(Record { reason, ..rec });
            return Next::Close;
        }
        let sent = http1::write_request_head(&mut up, &req.head.method, &out_target, &headers, None)
            .map_err(|e| Sent::Failed(e.to_string()))
            .and_then(|_| match checked {
                true => send_body(rd, &mut up, req),
                false => http1::copy_body(rd, &mut up, req.framing, None).map_err(|e| Sent::Failed(e.to_string())),
            });
        self.resolve_exe();
        match sent {
            Ok(n) => rec.up = n,
            Err(Sent::Refused(why)) => {
                self.refuse(400, rec.denied(format!("request refused: {why}")));
                return Next::Close;
            }
            Err(Sent::Failed(e)) => {
                let reason = format!("allowed, but forwarding failed: {e}");
                reply(&mut &self.stream, 502, &reason);
                self.emit(Record { reason, ..rec });
                return Next::Close;
            }
        }
        let mut upr = BufReader::new(up);
        match relay_response(&req.head.method, &mut upr, &mut &self.stream, false) {
            Relayed::Done { down, framing, .. } => {
                rec.down = down;
                self.emit(rec);
                if framing == Framing::UntilClose { Next::Close } else { Next::Continue }
            }
            Relayed::Unusable(reason) => {
                reply(&mut &self.stream, 502, &reason);
                self.emit(Record { reason, ..rec });
                Next::Close
            }
            // The agent cannot tell where this response ends: close its connection.
            Relayed::CutShort(why) => {
                rec.reason = format!("{}; {why}", rec.reason);
                self.emit(rec);
                Next::Close
            }
            // Interim answers are not forwarded here, and upgrades were refused above.
            Relayed::Switching(_) | Relayed::AgentLeft => {
                self.emit(rec);
                Next::Close
            }
        }
    }

    fn decision_endpoint(&mut self, req: &Request, rd: &mut BufReader<TcpStream>) -> Next {
        let mut rec = Record::new("decision", "aegis", self.stream.local_addr().map(|a| a.port()).unwrap_or(0));
        rec.method = Some(req.head.method.clone());
        rec.path = Some(req.head.target.split('?').next().unwrap_or("").to_string());
        if req.head.target != crate::decision::PATH || req.head.method != "POST" {
            let reason = format!("the proxy answers only POST {} (see AEGIS_DECISION_URL)", crate::decision::PATH);
            reply(&mut &self.stream, 404, &reason);
            self.emit(rec.denied(reason));
            return Next::Close;
        }
        let mut body = Vec::new();
        if let Err(e) = http1::copy_body(rd, &mut body, req.framing, Some(MAX_DECISION_BODY)) {
            let reason = format!("bad request body: {e}");
            reply(&mut &self.stream, e.status(), &reason);
            self.emit(rec.denied(reason));
            return Next::Close;
        }
        let program = self.program();
        let (status, json, close) = match crate::decision::answer(&self.p.gate, &body, program.as_deref()) {
            Ok((json, asked, d)) => {
                rec.method = Some(asked.kind);
                rec.path = Some(asked.target);
                let r = Record {
                    verdict: d.verdict,
                    rule: rule_text(&d),
                    reason: d.reason.clone(),
                    ..rec
                };
                self.emit(r);
                (200, json, false)
            }
            Err((status, json)) => {
                self.emit(rec.denied(format!("malformed question: {}", json.get("error").and_then(|e| e.as_str()).unwrap_or(""))));
                (status, json, true)
            }
        };
        let body = json.to_string();
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            if status == 200 { "OK" } else { "Bad Request" },
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if self.stream.write_all(head.as_bytes()).and_then(|_| self.stream.write_all(body.as_bytes())).is_err() || close {
            return Next::Close;
        }
        Next::Continue
    }
}

/// Methods whose requests have no defined body: a server that ignores such a body would
/// read it as the next request.
const NO_BODY_METHODS: &[&str] = &["GET", "HEAD", "DELETE", "TRACE", "TRACK", "CONNECT"];

/// The canonical form of a request to an API and everything only the proxy sees that a
/// server could read differently (override headers, a body on a method without one); `Err`
/// says why it is refused (400).
fn api_request(req: &Request, target: &str) -> Result<CanonicalRequest, String> {
    let request = canonical_request(&req.head.method, target)?;
    crate::reinterpret::check_headers(&req.head.headers)?;
    if NO_BODY_METHODS.contains(&request.method.as_str()) && !matches!(req.framing, Framing::None | Framing::Length(0)) {
        return Err(format!("a body on {}, which defines none (a server that ignores it reads it as another request)", request.method));
    }
    Ok(request)
}

/// `headers` with the Host header replaced by the canonical authority the request was
/// checked for (`host`, and `:port` unless it is `default_port`), first.
fn with_host(headers: Vec<Header>, host: &Host, port: u16, default_port: u16) -> Vec<Header> {
    let authority = if port == default_port { host.to_string() } else { format!("{host}:{port}") };
    std::iter::once(Header::new("Host", &authority)).chain(headers.into_iter().filter(|h| !h.name.eq_ignore_ascii_case("host"))).collect()
}

/// Why a request body did not reach the upstream whole.
enum Sent {
    /// The body carries an override ([`crate::reinterpret`]): answer 400.
    Refused(String),
    /// Reading from the agent or writing upstream failed: answer 502.
    Failed(String),
}

/// Forwards the body of an API request, judging each piece before it is written.
fn send_body<R: BufRead, W: Write>(client: &mut R, w: &mut W, req: &Request) -> Result<u64, Sent> {
    let mut scan = crate::reinterpret::body_scan(&req.head.headers);
    let mut check = |piece: &[u8]| match scan.as_mut() {
        Some(s) => s.feed(piece),
        None => Ok(()),
    };
    http1::copy_body_checked(client, w, req.framing, None, &mut check).map_err(|e| match e {
        http1::HttpError::BodyRefused(why) => Sent::Refused(why),
        e => Sent::Failed(e.to_string()),
    })
}

/// A complete answer of the proxy itself (`400`, `404`, `502`, ...) whose body is the reason.
fn reply<W: Write>(w: &mut W, status: u16, reason: &str) {
    let _ = w.write_all(&http1::simple_response(status, reason, &format!("{reason}\n"), true));
    let _ = w.flush();
}

/// A denial: `status` with the reason in `X-Aegis-Reason` and in the body.
fn deny_reply<W: Write>(w: &mut W, status: u16, reason: &str) {
    let _ = w.write_all(&http1::simple_response(status, reason, &format!("AEGIS denied this request: {reason}\n"), true));
    let _ = w.flush();
}

/// How relaying one upstream response to the agent ended.
enum Relayed {
    /// The body went through: its payload bytes, its framing, and whether the upstream
    /// closes the connection after it.
    Done { down: u64, framing: Framing, upstream_closes: bool },
    /// `101 Switching Protocols`: the head, not yet written to the agent.
    Switching(http1::ResponseHead),
    /// The agent went away while an interim response was forwarded.
    AgentLeft,
    /// Nothing of the final response reached the agent: answer `502` with this reason.
    Unusable(String),
    /// The response was cut short after it started; the agent's connection must close.
    CutShort(String),
}

/// Reads the response to a `method` request from `up` and relays it to `client`: interim
/// `1xx` answers are forwarded (`forward_interim`, except `101`, which is returned) or
/// skipped; the head goes through the hop-by-hop filter with a framing header regenerated
/// for the re-framed body; head and first piece of the body leave in one write.
fn relay_response<R: BufRead, W: Write>(method: &str, up: &mut R, client: &mut W, forward_interim: bool) -> Relayed {
    let resp = loop {
        match http1::read_response_head(up, MAX_HEAD) {
            Ok(r) if (100..200).contains(&r.status) && !(forward_interim && r.status == 101) => {
                if forward_interim && http1::write_response_head(client, &r).is_err() {
                    return Relayed::AgentLeft;
                }
            }
            Ok(r) if r.status == 101 => return Relayed::Switching(r),
            Ok(r) => break r,
            Err(e) => return Relayed::Unusable(format!("allowed, but the upstream response was unusable: {e}")),
        }
    };
    let framing = match http1::response_framing(method, &resp) {
        Ok(f) => f,
        Err(e) => return Relayed::Unusable(format!("allowed, but the upstream response framing is ambiguous: {e}")),
    };
    let upstream_closes = http1::has_connection_token(&resp.headers, "close")
        || (resp.minor_version == 0 && !http1::has_connection_token(&resp.headers, "keep-alive"));
    let resp = http1::ResponseHead {
        headers: http1::forwardable_response_headers(method, &resp, framing, false),
        ..resp
    };
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, client);
    let relayed = http1::write_response_head(&mut w, &resp)
        .map_err(|e| e.to_string())
        .and_then(|_| http1::copy_body(up, &mut w, framing, None).map_err(|e| e.upstream().to_string()))
        .and_then(|n| w.flush().map(|_| n).map_err(|e| e.to_string()));
    match relayed {
        Ok(down) => Relayed::Done { down, framing, upstream_closes },
        Err(e) => Relayed::CutShort(format!("the response was cut short: {e}")),
    }
}

fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, http1::HttpError> {
    match http1::read_request_head(r, MAX_HEAD)? {
        None => Ok(None),
        Some(h) => http1::validate_request(h).map(Some),
    }
}

/// Whether an idle upstream connection can no longer be used: it was closed, sent an alert
/// or stray application data. TLS 1.3 session tickets, which servers send after the
/// handshake, are consumed here and do not make a connection stale.
fn is_stale(up: &mut Upstream) -> bool {
    if !up.buffer().is_empty() {
        return true;
    }
    let s = up.get_mut();
    if s.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let stale = loop {
        match s.conn.read_tls(&mut s.sock) {
            Ok(0) => break true,
            Ok(_) => match s.conn.process_new_packets() {
                Ok(st) if st.plaintext_bytes_to_read() > 0 || st.peer_has_closed() => break true,
                Ok(_) => continue,
                Err(_) => break true,
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    stale || s.sock.set_nonblocking(false).is_err()
}

/// Connects to the first vetted address that answers.
fn dial(addrs: &[IpAddr], port: u16) -> Result<TcpStream, String> {
    let mut last = String::from("no address");
    for ip in addrs {
        match TcpStream::connect_timeout(&SocketAddr::new(*ip, port), DIAL_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                // An upstream that stalls (handshake, response) frees the thread eventually.
                let _ = s.set_read_timeout(Some(IDLE_TIMEOUT));
                let _ = s.set_write_timeout(Some(IDLE_TIMEOUT));
                return Ok(s);
            }
            Err(e) => last = format!("{ip}:{port}: {e}"),
        }
    }
    Err(last)
}

fn dial_tls(cfg: &Arc<ClientConfig>, host: &Host, addrs: &[IpAddr], port: u16) -> Result<Upstream, String> {
    let sock = dial(addrs, port)?;
    let name = match host {
        Host::Name(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let conn = ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| format!("TLS to {host}: {e}"))?;
    }
    Ok(BufReader::with_capacity(64 * 1024, s))
}
