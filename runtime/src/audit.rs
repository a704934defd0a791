//! The supervisor's connection to the audit log (`--audit-log PATH`): the one sink every
//! record of a run goes through. Input: the launch records (bundle verification, enforcement
//! report, agent started), the run's events as they happen (proxy decisions, kernel denials,
//! resource limits) and the closing records (agent exited). Output: appends to an
//! `aegis_audit::AuditWriter`, and a [`Stop`] when the run must end because of the log.
//!
//! Invariants (issue 11.3/11.4, DESIGN principle 8: the log is never silently incomplete, and
//! the agent does not decide how much it grows):
//! - **Fail closed.** An append that fails (disk full, I/O error) sets [`Stop::Failed`]: the
//!   supervisor kills the agent and exits with [`crate::exit::EXIT_AUDIT_FAILED`]. Events of a
//!   failed append stay queued: they are written by the final attempt at [`Audit::close`],
//!   never dropped in between.
//! - **Room for the end.** The writer keeps [`RESERVE`] bytes allocated past the log's end
//!   (`fallocate` KEEP_SIZE) and refuses an append that would eat into them, so when the
//!   filesystem fills up the final attempt still lands in blocks the filesystem already gave
//!   us (the queued events, the reason, the agent's exit, a checkpoint).
//! - **A budget.** The records of a run may take at most `budget` bytes (default
//!   [`DEFAULT_BUDGET`]); the record that would cross it is replaced by one `resource` record
//!   (`audit_budget`) and the agent is stopped ([`Stop::Budget`],
//!   [`crate::exit::EXIT_AUDIT_BUDGET`]). The closing records do not count (they are bounded);
//!   the run's events do, also those that arrive after the agent was reaped (the proxy's and
//!   the notification handlers' last summaries): they are written within the budget by
//!   [`Audit::close`], before the closing records.
//! - **Repeats are counted, not written.** Run events identical to one written less than a
//!   second ago are counted and summarised in one `repeated` record per second (count + the
//!   event), as kernel denials are; long fields are capped by the writer (one place:
//!   `aegis_audit::MAX_FIELD_BYTES`), so no event can make one record large.
//!
//! Without `--audit-log` nothing is written and nothing stops a run.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aegis_audit::{AuditContext, AuditWriter, Durability, Event, Reserve, WriterOptions};

use crate::exit::{EXIT_AUDIT_BUDGET, EXIT_AUDIT_FAILED, RunError};
use crate::report::{Layer, LayerStatus};

/// Bytes the records of one run may take unless `--audit-budget` says otherwise.
pub const DEFAULT_BUDGET: u64 = 64 << 20;
/// Smallest budget accepted.
pub const MIN_BUDGET: u64 = 64 << 10;
/// Room kept allocated past the log's end for the closing records.
pub const RESERVE: u64 = 256 << 10;
/// Events kept queued after a failed append, at most (the agent is being killed; whatever it
/// still causes beyond this is counted, and the count is written).
const MAX_QUEUED_AFTER_FAILURE: usize = 4096;

/// What the operator asked of the log besides its path.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Most bytes of records one run may write (`None`: unlimited).
    pub budget: Option<u64>,
    /// `--checkpoint-key`: unencrypted minisign secret key that signs checkpoints (every 1000
    /// records or 60 s, and at the end of the run).
    pub checkpoint_key: Option<PathBuf>,
    /// `--checkpoint-sink`: also append each checkpoint record to this file (keep it apart
    /// from the log: it shows truncation and replacement).
    pub checkpoint_sink: Option<PathBuf>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            budget: Some(DEFAULT_BUDGET),
            checkpoint_key: None,
            checkpoint_sink: None,
        }
    }
}

/// Loads the checkpoint key, refusing one that others may read (it is what makes the log's
/// checkpoints unforgeable).
fn checkpoint_options(opts: &AuditOptions) -> Result<Option<aegis_audit::CheckpointOptions>, RunError> {
    use std::os::unix::fs::MetadataExt as _;
    let Some(key) = &opts.checkpoint_key else {
        if opts.checkpoint_sink.is_some() {
            return Err(RunError::Refused("--checkpoint-sink needs --checkpoint-key (the sink holds signed checkpoints)".into()));
        }
        return Ok(None);
    };
    let meta = std::fs::metadata(key).map_err(|e| RunError::Refused(format!("--checkpoint-key {}: {e}", key.display())))?;
    if meta.mode() & 0o077 != 0 {
        return Err(RunError::Refused(format!(
            "--checkpoint-key {}: mode {:o} lets others read the secret key that signs the log's checkpoints; run `chmod 600 {}`",
            key.display(),
            meta.mode() & 0o777,
            key.display()
        )));
    }
    let sk = aegis_audit::SigningKey::from_file(key).map_err(|e| RunError::Refused(format!("--checkpoint-key: {e}")))?;
    Ok(Some(aegis_audit::CheckpointOptions {
        sink: opts.checkpoint_sink.clone(),
        ..aegis_audit::CheckpointOptions::new(sk)
    }))
}

