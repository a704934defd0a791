//! Inspected connections: TLS terminated with the sandbox CA and every request on the
//! connection judged before it is forwarded over verified TLS, for an `[api.*]` host
//! (against the API's HTTP rules, with its credential added) or for a *checked* tunnel that
//! could reach an API's server (only that each request names the CONNECT host).
//!
//! Input: an admitted tunnel whose ClientHello was read already. Output: one record per
//! request. Invariants: what is forwarded is exactly what was evaluated (the canonical
//! target, the Host header rebuilt); the credential replaces whatever the agent sent under
//! its header and is never forwarded on `TRACE`; the upstream connection is dialled while
//! the agent's handshake completes, but nothing is sent on it before a request passed;
//! a kept upstream connection the server closed meanwhile is replaced, never reused.

use std::io::{BufReader, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConnection, StreamOwned};

use super::conn::{Conn, Next, Record};
use super::exchange::{Sent, Settled, api_request, bad_gateway, deny_reply, read_request, relay_response, reply, send_body, settle, with_host};
use super::{Decision, Verdict, dial};
use crate::addr::{Host, parse_authority};
use crate::gate::{ApiGate, Injection};
use crate::http1::{self, Header, Request};

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

/// A request of an inspected connection that passed [`Conn::judge`].
struct Judged<'g> {
    d: Decision,
    /// The request target to send: the canonical form for an API, as sent otherwise.
    out_target: String,
    /// The API's credential, added to the request.
    credential: Option<&'g Injection>,
    /// An allowed WebSocket upgrade goes upstream with the request.
    keep_upgrade: bool,
}

