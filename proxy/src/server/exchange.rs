//! One HTTP request/response exchange through the proxy, shared by inspected and forwarded
//! requests: the canonical form an API request is judged in, request bodies, the proxy's
//! own replies, and relaying the upstream's response.
//!
//! Input: a parsed request, its body on the agent's side, the upstream's response. Output:
//! what reached each side, and how the relay ended ([`Relayed`]). Invariants: a request the
//! checker cannot frame unambiguously (overrides, a body on a method without one) is
//! refused; a response is re-framed (hop-by-hop headers dropped, one framing header
//! regenerated); a response cut short closes the agent's connection.

use std::io::{BufRead, Write};

use super::conn::{Next, Record};
use super::{CanonicalRequest, MAX_HEAD, canonical_request};
use crate::addr::Host;
use crate::http1::{self, Framing, Header, Request};

/// Methods whose requests have no defined body: a server that ignores such a body would
/// read it as the next request.
pub(super) const NO_BODY_METHODS: &[&str] = &["GET", "HEAD", "DELETE", "TRACE", "TRACK", "CONNECT"];

/// The canonical form of a request to an API and everything only the proxy sees that a
/// server could read differently (override headers, a body on a method without one); `Err`
/// says why it is refused (400).
pub(super) fn api_request(req: &Request, target: &str) -> Result<CanonicalRequest, String> {
    let request = canonical_request(&req.head.method, target)?;
    crate::reinterpret::check_headers(&req.head.headers)?;
    if NO_BODY_METHODS.contains(&request.method.as_str()) && !matches!(req.framing, Framing::None | Framing::Length(0)) {
        return Err(format!("a body on {}, which defines none (a server that ignores it reads it as another request)", request.method));
    }
    Ok(request)
}

/// `headers` with the Host header replaced by the canonical authority the request was
/// checked for (`host`, and `:port` unless it is `default_port`), first.
pub(super) fn with_host(headers: Vec<Header>, host: &Host, port: u16, default_port: u16) -> Vec<Header> {
    let authority = if port == default_port { host.to_string() } else { format!("{host}:{port}") };
    std::iter::once(Header::new("Host", &authority)).chain(headers.into_iter().filter(|h| !h.name.eq_ignore_ascii_case("host"))).collect()
}

/// Why a request body did not reach the upstream whole.
pub(super) enum Sent {
    /// The body carries an override ([`crate::reinterpret`]): answer 400.
    Refused(String),
    /// Reading from the agent or writing upstream failed: answer 502.
    Failed(String),
}

/// Forwards the body of an API request, judging each piece before it is written.
pub(super) fn send_body<R: BufRead, W: Write>(client: &mut R, w: &mut W, req: &Request) -> Result<u64, Sent> {
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
pub(super) fn reply<W: Write>(w: &mut W, status: u16, reason: &str) {
    let _ = w.write_all(&http1::simple_response(status, reason, &format!("{reason}\n"), true));
    let _ = w.flush();
}

/// A denial: `status` with the reason in `X-Aegis-Reason` and in the body.
pub(super) fn deny_reply<W: Write>(w: &mut W, status: u16, reason: &str) {
    let _ = w.write_all(&http1::simple_response(status, reason, &format!("AEGIS denied this request: {reason}\n"), true));
    let _ = w.flush();
}

/// How relaying one upstream response to the agent ended.
pub(super) enum Relayed {
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
pub(super) fn relay_response<R: BufRead, W: Write>(method: &str, up: &mut R, client: &mut W, forward_interim: bool) -> Relayed {
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

/// What is left to do once an upstream response was relayed, or could not be.
pub(super) enum Settled {
    /// The exchange is over and `rec` (bytes and reason filled in) is ready to emit; `next`
    /// says whether the agent's connection may carry another request, `reuse_upstream`
    /// whether the upstream connection may.
    Over { rec: Record, next: Next, reuse_upstream: bool },
    /// `101 Switching Protocols` (only where interim answers are forwarded): the caller
    /// switches protocols, or refuses to.
    Switching(http1::ResponseHead, Record),
}

/// How the end of a relay is answered and recorded, for every shape that relays a
/// response: one that never started is answered `502` here; one cut short, or an agent that
/// left, closes both connections; only a complete response whose end is known keeps them.
pub(super) fn settle<W: Write>(relayed: Relayed, mut rec: Record, client: &mut W) -> Settled {
    let closed = |rec| Settled::Over { rec, next: Next::Close, reuse_upstream: false };
    match relayed {
        Relayed::Done { down, framing, upstream_closes } => {
            rec.down = down;
            let open = framing != Framing::UntilClose;
            Settled::Over { rec, next: if open { Next::Continue } else { Next::Close }, reuse_upstream: open && !upstream_closes }
        }
        Relayed::Switching(resp) => Settled::Switching(resp, rec),
        Relayed::AgentLeft => {
            rec.reason = format!("{}; the agent left before the response", rec.reason);
            closed(rec)
        }
        Relayed::Unusable(reason) => closed(bad_gateway(client, rec, reason)),
        Relayed::CutShort(why) => {
            rec.reason = format!("{}; {why}", rec.reason);
            closed(rec)
        }
    }
}

/// Answers `502` with `reason` (the destination is allowed; reaching it failed) and returns
/// the record, which keeps the decision and now says why.
pub(super) fn bad_gateway<W: Write>(client: &mut W, rec: Record, reason: String) -> Record {
    reply(client, 502, &reason);
    Record { reason, ..rec }
}

pub(super) fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, http1::HttpError> {
    match http1::read_request_head(r, MAX_HEAD)? {
        None => Ok(None),
        Some(h) => http1::validate_request(h).map(Some),
    }
}