/// Parses `--audit-budget`: bytes with an optional `K`/`M`/`G` (or `KiB`/`MiB`/`GiB`) suffix,
/// or `unlimited`.
pub fn parse_budget(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("--audit-budget {s}: expected a size like 64M or `unlimited`"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("--audit-budget {s}: unknown unit `{other}` (use K, M or G)")),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("--audit-budget {s}: too large"))?;
    if bytes < MIN_BUDGET {
        return Err(format!("--audit-budget {s}: at least {} KiB (a launch alone writes a few KiB)", MIN_BUDGET >> 10));
    }
    Ok(Some(bytes))
}

/// Why the log ends the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// An append failed: the log cannot be trusted to be complete from here on.
    Failed(String),
    /// The run used up its budget of this many bytes.
    Budget(u64),
}

impl Stop {
    pub fn exit_code(&self) -> i32 {
        match self {
            Stop::Failed(_) => EXIT_AUDIT_FAILED,
            Stop::Budget(_) => EXIT_AUDIT_BUDGET,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Failed(why) => write!(f, "the audit log could not be written ({why}); the run was stopped"),
            Stop::Budget(b) => write!(f, "the run used up its audit budget of {b} bytes; the run was stopped"),
        }
    }
}

/// Identical run events seen within the last second: the first is written, the rest counted.
struct Repeats {
    hasher: RandomState,
    seen: HashMap<u64, Seen>,
}

struct Seen {
    event: Event,
    since: Instant,
    count: u64,
}

impl Repeats {
    const WINDOW: Duration = Duration::from_secs(1);
    /// Distinct events tracked at once; beyond that events are written as they come (the
    /// budget still bounds them).
    const MAX_TRACKED: usize = 1024;

    fn new() -> Repeats {
        Repeats {
            hasher: RandomState::new(),
            seen: HashMap::new(),
        }
    }

    /// True if `e` is to be written now; false if it was counted as a repeat.
    fn admit(&mut self, e: &Event) -> bool {
        let Ok(bytes) = serde_json::to_vec(e) else {
            return true;
        };
        // A keyed hash (random per process): the agent cannot make two events collide.
        let key = self.hasher.hash_one(&bytes);
        if let Some(s) = self.seen.get_mut(&key) {
            s.count += 1;
            return false;
        }
        if self.seen.len() < Self::MAX_TRACKED {
            self.seen.insert(
                key,
                Seen {
                    event: e.clone(),
                    since: Instant::now(),
                    count: 0,
                },
            );
        }
        true
    }

    /// `repeated` records due now (all of them when `all`); an event that did not repeat
    /// during its window is forgotten, one that did starts a new window.
    fn due(&mut self, all: bool) -> Vec<Event> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.seen.retain(|_, s| {
            if !all && now.duration_since(s.since) < Self::WINDOW {
                return true;
            }
            if s.count == 0 {
                return false;
            }
            out.push(Event::Repeated {
                count: s.count,
                event: Box::new(s.event.clone()),
            });
            s.count = 0;
            s.since = now;
            !all
        });
        out
    }
}

pub struct Audit {
    writer: Option<AuditWriter>,
    path: Option<PathBuf>,
    ctx: AuditContext,
    /// Events not yet written (kept across a failed append).
    pending: Vec<Event>,
    repeats: Repeats,
    budget: Option<u64>,
    /// Bytes of records this run has written.
    written: u64,
    stop: Option<Stop>,
    /// Events not written: after the budget stop, or beyond the queue after a failure.
    dropped: u64,
    /// The agent has been reaped ([`Audit::end_run`]): what is queued now is closing.
    run_over: bool,
    /// Closing records (the agent's exit, cleanup notes), written last by [`Audit::close`].
    closing: Vec<Event>,
    /// The checkpoint key's id, if checkpoints are signed.
    key_id: Option<String>,
}

