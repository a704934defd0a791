//! Learn mode (issue 15.2), for real, as root and as a user (uid 1000): a benign workload
//! (Python, git, an HTTP fetch and a git clone through the proxy to the test upstream) is
//! learned with `aegis learn`; the proposal compiles, names hosts (not addresses) and HTTP
//! requests as method/path rules, and runs the same workload under `aegis run` with no
//! denial; secrets planted in the home directory were neither read during learning (the
//! upstream never saw the `.netrc` password that Python's requests would send) nor proposed
//! (the evaluator denies them under the proposal).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aegis_tests::upstream::{self, Upstream};
use aegis_tests::*;
use serde_json::Value;

use crate::launch::{Lab, Who, audit_events, run_for, sandbox_ready};

const NETRC_PASSWORD: &str = "netrc-secret-4c1d";
const SSH_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nlearn-test-key-9e2b\n";

/// The workload: its own files, Python's requests through the proxy (requests reads
/// `~/.netrc` by itself), a git clone over HTTPS and git commands in the workspace.
const WORKLOAD: &str = r#"
import json, os, subprocess, sys
import requests
ws = sys.argv[1]
os.chdir(ws)
os.makedirs("out", exist_ok=True)
r = requests.get("http://www.example.com/data/report.json", timeout=20)
open("out/page.html", "w").write(r.text)
r2 = requests.get("http://www.example.com/data/other.json", timeout=20)
git = ["git", "-c", "user.name=w", "-c", "user.email=w@example.com"]
subprocess.run(git + ["clone", "-q", "https://git.example.org/repo.git", "clone"], check=True)
readme = open("clone/README.md").read()
subprocess.run(git + ["-C", "clone", "log", "--oneline"], check=True, capture_output=True)
json.dump({"status": [r.status_code, r2.status_code], "readme": readme}, open("out/result.json", "w"))
print("workload done", r.status_code, r2.status_code)
"#;

fn upstream_with_repo() -> Option<(tempfile::TempDir, Upstream)> {
    if let Some(why) = upstream::unavailable() {
        eprintln!("SKIP: {why}");
        return None;
    }
    if !Path::new("/usr/bin/git").exists() {
        eprintln!("SKIP: /usr/bin/git is missing");
        return None;
    }
    if run(Command::new("/usr/bin/python3").args(["-c", "import requests"])).code != 0 {
        eprintln!("SKIP: python3-requests is missing");
        return None;
    }
    crate::proxy::git_upstream("learn", vec![])
}

/// One lab's world: a home with planted secrets, a workspace with the workload, both the
/// agent's.
struct World {
    home: PathBuf,
    ws: PathBuf,
}

