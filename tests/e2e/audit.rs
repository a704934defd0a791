//! The audit log keeps its promises under a hostile agent (issue 11.3, 11.4), for real, as
//! root: a filesystem that fills up stops the run with exit 123 and loses no record; a flood
//! that no aggregation can fold (60 KB CONNECT targets, each different) ends at the run's
//! audit budget (exit 122) with every record capped; identical questions are counted, not
//! written one by one, and the counts add up exactly; a supervisor killed mid-run leaves a
//! log that `aegis-audit verify` calls incomplete (exit 4).
//! Policy: `tests/fixtures/e2e/audit-proxy.toml` (proxy mode: every question to the decision
//! endpoint and every refused CONNECT is a decision the supervisor records; the proxy
//! aggregates repeats of one key into summaries that carry their `count`, docs/proxy.md
//! "Audit"); agent: `tests/fixtures/e2e/audit_agent.py`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aegis_tests::{Run, bin, run};
use serde_json::{Value, json};

use crate::launch::{AGENT_UID, Lab, audit_events, fixture, kinds, run_for, sandbox_ready};

/// The lab, the proxy bundle and a workspace the agent may write.
fn setup() -> (Lab, PathBuf) {
    let lab = Lab::new();
    let bundle = lab.build(&fixture("audit-proxy.toml"), "bundle");
    lab.agent_dir("ws");
    (lab, bundle)
}

fn agent(args: &[&str]) -> Vec<String> {
    let mut v = vec!["/usr/bin/python3".to_string(), fixture("audit_agent.py").display().to_string()];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// `aegis-exec [flags] --param WS=ws --param FIXTURES=... BUNDLE -- cmd` with the lab's key.
fn exec(lab: &Lab, bundle: &Path, ws: &Path, log: &Path, flags: &[&str], cmd: &[String]) -> Command {
    let mut c = Command::new(bin("aegis-exec"));
    c.env("AEGIS_STATE_DIR", &lab.state)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .arg("--trust-key")
        .arg(&lab.public)
        .arg("--audit-log")
        .arg(log)
        .args(flags)
        .arg("--param")
        .arg(format!("WS={}", ws.display()))
        .arg("--param")
        .arg(format!("FIXTURES={}", fixture("").display()))
        .arg(bundle)
        .arg("--")
        .args(cmd);
    c
}

fn proxy_records(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["kind"] == "proxy_request").collect()
}

/// How many decisions of the proxy that `which` selects the log accounts for: each
/// `proxy_request` stands for its `count` (1 when absent: not a summary), and a `repeated`
/// record for `count` more of its event (docs/audit.md §14). Also the number of records
/// doing the counting.
fn decisions(events: &[Value], which: impl Fn(&Value) -> bool) -> (u64, usize) {
    let stands_for = |e: &Value| e["count"].as_u64().unwrap_or(1);
    let mut n = 0;
    let mut records = 0;
    for e in events {
        let (times, ev) = match e["kind"].as_str() {
            Some("repeated") => (e["count"].as_u64().unwrap(), &e["event"]),
            _ => (1, e),
        };
        if ev["kind"] == "proxy_request" && which(ev) {
            n += times * stands_for(ev);
            records += 1;
        }
    }
    (n, records)
}