impl Audit {
    pub fn open(path: Option<&Path>, agent: &str, opts: &AuditOptions) -> Result<Audit, RunError> {
        let checkpoint = checkpoint_options(opts)?;
        let key_id = checkpoint.as_ref().map(|c| c.key.key_id().to_string());
        let writer = match path {
            Some(p) => Some(
                AuditWriter::open(
                    p,
                    WriterOptions {
                        durability: Durability::EveryRecord,
                        reserve: RESERVE,
                        checkpoint,
                        ..WriterOptions::default()
                    },
                )
                .map_err(|e| RunError::AuditFailed(format!("opening the audit log: {e}")))?,
            ),
            None if checkpoint.is_some() => {
                return Err(RunError::Refused("--checkpoint-key needs --audit-log (there is no log to sign)".into()));
            }
            None => None,
        };
        Ok(Audit {
            writer,
            path: path.map(Path::to_path_buf),
            ctx: AuditContext {
                agent: agent.to_string(),
                bundle_digest: String::new(),
                policy_digest: String::new(),
            },
            pending: Vec::new(),
            repeats: Repeats::new(),
            budget: opts.budget,
            written: 0,
            stop: None,
            dropped: 0,
            run_over: false,
            closing: Vec::new(),
            key_id,
        })
    }

    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Sets the agent and digests once the bundle is verified.
    pub fn set_context(&mut self, agent: &str, bundle_sha256: &str, policy_sha256: &str) {
        self.ctx = AuditContext {
            agent: agent.to_string(),
            bundle_digest: format!("sha256:{bundle_sha256}"),
            policy_digest: format!("sha256:{policy_sha256}"),
        };
    }

    /// The enforcement report's line for the log itself.
    pub fn layer(&self) -> Layer {
        let Some(w) = &self.writer else {
            return Layer::new("audit", LayerStatus::NotEnforced, "no --audit-log: nothing is recorded");
        };
        let budget = match self.budget {
            Some(b) => format!("budget {} KiB per run (then the agent is stopped)", b >> 10),
            None => "no budget (--audit-budget unlimited)".into(),
        };
        let path = self.path.as_deref().unwrap_or(Path::new("?")).display();
        let budget = match &self.key_id {
            Some(k) => format!("{budget}; checkpoints signed by key {k}"),
            None => format!("{budget}; no --checkpoint-key: only the hash chain protects the log"),
        };
        match w.reserve() {
            Reserve::Held(r) => Layer::new(
                "audit",
                LayerStatus::Fully,
                format!("{path}: fails closed, {} KiB reserved for the closing records; {budget}", r >> 10),
            ),
            Reserve::Unsupported(why) => Layer::new(
                "audit",
                LayerStatus::Partially,
                format!("{path}: fails closed, but no room could be reserved for the closing records ({why}); {budget}"),
            ),
            Reserve::Off | Reserve::Spending => Layer::new("audit", LayerStatus::Partially, format!("{path}: no reserve; {budget}")),
        }
    }

    /// Why the log ends the run, once it does.
    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    /// Queues a launch or closing record for the next [`Audit::flush`] (never aggregated).
    pub fn queue(&mut self, e: Event) {
        if self.writer.is_none() {
            return;
        }
        if self.run_over {
            self.closing.push(e);
            return;
        }
        self.push_pending(e);
    }

    /// Queues a record to be written (within the budget, for the run's events).
    fn push_pending(&mut self, e: Event) {
        if matches!(self.stop, Some(Stop::Failed(_))) && self.pending.len() >= MAX_QUEUED_AFTER_FAILURE {
            self.dropped += 1;
            return;
        }
        self.pending.push(e);
    }

    /// Appends every queued event in one batch (one sync). After a failure nothing more is
    /// tried until [`Audit::close`]; the events stay queued.
    pub fn flush(&mut self) -> Result<(), RunError> {
        self.write_pending(u64::MAX);
        match &self.stop {
            Some(Stop::Failed(why)) => Err(RunError::AuditFailed(why.clone())),
            _ => Ok(()),
        }
    }

    /// Queues and flushes one event.
    pub fn record(&mut self, e: Event) -> Result<(), RunError> {
        self.queue(e);
        self.flush()
    }

    /// An event of the running agent (proxy decision, kernel denial, resource limit): counted
    /// if it repeats, written at the next [`Audit::tick`], within the budget.
    pub fn run_event(&mut self, e: Event) {
        if self.writer.is_none() {
            return;
        }
        if matches!(self.stop, Some(Stop::Budget(_))) {
            self.dropped += 1;
            return;
        }
        let e = e.into_capped();
        if self.repeats.admit(&e) {
            // Also after the agent was reaped: a run event is never a closing record.
            self.push_pending(e);
        }
    }

