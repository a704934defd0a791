//! Learn mode, the runtime's side: what a learning run observed, kept in memory for
//! `aegis learn` (which turns it into a policy).
//!
//! Input: every traced file access ([`crate::unotify::trace`], through [`trace::Observer`]),
//! every refusal the supervisor makes or explains (seccomp, unix sockets, filesystem; before
//! the audit records aggregate them), and every request the proxy decides (its learn mode
//! admits what the policy does not grant and says so). Output: [`Observations`], distinct
//! targets with their counts. Invariants: bounded — at most [`MAX_DISTINCT`] distinct entries
//! of each kind are kept; beyond that further ones are counted in `dropped` and the proposal
//! says it is incomplete; nothing here decides anything (the learning run's own policy and
//! the kernel do).

use std::collections::BTreeMap;
use std::sync::Mutex;

use aegis_audit::{Access, Event};

use crate::unotify::Refusal;
use crate::unotify::trace::{self, Op};

/// Distinct entries kept per kind.
pub const MAX_DISTINCT: usize = 200_000;

/// One file access as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileUse {
    pub op: Op,
    /// As the agent named it (absolute, its view).
    pub path: String,
    /// The file it named, symlinks resolved, when different.
    pub resolved: Option<String>,
    /// The learning policy allowed it.
    pub allowed: bool,
    pub count: u64,
}

/// A refusal of the learning run (what the learning policy or the guard rails refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub layer: String,
    pub target: String,
    pub access: Option<Access>,
    /// What the agent got (for `denial` records): an errno, or "allowed in learn mode ...".
    pub result: Option<String>,
    pub rule: Option<String>,
    pub reason: String,
    pub count: u64,
}

/// One proxy decision (a connection, or a request inside one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Request {
    /// `tunnel`, `inspect`, `forward`, `tcp`, ...
    pub mode: String,
    pub host: String,
    pub port: u16,
    pub method: Option<String>,
    pub path: Option<String>,
    /// Allowed by the proxy (in learn mode: everything but explicit denials and special
    /// addresses).
    pub allowed: bool,
    pub reason: String,
    pub exe: Option<String>,
}

/// Everything a learning run observed.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    pub files: Vec<FileUse>,
    pub refused: Vec<Refused>,
    pub requests: Vec<(Request, u64)>,
    /// Distinct entries not kept (over [`MAX_DISTINCT`]).
    pub dropped: u64,
}

#[derive(Default)]
struct State {
    files: BTreeMap<(Op, String), FileUse>,
    refused: BTreeMap<(String, String), Refused>,
    requests: BTreeMap<Request, u64>,
    dropped: u64,
}

/// The observer of one learning run (shared by the tracer, the supervisor's handlers and the
/// proxy), and how the run behaves.
#[derive(Default)]
pub struct Learn {
    state: Mutex<State>,
    /// The proxy terminates TLS to port-443 hosts no API declares, to learn each request's
    /// method and path (`aegis learn --no-inspect` turns it off).
    pub inspect: bool,
}

impl std::fmt::Debug for Learn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Learn")
    }
}

impl Learn {
    pub fn new(inspect: bool) -> Learn {
        Learn { inspect, ..Learn::default() }
    }

    /// A refusal, as a handler made it.
    pub fn refusal(&self, r: &Refusal) {
        let Ok(mut s) = self.state.lock() else { return };
        let key = (r.subject.to_string(), r.target.clone());
        if let Some(x) = s.refused.get_mut(&key) {
            x.count += 1;
            return;
        }
        if s.refused.len() >= MAX_DISTINCT {
            s.dropped += 1;
            return;
        }
        let v = Refused {
            layer: r.subject.to_string(),
            target: r.target.clone(),
            access: r.denial.as_ref().map(|d| d.access.clone()),
            result: r.denial.as_ref().map(|d| d.result.clone()),
            rule: r.rule.clone(),
            reason: r.reason.clone(),
            count: 1,
        };
        s.refused.insert(key, v);
    }

    /// A proxy record (`proxy_request` events; others are ignored).
    pub fn proxy_event(&self, e: &Event) {
        let Event::ProxyRequest { mode, host, port, method, path, decision, reason, exe, .. } = e else { return };
        let r = Request {
            mode: mode.clone(),
            host: host.clone(),
            port: *port,
            method: method.clone(),
            path: path.clone(),
            allowed: *decision == aegis_audit::Verdict::Allow,
            reason: reason.clone(),
            exe: exe.clone(),
        };
        let Ok(mut s) = self.state.lock() else { return };
        if let Some(n) = s.requests.get_mut(&r) {
            *n += 1;
        } else if s.requests.len() >= MAX_DISTINCT {
            s.dropped += 1;
        } else {
            s.requests.insert(r, 1);
        }
    }

    /// What was observed so far.
    pub fn observations(&self) -> Observations {
        let Ok(s) = self.state.lock() else { return Observations::default() };
        Observations {
            files: s.files.values().cloned().collect(),
            refused: s.refused.values().cloned().collect(),
            requests: s.requests.iter().map(|(r, n)| (r.clone(), *n)).collect(),
            dropped: s.dropped,
        }
    }
}

impl trace::Observer for Learn {
    fn file(&self, op: Op, path: &str, resolved: Option<&str>, allowed: bool) {
        let Ok(mut s) = self.state.lock() else { return };
        let key = (op, path.to_string());
        if let Some(f) = s.files.get_mut(&key) {
            f.count += 1;
            f.allowed &= allowed;
            return;
        }
        if s.files.len() >= MAX_DISTINCT {
            s.dropped += 1;
            return;
        }
        let f = FileUse { op, path: path.to_string(), resolved: resolved.map(str::to_string), allowed, count: 1 };
        s.files.insert(key, f);
    }
}
