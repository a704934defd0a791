//! Signals and cleanup on every exit path: forwarding, SIGTERM to the supervisor, kill -9 of
//! the agent.

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn usr1_is_forwarded_to_the_agent() {
    if !need_root("forwarding") {
        return;
    }
    let b = build(&Spec::new("rt-sig"), true);
    let mut child = b
        .command(&[], &["/bin/sh", "-c", "trap 'exit 42' USR1; echo ready; while :; do sleep 0.05; done"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    b.wait_for_leaf();
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "the agent's trap ran and its status passed through");
    assert!(b.leaves().is_empty());
}

#[test]
fn sigterm_to_the_supervisor_kills_an_agent_that_ignores_it_and_cleans_up() {
    if !need_root("sigterm") {
        return;
    }
    let mut spec = Spec::new("rt-term");
    spec.network = aegis_targets::bundle::NetworkMode::Host;
    spec.net = if have_nft() {
        Some(aegis_targets::nftables::NetPolicy { mode: aegis_targets::nftables::NetMode::Host, endpoints: vec![], resolvers: vec![] })
    } else {
        eprintln!("SKIP part of sigterm: no nft");
        return;
    };
    let b = build(&spec, true);
    // An agent that ignores SIGTERM (the forwarded signal would end a plain `sleep`).
    let mut child = b.command(&[], &["/bin/sh", "-c", "trap '' TERM; /bin/sleep 30"]).spawn().unwrap();
    b.wait_for_leaf();
    assert_eq!(b.tables().len(), 1, "host-mode table loaded");
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "killed after the grace period");
    assert!(b.leaves().is_empty(), "leaf removed");
    assert!(b.tables().is_empty(), "table removed");
    assert!(b.kinds().contains(&"agent_exited".to_string()));
}

#[test]
fn kill_9_of_the_agent_is_reported_and_cleaned_up() {
    if !need_root("kill9") {
        return;
    }
    let b = build(&Spec::new("rt-kill9"), true);
    let mut child = b.command(&[], &["/bin/sleep", "30"]).spawn().unwrap();
    let l = b.wait_for_leaf();
    let procs_file = l.iter().find(|p| p.starts_with("/sys/fs/cgroup/pids")).unwrap().join("cgroup.procs");
    // The agent is the leaf's `sleep` (its init is there too), once it has exec'd.
    let t = Instant::now();
    let pid: i32 = loop {
        let procs = std::fs::read_to_string(&procs_file).unwrap_or_default();
        let sleep = procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()).find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default().trim() == "sleep");
        if let Some(p) = sleep {
            break p;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "agent never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    };
    // SAFETY: killing the agent we started (found in its own leaf).
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL));
    assert!(b.leaves().is_empty());
    let exited = &b.events("agent_exited")[0];
    assert_eq!(exited["signal"], libc::SIGKILL);
}
