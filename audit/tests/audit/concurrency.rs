//! Several processes append to one log at once: nothing lost, one chain, checkpoints valid.

use std::collections::BTreeMap;
use std::process::Command;

use aegis_audit::{Event, Record, verify_log};

use crate::common::{keys, vopts};

const BIN: &str = env!("CARGO_BIN_EXE_aegis-audit");

#[test]
fn concurrent_processes_lose_nothing_and_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("checkpoints"));
    let procs = 4;
    let per = 400;
    let children: Vec<_> = (0..procs)
        .map(|p| {
            Command::new(BIN)
                .arg("append")
                .arg(&log)
                .args(["--agent", &format!("agent{p}"), "--count", &per.to_string()])
                // Mixed batch sizes so that single and multi-record writes interleave.
                .args(["--batch", if p % 2 == 0 { "1" } else { "7" }])
                .arg("--secret-key")
                .arg(&k.secret)
                .args(["--every-records", "50", "--sink"])
                .arg(&sink)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let report = verify_log(&log, &vopts(Some(&k), &[&sink])).unwrap();
    assert!(report.is_ok(), "{:?}", report.failure);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut per_agent: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut checkpoints = 0;
    let mut since_checkpoint = 0;
    for line in text.lines() {
        let rec = Record::parse(line.as_bytes()).unwrap();
        match rec.event {
            Event::Decision { target, .. } => {
                per_agent.entry(rec.agent).or_default().push(target);
                since_checkpoint += 1;
            }
            Event::Checkpoint(_) => {
                // Due after 50 records; a batch of up to 7 may overshoot by 6.
                assert!(
                    (50..57).contains(&since_checkpoint),
                    "checkpoint after {since_checkpoint} records"
                );
                checkpoints += 1;
                since_checkpoint = 0;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(per_agent.len(), procs);
    for (agent, targets) in &per_agent {
        // Every record of every process is there exactly once, in that process's order.
        let want: Vec<String> = (0..per).map(|i| format!("{agent}:{i}")).collect();
        assert_eq!(targets, &want, "{agent}");
    }
    assert_eq!(report.records, (procs * per) as u64 + checkpoints);
    assert!(
        since_checkpoint < 57,
        "{since_checkpoint} records after the last checkpoint"
    );
    assert_eq!(
        report.external_checkpoints, checkpoints,
        "sink holds every checkpoint"
    );
}

#[test]
fn verifying_a_live_log_never_sees_a_half_written_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    // Durable appends keep the writers busy for a while with a small log. (`verify_log` takes the
    // length under a shared lock; without it this race is real but rare with short records.)
    let mut writers: Vec<_> = (0..2)
        .map(|p| {
            Command::new(BIN)
                .arg("append")
                .arg(&log)
                .args([
                    "--agent",
                    &format!("w{p}"),
                    "--count",
                    "300",
                    "--durability",
                    "every",
                ])
                .spawn()
                .unwrap()
        })
        .collect();
    let mut seen = Vec::new();
    loop {
        let running = writers.iter_mut().any(|w| w.try_wait().unwrap().is_none());
        if log.exists() {
            let r = verify_log(&log, &vopts(None, &[])).unwrap();
            assert!(
                r.is_ok(),
                "live verify #{}: {}",
                seen.len(),
                r.failure.unwrap()
            );
            seen.push(r.records);
        }
        if !running {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&600));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    eprintln!("{} verifications while writing", seen.len());
}
