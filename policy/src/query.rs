//! The query grammar: how a question about a policy is written, by a person or a program.
//!
//! Input: the words of `aegisc check POLICY QUERY...` and of an `aegisd` request
//! ([`parse_query`]), or the JSON object the proxy's decision endpoint takes
//! ([`from_json`]). Output: one evaluator [`Query`], or a [`QueryError`] saying what
//! is wrong. Invariant: every front end builds its [`Query`] here, so a question one of them
//! accepts means the same thing to the others.

use serde_json::Value;

use crate::eval::{FsQuery, Query, QueryError};
use crate::ir::Protocol;

pub const USAGE: &str = "queries: fs read|write|exec PATH | exec PATH | net HOST PORT [tcp|udp] | unix PATH | api NAME SCOPE | api NAME METHOD PATH";

pub fn parse_query(words: &[String]) -> Result<Query, QueryError> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let fs = |a: &str| match a {
        "read" => Ok(FsQuery::Read),
        "write" => Ok(FsQuery::Write),
        "exec" => Ok(FsQuery::Exec),
        other => Err(QueryError(format!("unknown access `{other}`: use read, write or exec"))),
    };
    match w.as_slice() {
        ["fs", access, path] => Ok(Query::Fs { access: fs(access)?, path: path.to_string() }),
        ["exec", path] => Ok(Query::Fs { access: FsQuery::Exec, path: path.to_string() }),
        ["net", host, port, rest @ ..] => {
            let port: u16 = port.parse().map_err(|_| QueryError(format!("`{port}` is not a port (1-65535)")))?;
            let protocol = match rest {
                [] | ["tcp"] => Protocol::Tcp,
                ["udp"] => Protocol::Udp,
                other => return Err(QueryError(format!("unexpected `{}`: the protocol is tcp or udp", other.join(" ")))),
            };
            Ok(Query::Net { host: host.to_string(), port, protocol })
        }
        ["unix", path] => Ok(Query::Unix { path: path.to_string() }),
        ["api", name, scope] => Ok(Query::ApiScope { api: name.to_string(), scope: scope.to_string() }),
        ["api", name, method, path] => Ok(Query::ApiHttp { api: name.to_string(), method: method.to_string(), path: path.to_string() }),
        _ => Err(QueryError(format!("cannot understand the query `{}`; {USAGE}", w.join(" ")))),
    }
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a str, QueryError> {
    v.get(k).and_then(Value::as_str).ok_or_else(|| QueryError(format!("missing string field `{k}`")))
}

/// The question in a JSON object: `{"kind": "api", "api", "scope"}`, `{"kind": "http", "api",
/// "method", "path"}`, `{"kind": "fs", "access": "read"|"write"|"exec", "path"}`,
/// `{"kind": "exec", "path"}`, `{"kind": "net", "host", "port", "protocol"?: "tcp"|"udp"}`.
pub fn from_json(v: &Value) -> Result<Query, QueryError> {
    let kind = field(v, "kind")?;
    Ok(match kind {
        "api" => Query::ApiScope { api: field(v, "api")?.into(), scope: field(v, "scope")?.into() },
        "http" => Query::ApiHttp { api: field(v, "api")?.into(), method: field(v, "method")?.into(), path: field(v, "path")?.into() },
        "exec" | "fs" => {
            let access = if kind == "exec" {
                FsQuery::Exec
            } else {
                match field(v, "access")? {
                    "read" => FsQuery::Read,
                    "write" => FsQuery::Write,
                    "exec" => FsQuery::Exec,
                    other => return Err(QueryError(format!("`access` must be read, write or exec, not `{other}`"))),
                }
            };
            Query::Fs { access, path: field(v, "path")?.into() }
        }
        "net" => {
            let host = field(v, "host")?;
            let port = v
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| QueryError("missing or invalid `port` (1-65535)".into()))?;
            let protocol = match v.get("protocol").and_then(Value::as_str).unwrap_or("tcp") {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(QueryError(format!("`protocol` must be tcp or udp, not `{other}`"))),
            };
            Query::Net { host: host.into(), port, protocol }
        }
        other => return Err(QueryError(format!("unknown kind `{other}` (api, http, exec, fs, net)"))),
    })
}
