//! `CONNECT` tunnels and transparent forwards: the destination admitted, the agent's first
//! bytes checked (a ClientHello naming the CONNECT host, or SSH on port 22), then relayed
//! raw; a tunnel to an `[api.*]` host, or one that could reach an API's server, is handed to
//! [`inspect`](super::inspect) instead.
//!
//! Input: the `CONNECT` request (or, on a forward listener, the address the agent dialled).
//! Output: a relayed tunnel and its record (bytes both ways). Invariants: nothing is dialled
//! before the ClientHello passed the server-name check; a transparent forward that could
//! reach an API's server is refused (it cannot be terminated and checked).

use std::io::{BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use super::conn::{Conn, Record};
use super::{Decision, HELLO_TIMEOUT, dial};
use crate::addr::{Host, parse_authority};
use crate::fronting::Target;
use crate::http1::Request;
use crate::sni::{self, Hello};

impl<'a> Conn<'a> {
    pub(super) fn connect(mut self, req: Request, rd: BufReader<TcpStream>) {
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

    pub(super) fn forward_tcp(mut self, target: SocketAddr) {
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
}
