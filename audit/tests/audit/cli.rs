//! The `aegis-audit` binary as a user runs it: exit codes, messages, filters, `tail -f`, and
//! interoperability with the `minisign` command-line tool.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use aegis_audit::{AuditWriter, Event, Record};

use crate::common::{ctx, event, keys, options, write_log};

const BIN: &str = env!("CARGO_BIN_EXE_aegis-audit");

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(BIN);
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn verify_exit_codes_and_precise_messages() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("ck"));
    // 7 records: the run started at record 2 ends at record 6.
    write_log(&log, 7, Some(&k), 3, Some(&sink));

    let ok = run(&[&"verify", &log, &"--key", &k.public, &"--checkpoint", &sink]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).starts_with("OK "), "{}", stdout(&ok));

    // Tamper with record 2's agent: record 3 no longer chains to it.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let changed = lines[2].replacen("\"agent\":\"alice\"", "\"agent\":\"alicf\"", 1);
    lines[2] = &changed;
    let bad = dir.path().join("bad.log");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let o = run(&[&"verify", &bad]);
    assert_eq!(o.status.code(), Some(1));
    let offset = text.lines().take(3).map(|l| l.len() + 1).sum::<usize>();
    let out = stdout(&o);
    assert!(
        out.contains(&format!(
            "record seq 3 (line 4, byte offset {offset}): prev is"
        )),
        "{out}"
    );
    let j = run(&[&"verify", &bad, &"--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["failure"]["seq"].as_u64(),
            v["failure"]["offset"].as_u64()
        ),
        (Some(false), Some(3), Some(offset as u64))
    );

    // A run that started (record 2) and has no exit record: verified, but not complete.
    let open = dir.path().join("open.log");
    write_log(&open, 6, None, 0, None);
    let o = run(&[&"verify", &open]);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("INCOMPLETE "), "{}", stdout(&o));
    assert!(stdout(&o).contains("open: run of agent \"alice\" (pid 4242 on testhost) started at record seq 2"), "{}", stdout(&o));

    // Invalid input: missing log, bad key file.
    assert_eq!(
        run(&[&"verify", &dir.path().join("missing")]).status.code(),
        Some(2)
    );
    let junk = dir.path().join("junk.pub");
    std::fs::write(&junk, "not a key").unwrap();
    let o = run(&[&"verify", &log, &"--key", &junk]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.pub"));
    assert_eq!(run(&[&"verify"]).status.code(), Some(2), "missing argument");
}

