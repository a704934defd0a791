//! A benign coding workload under `policies/coding-agent.toml`, run for real as root and as
//! an unprivileged user in their own checkout (mode 0755): Python reads the repository, runs
//! `git add/commit/log/status` in the checkout (whose `.git/config` and `.git/hooks` are
//! read-only built-in protections), starts a helper Python, uses `/tmp`, and writes output
//! files in the workspace. It must run with no false denial: exit 0, the expected output on
//! the host (files, a commit `git log` sees), and no denial in the audit log. Run by a user,
//! everything the agent wrote belongs to that user, and the user's own `git status` works
//! afterwards (no "dubious ownership").

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use aegis_tests::*;
use serde_json::Value;

use crate::launch::*;

/// The workload. argv[1] is the workspace.
const WORKLOAD: &str = r##"
import hashlib, json, os, subprocess, sys, tempfile
ws = sys.argv[1]
os.chdir(ws)
def git(*args):
    r = subprocess.run(["git", *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("git %s failed (%d): %s" % (args[0], r.returncode, r.stderr))
    return r.stdout
# Read the sources (never .git, never the denied .env).
files = {}
for root, dirs, names in os.walk(ws):
    dirs[:] = [d for d in dirs if d != ".git"]
    for n in names:
        if n == ".env":
            continue
        p = os.path.join(root, n)
        with open(p, "rb") as f:
            files[os.path.relpath(p, ws)] = hashlib.sha256(f.read()).hexdigest()
git("add", "src/app.py", "README.md", ".gitignore")
git("commit", "-q", "-m", "initial import")
# Edit, test with a child interpreter, commit again.
with open("src/app.py", "a") as f:
    f.write("\ndef add(a, b):\n    return a + b\n")
test = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'src'); import app; assert app.add(2, 3) == 5; print('tests pass')"], capture_output=True, text=True)
if test.returncode != 0:
    sys.exit("tests failed: " + test.stderr)
with tempfile.TemporaryDirectory() as scratch:
    with open(os.path.join(scratch, "notes.txt"), "w") as f:
        f.write("scratch")
git("add", "src/app.py")
git("commit", "-q", "-m", "add add()")
log = git("log", "--format=%s")
status = git("status", "--porcelain")
os.makedirs("build", exist_ok=True)
report = {"files": files, "log": log.splitlines(), "status": status, "test": test.stdout.strip(), "pycache": sorted(os.listdir("src/__pycache__"))}
with open("build/report.json", "w") as f:
    json.dump(report, f, sort_keys=True)
with open("SUMMARY.md", "w") as f:
    f.write("# Summary\n%d files, %d commits\n" % (len(files), len(report["log"])))
print("DONE", len(files), "files,", len(report["log"]), "commits")
"##;

/// A temp git repository (`git init`, no commits yet) owned by the agent: sources, a
/// README, a `.gitignore`, and (with `secret`) a secret `.env`.
fn checkout(lab: &Lab, secret: bool) -> std::path::PathBuf {
    let agent = lab.agent_uid();
    let ws = lab.agent_dir("repo");
    put(&ws.join("src/app.py"), "def hello():\n    return 'hello'\n", None);
    put(&ws.join("README.md"), "# demo\n", None);
    put(&ws.join(".gitignore"), ".env\n__pycache__/\n", None);
    if secret {
        put(&ws.join(".env"), "API_KEY=do-not-read\n", None);
    }
    let r = run(Command::new("git").arg("init").arg("-q").arg(&ws));
    assert_eq!(r.code, 0, "git init: {}", r.stderr);
    // The agent owns its checkout, as a user owns theirs.
    let r = run(Command::new("chown").arg("-R").arg(format!("{agent}:{agent}")).arg(&ws));
    assert_eq!(r.code, 0, "chown: {}", r.stderr);
    ws
}

/// Runs the workload under `policy` (on a checkout with a `.env` if `secret`) and checks it
/// ran clean.
fn run_workload(lab: &Lab, policy: &Path, secret: bool) {
    let ws = checkout(lab, secret);
    let bundle = lab.build(policy, "bundle");
    let log = lab.path("audit.log");
    let params = [("WORKSPACE", ws.as_path())];
    // Identity for the commits; HOME is the workspace (the host's is not in the sandbox).
    // Only what `--env` names reaches the agent, so the test runner's own variables (e.g.
    // PYTHONDONTWRITEBYTECODE) do not.
    let home = ws.display().to_string();
    let env = [
        ("HOME", home.as_str()),
        ("GIT_AUTHOR_NAME", "Agent"),
        ("GIT_AUTHOR_EMAIL", "agent@example.invalid"),
        ("GIT_COMMITTER_NAME", "Agent"),
        ("GIT_COMMITTER_EMAIL", "agent@example.invalid"),
    ];
    let mut c = lab.exec_cmd_env(&bundle, &params, &env, &log, &["/usr/bin/python3", "-c", WORKLOAD, &home]);
    let r = run_for(&mut c, Duration::from_secs(60));
    assert_eq!(r.code, 0, "the benign workload failed:\n{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("DONE 3 files, 2 commits"), "{}", r.stdout);
    assert!(!r.stderr.contains("denied") && !r.stderr.contains("not permitted"), "a denial on stderr: {}", r.stderr);

    // The output is on the host: the report, the summary, and the commits.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(ws.join("build/report.json")).unwrap()).unwrap();
    assert_eq!(report["log"], serde_json::json!(["add add()", "initial import"]));
    assert_eq!(report["status"], "");
    assert_eq!(report["test"], "tests pass");
    assert_eq!(report["files"].as_object().unwrap().len(), 3, "{report}");
    assert!(report["pycache"].as_array().unwrap().iter().any(|f| f.as_str().unwrap().starts_with("app.")), "python cached its bytecode: {report}");
    assert_eq!(std::fs::read_to_string(ws.join("SUMMARY.md")).unwrap(), "# Summary\n3 files, 2 commits\n");
    let host_log = run(Command::new("git").arg("-c").arg("safe.directory=*").arg("-C").arg(&ws).args(["log", "--format=%an %s"]));
    assert_eq!(host_log.stdout, "Agent add add()\nAgent initial import\n", "{}", host_log.stderr);
    if secret {
        assert_eq!(std::fs::read_to_string(ws.join(".env")).unwrap(), "API_KEY=do-not-read\n");
    } else {
        assert!(std::fs::symlink_metadata(ws.join(".env")).is_err(), "no .env appeared");
    }

    let events = assert_launch_recorded(&log);
    assert_identity(lab, &events);
    if let Who::User(u) = lab.who {
        // Everything the agent wrote is the user's, and the user's own git accepts the
        // repository as it is (no safe.directory, no "dubious ownership").
        for f in ["SUMMARY.md", "build/report.json", ".git/index", "src/app.py"] {
            let m = std::fs::metadata(ws.join(f)).unwrap();
            assert_eq!((std::os::unix::fs::MetadataExt::uid(&m), std::os::unix::fs::MetadataExt::gid(&m)), (u, u), "{f} belongs to the user");
        }
        let st = run(Command::new("setpriv")
            .arg(format!("--reuid={u}"))
            .arg(format!("--regid={u}"))
            .arg("--init-groups")
            .args(["git", "-C"])
            .arg(&ws)
            .args(["status", "--porcelain"])
            .env("HOME", &ws));
        assert_eq!(st.code, 0, "the user's git status: {}", st.stderr);
        assert!(!st.stderr.contains("dubious ownership"), "{}", st.stderr);
    }
    let denials: Vec<&Value> = events.iter().filter(|e| e["kind"] == "kernel_denial" || e["kind"] == "resource").collect();
    assert!(denials.is_empty(), "no denial or limit recorded: {denials:?}");
    let exited = events.iter().find(|e| e["kind"] == "agent_exited").unwrap();
    assert_eq!(exited["status"], 0);
}

fn ready() -> bool {
    if !sandbox_ready() {
        return false;
    }
    if !Path::new("/usr/bin/git").exists() {
        eprintln!("SKIP: /usr/bin/git is missing (the workload runs git)");
        return false;
    }
    true
}

/// The policy exactly as shipped, on a checkout that holds the denied `.env`: it is masked,
/// and git works with the built-in protections (`.git/config`, `.git/hooks` read-only).
#[test]
fn benign_workload_runs_clean_under_coding_agent() {
    if !ready() {
        return;
    }
    for lab in Lab::each() {
        run_workload(&lab, &repo_root().join("policies/coding-agent.toml"), true);
    }
}

/// The same policy on a checkout without `.env`: the denied name is absent at launch, so
/// the workspace root is mediated (it must not appear), and the workload still makes its
/// entries there (`SUMMARY.md`, `build/`) and in `.git` (git's lock files, objects).
#[test]
fn benign_workload_runs_clean_when_the_denied_env_is_absent_at_launch() {
    if !ready() {
        return;
    }
    for lab in Lab::each() {
        run_workload(&lab, &repo_root().join("policies/coding-agent.toml"), false);
    }
}
