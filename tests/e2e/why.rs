//! Why, for every layer: each denial the agent meets is an audit record a person can read,
//! as root and as a user (uid 1000) who cannot read the kernel log, and `aegis why`
//! explains it: the rule that decided and where it is written, and the smallest policy
//! change that would allow it (checked), flagging changes that widen towards secrets.
//! What the records say the agent got is what the agent did get.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aegis_tests::*;
use serde_json::Value;

use crate::launch::{Lab, Who, audit_events, run_for, sandbox_ready};

/// The probe's policy: system files readable, its own directory writable, `/etc/shadow`
/// denied, only python executable, no network.
const POLICY: &str = r#"version = 1
[agent]
name = "why-probe"
[parameters]
WORK = "the agent's own directory"
[filesystem]
read = ["/usr", "/etc"]
write = ["${WORK}"]
deny = ["/etc/shadow"]
[exec]
allow = ["/usr/bin/python3"]
[network]
mode = "none"
[enforcement]
cgroup = "best-effort"
"#;

/// Tries what the policy refuses, prints `name errno` for each, then loops on a refused
/// system call for a second.
const PROBE: &str = r#"
import ctypes, errno, os, socket, sys, time, json
libc = ctypes.CDLL(None, use_errno=True)
R = {}
def t(name, f):
    try:
        f(); R[name] = "ok"
    except OSError as e:
        R[name] = errno.errorcode.get(e.errno, str(e.errno))
def call(fn, *a):
    if fn(*a) < 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
t("ptrace", lambda: call(libc.ptrace, 16, 1, 0, 0))
t("unshare", lambda: call(libc.unshare, 0x10000000))
t("socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
t("shadow", lambda: open("/etc/shadow").read())
t("hidden", lambda: open(sys.argv[2]).read())
t("readonly", lambda: open("/usr/lib/aegis-why-new", "w"))
t("exec", lambda: os.execv("/usr/bin/id", ["id"]))
t("nowhere", lambda: open("/usr/lib/aegis-why-nowhere").read())
t("ok", lambda: open(sys.argv[1] + "/mine.txt", "w").write("x"))
start, n = time.monotonic(), 0
while time.monotonic() - start < 1.0:
    libc.ptrace(16, 1, 0, 0); n += 1
R["loops"] = n
print(json.dumps(R))
"#;

/// `aegis` run as the lab's user, with its own `AEGIS_DIR` and a fixed environment.
pub(crate) fn aegis(lab: &Lab) -> Command {
    let mut c = match lab.who {
        Who::Root => Command::new(bin("aegis")),
        Who::User(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}")).arg(format!("--regid={u}")).arg("--init-groups").arg(bin("aegis"));
            c
        }
    };
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", lab.path("home"))
        .env("AEGIS_DIR", lab.path("aegis-dir"))
        .env("AEGIS_STATE_DIR", &lab.state)
        .env("NO_COLOR", "1")
        .current_dir(lab.tmp.path());
    c
}

/// The lab's files for one probe run: the policy, the agent's directory and the log path
/// (and `hidden.txt`, a file on the host the policy does not grant).
fn setup(lab: &Lab) -> (PathBuf, PathBuf, PathBuf) {
    let policy = lab.path("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    std::fs::write(lab.path("hidden.txt"), "on the host, not in the sandbox\n").unwrap();
    std::fs::create_dir_all(lab.path("home")).unwrap();
    let work = lab.agent_dir("work");
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    lab.give_to_user();
    (policy, work, lab.path("audit.log"))
}

fn probe(lab: &Lab, extra: &[&str]) -> (Value, Vec<Value>, PathBuf) {
    let (policy, work, log) = setup(lab);
    let mut c = aegis(lab);
    c.args(["run", "--policy"]).arg(&policy).arg("--audit-log").arg(&log).arg(format!("--param=WORK={}", work.display())).args(extra);
    c.args(["--", "/usr/bin/python3", "-c", PROBE]).arg(&work).arg(lab.path("hidden.txt"));
    let r = run_for(&mut c, Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let got: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    (got, audit_events(&log), log)
}

fn denials<'a>(events: &'a [Value], layer: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == "denial" && e["layer"] == layer).collect()
}