#[test]
fn show_filters_by_agent_kind_decision_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_log(&log, 40, None, 0, None);
    let all: Vec<Record> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| Record::parse(l.as_bytes()).unwrap())
        .collect();

    let o = run(&[
        &"show",
        &log,
        &"--agent",
        &"bob",
        &"--kind",
        &"decision",
        &"--decision",
        &"deny",
        &"--format",
        &"json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let got: Vec<Record> = stdout(&o)
        .lines()
        .map(|l| Record::parse(l.as_bytes()).unwrap())
        .collect();
    let want: Vec<Record> = all
        .iter()
        .filter(|r| {
            r.agent == "bob"
                && matches!(
                    &r.event,
                    Event::Decision {
                        decision: aegis_audit::Verdict::Deny,
                        ..
                    }
                )
        })
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // JSON output is the stored bytes.
    let o = run(&[&"show", &log, &"--format", &"json"]);
    assert_eq!(o.stdout, std::fs::read(&log).unwrap());

    // Time window: [ts of record 10, ts of record 20).
    let o = run(&[
        &"show",
        &log,
        &"--since",
        &all[10].ts.as_str(),
        &"--until",
        &all[20].ts.as_str(),
        &"--format",
        &"json",
    ]);
    let seqs: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| Record::parse(l.as_bytes()).unwrap().seq)
        .collect();
    assert!(
        seqs.contains(&10) && !seqs.contains(&20) && !seqs.contains(&9),
        "{seqs:?}"
    );

    let table = stdout(&run(&[&"show", &log, &"--kind", &"agent_exited"]));
    assert!(table.lines().next().unwrap().contains("SEQ"), "{table}");
    assert!(
        table.contains("status 0 user=10us sys=5us peak_mem=1048576B"),
        "{table}"
    );
    assert_eq!(
        run(&[&"show", &log, &"--since", &"yesterday"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn tail_follow_prints_records_as_they_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_log(&log, 3, None, 0, None);
    let mut child = Command::new(BIN)
        .args(["tail", "-f", "-n", "2", "--format", "json"])
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seqs = Vec::new();
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        out.read_line(&mut line).unwrap();
        seqs.push(Record::parse(line.trim_end().as_bytes()).unwrap().seq);
    }
    assert_eq!(seqs, [1, 2], "the last two existing records first");
    let mut w = AuditWriter::open(&log, options(None, 0, None)).unwrap();
    w.append(&ctx("late"), &event(6)).unwrap();
    let start = Instant::now();
    line.clear();
    out.read_line(&mut line).unwrap();
    let rec = Record::parse(line.trim_end().as_bytes()).unwrap();
    assert_eq!((rec.seq, rec.agent.as_str()), (3, "late"));
    assert!(start.elapsed() < Duration::from_secs(5));
    child.kill().unwrap();
    child.wait().unwrap();
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-v").output().is_ok()
}

#[test]
fn minisign_cli_keys_sign_checkpoints_that_minisign_verifies() {
    if !have("minisign") {
        eprintln!("SKIP: the minisign command-line tool is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sk, pk) = (dir.path().join("c.key"), dir.path().join("c.pub"));
    let g = Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    let log = dir.path().join("audit.log");
    let o = run(&[
        &"append",
        &log,
        &"--count",
        &"5",
        &"--secret-key",
        &sk,
        &"--every-records",
        &"100",
        &"--close",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&[&"verify", &log, &"--key", &pk]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    // An independent check with the standard tool: body and .minisig rebuilt from the record.
    let text = std::fs::read_to_string(&log).unwrap();
    let rec = Record::parse(text.lines().last().unwrap().as_bytes()).unwrap();
    let Event::Checkpoint(c) = &rec.event else {
        panic!("last record is a checkpoint")
    };
    let body =
        aegis_audit::checkpoint_body(c.records, c.bytes, &c.root, &rec.ts, &rec.host, &rec.boot);
    let (bf, sf) = (dir.path().join("body"), dir.path().join("body.minisig"));
    std::fs::write(&bf, &body).unwrap();
    std::fs::write(
        &sf,
        aegis_audit::signature_file(&body, &c.sig, &c.global_sig),
    )
    .unwrap();
    let v = Command::new("minisign")
        .arg("-V")
        .arg("-m")
        .arg(&bf)
        .arg("-x")
        .arg(&sf)
        .arg("-p")
        .arg(&pk)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "{}{}",
        stdout(&v),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        stdout(&v).contains(&format!("Trusted comment: {body}")),
        "{}",
        stdout(&v)
    );
    std::fs::write(&bf, body.replace("records=", "records=1")).unwrap();
    let v = Command::new("minisign")
        .arg("-V")
        .arg("-m")
        .arg(&bf)
        .arg("-x")
        .arg(&sf)
        .arg("-p")
        .arg(&pk)
        .output()
        .unwrap();
    assert!(!v.status.success());
    let _ = Path::new(".");
}

#[test]
fn checkpoint_command_signs_the_current_state() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("ck"));
    write_log(&log, 7, None, 0, None);
    assert_eq!(
        run(&[&"verify", &log, &"--key", &k.public]).status.code(),
        Some(1),
        "no signed checkpoint yet"
    );
    let o = run(&[
        &"checkpoint",
        &log,
        &"--secret-key",
        &k.secret,
        &"--sink",
        &sink,
    ]);
    assert!(stdout(&o).contains("record seq 7"), "{}", stdout(&o));
    let o = run(&[&"verify", &log, &"--key", &k.public, &"--checkpoint", &sink]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = run(&[&"checkpoint", &log, &"--secret-key", &k.secret]);
    assert!(stdout(&o).contains("nothing written"), "{}", stdout(&o));
}

#[test]
fn an_independent_verifier_written_from_the_spec_agrees() {
    let python = ["/usr/bin/python3", "python3"].into_iter().find(|p| {
        Command::new(p)
            .arg("-c")
            .arg("1")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(python) = python else {
        eprintln!("SKIP: python3 is not installed");
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/independent_verifier.py");
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let log = dir.path().join("audit.log");
    write_log(&log, 37, Some(&k), 10, None);
    let with_key = have("minisign");
    if !with_key {
        eprintln!("SKIP (signatures only): the minisign command-line tool is not installed");
    }
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(&log);
    if with_key {
        cmd.arg(&k.public);
    }
    let o = cmd.output().unwrap();
    let report = aegis_audit::verify_log(&log, &crate::common::vopts(Some(&k), &[])).unwrap();
    assert!(report.is_ok());
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "OK {} {}",
            report.records,
            aegis_audit::to_hex(&report.root)
        ),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // And it fails where ours fails.
    let text = std::fs::read_to_string(&log).unwrap().replacen(
        "\"agent\":\"bob\"",
        "\"agent\":\"bOb\"",
        1,
    );
    std::fs::write(&log, text).unwrap();
    let o = Command::new(python).arg(script).arg(&log).output().unwrap();
    let ours = aegis_audit::verify_log(&log, &crate::common::vopts(None, &[]))
        .unwrap()
        .failure
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with(&format!("FAIL line {} offset {}:", ours.line, ours.offset)),
        "{} vs {ours}",
        stdout(&o)
    );
}

#[test]
fn prove_prints_proofs_that_verify_against_checkpoint_roots() {
    use aegis_audit::merkle::{verify_consistency, verify_inclusion};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_log(&log, 20, None, 0, None);
    let hx = |v: &serde_json::Value| aegis_audit::from_hex(v.as_str().unwrap()).unwrap();
    let path = |v: &serde_json::Value| v.as_array().unwrap().iter().map(hx).collect::<Vec<_>>();
    let o = run(&[&"prove", &log, &"--seq", &"7", &"--size", &"13"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(verify_inclusion(
        7,
        13,
        &hx(&v["record_hash"]),
        &path(&v["path"]),
        &hx(&v["root"])
    ));
    let o = run(&[&"prove", &log, &"--consistency", &"5"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["size"], 20);
    assert!(verify_consistency(
        5,
        20,
        &hx(&v["first_root"]),
        &hx(&v["root"]),
        &path(&v["path"])
    ));
    assert_eq!(
        run(&[&"prove", &log, &"--seq", &"20"]).status.code(),
        Some(2)
    );
    assert_eq!(run(&[&"prove", &log]).status.code(), Some(2));
}

/// `aegis-audit show LOG | head` used to end in a panic ("failed printing to stdout: Broken
/// pipe") and a backtrace; like any Unix filter it now ends quietly when the reader goes.
#[test]
fn show_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_log(&log, 3000, None, 0, None);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aegis-audit"))
        .arg("show")
        .arg(&log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "nothing on stderr: {err}");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}