    /// Writes what is due (queued run events, repeat summaries); `all` at the end of the
    /// run. Returns the stop reason the first time the log ends the run.
    pub fn tick(&mut self, all: bool) -> Option<Stop> {
        self.writer.as_ref()?;
        let was = self.stop.is_some();
        let due = self.repeats.due(all);
        if matches!(self.stop, Some(Stop::Budget(_))) {
            self.dropped += due.len() as u64;
            return None;
        }
        for e in due {
            self.push_pending(e);
        }
        let room = match self.budget {
            Some(b) => b.saturating_sub(self.written),
            None => u64::MAX,
        };
        self.write_pending(room);
        if !was { self.stop.clone() } else { None }
    }

    /// Writes the queue, at most `room` bytes of it; what does not fit ends the run.
    fn write_pending(&mut self, room: u64) {
        if self.pending.is_empty() || matches!(self.stop, Some(Stop::Failed(_))) {
            return;
        }
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        match w.append_batch_within(&self.ctx, &self.pending, room) {
            Ok(infos) => {
                self.written += infos.iter().map(|i| i.len).sum::<u64>();
                let n = infos.len();
                if n < self.pending.len() {
                    // Over budget: the rest is not written, one record says so.
                    let rest: Vec<Event> = self.pending.split_off(n);
                    self.pending.clear();
                    self.over_budget(rest);
                } else {
                    self.pending.clear();
                }
            }
            Err(e) => {
                // Keep the events: the final attempt writes them into the reserve, after them
                // the reason, then whatever the run still records until it has ended.
                closing_note(
                    &mut self.pending,
                    format!("audit log append failed: {e}; the run is stopped; the records from here on were kept and written by the final write, into the room reserved for it"),
                );
                self.stop = Some(Stop::Failed(e.to_string()));
            }
        }
    }

