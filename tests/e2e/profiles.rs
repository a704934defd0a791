//! The built-in profiles run their real programs (issue 15.3). Each coding agent, installed
//! from npm or PyPI by `.ci/run` (under [`agents`]), runs under its profile through
//! `aegis run`, as an unprivileged user, in a home directory that holds planted credential
//! stores: `--version`, `--help` and a command that does local work, each with exit 0, the
//! program's own output and not one denial in the audit log (no refused request, no refused
//! call, no kernel denial; no "permission denied" or "read-only file system" on stderr).
//! The Python and Node agent profiles run a LangChain tool and a Node script that read their
//! code and write their state, as cleanly. Then, under the same policy, and again with the
//! whole home directory granted, a process tries to read every planted credential (and the
//! application's `.env`) and is refused each time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_tests::*;
use serde_json::Value;

use crate::launch::{audit_events, sandbox_ready};

/// Where `.ci/run` installs the agents, inside the clone: `target/agents/` with `npm/`
/// (`npm install -g --prefix`) and `aider/` (a virtualenv with aider-chat).
pub(crate) fn agents() -> String {
    repo_root().join("target/agents").to_string_lossy().into_owned()
}

/// The `[parameters]` table that declares where `.ci/run` installed the agents (given at
/// launch by [`Home::aegis_run`]).
const AGENTS_PARAMETER: &str = "[parameters]\nAGENTS = \"where .ci/run installed the agents\"\n";

/// The unprivileged user the agents run as (people run agents as themselves).
const USER: u32 = 1000;

/// A user's home directory for one test, outside `/tmp` (the sandbox's `/tmp` is private),
/// with credential stores planted where real tools keep them.
pub(crate) struct Home {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub home: PathBuf,
    pub workspace: PathBuf,
}

/// Planted credentials: path below the home directory, and a secret that must never be
/// read by the agent.
pub(crate) const SECRETS: &[&str] = &[
    ".ssh/id_ed25519",
    ".aws/credentials",
    ".config/gcloud/application_default_credentials.json",
    ".docker/config.json",
    ".netrc",
    ".git-credentials",
    ".kube/config",
    ".config/gh/hosts.yml",
    ".npmrc",
    ".pypirc",
    ".gnupg/private-keys-v1.d/key.key",
    ".local/share/keyrings/login.keyring",
    ".mozilla/firefox/profile/logins.json",
    ".bash_history",
    ".bashrc",
];

pub(crate) fn secret_text(rel: &str) -> String {
    format!("PLANTED-SECRET-{}", rel.replace(['/', '.'], "_"))
}

