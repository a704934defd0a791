//! The proxy's audit records on their way to the supervisor, with repeats aggregated at the
//! source and the proxy's own work for the agent accounted and bounded.
//!
//! Input: one [`Event::ProxyRequest`] per decision, from the connection threads; the CPU
//! time those threads spend. Output: events on the supervisor's channel. Invariants:
//! - decision-endpoint questions and denials are aggregated by key (mode, host, port,
//!   method, verdict, rule, program): the first of a key is sent whole; repeats within the next
//!   [`INTERVAL`] are counted, and one summary record per key and interval says how many
//!   there were (its `count`, and in words in its `reason`), with up to [`MAX_SAMPLES`]
//!   sample paths (each at most [`SAMPLE_BYTES`]),
//!   so an agent that asks or is refused in a loop adds at most about one record per key
//!   per second; allowed requests and tunnels stay one record each (each one moved real
//!   traffic, which the agent pays for in time); keys the agent can vary without end (the
//!   host of a refused CONNECT) are each a first record: the run's audit budget bounds them;
//! - nothing counted is dropped: summaries are sent by a flusher thread once their
//!   interval ended, and [`Records::flush`] sends what is still open (call it before the
//!   log is closed); records leave in the order they were counted (a key's first before its
//!   summaries), and every record counted before [`Records::flush`] returns has been sent
//!   (sending happens under the lock that counting takes);
//! - the CPU time of the threads serving the agent is summed ([`Usage`]) and, when the
//!   policy limits the agent's CPU, bounded to that many cores averaged over a second:
//!   [`Budget::wait`] holds a connection's next handshake or request until the window
//!   has room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aegis_audit::{Event, Verdict};

/// How long repeats of one key are counted before their summary record.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Sample paths kept per summary.
pub const MAX_SAMPLES: usize = 3;
/// Longest sample kept (longer ones are cut, with their length noted).
pub const SAMPLE_BYTES: usize = 200;

/// mode, host, port, method, denied, rule, program.
type Key = (String, String, u16, Option<String>, bool, Option<String>, Option<String>);

struct Open {
    since: Instant,
    count: u64,
    samples: Vec<String>,
    first: Event,
}

/// The outgoing side of the proxy's records (see the module doc).
pub struct Records {
    tx: Mutex<Sender<Event>>,
    open: Mutex<HashMap<Key, Open>>,
    usage: Arc<Usage>,
    /// The CPU total the last usage note reported.
    noted: AtomicU64,
}

/// How often the proxy's usage is noted in the log (when it changed).
pub const USAGE_EVERY: Duration = Duration::from_secs(10);

fn key(ev: &Event) -> Option<Key> {
    let Event::ProxyRequest { mode, host, port, method, decision, rule, exe, .. } = ev else { return None };
    let deny = *decision == Verdict::Deny;
    (mode == "decision" || deny).then(|| (mode.clone(), host.clone(), *port, method.clone(), deny, rule.clone(), exe.clone()))
}

fn sample(ev: &Event) -> String {
    let Event::ProxyRequest { path, reason, .. } = ev else { return String::new() };
    let s = path.clone().unwrap_or_else(|| reason.clone());
    if s.len() <= SAMPLE_BYTES {
        return s;
    }
    let mut cut = SAMPLE_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…[{} bytes]", s.get(..cut).unwrap_or(""), s.len())
}

fn summary(o: &Open) -> Option<Event> {
    let Event::ProxyRequest { mode, host, port, method, decision, rule, exe, .. } = &o.first else { return None };
    let secs = o.since.elapsed().as_secs_f64();
    Some(Event::ProxyRequest {
        mode: mode.clone(),
        host: host.clone(),
        port: *port,
        method: method.clone(),
        path: o.samples.first().cloned(),
        decision: *decision,
        rule: rule.clone(),
        reason: format!("{} more like the previous {mode} record of this key within {secs:.1} s (samples: {})", o.count, o.samples.join(" | ")),
        bytes_up: 0,
        bytes_down: 0,
        exe: exe.clone(),
        count: o.count,
    })
}