fn why_json(lab: &Lab, log: &Path, extra: &[&str]) -> Value {
    let mut c = aegis(lab);
    c.args(["why", "--format", "json", "--log"]).arg(log).args(extra);
    let r = run(&mut c);
    assert_eq!(r.code, 0, "aegis why: {}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn explained<'a>(why: &'a Value, what: &str) -> &'a Value {
    why["denials"].as_array().unwrap().iter().find(|d| d["what"].as_str().is_some_and(|w| w.contains(what))).unwrap_or_else(|| panic!("no explanation of {what}: {why:#}"))
}

/// Seccomp denials are records (call, decoded arguments, errno, the part of the policy),
/// for a user too (the kernel log is root's); a loop on a refused call is a handful of
/// records whose counts add up; `aegis why` names the fix and that it is dangerous.
#[test]
fn seccomp_denials_are_readable_records_for_root_and_for_a_user() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let started = Instant::now();
        let (got, events, log) = probe(&lab, &[]);
        let who = lab.who;
        for k in ["ptrace", "unshare", "socket"] {
            assert_eq!(got[k], "EPERM", "{who:?} {k}: {got}");
        }
        assert_eq!(got["ok"], "ok", "{who:?}: {got}");
        let seccomp = denials(&events, "seccomp");
        let first = |prefix: &str| seccomp.iter().find(|e| e["target"].as_str().is_some_and(|t| t.starts_with(prefix))).copied();
        let ptrace = first("ptrace(PTRACE_ATTACH, 1, NULL, NULL)").unwrap_or_else(|| panic!("{who:?}: {seccomp:?}"));
        assert_eq!((ptrace["result"].as_str(), ptrace["source"].as_str()), (Some("EPERM"), Some("kernel")));
        assert!(first("unshare(CLONE_NEWUSER)").is_some(), "{who:?}: {seccomp:?}");
        let sock = first("socket(AF_INET, SOCK_STREAM").unwrap_or_else(|| panic!("{who:?}: {seccomp:?}"));
        assert!(sock["reason"].as_str().unwrap().contains("network mode is `none`"), "{sock}");
        // The loop: every call counted, a few records (one per target per second).
        let loops = got["loops"].as_u64().unwrap();
        let ptraces: Vec<&&Value> = seccomp.iter().filter(|e| e["access"]["name"] == "ptrace").collect();
        let counted: u64 = ptraces.iter().map(|e| e["count"].as_u64().unwrap()).sum();
        assert_eq!(counted, loops + 1, "{who:?}: every refused call is counted ({ptraces:?})");
        let secs = started.elapsed().as_secs() + 2;
        assert!(ptraces.len() as u64 <= secs, "{who:?}: {} records for {loops} calls in {secs} s", ptraces.len());

        let why = why_json(&lab, &log, &[]);
        let p = explained(&why, "ptrace(PTRACE_ATTACH");
        assert_eq!(p["count"], loops + 1, "{p}");
        assert_eq!(p["change"]["toml"], "[syscalls]\nallow = [\"ptrace\"]", "{p}");
        assert!(p["change"]["warnings"][0].as_str().unwrap().contains("dangerous"), "{p}");
        assert_eq!(p["change"]["checked"]["allows"], true, "{p}");
        let s = explained(&why, "socket(AF_INET");
        assert!(s["change"]["toml"].as_str().unwrap().contains("mode = \"proxy\""), "{s}");
    }
}

