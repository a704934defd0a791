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
//!
//! | file          | holds                                                                |
//! |---------------|----------------------------------------------------------------------|
//! | `mod.rs`      | [`Proxy`] (shared by every connection), `spawn`/`serve`, dialling    |
//! | `pool.rs`     | the accept pool: idle threads blocked in `accept`, topped up, retired |
//! | `conn.rs`     | one connection: its record, accounting, the first request's dispatch |
//! | `tunnel.rs`   | `CONNECT`: admit, check the ClientHello, relay raw; transparent forwards |
//! | `inspect.rs`  | terminated TLS: each request judged, re-framed, credential added      |
//! | `forward.rs`  | absolute-form `http://` requests, forwarded over plain TCP            |
//! | `decision.rs` | the decision endpoint (`POST /.aegis/v1/check`)                       |
//! | `exchange.rs` | one request/response exchange: bodies, replies, relay outcomes        |

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use aegis_audit::Event;
use aegis_policy::eval::{Decision, Verdict};
use aegis_policy::ir::api::{CanonicalRequest, canonical_request};
use rustls::ClientConfig;

use crate::exe::AgentProcs;
use crate::gate::Gate;
use crate::records::{Budget, Records, Usage};
use crate::resolve::Resolver;
use crate::tls::SandboxCa;

mod conn;
mod decision;
mod exchange;
mod forward;
mod inspect;
mod pool;
mod tunnel;

use conn::Conn;

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

/// Starts serving the proxy port. Runs until the process exits.
pub fn spawn(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<std::thread::JoinHandle<()>> {
    pool::start_pool("aegis-proxy", listener, proxy, |p, s| Conn::new(p, s).run())
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
    pool::start_pool("aegis-proxy-fwd", listener, proxy, |p, s| {
        if let Ok(t) = s.local_addr() {
            Conn::new(p, s).forward_tcp(t);
        }
    })
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