impl Records {
    /// Starts the flusher thread; records go to `tx`.
    pub fn start(tx: Sender<Event>, usage: Arc<Usage>) -> Arc<Records> {
        let r = Arc::new(Records { tx: Mutex::new(tx), open: Mutex::new(HashMap::new()), usage, noted: AtomicU64::new(0) });
        let weak = Arc::downgrade(&r);
        let _ = std::thread::Builder::new().name("aegis-proxy-records".into()).spawn(move || {
            let mut last_note = Instant::now();
            while let Some(r) = weak.upgrade() {
                r.flush_older_than(INTERVAL);
                if last_note.elapsed() >= USAGE_EVERY {
                    r.note_usage();
                    last_note = Instant::now();
                }
                drop(r);
                std::thread::sleep(INTERVAL / 4);
            }
        });
        r
    }

    /// A `note` record with the proxy's work for the agent, when it changed since the last.
    fn note_usage(&self) {
        let cpu = self.usage.cpu_ns.load(Ordering::Relaxed);
        if self.noted.swap(cpu, Ordering::Relaxed) != cpu {
            self.send_now(Event::Note { component: "proxy".into(), message: self.usage.summary() });
        }
    }

    fn send_now(&self, ev: Event) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(ev);
        }
    }

    /// Sends `ev`, or counts it as a repeat of an open key.
    pub fn send(&self, ev: Event) {
        let Some(k) = key(&ev) else { return self.send_now(ev) };
        let Ok(mut open) = self.open.lock() else { return self.send_now(ev) };
        if let Some(o) = open.get_mut(&k) {
            o.count += 1;
            if o.samples.len() < MAX_SAMPLES {
                o.samples.push(sample(&ev));
            }
            return;
        }
        open.insert(k, Open { since: Instant::now(), count: 0, samples: Vec::new(), first: ev.clone() });
        // Still under the lock: the first of a key leaves before any summary of it.
        self.send_now(ev);
    }

    /// Sends the summary of every key whose interval is older than `age` (keys without
    /// repeats close; keys with repeats start a new interval).
    fn flush_older_than(&self, age: Duration) {
        let mut out = Vec::new();
        let Ok(mut open) = self.open.lock() else { return };
        open.retain(|_, o| {
            if o.since.elapsed() < age {
                return true;
            }
            if o.count == 0 {
                return false;
            }
            out.extend(summary(o));
            o.count = 0;
            o.samples.clear();
            o.since = Instant::now();
            true
        });
        // Sent before the lock is released: a [`Records::flush`] that follows the flusher
        // thread's finds these already sent, never still on their way.
        for ev in out {
            self.send_now(ev);
        }
    }

    /// Sends every open summary and the usage now (before the log is closed).
    pub fn flush(&self) {
        self.flush_older_than(Duration::ZERO);
        self.note_usage();
    }
}

/// The CPU time of the calling thread, in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0).saturating_mul(1_000_000_000).saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// The proxy's work for the agent so far.
#[derive(Default)]
pub struct Usage {
    pub cpu_ns: AtomicU64,
    pub connections: AtomicU64,
    pub handshakes: AtomicU64,
    /// Time connections waited for the CPU budget.
    pub throttled_ns: AtomicU64,
}

impl Usage {
    /// One line for the run's records.
    pub fn summary(&self) -> String {
        format!(
            "proxy work for this agent: {} ms of CPU in {} connections ({} TLS handshakes); {} ms waited for the agent's CPU limit",
            self.cpu_ns.load(Ordering::Relaxed) / 1_000_000,
            self.connections.load(Ordering::Relaxed),
            self.handshakes.load(Ordering::Relaxed),
            self.throttled_ns.load(Ordering::Relaxed) / 1_000_000,
        )
    }
}

/// The CPU the proxy may spend for the agent: `limit_ns` per second (`None`: unbounded),
/// and at most [`Budget::HANDSHAKES`] TLS handshakes at once.
pub struct Budget {
    limit_ns: Option<u64>,
    window: Mutex<(Instant, u64)>,
    handshakes: Mutex<usize>,
    freed: Condvar,
}