fn world(lab: &Lab) -> World {
    let home = lab.path("home");
    let ws = lab.path("ws");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), SSH_KEY).unwrap();
    std::fs::write(home.join(".aws/credentials"), "[default]\naws_secret_access_key = learn-test-aws-77\n").unwrap();
    std::fs::write(home.join(".netrc"), format!("machine www.example.com login someone password {NETRC_PASSWORD}\n")).unwrap();
    std::fs::write(home.join(".bash_history"), "export TOKEN=learn-test-history\n").unwrap();
    std::fs::write(ws.join("workload.py"), WORKLOAD).unwrap();
    for f in [".ssh/id_ed25519", ".aws/credentials", ".netrc", ".bash_history"] {
        std::fs::set_permissions(home.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The agent's files: the agent is uid 1000 in both halves (root runs it with --user).
    let r = run(Command::new("chown").arg("-R").arg("1000:1000").arg(&home).arg(&ws));
    assert_eq!(r.code, 0, "{}", r.stderr);
    lab.give_to_user();
    World { home, ws }
}

/// `aegis SUBCOMMAND` as the lab's launcher (`why`'s), in the workspace; for root with
/// `--user 1000` (the agent is the same user in both halves).
fn aegis(lab: &Lab, w: &World, sub: &str) -> Command {
    let mut c = crate::why::aegis(lab);
    c.current_dir(&w.ws).arg(sub);
    if lab.who == Who::Root {
        c.args(["--user", "1000"]);
    }
    c
}

/// The flags both runs need: the agent's HOME is the planted home, names pinned to the
/// upstream, its CA trusted.
fn net_flags(up: &Upstream, w: &World) -> Vec<String> {
    let mut v = vec![format!("--env=HOME={}", w.home.display()), "--upstream-ca".into(), up.pki.ca.display().to_string()];
    v.extend(up.resolve_args(&["www.example.com", "git.example.org"]));
    v
}

fn reset_workspace(w: &World) {
    for d in ["out", "clone"] {
        let _ = std::fs::remove_dir_all(w.ws.join(d));
    }
}

#[test]
fn a_learned_policy_runs_the_workload_with_no_denial_and_no_secret() {
    if !sandbox_ready() {
        return;
    }
    let Some((_repo, up)) = upstream_with_repo() else { return };
    for lab in Lab::each() {
        let who = lab.who;
        let w = world(&lab);
        let proposal = lab.path("proposal.toml");
        let learn_log = lab.path("learn.log");
        let mut learn = aegis(&lab, &w, "learn");
        learn.arg("--audit-log").arg(&learn_log).arg("-o").arg(&proposal).args(net_flags(&up, &w));
        learn.args(["--", "/usr/bin/python3"]).arg(w.ws.join("workload.py")).arg(&w.ws);
        let r = run_for(&mut learn, Duration::from_secs(120));
        assert_eq!(r.code, 0, "{who:?} aegis learn: {}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("workload done 200 200"), "{who:?}: {}", r.stdout);
        let text = std::fs::read_to_string(&proposal).unwrap();
        eprintln!("{who:?} proposal:\n{text}\n{}", r.stderr);

        // The upstream never saw the .netrc password: requests could not read the file.
        for req in up.requests() {
            assert!(!req.to_string().contains(NETRC_PASSWORD) && !req.to_string().contains("c29tZW9uZT"), "{who:?}: the learning run sent the .netrc credential: {req}");
        }
        // The proposal compiles, and the evaluator denies every planted secret under it.
        let check = |q: &[&str]| {
            let r = run(Command::new(bin("aegisc"))
                .arg("check")
                .arg(&proposal)
                .arg(format!("--param=WORKSPACE={}", w.ws.display()))
                .args(if text.contains("\nHOME = ") { vec![format!("--param=HOME={}", w.home.display())] } else { vec![] })
                .args(q));
            r.code
        };
        for secret in [".ssh/id_ed25519", ".aws/credentials", ".netrc", ".bash_history"] {
            let p = w.home.join(secret).display().to_string();
            assert_eq!(check(&["fs", "read", &p]), 1, "{who:?}: the proposal lets the agent read {p}:\n{text}");
        }
        assert!(!text.lines().any(|l| !l.trim_start().starts_with('#') && (l.contains(".ssh") || l.contains(".netrc") || l.contains(".aws"))), "{who:?}: a secret is proposed:\n{text}");
        assert!(text.contains("NOT PROPOSED (credential store"), "{who:?}: the excluded store is shown:\n{text}");
        // Names, not addresses; HTTP requests as method/path rules.
        let grants: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
        assert!(!grants.iter().any(|l| l.contains("10.233.")), "{who:?}: an address is proposed:\n{text}");
        assert!(text.contains("host = \"www.example.com\"") && text.contains("\"GET /data/report.json\""), "{who:?}:\n{text}");
        assert!(text.contains("host = \"git.example.org\"") && text.contains("\"GET /repo.git/info/refs\""), "{who:?}:\n{text}");
        assert!(text.contains("\"${WORKSPACE}\""), "{who:?}: the workspace is a parameter:\n{text}");

        // The same workload under the proposal: no denial of any kind.
        reset_workspace(&w);
        let run_log = lab.path("run.log");
        let mut again = aegis(&lab, &w, "run");
        again.arg("--policy").arg(&proposal).arg("--audit-log").arg(&run_log).arg(format!("--param=WORKSPACE={}", w.ws.display()));
        if text.contains("\nHOME = ") {
            again.arg(format!("--param=HOME={}", w.home.display()));
        }
        again.args(net_flags(&up, &w)).args(["--", "/usr/bin/python3"]).arg(w.ws.join("workload.py")).arg(&w.ws);
        let r = run_for(&mut again, Duration::from_secs(120));
        assert_eq!(r.code, 0, "{who:?} under the proposal: {}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains("workload done 200 200"), "{who:?}: {}", r.stdout);
        let result: Value = serde_json::from_str(&std::fs::read_to_string(w.ws.join("out/result.json")).unwrap()).unwrap();
        assert_eq!(result["readme"], "fetched through the AEGIS proxy\n");
        let events = audit_events(&run_log);
        let denials: Vec<&Value> = events
            .iter()
            .filter(|e| match e["kind"].as_str() {
                Some("denial" | "kernel_denial") => true,
                Some("decision" | "proxy_request") => e["decision"] == "deny",
                _ => false,
            })
            .collect();
        assert!(denials.is_empty(), "{who:?}: the learned policy still denies: {denials:#?}\nproposal:\n{text}");
        assert_eq!(read_by_agent(&w), 0, "{who:?}");
        reset_workspace(&w);
    }
}

/// Secrets the workload did not print: the planted values appear nowhere in its outputs.
fn read_by_agent(w: &World) -> usize {
    let out = std::fs::read_to_string(w.ws.join("out/page.html")).unwrap_or_default();
    [NETRC_PASSWORD, "learn-test-key-9e2b", "learn-test-aws-77", "learn-test-history"].iter().filter(|s| out.contains(*s)).count()
}
