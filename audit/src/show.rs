//! Filtering and rendering records for `aegis-audit show` and `tail`. Input: record lines;
//! output: the lines that pass a [`Filter`], as a fixed-column table row or as the original JSON
//! line (byte for byte). Invariant: `show` does not verify; it says so and marks lines that are
//! not valid records instead of failing.

use crate::event::{Event, Verdict};
use crate::record::Record;
use crate::time::Timestamp;

/// Which records to show (all conditions must hold).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Agent name equals.
    pub agent: Option<String>,
    /// Event kind equals (e.g. `decision`).
    pub kind: Option<String>,
    /// Time at or after.
    pub since: Option<Timestamp>,
    /// Time before.
    pub until: Option<Timestamp>,
    /// Decision verdict equals (implies kind `decision`).
    pub decision: Option<Verdict>,
}

impl Filter {
    /// Does `rec` pass?
    pub fn matches(&self, rec: &Record) -> bool {
        let ts = Timestamp::parse_exact(&rec.ts);
        self.agent.as_ref().is_none_or(|a| &rec.agent == a)
            && self.kind.as_ref().is_none_or(|k| rec.event.kind() == k)
            && self.since.is_none_or(|s| ts.is_some_and(|t| t >= s))
            && self.until.is_none_or(|u| ts.is_some_and(|t| t < u))
            && self.decision.is_none_or(|d| rec.event.verdict() == Some(d))
    }
}

/// Header line of the table format.
pub fn table_header() -> String {
    format!(
        "{:>8}  {:<30}  {:<16}  {:<19}  {}",
        "SEQ", "TIME", "AGENT", "KIND", "DETAIL"
    )
}

/// One table row.
pub fn table_row(rec: &Record) -> String {
    let agent = if rec.agent.is_empty() {
        "-"
    } else {
        rec.agent.as_str()
    };
    format!(
        "{:>8}  {:<30}  {:<16}  {:<19}  {}",
        rec.seq,
        rec.ts,
        agent,
        rec.event.kind(),
        summary(&rec.event)
    )
}

/// One-line description of an event.
pub fn summary(ev: &Event) -> String {
    match ev {
        Event::BundleVerified { path, key_id } => format!("{path} signed by {key_id}"),
        Event::BundleRefused { path, reason } => format!("{path}: {reason}"),
        Event::UnsignedBundleAllowed { path, reason } => format!("{path}: {reason}"),
        Event::EnforcementReport {
            layers,
            landlock_abi,
            cgroup_mode,
            ..
        } => {
            let l: Vec<String> = layers
                .iter()
                .map(|l| format!("{}={:?}", l.layer, l.status).to_lowercase())
                .collect();
            let abi = landlock_abi.map_or("none".to_string(), |a| a.to_string());
            format!("{} landlock_abi={abi} cgroup={cgroup_mode}", l.join(" "))
        }
        Event::AgentStarted { command, pid, identity } => match identity {
            Some(i) => format!("pid {pid} as uid {} gid {}: {}", i.uid, i.gid, command.join(" ")),
            None => format!("pid {pid}: {}", command.join(" ")),
        },
        Event::Decision {
            component,
            subject,
            target,
            decision,
            rule,
            reason,
        } => {
            let v = match decision {
                Verdict::Allow => "ALLOW",
                Verdict::Deny => "DENY",
            };
            format!(
                "{v} {subject} {target} by {component} rule={} ({reason})",
                rule.as_deref().unwrap_or("default-deny")
            )
        }
        Event::ProxyRequest {
            mode,
            host,
            port,
            method,
            path,
            decision,
            rule,
            reason,
            bytes_up,
            bytes_down,
            exe,
            count,
        } => {
            let v = match decision {
                Verdict::Allow => "ALLOW",
                Verdict::Deny => "DENY",
            };
            let what = match (method, path) {
                (Some(m), Some(p)) if p.starts_with('/') => format!("{m} {host}:{port}{p}"),
                (Some(m), Some(p)) => format!("{m} {host}:{port} {p}"),
                _ => format!("{host}:{port}"),
            };
            let times = if *count == 1 { String::new() } else { format!(" (x{count})") };
            format!(
                "{v} {mode} {what} rule={} ({reason}) up={bytes_up}B down={bytes_down}B exe={}{times}",
                rule.as_deref().unwrap_or("none"),
                exe.as_deref().unwrap_or("?")
            )
        }
        Event::KernelDenial {
            layer,
            detail,
            count,
        } => format!("{layer}: {detail} (x{count})"),
        Event::Denial { layer, target, result, rule, reason, count, source, .. } => {
            let by = if source == "kernel" { String::new() } else { format!(" [{source}]") };
            let n = if *count > 1 { format!(" (x{count})") } else { String::new() };
            format!("DENY {layer}: {target} = {result}{n} rule={} ({reason}){by}", rule.as_deref().unwrap_or("none"))
        }
        Event::Resource { limit, detail } => {
            let name = serde_json::to_value(limit).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            format!("{name}: {detail}")
        }
        Event::AgentExited {
            pid,
            status,
            signal,
            cpu_user_us,
            cpu_sys_us,
            peak_memory_bytes,
        } => {
            let how = match (status, signal) {
                (_, Some(s)) => format!("signal {s}"),
                (Some(c), None) => format!("status {c}"),
                (None, None) => "unknown".into(),
            };
            let mem = peak_memory_bytes.map_or("?".into(), |m| m.to_string());
            format!("pid {pid}: {how} user={cpu_user_us}us sys={cpu_sys_us}us peak_mem={mem}B")
        }
        Event::Repeated { count, event } => format!("x{count} more: {} {}", event.kind(), summary(event)),
        Event::Note { component, message } => format!("{component}: {message}"),
        Event::TailRepaired { offset, bytes, .. } => {
            format!("cut {bytes} torn bytes at offset {offset}")
        }
        Event::Checkpoint(c) => format!("records={} bytes={} root={}", c.records, c.bytes, c.root),
    }
}
