//! Audit records of refused calls, aggregated so that a looping agent cannot flood the log.
//!
//! Input: [`Refusal`]s from handlers (what was refused, the rule, why). Output: `decision`
//! audit records (`component = "supervisor"`, verdict DENY), or `denial` records (with the
//! structured access and a `count`) for refusals that carry a [`Denial`]: the first refusal of a target
//! is written at once with its reason; repeats are counted and written as one record per
//! window of a second, with "(refused N more time(s) in Ns)", for as long as they go on (a
//! steady flood of one target is one record per second). Invariants: at most [`MAX_TARGETS`] distinct targets are kept
//! per window; refusals of further targets are counted into one summary record (so many
//! distinct paths cannot grow the log either); a target is cut to [`MAX_TARGET_BYTES`] (on a
//! character boundary, marked with `…`); every counted refusal appears in some record by the
//! time [`Records::flush`] was called with `force`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aegis_audit::{Access, Event, Verdict};

/// Distinct targets recorded per window; the rest are summarised.
pub const MAX_TARGETS: usize = 32;
/// Longest target kept in a record.
pub const MAX_TARGET_BYTES: usize = 512;
/// How long repeats of one target are collected into one record.
pub const WINDOW: Duration = Duration::from_secs(1);

/// One refused call, as a handler reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of access (`unix`, `exec`, `socket`, ...).
    pub subject: &'static str,
    /// What was accessed (a socket path, a program).
    pub target: String,
    /// The policy rule that decided (`None`: default deny).
    pub rule: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// Written as a `denial` record (structured, for `aegis why`) rather than a `decision`.
    pub denial: Option<Box<Denial>>,
}

/// The structured part of a refusal that becomes a `denial` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// What was tried.
    pub access: Access,
    /// What the agent got (an errno name).
    pub result: String,
    /// `kernel` or `explanation` (see `aegis_audit::Event::Denial`).
    pub source: &'static str,
}

/// A target refused in this window or the one before (its first refusal is written).
struct Pending {
    /// Refusals not written yet.
    count: u64,
    rule: Option<String>,
    reason: String,
    denial: Option<Box<Denial>>,
}

