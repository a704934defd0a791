//! `aegis`, the one command of the local loop, with the other binaries: the README's quick
//! start run as written (with `aegisd`); `aegis run` compiles a local policy in memory and
//! runs it with every layer, says in the report and the audit log that it is an unsigned
//! local policy and which one (path and SHA-256), and picks up `./aegis.toml` only when the
//! caller owns it and nobody else can write it. (Its commands' answers to bad input, which
//! launch nothing, are tested in `cli/tests/commands.rs`.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_tests::*;

use crate::launch::{audit_events, kinds, sandbox_ready};

fn aegis() -> Command {
    let mut c = Command::new(bin("aegis"));
    // As `aegisc()`; and no AEGIS_* or SUDO_* from whoever runs the suite.
    c.current_dir(repo_root()).env("SOURCE_DATE_EPOCH", "1764000000").env("NO_COLOR", "1");
    for v in ["AEGIS_SOCKET", "AEGIS_DIR", "SUDO_UID", "SUDO_GID", "SUDO_USER"] {
        c.env_remove(v);
    }
    c
}

/// A scratch directory outside `/tmp` (the sandbox's `/tmp` is private; see `launch::Lab`).
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("aegis-cli-").tempdir_in("/var/tmp").unwrap()
}

/// The code block that follows the `<!-- quick-start` marker in README.md.
fn quick_start_block() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let at = readme.find("<!-- quick-start").expect("README.md has a quick-start marker");
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a ```sh block after the marker") + "```sh\n".len();
    let len = rest[start..].find("```").expect("the block ends");
    rest[start..start + len].to_string()
}

/// A fresh clone for the quick start: the repository's tracked files under `examples/` and
/// `policies/` (working-tree contents, so an uncommitted edit is tested, an untracked file
/// is not there), and `target/release/{aegis,aegisd}`: the binaries this test run built (the
/// debug profile: a release build of the workspace would cost CI minutes for nothing the
/// quick start could tell apart). With `owner`, the clone is theirs (the binaries are links
/// to the build's own and keep its owner).
fn fresh_clone(dir: &Path, owner: Option<u32>) {
    let listed = Command::new("git").arg("-C").arg(repo_root()).args(["ls-files", "-z", "--", "examples", "policies"]).output();
    let files: Vec<PathBuf> = match listed {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {
            o.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()).map(|f| PathBuf::from(String::from_utf8(f.to_vec()).unwrap())).collect()
        }
        // Not a git checkout (a source tarball): every file there is "tracked".
        _ => walk(&repo_root(), &["examples", "policies"]),
    };
    for f in files {
        let to = dir.join(&f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo_root().join(&f), &to).unwrap();
    }
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    if let Some(uid) = owner {
        chown_tree(dir, uid);
    }
    for b in ["aegis", "aegisd"] {
        if std::fs::hard_link(bin(b), release.join(b)).is_err() {
            std::fs::copy(bin(b), release.join(b)).unwrap();
        }
    }
}

fn walk(root: &Path, tops: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = tops.iter().map(PathBuf::from).collect();
    while let Some(rel) = todo.pop() {
        let abs = root.join(&rel);
        if abs.is_dir() {
            for e in std::fs::read_dir(&abs).unwrap() {
                todo.push(rel.join(e.unwrap().file_name()));
            }
        } else {
            out.push(rel);
        }
    }
    out
}

