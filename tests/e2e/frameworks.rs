//! Issue 15.5: agent frameworks ask AEGIS before acting, and an MCP server runs under its own
//! policy. A LangChain tool and a CrewAI tool that write files, wrapped by
//! `examples/python/aegis_langchain.py` and `aegis_crewai.py`, ask a real `aegisd` before
//! each call: the allowed call writes its file, a denied one (refused by the policy, a path
//! with `..` the daemon will not judge, no daemon at all) writes nothing and gives the agent a
//! refusal that says why; each question is in the daemon's audit log. The frameworks come
//! from PyPI (`langchain-core` and `crewai`, installed by `.ci/run` in one virtualenv under
//! `target/agents/langchain`); no model is called. Then the stdio MCP server of
//! `tests/fixtures/e2e/mcp_notes_server.py` runs under `examples/python/mcp-server.toml`
//! through `aegis run`: JSON-RPC passes through stdin and stdout untouched, the server reads
//! the notes it serves, and not a credential store.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aegis_tests::*;
use serde_json::Value;

use crate::launch::{audit_events, fixture, sandbox_ready};
use crate::profiles::agents;

/// `aegisd` on a socket of its own, with one policy registered; stopped when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, policy: &Path) -> Daemon {
        let state = dir.join("state");
        std::fs::create_dir(&state).unwrap();
        let (socket, log) = (state.join("aegisd.sock"), state.join("audit.log"));
        let child = Command::new(bin("aegisd")).arg("--socket").arg(&socket).arg("--audit-log").arg(&log).stderr(Stdio::null()).spawn().unwrap();
        let d = Daemon { child, socket, log };
        let started = Instant::now();
        while !d.socket.exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "aegisd did not create {}", d.socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = run(Command::new(bin("aegis")).arg("--socket").arg(&d.socket).arg("register").arg(policy));
        assert_eq!(r.code, 0, "aegis register: {}{}", r.stdout, r.stderr);
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tests/fixtures/e2e/framework_tools.py FRAMEWORK` against a fresh `aegisd` whose
/// agent `note-taker` may write `DIR/allowed` only. Returns what each wrapped call returned,
/// the directory, and the daemon's audit events; `None` (after printing SKIP) without the
/// frameworks.
fn wrapped_tools(framework: &str, module: &str) -> Option<(Value, tempfile::TempDir, Vec<Value>)> {
    let python = Path::new(&agents()).join("langchain/bin/python");
    if !python.exists() {
        eprintln!("SKIP: {} is missing: .ci/run installs langchain-core and crewai there", python.display());
        return None;
    }
    let probe = run(Command::new(&python).args(["-c", &format!("import {module}")]));
    if probe.code != 0 {
        eprintln!("SKIP: {module} does not import in {}: {}", python.display(), probe.stderr.trim());
        return None;
    }
    let dir = tempfile::Builder::new().prefix("aegis-frameworks-").tempdir_in("/var/tmp").unwrap();
    let root = dir.path();
    for d in ["allowed", "forbidden", "home"] {
        std::fs::create_dir(root.join(d)).unwrap();
    }
    let policy = root.join("note-taker.toml");
    std::fs::write(
        &policy,
        format!("version = 1\n[agent]\nname = \"note-taker\"\n[filesystem]\nread = [\"/usr\"]\nwrite = [\"{}/allowed\"]\n", root.display()),
    )
    .unwrap();
    let daemon = Daemon::start(root, &policy);
    let r = run_for(
        Command::new(&python)
            .arg(fixture("framework_tools.py"))
            .arg(framework)
            .arg(root)
            .arg(&daemon.socket)
            .env("PYTHONPATH", repo_root().join("examples/python"))
            .env("HOME", root.join("home"))
            .env("CREWAI_DISABLE_TELEMETRY", "true")
            .env("OTEL_SDK_DISABLED", "true")
            .env_remove("AEGIS_DECISION_URL"),
        Duration::from_secs(120),
    );
    assert_eq!(r.code, 0, "{framework}: {}\n{}", r.stdout, r.stderr);
    let out: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    let log = daemon.log.clone();
    drop(daemon);
    let events = audit_events(&log);
    Some((out, dir, events))
}

/// What both wrappers must do: same tool for the model, the allowed call acts, every refused
/// one does not, and says why; the daemon recorded the questions it answered.
fn acts_only_when_allowed(framework: &str, out: &Value, root: &Path, events: &[Value]) {
    let at = |rel: &str| root.join(rel).to_string_lossy().into_owned();
    assert_eq!(out["same_tool"], serde_json::json!([true, true, true]), "{framework}: the model sees another tool: {out}");
    assert_eq!(out["allowed"], format!("wrote 5 bytes to {}", at("allowed/a.txt")), "{framework}: {out}");
    assert_eq!(std::fs::read_to_string(root.join("allowed/a.txt")).unwrap(), "hello");
    let written: Vec<_> = std::fs::read_dir(root.join("forbidden")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(written.is_empty(), "{framework}: a refused call acted: {written:?}");
    assert!(!root.join("allowed/f.txt").exists(), "{framework}: ran without an answer from aegisd");
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let denied = format!("AEGIS denies write_note: no write grant covers '{}' (default deny)", at("forbidden/b.txt"));
    assert!(text(&out["denied"]).contains(&denied), "{framework}: {out}");
    assert!(text(&out["denied_call"]).contains("no write grant covers") && text(&out["denied_call"]).contains(&at("forbidden/c.txt")), "{framework}: {out}");
    let dotdot = text(&out["dotdot"]);
    assert!(dotdot.contains("AEGIS could not decide, so write_note did not run") && dotdot.contains("contains `..`"), "{framework}: {dotdot}");
    let none = text(&out["no_daemon"]);
    assert!(none.contains("AEGIS could not decide, so write_note did not run") && none.contains("no-such.sock did not answer"), "{framework}: {none}");
    let asked = |path: &str, decision: &str| {
        events.iter().any(|e| e["component"] == "aegisd" && e["subject"] == "fs" && e["target"] == format!("write {}", at(path)) && e["decision"] == decision)
    };
    assert!(asked("allowed/a.txt", "allow"), "{framework}: no allow record for allowed/a.txt: {events:?}");
    assert!(asked("forbidden/b.txt", "deny"), "{framework}: no deny record for forbidden/b.txt: {events:?}");
}

/// LangChain: `aegis_tool(tool, question)` refuses with a `ToolException` that LangChain
/// hands to the model (the returned text; an error `ToolMessage` for a tool call), or raises
/// it with `handle_tool_error=False`.
#[test]
fn langchain_tool_asks_aegisd_before_acting() {
    let Some((out, dir, events)) = wrapped_tools("langchain", "langchain_core") else { return };
    acts_only_when_allowed("langchain", &out, dir.path(), &events);
    assert_eq!(out["denied_call"][0], "error", "{out}");
    assert!(out["raised"].as_str().unwrap_or_default().starts_with("AEGIS denies write_note: no write grant covers"), "{out}");
}

/// CrewAI: `AegisTool.wrap(tool, question)` returns a `ToolFailure` (code `aegis::denied`),
/// called directly and through the structured tool CrewAI's agents use.
#[test]
fn crewai_tool_asks_aegisd_before_acting() {
    let Some((out, dir, events)) = wrapped_tools("crewai", "crewai") else { return };
    acts_only_when_allowed("crewai", &out, dir.path(), &events);
    for case in ["denied", "denied_call", "dotdot", "no_daemon"] {
        assert_eq!(out[case][0], "aegis::denied", "{case}: not a ToolFailure: {out}");
    }
}

/// The README's MCP section: a stdio MCP server under `examples/python/mcp-server.toml`,
/// started by `aegis run` as an MCP client would. Its stdout is JSON-RPC only; it serves its
/// notes, and a credential store in the home directory is not readable to it.
#[test]
fn an_mcp_stdio_server_runs_under_its_own_policy() {
    if !sandbox_ready() {
        return;
    }
    let dir = tempfile::Builder::new().prefix("aegis-mcp-").tempdir_in("/var/tmp").unwrap();
    let root = dir.path();
    // The server runs as another user (root's agents run as 65534): the files are readable
    // to everyone, so only the policy keeps the key from it.
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (app, notes, home) = (root.join("app"), root.join("notes"), root.join("home"));
    for d in [&app, &notes, &home.join(".ssh")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::copy(fixture("mcp_notes_server.py"), app.join("server.py")).unwrap();
    std::fs::write(notes.join("hello.txt"), "hello notes\n").unwrap();
    let key = home.join(".ssh/id_ed25519");
    std::fs::write(&key, "PLANTED-SECRET-ssh-key").unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let requests = [
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}),
        serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        serde_json::json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "read_note", "arguments": {"path": "hello.txt"}}}),
        serde_json::json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "read_note", "arguments": {"path": s(&key)}}}),
    ];
    let mut child = Command::new("timeout")
        .arg("60")
        .arg(bin("aegis"))
        .arg("run")
        .arg("--policy")
        .arg(repo_root().join("examples/python/mcp-server.toml"))
        .args(["--param", &format!("APP={}", s(&app)), "--param", &format!("DATA={}", s(&notes)), "--param", &format!("HOME={}", s(&home))])
        .arg("--audit-log")
        .arg(root.join("audit.log"))
        .args(["--", "/usr/bin/python3", &s(&app.join("server.py")), &s(&notes)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for r in &requests {
        writeln!(stdin, "{r}").unwrap();
    }
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    let answers: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {l:?}\n{stderr}"))).collect();
    assert_eq!(answers.len(), 4, "one answer per request with an id: {stdout}\n{stderr}");
    assert_eq!(answers[0]["result"]["serverInfo"]["name"], "notes", "{stdout}");
    assert_eq!(answers[1]["result"]["tools"][0]["name"], "read_note", "{stdout}");
    assert_eq!(answers[2]["result"]["content"][0]["text"], "hello notes\n", "{stdout}\n{stderr}");
    assert_eq!(answers[3]["result"]["isError"], true, "the server read the SSH key: {stdout}");
    assert!(!stdout.contains("PLANTED-SECRET") && !stderr.contains("PLANTED-SECRET"), "{stdout}\n{stderr}");
    let events = audit_events(&root.join("audit.log"));
    assert!(events.iter().any(|e| e.to_string().contains("notes-mcp")), "the run is not recorded: {events:?}");
}
