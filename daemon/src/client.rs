//! What the `aegis` client sends and prints.
//!
//! Input: a socket path and a [`Request`]. Output: the daemon's response object
//! ([`send`]), and its rendering for people ([`render`]): `ALLOW: reason (file:line:col)` /
//! `DENY: ...` exactly as `aegisc check` prints them, with the same exit codes (0 allowed,
//! 1 denied, 2 invalid input, 3 no answer). Invariants: one request per connection; a
//! response that is not one JSON object line is a [`ClientError`] (exit 3), never a verdict;
//! a socket that is missing or refuses is retried for a second (a daemon started a moment
//! ago), then reported.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::EXIT_INTERNAL;
use crate::protocol::{MAX_LINE, Request, exit_code_for};

/// Why no response was had. All are exit 3.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to aegisd at {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("talking to aegisd at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("aegisd at {path} closed the connection without answering")]
    NoAnswer { path: PathBuf },
    #[error("aegisd at {path} sent something that is not a JSON response: {why}")]
    BadResponse { path: PathBuf, why: String },
}

/// How long the client waits for an answer (registering a big policy takes a moment).
const TIMEOUT: Duration = Duration::from_secs(60);

/// How long the client keeps trying a socket that is not there yet or refuses: `aegisd &`
/// followed at once by `aegis ...` (a script, a pasted quick start) reaches the daemon
/// before it has bound its socket.
const START_GRACE: Duration = Duration::from_secs(1);

/// Connects, retrying for [`START_GRACE`] while the socket is missing or refuses.
fn connect(socket: &Path) -> Result<UnixStream, ClientError> {
    let deadline = std::time::Instant::now() + START_GRACE;
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => return Err(ClientError::Connect { path: socket.to_path_buf(), source }),
        }
    }
}

/// Sends `req` and returns the response object.
pub fn send(socket: &Path, req: &Request) -> Result<Value, ClientError> {
    let io = |source| ClientError::Io { path: socket.to_path_buf(), source };
    let stream = connect(socket)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let mut reader = BufReader::new(&stream);
    // A refused peer is told so before it writes anything; the write may then fail with
    // EPIPE, and the daemon's explanation is still waiting to be read.
    let wrote = (&stream).write_all(req.to_line().as_bytes());
    let mut line = Vec::new();
    let n = reader.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(io)?;
    if n == 0 {
        wrote.map_err(io)?;
        return Err(ClientError::NoAnswer { path: socket.to_path_buf() });
    }
    let v: Value = serde_json::from_slice(&line)
        .map_err(|e| ClientError::BadResponse { path: socket.to_path_buf(), why: e.to_string() })?;
    if !v.is_object() || v.get("ok").and_then(Value::as_bool).is_none() {
        return Err(ClientError::BadResponse { path: socket.to_path_buf(), why: "no boolean `ok`".into() });
    }
    Ok(v)
}

/// What to print for a response: (stdout, stderr, exit code).
pub fn render(resp: &Value) -> (String, String, u8) {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    if resp.get("ok").and_then(Value::as_bool) != Some(true) {
        let err = resp.get("error");
        let code = s(err.and_then(|e| e.get("code")));
        let mut e = format!("error: {}\n", s(err.and_then(|e| e.get("message"))));
        if let Some(h) = err.and_then(|e| e.get("hint")).and_then(Value::as_str) {
            e.push_str(&format!("  help: {h}\n"));
        }
        e.push_str(&format!("  code: {code}\n"));
        return (String::new(), e, exit_code_for(&code));
    }
    if let Some(verdict) = resp.get("verdict").and_then(Value::as_str) {
        let rule = resp.get("rule").filter(|r| !r.is_null());
        let at = match (rule.and_then(|r| r.get("location")).and_then(Value::as_str), rule) {
            (Some(l), _) => format!(" ({l})"),
            (None, Some(_)) => " (built-in rule)".to_string(),
            (None, None) => String::new(),
        };
        let mut out = format!("{verdict}: {}{at}\n", s(resp.get("reason")));
        for n in resp.get("notes").and_then(Value::as_array).into_iter().flatten() {
            out.push_str(&format!("  note: {}\n", n.as_str().unwrap_or_default()));
        }
        let exit = match verdict {
            "ALLOW" => 0,
            "DENY" => 1,
            _ => EXIT_INTERNAL,
        };
        return (out, String::new(), exit);
    }
    if let Some(name) = resp.get("registered").and_then(Value::as_str) {
        let signed = resp.get("signed_by").and_then(Value::as_str).map(|k| format!(", signed by key {k}")).unwrap_or_default();
        let replaced = if resp.get("replaced").and_then(Value::as_bool) == Some(true) { " (replaced the previous registration)" } else { "" };
        let out = format!(
            "registered agent '{name}' from {} {}{signed}{replaced}\n",
            s(resp.get("from")),
            s(resp.get("path"))
        );
        return (out, String::new(), 0);
    }
    if let Some(agents) = resp.get("agents").and_then(Value::as_array) {
        if agents.is_empty() {
            return ("no agents registered\n".into(), String::new(), 0);
        }
        let mut out = String::new();
        for a in agents {
            let params: Vec<String> = a
                .get("params")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect())
                .unwrap_or_default();
            out.push_str(&format!(
                "{}\t{} {}\t{}{}\n",
                s(a.get("agent")),
                s(a.get("from")),
                s(a.get("path")),
                s(a.get("policy_digest")),
                if params.is_empty() { String::new() } else { format!("\t{}", params.join(" ")) }
            ));
        }
        return (out, String::new(), 0);
    }
    (String::new(), "error: aegisd sent a response this client does not understand\n".into(), EXIT_INTERNAL)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_aegisc_check() {
        let (out, _, code) = render(&json!({"ok":true,"verdict":"DENY","reason":"path '/etc/passwd' matches deny pattern '/etc/passwd'",
            "rule":{"kind":"deny pattern","text":"/etc/passwd","location":"policies/inbox-manager.toml:9:11"},"notes":[]}));
        assert_eq!(out, "DENY: path '/etc/passwd' matches deny pattern '/etc/passwd' (policies/inbox-manager.toml:9:11)\n");
        assert_eq!(code, 1);
        let (out, _, code) = render(&json!({"ok":true,"verdict":"ALLOW","reason":"r","rule":{"kind":"k","text":"t","location":null},"notes":["n"]}));
        assert_eq!(out, "ALLOW: r (built-in rule)\n  note: n\n");
        assert_eq!(code, 0);
        let (_, err, code) = render(&json!({"ok":false,"error":{"code":"aegis::daemon::unknown_agent","message":"no agent 'x' is registered","hint":null}}));
        assert!(err.starts_with("error: no agent 'x' is registered\n"));
        assert_eq!(code, 2);
        let (_, _, code) = render(&json!({"ok":false,"error":{"code":"aegis::daemon::not_permitted","message":"m","hint":null}}));
        assert_eq!(code, 3);
    }
}