/// The aggregator (owned by the notification loop).
pub struct Records {
    window_start: Instant,
    pending: BTreeMap<(&'static str, String), Pending>,
    /// Refusals of targets beyond MAX_TARGETS in this window: (count, distinct subjects).
    overflow: (u64, BTreeMap<&'static str, u64>),
    /// Every refusal ever counted.
    pub total: u64,
}

fn cap(target: &str) -> String {
    if target.len() <= MAX_TARGET_BYTES {
        return target.to_string();
    }
    let mut end = MAX_TARGET_BYTES;
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", target.get(..end).unwrap_or_default())
}

fn event(subject: &str, target: String, rule: Option<String>, reason: String) -> Event {
    Event::Decision { component: "supervisor".into(), subject: subject.into(), target, decision: Verdict::Deny, rule, reason }
}

fn denial_event(layer: &str, target: String, d: &Denial, rule: Option<String>, reason: String, count: u64) -> Event {
    Event::Denial {
        layer: layer.into(),
        target,
        access: d.access.clone(),
        result: d.result.clone(),
        rule,
        reason,
        count,
        source: d.source.into(),
    }
}

impl Default for Records {
    fn default() -> Records {
        Records::new()
    }
}

impl Records {
    pub fn new() -> Records {
        Records { window_start: Instant::now(), pending: BTreeMap::new(), overflow: (0, BTreeMap::new()), total: 0 }
    }

    /// Counts one refusal; returns the record to write now, if this is the first refusal
    /// of its target in the window (so a single refusal is in the log at once).
    pub fn count(&mut self, r: Refusal) -> Option<Event> {
        self.total += 1;
        let key = (r.subject, cap(&r.target));
        if let Some(p) = self.pending.get_mut(&key) {
            p.count += 1;
            return None;
        }
        if self.pending.len() >= MAX_TARGETS {
            self.overflow.0 += 1;
            *self.overflow.1.entry(r.subject).or_default() += 1;
            return None;
        }
        let first = match &r.denial {
            Some(d) => denial_event(key.0, key.1.clone(), d, r.rule.clone(), r.reason.clone(), 1),
            None => event(key.0, key.1.clone(), r.rule.clone(), r.reason.clone()),
        };
        self.pending.insert(key, Pending { count: 0, rule: r.rule, reason: r.reason, denial: r.denial });
        Some(first)
    }

    /// The records due now: every repeat count and the overflow summary, when the window
    /// is over (or always, with `force`, at the end of the run).
    pub fn flush(&mut self, force: bool) -> Vec<Event> {
        let elapsed = self.window_start.elapsed();
        if !force && elapsed < WINDOW {
            return Vec::new();
        }
        self.window_start = Instant::now();
        let secs = elapsed.as_secs_f64().max(0.001);
        let mut out = Vec::new();
        // A target refused again in this window stays known, so that a steady flood is
        // one record per window; a quiet one is forgotten (its next refusal is written at
        // once again).
        self.pending.retain(|(subject, target), p| {
            if p.count == 0 {
                return false;
            }
            match &p.denial {
                Some(d) => out.push(denial_event(subject, target.clone(), d, p.rule.clone(), format!("{} (repeats in {secs:.1}s)", p.reason), p.count)),
                None => {
                    let reason = format!("{} (refused {} more time(s) in {secs:.1}s)", p.reason, p.count);
                    out.push(event(subject, target.clone(), p.rule.clone(), reason));
                }
            }
            p.count = 0;
            !force
        });
        let (n, subjects) = std::mem::take(&mut self.overflow);
        if n > 0 {
            let kinds: Vec<String> = subjects.iter().map(|(s, c)| format!("{s}: {c}")).collect();
            out.push(event(
                "summary",
                format!("{n} refusal(s) of other targets"),
                None,
                format!("more than {MAX_TARGETS} distinct targets refused in {secs:.1}s; counted, not listed ({})", kinds.join(", ")),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn r(target: &str) -> Refusal {
        Refusal { subject: "unix", target: target.into(), rule: None, reason: "no grant".into(), denial: None }
    }

    fn text(e: &Event) -> (String, String) {
        match e {
            Event::Decision { target, reason, .. } => (target.clone(), reason.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_flood_of_one_target_is_two_records_and_nothing_is_lost() {
        let mut rec = Records::new();
        assert!(rec.count(r("/run/docker.sock")).is_some(), "the first refusal is written at once");
        for _ in 0..100_000 {
            assert!(rec.count(r("/run/docker.sock")).is_none());
        }
        assert!(rec.flush(false).is_empty(), "inside the window nothing more is written");
        let out = rec.flush(true);
        assert_eq!(out.len(), 1);
        let (t, why) = text(&out[0]);
        assert_eq!(t, "/run/docker.sock");
        assert!(why.starts_with("no grant (refused 100000 more time(s) in "), "{why}");
        assert_eq!(rec.total, 100_001);
        assert!(rec.flush(true).is_empty(), "a quiet window writes nothing");
    }

    #[test]
    fn many_distinct_long_targets_are_capped_and_summarised() {
        let mut rec = Records::new();
        let mut written = 0;
        for i in 0..10_000 {
            let long = format!("/tmp/{i}/{}", "é".repeat(40_000));
            if let Some(e) = rec.count(r(&long)) {
                written += 1;
                let (t, _) = text(&e);
                assert!(t.len() <= MAX_TARGET_BYTES + "…".len(), "{}", t.len());
                assert!(t.ends_with('…'));
            }
        }
        assert_eq!(written, MAX_TARGETS);
        let out = rec.flush(true);
        assert_eq!(out.len(), 1, "first refusals were written; the rest is one summary");
        let (t, why) = text(&out[0]);
        assert_eq!(t, format!("{} refusal(s) of other targets", 10_000 - MAX_TARGETS));
        assert!(why.contains("unix: 9968"), "{why}");
    }
}
