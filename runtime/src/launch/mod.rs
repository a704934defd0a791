//! One launch, start to finish: the stages of [`crate::stage`] in order, then supervision
//! and cleanup. Input: [`LaunchOptions`]. Output: the process exit code (the agent's status,
//! or one of the codes in [`crate::exit`]). Invariants: nothing is created before every
//! artifact is verified and parsed; everything created (cgroup leaf, nftables table) is
//! owned by a value whose `Drop` removes it, so every return path — including errors after
//! `clone` and a SIGTERM to the supervisor — cleans up; the agent never execs unless every
//! required layer reported success and was verified.
//!
//! The supervisor's steps, one module each, called in this order by `launch` (the child's
//! side is [`crate::child`]):
//!
//! | step | module | what |
//! |---|---|---|
//! | 1 | `prepare` | verify the bundle, decide the identity, plan every stage, start `nft` loads |
//! | 2 | `spawn` | the cgroup leaf, the pipes and handoff, the child's plan, clone |
//! | (2) | `no_userns` | whether a launch without user namespaces may go on, and what it gets |
//! | 3 | `confirm` | id maps, cgroup, nftables, sockets; serve a notifying filter; the child's verdict |
//! | 4 | `services` | NFLOG observer, forwards, proxy, from the descriptors the child handed over |
//! | 5 | `record` | the enforcement report's lines and the launch's audit records |
//! | 6, 7 | `finish` | supervise until the agent is reaped; clean up and record the exit |

use std::time::Instant;

use aegis_audit::Event;

use crate::audit::Audit;
use crate::exit::RunError;
use crate::report::{EnforcementReport, Timings};
use crate::signals::Signals;
use crate::stage::verify::LaunchOptions;
use crate::supervise;

mod confirm;
mod finish;
mod no_userns;
mod prepare;
mod record;
mod services;
mod spawn;

pub(crate) use no_userns::refusal_without_user_namespaces;

fn pipe() -> Result<(i32, i32), RunError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(RunError::os("pipe2"));
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: i32) {
    // SAFETY: closing an fd we own.
    unsafe { libc::close(fd) };
}

/// How the launch parameters' note starts (the rest is a JSON object NAME → path).
pub const PARAMS_NOTE: &str = "launch parameters: ";

/// Entry point of `aegis-exec BUNDLE [-- CMD]`.
pub fn run(opts: &LaunchOptions) -> i32 {
    let signals = match Signals::block() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            return e.exit_code();
        }
    };
    let dir_name = opts
        .bundle
        .path()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into());
    // A log whose directory does not exist is refused input, named (not an internal error).
    if let Some(log) = &opts.audit_log {
        let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            let e = RunError::Refused(format!("--audit-log {}: the directory {} does not exist; create it first", log.display(), dir.display()));
            eprintln!("aegis-exec: {e}");
            return e.exit_code();
        }
    }
    let mut audit = match Audit::open(opts.audit_log.as_deref(), &dir_name, &opts.audit) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            return e.exit_code();
        }
    };
    let code = match launch(opts, &mut audit, &signals) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            audit.queue(Event::Note {
                component: "aegis-exec".into(),
                message: format!("launch failed (exit {}): {e}", e.exit_code()),
            });
            e.exit_code()
        }
    };
    // The log decides the status when it ended the run (or cannot hold its end).
    match audit.close() {
        Some(stop) => {
            eprintln!("aegis-exec: {stop}");
            stop.exit_code()
        }
        None => code,
    }
}

/// Supervisor time per step, for the report's stage timings.
struct Clock {
    t: Instant,
    timings: Timings,
}

impl Clock {
    fn new() -> Clock {
        Clock { t: Instant::now(), timings: Timings::default() }
    }

    /// Closes the step that ran since the last lap.
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.timings.supervisor.push((name, now - self.t));
        self.t = now;
    }
}

/// One launch: the steps in order. Each step's module says what it takes and gives; the
/// line above each call says why it runs there.
fn launch(opts: &LaunchOptions, audit: &mut Audit, signals: &Signals) -> Result<i32, RunError> {
    let mut clock = Clock::new();
    let mut report = EnforcementReport::default();
    // 1. prepare: every input checked, every artifact decoded, who and what decided.
    // Why first: a launch that will be refused creates nothing (no leaf, no namespace).
    let (mut p, layers) = prepare::prepare(opts, audit, &mut report, &mut clock)?;
    // 2. spawn: the cgroup leaf, the channels, the child.
    // Why here: the leaf (limits written) exists before the child, which is born in it
    // where the kernel allows; the child waits on the go pipe until confirmed.
    let mut s = spawn::spawn(opts, signals, &mut p, layers, &mut report, &mut clock)?;
    // 3. confirm: maps, cgroup, nftables, sockets, then the child's own verdict.
    // Why here: the child is held before it drops its capabilities until every layer the
    // supervisor applies is in place and verified; nothing of the agent runs before.
    let (mut c, (proxy_tx, proxy_rx)) = confirm::confirm(&mut p, &mut s, &mut clock)?;
    // 4. services: what the supervisor runs for the agent, from what the child handed over.
    // Why after exec: every message of the child is queued once it exec'd.
    let mut table = None;
    let (nflog, proxy_handle, proxy_layer) = services::start(&mut p, &mut s, &mut c, &mut table, proxy_tx.clone())?;
    if proxy_handle.is_some() {
        clock.lap("proxy");
    }
    let proxy_feed = if proxy_handle.is_some() || c.notify_server.is_some() {
        Some(supervise::ProxyFeed::start(proxy_tx, proxy_rx, proxy_handle.as_deref())?)
    } else {
        None
    };
    // 5. record: what was enforced, for whom, before the agent's own records.
    // Why here: every layer is verified now, and nothing of the agent runs unrecorded: if
    // the records cannot be written, the launch fails here.
    record::layers(&mut report, &mut p, &s, &c, proxy_layer, audit);
    record::start_records(audit, &report, &p, s.pid)?;
    s.guard.armed = false;
    clock.lap("audit");
    if opts.verbose {
        eprint!("{}", report.to_text());
        eprint!("{}", clock.timings.to_text());
    }
    // 6. supervise: until the agent is reaped.
    let ended = finish::supervise(opts, signals, audit, &p, &mut s, &mut c, (nflog, proxy_feed.as_ref(), &table))?;
    // 7. clean up: on every path (Drop does it too if we return early).
    Ok(finish::clean_up(audit, &p, &mut s, &mut table, ended, opts.verbose))
}
