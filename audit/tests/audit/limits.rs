//! What bounds the log and keeps it whole (issue 11.3, 11.4): long fields are capped with
//! their hash; `repeated` records wrap ordinary events only; the room reserved past the end
//! takes the closing records when the filesystem is full (on a real, small tmpfs); runs that
//! started and never ended are reported.

use std::path::Path;

use aegis_audit::{AuditError, AuditWriter, Event, MAX_FIELD_BYTES, Reserve, Verdict, verify_log};

use crate::common::*;

fn proxy_event(path: &str) -> Event {
    Event::ProxyRequest {
        mode: "decision".into(),
        host: "aegis".into(),
        port: 3128,
        method: Some("fs".into()),
        path: Some(path.into()),
        decision: Verdict::Deny,
        rule: None,
        reason: "default deny".into(),
        bytes_up: 0,
        bytes_down: 0,
        exe: None,
        count: 1,
    }
}

#[test]
fn a_long_field_keeps_a_prefix_and_the_hash_of_the_whole_value() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    // 60 KB, with a multi-byte character across the cut: the marker (of a value whose length
    // has 5 digits) and what is kept of the value are MAX_FIELD_BYTES together.
    let keep = MAX_FIELD_BYTES - aegis_audit::cut_marker(&"x".repeat(60_000)).len();
    let long = format!("/{}é{}", "a".repeat(keep - 2), "b".repeat(60_000));
    let info = w.append(&ctx("a"), &proxy_event(&long)).unwrap();
    let short = "/etc/passwd";
    w.append(&ctx("a"), &proxy_event(short)).unwrap();
    w.close().unwrap();
    assert!(info.len < 2048, "the record is small: {} bytes", info.len);
    let text = std::fs::read_to_string(&log).unwrap();
    let recs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stored = recs[0]["event"]["path"].as_str().unwrap();
    let expected = format!("/{}{}", "a".repeat(keep - 2), aegis_audit::cut_marker(&long));
    assert_eq!(stored, expected, "the prefix up to a character boundary, then what was cut and its sha256");
    assert!(stored.len() <= MAX_FIELD_BYTES, "{} bytes in all", stored.len());
    let mut again = stored.to_string();
    assert!(!aegis_audit::cap_string(&mut again), "capping a capped value again changes nothing (its hash stays the whole value's)");
    assert_eq!(again, stored);
    assert_eq!(Event::into_capped(proxy_event(&long)), proxy_event(stored), "a producer's capping and the writer's agree");
    assert_eq!(recs[1]["event"]["path"], short, "short fields are stored whole");
    assert!(verify_log(&log, &vopts(None, &[])).unwrap().is_complete());
}

#[test]
fn repeated_records_count_ordinary_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    let note = Event::Note {
        component: "t".into(),
        message: "again".into(),
    };
    let rep = |count, event| Event::Repeated {
        count,
        event: Box::new(event),
    };
    for bad in [rep(0, note.clone()), rep(2, rep(1, note.clone()))] {
        assert!(matches!(w.append(&ctx("a"), &bad), Err(AuditError::InvalidEvent(_))), "{bad:?}");
    }
    let fake_repair = Event::TailRepaired {
        offset: 0,
        bytes: 1,
        sha256: "0".repeat(64),
    };
    assert!(matches!(w.append(&ctx("a"), &rep(1, fake_repair)), Err(AuditError::InvalidEvent(_))));
    w.append(&ctx("a"), &rep(41, note)).unwrap();
    w.close().unwrap();
    assert!(verify_log(&log, &vopts(None, &[])).unwrap().is_complete());
    // A hand-made log whose only record nests a `repeated` in a `repeated` does not verify.
    let forged = dir.path().join("forged.log");
    let line = format!(
        r#"{{"v":1,"seq":0,"ts":"2026-01-01T00:00:00.000000000Z","host":"h","boot":"b","agent":"","bundle":"","policy":"","event":{{"kind":"repeated","count":1,"event":{{"kind":"repeated","count":1,"event":{{"kind":"note","component":"x","message":"y"}}}}}},"prev":"{}"}}"#,
        "0".repeat(64)
    );
    std::fs::write(&forged, line + "\n").unwrap();
    let r = verify_log(&forged, &vopts(None, &[])).unwrap();
    let f = r.failure.expect("a nested repeated record is refused");
    assert_eq!(f.seq, 0);
    assert!(matches!(f.problem, aegis_audit::Problem::InvalidRecord(_)), "{:?}", f.problem);
}

/// The proxy's summary of repeats says how many decisions it stands for in a field
/// (`count`), so the counts of a log add up without reading its prose; a plain record keeps
/// its old shape (no `count`, read as 1), and a summary of nothing is refused.
#[test]
fn a_proxy_summary_carries_its_count_and_a_plain_record_keeps_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    let with = |count| match proxy_event("/q") {
        Event::ProxyRequest { mode, host, port, method, path, decision, rule, reason, bytes_up, bytes_down, exe, .. } => {
            Event::ProxyRequest { mode, host, port, method, path, decision, rule, reason, bytes_up, bytes_down, exe, count }
        }
        other => other,
    };
    assert!(matches!(w.append(&ctx("a"), &with(0)), Err(AuditError::InvalidEvent(_))), "a summary of nothing");
    w.append(&ctx("a"), &with(1)).unwrap();
    w.append(&ctx("a"), &with(2999)).unwrap();
    w.close().unwrap();
    assert!(verify_log(&log, &vopts(None, &[])).unwrap().is_complete());
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone()).collect();
    assert!(events[0].get("count").is_none(), "a plain record has no count: {}", events[0]);
    assert_eq!(events[1]["count"], 2999);
    let parsed: Event = serde_json::from_value(events[0].clone()).unwrap();
    assert_eq!(parsed, with(1), "absent reads as 1");
}

