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
    },
    /// The agent process was started.
    AgentStarted {
        /// argv of the agent.
        command: Vec<String>,
        /// Its pid (in the supervisor's pid namespace).
        pid: u32,
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
    /// A resource limit was hit.
    Resource {
        /// Which limit.
        limit: ResourceLimit,
        /// Details (cgroup path, values).
        detail: String,
    },
    /// The agent exited.
    AgentExited {
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
            Event::Resource { .. } => "resource",
            Event::AgentExited { .. } => "agent_exited",
            Event::Note { .. } => "note",
            Event::TailRepaired { .. } => "tail_repaired",
            Event::Checkpoint(_) => "checkpoint",
        }
    }

    /// The verdict, for decision events.
    pub fn verdict(&self) -> Option<Verdict> {
        match self {
            Event::Decision { decision, .. } | Event::ProxyRequest { decision, .. } => Some(*decision),
            _ => None,
        }
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