/// `--explain`: filesystem denials are explained as they happen — hidden by the mount plan
/// (ENOENT), a read-only mount (EROFS), Landlock (EACCES), a deny rule — and each record
/// says exactly what the agent got. `aegis why` gives the rule's file:line or the grant to
/// add, checked by compiling the change.
#[test]
fn explain_names_what_the_agent_gets_for_each_refused_path() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let (got, events, log) = probe(&lab, &["--explain"]);
        let who = lab.who;
        let files: Vec<&Value> = events.iter().filter(|e| e["kind"] == "denial" && e["access"]["type"] == "file").collect();
        let record = |target: &str| files.iter().find(|e| e["target"] == target).copied().unwrap_or_else(|| panic!("{who:?}: no record of {target}: {files:#?}"));
        let hidden = format!("read {}", lab.path("hidden.txt").display());
        // Each record's result is what the agent saw.
        for (k, target) in [
            ("hidden", hidden.as_str()),
            ("readonly", "create /usr/lib/aegis-why-new"),
            ("exec", "exec /usr/bin/id"),
            ("shadow", "read /etc/shadow"),
        ] {
            let r = record(target);
            assert_eq!(r["result"], got[k], "{who:?} {k}: the record says the agent got what it got: {r}");
            assert_eq!(r["source"], "explanation", "{r}");
        }
        // The file is on the host, not in the sandbox: hidden by the mount plan.
        assert_eq!(record(&hidden)["layer"], "mounts");
        assert_eq!(got["hidden"], "ENOENT", "{who:?}: {got}");
        // A path that exists nowhere is no denial: the agent would get ENOENT anyway.
        assert!(!files.iter().any(|e| e["target"].as_str().is_some_and(|t| t.contains("aegis-why-nowhere"))), "{files:?}");
        assert_eq!(got["readonly"], "EROFS", "{who:?}: {got}");
        assert_eq!(got["exec"], "EACCES", "{who:?}: {got}");
        assert!(!files.iter().any(|e| e["target"].as_str().is_some_and(|t| t.contains("mine.txt"))), "a granted write is not a denial");

        let why = why_json(&lab, &log, &[]);
        let shadow = explained(&why, "read /etc/shadow");
        assert_eq!(shadow["rule"]["kind"], "deny pattern", "{shadow}");
        let at = shadow["rule"]["location"].as_str().unwrap();
        assert!(at.contains("policy.toml:9:"), "the deny rule's file:line:column: {at}");
        assert!(shadow["change"]["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("credential store")), "{shadow}");
        let exec = explained(&why, "exec /usr/bin/id");
        assert_eq!(exec["change"]["toml"], "[exec]\nallow = [\"/usr/bin/id\"]", "{exec}");
        assert_eq!(exec["change"]["checked"]["allows"], true, "{exec}");
        let ro = explained(&why, "create /usr/lib/aegis-why-new");
        assert_eq!(ro["change"]["toml"], "[filesystem]\nwrite = [\"/usr/lib/aegis-why-new\"]", "{ro}");

        // One record at a time, by its number, and the human text names the fix.
        let seq = explained(&why, &hidden)["records"][0].as_u64().unwrap();
        let mut c = aegis(&lab);
        let r = run(c.args(["why", "--log"]).arg(&log).arg(seq.to_string()));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(r.stdout.contains(&format!("smallest change: add a read grant for {}", lab.path("hidden.txt").display())), "{}", r.stdout);
        assert!(r.stdout.contains("checked: with this change the policy allows it"), "{}", r.stdout);
        let bad = run(aegis(&lab).args(["why", "--log"]).arg(&log).arg("999999"));
        assert_eq!(bad.code, 2, "an unknown record is invalid input: {}", bad.stderr);
    }
}

/// Without user namespaces (Landlock + seccomp only) nothing hides a path: the same probe's
/// refused read is Landlock's EACCES, and the explanation says so.
#[test]
fn explain_without_a_mount_plan_names_landlock() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let (policy, work, log) = setup(&lab);
    let best_effort = lab.path("best-effort.toml");
    std::fs::write(&best_effort, format!("version = 1\n[agent]\nname = \"why-probe\"\nextends = [{:?}]\n[enforcement]\nnamespaces = \"best-effort\"\nmounts = \"best-effort\"\nnftables = \"best-effort\"\n", policy.display().to_string())).unwrap();
    let mut c = aegis(&lab);
    c.env("AEGIS_EXEC_TEST_NO_USERNS", "1").args(["run", "--explain", "--policy"]).arg(&best_effort).arg("--audit-log").arg(&log);
    c.arg(format!("--param=WORK={}", work.display())).args(["--", "/usr/bin/python3", "-c", PROBE]).arg(&work).arg(lab.path("hidden.txt"));
    let r = run_for(&mut c, Duration::from_secs(60));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let got: Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    let events = audit_events(&log);
    let rec = events.iter().find(|e| e["kind"] == "denial" && e["target"] == "exec /usr/bin/id").unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!((rec["layer"].as_str(), rec["result"].as_str()), (Some("landlock"), got["exec"].as_str()), "{rec}");
    // Without a mount plan the host's file is there: Landlock refuses it.
    let hidden = events.iter().find(|e| e["kind"] == "denial" && e["target"] == format!("read {}", lab.path("hidden.txt").display())).unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!((hidden["layer"].as_str(), hidden["result"].as_str(), got["hidden"].as_str()), (Some("landlock"), Some("EACCES"), Some("EACCES")), "{hidden}");
}

