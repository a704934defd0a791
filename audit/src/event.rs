//! The events an audit record carries. Input: what an AEGIS component observed or decided;
//! output: a serde value tagged by `kind` (snake_case) that is the `event` object of one record.
//! Invariants: every variant denies unknown fields, so the verifier's typed parse rejects any
//! edit that adds, renames or retypes a field; `checkpoint` and `tail_repaired` are written by
//! the log itself and refused by [`crate::AuditWriter::append`]. To add an event kind, add a
//! variant here (and a row to the table in `docs/audit.md`); older verifiers reject logs that
//! contain kinds they do not know, on purpose.

use serde::{Deserialize, Serialize};

/// One event. Serialised as `{"kind":"<snake_case variant>", ...fields}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Event {
    /// The bundle signature and digests verified.
    BundleVerified {
        /// Bundle path as given to the runtime.
        path: String,
        /// Hex key id (minisign key number) of the signing key.
        key_id: String,
    },
    /// The bundle was refused; the agent was not started.
    BundleRefused {
        /// Bundle path as given to the runtime.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// An unsigned bundle was accepted because the operator asked for it explicitly.
    UnsignedBundleAllowed {
        /// Bundle path as given to the runtime.
        path: String,
        /// The flag or setting that allowed it.
        reason: String,
    },
    /// What each enforcement layer actually achieved on this host.
    EnforcementReport {
        /// One entry per layer, in the order they were applied.
        layers: Vec<LayerReport>,
        /// Landlock ABI version of the running kernel (`None`: Landlock unavailable).
        landlock_abi: Option<u32>,
        /// `v2`, `hybrid`, `v1` or `none`.
        cgroup_mode: String,
        /// Who the agent runs as and who launched it (absent in logs of older runtimes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<AgentIdentity>,
    },
    /// The agent process was started.
    AgentStarted {
        /// argv of the agent.
        command: Vec<String>,
        /// Its pid (in the supervisor's pid namespace).
        pid: u32,
        /// Who the agent runs as and who launched it (absent in logs of older runtimes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<AgentIdentity>,
    },
    /// A policy decision taken by an AEGIS component (proxy, API check, supervisor).
    Decision {
        /// Which component decided (`proxy`, `supervisor`, ...).
        component: String,
        /// What kind of access: `net`, `proxy`, `api`, `fs`, `exec`, ...
        subject: String,
        /// What was accessed (host:port, URL, path, API scope).
        target: String,
        /// The verdict.
        decision: Verdict,
        /// The policy rule that decided (`None`: default deny).
        rule: Option<String>,
        /// Human-readable reason.
        reason: String,
    },
    /// One decision of the egress proxy: a tunnel (CONNECT), an inspected HTTP request, a
    /// plain-HTTP forward, or a question to the decision endpoint.
    ProxyRequest {
        /// `tunnel`, `inspect`, `checked` (a tunnel terminated to rule out domain fronting),
        /// `forward` (plain HTTP), `tcp` (transparent forward) or `decision`.
        mode: String,
        /// Destination host as the agent named it (normalised: lower case, IPs canonical).
        host: String,
        /// Destination port.
        port: u16,
        /// HTTP method (`None` for tunnels).
        method: Option<String>,
        /// Request path without the query (`None` for tunnels).
        path: Option<String>,
        /// The verdict.
        decision: Verdict,
        /// The policy rule that decided (`None`: default deny or a protocol check).
        rule: Option<String>,
        /// Human-readable reason.
        reason: String,
        /// Bytes sent upstream (request body or tunnel payload).
        bytes_up: u64,
        /// Bytes received from upstream.
        bytes_down: u64,
        /// The requesting executable, when it could be determined from `/proc`.
        exe: Option<String>,
        /// How many decisions this record stands for, at least 1: more than 1 when the proxy
        /// summarises repeats of one key (`count` of them, "N more like ..." in `reason`).
        /// Written only when it is not 1 (and 1 when absent, as in logs of older runtimes).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        count: u64,
    },
    /// A denial observed from the kernel (seccomp, Landlock audit, nftables counters).
    KernelDenial {
        /// `seccomp`, `landlock`, `nftables`, ...
        layer: String,
        /// What was denied.
        detail: String,
        /// How many denials this record summarises (rate-limited reporting), at least 1.
        count: u64,
    },
    /// A denial the agent met, readable and structured: what was tried ([`Access`], which
    /// `aegis why` asks the policy about again), what the agent got, and why. Written by the
    /// supervisor for the denials it answers or observes (seccomp denials it answers for the
    /// kernel, would-be filesystem denials of the tracing mode); aggregated at the source
    /// (the first of a target at once with `count` 1, repeats in one record per window).
    Denial {
        /// The layer that refused: `seccomp`, `landlock`, `mounts`, `nftables`, ...
        layer: String,
        /// What was tried, in words: `ptrace(PTRACE_ATTACH, 4242, 0, 0)`, `read /etc/shadow`.
        target: String,
        /// What was tried, structured.
        access: Access,
        /// What the agent got: an errno name (`EPERM`, `ENOENT`, ...).
        result: String,
        /// The policy rule that decided (`None`: default deny or built-in hardening).
        rule: Option<String>,
        /// Why, in words.
        reason: String,
        /// How many denials this record stands for (at least 1).
        count: u64,
        /// `kernel`: the kernel refused (the supervisor answered for it or read its report);
        /// `explanation`: the supervisor's account of a call it saw before the kernel decided
        /// (tracing mode): accurate unless the agent raced it, and never what enforces.
        source: String,
    },
    /// A resource limit was hit.
    Resource {
        /// Which limit.
        limit: ResourceLimit,
        /// Details (cgroup path, values).
        detail: String,
    },
    /// The agent exited.
    AgentExited {
        /// The agent's pid, as in its `agent_started` record (pairs the two: a started run
        /// without its exit record is reported by the verifier).
        pid: u32,
        /// Exit status if it exited normally.
        status: Option<i32>,
        /// Terminating signal if it was killed.
        signal: Option<i32>,
        /// User CPU time in microseconds.
        cpu_user_us: u64,
        /// System CPU time in microseconds.
        cpu_sys_us: u64,
        /// Peak memory of the agent's cgroup in bytes, if known.
        peak_memory_bytes: Option<u64>,
    },
    /// `count` further occurrences of exactly `event` since its last record: repeats that
    /// reach the runtime's sink within about a second of each other are counted, not written
    /// one by one (as kernel denials are), so an agent cannot grow the log by asking the same
    /// thing in a loop.
    Repeated {
        /// How many further identical events (at least 1).
        count: u64,
        /// The event that repeated (never `repeated`, `checkpoint` or `tail_repaired`).
        event: Box<Event>,
    },
    /// Free-form note from a component (for example the supervisor shutting down).
    Note {
        /// Component that wrote it.
        component: String,
        /// The message.
        message: String,
    },
    /// Written by the log itself: a torn (incomplete) last line left by a crashed writer was
    /// cut off before this record was appended.
    TailRepaired {
        /// Byte offset where the torn bytes started (= where this record starts).
        offset: u64,
        /// How many bytes were dropped.
        bytes: u64,
        /// Hex SHA-256 of the dropped bytes.
        sha256: String,
    },
    /// Written by the log itself: a signed checkpoint over all records before this one.
    Checkpoint(CheckpointEvent),
}

