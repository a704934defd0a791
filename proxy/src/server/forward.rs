//! Absolute-form requests (`GET http://host/path`) from proxy-aware clients: checked like an
//! inspected request for an `[api.*]` host, like a tunnel otherwise, and forwarded over plain
//! TCP.
//!
//! Input: the request, its authority and path. Output: the relayed response and one record.
//! Invariants: no credential is ever sent in clear; user information in the URL, a Host
//! header naming another host, and protocol upgrades are refused; the upstream connection
//! carries one request (`Connection: close`).

use std::io::{BufReader, Write};
use std::net::{IpAddr, TcpStream};

use super::conn::{Conn, Next, Record};
use super::exchange::{Sent, Settled, api_request, bad_gateway, relay_response, send_body, settle, with_host};
use super::{Decision, Verdict, dial};
use crate::addr::{Host, parse_authority};
use crate::http1::{self, Header, Request};

/// An absolute-form request that passed [`Conn::judge_plain`].
struct Plain {
    host: Host,
    port: u16,
    /// The vetted addresses of `host`.
    addrs: Vec<IpAddr>,
    d: Decision,
    /// The request target to send: the canonical form for an API, as sent otherwise.
    out_target: String,
    /// An API's request: its body is checked for overrides while it is forwarded.
    checked: bool,
    /// The record so far (method, canonical path).
    rec: Record,
}

impl<'a> Conn<'a> {
    /// `GET http://host/path` from a proxy-aware client: plain HTTP, checked like inspect
    /// mode for API hosts (no credential is ever sent in clear), like a tunnel otherwise.
    pub(super) fn forward_plain(&mut self, req: &Request, rd: &mut BufReader<TcpStream>) -> Next {
        let Some(Plain { host, port, addrs, d, out_target, checked, rec }) = self.judge_plain(req) else {
            return Next::Close;
        };
        let mut rec = rec.decided(&d);
        let mut up = match dial(&addrs, port) {
            Ok(s) => s,
            Err(e) => {
                self.emit(bad_gateway(&mut &self.stream, rec, format!("allowed, but no vetted address answered: {e}")));
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
                self.emit(bad_gateway(&mut &self.stream, rec, format!("allowed, but forwarding failed: {e}")));
                return Next::Close;
            }
        }
        let mut upr = BufReader::new(up);
        // The upstream connection carries this one request (`Connection: close`), so only
        // whether the agent's connection stays open matters.
        let relayed = relay_response(&req.head.method, &mut upr, &mut &self.stream, false);
        match settle(relayed, rec, &mut &self.stream) {
            Settled::Over { rec, next, .. } => {
                self.emit(rec);
                next
            }
            // Interim answers (101 among them) are skipped here, never forwarded, and
            // upgrades were refused above: no protocol switch reaches this point.
            Settled::Switching(_, rec) => {
                self.emit(rec);
                Next::Close
            }
        }
    }

    /// Judges an absolute-form request before anything of it is sent: its URL (no user
    /// information; a Host header, if any, naming the same host), the destination (admitted
    /// and resolved), an API's rules in canonical form, no upgrade. `None`: refused, and
    /// already answered and recorded.
    fn judge_plain(&mut self, req: &Request) -> Option<Plain> {
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
                return None;
            }
        };
        rec.host = host.text();
        rec.port = port;
        if authority.contains('@') {
            self.refuse(400, rec.denied("user information in the URL is not accepted"));
            return None;
        }
        if let Some(h) = &req.host
            && parse_authority(h, Some(80)).ok() != Some((host.clone(), port))
        {
            self.refuse(403, rec.denied(format!("Host `{h}` differs from the URL's host `{host}`")));
            return None;
        }
        let raw_path = path_q.split(['?', '#']).next().unwrap_or("/");
        rec.path = Some(raw_path.to_string());
        let (d, addrs) = match self.admit(&host, port, "forward") {
            Ok(x) => x,
            Err((status, mut r)) => {
                r.method = rec.method.take();
                r.path = rec.path.take();
                self.refuse(status, *r);
                return None;
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
                        return None;
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
            return None;
        }
        if req.upgrade.is_some() {
            self.refuse(403, rec.denied("protocol upgrades are not forwarded over plain HTTP"));
            return None;
        }
        Some(Plain { host, port, addrs, d, out_target, checked, rec })
    }
}