/// The quick start of README.md, pasted into bash in a fresh clone by the user who cloned
/// it: run by root, the suite gives the clone to [`USER`] and the block runs as that user
/// (whoever follows a README is seldom root); run by a user, as them. `/tmp/aegis` is the
/// real path it names, so it runs in a private mount namespace with its own `/tmp`
/// (concurrent suites, and whatever the machine has in `/tmp/aegis`, stay apart).
#[test]
fn readme_quick_start_runs_as_written() {
    let block = quick_start_block();
    for needle in ["aegis validate examples/inbox-manager.toml", "AEGIS_DIR=/tmp/aegis AEGIS_SOCKET=/tmp/aegis/aegisd.sock", "check-fs inbox-manager read /etc/passwd"] {
        assert!(block.contains(needle), "the quick start lost `{needle}`:\n{block}");
    }
    let unshare = if is_root() { vec!["--mount"] } else { vec!["--user", "--map-root-user", "--mount"] };
    let probe = run(Command::new("unshare").args(&unshare).args(["--propagation", "private", "true"]));
    if probe.code != 0 {
        skip!("cannot make a private mount namespace for /tmp (unshare {}): {}", unshare.join(" "), probe.stderr.trim());
    }
    let clone = scratch();
    // Root makes the private /tmp (a user's namespace could not), then becomes the user.
    let owner = if is_root() { USER } else { 0 };
    fresh_clone(clone.path(), is_root().then_some(USER));
    let user_script = format!(
        "cd '{}' || exit 91\n\
         trap 'kill $(jobs -p) 2>/dev/null' EXIT\n\
         {{\n{block}}}\n\
         echo \"quick-start-exit=$?\"\n\
         echo \"listed-via-dir=$(AEGIS_DIR=/tmp/aegis ./target/release/aegis list | cut -f1)\"\n\
         echo \"listed-via-socket=$(AEGIS_SOCKET=/tmp/aegis/aegisd.sock ./target/release/aegis list | cut -f1)\"\n\
         stat -c 'dir=%u %a' /tmp/aegis\n\
         echo \"audited=$(grep -c /etc/passwd /tmp/aegis/audit.log)\"\n",
        clone.path().display()
    );
    let script_path = clone.path().join("quick-start.sh");
    std::fs::write(&script_path, user_script).unwrap();
    let as_user = if is_root() { format!("setpriv --reuid={USER} --regid={USER} --init-groups env HOME=/tmp ") } else { String::new() };
    let script = format!("mount -t tmpfs -o mode=1777 tmpfs /tmp || exit 90\nexec {as_user}bash '{}'\n", script_path.display());
    let r = run(Command::new("unshare").args(&unshare).args(["--propagation", "private", "bash", "-c", &script]).env_remove("AEGIS_DIR").env_remove("AEGIS_SOCKET").env("NO_COLOR", "1"));
    let all = format!("stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert_eq!(r.code, 0, "{all}");
    // The last command of the block is the DENY: exit 1, as `aegisc check` would.
    assert!(r.stdout.contains("quick-start-exit=1\n"), "{all}");
    assert!(r.stdout.contains("ok: examples/inbox-manager.toml: agent 'inbox-manager'"), "validate: {all}");
    assert!(r.stdout.contains("Agent        inbox-manager") && r.stdout.contains("Exposure"), "inspect: {all}");
    let policy = clone.path().join("policies/inbox-manager.toml").canonicalize().unwrap();
    assert!(r.stdout.contains(&format!("registered agent 'inbox-manager' from policy {}", clone.path().canonicalize().unwrap().join("examples/inbox-manager.toml").display())), "register: {all}");
    assert!(
        r.stdout.contains(&format!("DENY: path '/etc/passwd' matches deny pattern '/etc/passwd' ({}:9:11)", policy.display())),
        "check-fs: {all}"
    );
    assert!(r.stderr.contains("aegisd: serving /tmp/aegis/aegisd.sock (mode 0600), auditing to /tmp/aegis/audit.log"), "{all}");
    // The directory the daemon made is private, and the answer is in its audit log.
    assert!(r.stdout.contains(&format!("dir={owner} 700\n")), "{all}");
    assert!(r.stdout.contains("audited=1\n"), "{all}");
    // The client finds the daemon through either variable too.
    assert!(r.stdout.contains("listed-via-dir=inbox-manager\n") && r.stdout.contains("listed-via-socket=inbox-manager\n"), "{all}");
}

/// A small policy for `aegis run`: python reads /usr, writes the workspace, nothing else.
const POLICY: &str = r#"version = 1
[agent]
name = "cli-run"
[parameters]
WORKSPACE = "the checkout"
[filesystem]
read = ["/usr"]
write = ["${WORKSPACE}"]
[exec]
allow = ["/usr/bin/python3"]
[network]
mode = "none"
[resources]
memory = "256MiB"
pids = 32
"#;

/// What the agent tries: a write it was granted, a read it was not.
const AGENT: &str = "import sys\nopen(sys.argv[1] + '/out.txt', 'w').write('written')\ntry:\n    open('/etc/passwd').read(); print('READ /etc/passwd')\nexcept OSError as e:\n    print('denied /etc/passwd', e.errno)\n";

/// A checkout under the host's /tmp written into the policy literally is the sandbox's
/// private /tmp there, not the host's directory: `aegis run` warns at compile time
/// (`private_tmp_grant`), and the command that is not in the sandbox is refused as such
/// (exit 127 naming the fix), never reported as an internal error.
#[test]
fn a_literal_checkout_under_tmp_is_named_not_an_internal_error() {
    if !sandbox_ready() {
        return;
    }
    let checkout = tempfile::Builder::new().prefix("aegis-lit-").tempdir_in("/tmp").unwrap();
    let tool = checkout.path().join("tool");
    std::fs::copy("/usr/bin/true", &tool).unwrap();
    let dir = checkout.path().display().to_string();
    let policy = checkout.path().join("p.toml");
    std::fs::write(
        &policy,
        format!("version = 1\n[agent]\nname = \"lit\"\n[filesystem]\nread = [\"/usr\"]\nwrite = [\"{dir}\"]\n[exec]\nallow = [\"{dir}/tool\"]\n[enforcement]\ncgroup = \"best-effort\"\n"),
    )
    .unwrap();
    let state = scratch();
    let r = run(aegis()
        .env("AEGIS_DIR", state.path())
        .args(["run", "--policy"])
        .arg(&policy)
        .arg("--audit-log")
        .arg(state.path().join("audit.log"))
        .arg("--")
        .arg(&tool));
    assert_eq!(r.code, 127, "{}", r.stderr);
    assert!(r.stderr.contains("cannot run the agent's command in the sandbox"), "{}", r.stderr);
    assert!(r.stderr.contains("a literal path under /tmp is the sandbox's private /tmp"), "{}", r.stderr);
    assert!(!r.stderr.contains("internal error"), "{}", r.stderr);
    let v = run(aegisc().arg("validate").arg(&policy));
    assert!(v.stderr.contains("aegis::lint::private_tmp_grant"), "{}", v.stderr);
}

#[test]
fn run_launches_a_local_policy_with_every_layer_and_audits_it_as_unsigned() {
    if !sandbox_ready() {
        return;
    }
    let tmp = scratch();
    let policy = tmp.path().join("my-agent.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let ws = tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(65534), Some(65534)).unwrap();
    let state = tmp.path().join("state");
    let keys = run(aegisc().arg("keygen").arg("-o").arg(tmp.path().join("k")));
    assert_eq!(keys.code, 0, "{}", keys.stderr);
    let r = run(aegis()
        .env("AEGIS_DIR", &state)
        .current_dir(tmp.path())
        .args(["run", "--policy", "my-agent.toml", "--verbose", "--checkpoint-key", "k.key"])
        .arg(format!("--param=WORKSPACE={}", ws.display()))
        .args(["--", "/usr/bin/python3", "-c", AGENT])
        .arg(&ws));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("denied /etc/passwd"), "{}", r.stdout);
    assert_eq!(std::fs::read_to_string(ws.join("out.txt")).unwrap(), "written");

    let sha = run(Command::new("sha256sum").arg(&policy));
    let sha = sha.stdout.split_whitespace().next().unwrap().to_string();
    let named = format!("local policy {} (sha256 {sha}), unsigned", policy.canonicalize().unwrap().display());
    let verify_line = r.stderr.lines().find(|l| l.trim_start().starts_with("verify ")).unwrap_or_default();
    assert!(verify_line.contains("partially enforced") && verify_line.contains(&named), "report: {}", r.stderr);
    for layer in ["namespaces", "mounts", "landlock", "seccomp", "no_new_privs", "capabilities"] {
        let line = r.stderr.lines().find(|l| l.trim_start().starts_with(&format!("{layer} "))).unwrap_or_default();
        assert!(line.contains("enforced") && !line.contains("not enforced"), "{layer}: {}", r.stderr);
    }

    // Without --audit-log the launch went to $AEGIS_DIR/audit.log, made private; the log
    // verifies, against the checkpoint key too, and says what ran under what.
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
    let log = state.join("audit.log");
    let signed = run(Command::new(bin("aegis-audit")).arg("verify").arg(&log).arg("--key").arg(tmp.path().join("k.pub")));
    assert_eq!(signed.code, 0, "{}{}", signed.stdout, signed.stderr);
    let events = audit_events(&log);
    let k = kinds(&events);
    let launch: Vec<&String> = k.iter().filter(|k| ["unsigned_bundle_allowed", "bundle_verified", "enforcement_report", "agent_started", "agent_exited"].contains(&k.as_str())).collect();
    assert_eq!(launch, ["unsigned_bundle_allowed", "enforcement_report", "agent_started", "agent_exited"], "{events:?}");
    let event = |kind: &str| events.iter().find(|e| e["kind"] == kind).unwrap();
    assert!(event("unsigned_bundle_allowed")["reason"].as_str().unwrap().contains(&named), "{events:?}");
    let verify = event("enforcement_report")["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "verify").unwrap();
    assert!(verify["detail"].as_str().unwrap().contains(&named), "{verify}");
}

/// Without `--policy`, `./aegis.toml` is used only when the caller owns it and nobody else
/// can write it: a policy planted in a shared directory is never picked up.
#[test]
fn run_uses_aegis_toml_only_when_it_is_the_callers() {
    if !sandbox_ready() {
        return;
    }
    let tmp = scratch();
    let dir = tmp.path();
    let state = dir.join("state");
    let run_here = || run(aegis().env("AEGIS_DIR", &state).current_dir(dir).args(["run", "--", "/usr/bin/python3", "-c", "print('ran')"]));

    let r = run_here();
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(r.stderr.contains("no --policy given and there is no ./aegis.toml"), "{}", r.stderr);

    let own = POLICY.replace("[parameters]\nWORKSPACE = \"the checkout\"\n", "").replace("write = [\"${WORKSPACE}\"]\n", "");
    let toml = dir.join("aegis.toml");
    std::fs::write(&toml, &own).unwrap();
    std::os::unix::fs::chown(&toml, Some(1000), Some(1000)).unwrap();
    let r = run_here();
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(r.stderr.contains("belongs to uid 1000, not to you (uid 0)") && r.stderr.contains("--policy aegis.toml"), "{}", r.stderr);

    std::os::unix::fs::chown(&toml, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o666)).unwrap();
    let r = run_here();
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(r.stderr.contains("writable by others") && r.stderr.contains("chmod go-w aegis.toml"), "{}", r.stderr);

    std::fs::remove_file(&toml).unwrap();
    std::os::unix::fs::symlink("/nonexistent/aegis.toml", &toml).unwrap();
    let r = run_here();
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(r.stderr.contains("not a regular file"), "{}", r.stderr);

    std::fs::remove_file(&toml).unwrap();
    std::fs::write(&toml, &own).unwrap();
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = run_here();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "ran\n");
}