/// The fields of a `checkpoint` event; see `docs/audit.md` for the signed body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEvent {
    /// Number of records covered (= this record's `seq`).
    pub records: u64,
    /// Number of log bytes covered (= this record's byte offset).
    pub bytes: u64,
    /// Hex RFC 6962 Merkle tree hash over the record hashes of records `0..records`.
    pub root: String,
    /// Hex roots of the perfect subtrees of that tree, largest first (lets the next writer
    /// extend the tree without re-reading the log; checked by the verifier).
    pub frontier: Vec<String>,
    /// Base64 minisign signature line (algorithm `ED`, key id, signature of the body).
    pub sig: String,
    /// Base64 minisign global signature (signature over `sig || trusted comment`).
    pub global_sig: String,
}

/// Who an agent runs as (the same ids inside its user namespace and on the host) and who
/// launched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups the agent holds.
    pub groups: Vec<u32>,
    /// Name of `uid` on the host, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Name of `gid` on the host, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The uid `aegis-exec` ran as.
    pub launched_by_uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launched_by: Option<String>,
    /// `SUDO_UID` when root was reached through sudo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_uid: Option<u32>,
}

/// What an agent tried, in a form a policy can be asked about again (`aegis why`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Access {
    /// A system call, as the seccomp filter saw it.
    Syscall {
        /// Its name on `arch`.
        name: String,
        /// `x86_64` or `aarch64`.
        arch: String,
        /// The six argument registers.
        args: Vec<u64>,
    },
    /// A file access: `op` is `read`, `write`, `exec`, `create`, `remove`, `rename`, `link`
    /// or `stat`; `path` absolute, as the agent named it (symlinks resolved where they could be).
    File { op: String, path: String },
    /// A connection or datagram to `address` (an IP address or a host name) and `port`.
    Connect { address: String, port: u16, protocol: String },
    /// A connection to the pathname unix socket at `path`.
    Unix { path: String },
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Syscall { name, .. } => write!(f, "syscall {name}"),
            Access::File { op, path } => write!(f, "{op} {path}"),
            Access::Connect { address, port, protocol } if address.contains(':') => write!(f, "connect [{address}]:{port}/{protocol}"),
            Access::Connect { address, port, protocol } => write!(f, "connect {address}:{port}/{protocol}"),
            Access::Unix { path } => write!(f, "connect unix {path}"),
        }
    }
}