impl Home {
    /// A home with the planted secrets, a git identity, `dirs` (the agent's settings
    /// directories, which a user who ran the agent before has) and a checkout with one
    /// commit; everything owned by [`USER`].
    pub(crate) fn new(dirs: &[&str]) -> Home {
        let dir = tempfile::Builder::new().prefix("aegis-profiles-").tempdir_in("/var/tmp").unwrap();
        let root = dir.path().to_path_buf();
        let home = root.join("home");
        let workspace = root.join("project");
        for rel in SECRETS {
            let p = home.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, secret_text(rel)).unwrap();
        }
        std::fs::write(home.join(".gitconfig"), "[user]\n\tname = Test User\n\temail = user@example.com\n").unwrap();
        for d in dirs {
            std::fs::create_dir_all(home.join(d)).unwrap();
        }
        std::fs::create_dir_all(&workspace).unwrap();
        std::fs::write(workspace.join("hello.py"), "print('hello')\n").unwrap();
        // A copy, not the build's own: the user may not reach the build's directory (a
        // checkout under a private home, say).
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::copy(bin("aegis"), root.join("bin/aegis")).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(&root, USER);
        let h = Home { _dir: dir, root, home, workspace };
        for args in [&["init", "-q", "."][..], &["add", "-A"], &["commit", "-qm", "initial"]] {
            let r = h.as_user(&[&["/usr/bin/git"][..], args].concat(), &h.workspace);
            assert_eq!(r.code, 0, "git {args:?}: {}", r.stderr);
        }
        h
    }

    /// Runs `argv` as [`USER`] with this home, a plain environment, in `cwd`.
    pub(crate) fn as_user(&self, argv: &[&str], cwd: &Path) -> Run {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &USER.to_string(), "--regid", &USER.to_string(), "--init-groups", "--"])
            .args(argv)
            .current_dir(cwd)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("NO_COLOR", "1");
        run(&mut c)
    }

    /// Writes the user's policy: `profile` plus `extra` TOML (which must not repeat a
    /// section the caller adds itself), readable only by the user.
    pub(crate) fn policy(&self, name: &str, text: &str) -> PathBuf {
        let p = self.root.join(name);
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(&p, Some(USER), Some(USER)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// `aegis run --policy POLICY` as the user, with `HOME` and `WORKSPACE` (and `params`),
    /// the user's `HOME` in the agent's environment, and its own audit log; returns the
    /// outcome and the log's events.
    pub(crate) fn aegis_run(&self, policy: &Path, params: &[String], env: &[&str], argv: &[&str], log: &str) -> (Run, Vec<Value>) {
        let log = self.root.join(log);
        let aegis = self.root.join("bin/aegis");
        let mut args: Vec<String> = vec![aegis.to_string_lossy().into_owned(), "run".into(), "--policy".into(), policy.to_string_lossy().into_owned()];
        args.push(format!("--param=HOME={}", self.home.display()));
        // The agents' install dir is a parameter, not a literal path: a checkout under /tmp
        // (a CI clone) would otherwise name a path the private /tmp replaces.
        if std::fs::read_to_string(policy).is_ok_and(|t| t.contains("${AGENTS}")) {
            args.push(format!("--param=AGENTS={}", agents()));
        }
        args.extend(params.iter().cloned());
        args.push(format!("--env=HOME={}", self.home.display()));
        args.extend(env.iter().map(|e| format!("--env={e}")));
        args.push(format!("--audit-log={}", log.display()));
        args.push("--".into());
        args.extend(argv.iter().map(|a| a.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = self.as_user(&argv, &self.workspace);
        let events = if log.exists() { audit_events(&log) } else { Vec::new() };
        (r, events)
    }
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Every record that says something was refused: a decision or proxy request denied, a
/// kernel denial, a refused seccomp notification, and such records counted in `repeated`.
pub(crate) fn denials(events: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for e in events {
        let e = if e["kind"] == "repeated" { &e["event"] } else { e };
        let refused_calls = e["kind"] == "note"
            && e["message"].as_str().is_some_and(|m| m.starts_with("seccomp notifications:") && !m.contains(" (0 refused"));
        if e["decision"] == "deny" || e["kind"] == "kernel_denial" || e["kind"] == "denial" || refused_calls {
            out.push(e.to_string());
        }
    }
    out
}

/// What a program prints when the sandbox refused it something.
pub(crate) fn refusal_text(stderr: &str) -> Option<&str> {
    let lower = stderr.to_ascii_lowercase();
    ["permission denied", "read-only file system", "operation not permitted", "eacces", "erofs", "eperm"]
        .into_iter()
        .find(|w| lower.contains(w))
}

/// Whether the agents are installed here and the test user can run them; prints a SKIP
/// naming the fix when not.
pub(crate) fn agents_installed(what: &str, path: &str) -> bool {
    if !sandbox_ready() {
        return false;
    }
    let p = Path::new(&agents()).join(path);
    if !p.exists() {
        eprintln!("SKIP: {what} is not installed ({} missing): .ci/run installs the agents under {}", p.display(), agents());
        return false;
    }
    let mut test = Command::new("setpriv");
    test.args(["--reuid", &USER.to_string(), "--regid", &USER.to_string(), "--init-groups", "--", "test", "-x"]).arg(&p);
    if run(&mut test).code != 0 {
        eprintln!("SKIP: uid {USER} cannot run {} (is the clone readable by other users?)", p.display());
        return false;
    }
    true
}

/// The user's policy for a coding agent: the profile, the install prefix of the CI
/// machine (`npm install -g --prefix`), and resource limits made best-effort (this host
/// delegates no cgroup to users).
fn user_policy(profile: &str, extra: &str) -> String {
    format!(
        "version = 1\n[agent]\nextends = [\"aegis:{profile}@1\"]\n{AGENTS_PARAMETER}[filesystem]\nread = [\"${{AGENTS}}\"{extra}]\n\
         [exec]\nallow = [\"${{AGENTS}}\"]\n[enforcement]\ncgroup = \"best-effort\"\n"
    )
}

/// Runs each of `commands` (argv, where `{WS}` is the checkout; what it must print)
/// under `profile` and checks the run was clean; then the credential check.
fn agent_runs_clean(profile: &str, dirs: &[&str], env: &[&str], commands: &[(&[&str], &str)]) {
    let h = Home::new(dirs);
    let policy = h.policy("aegis.toml", &user_policy(profile, ""));
    let ws = format!("--param=WORKSPACE={}", h.workspace.display());
    for (i, (argv, expect)) in commands.iter().enumerate() {
        let argv: Vec<String> = argv.iter().map(|a| a.replace("{WS}", &h.workspace.to_string_lossy())).collect();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let (r, events) = h.aegis_run(&policy, std::slice::from_ref(&ws), env, &argv, &format!("audit-{i}.log"));
        assert_eq!(r.code, 0, "{profile}: {argv:?}\n{}\n{}", r.stdout, r.stderr);
        // Some print their help on stderr.
        assert!(r.stdout.contains(expect) || r.stderr.contains(expect), "{profile}: {argv:?} printed no {expect:?}:\n{}\n{}", r.stdout, r.stderr);
        assert_eq!(denials(&events), Vec::<String>::new(), "{profile}: {argv:?} met a denial");
        assert_eq!(refusal_text(&r.stderr), None, "{profile}: {argv:?}: {}", r.stderr);
        assert!(events.iter().any(|e| e["kind"] == "agent_exited" && e["status"] == 0), "{profile}: {events:?}");
    }
    credentials_unreadable(&h, profile, &|extra| user_policy(profile, extra), std::slice::from_ref(&ws), &["/usr/bin/python3", "-c"], &[]);
}

/// Reads each file named in its arguments and prints `READ path text` or `refused path errno`.
const PY_READER: &str = "import sys\nfor p in sys.argv[1:]:\n    try:\n        print('READ', p, open(p).read())\n    except OSError as e:\n        print('refused', p, e.errno)\n";
const NODE_READER: &str = "for (const p of process.argv.slice(1)) { try { console.log('READ', p, require('fs').readFileSync(p, 'utf8')) } catch (e) { console.log('refused', p, e.code) } }";

/// A process under the agent's policy (`policy(extra read grants)`) tries every planted
/// credential (and `more`: path, secret), and again with the whole home directory granted:
/// every one refused, no secret printed. `reader` is the interpreter and flag the policy
/// lets run, the reader script follows it.
fn credentials_unreadable(h: &Home, label: &str, policy: &dyn Fn(&str) -> String, params: &[String], reader: &[&str], more: &[(String, String)]) {
    let mut files: Vec<(String, String)> = SECRETS.iter().map(|s| (h.home.join(s).to_string_lossy().into_owned(), secret_text(s))).collect();
    files.extend(more.iter().cloned());
    let script = if reader[0].ends_with("node") { NODE_READER } else { PY_READER };
    for (name, extra) in [("plain.toml", ""), ("home-readable.toml", ", \"${HOME}\"")] {
        let policy = h.policy(name, &policy(extra));
        let mut argv = reader.to_vec();
        argv.push(script);
        argv.extend(files.iter().map(|(f, _)| f.as_str()));
        let (r, _) = h.aegis_run(&policy, params, &[], &argv, &format!("creds-{name}.log"));
        assert_eq!(r.code, 0, "{label} {name}: {}\n{}", r.stdout, r.stderr);
        for (file, secret) in &files {
            assert!(r.stdout.contains(&format!("refused {file} ")), "{label} {name}: {file} was not refused:\n{}", r.stdout);
            assert!(!r.stdout.contains(secret.as_str()), "{label} {name}: the secret of {file} was read:\n{}", r.stdout);
        }
    }
}

fn npm_bin(name: &str) -> String {
    format!("{}/npm/bin/{name}", agents())
}

#[test]
fn claude_code_runs_under_its_profile() {
    if !agents_installed("Claude Code", "npm/bin/claude") {
        return;
    }
    let claude = npm_bin("claude");
    agent_runs_clean(
        "claude-code",
        &[".claude"],
        &["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1"],
        &[(&[&claude, "--version"], "(Claude Code)"), (&[&claude, "--help"], "Usage: claude"), (&[&claude, "mcp", "list"], "No MCP servers configured")],
    );
}

#[test]
fn codex_runs_under_its_profile() {
    if !agents_installed("Codex CLI", "npm/bin/codex") {
        return;
    }
    let codex = npm_bin("codex");
    agent_runs_clean(
        "codex",
        &[".codex"],
        &[],
        &[(&[&codex, "--version"], "codex-cli "), (&[&codex, "--help"], "Usage: codex"), (&[&codex, "completion", "bash"], "_codex()")],
    );
}

#[test]
fn gemini_cli_runs_under_its_profile() {
    if !agents_installed("Gemini CLI", "npm/bin/gemini") {
        return;
    }
    let gemini = npm_bin("gemini");
    agent_runs_clean(
        "gemini-cli",
        &[".gemini"],
        &[],
        &[(&[&gemini, "--version"], "."), (&[&gemini, "--help"], "Usage: gemini"), (&[&gemini, "mcp", "list"], "No MCP servers configured")],
    );
}

#[test]
fn opencode_runs_under_its_profile() {
    if !agents_installed("opencode", "npm/bin/opencode") {
        return;
    }
    let opencode = npm_bin("opencode");
    agent_runs_clean(
        "opencode",
        &[".config/opencode", ".local/share/opencode", ".local/state/opencode", ".cache/opencode"],
        &[],
        &[(&[&opencode, "--version"], "."), (&[&opencode, "--help"], "opencode"), (&[&opencode, "debug", "paths"], "/home/.config/opencode")],
    );
}

#[test]
fn aider_runs_under_its_profile() {
    if !agents_installed("Aider", "aider/bin/aider") {
        return;
    }
    let aider = format!("{}/aider/bin/aider", agents());
    // Aider works in the git checkout it is started in (the sandbox starts in /): it adds
    // its files to .gitignore and writes its chat history there. A new install asks one
    // user in ten whether to send analytics to PostHog, which the profile does not grant
    // (a "yes", the default without a terminal, would be refused in the log): this user
    // says no on the command line, as docs/profiles.md tells users.
    let in_checkout = format!("cd \"$1\" && exec {aider} --list-models gpt-4o --no-check-update --no-analytics");
    agent_runs_clean(
        "aider",
        &[".aider"],
        &[],
        &[
            (&[&aider, "--version"], "aider "),
            (&[&aider, "--help"], "usage: aider"),
            (&["/bin/sh", "-c", &in_checkout, "sh", "{WS}"], "Models which match"),
        ],
    );
}

/// An application agent (`aegis:python-agent@1`, `aegis:node-agent@1`): its code in `app/`
/// with notes it reads and a `.env` of secrets, its state directory, and the user's policy.
struct App {
    home: Home,
    app: PathBuf,
    state: PathBuf,
    params: Vec<String>,
}

impl App {
    fn new(file: &str, code: &str) -> App {
        let home = Home::new(&[]);
        let app = home.root.join("app");
        let state = home.root.join("state");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(app.join(file), code).unwrap();
        std::fs::write(app.join("notes.txt"), "three small words\n").unwrap();
        std::fs::write(app.join(".env"), "OPENAI_API_KEY=PLANTED-SECRET-dotenv\n").unwrap();
        chown_tree(&app, USER);
        chown_tree(&state, USER);
        let params = vec![format!("--param=APP={}", app.display()), format!("--param=STATE={}", state.display())];
        App { home, app, state, params }
    }

    /// Runs `argv` under `policy` and checks the run was clean and left its state.
    fn runs_clean(&self, label: &str, policy: &Path, argv: &[&str], expect: &str) {
        let (r, events) = self.home.aegis_run(policy, &self.params, &[], argv, "audit.log");
        assert_eq!(r.code, 0, "{label}: {}\n{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(expect), "{label} printed no {expect:?}:\n{}\n{}", r.stdout, r.stderr);
        assert_eq!(denials(&events), Vec::<String>::new(), "{label} met a denial");
        assert_eq!(refusal_text(&r.stderr), None, "{label}: {}", r.stderr);
        let memory = std::fs::read_to_string(self.state.join("memory.json")).unwrap();
        assert_eq!(memory.replace(' ', ""), "{\"words\":3}", "{label}: its state");
    }

    fn dotenv(&self) -> (String, String) {
        (self.app.join(".env").to_string_lossy().into_owned(), "PLANTED-SECRET-dotenv".into())
    }
}

/// A LangChain agent's tool (langchain-core, installed by `.ci/run` in a virtualenv) runs
/// under `aegis:python-agent@1`: it reads its code and notes, writes its state; it cannot
/// read its `.env` or the user's credential stores.
#[test]
fn python_agent_runs_under_its_profile() {
    if !agents_installed("LangChain (langchain-core)", "langchain/bin/python") {
        return;
    }
    const AGENT: &str = "import json, os, sys\nfrom langchain_core.tools import tool\n\n\
        @tool\ndef word_count(text: str) -> int:\n    \"\"\"Counts the words of a text.\"\"\"\n    return len(text.split())\n\n\
        here = os.path.dirname(os.path.abspath(__file__))\n\
        n = word_count.invoke({'text': open(os.path.join(here, 'notes.txt')).read()})\n\
        with open(os.path.join(sys.argv[1], 'memory.json'), 'w') as f:\n    json.dump({'words': n}, f)\n\
        print('word_count said', n)\n";
    let a = App::new("agent.py", AGENT);
    let venv = format!("{}/langchain", agents());
    let policy = |extra: &str| {
        format!(
            "version = 1\n[agent]\nextends = [\"aegis:python-agent@1\"]\n{AGENTS_PARAMETER}[filesystem]\nread = [\"${{AGENTS}}/langchain\"{extra}]\n\
             [exec]\nallow = [\"${{AGENTS}}/langchain/bin/python\"]\n[enforcement]\ncgroup = \"best-effort\"\n"
        )
    };
    let p = a.home.policy("aegis.toml", &policy(""));
    let python = format!("{venv}/bin/python");
    let agent = a.app.join("agent.py").to_string_lossy().into_owned();
    let state = a.state.to_string_lossy().into_owned();
    a.runs_clean("python-agent", &p, &[&python, &agent, &state], "word_count said 3");
    credentials_unreadable(&a.home, "python-agent", &policy, &a.params, &[&python, "-c"], &[a.dotenv()]);
}

/// A Node agent runs under `aegis:node-agent@1` (the host's node; no package needed):
/// reads its code and notes, writes its state; its `.env` and the credential stores stay
/// unreadable.
#[test]
fn node_agent_runs_under_its_profile() {
    if !sandbox_ready() {
        return;
    }
    if !Path::new("/usr/bin/node").exists() {
        eprintln!("SKIP: /usr/bin/node is not installed (the host's Node.js, which npm's agents need too)");
        return;
    }
    const AGENT: &str = "import { readFileSync, writeFileSync } from 'node:fs';\n\
        const notes = readFileSync(new URL('./notes.txt', import.meta.url), 'utf8');\n\
        const n = notes.split(/\\s+/).filter(Boolean).length;\n\
        writeFileSync(process.argv[2] + '/memory.json', JSON.stringify({ words: n }));\n\
        console.log('word count said', n);\n";
    let a = App::new("agent.mjs", AGENT);
    let policy = |extra: &str| {
        let read = if extra.is_empty() { String::new() } else { format!("[filesystem]\nread = [{}]\n", extra.trim_start_matches(", ")) };
        format!("version = 1\n[agent]\nextends = [\"aegis:node-agent@1\"]\n{read}[enforcement]\ncgroup = \"best-effort\"\n")
    };
    let p = a.home.policy("aegis.toml", &policy(""));
    let agent = a.app.join("agent.mjs").to_string_lossy().into_owned();
    let state = a.state.to_string_lossy().into_owned();
    a.runs_clean("node-agent", &p, &["/usr/bin/node", &agent, &state], "word count said 3");
    credentials_unreadable(&a.home, "node-agent", &policy, &a.params, &["/usr/bin/node", "-e"], &[a.dotenv()]);
}