/// The issue's "done when", as written: a user who is not root runs `aegis run --policy
/// my-agent.toml -- python3 agent.py` in their own checkout (owned by them, mode 0755). The
/// agent starts there (the caller's directory, which the policy lets it read), `python3` and
/// the agent's `git` are found on the sandbox's PATH, and it edits and commits the user's
/// files as them; afterwards their own git works on the checkout. The report and the audit
/// log (in the user's own `~/.local/state/aegis`, private) say it was an unsigned local
/// policy, which one, who the agent ran as and every layer. The same policy with its cgroup
/// layer `required` refuses to run, naming the fix, where this user has no cgroup to limit.
#[test]
fn run_as_a_user_in_their_own_checkout() {
    if !sandbox_ready() {
        return;
    }
    if !Path::new("/usr/bin/git").exists() {
        skip!("/usr/bin/git is missing (the agent commits)");
    }
    let lab = UserLab::new(&["project"]);
    let checkout = lab.home.join("project");
    // A policy written for this checkout names it outright, so it needs no --param.
    std::fs::write(checkout.join("my-agent.toml"), user_policy(&checkout, "best-effort")).unwrap();
    std::fs::write(checkout.join("agent.py"), USER_AGENT).unwrap();
    std::fs::write(checkout.join("README"), "before\n").unwrap();
    lab.own_everything();
    let as_user = |argv: &[&str], cwd: &Path| lab.run(argv, cwd);
    let git = |args: &[&str]| {
        let mut argv = vec!["/usr/bin/git", "-c", "user.name=Owner", "-c", "user.email=owner@example.com"];
        argv.extend_from_slice(args);
        as_user(&argv, &checkout)
    };
    for args in [&["init", "-q", "."][..], &["add", "-A"], &["commit", "-qm", "initial"]] {
        let r = git(args);
        assert_eq!(r.code, 0, "git {args:?}: {}", r.stderr);
    }

    let r = as_user(&["aegis", "run", "--policy", "my-agent.toml", "--", "python3", "agent.py"], &checkout);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains(&format!("uid {USER} in {}\n", checkout.display())), "{}", r.stdout);
    assert!(r.stdout.contains("/etc/shadow denied"), "{}", r.stdout);

    // The user's files, and the user's git afterwards: no "dubious ownership", the agent's
    // commit is there, nothing left uncommitted.
    let meta = std::fs::metadata(checkout.join("notes.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), USER, "the agent's file belongs to the user");
    let log = git(&["log", "-1", "--format=%s"]);
    assert_eq!((log.code, log.stdout.trim()), (0, "the agent's change"), "{}", log.stderr);
    let status = git(&["status", "--porcelain"]);
    assert_eq!((status.code, status.stdout.as_str()), (0, ""), "{}", status.stderr);

    // The audit log is the user's: in their state directory, private. Its enforcement
    // report says which policy (unsigned), who the agent was, and every layer.
    let dir = lab.home.join(".local/state/aegis");
    let log = dir.join("audit.log");
    let (dm, lm) = (std::fs::metadata(&dir).unwrap(), std::fs::metadata(&log).unwrap());
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&dm), dm.permissions().mode() & 0o777), (USER, 0o700));
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&lm), lm.permissions().mode() & 0o077), (USER, 0));
    let events = audit_events(&log);
    let sha = run(Command::new("sha256sum").arg(checkout.join("my-agent.toml")));
    let sha = sha.stdout.split_whitespace().next().unwrap().to_string();
    let named = format!("local policy {} (sha256 {sha}), unsigned", checkout.join("my-agent.toml").display());
    let allowed = events.iter().find(|e| e["kind"] == "unsigned_bundle_allowed").expect("unsigned_bundle_allowed");
    assert!(allowed["reason"].as_str().unwrap().contains(&named), "{allowed}");
    let started = events.iter().find(|e| e["kind"] == "agent_started").expect("agent_started");
    assert_eq!(started["identity"]["uid"], USER, "{started}");
    assert_eq!(started["identity"]["launched_by_uid"], USER, "{started}");
    let report = events.iter().find(|e| e["kind"] == "enforcement_report").expect("enforcement_report");
    let layer = |name: &str| report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == name).cloned().unwrap_or_else(|| panic!("no {name} layer: {report}"));
    assert!(layer("verify")["detail"].as_str().unwrap().contains(&named), "{report}");
    for name in ["namespaces", "nftables", "landlock", "seccomp", "no_new_privs", "capabilities"] {
        assert_eq!(layer(name)["status"], "fully", "{name} as a user: {report}");
    }
    // The mount plan is whole, but memfd_noexec is a sysctl only the host's root can set.
    assert_ne!(layer("mounts")["status"], "not_enforced", "{report}");

    // The same policy with the cgroup layer required: where the user has no cgroup to limit
    // (the report above said so), it refuses before launch (126), naming the fix.
    let cgroup = layer("cgroup");
    std::fs::write(checkout.join("my-agent.toml"), user_policy(&checkout, "required")).unwrap();
    let r = as_user(&["aegis", "run", "--policy", "my-agent.toml", "--", "python3", "agent.py"], &checkout);
    if cgroup["status"] == "not_enforced" {
        assert_eq!(r.code, 126, "{}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.is_empty(), "the agent did not run: {}", r.stdout);
        assert!(r.stderr.contains("cgroup") && (r.stderr.contains("systemd-run --user --scope") || r.stderr.contains("cgroup v1")), "names the fix: {}", r.stderr);
    } else {
        assert_eq!(r.code, 0, "a user with a delegated cgroup runs the required policy: {}\n{}", r.stdout, r.stderr);
        eprintln!("note: uid {USER} has a delegated cgroup here ({cgroup}); the refusal path was not exercised");
    }
}