/// A running handshake; the slot frees when it is dropped.
pub struct Slot<'a>(&'a Budget);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.handshakes.lock() {
            *n = n.saturating_sub(1);
        }
        self.0.freed.notify_one();
    }
}

impl Budget {
    /// TLS handshakes (agent side, upstream side, probes) running at once.
    pub const HANDSHAKES: usize = 4;

    /// `millicores`: the agent's CPU limit (`[resources] cpu`), if any.
    pub fn new(millicores: Option<u64>) -> Budget {
        Budget {
            limit_ns: millicores.map(|m| m.saturating_mul(1_000_000).max(1_000_000)),
            window: Mutex::new((Instant::now(), 0)),
            handshakes: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Counts `ns` of CPU spent for the agent.
    pub fn charge(&self, ns: u64) {
        if let Ok(mut w) = self.window.lock() {
            w.1 = w.1.saturating_add(ns);
        }
    }

    /// Waits until the current one-second window has CPU left; returns how long it waited.
    pub fn wait(&self) -> Duration {
        let Some(limit) = self.limit_ns else { return Duration::ZERO };
        let start = Instant::now();
        loop {
            let sleep = match self.window.lock() {
                Ok(mut w) => {
                    let age = w.0.elapsed();
                    if age >= Duration::from_secs(1) {
                        // Carry what the last window overspent into this one.
                        let over = w.1.saturating_sub(limit);
                        *w = (Instant::now(), over);
                    }
                    if w.1 < limit {
                        return start.elapsed();
                    }
                    Duration::from_secs(1).saturating_sub(w.0.elapsed())
                }
                Err(_) => return start.elapsed(),
            };
            std::thread::sleep(sleep.max(Duration::from_millis(1)));
        }
    }

    /// Takes one of the [`Budget::HANDSHAKES`] handshake slots, waiting for one.
    pub fn handshake(&self) -> Option<Slot<'_>> {
        let mut n = self.handshakes.lock().ok()?;
        while *n >= Self::HANDSHAKES {
            n = self.freed.wait(n).ok()?;
        }
        *n += 1;
        Some(Slot(self))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn ev(mode: &str, path: &str, decision: Verdict) -> Event {
        Event::ProxyRequest {
            mode: mode.into(),
            host: "aegis".into(),
            port: aegis_targets::bundle::contract::PROXY_PORT,
            method: Some("net".into()),
            path: Some(path.into()),
            decision,
            rule: None,
            reason: "r".into(),
            bytes_up: 0,
            bytes_down: 0,
            exe: None,
            count: 1,
        }
    }

    #[test]
    fn repeats_become_one_summary_per_key_and_nothing_is_lost() {
        let (tx, rx) = std::sync::mpsc::channel();
        let r = Records::start(tx, Arc::new(Usage::default()));
        for i in 0..1000 {
            r.send(ev("decision", &format!("/q/{i}/{}", "x".repeat(i)), Verdict::Deny));
        }
        r.send(ev("inspect", "/allowed", Verdict::Allow));
        r.send(ev("inspect", "/allowed", Verdict::Allow));
        r.flush();
        let got: Vec<Event> = rx.try_iter().collect();
        assert_eq!(got.len(), 4, "first, summary, and the two allowed requests: {got:?}");
        let Event::ProxyRequest { reason, path, count, .. } = &got[3] else { panic!() };
        assert!(reason.starts_with("999 more"), "{reason}");
        assert_eq!(*count, 999, "the summary counts in a field, not only in words");
        assert!(path.as_deref().is_some_and(|p| p.starts_with("/q/1/")), "{path:?}");
        assert!(reason.len() < 1000, "samples are capped: {}", reason.len());
    }

    #[test]
    fn a_cpu_budget_holds_work_once_the_window_is_spent() {
        let b = Budget::new(Some(100));
        assert!(b.wait() < Duration::from_millis(50), "an unspent window does not wait");
        b.charge(150_000_000);
        let waited = b.wait();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
    }
}