impl<'a> Conn<'a> {
    /// Terminates an opened tunnel (its ClientHello `early` already checked) with the sandbox
    /// CA and checks every request: against `api`'s rules (inspect mode), or, for a tunnel
    /// that could reach an API's server (`fronting` says why: a *checked* tunnel), only
    /// that each request names the CONNECT host.
    #[allow(clippy::too_many_arguments, reason = "what the CONNECT decided (host, port, API, decision, addresses, early bytes, fronting), handed over once")]
    pub(super) fn inspect(mut self, host: Host, port: u16, api: Option<ApiGate>, d: Decision, addrs: Vec<IpAddr>, early: Vec<u8>, fronting: Option<String>) {
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

    #[allow(clippy::too_many_arguments, reason = "one request and the connection state it is answered with")]
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
        let raw_path = req.head.target.split(['?', '#']).next().unwrap_or("").to_string();
        rec.path = Some(raw_path);
        let (Judged { d, out_target, credential, keep_upgrade }, rec) = match self.judge(host, port, gate, &req, client, rec) {
            Ok(j) => j,
            Err(next) => return next,
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
        let up = match self.upstream_for(host, port, addrs, upstream) {
            Ok(up) => up,
            Err(e) => {
                self.emit(bad_gateway(client.get_mut(), rec.decided(&d), format!("allowed, but the upstream failed: {e}")));
                return Next::Close;
            }
        };
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
                return self.refuse_inside(client, 400, rec.denied(format!("request refused: {why}")));
            }
            Err(Sent::Failed(e)) => {
                *upstream = None;
                self.emit(bad_gateway(client.get_mut(), rec.decided(&d), format!("allowed, but forwarding the request failed: {e}")));
                return Next::Close;
            }
        };
        let mut rec = rec.decided(&d);
        rec.up = up_bytes;
        // While the upstream works on its answer.
        self.resolve_exe();
        let relayed = relay_response(&method, up, client.get_mut(), true);
        match settle(relayed, rec, client.get_mut()) {
            Settled::Over { rec, next, reuse_upstream } => {
                if !reuse_upstream {
                    *upstream = None;
                }
                self.emit(rec);
                if req.keep_alive { next } else { Next::Close }
            }
            Settled::Switching(resp, rec) => self.switch_protocols(resp, keep_upgrade, rec, client, upstream),
        }
    }

    /// Judges one request of an inspected connection before anything of it is sent: its
    /// authority (the CONNECT host), its form (origin form), the API's rules in canonical
    /// form (or, in a checked tunnel, the tunnel's own grant), its upgrade. `Err` is a
    /// refusal already answered and recorded. The record comes back with the path judged.
    fn judge<'g>(&mut self, host: &Host, port: u16, gate: &Gated<'g>, req: &Request, client: &mut ClientTls, mut rec: Record) -> Result<(Judged<'g>, Record), Next> {
        let method = &req.head.method;
        let target = &req.head.target;
        // The authority must be the host the tunnel was opened for.
        let authority_ok = |a: &str| match parse_authority(a, Some(port)) {
            Ok((h, p)) => h == *host && p == port,
            Err(_) => false,
        };
        match (&req.host, gate.fronting) {
            (Some(h), _) if authority_ok(h) => {}
            (Some(h), Some(why)) => return Err(self.refuse_inside(client, 403, rec.denied(format!("domain fronting: Host `{h}` differs from the CONNECT host `{host}`, and {why}")))),
            (Some(h), None) => return Err(self.refuse_inside(client, 403, rec.denied(format!("Host `{h}` differs from the CONNECT host `{host}`")))),
            (None, _) => return Err(self.refuse_inside(client, 400, rec.denied("request without a Host header"))),
        }
        if !target.starts_with('/') {
            return Err(self.refuse_inside(client, 400, rec.denied("inside a tunnel, requests must use a path (origin form)")));
        }
        // An API's request is judged by its rules in canonical form; a checked tunnel's by
        // the tunnel's own grant, and forwarded as sent.
        let (d, out_target, credential) = match gate.api {
            Some(api) => {
                let request = match api_request(req, target) {
                    Ok(r) => r,
                    Err(why) => return Err(self.refuse_inside(client, 400, rec.denied(format!("request refused: {why}")))),
                };
                let canonical = request.path();
                rec.path = Some(canonical.clone());
                // TRACE makes a server echo the request, headers included: with the injected
                // credential, that would hand the secret to the agent. No rule can allow it.
                if method == "TRACE" || method == "TRACK" {
                    return Err(self.refuse_inside(client, 403, rec.denied("TRACE echoes the request back, with the credential the proxy adds: never forwarded")));
                }
                let program = self.program();
                let d = self.p.gate.http(api, method, &canonical, program.as_deref());
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
            return Err(self.refuse_inside(client, 403, rec.decided(&d)));
        }
        let keep_upgrade = match req.upgrade.as_deref() {
            None => false,
            Some("websocket") => true,
            Some(other) => return Err(self.refuse_inside(client, 403, rec.denied(format!("upgrade to `{other}` is not allowed (only websocket)")))),
        };
        Ok((Judged { d, out_target, credential, keep_upgrade }, rec))
    }

    /// A refusal inside the terminated tunnel: answered there and recorded; the connection
    /// closes.
    fn refuse_inside(&mut self, client: &mut ClientTls, status: u16, rec: Record) -> Next {
        deny_reply(client.get_mut(), status, &rec.reason);
        self.emit(rec);
        Next::Close
    }

    /// The upstream connection for the next request: the kept (or early) one, unless the
    /// server closed it meanwhile (it is replaced before anything is sent on it), else a new
    /// one (dial + verified TLS, paced like every handshake). `Err` says why none could be
    /// made.
    fn upstream_for<'u>(&self, host: &Host, port: u16, addrs: &[IpAddr], upstream: &'u mut Option<Upstream>) -> Result<&'u mut Upstream, String> {
        let kept = upstream.take().and_then(|mut u| (!is_stale(&mut u)).then_some(u));
        let up = match kept {
            Some(u) => u,
            None => {
                let slot = self.p.budget.handshake();
                let dialled = dial_tls(&self.p.upstream_tls, host, addrs, port);
                drop(slot);
                dialled?
            }
        };
        Ok(upstream.insert(up))
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
