#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
//! A supervisor killed with SIGKILL cannot clean up: its agent dies with it (PDEATHSIG) and
//! the next run sweeps the leaf and table it left. Its own test binary, not a module of
//! `tests/all`: any launch there, running in parallel, would sweep the leftovers first and
//! leave nothing for this test to see swept (cargo runs test binaries one after another).

#[path = "all/common.rs"]
mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn sigkill_of_the_supervisor_kills_the_agent_and_the_next_run_sweeps_the_leftovers() {
    if !need_root("sigkill_supervisor") {
        return;
    }
    if !have_nft() {
        eprintln!("SKIP sigkill_supervisor: no nft");
        return;
    }
    let mut spec = Spec::new("rt-orphan");
    spec.network = aegis_targets::bundle::NetworkMode::Host;
    spec.net = Some(aegis_targets::nftables::NetPolicy {
        mode: aegis_targets::nftables::NetMode::Host,
        endpoints: vec![],
        resolvers: vec![],
    });
    let b = build(&spec, true);
    let mut child = b.command(&[], &["/bin/sleep", "30"]).spawn().unwrap();
    let l = b.wait_for_leaf();
    let procs = l.iter().find(|p| p.starts_with("/sys/fs/cgroup/pids")).unwrap().join("cgroup.procs");
    let agent: i32 = std::fs::read_to_string(&procs).unwrap().lines().next().unwrap().trim().parse().unwrap();
    // SAFETY: killing the supervisor we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // The agent dies with its supervisor (PR_SET_PDEATHSIG).
    let t = Instant::now();
    while std::path::Path::new(&format!("/proc/{agent}")).exists() {
        assert!(t.elapsed() < Duration::from_secs(3), "agent outlived its supervisor");
        std::thread::sleep(Duration::from_millis(10));
    }
    let table = format!("aegis_{}_{}_", b.agent.replace('-', "_"), child.id());
    // Another aegis-exec on this machine (other test suites) may sweep them first.
    let left_table = nft_tables_with(&table).len() == 1;
    let left_leaf = !b.leaves().is_empty();
    if !(left_table && left_leaf) {
        eprintln!("note: leftovers already swept by a concurrent aegis-exec (table {left_table}, leaf {left_leaf})");
    }
    // The next run of any agent sweeps both.
    let o = b.run(&[], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    assert!(nft_tables_with(&table).is_empty(), "stale table swept");
    assert!(b.leaves().is_empty(), "stale leaf swept: {:?}", b.leaves());
    if left_table && left_leaf {
        let notes = b.events("note");
        assert!(notes.iter().any(|n| n["message"].as_str().unwrap_or("").contains("stale cgroup leaf")), "{notes:?}");
        assert!(notes.iter().any(|n| n["message"].as_str().unwrap_or("").contains("stale nftables table")), "{notes:?}");
    }
}
