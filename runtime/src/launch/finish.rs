//! Steps 6 and 7 of a launch, supervise and clean up: from the agent's start until it is
//! reaped, then everything the launch created removed and the exit recorded.
//!
//! Input: the running agent and what the launch holds for it. Output: the agent's exit code,
//! and the audit log's last records (resources, notifications served, cleanup failures,
//! stale leftovers swept, the agent's exit). Invariants: cleanup runs on this path and, by
//! `Drop` of what was created, on every other; leftovers of SIGKILLed supervisors are swept
//! after the agent exited, so that costs no launch latency.

use std::time::Duration;

use aegis_audit::Event;

use super::close;
use super::confirm::Confirmed;
use super::prepare::Prepared;
use super::spawn::Spawned;
use crate::audit::Audit;
use crate::exit::RunError;
use crate::signals::Signals;
use crate::stage::verify::LaunchOptions;
use crate::stage;
use crate::supervise;

/// How the agent's run ended: its outcome, the records of what happened meanwhile, and the
/// leaf's resource usage.
pub(super) type Ended = (supervise::Outcome, Vec<Event>, aegis_targets::cgroup::Usage);

/// Supervises the agent until it is reaped: limits, the terminal relay, the notification
/// server's last records.
pub(super) fn supervise(
    opts: &LaunchOptions,
    signals: &Signals,
    audit: &mut Audit,
    p: &Prepared,
    s: &mut Spawned,
    c: &mut Confirmed,
    (nflog, proxy_feed, table): (Option<stage::netlog::Observer>, Option<&supervise::ProxyFeed>, &Option<aegis_targets::nftables::LoadedTable>),
) -> Result<Ended, RunError> {
    let spec = p.cg.as_ref().map(|p| &p.spec);
    let limits = supervise::Limits {
        wall_time: spec.and_then(|s| s.wall_time_ms).map(Duration::from_millis),
        oom_group: spec.is_some_and(|s| s.memory_oom_group),
        deny_prefix: p.nftp.as_ref().filter(|_| p.host_net && table.is_some()).map(|p| p.log_prefix.clone()),
        nflog,
        init_status: Some(s.status_r),
    };
    // The user's terminal goes raw and is relayed from here on (the agent's first output
    // waited in its pty); restored when the relay finishes or is dropped on any path.
    let relay = s.terminal.take().map(crate::tty::Terminal::start).transpose()?;
    let mut events = Vec::new();
    let outcome = supervise::run(s.pid, s.leaf.as_ref(), &limits, signals, audit, proxy_feed, opts.verbose);
    if let Some(r) = relay {
        r.finish();
    }
    close(s.status_r);
    if let Some(server) = c.notify_server.take() {
        let stats = server.stop();
        // The handlers' last aggregated records were sent as the server stopped.
        if let Some(f) = proxy_feed {
            f.finish(audit);
        }
        events.push(Event::Note {
            component: "supervisor".into(),
            message: format!(
                "seccomp notifications: {} answered ({} refused, {} abandoned by the agent), at most {} at once, throttled {} time(s), supervisor cpu {} us",
                stats.handled, stats.refused, stats.gone, stats.max_workers, stats.throttled, stats.cpu_us
            ),
        });
    }
    let usage = s.leaf.as_ref().map(|l| l.usage()).unwrap_or_default();
    if usage.pids_limit_hits > 0 {
        events.push(Event::Resource {
            limit: aegis_audit::ResourceLimit::PidsLimit,
            detail: format!("pids.max refused {} fork(s)", usage.pids_limit_hits),
        });
    }
    if usage.oom_kills > 0 && !outcome.oom_recorded {
        events.push(Event::Resource {
            limit: aegis_audit::ResourceLimit::OomKill,
            detail: format!("{} OOM kill(s); peak {} bytes", usage.oom_kills, usage.memory_peak.unwrap_or(0)),
        });
    }
    Ok((outcome, events, usage))
}

/// Removes what the launch created, sweeps what killed supervisors left, and records the
/// agent's exit; returns the agent's exit code.
pub(super) fn clean_up(audit: &mut Audit, p: &Prepared, s: &mut Spawned, table: &mut Option<aegis_targets::nftables::LoadedTable>, (outcome, events, usage): Ended, verbose: bool) -> i32 {
    let mut cleanup_errors = Vec::new();
    if let Some(t) = table.as_mut() {
        if p.host_net {
            if let Err(e) = t.remove() {
                cleanup_errors.push(e.to_string());
            }
        } else {
            // The table lived in the agent's network namespace, which died with it.
            t.disarm();
        }
    }
    if let Some(l) = s.leaf.as_mut()
        && let Err(e) = l.remove()
    {
        cleanup_errors.push(e.to_string());
    }
    if let Some(t) = s.private_tmp.take()
        && let Err(e) = t.remove()
    {
        cleanup_errors.push(e);
    }
    // Leftovers of supervisors that were SIGKILLed (they cannot clean up themselves): swept
    // after the agent exited, so it costs no launch latency. Tables are listed over netlink
    // (one dump, no `nft` process), cheap enough for every run.
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Some(cg) = &p.cg {
        for d in aegis_targets::cgroup::sweep_stale(&cg.layout, &alive) {
            audit.queue(Event::Note {
                component: "supervisor".into(),
                message: format!("removed stale cgroup leaf {}", d.display()),
            });
        }
    }
    for t in aegis_targets::nftables::sweep_stale(&alive) {
        audit.queue(Event::Note {
            component: "supervisor".into(),
            message: format!("removed stale nftables table inet {t}"),
        });
    }
    let (cpu_user_us, cpu_sys_us) = outcome.cpu_us();
    let peak = usage.memory_peak.or_else(|| u64::try_from(outcome.rusage.ru_maxrss).ok().map(|kb| kb * 1024));
    for e in events {
        audit.queue(e);
    }
    for err in &cleanup_errors {
        eprintln!("aegis-exec: cleanup: {err}");
        audit.queue(Event::Note {
            component: "supervisor".into(),
            message: format!("cleanup failed: {err}"),
        });
    }
    audit.queue(Event::AgentExited {
        pid: s.pid as u32,
        status: outcome.exited(),
        signal: outcome.signal(),
        cpu_user_us,
        cpu_sys_us,
        peak_memory_bytes: peak,
    });
    // Written by `Audit::close` with the final checkpoint (into the reserved room if an
    // append failed during the run).
    if verbose {
        eprintln!(
            "aegis-exec: agent exited: {} (exit code {}), cpu user {} us sys {} us, peak memory {} bytes",
            match (outcome.exited(), outcome.signal()) {
                (Some(c), _) => format!("status {c}"),
                (_, Some(s)) => format!("signal {s}"),
                _ => "unknown".into(),
            },
            outcome.exit_code(),
            cpu_user_us,
            cpu_sys_us,
            peak.unwrap_or(0)
        );
    }
    outcome.exit_code()
}