#[test]
fn verify_reports_runs_that_started_and_never_ended() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    let started = |pid| Event::AgentStarted { identity: None,
        command: vec!["/bin/agent".into()],
        pid,
    };
    let exited = |pid| Event::AgentExited {
        pid,
        status: Some(0),
        signal: None,
        cpu_user_us: 0,
        cpu_sys_us: 0,
        peak_memory_bytes: None,
    };
    // Run 10 ends; run 11 never does; pid 12 is used twice and only the second run ends;
    // run 10 of another agent never ends (the pid alone is not the run).
    for (agent, e) in [
        ("a", started(10)),
        ("a", started(11)),
        ("a", started(12)),
        ("b", started(10)),
        ("a", exited(10)),
        ("a", started(12)),
        ("a", exited(12)),
    ] {
        w.append(&ctx(agent), &e).unwrap();
    }
    w.close().unwrap();
    let r = verify_log(&log, &vopts(None, &[])).unwrap();
    assert!(r.is_ok() && !r.is_complete(), "{r:?}");
    let open: Vec<(u64, &str, u32)> = r.open_runs.iter().map(|o| (o.seq, o.agent.as_str(), o.pid)).collect();
    assert_eq!(open, vec![(1, "a", 11), (2, "a", 12), (3, "b", 10)]);
    assert!(r.open_runs[0].to_string().contains("has no agent_exited record"), "{}", r.open_runs[0]);
}

/// Runs `f` in a thread of its own that has a private mount namespace with a tmpfs of
/// `size` bytes at `dir` (the mount is gone with the thread's namespace). None, after
/// printing why, when this is not root.
fn on_small_tmpfs<T: Send>(dir: &Path, size: u64, f: impl FnOnce() -> T + Send) -> Option<T> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to mount a small tmpfs (in a private mount namespace)");
        return None;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            let opts = std::ffi::CString::new(format!("size={size}")).unwrap();
            // SAFETY: unshare affects this thread only (its own fs and mount namespace); the
            // mounts use NUL-terminated strings that outlive the calls.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare: {}", std::io::Error::last_os_error());
                assert_eq!(libc::mount(c"none".as_ptr(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()), 0);
                assert_eq!(
                    libc::mount(c"aegis-audit-test".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, opts.as_ptr().cast()),
                    0,
                    "mount tmpfs: {}",
                    std::io::Error::last_os_error()
                );
            }
            f()
        })
        .join()
        .ok()
    })
}

/// Writes filler until the filesystem is full.
fn fill(dir: &Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![b'x'; 4096];
    while f.write_all(&block).and_then(|()| f.sync_data()).is_ok() {}
}

fn batch(n: usize) -> Vec<Event> {
    (0..n).map(|i| proxy_event(&format!("/question/{i}/{}", "p".repeat(500)))).collect()
}

/// With a reserve, the append that would eat into it fails before writing anything; the
/// same records then land in the reserve (with the closing records) and the log verifies,
/// complete. Without one (the control), the final write fails as well: records are lost.
#[test]
fn the_reserve_takes_the_last_records_when_the_filesystem_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().to_path_buf();
    let r = on_small_tmpfs(&mnt, 1 << 20, || {
        let log = mnt.join("audit.log");
        let mut o = options(None, 0, None);
        o.reserve = 64 << 10;
        let mut w = AuditWriter::open(&log, o).unwrap();
        assert_eq!(w.reserve(), &Reserve::Held(64 << 10), "tmpfs preallocates");
        w.append(&ctx("a"), &Event::AgentStarted { identity: None, command: vec!["agent".into()], pid: 7 }).unwrap();
        fill(&mnt);
        let before = std::fs::metadata(&log).unwrap().len();
        let kept = batch(20);
        let e = w.append_batch(&ctx("a"), &kept).unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), before, "nothing was written by the failed append");
        w.spend_reserve();
        let mut last = kept.clone();
        last.push(Event::AgentExited { pid: 7, status: None, signal: Some(9), cpu_user_us: 0, cpu_sys_us: 0, peak_memory_bytes: None });
        w.append_batch(&ctx("a"), &last).unwrap();
        w.close().unwrap();
        let rep = verify_log(&log, &vopts(None, &[])).unwrap();
        assert!(rep.is_complete(), "{rep:?}");
        assert_eq!(rep.records, 22);

        // Control: the same without a reserve loses the last records.
        std::fs::remove_file(mnt.join("filler")).unwrap();
        let log2 = mnt.join("control.log");
        let mut w = AuditWriter::open(&log2, options(None, 0, None)).unwrap();
        w.append(&ctx("a"), &Event::AgentStarted { identity: None, command: vec!["agent".into()], pid: 7 }).unwrap();
        fill(&mnt);
        assert!(w.append_batch(&ctx("a"), &kept).is_err(), "the filesystem is full");
        assert!(w.append_batch(&ctx("a"), &last).is_err(), "and stays full: no room for the end");
    });
    if r.is_none() {
        eprintln!("(skipped)");
    }
}
