//! The decision endpoint served on the proxy port (`POST /.aegis/v1/check`): agent
//! frameworks ask before acting, and the answer comes from the same evaluator that
//! enforces ([`crate::decision`]).
//!
//! Input: the request and its body (at most [`MAX_DECISION_BODY`] bytes). Output: a JSON
//! answer and one record of the question. Invariants: any other path or method is answered
//! `404`; a malformed question is answered `400` and recorded as denied.

use std::io::{BufReader, Write};
use std::net::TcpStream;

use super::conn::{Conn, Next, Record};
use super::exchange::reply;
use super::MAX_DECISION_BODY;
use crate::gate::rule_text;
use crate::http1::{self, Request};

impl<'a> Conn<'a> {
    pub(super) fn decision_endpoint(&mut self, req: &Request, rd: &mut BufReader<TcpStream>) -> Next {
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