/// The attacks on the local loop itself, as the user: the policy lives in the checkout and
/// the run's record in the user's state directory, both inside what this policy lets the
/// agent write (the whole home). The agent may not rewrite its policy (which would widen its
/// next run) nor read, rewrite or move the audit log, nor read the checkpoint key that signs
/// it; everything else in the home stays writable, and the policy readable.
#[test]
fn run_keeps_its_policy_and_its_record_from_the_agent() {
    if !sandbox_ready() {
        return;
    }
    let lab = UserLab::new(&["project"]);
    let (home, checkout) = (lab.home.clone(), lab.home.join("project"));
    std::fs::write(checkout.join("my-agent.toml"), user_policy(&home, "best-effort")).unwrap();
    std::fs::write(checkout.join("attack.py"), ATTACK).unwrap();
    lab.own_everything();
    let keys = lab.run(&["aegisc", "keygen", "-o", "host"], &home);
    assert_eq!(keys.code, 0, "{}", keys.stderr);
    let before = std::fs::read(checkout.join("my-agent.toml")).unwrap();
    let key = home.join("host.key");
    let argv = ["aegis", "run", "--policy", "my-agent.toml", "--checkpoint-key", key.to_str().unwrap(), "--verbose", "--", "python3", "attack.py"];
    // Twice: the second run finds the first one's log and must not reach it either.
    for round in 1..=2 {
        let r = lab.run(&argv, &checkout);
        assert_eq!(r.code, 0, "round {round}: {}\n{}", r.stdout, r.stderr);
        let state = home.join(".local/state/aegis");
        for said in [
            format!("aegis run: {} is read-only to the agent (it may not rewrite its own policy)", checkout.join("my-agent.toml").display()),
            format!("aegis run: {} is hidden from the agent (audit state)", state.display()),
            format!("aegis run: {} is hidden from the agent (audit state)", key.display()),
        ] {
            assert!(r.stderr.contains(&said), "round {round}: the report says `{said}`: {}", r.stderr);
        }
        let lines: Vec<&str> = r.stdout.lines().collect();
        for attempt in ["append policy", "rename policy", "replace policy dir", "read log", "append log", "list state", "move state", "read key"] {
            let line = lines.iter().find(|l| l.starts_with(&format!("{attempt}:"))).unwrap_or_else(|| panic!("round {round}: no `{attempt}` in {}", r.stdout));
            assert!(line.contains("refused"), "round {round}: the agent could {attempt}: {}", r.stdout);
        }
        assert!(lines.contains(&"read policy: ok") && lines.contains(&"write home: ok"), "round {round}: {}", r.stdout);
        assert_eq!(std::fs::read(checkout.join("my-agent.toml")).unwrap(), before, "round {round}: the policy was rewritten");
        // Both runs are in the log, which verifies against the checkpoint key.
        let log = state.join("audit.log");
        let signed = run(Command::new(bin("aegis-audit")).arg("verify").arg(&log).arg("--key").arg(home.join("host.pub")));
        assert_eq!(signed.code, 0, "round {round}: {}{}", signed.stdout, signed.stderr);
        assert_eq!(kinds(&audit_events(&log)).iter().filter(|k| *k == "agent_exited").count(), round);
    }
}

