//! The wire protocol: one JSON object per line each way over a Unix stream socket.
//!
//! Input: request lines (`{"op":"register"|"check-fs"|"check-exec"|"check-net"|"check-api"|
//! "list", ...}`; unknown fields and unknown ops are errors, never ignored). Output: the typed
//! [`Request`], the evaluator [`Query`] it asks (built by `aegisc check`'s own parser,
//! [`aegis_policy::query::parse_query`], so both front ends accept and reject the same
//! questions with the same messages), and response lines ([`error_response`], and the
//! `ok:true` objects built in [`crate::server`]). Invariants: a response is exactly one line
//! (serde_json never emits a raw newline); the `rule` object of a verdict has the same shape
//! as `aegisc check --format json` (`kind`, `text`, `location`).

use std::collections::BTreeMap;

use aegis_policy::query::parse_query;
use aegis_policy::eval::Query;
use serde::{Deserialize, Serialize};

use crate::error::RequestError;

/// Longest request line accepted (bytes, newline excluded). A register request is a path,
/// a check is a few hundred bytes: 1 MiB is generous and bounds memory per connection.
pub const MAX_LINE: usize = 1 << 20;

/// One request, as sent on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Compile a policy file, or verify a bundle directory, and register it under its agent
    /// name (replacing an earlier registration of that name). Exactly one of the two paths.
    Register {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bundle: Option<String>,
        /// Launch parameter values (`WORKSPACE` → `/home/me/repo`) every query is answered with.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
    },
    CheckFs { agent: String, access: String, path: String },
    CheckExec { agent: String, path: String },
    CheckNet {
        agent: String,
        host: String,
        port: u64,
        /// `tcp` (default) or `udp`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol: Option<String>,
    },
    /// Either `scope`, or `method` and `path`.
    CheckApi {
        agent: String,
        api: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    List {},
}

/// What a register request points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterSource {
    Policy(String),
    Bundle(String),
}

impl Request {
    /// Parses one request line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        let text = std::str::from_utf8(line).map_err(|e| RequestError::Malformed(format!("not UTF-8 ({e})")))?;
        serde_json::from_str(text).map_err(|e| RequestError::Malformed(e.to_string()))
    }

    /// The one line to send (newline included).
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// For `check-*`: the agent asked about and the evaluator query.
    pub fn query(&self) -> Option<Result<(&str, Query), RequestError>> {
        let words: Vec<String> = match self {
            Request::CheckFs { access, path, .. } => vec!["fs".into(), access.clone(), path.clone()],
            Request::CheckExec { path, .. } => vec!["exec".into(), path.clone()],
            Request::CheckNet { host, port, protocol, .. } => {
                let mut w = vec!["net".into(), host.clone(), port.to_string()];
                w.extend(protocol.clone());
                w
            }
            Request::CheckApi { api, scope, method, path, .. } => match (scope, method, path) {
                (Some(s), None, None) => vec!["api".into(), api.clone(), s.clone()],
                (None, Some(m), Some(p)) => vec!["api".into(), api.clone(), m.clone(), p.clone()],
                _ => {
                    return Some(Err(RequestError::Malformed(
                        "check-api takes either `scope`, or `method` and `path`".into(),
                    )));
                }
            },
            Request::Register { .. } | Request::List {} => return None,
        };
        let agent = match self {
            Request::CheckFs { agent, .. }
            | Request::CheckExec { agent, .. }
            | Request::CheckNet { agent, .. }
            | Request::CheckApi { agent, .. } => agent.as_str(),
            Request::Register { .. } | Request::List {} => return None,
        };
        Some(parse_query(&words).map(|q| (agent, q)).map_err(|e| RequestError::InvalidQuery(e.0)))
    }

    /// For `register`: which file or directory, or why the request is malformed.
    pub fn register_source(&self) -> Option<Result<RegisterSource, RequestError>> {
        match self {
            Request::Register { policy, bundle, .. } => Some(match (policy, bundle) {
                (Some(p), None) => Ok(RegisterSource::Policy(p.clone())),
                (None, Some(b)) => Ok(RegisterSource::Bundle(b.clone())),
                _ => Err(RequestError::Malformed("register takes exactly one of `policy` and `bundle`".into())),
            }),
            _ => None,
        }
    }
}

/// The error line for `e`: `{"ok":false,"error":{"code","message","hint"}}`.
pub fn error_response(e: &RequestError) -> serde_json::Value {
    serde_json::json!({
        "ok": false,
        "error": { "code": e.code(), "message": e.to_string(), "hint": e.hint() },
    })
}

/// Exit code for an error code received from the daemon (the client side of
/// [`RequestError::exit_code`]).
pub fn exit_code_for(code: &str) -> u8 {
    use crate::error::{EXIT_INTERNAL, EXIT_INVALID};
    match code {
        "aegis::daemon::not_permitted" | "aegis::daemon::busy" | "aegis::daemon::audit_failed" => EXIT_INTERNAL,
        _ => EXIT_INVALID,
    }
}

/// One response as a line (newline included).
pub fn to_line(v: &serde_json::Value) -> Vec<u8> {
    let mut s = serde_json::to_vec(v).unwrap_or_else(|_| br#"{"ok":false}"#.to_vec());
    s.push(b'\n');
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn parses_every_op_and_refuses_unknown_fields() {
        let r = Request::parse(br#"{"op":"check-net","agent":"a","host":"example.com","port":443}"#).unwrap();
        assert!(matches!(r, Request::CheckNet { port: 443, .. }));
        assert_eq!(Request::parse(br#"{"op":"list"}"#).unwrap(), Request::List {});
        for bad in [
            &br#"{"op":"list","x":1}"#[..],
            br#"{"op":"check-exec","agent":"a","path":"/x","extra":true}"#,
            br#"{"op":"nuke"}"#,
            br#"{"agent":"a"}"#,
            br#"[1,2]"#,
            b"\xff\xfe",
            br#"{"op":"check-net","agent":"a","host":"h","port":-1}"#,
        ] {
            let e = Request::parse(bad).unwrap_err();
            assert_eq!(e.code(), "aegis::daemon::malformed_request", "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn queries_are_parsed_like_aegisc_check() {
        let r = Request::parse(br#"{"op":"check-fs","agent":"a","access":"delete","path":"/x"}"#).unwrap();
        let e = r.query().unwrap().unwrap_err();
        assert!(e.to_string().contains("unknown access `delete`"), "{e}");
        let r = Request::parse(br#"{"op":"check-net","agent":"a","host":"h","port":70000}"#).unwrap();
        assert!(r.query().unwrap().unwrap_err().to_string().contains("not a port"));
        let r = Request::parse(br#"{"op":"check-api","agent":"a","api":"gmail","scope":"s","method":"GET"}"#).unwrap();
        assert_eq!(r.query().unwrap().unwrap_err().code(), "aegis::daemon::malformed_request");
    }
}