/// Result of one enforcement layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerReport {
    /// `seccomp`, `landlock`, `cgroup`, `nftables`, `mounts`, `namespaces`, ...
    pub layer: String,
    /// What was achieved.
    pub status: EnforcementStatus,
    /// Details (what is missing when partial).
    pub detail: String,
}

/// How completely a layer is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforcementStatus {
    /// Everything the policy asked for.
    Fully,
    /// Some of it (the detail says what not).
    Partially,
    /// Nothing.
    NotEnforced,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// A resource limit that was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceLimit {
    /// The OOM killer killed a process of the agent.
    OomKill,
    /// The pids limit refused a fork.
    PidsLimit,
    /// The wall-clock limit was reached.
    WallTime,
    /// The run's audit budget (bytes of records) was used up; the agent was stopped.
    AuditBudget,
}

impl Event {
    /// The `kind` tag as written in the log.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::BundleVerified { .. } => "bundle_verified",
            Event::BundleRefused { .. } => "bundle_refused",
            Event::UnsignedBundleAllowed { .. } => "unsigned_bundle_allowed",
            Event::EnforcementReport { .. } => "enforcement_report",
            Event::AgentStarted { .. } => "agent_started",
            Event::Decision { .. } => "decision",
            Event::ProxyRequest { .. } => "proxy_request",
            Event::KernelDenial { .. } => "kernel_denial",
            Event::Denial { .. } => "denial",
            Event::Resource { .. } => "resource",
            Event::AgentExited { .. } => "agent_exited",
            Event::Repeated { .. } => "repeated",
            Event::Note { .. } => "note",
            Event::TailRepaired { .. } => "tail_repaired",
            Event::Checkpoint(_) => "checkpoint",
        }
    }

    /// The verdict, for decision events (and repeats of them).
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            Event::Decision { decision, .. } | Event::ProxyRequest { decision, .. } => Some(*decision),
            Event::Denial { .. } => Some(Verdict::Deny),
            Event::Repeated { event, .. } => event.verdict(),
            _ => None,
        }
    }

    /// The event as the writer stores it: every string capped as [`MAX_FIELD_BYTES`] says.
    /// For producers that keep or compare events before they are written (the runtime's
    /// aggregation of repeats), so they hold what the log will hold.
    pub fn into_capped(self) -> Event {
        let Ok(mut v) = serde_json::to_value(&self) else {
            return self;
        };
        if !cap_value(&mut v) {
            return self;
        }
        serde_json::from_value(v).unwrap_or(self)
    }

    /// Whether only the log itself may write this event (see [`crate::AuditWriter::append`]);
    /// a `repeated` record may not wrap one of these, nor another `repeated`.
    pub(crate) fn is_log_internal(&self) -> bool {
        matches!(self, Event::Checkpoint(_) | Event::TailRepaired { .. })
    }

    /// Why this event may not be written as it is, if it may not: a `repeated` record must
    /// count at least one repeat of an ordinary event.
    pub(crate) fn shape_error(&self) -> Option<&'static str> {
        match self {
            Event::Repeated { count: 0, .. } => Some("a `repeated` record counts at least 1 repeat"),
            Event::ProxyRequest { count: 0, .. } => Some("a `proxy_request` record stands for at least 1 decision"),
            Event::Repeated { event, .. } if event.is_log_internal() || matches!(**event, Event::Repeated { .. }) => {
                Some("a `repeated` record wraps an ordinary event (not repeated, checkpoint or tail_repaired)")
            }
            _ => None,
        }
    }
}

