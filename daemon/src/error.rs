//! Typed errors of the daemon. Input: what went wrong while starting ([`StartError`]) or
//! while answering one request ([`RequestError`]). Output: a message that names what was being
//! done and on what, a stable code (`aegis::daemon::*`, or the bundle verifier's own
//! `aegis::bundle::*` / `aegis::key::*` code), a hint where one helps, and the exit code the
//! client reports (2: the request was at fault, 3: the daemon could not answer).
//! Invariant: a request error never ends the daemon; only the connection is closed, and only
//! for errors that leave the byte stream out of step (an over-long line).

use std::path::PathBuf;

/// Exit code of the client when the request (arguments, agent, policy, bundle) is at fault.
pub const EXIT_INVALID: u8 = 2;
/// Exit code of the client when no answer could be had (daemon unreachable, refused, audit).
pub const EXIT_INTERNAL: u8 = 3;

/// Why one request got no verdict. Sent to the peer as `{"ok":false,"error":{...}}`.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request line longer than {limit} bytes; the connection is closed")]
    TooLarge { limit: usize },
    #[error("no agent '{agent}' is registered")]
    UnknownAgent { agent: String, known: Vec<String> },
    #[error("{0}")]
    InvalidQuery(String),
    #[error("`{path}` is not an absolute path: the daemon does not know the client's working directory")]
    RelativePath { path: String },
    #[error("policy {path} is invalid:\n{diagnostics}")]
    InvalidPolicy { path: PathBuf, diagnostics: String },
    #[error("invalid parameter {name}: {why}")]
    InvalidParameter { name: String, why: String },
    #[error("bundle {path} refused: {message}")]
    BundleRefused { path: PathBuf, code: String, message: String, help: Option<String> },
    #[error("bundle {path} refused: aegisd was started without --trust-key, so it cannot verify bundles")]
    NoTrustKey { path: PathBuf },
    #[error("bundle {path} refused: {why}")]
    BadBundleIr { path: PathBuf, why: String },
    #[error("uid {uid} may not {what}")]
    NotPermitted { uid: u32, what: &'static str },
    #[error("aegisd is serving its maximum of {limit} connections; try again later")]
    Busy { limit: usize },
    #[error("cannot append to the audit log, so no answer is given: {0}")]
    Audit(String),
}

impl RequestError {
    /// The stable code a program matches on.
    pub fn code(&self) -> String {
        let c = match self {
            RequestError::Malformed(_) => "malformed_request",
            RequestError::TooLarge { .. } => "request_too_large",
            RequestError::UnknownAgent { .. } => "unknown_agent",
            RequestError::InvalidQuery(_) => "invalid_query",
            RequestError::RelativePath { .. } => "relative_path",
            RequestError::InvalidPolicy { .. } => "invalid_policy",
            RequestError::InvalidParameter { .. } => "invalid_parameter",
            RequestError::BundleRefused { code, .. } if !code.is_empty() => return code.clone(),
            RequestError::BundleRefused { .. } | RequestError::BadBundleIr { .. } => "bundle_refused",
            RequestError::NoTrustKey { .. } => "no_trust_key",
            RequestError::NotPermitted { .. } => "not_permitted",
            RequestError::Busy { .. } => "busy",
            RequestError::Audit(_) => "audit_failed",
        };
        format!("aegis::daemon::{c}")
    }

    /// What to do about it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            RequestError::Malformed(_) => Some(
                "send one JSON object per line, e.g. {\"op\":\"check-exec\",\"agent\":\"A\",\"path\":\"/usr/bin/git\"}; see docs/aegisd.md"
                    .into(),
            ),
            RequestError::TooLarge { .. } => Some("one request is one line of JSON; policies are registered by path, not sent inline".into()),
            RequestError::UnknownAgent { known, .. } if known.is_empty() => {
                Some("no agent is registered yet: send {\"op\":\"register\",\"policy\":\"/abs/path.toml\"} first".into())
            }
            RequestError::UnknownAgent { known, .. } => Some(format!("registered agents: {}", known.join(", "))),
            RequestError::RelativePath { .. } => Some("the `aegis` client makes paths absolute for you".into()),
            RequestError::InvalidPolicy { path, .. } => Some(format!("run `aegisc validate {}` for the full report", path.display())),
            RequestError::BundleRefused { help, .. } => help.clone(),
            RequestError::NoTrustKey { .. } => {
                Some("restart aegisd with --trust-key KEY.pub (or --allow-unsigned, for development only)".into())
            }
            RequestError::NotPermitted { .. } => Some(
                "registering is reserved to root and the daemon's own user; checks are open to every admitted peer".into(),
            ),
            _ => None,
        }
    }

    /// Exit code the client reports for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RequestError::NotPermitted { .. } | RequestError::Busy { .. } | RequestError::Audit(_) => EXIT_INTERNAL,
            _ => EXIT_INVALID,
        }
    }
}

/// Why `aegisd` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("{path} is a socket another daemon is serving; refusing to take it over")]
    InUse { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("unknown group `{0}`: give a group name from /etc/group or a numeric gid")]
    UnknownGroup(String),
    #[error("cannot load trust key: {0}")]
    TrustKey(String),
    #[error("cannot open audit log {path}: {message}")]
    Audit { path: PathBuf, message: String },
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    /// No socket was named, or `AEGIS_DIR` is unsafe to use (the message names the fix).
    #[error("{0}")]
    Location(String),
}

impl StartError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> StartError {
        let path = path.to_path_buf();
        move |source| StartError::Io { action, path, source }
    }
}
