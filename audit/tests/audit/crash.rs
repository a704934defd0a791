//! Writers killed with SIGKILL at random points: the log verifies up to the last complete
//! record, and the next writer cuts a torn tail off and records it.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use aegis_audit::{AuditWriter, Event, Problem, Record, verify_log};

use crate::common::{ctx, event, keys, options, vopts};

const BIN: &str = env!("CARGO_BIN_EXE_aegis-audit");

#[test]
fn killed_writers_leave_a_verifiable_prefix_and_the_next_writer_continues() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("checkpoints"));
    let mut seed = std::process::id() as u64 | 1;
    let sinks = |sink: &std::path::Path| {
        if sink.exists() {
            vec![sink.to_path_buf()]
        } else {
            vec![]
        }
    };
    let mut total_before = 0u64;
    for round in 0..6 {
        let mut child = Command::new(BIN)
            .arg("append")
            .arg(&log)
            .args([
                "--agent",
                &format!("round{round}"),
                "--count",
                "0",
                "--batch",
                "3",
            ])
            .arg("--secret-key")
            .arg(&k.secret)
            .args(["--every-records", "40", "--sink"])
            .arg(&sink)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Let the writer get going (it must have appended past the last state), then kill it at
        // a pseudo-random moment.
        let before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) <= before
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(seed % 40));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Whatever the kill left, the complete records verify; a torn tail is reported precisely.
        let s = sinks(&sink);
        let s: Vec<&std::path::Path> = s.iter().map(|p| p.as_path()).collect();
        let r = verify_log(&log, &vopts(Some(&k), &s)).unwrap();
        match &r.failure {
            None => {}
            // Without a checkpoint yet, a key demands one; otherwise only a torn tail may remain.
            Some(f) => assert!(
                matches!(
                    f.problem,
                    Problem::TornTail { .. } | Problem::NoSignedCheckpoint(_)
                ),
                "round {round}: {f}"
            ),
        }
        assert!(
            r.records > total_before,
            "round {round}: the writer made progress"
        );

        // The next writer (in this process) repairs if needed and extends the same chain.
        let mut w = AuditWriter::open(&log, options(Some(&k), 40, Some(&sink))).unwrap();
        w.append(&ctx("after-crash"), &event(round)).unwrap();
        w.close().unwrap();
        let r = verify_log(&log, &vopts(Some(&k), &[&sink])).unwrap();
        assert!(r.is_ok(), "round {round}: {:?}", r.failure);
        total_before = r.records;
    }
}

#[test]
fn a_torn_last_line_is_cut_off_and_recorded_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    for i in 0..3 {
        w.append(&ctx("a"), &event(i)).unwrap();
    }
    drop(w);
    let good_len = std::fs::metadata(&log).unwrap().len();
    // Simulate a write cut short by a crash: half a record, no newline.
    let torn = br#"{"v":1,"seq":3,"ts":"2026-01-01T00:00:00.000000000Z","host":"h","bo"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(torn)
        .unwrap();

    let r = verify_log(&log, &vopts(None, &[])).unwrap();
    let f = r.failure.clone().unwrap();
    assert_eq!((r.records, f.seq, f.offset), (3, 3, good_len));
    assert_eq!(
        f.problem,
        Problem::TornTail {
            bytes: torn.len() as u64
        }
    );

    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    let info = w.append(&ctx("a"), &event(4)).unwrap();
    drop(w);
    assert_eq!(info.seq, 4, "seq 3 is the repair marker");
    let r = verify_log(&log, &vopts(None, &[])).unwrap();
    assert!(r.is_ok(), "{:?}", r.failure);
    assert_eq!(r.repairs.len(), 1);
    assert_eq!(
        (r.repairs[0].seq, r.repairs[0].offset, r.repairs[0].bytes),
        (3, good_len, torn.len() as u64)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let marker = Record::parse(text.lines().nth(3).unwrap().as_bytes()).unwrap();
    let want_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(torn));
    assert_eq!(
        marker.event,
        Event::TailRepaired {
            offset: good_len,
            bytes: torn.len() as u64,
            sha256: want_sha
        }
    );
}

#[test]
fn a_damaged_complete_last_record_makes_the_writer_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    w.append(&ctx("a"), &event(0)).unwrap();
    drop(w);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"garbage that is not a record\n")
        .unwrap();
    let err = AuditWriter::open(&log, options(None, 0, None))
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("damaged at byte offset") && msg.contains("refusing to append"),
        "{msg}"
    );
}

#[test]
fn callers_cannot_append_log_internal_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = AuditWriter::open(&dir.path().join("l"), options(None, 0, None)).unwrap();
    let ev = Event::TailRepaired {
        offset: 0,
        bytes: 1,
        sha256: String::new(),
    };
    assert!(
        w.append(&ctx("a"), &ev)
            .unwrap_err()
            .to_string()
            .contains("tail_repaired")
    );
}

#[test]
fn repair_after_a_checkpoint_keeps_later_checkpoints_valid() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("ck"));
    let mut w = AuditWriter::open(&log, options(Some(&k), 4, Some(&sink))).unwrap();
    for i in 0..6 {
        w.append(&ctx("a"), &event(i)).unwrap();
    }
    drop(w); // no close: records after the checkpoint at seq 4 stay unsigned
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(br#"{"v":1,"seq":7,"#)
        .unwrap();
    let mut w = AuditWriter::open(&log, options(Some(&k), 4, Some(&sink))).unwrap();
    for i in 0..9 {
        w.append(&ctx("b"), &event(i)).unwrap();
    }
    w.close().unwrap();
    let r = verify_log(&log, &vopts(Some(&k), &[&sink])).unwrap();
    assert!(r.is_ok(), "{:?}", r.failure);
    assert_eq!(r.repairs.len(), 1);
    assert!(r.signed_checkpoints >= 3, "{}", r.signed_checkpoints);
    assert_eq!(
        r.signed_records, r.records,
        "the final checkpoint covers everything"
    );
}

#[test]
fn a_long_last_record_is_found_by_widening_the_tail_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    w.append(&ctx("a"), &event(0)).unwrap();
    // Long strings are capped at MAX_FIELD_BYTES, so a long record is one with many fields.
    let big = Event::AgentStarted { identity: None,
        command: vec!["x".repeat(1000); 300],
        pid: 1,
    };
    w.append(&ctx("a"), &big).unwrap();
    drop(w);
    // A fresh writer must read past 64 KiB to find the start of the last record.
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    assert_eq!(w.append(&ctx("a"), &event(1)).unwrap().seq, 2);
    drop(w);
    assert!(verify_log(&log, &vopts(None, &[])).unwrap().is_ok());
    let huge = Event::AgentStarted { identity: None,
        command: vec!["x".repeat(1000); aegis_audit::MAX_RECORD_BYTES / 1000],
        pid: 1,
    };
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    assert!(
        w.append(&ctx("a"), &huge)
            .unwrap_err()
            .to_string()
            .contains("exceeds")
    );
}