fn one() -> u64 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_one(n: &u64) -> bool {
    *n == 1
}

/// Longest string, in bytes, that a record stores. Any longer string in an event (a 60 KB
/// path in a proxy request, an argument of the agent's command) is stored as its first
/// bytes (cut at a character boundary) followed by [`cut_marker`], what was cut and the
/// SHA-256 of the whole value, this many bytes in all: so no producer can make one record
/// large, a known value can still be matched, and capping twice (a producer that caps
/// before the writer does) changes nothing, the hash stays the whole value's. Applied by the
/// writer to every event, in one place.
pub const MAX_FIELD_BYTES: usize = 1024;

/// What follows the kept prefix of a capped string: `…[cut: <total length> bytes, sha256
/// <hex of the whole value>]`.
pub fn cut_marker(whole: &str) -> String {
    use sha2::Digest as _;
    format!("…[cut: {} bytes, sha256 {}]", whole.len(), hex::encode(sha2::Sha256::digest(whole.as_bytes())))
}

/// Caps `s` in place as [`MAX_FIELD_BYTES`] says; true if it was longer. The result is at
/// most [`MAX_FIELD_BYTES`] long, so capping it again leaves it as it is.
pub fn cap_string(s: &mut String) -> bool {
    if s.len() <= MAX_FIELD_BYTES {
        return false;
    }
    let marker = cut_marker(s);
    let mut end = MAX_FIELD_BYTES.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&marker);
    true
}

/// Caps every string in a serialised event (object keys are the event's own field names and
/// short); true if anything changed.
pub(crate) fn cap_value(v: &mut serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => cap_string(s),
        serde_json::Value::Array(a) => a.iter_mut().fold(false, |changed, x| cap_value(x) | changed),
        serde_json::Value::Object(o) => o.values_mut().fold(false, |changed, x| cap_value(x) | changed),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_tag_matches_serialisation() {
        let ev = Event::Resource {
            limit: ResourceLimit::OomKill,
            detail: "x".into(),
        };
        let s = serde_json::to_string(&ev).unwrap_or_default();
        assert_eq!(s, r#"{"kind":"resource","limit":"oom_kill","detail":"x"}"#);
        assert_eq!(ev.kind(), "resource");
        let extra = r#"{"kind":"resource","limit":"oom_kill","detail":"x","evil":1}"#;
        assert!(
            serde_json::from_str::<Event>(extra).is_err(),
            "unknown fields must be rejected"
        );
    }
}