/// Tries each attack on the local loop and prints `ATTEMPT: refused (ERRNO)` or `ATTEMPT: DONE`.
const ATTACK: &str = r#"import os
home = os.path.dirname(os.getcwd())
state = os.path.join(home, ".local/state/aegis")
def attempt(name, f):
    try:
        f()
        print(name + ": DONE")
    except OSError as e:
        print(name + ": refused (" + (os.strerror(e.errno) if e.errno else str(e)) + ")")
def replace_dir():
    here = os.getcwd()
    os.rename(here, here + ".old")
    os.makedirs(here)
attempt("append policy", lambda: open("my-agent.toml", "a").write("\n[exec]\nallow = [\"/\"]\n"))
attempt("rename policy", lambda: os.rename("my-agent.toml", "old.toml"))
attempt("replace policy dir", replace_dir)
attempt("read log", lambda: open(os.path.join(state, "audit.log")).read())
attempt("append log", lambda: open(os.path.join(state, "audit.log"), "a").write("{}\n"))
attempt("list state", lambda: os.listdir(state))
attempt("move state", lambda: os.rename(os.path.join(home, ".local"), os.path.join(home, ".local.old")))
attempt("read key", lambda: open(os.path.join(home, "host.key")).read())
print("read policy: " + ("ok" if "my-agent" in open("my-agent.toml").read() else "EMPTY"))
open(os.path.join(home, "notes.txt"), "w").write("the agent writes the home\n")
print("write home: ok")
"#;

