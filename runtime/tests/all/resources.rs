//! Resource limits for real: fork bomb, memory bomb, wall time; each recorded in the audit
//! log, the host (this test process) unaffected, the leaf removed afterwards.

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn fork_bomb_is_contained_by_pids_max_and_recorded() {
    if !need_root("fork_bomb") {
        return;
    }
    let mut spec = Spec::new("rt-forkbomb");
    let mut cg = cgroup_spec(&spec.agent);
    cg.pids_max = 16;
    cg.wall_time_ms = Some(10_000);
    spec.cgroup = Some(cg);
    let b = build(&spec, true);
    // 60 background sleepers: at most 16 tasks can exist; the rest of the forks fail.
    let script = "i=0; while [ $i -lt 60 ]; do (sleep 1) & i=$((i+1)); done 2>/dev/null; \
                  echo live=$(ls /proc | grep -c '^[0-9]'); wait; exit 0";
    let t = Instant::now();
    let o = b.run(&[], &["/bin/sh", "-c", script]);
    let (out, err) = text(&o);
    assert!(t.elapsed() < Duration::from_secs(9), "finished without hitting the wall clock: {out}{err}");
    let live: usize = out.lines().find_map(|l| l.strip_prefix("live=")).map(|v| v.parse().unwrap()).unwrap_or(0);
    assert!(live <= 16, "never more than pids.max tasks: {live}\n{out}\n{err}");
    let res = b.events("resource");
    assert!(res.iter().any(|e| e["limit"] == "pids_limit"), "pids limit recorded: {res:?}\n{err}");
    assert!(b.leaves().is_empty());
}

#[test]
fn memory_bomb_is_killed_by_the_memory_limit_and_recorded() {
    if !need_root("memory_bomb") {
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("SKIP memory_bomb: /usr/bin/python3 missing");
        return;
    }
    let mut spec = Spec::new("rt-membomb");
    let mut cg = cgroup_spec(&spec.agent);
    cg.memory_max = 48 << 20;
    spec.cgroup = Some(cg);
    let b = build(&spec, true);
    let o = b.run(&[], &["/usr/bin/python3", "-c", "x = b'a' * (400 << 20); print('survived')"]);
    let (out, err) = text(&o);
    assert!(!out.contains("survived"), "{out}{err}");
    assert_eq!(o.status.code(), Some(128 + libc::SIGKILL), "killed by the OOM killer: {err}");
    let res = b.events("resource");
    assert!(res.iter().any(|e| e["limit"] == "oom_kill"), "oom recorded: {res:?}");
    let exited = &b.events("agent_exited")[0];
    assert_eq!(exited["signal"], libc::SIGKILL);
    let peak = exited["peak_memory_bytes"].as_u64().unwrap();
    assert!(peak <= 48 << 20, "peak {peak} within the limit");
    assert!(b.leaves().is_empty());
}

#[test]
fn wall_time_kills_the_agent_and_is_recorded() {
    if !need_root("wall_time") {
        return;
    }
    let mut spec = Spec::new("rt-wall");
    let mut cg = cgroup_spec(&spec.agent);
    cg.wall_time_ms = Some(400);
    spec.cgroup = Some(cg);
    let b = build(&spec, true);
    let t = Instant::now();
    let o = b.run(&[], &["/bin/sleep", "30"]);
    assert!(t.elapsed() < Duration::from_secs(3), "killed near the deadline, took {:?}", t.elapsed());
    assert_eq!(o.status.code(), Some(128 + libc::SIGKILL));
    let res = b.events("resource");
    assert!(res.iter().any(|e| e["limit"] == "wall_time"), "{res:?}");
    assert!(b.leaves().is_empty());
}