    fn over_budget(&mut self, rest: Vec<Event>) {
        let budget = self.budget.unwrap_or(u64::MAX);
        self.dropped += rest.len() as u64;
        let mut kinds: std::collections::BTreeMap<&str, u64> = Default::default();
        for e in &rest {
            *kinds.entry(e.kind()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        self.stop = Some(Stop::Budget(budget));
        self.pending.push(Event::Resource {
            limit: aegis_audit::ResourceLimit::AuditBudget,
            detail: format!(
                "the run's records reached the audit budget of {budget} bytes ({} written); {} further record(s) not written ({}); agent stopped",
                self.written,
                rest.len(),
                kinds.join(", ")
            ),
        });
        // The budget record is the supervisor's, like the closing records: not counted.
        self.write_pending(u64::MAX);
    }

    /// The agent has been reaped: writes what the run still has (repeat counts included), so
    /// the records queued from now on are the closing ones (the agent's exit, cleanup).
    pub fn end_run(&mut self) {
        let _ = self.tick(true);
        self.run_over = true;
    }

    /// Writes what is still queued and the closing records, then closes the log (final
    /// checkpoint, sync). After a failure this is the final attempt, into the room reserved at
    /// open: first everything in one write; if that does not fit, one note that counts the
    /// run's unwritten records and carries the SHA-256 of their lines (printed on stderr, so
    /// nothing is lost silently), then the closing records. Returns why the log ended the run,
    /// if it did (the exit status says so).
    pub fn close(mut self) -> Option<Stop> {
        self.writer.as_ref()?;
        if !self.run_over {
            self.end_run();
        }
        // Run events that came after the agent was reaped (the last summaries of the proxy
        // and of the notification handlers), and their repeat counts: within the budget, as
        // every run event (after a failure they stay queued for the final write below).
        if self.stop.is_none() {
            let _ = self.tick(true);
        }
        let Some(mut w) = self.writer.take() else {
            return self.stop;
        };
        if self.dropped > 0 {
            let why = match self.stop {
                Some(Stop::Budget(_)) => "over the audit budget",
                _ => "queued after the failed append beyond what the reserved room holds (printed on stderr)",
            };
            closing_note(&mut self.closing, format!("{} event(s) of the run were not written in all: {why}", self.dropped));
        }
        if matches!(self.stop, Some(Stop::Failed(_))) {
            w.spend_reserve();
        }
        let mut all = std::mem::take(&mut self.pending);
        let kept = all.len();
        all.extend(self.closing.iter().cloned());
        let mut result = w.append_batch(&self.ctx, &all).map(|_| ());
        if result.is_err() && kept > 0 {
            // Too many kept records for the room left: their lines go to stderr and one note
            // in the log says how many, which kinds, and the hash of those lines.
            let lines = unwritten_lines(all.get(..kept).unwrap_or_default());
            let mut last = vec![Event::Note {
                component: "supervisor".into(),
                message: summary_of_unwritten(&lines, all.get(..kept).unwrap_or_default()),
            }];
            last.extend(self.closing.iter().cloned());
            result = w.append_batch(&self.ctx, &last).map(|_| ());
            if result.is_ok() {
                for l in &lines {
                    eprintln!("aegis-exec: audit: unwritten: {l}");
                }
                all.drain(..kept);
            }
        }
        let result = result.and_then(|()| w.close());
        let Err(e) = result else {
            return self.stop;
        };
        let lines = unwritten_lines(&all);
        eprintln!("aegis-exec: audit: the final write failed ({e}); {} record(s) were not written:", lines.len());
        for l in &lines {
            eprintln!("aegis-exec: audit: unwritten: {l}");
        }
        let why = match self.stop.take() {
            Some(Stop::Failed(first)) => first,
            _ => e.to_string(),
        };
        Some(Stop::Failed(why))
    }
}

/// Events as JSON lines (what an operator can recover from stderr).
fn unwritten_lines(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| serde_json::to_string(e).unwrap_or_else(|_| format!("{{\"kind\":\"{}\"}}", e.kind()))).collect()
}

fn summary_of_unwritten(lines: &[String], events: &[Event]) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    let mut kinds: std::collections::BTreeMap<&str, u64> = Default::default();
    for e in events {
        *kinds.entry(e.kind()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!(
        "{} record(s) of the run did not fit in the reserved room ({}); aegis-exec printed them on stderr as JSON lines (\"aegis-exec: audit: unwritten: ...\"), sha256 of those lines {}",
        lines.len(),
        kinds.join(", "),
        hex::encode(h.finalize())
    )
}

fn closing_note(pending: &mut Vec<Event>, message: String) {
    pending.push(Event::Note {
        component: "supervisor".into(),
        message,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_budget("64M"), Ok(Some(64 << 20)));
        assert_eq!(parse_budget("1GiB"), Ok(Some(1 << 30)));
        assert_eq!(parse_budget("unlimited"), Ok(None));
        assert_eq!(parse_budget("100000"), Ok(Some(100_000)));
        assert!(parse_budget("10").is_err(), "smaller than one launch");
        assert!(parse_budget("5T").is_err());
        assert!(parse_budget("-1").is_err());
        assert!(parse_budget("99999999999999999999G").is_err());
    }

    /// The proxy and the notification handlers hand over their last summaries after the
    /// agent was reaped: they are the run's records and the budget bounds them, so an agent
    /// cannot grow the log past its budget by having much counted in its last second.
    #[test]
    fn run_events_after_the_agent_exited_count_against_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let opts = AuditOptions { budget: Some(MIN_BUDGET), ..AuditOptions::default() };
        let mut a = Audit::open(Some(&log), "t", &opts).unwrap();
        a.queue(Event::Note { component: "supervisor".into(), message: "launched".into() });
        a.flush().unwrap();
        a.end_run();
        for i in 0..1000 {
            a.run_event(Event::Note { component: "proxy".into(), message: format!("late summary {i} {}", "x".repeat(200)) });
        }
        a.queue(Event::AgentExited { pid: 2, status: Some(0), signal: None, cpu_user_us: 0, cpu_sys_us: 0, peak_memory_bytes: None });
        assert_eq!(a.close(), Some(Stop::Budget(MIN_BUDGET)), "the exit status says the budget ended the run's records");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() as u64 <= MIN_BUDGET + 4096, "the log ({} bytes) stays within the budget plus the closing records", text.len());
        let kinds: Vec<String> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]["kind"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds.iter().filter(|k| *k == "resource").count(), 1, "one audit_budget record: {kinds:?}");
        let (budget, exited) = (kinds.iter().position(|k| k == "resource").unwrap(), kinds.iter().position(|k| k == "agent_exited").unwrap());
        assert!(budget < exited && exited >= kinds.len() - 2, "the closing records come last: {kinds:?}");
        assert!(text.contains("event(s) of the run were not written in all: over the audit budget"), "the dropped ones are counted");
    }

    #[test]
    fn identical_events_are_counted_and_summarised_once_per_window() {
        let mut r = Repeats::new();
        let e = Event::Note {
            component: "t".into(),
            message: "same".into(),
        };
        let other = Event::Note {
            component: "t".into(),
            message: "other".into(),
        };
        assert!(r.admit(&e), "the first is written");
        for _ in 0..99 {
            assert!(!r.admit(&e), "repeats are counted");
        }
        assert!(r.admit(&other), "a different event is written");
        assert!(r.due(false).is_empty(), "nothing due within the window");
        let due = r.due(true);
        assert_eq!(due, vec![Event::Repeated { count: 99, event: Box::new(e.clone()) }]);
        assert!(r.admit(&e), "after its summary, the event is new again");
    }
}
