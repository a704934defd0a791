//! The decision endpoint: agent frameworks ask the proxy "may I ...?" before a tool call.
//!
//! Input: the JSON body of `POST /.aegis/v1/check` sent to the proxy itself (origin-form,
//! from inside the sandbox). Output: `(status, JSON body, audit fields)`: 200 with
//! `{"verdict":"ALLOW"|"DENY","reason":..,"rule":{"kind":..,"text":..}|null,"notes":[..]}`,
//! or 400 with `{"error":..}`. Invariants: answers come from the compiler's reference
//! evaluator over the running bundle's policy and launch parameters (the same answers as
//! `aegisc check` and `aegisd`); a question is never a permission: the kernel layers and
//! the proxy still enforce.
//!
//! Questions (`kind`): `api` (`api`, `scope`), `http` (`api`, `method`, `path`), `exec`
//! (`path`), `fs` (`access`: read|write|exec, `path`), `net` (`host`, `port`, optional
//! `protocol`: tcp|udp). Any question may name the program it is for (`exe`, an absolute
//! path); by default it is asked for the program that sent it.

use aegis_compiler::eval::{Decision, FsQuery, Query};
use aegis_compiler::ir::net::Protocol;
use serde_json::{Value, json};

use crate::gate::Gate;

pub const PATH: &str = "/.aegis/v1/check";

/// What the audit record says about a question.
pub struct Asked {
    pub kind: String,
    pub target: String,
}

fn field<'a>(v: &'a Value, k: &str) -> Result<&'a str, String> {
    v.get(k).and_then(Value::as_str).ok_or_else(|| format!("missing string field `{k}`"))
}

fn query(v: &Value) -> Result<(Query, Asked), String> {
    let kind = field(v, "kind")?;
    let asked = |target: String| Asked { kind: kind.to_string(), target };
    Ok(match kind {
        "api" => {
            let (api, scope) = (field(v, "api")?, field(v, "scope")?);
            (
                Query::ApiScope {
                    api: api.into(),
                    scope: scope.into(),
                },
                asked(format!("{api} scope {scope}")),
            )
        }
        "http" => {
            let (api, method, path) = (field(v, "api")?, field(v, "method")?, field(v, "path")?);
            (
                Query::ApiHttp {
                    api: api.into(),
                    method: method.into(),
                    path: path.into(),
                },
                asked(format!("{api} {method} {}", path.split('?').next().unwrap_or(""))),
            )
        }
        "exec" | "fs" => {
            let access = if kind == "exec" {
                FsQuery::Exec
            } else {
                match field(v, "access")? {
                    "read" => FsQuery::Read,
                    "write" => FsQuery::Write,
                    "exec" => FsQuery::Exec,
                    other => return Err(format!("`access` must be read, write or exec, not `{other}`")),
                }
            };
            let path = field(v, "path")?;
            (
                Query::Fs {
                    access,
                    path: path.into(),
                },
                asked(format!("{} {path}", access.word())),
            )
        }
        "net" => {
            let host = field(v, "host")?;
            let port = v
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or("missing or invalid `port` (1-65535)")?;
            let protocol = match v.get("protocol").and_then(Value::as_str).unwrap_or("tcp") {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(format!("`protocol` must be tcp or udp, not `{other}`")),
            };
            (Query::Net { host: host.into(), port, protocol }, asked(format!("{host}:{port}")))
        }
        other => return Err(format!("unknown kind `{other}` (api, http, exec, fs, net)")),
    })
}

fn decision_json(d: &Decision) -> Value {
    json!({
        "verdict": d.verdict.to_string(),
        "reason": d.reason,
        "rule": d.rule.as_ref().map(|r| json!({"kind": r.kind, "text": r.text})),
        "notes": d.notes,
    })
}

/// Answers one question, for the program named by its `exe` field or else for `asker`, the
/// program that asked (grants that name programs apply only to them). `Err((status,
/// body))` for malformed questions.
pub fn answer(gate: &Gate, body: &[u8], asker: Option<&str>) -> Result<(Value, Asked, Decision), (u16, Value)> {
    let v: Value = serde_json::from_slice(body).map_err(|e| (400, json!({"error": format!("body is not JSON: {e}")})))?;
    let (q, asked) = query(&v).map_err(|e| (400, json!({"error": e})))?;
    let exe = match v.get("exe") {
        None => asker,
        Some(Value::String(e)) if e.starts_with('/') => Some(e.as_str()),
        Some(_) => return Err((400, json!({"error": "`exe` must be an absolute path"}))),
    };
    let d = gate.evaluate_for(&q, exe).map_err(|e| (400, json!({"error": e})))?;
    Ok((decision_json(&d), asked, d))
}
