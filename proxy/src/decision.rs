//! The decision endpoint: agent frameworks ask the proxy "may I ...?" before a tool call.
//!
//! Input: the JSON body of `POST /.aegis/v1/check` sent to the proxy itself (origin-form,
//! from inside the sandbox). Output: `(status, JSON body, audit fields)`: 200 with
//! `{"verdict":"ALLOW"|"DENY","reason":..,"rule":{"kind":..,"text":..}|null,"notes":[..]}`,
//! or 400 with `{"error":..}`. Invariants: answers come from the reference
//! evaluator (`aegis-policy`) over the running bundle's policy and launch parameters (the same answers as
//! `aegisc check` and `aegisd`); a question is never a permission: the kernel layers and
//! the proxy still enforce.
//!
//! Questions (`kind`): `api` (`api`, `scope`), `http` (`api`, `method`, `path`), `exec`
//! (`path`), `fs` (`access`: read|write|exec, `path`), `net` (`host`, `port`, optional
//! `protocol`: tcp|udp). Any question may name the program it is for (`exe`, an absolute
//! path); by default it is asked for the program that sent it.

use aegis_policy::eval::{Decision, Query};
use aegis_policy::query;
use serde_json::{Value, json};

use crate::gate::Gate;

pub const PATH: &str = "/.aegis/v1/check";

/// What the audit record says about a question.
pub struct Asked {
    pub kind: String,
    pub target: String,
}

/// What the audit record says was asked: the question's `kind` and its target in words.
fn asked(kind: &str, q: &Query) -> Asked {
    let target = match q {
        Query::ApiScope { api, scope } => format!("{api} scope {scope}"),
        Query::ApiHttp { api, method, path } => format!("{api} {method} {}", path.split('?').next().unwrap_or("")),
        Query::Fs { access, path } => format!("{} {path}", access.word()),
        Query::Net { host, port, .. } => format!("{host}:{port}"),
        Query::Unix { path } => format!("unix {path}"),
    };
    Asked { kind: kind.to_string(), target }
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
    let q = query::from_json(&v).map_err(|e| (400, json!({"error": e.0})))?;
    let asked = asked(v.get("kind").and_then(Value::as_str).unwrap_or_default(), &q);
    let exe = match v.get("exe") {
        None => asker,
        Some(Value::String(e)) if e.starts_with('/') => Some(e.as_str()),
        Some(_) => return Err((400, json!({"error": "`exe` must be an absolute path"}))),
    };
    let d = gate.evaluate_for(&q, exe).map_err(|e| (400, json!({"error": e})))?;
    Ok((decision_json(&d), asked, d))
}