/// Issue 11.3: the workspace and the log share one small filesystem, which the agent fills.
/// Before the fix the decision records and the refused CONNECTs were lost, the proxy kept
/// answering, `aegis-exec` exited 0 and the log verified as if complete. Now the first append
/// that cannot keep the reserve fails before writing, the agent is killed, every decision the
/// proxy answered is in the log (written into the room reserved at open), with the reason and
/// the agent's exit after it, and `aegis-exec` exits 123. The agent alternates a question
/// (the same key each time: the proxy counts them into summaries, which must not be lost
/// either) with a CONNECT to a new refused host (a record each: enough to need more room
/// than the full filesystem has).
#[test]
fn a_full_filesystem_stops_the_run_and_loses_no_record() {
    if !sandbox_ready() {
        return;
    }
    if !Path::new("/usr/bin/unshare").exists() {
        eprintln!("SKIP: /usr/bin/unshare (util-linux) is missing: no private mount namespace for the small tmpfs");
        return;
    }
    let (lab, bundle) = setup();
    let mnt = lab.root_dir("small");
    let ws = mnt.join("ws");
    let log = mnt.join("audit.log");
    let kept = lab.path("audit.log");
    let inner = exec(&lab, &bundle, &ws, &log, &[], &agent(&["fill", &ws.display().to_string(), "2000"]));
    let quoted: Vec<String> = std::iter::once(inner.get_program()).chain(inner.get_args()).map(|a| format!("'{}'", a.to_string_lossy())).collect();
    // A private mount namespace, so the 2 MiB tmpfs is gone with the test; the log is copied
    // out after aegis-exec returns.
    let script = format!(
        "set -u; mount -t tmpfs -o size=2m aegis-test-full '{m}' && mkdir '{ws}' && chown {u}:{u} '{ws}' || exit 99; {cmd}; code=$?; cp '{log}' '{kept}'; exit $code",
        m = mnt.display(),
        ws = ws.display(),
        u = AGENT_UID,
        cmd = quoted.join(" "),
        log = log.display(),
        kept = kept.display(),
    );
    let mut c = Command::new("/usr/bin/unshare");
    c.args(["--mount", "--propagation", "private", "/bin/sh", "-c", &script]);
    for (k, v) in inner.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let t = Instant::now();
    let r = run_for(&mut c, Duration::from_secs(60));
    assert_eq!(r.code, 123, "aegis-exec exits 123 when the audit log cannot be written\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("FILLED 28"), "the agent filled the filesystem: {}", r.stdout);
    assert!(!r.stdout.contains("NOT STOPPED"), "the agent was stopped: {}", r.stdout);
    assert!(t.elapsed() < Duration::from_secs(25), "stopped at once, not after the agent's sleep: {:?}", t.elapsed());
    assert!(r.stderr.contains("the audit log could not be written"), "{}", r.stderr);
    let answered = r.stdout.lines().filter(|l| l.starts_with("ANSWERED ")).count() as u64;
    let refused: Vec<String> = r.stdout.lines().filter_map(|l| l.strip_prefix("REFUSED ")).map(|i| format!("refused-{i}.example.org")).collect();
    assert!(refused.len() < 2000, "the agent was stopped long before its last CONNECT: {} refused", refused.len());
    // The log verifies, the run in it ended, and nothing the proxy answered is missing: every
    // question is counted once (the agent may have asked one more than it saw answered, and
    // asked the first before anything could fail), every refused CONNECT it saw has its record.
    let events = audit_events(&kept);
    let k = kinds(&events);
    let (questions, records) = decisions(&events, |e| e["mode"] == "decision");
    eprintln!("filled: {answered} questions answered ({questions} counted in {records} records), {} CONNECTs refused", refused.len());
    assert!(questions >= answered.max(1) && questions <= answered + 1, "{answered} questions answered, {questions} in the log");
    let hosts: Vec<&str> = proxy_records(&events).iter().filter(|e| e["mode"] == "tunnel" && e["decision"] == "deny").filter_map(|e| e["host"].as_str()).collect();
    for h in &refused {
        assert!(hosts.contains(&h.as_str()), "the refused CONNECT to {h} is not in the log: {hosts:?}");
    }
    assert!(hosts.len() <= refused.len() + 1, "each refused CONNECT once: {} records, {} seen refused", hosts.len(), refused.len());
    let failed = events.iter().position(|e| e["kind"] == "note" && e["message"].as_str().is_some_and(|m| m.contains("append failed"))).unwrap_or_else(|| panic!("no note says the append failed: {k:?}"));
    let exited = k.iter().position(|x| x == "agent_exited").unwrap();
    assert!(failed < exited, "the failure is recorded before the agent's exit: {k:?}");
    assert_eq!(events[exited]["signal"], 9, "the agent was killed: {}", events[exited]);
}

/// Issue 11.4: a flood that no aggregation can fold, with 60 KB fields: CONNECTs whose
/// targets are 60 KB and each different (the proxy refuses each as malformed, and a target it
/// has not seen is a record of its own), after one question about a 4 KB path. Each field
/// keeps at most `MAX_FIELD_BYTES` in all, ending in the SHA-256 of the whole value (checked
/// against the agent's own hashes: capped once, whoever caps), and the run ends at its
/// budget: one `audit_budget` record, the agent killed, exit 122, the run's records at most
/// the budget and nothing of the run after it (only the supervisor's closing records).
#[test]
fn a_flood_the_proxy_cannot_aggregate_ends_at_the_audit_budget() {
    if !sandbox_ready() {
        return;
    }
    let (lab, bundle) = setup();
    let log = lab.path("flood.log");
    let budget = 256 * 1024;
    let mut c = exec(&lab, &bundle, &lab.path("ws"), &log, &["--audit-budget", "256K"], &agent(&["targets", "20000", "60000"]));
    let r = run_for(&mut c, Duration::from_secs(120));
    assert_eq!(r.code, 122, "the run ends at its audit budget with exit 122\n{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("DONE"), "the agent was stopped before it finished: {}", r.stdout);
    let events = audit_events(&log);
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines() {
        assert!(line.len() < 4096, "every record is small, the 60 KB fields capped: {} bytes", line.len());
    }
    // The run's records (launch included) take at most the budget; after the `audit_budget`
    // record come only the supervisor's closing records (not counted: the agent cannot
    // cause them; how many depends on the host, e.g. stale tables swept).
    let b = events.iter().position(|e| e["kind"] == "resource" && e["limit"] == "audit_budget").unwrap_or_else(|| panic!("no audit_budget record: {:?}", kinds(&events)));
    let run_bytes: usize = text.lines().take(b).map(|l| l.len() + 1).sum();
    assert!(run_bytes as u64 <= budget, "the run's records ({run_bytes} bytes) stay within the budget ({budget})");
    let closing: Vec<&Value> = events.iter().skip(b + 1).collect();
    eprintln!("budget {budget}: run records {run_bytes} bytes, then {} closing record(s) in {} bytes", closing.len(), text.len() - run_bytes);
    assert!(
        closing.iter().all(|e| e["kind"] == "agent_exited" || (e["kind"] == "note" && e["component"] == "supervisor")),
        "nothing of the run is written past its budget: {closing:#?}"
    );
    let hash_of = |tag: &str| r.stdout.lines().find_map(|l| l.strip_prefix(tag)).unwrap_or_else(|| panic!("no {tag}in {}", r.stdout)).trim().to_string();
    let capped = |e: &Value, field: &str| e[field].as_str().is_some_and(|v| v.len() <= 1024 && v.contains("…[cut: ") && v.contains(" bytes, sha256 "));
    let question = proxy_records(&events).into_iter().find(|e| e["mode"] == "decision").unwrap_or_else(|| panic!("the question is not in the log"));
    let path = question["path"].as_str().unwrap();
    assert!(path.starts_with("read /qqq") && path.ends_with(&format!("…[cut: 4005 bytes, sha256 {}]", hash_of("LONG "))), "the path is capped with the hash of the whole: {question}");
    let targets: Vec<&Value> = proxy_records(&events).into_iter().filter(|e| e["mode"] == "tunnel" && e["host"].as_str().is_some_and(|h| h.starts_with('t'))).collect();
    assert!(targets.len() > 20, "the budget allowed a good number of records first: {}", targets.len());
    assert!(targets.iter().all(|e| e["count"].is_null()), "distinct targets are records of their own, not a summary");
    assert!(targets.iter().all(|e| capped(e, "host") && capped(e, "reason")), "every long field says what was cut and carries its hash: {:#?}", targets.first());
    assert!(targets[0]["host"].as_str().unwrap().contains(&hash_of("TARGET ")), "the first target's hash: {}", targets[0]);
    let k = kinds(&events);
    assert_eq!(k.iter().filter(|x| *x == "resource").count(), 1, "one record says so: {k:?}");
    let exited = k.iter().position(|x| x == "agent_exited").unwrap();
    assert!(b < exited && events[exited]["signal"] == 9, "then the agent was killed: {k:?}");
    assert!(r.stderr.contains("audit budget"), "{}", r.stderr);
}

/// Issue 11.4: the same question asked over and over is one record plus counts (the proxy's
/// summaries, about one a second, and `repeated` records if the runtime's sink folds any),
/// and the counts add up exactly to the questions asked: nothing is dropped, nothing is
/// counted twice, the log stays small, and the run ends normally with the last count
/// written before the agent's exit.
#[test]
fn repeated_questions_are_counted_not_written() {
    if !sandbox_ready() {
        return;
    }
    let (lab, bundle) = setup();
    let log = lab.path("same.log");
    let mut c = exec(&lab, &bundle, &lab.path("ws"), &log, &[], &agent(&["flood", "3000", "3000", "same"]));
    let r = run_for(&mut c, Duration::from_secs(120));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let asked: u64 = r.stdout.lines().find_map(|l| l.strip_prefix("DONE ")).unwrap().trim().parse().unwrap();
    assert_eq!(asked, 3000, "{}", r.stdout);
    let events = audit_events(&log);
    let (counted, records) = decisions(&events, |e| e["mode"] == "decision");
    assert_eq!(counted, asked, "every question is a record or counted in one, once");
    assert!(records <= 100, "a handful of records, not {asked}: {records}");
    for r in events.iter().filter(|e| e["kind"] == "repeated") {
        assert_eq!((&r["event"]["kind"], &r["event"]["mode"]), (&json!("proxy_request"), &json!("decision")), "{r}");
    }
    let k = kinds(&events);
    let last_count = events.iter().rposition(|e| e["kind"] == "repeated" || e["count"].as_u64().is_some_and(|n| n > 1)).unwrap_or_else(|| panic!("no record counts repeats: {k:?}"));
    assert!(last_count < k.iter().position(|x| x == "agent_exited").unwrap(), "the last count comes before the exit: {k:?}");
    let size = std::fs::metadata(&log).unwrap().len();
    assert!(size < 100_000, "{asked} questions about a 3 KB path took {size} bytes of log");
}

/// Issue 11.3: a supervisor killed with SIGKILL cannot write its closing records; the agent
/// dies with it (parent-death signal). The chain of what was written still verifies, but
/// `aegis-audit verify` reports the run as started and never ended (exit 4), not as OK.
#[test]
fn a_killed_supervisor_leaves_a_run_that_verify_reports_as_never_ended() {
    if !sandbox_ready() {
        return;
    }
    let (lab, bundle) = setup();
    let log = lab.path("killed.log");
    let cmd = vec!["/usr/bin/python3".to_string(), "-c".into(), "import time; time.sleep(60)".into()];
    let mut child = exec(&lab, &bundle, &lab.path("ws"), &log, &[], &cmd).stdin(std::process::Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("\"kind\":\"agent_started\"") {
        assert!(t.elapsed() < Duration::from_secs(30), "the agent never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let v: Run = run(Command::new(bin("aegis-audit")).arg("verify").arg(&log));
    assert_eq!(v.code, 4, "verify exits 4 for a run that never ended: {}{}", v.stdout, v.stderr);
    assert!(v.stdout.starts_with("INCOMPLETE "), "{}", v.stdout);
    assert!(v.stdout.contains("run of agent \"e2e-audit\"") && v.stdout.contains("has no agent_exited record"), "{}", v.stdout);
    let j = run(Command::new(bin("aegis-audit")).arg("verify").arg("--json").arg(&log));
    let j: Value = serde_json::from_str(j.stdout.trim()).unwrap();
    assert_eq!((j["ok"].as_bool(), j["complete"].as_bool()), (Some(true), Some(false)), "{j}");
    assert_eq!(j["open_runs"].as_array().map(Vec::len), Some(1), "{j}");
}

/// Issue 12.9: the README's end-to-end `aegis-audit verify LOG --key PUB` failed on every
/// untampered log (aegis-exec wrote no checkpoint, so nothing was signed). With
/// `--checkpoint-key` the run ends with a signed checkpoint (and a copy in the sink), the
/// README's line passes, a wrong key and a log without checkpoints fail, a key others can read
/// is refused, and the key id is printed the same way by `aegisc keygen`, the enforcement
/// report and `aegis-audit verify`.
#[test]
fn signed_checkpoints_make_the_readme_verify_line_pass() {
    if !sandbox_ready() {
        return;
    }
    let (lab, bundle) = setup();
    let keygen = run(aegis_tests::aegisc().arg("keygen").arg("-o").arg(lab.path("host")));
    assert_eq!(keygen.code, 0, "{}", keygen.stderr);
    let host_id = keygen.stdout.lines().find_map(|l| l.strip_prefix("key id:")).unwrap().trim().to_string();
    assert_eq!(host_id.len(), 16, "{host_id}");
    let (key, public, sink) = (lab.path("host.key"), lab.path("host.pub"), lab.path("audit.checkpoints"));
    let log = lab.path("signed.log");
    let cmd = vec!["/usr/bin/python3".to_string(), "-c".into(), "print('hello')".into()];
    let flags = ["--checkpoint-key", key.to_str().unwrap(), "--checkpoint-sink", sink.to_str().unwrap()];
    let r = run_for(&mut exec(&lab, &bundle, &lab.path("ws"), &log, &flags, &cmd), Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The README's line, as written.
    let v = run(Command::new(bin("aegis-audit")).arg("verify").arg(&log).arg("--key").arg(&public));
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains(&format!("signature-checked with key {host_id})")), "{}", v.stdout);
    assert!(!v.stdout.contains("follow the last signed checkpoint"), "the final checkpoint covers the whole run: {}", v.stdout);
    let v = run(Command::new(bin("aegis-audit")).arg("verify").arg(&log).arg("--key").arg(&public).arg("--checkpoint").arg(&sink));
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert!(v.stdout.contains("1 external matched"), "{}", v.stdout);
    // The report names the checkpoint key as keygen printed it.
    let events = audit_events(&log);
    let report = events.iter().find(|e| e["kind"] == "enforcement_report").unwrap();
    let audit_layer = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "audit").unwrap();
    assert!(audit_layer["detail"].as_str().unwrap().contains(&format!("checkpoints signed by key {host_id}")), "{audit_layer}");
    // The bundle's signer is printed the same way: as `aegisc verify` prints it.
    let signer = events.iter().find(|e| e["kind"] == "bundle_verified").unwrap()["key_id"].as_str().unwrap().to_string();
    let av = run(aegis_tests::aegisc().arg("verify").arg(&bundle).arg("--key").arg(&lab.public));
    assert!(av.stdout.contains(&format!("signed by key {signer}")), "{} vs {signer}", av.stdout);

    // A wrong key fails; a run without --checkpoint-key has nothing signed to show.
    let other = run(aegis_tests::aegisc().arg("keygen").arg("-o").arg(lab.path("other")));
    assert_eq!(other.code, 0);
    let v = run(Command::new(bin("aegis-audit")).arg("verify").arg(&log).arg("--key").arg(lab.path("other.pub")));
    assert_eq!(v.code, 1, "{}", v.stdout);
    let unsigned = lab.path("unsigned.log");
    assert_eq!(run_for(&mut exec(&lab, &bundle, &lab.path("ws"), &unsigned, &[], &cmd), Duration::from_secs(60)).code, 0);
    let v = run(Command::new(bin("aegis-audit")).arg("verify").arg(&unsigned).arg("--key").arg(&public));
    assert_eq!(v.code, 1, "no signed checkpoint: {}", v.stdout);

    // A checkpoint key others can read is refused before anything runs.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let r = run_for(&mut exec(&lab, &bundle, &lab.path("ws"), &lab.path("refused.log"), &flags, &cmd), Duration::from_secs(60));
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
}