/// In proxy mode a direct connection is dropped by the namespace's table; each destination
/// is a record of its own, and `aegis why` says to go through the proxy.
#[test]
fn dropped_connections_name_each_destination() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let policy = lab.path("proxy.toml");
        std::fs::write(&policy, "version = 1\n[agent]\nname = \"why-net\"\n[filesystem]\nread = [\"/usr\", \"/etc\"]\n[exec]\nallow = [\"/usr/bin/python3\"]\n[network]\nmode = \"proxy\"\nallow = [\"example.com:443\"]\n[enforcement]\ncgroup = \"best-effort\"\n").unwrap();
        std::fs::create_dir_all(lab.path("home")).unwrap();
        lab.give_to_user();
        let log = lab.path("net.log");
        let script = "import socket\nfor a in [('192.0.2.9', 443), ('192.0.2.10', 8443), ('192.0.2.9', 443)]:\n    try:\n        socket.create_connection(a, timeout=3)\n    except OSError as e:\n        print(a, e)\nimport time; time.sleep(0.3)\n";
        let mut c = aegis(&lab);
        c.args(["run", "--policy"]).arg(&policy).arg("--audit-log").arg(&log).args(["--", "/usr/bin/python3", "-c", script]);
        let r = run_for(&mut c, Duration::from_secs(60));
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let events = audit_events(&log);
        let drops: Vec<&Value> = events.iter().filter(|e| e["kind"] == "kernel_denial" && e["layer"] == "nftables").collect();
        let to = |d: &str| drops.iter().filter(|e| e["detail"].as_str().unwrap().contains(d)).map(|e| e["count"].as_u64().unwrap()).sum::<u64>();
        assert_eq!((to("192.0.2.9:443/tcp"), to("192.0.2.10:8443/tcp")), (2, 1), "{:?}: each destination named with its count: {drops:?}", lab.who);
        let why = why_json(&lab, &log, &[]);
        let e = explained(&why, "192.0.2.10:8443/tcp");
        assert!(e["change"]["words"].as_str().unwrap().contains("use the proxy"), "{e}");
    }
}

/// `aegis why` on a log it cannot use says so (exit 2); with no denial it says that.
#[test]
fn why_without_denials_or_log() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let missing = run(aegis(&lab).args(["why", "--log", "/nonexistent/audit.log"]));
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    let policy = lab.path("quiet.toml");
    std::fs::write(&policy, "version = 1\n[agent]\nname = \"quiet\"\n[filesystem]\nread = [\"/usr\"]\n[exec]\nallow = [\"/usr/bin/true\"]\n").unwrap();
    let log = lab.path("quiet.log");
    let r = run(aegis(&lab).args(["run", "--policy"]).arg(&policy).arg("--audit-log").arg(&log).args(["--", "/usr/bin/true"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(aegis(&lab).args(["why", "--log"]).arg(&log));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("no denials recorded in this run"), "{}", r.stdout);

    // A policy the agent could write where it lives: `aegis run` adds its own protections
    // (the policy file read-only, the log hidden), and the file is still the run's policy.
    let checkout = lab.path("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    let policy = checkout.join("agent.toml");
    let text = format!("version = 1\n[agent]\nname = \"mine\"\n[filesystem]\nread = [\"/usr\"]\nwrite = [\"{}\"]\n[exec]\nallow = [\"/usr/bin/true\"]\n", checkout.display());
    std::fs::write(&policy, text).unwrap();
    let log = checkout.join("run.log");
    let r = run(aegis(&lab).args(["run", "--verbose", "--policy"]).arg(&policy).arg("--audit-log").arg(&log).args(["--", "/usr/bin/true"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("is read-only to the agent") && r.stderr.contains("is hidden from the agent (audit state)"), "{}", r.stderr);
    let r = run(aegis(&lab).args(["why", "--log"]).arg(&log));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("is not the policy this run used") && !r.stderr.contains("is not the policy this run used"), "{}\n{}", r.stdout, r.stderr);
}