/// The unprivileged user of the rootless tests.
const USER: u32 = 1000;

/// A home directory for [`USER`] (mode 0755, theirs, in a private scratch directory) with
/// `aegis` and `aegisc` on their PATH, as after `cargo build --release` and `export
/// PATH=...`, behind a shim directory whose `python3` exists only outside the sandbox (the
/// agent's `python3` must be looked up on its own PATH, never the caller's).
struct UserLab {
    _tmp: tempfile::TempDir,
    home: PathBuf,
}

impl UserLab {
    fn new(dirs: &[&str]) -> UserLab {
        let tmp = scratch();
        let home = tmp.path().join("home");
        for d in dirs {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        let shims = home.join("shims");
        std::fs::create_dir_all(&shims).unwrap();
        // Copies, not the build's own: the user may not reach the build's directory (a
        // checkout under a private home, say).
        for b in ["aegis", "aegisc"] {
            std::fs::copy(bin(b), shims.join(b)).unwrap();
        }
        std::fs::write(shims.join("python3"), "#!/bin/sh\necho 'the caller'\\''s python3 shim ran' >&2\nexit 97\n").unwrap();
        std::fs::set_permissions(shims.join("python3"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let lab = UserLab { _tmp: tmp, home };
        lab.own_everything();
        lab
    }

    /// Gives the whole tree to the user (directories 0755): call after writing files.
    fn own_everything(&self) {
        let top = self.home.parent().unwrap();
        for d in [top, &self.home] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        chown_tree(top, USER);
    }

    /// Runs `argv` as the user in `cwd`, with a login-like environment.
    fn run(&self, argv: &[&str], cwd: &Path) -> Run {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &USER.to_string(), "--regid", &USER.to_string(), "--init-groups", "--"])
            .args(argv)
            .current_dir(cwd)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin", self.home.join("shims").display()))
            .env("NO_COLOR", "1");
        run(&mut c)
    }
}

/// A user's policy for their checkout: their tools, the checkout writable, no network, and
/// the cgroup layer `required` or `best-effort` (this kind of host delegates no cgroup to
/// users).
fn user_policy(checkout: &Path, cgroup: &str) -> String {
    format!(
        r#"version = 1
[agent]
name = "my-agent"
[filesystem]
read = ["/usr", "/etc/gitconfig", "/etc/alternatives"]
write = ["{}"]
[exec]
allow = ["/usr/bin/git", "/usr/lib/git-core", "/usr/bin/python3"]
[network]
mode = "none"
[resources]
memory = "256MiB"
pids = 64
wall_time = "5m"
[enforcement]
cgroup = "{cgroup}"
"#,
        checkout.display()
    )
}

/// Edits and commits in its working directory (run by bare name: `git` is found on the
/// agent's PATH), then tries a secret.
const USER_AGENT: &str = r#"import os, subprocess
open("notes.txt", "w").write("written by the agent\n")
open("README", "a").write("after\n")
git = ["git", "-c", "user.name=Agent", "-c", "user.email=agent@example.com"]
subprocess.run(git + ["add", "-A"], check=True)
subprocess.run(git + ["commit", "-qm", "the agent's change"], check=True)
print("uid", os.getuid(), "in", os.getcwd())
try:
    open("/etc/shadow").read()
    print("/etc/shadow READ")
except OSError:
    print("/etc/shadow denied")
"#;

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}
