//! The egress proxy and API gate (issue 7), end to end, as root: example bundles built with
//! `aegisc`, agents run by `aegis-exec` in `proxy` network mode against test servers in an
//! isolated upstream namespace ([`aegis_tests::upstream`]), every name pinned there with
//! `--resolve` and the test CA passed with `--upstream-ca`. Asserts issue 7's "Done when"
//! (inbox-manager lists and labels on a fake Gmail, gets 403 on send, the token is injected by
//! the proxy and absent from the sandbox, every request audited; research-agent reads allowed
//! sites only), its attacks (each denied and in the audit log, and never seen by the server)
//! and its benign workloads (curl, urllib, requests, git, a large chunked upload, server-sent
//! events, WebSocket). The probe agent is `tests/fixtures/proxy/client.py`; the servers are
//! `tests/fixtures/proxy/server.py`, whose fake Gmail is lenient the way real servers are, so a
//! trick the proxy let through would show up there as the action it performs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aegis_tests::upstream::{self, Serve, Upstream};
use aegis_tests::*;
use serde_json::{Value, json};

use crate::launch::{Lab, audit_events, run_for, sandbox_ready};

const GMAIL_TOKEN: &str = "ya29.test-gmail-token-7f3a9c";
const FILES_KEY: &str = "files-key-51d2e8b0";

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/proxy")
}

/// An upstream with its servers, or None (after printing why) when this host cannot make one.
fn upstream(name: &str, static_dir: Option<PathBuf>) -> Option<Upstream> {
    upstream_with(name, static_dir, vec![])
}

fn upstream_with(name: &str, static_dir: Option<PathBuf>, echo_ports: Vec<u16>) -> Option<Upstream> {
    if let Some(why) = upstream::unavailable() {
        eprintln!("SKIP: {why}");
        return None;
    }
    let t0 = std::time::Instant::now();
    let mut up = Upstream::start(name);
    let t1 = t0.elapsed();
    up.serve(&Serve {
        credentials: vec![
            ("gmail.googleapis.com", "Authorization", format!("Bearer {GMAIL_TOKEN}")),
            ("files.example.net", "X-Api-Key", FILES_KEY.to_string()),
        ],
        static_dir,
        echo_ports,
    });
    eprintln!("upstream {name}: 10.233.{}.0/29, namespace and PKI in {t1:?}, servers listening after {:?}", up.index, t0.elapsed());
    Some(up)
}

/// A bare repository with one commit, prepared for dumb HTTP (`git update-server-info`), at
/// `<dir>/repo.git`; `dir` is what the server serves under `/repo.git/`.
fn git_repo(dir: &Path) -> PathBuf {
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("README.md"), "fetched through the AEGIS proxy\n").unwrap();
    let git = |args: &[&str], cwd: &Path| {
        let r = run(Command::new("/usr/bin/git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(cwd)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir));
        assert_eq!(r.code, 0, "git {args:?}: {}", r.stderr);
    };
    git(&["init", "-q"], &work);
    git(&["add", "README.md"], &work);
    git(&["commit", "-q", "-m", "first"], &work);
    git(&["clone", "-q", "--bare", "work", "repo.git"], dir);
    git(&["update-server-info"], &dir.join("repo.git"));
    dir.to_path_buf()
}

/// An upstream whose servers also serve a bare git repository (kept in the returned
/// directory), or None when this host cannot make one.
pub(crate) fn git_upstream(name: &str, echo_ports: Vec<u16>) -> Option<(tempfile::TempDir, Upstream)> {
    let tmp = tempfile::Builder::new().prefix("aegis-up-git-").tempdir_in("/var/tmp").unwrap();
    let up = upstream_with(name, Some(git_repo(tmp.path())), echo_ports)?;
    Some((tmp, up))
}

/// `client.py` run on the host, straight to the upstream (no proxy): checks the fixtures.
fn host_client(up: &Upstream, ops: &Value) -> Vec<Value> {
    let resolve: Vec<String> = ["gmail.googleapis.com", "files.example.net", "www.example.com", "git.example.com"].iter().map(|n| format!("{n}={}", up.ip)).collect();
    let r = run(Command::new("/usr/bin/python3")
        .arg(fixtures().join("client.py"))
        .arg(ops.to_string())
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("AEGIS_TEST_RESOLVE", resolve.join(","))
        .env("SSL_CERT_FILE", &up.pki.ca));
    assert_eq!(r.code, 0, "client.py: {}{}", r.stdout, r.stderr);
    serde_json::from_str(r.stdout.trim()).unwrap()
}

fn get(host: &str, path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

fn post(host: &str, path: &str, extra: &str, body: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())
}

/// The fixtures themselves, without any proxy: every site answers, credentials are checked,
/// the upload hash, events, WebSocket and git work, and the fake Gmail is as lenient as the
/// module doc says (so the proxy tests can fail).
#[test]
fn the_test_upstream_serves_every_fixture_directly() {
    let Some((tmp, up)) = git_upstream("direct", vec![]) else { return };
    let g = "gmail.googleapis.com";
    let auth = format!("Authorization: Bearer {GMAIL_TOKEN}\r\n");
    let key = format!("X-Api-Key: {FILES_KEY}\r\n");
    let out = host_client(
        &up,
        &json!([
            {"op": "tls", "target": format!("{g}:443"), "sni": g, "requests": [
                get(g, "/gmail/v1/users/me/messages", &auth),
                get(g, "/gmail/v1/users/me/messages", ""),
                post(g, "/gmail/v1/users/me/messages/m1/modify", &auth, r#"{"addLabelIds":["Label_1"]}"#),
                post(g, "/gmail/v1/users/me/messages/x/..%2Fsend", &auth, "{}"),
                get(g, "/gmail/v1/users/me/messages/send", &format!("{auth}X-HTTP-Method-Override: POST\r\n")),
            ]},
            {"op": "upload", "target": "files.example.net:443", "path": "/upload", "mb": 24, "headers": {"X-Api-Key": FILES_KEY}},
            {"op": "sse", "target": "files.example.net:443", "path": "/events", "headers": {"X-Api-Key": FILES_KEY}},
            {"op": "ws", "target": "files.example.net:443", "path": "/ws", "messages": ["one", "two"], "headers": {"X-Api-Key": FILES_KEY}},
            {"op": "tls", "target": "www.example.com:8443", "sni": "www.example.com", "requests": [get("www.example.com", "/headers", &key)]},
        ]),
    );
    let statuses: Vec<i64> = out[0]["responses"].as_array().unwrap().iter().map(|r| r["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, [200, 401, 200, 200, 200], "{}", out[0]);
    assert!(out[0]["responses"][2]["body"].as_str().unwrap().contains("Label_1"), "{}", out[0]);
    assert_eq!(out[1]["status"], 200, "{}", out[1]);
    assert_eq!(out[1]["server"]["sha256"], out[1]["local_sha256"], "{}", out[1]);
    assert_eq!(out[1]["server"]["chunked"], true);
    eprintln!("24 MiB chunked upload, Python client straight to the upstream: {} s", out[1]["seconds"]);
    let t: Vec<f64> = out[2]["events"].as_array().unwrap().iter().map(|e| e["t"].as_f64().unwrap()).collect();
    assert_eq!(t.len(), 5, "{}", out[2]);
    assert!(t[4] - t[0] > 0.75, "events arrive as they are sent: {t:?}");
    assert_eq!(out[3]["echo"], json!(["one", "two"]), "{}", out[3]);
    assert_eq!(out[3]["accept_ok"], true);
    assert_eq!(out[4]["responses"][0]["status"], 200, "{}", out[4]);

    let reqs = up.requests();
    let actions: Vec<&str> = reqs.iter().filter(|r| r["host"] == g).map(|r| r["action"].as_str().unwrap()).collect();
    // The lenient server turns both tricks into a send: what the proxy must prevent.
    assert_eq!(actions, ["list", "list", "modify", "send", "send"], "{reqs:?}");
    assert!(reqs.iter().all(|r| r["tls"] == true && r["sni"] == r["host"]), "{reqs:?}");

    // curl and git straight to the upstream.
    let o = up.curl(&format!("https://{g}/gmail/v1/users/me/labels"), &["-H", &format!("Authorization: Bearer {GMAIL_TOKEN}")]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("triaged"), "{o:?}");
    let o = up.curl("http://plain.example.com/hello", &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("plain.example.com/hello"), "{o:?}");
    let dest = tmp.path().join("clone");
    let r = run(Command::new("/usr/bin/git")
        .arg("-c")
        .arg(format!("http.curloptResolve=git.example.com:443:{}", up.ip))
        .args(["clone", "-q", "https://git.example.com/repo.git"])
        .arg(&dest)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_SSL_CAINFO", &up.pki.ca)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("HOME", tmp.path()));
    assert_eq!(r.code, 0, "git clone: {}", r.stderr);
    assert_eq!(std::fs::read_to_string(dest.join("README.md")).unwrap(), "fetched through the AEGIS proxy\n");
}

/// Every name the tests use, pinned to the upstream in every launch: a name the proxy wrongly
/// admitted would reach the test servers and show up in their log.
const NAMES: &[&str] = &[
    "gmail.googleapis.com",
    "files.example.net",
    "www.example.com",
    "git.example.com",
    "ws.example.com",
    "plain.example.com",
    "example.com",
    "example.com.evil.com",
    "evilexample.com",
    "evil.test",
    "en.wikipedia.org",
    "upload.wikimedia.org",
    "arxiv.org",
    "export.arxiv.org",
    "docs.python.org",
    "plainapi.example.org",
    "nocert.example.org",
    "git.example.org",
    "cdn.example.com",
];

/// One proxy-mode launch: what the agent printed and exited with, the audit log's
/// `proxy_request` records, and all its events.
struct Launch {
    run: Run,
    log: PathBuf,
    events: Vec<Value>,
}

impl Launch {
    fn proxy_records(&self) -> Vec<&Value> {
        // An identical record repeated within a second is one record plus a `repeated` count
        // (docs/audit.md §14): each counted repeat is a request too.
        self.events
            .iter()
            .flat_map(|e| match e["kind"].as_str() {
                Some("repeated") if e["event"]["kind"] == "proxy_request" => vec![&e["event"]; e["count"].as_u64().unwrap_or(0) as usize],
                _ => vec![e],
            })
            .filter(|e| e["kind"] == "proxy_request")
            .collect()
    }

    /// The audit log as text (to check that no secret reached it).
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

/// `aegis-exec` in proxy mode: every name of [`NAMES`] (and `extra_resolve`) pinned to
/// the upstream, the test CA trusted upstream, `GMAIL_TOKEN` in aegis-exec's own environment
/// only; `env` are `--env` arguments (`NAME=VALUE` or `NAME`). `cmd` empty: the bundle's own
/// command.
fn launch(lab: &Lab, up: &Upstream, bundle: &Path, params: &[(&str, &Path)], env: &[&str], extra_resolve: &[(&str, String)], cmd: &[&str]) -> Launch {
    launch_ca(lab, up, true, bundle, params, env, extra_resolve, cmd)
}

/// [`launch`], passing the test CA with `--upstream-ca` only when `with_ca`.
#[allow(clippy::too_many_arguments, reason = "launch's arguments plus the CA switch")]
fn launch_ca(lab: &Lab, up: &Upstream, with_ca: bool, bundle: &Path, params: &[(&str, &Path)], env: &[&str], extra_resolve: &[(&str, String)], cmd: &[&str]) -> Launch {
    let log = lab.path(&format!("audit-{}.log", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
    let mut c = Command::new(bin("aegis-exec"));
    c.env("AEGIS_STATE_DIR", &lab.state)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("GMAIL_TOKEN", GMAIL_TOKEN)
        .arg("--trust-key")
        .arg(&lab.public)
        .arg("--audit-log")
        .arg(&log)
        .args(up.resolve_args(NAMES));
    if with_ca {
        c.arg("--upstream-ca").arg(&up.pki.ca);
    }
    for (name, ip) in extra_resolve {
        c.arg("--resolve").arg(format!("{name}={ip}"));
    }
    for (k, v) in params {
        c.arg("--param").arg(format!("{k}={}", v.display()));
    }
    for e in env {
        c.arg("--env").arg(e);
    }
    c.arg(bundle);
    if !cmd.is_empty() {
        c.arg("--").args(cmd);
    }
    let run = run_for(&mut c, Duration::from_secs(120));
    let events = audit_events(&log);
    Launch { run, log, events }
}

/// The test policy `gate.toml`, extended by a file that gives `[api.files]` its credential
/// from a host file (only root can read it): the bundle and its parameters.
fn gate_bundle(lab: &Lab, extra_toml: &str) -> (PathBuf, Vec<(&'static str, PathBuf)>) {
    let key = lab.path("files.key");
    std::fs::write(&key, format!("{FILES_KEY}\n")).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pol = lab.path("gate-with-file-credential.toml");
    std::fs::write(
        &pol,
        format!(
            "version = 1\n[agent]\nextends = [{:?}]\n[api.files]\nhost = \"files.example.net\"\ncredential = {{ header = \"X-Api-Key\", from_file = {:?} }}\n{extra_toml}",
            fixtures().join("gate.toml").display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let bundle = lab.build(&pol, "bundle-gate");
    (bundle, vec![("FIXTURES", fixtures()), ("EXAMPLES", repo_root().join("examples/python"))])
}

/// Runs `client.py OPS` in the gate sandbox; returns one result per op and the launch.
fn probe(lab: &Lab, up: &Upstream, extra_resolve: &[(&str, String)], ops: &Value) -> (Vec<Value>, Launch) {
    probe_with(lab, up, "", extra_resolve, ops)
}

/// [`probe`] with more policy text appended to the gate policy's extension.
fn probe_with(lab: &Lab, up: &Upstream, extra_toml: &str, extra_resolve: &[(&str, String)], ops: &Value) -> (Vec<Value>, Launch) {
    probe_ca(lab, up, true, extra_toml, extra_resolve, ops)
}

/// [`probe_with`], passing the test CA to the proxy only when `with_ca`.
fn probe_ca(lab: &Lab, up: &Upstream, with_ca: bool, extra_toml: &str, extra_resolve: &[(&str, String)], ops: &Value) -> (Vec<Value>, Launch) {
    let (bundle, params) = gate_bundle(lab, extra_toml);
    let params: Vec<(&str, &Path)> = params.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let client = fixtures().join("client.py").display().to_string();
    let l = launch_ca(lab, up, with_ca, &bundle, &params, &[], extra_resolve, &["/usr/bin/python3", &client, &ops.to_string()]);
    assert_eq!(l.run.code, 0, "the probe agent failed: exit {}\n{}\n{}", l.run.code, l.run.stdout, l.run.stderr);
    let out: Vec<Value> = serde_json::from_str(l.run.stdout.trim()).unwrap_or_else(|e| panic!("probe output {e}: {}\n{}", l.run.stdout, l.run.stderr));
    assert_eq!(out.len(), ops.as_array().unwrap().len());
    (out, l)
}

/// False (after printing why) unless this host can run the proxy tests: root, python3, nft
/// (see [`sandbox_ready`]), ip and openssl for the upstream, and the tools the probe agent
/// runs (`/usr/bin/curl`, `/usr/bin/git`, Python `requests`: Debian curl, git,
/// python3-requests).
fn ready() -> bool {
    if !sandbox_ready() {
        return false;
    }
    let why = if let Some(why) = upstream::unavailable() {
        why
    } else if let Some(tool) = ["/usr/bin/curl", "/usr/bin/git"].into_iter().find(|t| !Path::new(t).exists()) {
        format!("{tool} is missing (the probe agent runs it through the proxy)")
    } else if !Command::new("/usr/bin/python3").args(["-c", "import requests"]).status().is_ok_and(|s| s.success()) {
        "Python `requests` is missing for /usr/bin/python3 (Debian python3-requests)".into()
    } else {
        return true;
    };
    eprintln!("SKIP: {why}");
    false
}

fn lower_host(r: &Value) -> String {
    r["host"].as_str().unwrap_or("").trim_matches(['[', ']']).to_ascii_lowercase()
}

/// The audit record of a denial whose host is one of `hosts` (and whose path is `path`,
/// when given).
fn denial<'a>(recs: &[&'a Value], hosts: &[&str], path: Option<&str>) -> Option<&'a Value> {
    recs.iter()
        .find(|r| r["decision"] == "deny" && hosts.iter().any(|h| lower_host(r) == h.trim_matches(['[', ']']).to_ascii_lowercase()) && path.is_none_or(|p| r["path"] == p))
        .copied()
}

fn header_values<'a>(req: &'a Value, name: &str) -> Vec<&'a str> {
    req["headers"].as_array().unwrap().iter().filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name)).map(|h| h[1].as_str().unwrap()).collect()
}

fn status(v: &Value) -> i64 {
    v["status"].as_i64().unwrap_or(-1)
}

/// Done when (1): `policies/inbox-manager.toml` runs the inbox agent
/// (`examples/inbox-agent/agent.py`), which lists and labels messages on the fake Gmail and
/// gets 403 on `messages/send`; the server saw the proxy's token on every request it got and
/// never a send; the token is nowhere in the sandbox (environment of every process, files
/// under /tmp, the state and app directories) nor in the audit log; and every request the
/// agent made is a `proxy_request` record.
#[test]
fn inbox_manager_lists_and_labels_but_gets_403_on_send_with_the_token_only_in_the_proxy() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("inbox", None) else { return };
    let lab = Lab::new();
    let app = repo_root().join("examples");
    let state = lab.agent_dir("state");
    let bundle = lab.build(&policy_path("inbox-manager.toml"), "bundle-inbox");
    let agent = app.join("inbox-agent/agent.py").display().to_string();
    let client = std::fs::read_to_string(fixtures().join("client.py")).unwrap();
    let state_s = state.display().to_string();
    let app_s = app.display().to_string();
    // The agent runs first; then, in the same sandbox, a scan for the token.
    let ops = json!([
        {"op": "run", "argv": ["/usr/bin/python3", agent], "env": {"STATE": state_s}},
        {"op": "secrets", "needle_hex": to_hex(GMAIL_TOKEN), "dirs": [state_s, app_s]},
        {"op": "secrets", "needle_hex": to_hex("test-gmail-token"), "dirs": [state_s]},
        {"op": "env"},
    ]);
    let l = launch(&lab, &up, &bundle, &[("APP", app.as_path()), ("STATE", state.as_path())], &[], &[], &["/usr/bin/python3", "-c", &client, &ops.to_string()]);
    assert_eq!(l.run.code, 0, "exit {}\n{}\n{}", l.run.code, l.run.stdout, l.run.stderr);
    let out: Vec<Value> = serde_json::from_str(l.run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}\n{}", l.run.stdout, l.run.stderr));
    assert_eq!(out[0]["rc"], 0, "the inbox agent failed: {}", out[0]);
    let summary: Value = serde_json::from_str(out[0]["stdout"].as_str().unwrap().trim()).unwrap_or_else(|e| panic!("agent output {e}: {}", out[0]));
    eprintln!("inbox agent: {summary}");

    // What the agent saw.
    assert_eq!(summary["listed"], json!(["m1", "m2", "m3"]), "{summary}");
    assert_eq!(summary["fetched"], json!(["m1", "m2", "m3"]), "{summary}");
    assert_eq!(summary["labelled"]["status"], 200, "{summary}");
    let labels = summary["labelled"]["labelIds"].as_array().unwrap();
    assert!(labels.contains(&json!("Label_1")) && !labels.contains(&json!("UNREAD")), "{summary}");
    assert_eq!(summary["send"]["status"], 403, "send must be refused by the proxy: {summary}");
    assert!(summary["send"]["reason"].as_str().is_some_and(|r| !r.is_empty()), "403 carries X-Aegis-Reason: {summary}");
    assert_eq!(summary["asked_send"]["verdict"], "DENY", "the decision endpoint agrees: {summary}");
    assert!(std::fs::read_to_string(state.join("inbox-state.json")).unwrap().contains("m1"));

    // What the server saw: the proxy's token on every request, and no send.
    let reqs = up.requests();
    let gmail: Vec<&Value> = reqs.iter().filter(|r| r["host"] == "gmail.googleapis.com").collect();
    let actions: Vec<&str> = gmail.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["list", "get", "get", "get", "modify"], "{reqs:?}");
    for r in &gmail {
        assert_eq!(header_values(r, "Authorization"), [format!("Bearer {GMAIL_TOKEN}")], "the proxy injects the token exactly once: {r}");
        assert_eq!(r["sni"], "gmail.googleapis.com", "{r}");
    }
    assert!(reqs.iter().all(|r| r["action"] != "send"), "a send reached the server: {reqs:?}");

    // The token is nowhere inside the sandbox.
    for scan in &out[1..3] {
        assert_eq!(scan["found"], json!([]), "the token leaked into the sandbox: {scan}");
        let n = &scan["scanned"];
        assert!(n["env"].as_u64().unwrap() > 0 && n["proc"].as_u64().unwrap() > 0, "the scan looked at nothing: {scan}");
    }
    assert!(out[1]["scanned"]["files"].as_u64().unwrap() > 0, "{}", out[1]);
    let env = &out[3]["env"];
    assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:3128", "{env}");
    assert!(env.get("GMAIL_TOKEN").is_none_or(|v| !v.as_str().unwrap().contains(GMAIL_TOKEN)), "{env}");

    // Every request is in the audit log, and the token is not.
    let recs = l.proxy_records();
    for r in &gmail {
        let found = recs.iter().any(|a| a["decision"] == "allow" && a["host"] == "gmail.googleapis.com" && a["method"] == r["method"] && a["path"] == r["path"] && a["mode"] == "inspect");
        assert!(found, "no allow record for {} {}: {recs:?}", r["method"], r["path"]);
    }
    let send = denial(&recs, &["gmail.googleapis.com"], Some("/gmail/v1/users/me/messages/send")).unwrap_or_else(|| panic!("no deny record for send: {recs:?}"));
    assert_eq!(send["method"], "POST", "{send}");
    assert!(send["rule"].as_str().is_some_and(|r| r.contains("send")), "the deny rule is named: {send}");
    assert!(recs.iter().any(|a| a["mode"] == "decision"), "the question is audited: {recs:?}");
    assert!(!l.log_text().contains(GMAIL_TOKEN), "the token reached the audit log");
    assert!(!l.run.stderr.contains(GMAIL_TOKEN) && !l.run.stdout.contains(GMAIL_TOKEN), "the token reached aegis-exec's output");
}

fn policy_path(name: &str) -> PathBuf {
    repo_root().join("policies").join(name)
}

/// Done when (2): `policies/research-agent.toml` runs the research agent with its own
/// command (`python3 -m research_agent`), which reads every allowed site and nothing else:
/// the disallowed sites are refused (and audited) although they resolve to the same test
/// server, and the server only ever saw allowed names.
#[test]
fn research_agent_reads_allowed_sites_and_nothing_else() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("research", None) else { return };
    let lab = Lab::new();
    let out = lab.agent_dir("out");
    // The shipped policy grants no directory for the agent's code besides ${OUTPUT}, so the
    // package is copied there (owned by root: the agent cannot change it) and found through
    // PYTHONPATH.
    let code = out.join("code/research_agent");
    std::fs::create_dir_all(&code).unwrap();
    for f in ["__init__.py", "__main__.py"] {
        std::fs::copy(repo_root().join("examples/research-agent/research_agent").join(f), code.join(f)).unwrap();
    }
    let bundle = lab.build(&policy_path("research-agent.toml"), "bundle-research");
    let out_s = out.display().to_string();
    let pythonpath = out.join("code").display().to_string();
    let probes = "https://example.com/ https://evil.test/exfiltrate?notes=1 https://evilexample.com/ https://example.com.evil.com/ https://www.example.com/";
    let l = launch(&lab, &up, &bundle, &[("OUTPUT", out.as_path())], &[&format!("OUTPUT={out_s}"), &format!("PYTHONPATH={pythonpath}"), &format!("RESEARCH_PROBES={probes}")], &[], &[]);
    assert_eq!(l.run.code, 0, "exit {}\n{}\n{}", l.run.code, l.run.stdout, l.run.stderr);
    let summary: Value = serde_json::from_str(l.run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}\n{}", l.run.stdout, l.run.stderr));
    eprintln!("research agent: {summary}");
    let results = summary["results"].as_object().unwrap();
    let allowed = ["en.wikipedia.org", "upload.wikimedia.org", "arxiv.org", "docs.python.org"];
    for (url, r) in results {
        let host = url.split('/').nth(2).unwrap();
        if allowed.contains(&host) {
            assert_eq!(r["status"], 200, "{url}: {r}");
            assert!(r["title"].as_str().unwrap().starts_with(host), "{url}: {r}");
        } else {
            assert!(r["status"] != 200, "{url} must be refused: {r}");
        }
    }
    assert_eq!(results.len(), 9);
    let notes = std::fs::read_to_string(out.join("notes.md")).unwrap();
    assert_eq!(notes.lines().filter(|l| l.starts_with("- ")).count(), 4, "{notes}");

    let reqs = up.requests();
    let mut seen: Vec<&str> = reqs.iter().map(|r| r["host"].as_str().unwrap()).collect();
    seen.sort();
    seen.dedup();
    let mut want = allowed.to_vec();
    want.sort();
    assert_eq!(seen, want, "the server saw exactly the allowed sites: {reqs:?}");
    assert!(reqs.iter().all(|r| r["sni"] == r["host"]), "{reqs:?}");

    let recs = l.proxy_records();
    for h in allowed {
        assert!(recs.iter().any(|r| r["decision"] == "allow" && r["host"] == h && r["mode"] == "tunnel"), "no tunnel record for {h}: {recs:?}");
    }
    for h in ["example.com", "evil.test", "evilexample.com", "example.com.evil.com", "www.example.com"] {
        assert!(denial(&recs, &[h], None).is_some(), "no deny record for {h}: {recs:?}");
    }
}

/// Attacks on destinations, each refused, audited, and never seen by the server: a direct
/// connection that bypasses the proxy; CONNECT to metadata and loopback addresses in every
/// spelling; allowed names pinned to loopback, metadata and the host's own address; the
/// wildcard `*.example.com` against the apex, `example.com.evil.com` and `evilexample.com`;
/// an allowed name on a port the policy does not grant; SNI other than the CONNECT host (on a
/// tunnel and on an inspected host) or no SNI; plain HTTP to hosts that are not allowed.
/// Controls on the same sandbox (an allowed CONNECT, plain HTTP and TLS) work, so the
/// denials are the proxy's doing.
#[test]
fn destination_attacks_are_denied_audited_and_never_reach_a_server() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("dest", None) else { return };
    let lab = Lab::new();
    let pinned = [
        ("meta.example.com", "169.254.169.254".to_string()),
        ("loop.example.com", "127.0.0.1".to_string()),
        ("self.example.com", up.host_ip.to_string()),
    ];
    let ip = up.ip.to_string();
    // (CONNECT target, host spellings an audit record may use for it)
    let connects: Vec<(&str, Vec<&str>)> = vec![
        ("169.254.169.254:443", vec!["169.254.169.254"]),
        ("[::ffff:169.254.169.254]:443", vec!["::ffff:169.254.169.254", "169.254.169.254", "::ffff:a9fe:a9fe"]),
        ("127.1:443", vec!["127.1", "127.0.0.1"]),
        ("0x7f000001:443", vec!["0x7f000001", "127.0.0.1"]),
        ("2130706433:443", vec!["2130706433", "127.0.0.1"]),
        ("[::1]:443", vec!["::1"]),
        ("127.0.0.1:3128", vec!["127.0.0.1"]),
        ("meta.example.com:443", vec!["meta.example.com"]),
        ("loop.example.com:443", vec!["loop.example.com"]),
        ("self.example.com:443", vec!["self.example.com"]),
        ("example.com:443", vec!["example.com"]),
        ("example.com.evil.com:443", vec!["example.com.evil.com"]),
        ("evilexample.com:443", vec!["evilexample.com"]),
        ("www.example.com:8443", vec!["www.example.com"]),
        ("gmail.googleapis.com:8443", vec!["gmail.googleapis.com"]),
        ("0177.0.0.1:443", vec!["0177.0.0.1", "127.0.0.1"]),
        ("[::ffff:7f00:1]:443", vec!["::ffff:7f00:1", "::ffff:127.0.0.1", "127.0.0.1"]),
        ("0.0.0.0:443", vec!["0.0.0.0"]),
        ("[::]:443", vec!["::"]),
        ("localhost:443", vec!["localhost"]),
        ("2852039166:443", vec!["2852039166", "169.254.169.254"]),
        ("[fd00:ec2::254]:443", vec!["fd00:ec2::254"]),
        ("100.100.100.200:443", vec!["100.100.100.200"]),
    ];
    let mut ops = vec![json!({"op": "direct", "host": ip, "port": 443}), json!({"op": "connect", "target": format!("{ip}:443")})];
    for (t, _) in &connects {
        ops.push(json!({"op": "connect", "target": t}));
    }
    let first_tls = ops.len();
    let g = "gmail.googleapis.com";
    ops.extend([
        json!({"op": "tls", "target": "www.example.com:443", "sni": "evil.test", "requests": [get("evil.test", "/sni-mismatch", "")]}),
        json!({"op": "tls", "target": "www.example.com:443", "sni": null, "requests": [get("www.example.com", "/no-sni", "")]}),
        json!({"op": "tls", "target": format!("{g}:443"), "sni": "files.example.net", "requests": [get("files.example.net", "/headers", "")]}),
        json!({"op": "urllib", "url": "http://evil.test/plain"}),
        json!({"op": "urllib", "url": "http://gmail.googleapis.com/gmail/v1/users/me/messages"}),
        // An API on plain HTTP with a credential: never sent in clear.
        json!({"op": "urllib", "url": "http://plainapi.example.org/headers"}),
        // Controls.
        json!({"op": "tls", "target": "www.example.com:443", "sni": "www.example.com", "requests": [get("www.example.com", "/control", "")]}),
        json!({"op": "urllib", "url": "http://plain.example.com/control"}),
        // One plain connection to the proxy: an allowed forward, then a denied one, then a
        // denied CONNECT.
        json!({"op": "proxy_raw", "requests": [
            "GET http://plain.example.com/keepalive-1 HTTP/1.1\r\nHost: plain.example.com\r\n\r\n",
            "GET http://evil.test/keepalive-2 HTTP/1.1\r\nHost: evil.test\r\n\r\n",
            "CONNECT evilexample.com:443 HTTP/1.1\r\nHost: evilexample.com:443\r\n\r\n",
        ]}),
        // SNI mismatch hidden in a ClientHello split over two records, sent in pieces.
        json!({"op": "tls_fragmented", "target": "www.example.com:443", "sni": "evil.test", "path": "/frag-evil", "split": "records"}),
    ]);
    let (out, l) = probe(&lab, &up, &pinned, &Value::Array(ops));
    let recs = l.proxy_records();
    let mut failures = Vec::new();

    // Bypass: no route out of the sandbox but the proxy.
    if out[0].get("ok").is_some() {
        failures.push(format!("direct connect to {ip}:443 succeeded: {}", out[0]));
    }
    if status(&out[1]) != 403 || denial(&recs, &[&ip], None).is_none() {
        failures.push(format!("CONNECT to the upstream's IP (no CIDR grant): expected 403 and a deny record, got {}", out[1]));
    }
    for (i, (target, spellings)) in connects.iter().enumerate() {
        let r = &out[2 + i];
        eprintln!("  CONNECT {target:<30} {} {}", status(r), r["reason"].as_str().unwrap_or(""));
        if status(r) != 403 {
            failures.push(format!("CONNECT {target}: expected 403, got {r}"));
        } else if r["reason"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("CONNECT {target}: 403 without X-Aegis-Reason"));
        }
        if denial(&recs, spellings, None).is_none() {
            failures.push(format!("CONNECT {target}: no deny record with host in {spellings:?}"));
        }
    }
    let t = first_tls;
    for (k, what, hosts) in [(0, "SNI evil.test on a www.example.com tunnel", vec!["www.example.com", "evil.test"]), (1, "no SNI", vec!["www.example.com"]), (2, "SNI files.example.net on the inspected gmail host", vec![g, "files.example.net"])] {
        let r = &out[t + k];
        let ok = r["responses"].as_array().is_some_and(|v| v.iter().any(|x| status(x) == 200));
        if ok {
            failures.push(format!("{what}: a request got through: {r}"));
        }
        if denial(&recs, &hosts, None).is_none() {
            failures.push(format!("{what}: no deny record for {hosts:?}"));
        }
    }
    if status(&out[t + 3]) != 403 {
        failures.push(format!("plain http://evil.test: expected 403, got {}", out[t + 3]));
    }
    if denial(&recs, &["evil.test"], None).is_none() {
        failures.push("plain http://evil.test: no deny record".into());
    }
    if status(&out[t + 4]) == 200 {
        failures.push(format!("plain http to the gmail API on port 80: {}", out[t + 4]));
    }
    let sni_denials = recs.iter().filter(|r| r["decision"] == "deny" && r["mode"] == "tunnel" && r["reason"].as_str().is_some_and(|x| x.contains("evil.test"))).count();
    if out[t + 9]["status"] == 200 || sni_denials < 2 {
        failures.push(format!("SNI evil.test in a fragmented ClientHello: {} ({sni_denials} tunnel denials name evil.test, want 2)", out[t + 9]));
    }
    let ka: Vec<i64> = out[t + 8]["responses"].as_array().unwrap().iter().map(status).collect();
    // The connection may close after the first denial; nothing after it may succeed.
    if ka.first() != Some(&200) || ka[1..].iter().any(|s| *s != 403) {
        failures.push(format!("keep-alive on the proxy connection: want [200, 403, 403] (or closed after a 403), got {}", out[t + 8]));
    }
    if !recs.iter().any(|r| lower_host(r) == "plainapi.example.org") {
        failures.push(format!("plain http to plainapi.example.org: no audit record ({})", out[t + 5]));
    }
    // Controls.
    assert_eq!(out[t + 6]["responses"][0]["status"], 200, "control: an allowed tunnel works: {}", out[t + 6]);
    assert_eq!(status(&out[t + 7]), 200, "control: allowed plain http works: {}", out[t + 7]);

    let reqs = up.requests();
    for r in &reqs {
        let control = (r["path"] == "/control" && (r["host"] == "www.example.com" || r["host"] == "plain.example.com")) || r["path"] == "/keepalive-1";
        // The plain-HTTP API may be served (the rules allow it), but without its credential.
        let plain_api = r["host"] == "plainapi.example.org";
        if !control && !plain_api {
            failures.push(format!("the server saw a request it should not have: {r}"));
        }
        if plain_api && !header_values(r, "X-Plain-Key").is_empty() {
            failures.push(format!("a credential was sent in clear: {r}"));
        }
        if !header_values(r, "Authorization").is_empty() {
            failures.push(format!("a credential reached a plain or tunnel host: {r}"));
        }
    }
    if reqs.iter().filter(|r| r["path"] == "/control").count() != 2 {
        failures.push(format!("the two controls did not both reach the server: {reqs:?}"));
    }
    assert!(failures.is_empty(), "{} attack(s) not denied and audited:\n{}\naudit records: {recs:#?}", failures.len(), failures.join("\n"));
}

/// Raw requests on their own inspected connection to the fake Gmail.
fn gmail_tls(requests: &[String]) -> Value {
    json!({"op": "tls", "target": "gmail.googleapis.com:443", "sni": "gmail.googleapis.com", "requests": requests})
}

/// Like [`gmail_tls`], then reads whatever else the connection carries for up to a second
/// (the answer to a smuggled request would be there).
fn gmail_tls_then_read(requests: &[String]) -> Value {
    let mut v = gmail_tls(requests);
    v["read_after"] = json!(1.0);
    v
}

/// Attacks on the API gate, each on its own connection to the inspected fake Gmail, with the
/// rules of inbox-manager: path tricks (`..`, `%2e%2e`, `%2F`, `;x`, `//`, backslash, extra
/// segments, an encoded `send`, absolute form, a Host naming another API), request
/// smuggling (CL+TE, TE+CL, obfuscated TE, duplicate Content-Length, obs-fold) with a send
/// hidden in the body, the HTTP/2 preface and an h2c upgrade, and a denied second request on
/// a kept-alive (and on a pipelined) connection. Each is answered 4xx (or the connection is
/// closed), audited as a denial, and never reaches the server, which is lenient enough to
/// have turned most of them into a send. `X-HTTP-Method-Override: POST` on an allowed GET, and
/// a GET with a body, are refused (400). Credentials stay with their API: the server for one API
/// never sees the other's secret, and a token the agent makes up is replaced.
#[test]
fn api_gate_attacks_are_denied_audited_and_never_reach_the_server() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("gate", None) else { return };
    let lab = Lab::new();
    let g = "gmail.googleapis.com";
    let m = "/gmail/v1/users/me/messages";
    let tricks: Vec<(&str, String)> = vec![
        ("dotdot", post(g, &format!("{m}/x/../send"), "", "{}")),
        ("%2e%2e", post(g, &format!("{m}/x/%2e%2e/send"), "", "{}")),
        ("%2E%2E upper", post(g, &format!("{m}/x/%2E%2E/send"), "", "{}")),
        ("%2e", post(g, &format!("{m}/%2e/send"), "", "{}")),
        ("%2F", post(g, &format!("{m}/..%2Fmessages%2Fsend/modify"), "", "{}")),
        ("%2f in one segment", get(g, &format!("{m}/..%2fdrafts%2fsend"), "X-HTTP-Method-Override: POST\r\n")),
        (";x", post(g, &format!("{m}/send;x"), "", "{}")),
        (";x before modify", post(g, &format!("{m}/send;x/modify"), "", "{}")),
        ("%3B", post(g, &format!("{m}/send%3Bx/modify"), "", "{}")),
        ("//", post(g, &format!("{m}//send"), "", "{}")),
        ("leading //", post(g, &format!("/{m}/send"), "", "{}")),
        ("trailing /", post(g, &format!("{m}/m1/modify/"), "", "{}")),
        ("backslash", post(g, &format!("{m}/x\\..\\send"), "", "{}")),
        ("%5C", post(g, &format!("{m}/x%5C..%5Csend/modify"), "", "{}")),
        ("extra segment", post(g, &format!("{m}/m1/modify/send"), "", "{}")),
        ("extra segment GET", get(g, &format!("{m}/m1/send/x"), "")),
        ("%73end", post(g, &format!("{m}/%73end"), "", "{}")),
        ("absolute form", post(g, &format!("https://{g}{m}/send"), "", "{}")),
        ("send with query", post(g, &format!("{m}/send?x=/m1/modify"), "", "{}")),
        ("Host of another API", get("files.example.net", "/headers", "")),
        ("Host with another port", get(&format!("{g}:8443"), m, "")),
        ("drafts/send", post(g, "/gmail/v1/users/me/drafts/send", "", "{}")),
        ("%00", post(g, &format!("{m}/send%00/modify"), "", "{}")),
        ("no Host", format!("GET {m}/m1 HTTP/1.1\r\nAccept: */*\r\n\r\n")),
        ("two Hosts", format!("GET {m}/m1 HTTP/1.1\r\nHost: {g}\r\nHost: files.example.net\r\n\r\n")),
        ("absolute form naming another API", format!("GET https://files.example.net/headers HTTP/1.1\r\nHost: {g}\r\n\r\n")),
        ("bare LF", format!("POST {m}/send HTTP/1.1\nHost: {g}\nContent-Length: 2\n\n{{}}")),
        ("upload", post(g, "/upload/gmail/v1/users/me/messages/send", "", "{}")),
    ];
    let smuggled = format!("POST {m}/send HTTP/1.1\r\nHost: {g}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}");
    let bm = format!("{m}/batchModify");
    let chunked_smuggle = format!("0\r\n\r\n{smuggled}");
    let smuggling: Vec<(&str, String)> = vec![
        ("CL+TE", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggle}", chunked_smuggle.len())),
        ("TE+CL", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len())),
        ("TE.TE two headers", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n{chunked_smuggle}")),
        ("TE xchunked + CL", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nContent-Length: 2\r\nTransfer-Encoding: xchunked\r\n\r\n{{}}{smuggled}")),
        ("TE space before colon", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nContent-Length: {}\r\nTransfer-Encoding : chunked\r\n\r\n{chunked_smuggle}", chunked_smuggle.len())),
        ("TE chunked, identity", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunked_smuggle}")),
        ("TE obs-fold", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nContent-Length: 2\r\nTransfer-Encoding:\r\n chunked\r\n\r\n{{}}{smuggled}")),
        ("two Content-Lengths", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nContent-Length: 2\r\nContent-Length: {}\r\n\r\n{{}}{smuggled}", 2 + smuggled.len())),
        ("chunk size overflow", format!("POST {bm} HTTP/1.1\r\nHost: {g}\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000002\r\n{{}}\r\n0\r\n\r\n{smuggled}")),
        ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string()),
        ("h2c upgrade", get(g, m, "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")),
    ];
    // Each attack's request target carries a marker (`trick=NN` in the query, which rules do
    // not match), so the server log shows whether any part of it got through.
    let n_tricks = tricks.len();
    let attacks: Vec<(&str, String)> = tricks.into_iter().chain(smuggling).enumerate().map(|(i, (w, r))| (w, mark(&r, i))).collect();
    let mut ops: Vec<Value> = attacks.iter().map(|(_, r)| gmail_tls_then_read(std::slice::from_ref(r))).collect();
    let base = ops.len();
    let auth_fake = "Authorization: Bearer agent-made-this-up\r\n";
    ops.extend([
        // Keep-alive: allowed, then denied on the same connection.
        gmail_tls(&[get(g, m, ""), post(g, &format!("{m}/send"), "", "{}")]),
        // Pipelined: both in one write.
        json!({"op": "tls", "target": format!("{g}:443"), "sni": g, "pipeline": true, "requests": [get(g, &format!("{m}/m2"), ""), post(g, &format!("{m}/send"), "", "{}")]}),
        // Method override on allowed GETs: refused (400), whatever method they name.
        gmail_tls(&[get(g, &format!("{m}/m3"), "X-HTTP-Method-Override: POST\r\nX-HTTP-Method: POST\r\nX-Method-Override: POST\r\n")]),
        gmail_tls(&[get(g, &format!("{m}/send"), "X-HTTP-Method-Override: POST\r\n")]),
        // The agent's own Authorization is replaced by the proxy's.
        gmail_tls(&[get(g, "/gmail/v1/users/me/labels", auth_fake)]),
        // The second API gets its own key, never Gmail's token.
        json!({"op": "tls", "target": "files.example.net:443", "sni": "files.example.net", "requests": [get("files.example.net", "/headers", auth_fake)]}),
        // A tunnel host gets no credential at all.
        json!({"op": "tls", "target": "www.example.com:443", "sni": "www.example.com", "requests": [get("www.example.com", "/headers", "")]}),
        // ALPN: h2 is never negotiated.
        json!({"op": "tls", "target": format!("{g}:443"), "sni": g, "alpn": ["h2", "http/1.1"], "requests": [get(g, "/gmail/v1/users/me/labels", "")]}),
        // Allowed GETs whose bodies hold a send: refused (a GET defines no body; a server
        // that ignores it would read the send as a second request).
        gmail_tls(&[format!("GET {m}/m1?body=cl HTTP/1.1\r\nHost: {g}\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len())]),
        gmail_tls(&[format!("GET {m}/m1?body=chunked HTTP/1.1\r\nHost: {g}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len())]),
        // Trailers of an allowed chunked request carry an override and a credential.
        gmail_tls(&[format!(
            "POST {bm}?trailers=1 HTTP/1.1\r\nHost: {g}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\nX-HTTP-Method-Override: DELETE\r\nAuthorization: Bearer agent-trailer\r\n\r\n"
        )]),
        // A WebSocket upgrade the server declines (200, not 101), then a send on the same
        // connection: the proxy must keep parsing HTTP instead of relaying blindly.
        gmail_tls(&[
            get(g, "/gmail/v1/users/me/labels?upgrade=1", "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            post(g, &format!("{m}/send?after-upgrade=1"), "", "{}"),
        ]),
    ]);
    let (out, l) = probe(&lab, &up, &[], &Value::Array(ops));
    let recs = l.proxy_records();
    let reqs = up.requests();
    let mut failures = Vec::new();
    let refused = |r: &Value| {
        let rs = r["responses"].as_array().cloned().unwrap_or_default();
        // 4xx; 501 for a transfer coding the proxy does not implement (RFC 9112 §6.1); 502
        // when a streamed body turns out malformed after the head was checked.
        rs.iter().all(|x| (400..500).contains(&status(x)) || status(x) == 501 || status(x) == 502) && r["after"].as_str().is_none_or(|a| !a.contains("HTTP/1.1 200"))
    };
    // Denials of one key are aggregated (a record, then a summary counting the repeats).
    let gmail_denials: usize = recs.iter().filter(|r| r["decision"] == "deny" && lower_host(r) == g).map(|r| represented(r) as usize).sum();
    let mut table = String::new();
    for (i, (what, _)) in attacks.iter().enumerate() {
        let r = &out[i];
        let first = &r["responses"][0];
        table.push_str(&format!("  {what:<34} {:>6}s {} {}\n", r["elapsed"], if first.is_null() { r["error"].to_string() } else { first["status"].to_string() }, first["reason"].as_str().or(r["error"].as_str()).unwrap_or("")));
        if !refused(r) {
            failures.push(format!("{what}: not refused: {r}"));
        }
        let marker = format!("trick={i:02}");
        if let Some(seen) = reqs.iter().find(|q| q["target"].as_str().unwrap().contains(&marker)) {
            failures.push(format!("{what}: reached the server: {seen}"));
        }
        if i < n_tricks && r["responses"].as_array().is_some_and(|v| v.iter().any(|x| status(x) == 403 && x["reason"].as_str().is_none_or(str::is_empty))) {
            failures.push(format!("{what}: 403 without X-Aegis-Reason: {r}"));
        }
    }
    eprintln!("API gate attacks (first response, reason):\n{table}");
    if gmail_denials < attacks.len() {
        failures.push(format!("{} attacks on the gmail host but only {gmail_denials} deny records", attacks.len()));
    }
    // The audit record names the canonical path the proxy evaluated.
    if !recs.iter().any(|r| r["decision"] == "deny" && r["method"] == "POST" && r["path"] == "/gmail/v1/users/me/messages/send" && r["rule"].as_str().is_some_and(|x| x.contains("send"))) {
        failures.push("no deny record names the canonical POST /gmail/v1/users/me/messages/send and its rule".into());
    }
    if let Some(s) = reqs.iter().find(|r| r["action"] == "send" || r["action"] == "upload") {
        failures.push(format!("a send reached the server: {s}"));
    }

    // Keep-alive and pipelining: first allowed, second refused, server saw only the first.
    for (k, what) in [(0, "keep-alive"), (1, "pipelined")] {
        let r = &out[base + k];
        let st: Vec<i64> = r["responses"].as_array().unwrap().iter().map(status).collect();
        if st.first() != Some(&200) || st.get(1).is_some_and(|s| !(400..500).contains(s)) {
            failures.push(format!("{what}: expected [200, 403], got {r}"));
        }
    }
    if denial(&recs, &[g], Some("/gmail/v1/users/me/messages/send")).is_none() {
        failures.push("no deny record for POST .../messages/send".into());
    }
    // Method override headers are refused (issue 13): the server never sees them.
    for k in [2, 3] {
        let st = status(&out[base + k]["responses"][0]);
        if st != 400 {
            failures.push(format!("a request with method-override headers: want 400, got {}", out[base + k]));
        }
    }
    if let Some(seen) = reqs.iter().find(|q| q["target"] == format!("{m}/m3").as_str() || q["target"] == format!("{m}/send").as_str()) {
        failures.push(format!("a request with method-override headers reached the server: {seen}"));
    }
    // Credentials.
    match reqs.iter().find(|q| q["host"] == g && q["path"] == "/gmail/v1/users/me/labels") {
        Some(seen) => {
            if header_values(seen, "Authorization") != [format!("Bearer {GMAIL_TOKEN}")] {
                failures.push(format!("the agent's Authorization was not replaced by the proxy's: {seen}"));
            }
        }
        None => failures.push(format!("GET labels did not reach the server: {}", out[base + 4])),
    }
    for q in &reqs {
        let auth = header_values(q, "Authorization");
        let key = header_values(q, "X-Api-Key");
        let ok = match q["host"].as_str().unwrap() {
            h if h == g => key.is_empty(),
            "files.example.net" => key == [FILES_KEY] && auth.iter().all(|a| !a.contains(GMAIL_TOKEN)),
            _ => key.is_empty() && auth.is_empty(),
        };
        if !ok {
            failures.push(format!("a credential went to the wrong host: {q}"));
        }
    }
    if !reqs.iter().any(|q| q["host"] == "files.example.net") || !reqs.iter().any(|q| q["host"] == "www.example.com") {
        failures.push(format!("the credential controls did not reach the server: {} {}", out[base + 5], out[base + 6]));
    }
    if out[base + 7]["alpn"] == "h2" {
        failures.push(format!("the proxy negotiated h2: {}", out[base + 7]));
    }
    for (k, what) in [(8, "GET + CL body"), (9, "GET + chunked body"), (10, "chunked with trailers"), (11, "declined upgrade, then send")] {
        let st: Vec<String> = out[base + k]["responses"].as_array().unwrap().iter().map(|x| format!("{} {}", status(x), x["reason"].as_str().unwrap_or(""))).collect();
        eprintln!("  {what:<34} {st:?}");
    }
    for (k, q) in [(8, "body=cl"), (9, "body=chunked")] {
        if status(&out[base + k]["responses"][0]) != 400 {
            failures.push(format!("GET with a body ({q}): want 400, got {}", out[base + k]));
        }
        if let Some(seen) = reqs.iter().find(|r| r["target"].as_str().unwrap().contains(q)) {
            failures.push(format!("GET with a body ({q}) reached the server: {seen}"));
        }
    }
    if let Some(seen) = reqs.iter().find(|r| r["target"].as_str().unwrap().contains("trailers=1")) {
        let bad: Vec<&Value> = seen["trailers"].as_array().unwrap().iter().filter(|t| t.as_str().unwrap().to_ascii_lowercase().starts_with("x-http-method-override") || t.as_str().unwrap().contains("agent-trailer")).collect();
        if !bad.is_empty() {
            failures.push(format!("trailers reached the server unfiltered: {bad:?}"));
        }
    }
    let up_r = &out[base + 11];
    let st: Vec<i64> = up_r["responses"].as_array().unwrap().iter().map(status).collect();
    if st.get(1).is_some_and(|s| !(400..500).contains(s)) || reqs.iter().any(|r| r["target"].as_str().unwrap().contains("after-upgrade")) {
        failures.push(format!("a send after a declined upgrade got through: {up_r}"));
    }
    assert!(!l.log_text().contains(GMAIL_TOKEN) && !l.log_text().contains(FILES_KEY), "a secret reached the audit log");
    assert!(failures.is_empty(), "{} API gate check(s) failed:\n{}\nserver saw: {reqs:#?}", failures.len(), failures.join("\n"));
}

/// Adds `trick=NN` to the query of a raw request's target (not to `PRI *`).
fn mark(raw: &str, i: usize) -> String {
    let Some((line, rest)) = raw.split_once("\r\n") else { return raw.to_string() };
    let mut parts: Vec<&str> = line.splitn(3, ' ').collect();
    if parts.len() != 3 || parts[1] == "*" {
        return raw.to_string();
    }
    let sep = if parts[1].contains('?') { '&' } else { '?' };
    let target = format!("{}{sep}trick={i:02}", parts[1]);
    parts[1] = &target;
    format!("{}\r\n{rest}", parts.join(" "))
}

/// Benign tools through the proxy, each working and audited as allowed: curl (tunnel and
/// inspect, with the credential injected), Python urllib and requests, git clone over HTTPS
/// (dumb HTTP), a 24 MiB chunked upload whose SHA-256 the server confirms (inspect mode, and
/// 8 MiB through a tunnel), server-sent events arriving one by one (inspect and tunnel), and a
/// WebSocket echo (inspect and tunnel).
#[test]
fn benign_tools_work_through_the_proxy() {
    if !ready() {
        return;
    }
    let Some((_repo, up)) = git_upstream("benign", vec![]) else { return };
    let lab = Lab::new();
    let m = "https://gmail.googleapis.com/gmail/v1/users/me/messages";
    let ops = json!([
        {"op": "curl", "url": "https://www.example.com/curl"},
        {"op": "curl", "url": m},
        {"op": "urllib", "url": "https://www.example.com/urllib"},
        {"op": "urllib", "url": format!("{m}/m1")},
        {"op": "requests", "url": "https://www.example.com/requests"},
        {"op": "requests", "url": format!("{m}/m2/modify"), "method": "POST", "headers": {"Content-Type": "application/json"}, "body": "{\"addLabelIds\": [\"Label_1\"]}"},
        {"op": "git_clone", "url": "https://git.example.com/repo.git", "dest": "/tmp/clone"},
        {"op": "upload", "target": "files.example.net:443", "path": "/upload", "mb": 24},
        {"op": "mkfile", "path": "/tmp/big.bin", "mb": 3},
        {"op": "curl", "url": "https://files.example.net/upload", "args": ["--data-binary", "@/tmp/big.bin", "-H", "Content-Type: application/octet-stream"]},
        {"op": "upload", "target": "www.example.com:443", "path": "/upload", "mb": 8},
        {"op": "sse", "target": "files.example.net:443", "path": "/events"},
        {"op": "sse", "target": "www.example.com:443", "path": "/events"},
        {"op": "ws", "target": "files.example.net:443", "path": "/ws", "messages": ["hello", "x".repeat(300)]},
        {"op": "ws", "target": "ws.example.com:443", "path": "/ws", "messages": ["tunnelled"]},
        // A ClientHello arriving in 7-byte pieces, and split over two TLS records.
        {"op": "tls_fragmented", "target": "www.example.com:443", "path": "/frag-tcp", "split": "tcp"},
        {"op": "tls_fragmented", "target": "www.example.com:443", "path": "/frag-records", "split": "records"},
        // The same into an inspected API: the proxy reads the whole hello before it
        // terminates TLS.
        {"op": "tls_fragmented", "target": "files.example.net:443", "path": "/headers", "split": "tcp"},
        {"op": "tls_fragmented", "target": "files.example.net:443", "path": "/headers", "split": "records"},
    ]);
    let (out, l) = probe(&lab, &up, &[], &ops);
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: &str, r: &Value| {
        if !ok {
            failures.push(format!("{what}: {r}"));
        }
    };
    check(status(&out[0]) == 200 && out[0]["body"].as_str().unwrap().contains("www.example.com/curl"), "curl (tunnel)", &out[0]);
    check(status(&out[1]) == 200 && out[1]["body"].as_str().unwrap().contains("\"m1\""), "curl (inspect, token injected)", &out[1]);
    check(status(&out[2]) == 200 && out[2]["body"].as_str().unwrap().contains("www.example.com/urllib"), "urllib (tunnel)", &out[2]);
    check(status(&out[3]) == 200 && out[3]["body"].as_str().unwrap().contains("Quarterly"), "urllib (inspect)", &out[3]);
    check(status(&out[4]) == 200 && out[4]["body"].as_str().unwrap().contains("www.example.com/requests"), "requests (tunnel)", &out[4]);
    check(status(&out[5]) == 200 && out[5]["body"].as_str().unwrap().contains("Label_1"), "requests (inspect, POST modify)", &out[5]);
    check(out[6]["rc"] == 0 && out[6]["content"]["README.md"] == "fetched through the AEGIS proxy\n", "git clone over HTTPS", &out[6]);
    for (k, what, mb) in [(7, "24 MiB chunked upload (inspect)", 24), (10, "8 MiB chunked upload (tunnel)", 8)] {
        let r = &out[k];
        check(
            status(r) == 200 && r["server"]["sha256"] == r["local_sha256"] && r["server"]["bytes"] == mb * 1024 * 1024 && r["server"]["chunked"] == true,
            what,
            r,
        );
    }
    // curl sends a 3 MiB body with `Expect: 100-continue`, which the proxy answers itself.
    let curl_up: Value = serde_json::from_str(out[9]["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    check(status(&out[9]) == 200 && curl_up["sha256"] == out[8]["sha256"] && curl_up["bytes"] == 3 * 1024 * 1024, "curl upload with Expect: 100-continue (inspect)", &out[9]);
    eprintln!("chunked upload through the proxy (Python client): 24 MiB inspect {} s, 8 MiB tunnel {} s", out[7]["seconds"], out[10]["seconds"]);
    for (k, what) in [(11, "server-sent events (inspect)"), (12, "server-sent events (tunnel)")] {
        let t: Vec<f64> = out[k]["events"].as_array().map(|e| e.iter().map(|x| x["t"].as_f64().unwrap()).collect()).unwrap_or_default();
        // Five events 250 ms apart: the first must arrive long before the last was sent.
        check(status(&out[k]) == 200 && t.len() == 5 && t[4] - t[0] > 0.75, what, &out[k]);
    }
    check(out[13]["status"] == 101 && out[13]["accept_ok"] == true && out[13]["echo"] == json!(["hello", "x".repeat(300)]) && out[13]["close_echoed"] == true, "WebSocket (inspect)", &out[13]);
    check(out[14]["status"] == 101 && out[14]["echo"] == json!(["tunnelled"]), "WebSocket (tunnel)", &out[14]);
    check(out[15]["status"] == 200, "a ClientHello in small TCP pieces (tunnel)", &out[15]);
    check(out[16]["status"] == 200, "a ClientHello split over two TLS records (tunnel)", &out[16]);
    check(out[17]["status"] == 200, "a ClientHello in small TCP pieces (inspect)", &out[17]);
    check(out[18]["status"] == 200, "a ClientHello split over two TLS records (inspect)", &out[18]);

    // The server saw the credentials where they belong.
    let reqs = up.requests();
    for q in &reqs {
        let expect_key = q["host"] == "files.example.net";
        if expect_key != (header_values(q, "X-Api-Key") == [FILES_KEY]) {
            failures.push(format!("credential of files.example.net wrong on {q}"));
        }
    }
    // Every request allowed and audited; curl's requests name curl as the executable.
    let recs = l.proxy_records();
    if let Some(d) = recs.iter().find(|r| r["decision"] == "deny") {
        failures.push(format!("a benign request was denied: {d}"));
    }
    for (host, path) in [("gmail.googleapis.com", "/gmail/v1/users/me/messages/m2/modify"), ("files.example.net", "/upload"), ("files.example.net", "/events"), ("files.example.net", "/ws")] {
        if !recs.iter().any(|r| r["host"] == host && r["path"] == path && r["decision"] == "allow" && r["mode"] == "inspect") {
            failures.push(format!("no inspect allow record for {host}{path}"));
        }
    }
    for host in ["www.example.com", "git.example.com", "ws.example.com"] {
        if !recs.iter().any(|r| r["host"] == host && r["decision"] == "allow" && r["mode"] == "tunnel") {
            failures.push(format!("no tunnel allow record for {host}"));
        }
    }
    if let Some(up_rec) = recs.iter().find(|r| r["host"] == "files.example.net" && r["path"] == "/upload")
        && up_rec["bytes_up"].as_u64().unwrap_or(0) < 24 * 1024 * 1024
    {
        failures.push(format!("the upload's bytes_up is too small: {up_rec}"));
    }
    if !recs.iter().any(|r| r["host"] == "gmail.googleapis.com" && r["exe"] == "/usr/bin/curl") {
        failures.push(format!("no record names /usr/bin/curl as the requesting executable: {:?}", recs.iter().map(|r| (&r["host"], &r["exe"])).collect::<Vec<_>>()));
    }
    assert!(failures.is_empty(), "{} benign workload(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// The decision endpoint answers framework questions from the policy (as `aegisc check`
/// does), refuses malformed ones with 400, and audits each; `examples/python/aegis_client.py`
/// (its `check_*` methods and the `@requires` decorator) works inside the sandbox.
#[test]
fn the_decision_endpoint_and_the_python_client_answer_from_the_policy() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("decision", None) else { return };
    let lab = Lab::new();
    let examples = repo_root().join("examples/python").display().to_string();
    let script = format!(
        r#"
import json, sys
sys.path.insert(0, {examples:?})
from aegis_client import AegisClient, Denied, requires
c = AegisClient()
out = {{
  "modify_scope": c.check_api("gmail", "https://www.googleapis.com/auth/gmail.modify").verdict,
  "send_scope": c.check_api("gmail", "https://www.googleapis.com/auth/gmail.send").verdict,
  "send": c.check_http("gmail", "POST", "/gmail/v1/users/me/messages/send").verdict,
  "git": c.check_exec("/usr/bin/git").verdict,
  "perl": c.check_exec("/usr/bin/perl").verdict,
  "passwd": c.check_fs("read", "/etc/passwd").verdict,
  "net_ok": c.check_net("www.example.com", 443).verdict,
  "net_evil": c.check_net("evilexample.com", 443).verdict,
}}
@requires(api="gmail", method="POST", path="/gmail/v1/users/me/messages/{{message_id}}/modify")
def label(message_id):
    return "labelled " + message_id
@requires(api="gmail", method="POST", path="/gmail/v1/users/me/messages/send")
def send():
    return "sent"
out["label"] = label("m1")
try:
    send()
    out["send_tool"] = "ran"
except Denied as e:
    out["send_tool"] = "denied: " + e.decision.reason
print(json.dumps(out))
"#
    );
    let ops = json!([
        {"op": "decision", "body": {"kind": "http", "api": "gmail", "method": "GET", "path": "/gmail/v1/users/me/messages/m1"}},
        {"op": "decision", "body": {"kind": "http", "api": "gmail", "method": "POST", "path": "/gmail/v1/users/me/messages/x/../send"}},
        {"op": "decision", "body": {"kind": "fs", "access": "read", "path": "/etc/passwd"}},
        {"op": "decision", "body": "this is not json"},
        {"op": "decision", "body": {"kind": "bogus"}},
        {"op": "decision", "body": {"kind": "net", "host": "www.example.com", "port": 70000}},
        {"op": "run", "argv": ["/usr/bin/python3", "-c", script]},
    ]);
    let (out, l) = probe(&lab, &up, &[], &ops);
    assert_eq!(out[0]["status"], 200, "{}", out[0]);
    assert_eq!(out[0]["json"]["verdict"], "ALLOW", "{}", out[0]);
    assert!(out[0]["json"]["rule"]["text"].as_str().is_some_and(|t| t.contains("GET /gmail/v1/users/me/messages/*")), "{}", out[0]);
    assert_eq!(out[1]["json"]["verdict"], "DENY", "{}", out[1]);
    assert_eq!(out[2]["json"]["verdict"], "DENY", "{}", out[2]);
    for r in &out[3..6] {
        assert_eq!(r["status"], 400, "malformed question: {r}");
        assert!(r["json"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
    }
    assert_eq!(out[6]["rc"], 0, "{}", out[6]);
    let py: Value = serde_json::from_str(out[6]["stdout"].as_str().unwrap().trim()).unwrap();
    assert_eq!(
        py,
        json!({
            "modify_scope": "ALLOW", "send_scope": "DENY", "send": "DENY", "git": "ALLOW", "perl": "DENY",
            "passwd": "DENY", "net_ok": "ALLOW", "net_evil": "DENY", "label": "labelled m1",
            "send_tool": py["send_tool"],
        }),
        "{py}"
    );
    assert!(py["send_tool"].as_str().unwrap().starts_with("denied: "), "{py}");
    let decisions = l.proxy_records().into_iter().filter(|r| r["mode"] == "decision").count();
    // 3 well-formed questions + 10 from the client (8 checks and 2 decorated tools).
    assert!(decisions >= 13, "each question is audited: {decisions} decision records");
    assert!(up.requests().is_empty(), "questions never reach upstream");
}

fn to_hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Regression: a client that closes an inspected keep-alive connection after its last
/// response without a TLS close_notify (Python `requests` does exactly that at exit) made no
/// request, so the audit log must not show a denial (it used to record "malformed request:
/// read failed while reading a message head: peer closed connection without sending TLS
/// close_notify").
#[test]
fn closing_an_idle_inspected_connection_is_not_audited_as_a_denial() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("idle", None) else { return };
    let lab = Lab::new();
    // `requests` keeps the connection alive and closes it when the process exits.
    let (out, l) = probe(&lab, &up, &[], &json!([{"op": "requests", "url": "https://gmail.googleapis.com/gmail/v1/users/me/labels"}]));
    assert_eq!(status(&out[0]), 200, "{}", out[0]);
    let recs = l.proxy_records();
    let denials: Vec<&&Value> = recs.iter().filter(|r| r["decision"] == "deny").collect();
    assert!(denials.is_empty(), "one allowed request, yet: {denials:?}");
    assert_eq!(recs.len(), 1, "one record per request: {recs:?}");
}

/// A direct connection that ignores the proxy (to the upstream's address and to a public
/// resolver) is rejected at once (ECONNREFUSED, not a hang: the namespace routes every outside
/// destination to `lo`, where the table rejects it) and recorded: the supervisor reads the
/// table's NFLOG group and writes an `nftables` kernel denial naming the destination.
#[test]
fn a_direct_connection_that_bypasses_the_proxy_is_audited() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("bypass", None) else { return };
    let lab = Lab::new();
    let ip = up.ip.to_string();
    let (out, l) = probe(&lab, &up, &[], &json!([{"op": "direct", "host": ip, "port": 443}, {"op": "direct", "host": "1.1.1.1", "port": 53}]));
    for r in &out {
        assert_eq!(r["error"], "ECONNREFUSED", "a direct connect is rejected, not dropped into a timeout: {out:?}");
        assert!(r["elapsed"].as_f64().unwrap() < 1.0, "{out:?}");
    }
    assert!(up.requests().is_empty());
    let denials: Vec<&Value> = l.events.iter().filter(|e| e["kind"] == "kernel_denial" && e["layer"] == "nftables").collect();
    assert!(!denials.is_empty(), "two bypass attempts, no audit record: {:?}", l.events.iter().map(|e| &e["kind"]).collect::<Vec<_>>());
    eprintln!("kernel denial records: {denials:?}");
    let count: u64 = denials.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(count, 2, "one count per attempt: {denials:?}");
    let first = denials[0]["detail"].as_str().unwrap();
    assert_eq!(first, format!("connect to {ip}:443/tcp outside the proxy (dropped and rejected)"), "{denials:?}");
    let report = l.events.iter().find(|e| e["kind"] == "enforcement_report").unwrap();
    let nft = report["layers"].as_array().unwrap().iter().find(|x| x["layer"] == "nftables").unwrap();
    assert!(nft["detail"].as_str().unwrap().contains("denials observed"), "{nft}");
}

/// A single-address TCP endpoint (`10.233.X.2:7000`, a stand-in for a database) is reached by
/// a direct connection through the supervisor's transparent forward, audited (mode `tcp`);
/// other ports of the same address stay unreachable and never reach the server.
#[test]
fn a_single_address_tcp_endpoint_is_reached_through_a_transparent_forward() {
    if !ready() {
        return;
    }
    let Some(up) = upstream_with("tcp", None, vec![7000, 7001]) else { return };
    let lab = Lab::new();
    let ip = up.ip.to_string();
    let ops = json!([
        {"op": "tcp_echo", "host": ip, "port": 7000, "lines": ["SELECT 1;", "SELECT 2;"]},
        // (nftables drops these: a short timeout keeps the test fast)
        {"op": "tcp_echo", "host": ip, "port": 7001, "lines": ["SELECT 3;"], "timeout": 1},
        {"op": "tcp_echo", "host": ip, "port": 443, "lines": [], "timeout": 1},
    ]);
    let (out, l) = probe_with(&lab, &up, &format!("[network]\nallow = [\"{ip}:7000\"]\n"), &[], &ops);
    assert_eq!(out[0]["greeting"], "echo 7000", "{}\naudit: {:?}\nserver: {:?}", out[0], l.proxy_records(), up.requests());
    assert_eq!(out[0]["echo"], json!(["SELECT 1;", "SELECT 2;"]), "{}", out[0]);
    assert!(out[1].get("error").is_some(), "port 7001 is not granted: {}", out[1]);
    assert!(out[2].get("error").is_some(), "port 443 is not granted: {}", out[2]);
    let reqs = up.requests();
    let ports: Vec<&Value> = reqs.iter().map(|r| &r["listen_port"]).collect();
    assert_eq!(ports, [&json!(7000)], "only the granted port was reached: {reqs:?}");
    let recs = l.proxy_records();
    let rec = recs.iter().find(|r| r["mode"] == "tcp" && r["port"] == 7000).unwrap_or_else(|| panic!("no tcp record: {recs:?}"));
    assert_eq!(rec["decision"], "allow", "{rec}");
    assert!(rec["bytes_up"].as_u64().unwrap() >= 20 && rec["bytes_down"].as_u64().unwrap() >= 30, "bytes are counted: {rec}");
}

/// A catch-all grant (`0.0.0.0/0:443`, `[::/0]:443`, what a user writes to mean "the
/// internet") does not open special addresses: `CONNECT 169.254.169.254:443`,
/// `127.0.0.1:443`, `[::1]:443`, `[fd00:ec2::254]:443`, and allowed names pinned to metadata or
/// loopback are all refused, because the proxy dials from the host's namespace and would
/// otherwise reach the cloud metadata service and the host's own loopback services. Only a
/// grant inside the special range (`169.254.169.254/32`, `127.0.0.0/8`) opens it.
#[test]
fn a_catch_all_cidr_grant_does_not_open_metadata_or_the_hosts_loopback() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("catchall", None) else { return };
    let lab = Lab::new();
    let pinned = [("meta.example.com", "169.254.169.254".to_string()), ("loop.example.com", "127.0.0.1".to_string())];
    let targets = ["169.254.169.254:443", "127.0.0.1:443", "[::1]:443", "meta.example.com:443", "loop.example.com:443", "[fd00:ec2::254]:443"];
    let mut ops: Vec<Value> = targets.iter().map(|t| json!({"op": "connect", "target": t})).collect();
    // Control: the grant does open ordinary addresses.
    ops.push(json!({"op": "tls", "target": format!("{}:443", up.ip_alt), "sni": null, "requests": [get("www.example.com", "/control", "")]}));
    let (out, l) = probe_with(&lab, &up, "[network]\nallow = [\"0.0.0.0/0:443\", \"[::/0]:443\"]\n", &pinned, &Value::Array(ops));
    let recs = l.proxy_records();
    let opened: Vec<String> = targets.iter().zip(&out).filter(|(_, r)| status(r) != 403).map(|(t, r)| format!("CONNECT {t}: {r}")).collect();
    eprintln!("control through the catch-all grant: {}", out[targets.len()]);
    assert!(opened.is_empty(), "a catch-all grant opened special addresses:\n{}\n{recs:#?}", opened.join("\n"));
}

/// The proxy verifies upstream TLS: an API host whose certificate does not name it
/// (`nocert.example.org`), and every inspected host when the test CA is not passed with
/// `--upstream-ca`, are answered 502 and never receive a request, so their credentials are
/// never sent.
#[test]
fn the_proxy_verifies_upstream_tls_before_sending_a_credential() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("verify", None) else { return };
    let lab = Lab::new();
    let nocert = json!({"op": "tls", "target": "nocert.example.org:443", "sni": "nocert.example.org", "requests": [get("nocert.example.org", "/secret", "")]});
    let gmail = gmail_tls(&[get("gmail.googleapis.com", "/gmail/v1/users/me/labels", "")]);
    let (out, l) = probe(&lab, &up, &[], &json!([nocert, gmail]));
    assert_eq!(out[0]["responses"][0]["status"], 502, "a certificate without the API's name: {}", out[0]);
    assert_eq!(out[1]["responses"][0]["status"], 200, "control: {}", out[1]);
    assert!(l.proxy_records().iter().any(|r| r["host"] == "nocert.example.org"), "the failure is audited");
    let (out, _) = probe_ca(&lab, &up, false, "", &[], &json!([gmail]));
    assert_eq!(out[0]["responses"][0]["status"], 502, "an upstream CA the proxy does not trust: {}", out[0]);
    let reqs = up.requests();
    let hosts: Vec<&Value> = reqs.iter().map(|r| &r["host"]).collect();
    assert_eq!(hosts, [&json!("gmail.googleapis.com")], "only the control reached the server: {reqs:?}");
}

/// An operator who passes the credential's variable to the agent (`--env GMAIL_TOKEN`, which
/// would copy aegis-exec's own value) still gives the agent only a placeholder; the file a
/// `from_file` credential comes from is unreadable inside the sandbox; neither secret is in
/// any environment, command line or file the agent can see, and neither is the sandbox CA's
/// private key.
#[test]
fn credential_variables_and_files_never_reach_the_agent() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("secrets", None) else { return };
    let lab = Lab::new();
    let (bundle, params) = gate_bundle(&lab, "");
    let params: Vec<(&str, &Path)> = params.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let key_file = lab.path("files.key").display().to_string();
    let ops = json!([
        {"op": "env"},
        {"op": "secrets", "needle_hex": to_hex(GMAIL_TOKEN), "dirs": []},
        {"op": "secrets", "needle_hex": to_hex(FILES_KEY), "dirs": []},
        {"op": "run", "argv": ["/usr/bin/python3", "-c", format!("open({key_file:?}).read()")]},
        {"op": "urllib", "url": "https://gmail.googleapis.com/gmail/v1/users/me/labels"},
        // The sandbox CA's private key stays with the supervisor: /tmp/.aegis holds
        // certificates only.
        {"op": "secrets", "needle_hex": to_hex("PRIVATE KEY"), "dirs": []},
        {"op": "run", "argv": ["/usr/bin/python3", "-c", "import os; print(sorted(os.listdir('/tmp/.aegis')))"]},
    ]);
    let client = fixtures().join("client.py").display().to_string();
    let l = launch(&lab, &up, &bundle, &params, &["GMAIL_TOKEN"], &[], &["/usr/bin/python3", &client, &ops.to_string()]);
    assert_eq!(l.run.code, 0, "exit {}\n{}\n{}", l.run.code, l.run.stdout, l.run.stderr);
    let out: Vec<Value> = serde_json::from_str(l.run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}\n{}", l.run.stdout, l.run.stderr));
    let seen = out[0]["env"]["GMAIL_TOKEN"].as_str().unwrap_or("");
    assert!(!seen.contains(GMAIL_TOKEN), "--env GMAIL_TOKEN gave the agent the real token");
    assert!(!seen.is_empty(), "a tool that insists on the variable sees a placeholder: {}", out[0]["env"]);
    assert_eq!(out[1]["found"], json!([]), "{}", out[1]);
    assert_eq!(out[2]["found"], json!([]), "{}", out[2]);
    assert_ne!(out[3]["rc"], 0, "the from_file secret is readable in the sandbox: {}", out[3]);
    assert_eq!(status(&out[4]), 200, "the proxy still injects the real token: {}", out[4]);
    assert_eq!(out[5]["found"], json!([]), "a private key is visible in the sandbox: {}", out[5]);
    assert!(out[5]["scanned"]["files"].as_u64().unwrap() >= 2, "the CA files under /tmp/.aegis were scanned: {} {}", out[5], out[6]);
    let reqs = up.requests();
    assert_eq!(header_values(&reqs[0], "Authorization"), [format!("Bearer {GMAIL_TOKEN}")], "{reqs:?}");
    assert!(!l.log_text().contains(GMAIL_TOKEN) && !l.log_text().contains(FILES_KEY));
}

/// A tunnel carries TLS whose SNI is the CONNECT host, or (on port 22 only) SSH: plaintext
/// HTTP through a CONNECT on 443, and HTTP through a CONNECT on 22, are refused, audited,
/// and never reach the server; an SSH banner on 22 is relayed (to an echo server standing in
/// for sshd). Pinned answers that mix a good and a refused address dial only the good one.
/// IPv6 destinations (a pinned name, a granted literal) work.
#[test]
fn tunnels_carry_only_tls_or_ssh_and_only_vetted_addresses_are_dialled() {
    if !ready() {
        return;
    }
    let Some(up) = upstream_with("tunnel", None, vec![22]) else { return };
    let lab = Lab::new();
    let pinned = [
        ("ssh.example.com", up.ip.to_string()),
        ("mixed.example.com", format!("127.0.0.1,{},169.254.169.254", up.ip_alt)),
        ("allbad.example.com", "127.0.0.1,169.254.169.254".to_string()),
        ("v6.example.com", up.ip6.to_string()),
    ];
    let ip6 = up.ip6.to_string();
    let ops = json!([
        {"op": "tunnel_raw", "target": "www.example.com:443", "send": get("www.example.com", "/plaintext-443", "")},
        {"op": "tunnel_raw", "target": "ssh.example.com:22", "send": get("ssh.example.com", "/plaintext-22", "")},
        {"op": "tunnel_raw", "target": "ssh.example.com:22", "send": "SSH-2.0-aegis_test\r\n"},
        {"op": "tls", "target": "mixed.example.com:443", "sni": "mixed.example.com", "requests": [get("mixed.example.com", "/mixed", "")]},
        {"op": "connect", "target": "allbad.example.com:443"},
        // IPv6: a name pinned to the upstream's IPv6 address, and the address itself granted.
        {"op": "tls", "target": "v6.example.com:443", "sni": "v6.example.com", "requests": [get("v6.example.com", "/v6-name", "")]},
        {"op": "tls", "target": format!("[{ip6}]:443"), "sni": null, "requests": [get(&format!("[{ip6}]"), "/v6-literal", "")]},
    ]);
    let (out, l) = probe_with(&lab, &up, &format!("[network]\nallow = [\"*.example.com:22\", \"[{ip6}]:443\"]\n"), &pinned, &ops);
    let recs = l.proxy_records();
    let reqs = up.requests();
    let mut failures = Vec::new();
    for (k, what) in [(0, "plaintext HTTP through CONNECT :443"), (1, "HTTP through CONNECT :22")] {
        let r = &out[k];
        if r["received"].as_str().is_some_and(|x| x.contains("HTTP/1.1 200")) || reqs.iter().any(|q| q["target"].as_str().is_some_and(|t| t.starts_with("/plaintext"))) {
            failures.push(format!("{what}: got through: {r}"));
        }
        if r["received"].as_str().is_some_and(|x| x.contains("GET /plaintext")) {
            failures.push(format!("{what}: relayed to the echo server: {r}"));
        }
    }
    let denied_tunnels = recs.iter().filter(|r| r["decision"] == "deny" && r["mode"] == "tunnel").count();
    if denied_tunnels < 2 {
        failures.push(format!("want 2 tunnel denials (non-TLS on 443, non-SSH on 22), got {denied_tunnels}"));
    }
    let ssh = out[2]["received"].as_str().unwrap_or("");
    if !(ssh.contains("echo 22") && ssh.contains("SSH-2.0-aegis_test")) {
        failures.push(format!("an SSH banner on :22 is relayed: {}", out[2]));
    }
    if out[3]["responses"][0]["status"] != 200 {
        failures.push(format!("a name with one good pinned address among refused ones: {}", out[3]));
    }
    if status(&out[4]) != 403 || denial(&recs, &["allbad.example.com"], None).is_none() {
        failures.push(format!("a name with only refused addresses: {}", out[4]));
    }
    for (k, what) in [(5, "a name pinned to an IPv6 address"), (6, "a granted IPv6 literal")] {
        if out[k]["responses"][0]["status"] != 200 {
            failures.push(format!("{what}: {}", out[k]));
        }
    }
    assert!(failures.is_empty(), "{}\naudit: {recs:#?}\nserver: {reqs:?}", failures.join("\n"));
}

/// A raw request with a body and a content type.
fn with_body(method: &str, host: &str, target: &str, ctype: &str, body: &str) -> String {
    format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

/// Issue 13 (items 1, 2, 4): every spelling of a request that a common server reads as
/// another method or path. Against `[api.files]` (allow `GET /v1/**`, `POST /upload`; deny
/// `* /v1/admin/**`), each request is refused (400 when it could be re-interpreted, 403 when
/// a deny rule catches a spelling of its path), audited, and never reaches the server as a
/// denied request: the server logs how the most lenient framework would read every request
/// it gets (`interpreted`: method overrides in every header spelling, the query, form,
/// multipart and JSON bodies; the path decoded twice, NFKC-normalised, case-folded,
/// trimmed and without a format suffix), and none of those readings may be a method other
/// than the one sent or a path under `/v1/admin`. The API's credential reaches only allowed
/// requests. Host spellings are forwarded as the canonical host.
#[test]
fn requests_a_server_would_read_as_another_method_or_path_never_reach_it() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("reinterpret", None) else { return };
    let lab = Lab::new();
    let f = "files.example.net";
    let form = "application/x-www-form-urlencoded";
    let mp = "multipart/form-data; boundary=XyZ";
    let part = |name: &str| format!("--XyZ\r\nContent-Disposition: form-data; name={name}\r\n\r\nDELETE\r\n--XyZ--\r\n");
    // (what, raw request, the status the proxy answers)
    let cases: Vec<(&str, String, u16)> = vec![
        // 1. Method overrides.
        ("control: an allowed form POST", with_body("POST", f, "/upload", form, "a=1"), 0),
        ("X-HTTP-Method-Override", format!("POST /upload HTTP/1.1\r\nHost: {f}\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n"), 400),
        ("X_HTTP_METHOD_OVERRIDE", format!("POST /upload HTTP/1.1\r\nHost: {f}\r\nX_HTTP_METHOD_OVERRIDE: DELETE\r\nContent-Length: 0\r\n\r\n"), 400),
        ("X-HTTP_Method-Override", format!("POST /upload HTTP/1.1\r\nHost: {f}\r\nX-HTTP_Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n"), 400),
        ("X-Method-Override on GET", get(f, "/v1/x", "X-Method-Override: DELETE\r\n"), 400),
        ("X-Original-URL", get(f, "/v1/x", "X-Original-URL: /v1/admin/keys\r\n"), 400),
        ("?_method=", with_body("POST", f, "/upload?_method=DELETE", form, "a=1"), 400),
        ("?%5Fmethod=", with_body("POST", f, "/upload?%5Fmethod=DELETE", form, "a=1"), 400),
        ("form _method", with_body("POST", f, "/upload", form, "a=1&_method=DELETE"), 400),
        ("form %5Fmethod", with_body("POST", f, "/upload", form, "a=1&%5Fmethod=DELETE"), 400),
        ("form without Content-Type", format!("POST /upload HTTP/1.1\r\nHost: {f}\r\nContent-Length: 15\r\n\r\n_method=DELETE&"), 400),
        ("multipart _method", with_body("POST", f, "/upload", mp, &part("\"_method\"")), 400),
        ("JSON _method", with_body("POST", f, "/upload", "application/json", r#"{"a": 1, "\u005fmethod": "DELETE"}"#), 400),
        ("lower-case method", format!("delete /v1/x HTTP/1.1\r\nHost: {f}\r\n\r\n"), 400),
        // 2. Spellings of a denied path.
        ("case", get(f, "/v1/ADMIN/keys", ""), 403),
        ("%41DMIN", get(f, "/v1/%41DMIN/keys", ""), 403),
        ("format suffix", get(f, "/v1/admin.json", ""), 403),
        ("%2Ejson", get(f, "/v1/admin%2Ejson", ""), 403),
        ("trailing %20", get(f, "/v1/admin%20/keys", ""), 400),
        ("trailing %09", get(f, "/v1/admin%09/keys", ""), 400),
        ("trailing %0a", get(f, "/v1/admin%0a/keys", ""), 400),
        ("trailing U+2028", get(f, "/v1/admin%E2%80%A8/keys", ""), 400),
        ("overlong %c0%ae", get(f, "/v1/x/%c0%ae%c0%ae/admin/keys", ""), 400),
        ("fullwidth a", get(f, "/v1/%EF%BD%81dmin/keys", ""), 403),
        ("fullwidth slash", get(f, "/v1/x%EF%BC%8F..%EF%BC%8Fadmin/keys", ""), 400),
        ("dotless i", get(f, "/v1/adm%C4%B1n/keys", ""), 403),
        ("%3F", get(f, "/v1/admin%3Fx/keys", ""), 400),
        ("%23", get(f, "/v1/admin%23x/keys", ""), 400),
        ("double encoding %2561", get(f, "/v1/%2561dmin/keys", ""), 400),
        ("HEAD", format!("HEAD /v1/admin/keys HTTP/1.1\r\nHost: {f}\r\n\r\n"), 403),
        // 4. A body on a method that defines none.
        ("GET with a body", with_body("GET", f, "/v1/x", "application/json", "{}"), 400),
        ("DELETE with a chunked body", format!("DELETE /v1/x HTTP/1.1\r\nHost: {f}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"), 400),
    ];
    // The first case is a control: an allowed POST with a harmless form body.
    let mut ops: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, r, _))| json!({"op": "tls", "target": format!("{f}:443"), "sni": f, "requests": [mark(r, i)]}))
        .collect();
    let hosts = ["FILES.example.net", "files.example.net.", "files.example.net:443", "files.example.net:0443"];
    for (k, h) in hosts.iter().enumerate() {
        ops.push(json!({"op": "tls", "target": format!("{f}:443"), "sni": f, "requests": [get(h, &format!("/v1/host-{k}"), "")]}));
    }
    // 4. An allowed name that cannot be resolved is 502 with the reason, not a denial.
    ops.push(json!({"op": "connect", "target": "nx.example.com:443"}));
    let (out, l) = probe(&lab, &up, &[], &Value::Array(ops));
    let recs = l.proxy_records();
    let reqs = up.requests();
    let mut failures = Vec::new();
    let mut table = String::new();
    for (i, (what, _, want)) in cases.iter().enumerate() {
        let r = &out[i]["responses"][0];
        table.push_str(&format!("  {what:<28} {} {}\n", status(r), r["reason"].as_str().unwrap_or("")));
        let marker = format!("trick={i:02}");
        let seen = reqs.iter().find(|q| q["target"].as_str().is_some_and(|t| t.contains(&marker)));
        if *want == 0 {
            if status(r) != 200 || seen.is_none() {
                failures.push(format!("control {what}: {} / {seen:?}", out[i]));
            }
            continue;
        }
        if status(r) != i64::from(*want) {
            failures.push(format!("{what}: want {want}, got {}", out[i]));
        }
        if let Some(q) = seen {
            failures.push(format!("{what}: reached the server: {q}"));
        }
        if !recs.iter().any(|x| x["decision"] == "deny" && x["host"] == f && x["reason"].as_str().is_some_and(|s| !s.is_empty()) && x["path"].as_str().is_some()) {
            failures.push(format!("{what}: no deny record"));
        }
    }
    eprintln!("re-interpretable requests (status, reason):\n{table}");
    let denials: usize = recs.iter().filter(|x| x["decision"] == "deny" && x["host"] == f).map(|r| represented(r) as usize).sum();
    if denials < cases.len() - 1 {
        failures.push(format!("{} refused requests, {denials} denials recorded", cases.len() - 1));
    }
    for q in &reqs {
        let (m, p) = (q["interpreted"]["method"].as_str().unwrap_or(""), q["interpreted"]["path"].as_str().unwrap_or(""));
        if m != q["method"].as_str().unwrap_or("") || p.starts_with("/v1/admin") {
            failures.push(format!("the server read a request as {m} {p}: {q}"));
        }
    }
    for (k, h) in hosts.iter().enumerate() {
        let path = format!("/v1/host-{k}");
        match reqs.iter().find(|q| q["path"] == path.as_str()) {
            Some(q) if header_values(q, "Host") == [f] && header_values(q, "X-Api-Key") == [FILES_KEY] => {}
            other => failures.push(format!("Host `{h}`: want `Host: {f}` with the credential upstream, got {other:?} / {}", out[cases.len() + k])),
        }
    }
    let nx = &out[cases.len() + hosts.len()];
    if status(nx) != 502 || !nx["reason"].as_str().is_some_and(|r| r.contains("resolve")) {
        failures.push(format!("an unresolvable allowed name: want 502 naming the resolution, got {nx}"));
    }
    if let Some(r) = recs.iter().find(|r| r["host"] == "nx.example.com")
        && r["decision"] != "allow"
    {
        failures.push(format!("a DNS failure is not a policy denial: {r}"));
    }
    assert!(!l.log_text().contains(FILES_KEY));
    assert!(failures.is_empty(), "{} failure(s):\n{}\naudit: {recs:#?}", failures.len(), failures.join("\n"));
}

/// Issue 13 item 5: a grant that names programs. With `{ host = "git.example.org:443", exe =
/// ["/usr/bin/git", "/usr/lib/git-core"] }`, `git clone` works from inside the sandbox while
/// curl and Python to the same host get 403, each audited with its program and the rule;
/// the decision endpoint and `aegisc check --exe` answer per program the same way. A
/// transparent forward is judged by the agent's program too, never by the connect broker
/// that holds the socket while the proxy accepts it: the forward granted to git refuses
/// Python, and the one granted to Python admits it.
#[test]
fn a_grant_for_git_admits_git_and_refuses_curl_to_the_same_host() {
    if !ready() {
        return;
    }
    let Some((_repo, up)) = git_upstream("program", vec![7000, 7001]) else { return };
    let lab = Lab::new();
    let alt = up.ip_alt.to_string();
    // The grant names the executable as /proc shows it (python3 is a symlink).
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap().display().to_string();
    let grant = format!(
        "[network]\nallow = [{{ host = \"git.example.org:443\", exe = [\"/usr/bin/git\", \"/usr/lib/git-core\"] }}, {{ host = \"{alt}:7000\", exe = [\"/usr/bin/git\"] }}, {{ host = \"{alt}:7001\", exe = [\"{python}\"] }}]\n"
    );
    let ops = json!([
        // A transparent forward granted to git only: Python's direct connection is refused.
        {"op": "tcp_echo", "host": alt, "port": 7000, "lines": ["SELECT 1;"], "timeout": 2},
        // One granted to Python admits it.
        {"op": "tcp_echo", "host": alt, "port": 7001, "lines": ["SELECT 2;"], "timeout": 10},
        {"op": "curl", "url": "https://git.example.org/repo.git/info/refs"},
        {"op": "git_clone", "url": "https://git.example.org/repo.git", "dest": "/tmp/clone"},
        {"op": "urllib", "url": "https://git.example.org/repo.git/HEAD"},
        {"op": "decision", "body": {"kind": "net", "host": "git.example.org", "port": 443}},
        {"op": "decision", "body": {"kind": "net", "host": "git.example.org", "port": 443, "exe": "/usr/bin/git"}},
    ]);
    let (out, l) = probe_with(&lab, &up, &grant, &[], &ops);
    let recs = l.proxy_records();
    let reqs = up.requests();
    assert!(out[0]["greeting"].as_str().is_none_or(str::is_empty), "Python got through a forward for git: {}", out[0]);
    assert!(
        recs.iter().any(|r| r["mode"] == "tcp" && r["decision"] == "deny" && r["exe"].as_str().is_some_and(|e| e.starts_with("/usr/bin/python3"))),
        "no deny record for the forward naming Python: {recs:#?}"
    );
    assert!(reqs.iter().all(|q| q["action"] != "echo" || q["listen_port"] == 7001), "the forward reached the server: {reqs:?}");
    assert_eq!(out[1]["greeting"], "echo 7001", "the forward granted to Python admits it: {}\naudit: {recs:#?}", out[1]);
    assert_eq!(out[1]["echo"], json!(["SELECT 2;"]), "{}", out[1]);
    let fwd = recs.iter().find(|r| r["mode"] == "tcp" && r["port"] == 7001).unwrap_or_else(|| panic!("no record of the forward to 7001: {recs:#?}"));
    assert_eq!((&fwd["decision"], &fwd["exe"]), (&json!("allow"), &json!(python)), "decided for Python, not the broker: {fwd}");
    assert!(recs.iter().all(|r| r["exe"].as_str().is_none_or(|e| !e.ends_with("/aegis-exec"))), "the broker is never the requesting program: {recs:#?}");
    let out = &out[2..];
    assert_ne!(out[0]["rc"], 0, "curl got through a grant for git: {}", out[0]);
    assert_eq!(out[1]["rc"], 0, "git clone: {}\naudit: {recs:#?}", out[1]);
    assert_eq!(out[1]["content"]["README.md"], "fetched through the AEGIS proxy\n", "{}", out[1]);
    assert!(out[2]["error"].as_str().is_some_and(|e| e.contains("403")), "Python got through a grant for git: {}", out[2]);
    assert_eq!(out[3]["json"]["verdict"], "DENY", "asked by Python: {}", out[3]);
    assert_eq!(out[4]["json"]["verdict"], "ALLOW", "asked for git: {}", out[4]);
    let git_host = |r: &&&Value| r["host"] == "git.example.org" && r["mode"] == "tunnel";
    let allowed: Vec<&&Value> = recs.iter().filter(|r| git_host(r) && r["decision"] == "allow").collect();
    assert!(!allowed.is_empty(), "no allow record for git: {recs:#?}");
    for r in &allowed {
        assert!(r["exe"].as_str().is_some_and(|e| e.starts_with("/usr/lib/git-core/") || e == "/usr/bin/git"), "allowed for another program: {r}");
        assert!(r["rule"].as_str().is_some_and(|x| x.contains("git.example.org:443/tcp for /usr/bin/git")), "the rule is named: {r}");
    }
    let denied: Vec<&&Value> = recs.iter().filter(|r| git_host(r) && r["decision"] == "deny").collect();
    for exe in ["/usr/bin/curl", "/usr/bin/python3"] {
        assert!(
            denied.iter().any(|r| r["exe"].as_str().is_some_and(|e| e.starts_with(exe)) && r["reason"].as_str().is_some_and(|x| x.contains("only to other programs"))),
            "no deny record naming {exe}: {recs:#?}"
        );
    }
    assert!(reqs.iter().all(|q| header_values(q, "User-Agent").iter().all(|u| u.starts_with("git/"))), "only git reached the server: {reqs:?}");
    // `aegisc check` answers per program.
    let pol = lab.path("gate-with-file-credential.toml");
    let check = |exe: Option<&str>| {
        let mut c = aegisc();
        c.arg("check").arg(&pol);
        if let Some(e) = exe {
            c.args(["--exe", e]);
        }
        run(c.args(["net", "git.example.org", "443"]))
    };
    let git = check(Some("/usr/lib/git-core/git-remote-https"));
    assert_eq!(git.code, 0, "{}{}", git.stdout, git.stderr);
    let curl = check(Some("/usr/bin/curl"));
    assert_eq!(curl.code, 1, "{}{}", curl.stdout, curl.stderr);
    assert!(curl.stdout.contains("only to other programs"), "{}", curl.stdout);
    let unknown = check(None);
    assert_eq!(unknown.code, 1, "{}", unknown.stdout);
    assert!(unknown.stdout.contains("--exe"), "the answer says how to ask per program: {}", unknown.stdout);
}

/// Issue 13 item 3: domain fronting. A tunnel to an allowed name that could reach an API's
/// server is terminated and every request's `Host` must be the CONNECT host ("checked"
/// mode): `front.example.com` shares the gmail API's address (two names on one upstream
/// address), `cdn.example.com` has its own address but presents a certificate that also
/// names the API, and `CONNECT <the API's address>` through a CIDR grant is the same case;
/// `Host: gmail.googleapis.com` inside each is refused (403, audited) and never reaches the
/// server, while requests for the CONNECT host itself work (without any credential). A
/// transparent TCP forward to the API's address is refused. A tunnel to a host that shares
/// nothing with an API stays a plain tunnel.
#[test]
fn a_tunnel_that_could_reach_an_api_is_checked_and_fronting_is_refused() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("fronting", None) else { return };
    let lab = Lab::new();
    let g = "gmail.googleapis.com";
    let ip = up.ip.to_string();
    let front = |target: String, sni: Option<&str>, own_host: &str, tag: &str| {
        json!({"op": "tls", "target": target, "sni": sni, "requests": [
            get(own_host, &format!("/own-{tag}"), ""),
            get(g, &format!("/gmail/v1/users/me/messages?front={tag}"), ""),
        ]})
    };
    let ops = json!([
        front("front.example.com:443".into(), Some("front.example.com"), "front.example.com", "address"),
        front("cdn.example.com:443".into(), Some("cdn.example.com"), "cdn.example.com", "certificate"),
        front(format!("{ip}:443"), None, &ip, "literal"),
        // The API's address through a transparent forward.
        {"op": "tcp_echo", "host": ip, "port": 443, "lines": [], "timeout": 2},
        // Control: shares nothing with an API.
        {"op": "tls", "target": "www.example.com:443", "sni": "www.example.com", "requests": [get("www.example.com", "/plain-tunnel", "")]},
    ]);
    let extra = format!("[network]\nallow = [\"10.233.{}.0/29:443\", \"{ip}:443\"]\n", up.index);
    let (out, l) = probe_with(&lab, &up, &extra, &[("front.example.com", ip.clone())], &ops);
    let recs = l.proxy_records();
    let reqs = up.requests();
    let mut failures = Vec::new();
    for (k, tag, host) in [(0, "address", "front.example.com"), (1, "certificate", "cdn.example.com"), (2, "literal", ip.as_str())] {
        let rs = out[k]["responses"].as_array().cloned().unwrap_or_default();
        if rs.first().map(status) != Some(200) {
            failures.push(format!("{tag}: a request for the CONNECT host itself: {}", out[k]));
        }
        if rs.get(1).is_some_and(|r| status(r) != 403) {
            failures.push(format!("{tag}: Host {g} inside a tunnel to {host}: want 403, got {}", out[k]));
        }
        if !recs.iter().any(|r| r["mode"] == "checked" && r["decision"] == "deny" && r["reason"].as_str().is_some_and(|x| x.contains("domain fronting"))) {
            failures.push(format!("{tag}: no deny record naming domain fronting"));
        }
        if !recs.iter().any(|r| r["mode"] == "checked" && r["decision"] == "allow" && r["path"] == format!("/own-{tag}").as_str()) {
            failures.push(format!("{tag}: no checked allow record for the tunnel's own request"));
        }
    }
    if reqs.iter().any(|q| q["target"].as_str().is_some_and(|t| t.contains("front="))) {
        failures.push(format!("a fronted request reached the server: {reqs:?}"));
    }
    if reqs.iter().any(|q| !header_values(q, "Authorization").is_empty()) {
        failures.push(format!("a credential reached a checked tunnel: {reqs:?}"));
    }
    if out[3]["greeting"].as_str().is_some_and(|g| !g.is_empty()) || reqs.iter().any(|q| q["listen_port"] == 443 && q["action"] == "echo") {
        failures.push(format!("a transparent forward to the API's address was relayed: {}", out[3]));
    }
    if !recs.iter().any(|r| r["mode"] == "tcp" && r["decision"] == "deny" && r["reason"].as_str().is_some_and(|x| x.contains("domain fronting"))) {
        failures.push("no deny record for the transparent forward".into());
    }
    if out[4]["responses"][0]["status"] != 200 || !recs.iter().any(|r| r["mode"] == "tunnel" && r["host"] == "www.example.com" && r["decision"] == "allow") {
        failures.push(format!("control: a host sharing nothing with an API stays a plain tunnel: {}", out[4]));
    }
    assert!(!l.log_text().contains(GMAIL_TOKEN));
    assert!(failures.is_empty(), "{} failure(s):\n{}\naudit: {recs:#?}\nserver: {reqs:#?}", failures.len(), failures.join("\n"));
}

/// The count a record stands for: 1, or for a summary ("N more like ...") its `count`.
fn represented(r: &Value) -> u64 {
    let n = r["count"].as_u64().unwrap_or(1);
    let words = r["reason"].as_str().and_then(|s| s.split_once(" more like the previous")).and_then(|(n, _)| n.parse::<u64>().ok());
    assert_eq!(words.unwrap_or(1), n, "a summary says its count in words too: {r}");
    n
}

/// Issue 11 item 4, the proxy's side: an agent that floods the decision endpoint with
/// distinct 1 KiB questions and repeats a refused CONNECT does not grow the log one record
/// per attempt: repeats are aggregated at the source (one record, then about one summary a
/// second with samples), no attempt goes uncounted, and the proxy's own CPU for the agent
/// is reported in the run's records.
#[test]
fn a_flood_of_questions_and_refused_connects_is_aggregated_not_recorded_one_by_one() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("flood", None) else { return };
    let lab = Lab::new();
    let (questions, connects) = (3000, 300);
    let script = format!(
        r#"
import http.client, json, socket, time
t = time.time()
c = http.client.HTTPConnection("127.0.0.1", 3128)
for i in range({questions}):
    body = json.dumps({{"kind": "fs", "access": "read", "path": "/etc/q%d-%s" % (i, "y" * 1000)}})
    c.request("POST", "/.aegis/v1/check", body, {{"Content-Type": "application/json"}})
    c.getresponse().read()
for i in range({connects}):
    s = socket.create_connection(("127.0.0.1", 3128))
    s.sendall(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
    s.recv(4096)
    s.close()
print(json.dumps({{"seconds": time.time() - t}}))
"#
    );
    let (out, l) = probe(&lab, &up, &[], &json!([{"op": "run", "argv": ["/usr/bin/python3", "-c", script]}]));
    assert_eq!(out[0]["rc"], 0, "{}", out[0]);
    let recs = l.proxy_records();
    let questions_recs: Vec<&&Value> = recs.iter().filter(|r| r["mode"] == "decision").collect();
    let connect_recs: Vec<&&Value> = recs.iter().filter(|r| r["host"] == "evil.test").collect();
    let asked: u64 = questions_recs.iter().map(|r| represented(r)).sum();
    let refused: u64 = connect_recs.iter().map(|r| represented(r)).sum();
    let bytes = std::fs::metadata(&l.log).unwrap().len();
    // Without aggregation each attempt was one record as large as the first of its key.
    let whole = |v: &[&&Value]| v.first().map(|r| r.to_string().len() as u64).unwrap_or(0);
    eprintln!(
        "{questions} questions and {connects} refused CONNECTs in {} s: {} + {} records, log {bytes} bytes; one record per attempt would be {} records, about {} bytes of events",
        out[0]["stdout"],
        questions_recs.len(),
        connect_recs.len(),
        questions + connects,
        questions * whole(&questions_recs) + connects * whole(&connect_recs)
    );
    assert_eq!(asked, questions, "every question is counted: {questions_recs:#?}");
    assert_eq!(refused, connects, "every refused CONNECT is counted: {connect_recs:#?}");
    assert!(questions_recs.len() < 40 && connect_recs.len() < 40, "repeats are aggregated: {} and {} records", questions_recs.len(), connect_recs.len());
    assert!(bytes < 200_000, "the log grew {bytes} bytes for {} attempts", questions + connects);
    let note = l.events.iter().find(|e| e["kind"] == "note" && e["component"] == "proxy").unwrap_or_else(|| panic!("no usage note: {:?}", l.events.iter().map(|e| &e["kind"]).collect::<Vec<_>>()));
    assert!(note["message"].as_str().unwrap().contains("ms of CPU in"), "{note}");
}

/// Measurement, not a test (timings are never pass/fail; run with `--ignored --nocapture`):
/// the supervisor's CPU for an agent that opens inspected TLS connections as fast as it
/// can (16 threads) for 6 s, with and without `[resources] cpu = 0.25`, from the proxy's
/// usage note.
#[test]
#[ignore]
fn measure_the_proxys_cpu_for_an_agent_that_hammers_tls_handshakes() {
    if !ready() {
        return;
    }
    let Some(up) = upstream("hammer", None) else { return };
    let lab = Lab::new();
    let script = r#"
import json, socket, ssl, threading, time, os
ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
t, n = time.time(), [0]
def worker():
    while time.time() - t < 6:
        s = socket.create_connection(("127.0.0.1", 3128))
        s.sendall(b"CONNECT files.example.net:443 HTTP/1.1\r\nHost: files.example.net:443\r\n\r\n")
        s.recv(4096)
        c = ctx.wrap_socket(s, server_hostname="files.example.net")
        c.sendall(b"GET /headers HTTP/1.1\r\nHost: files.example.net\r\nConnection: close\r\n\r\n")
        while c.recv(65536):
            pass
        c.close()
        n[0] += 1
ws = [threading.Thread(target=worker) for _ in range(16)]
[w.start() for w in ws]
[w.join() for w in ws]
print(json.dumps({"connections": n[0], "seconds": time.time() - t}))
"#;
    for extra in ["", "[resources]\ncpu = 0.25\n"] {
        let (out, l) = probe_with(&lab, &up, extra, &[], &json!([{"op": "run", "argv": ["/usr/bin/python3", "-c", script]}]));
        let note = l.events.iter().rev().find(|e| e["kind"] == "note" && e["component"] == "proxy").map(|e| e["message"].clone());
        eprintln!("limit {:?}: agent {} / proxy: {note:?}", extra.trim(), out[0]["stdout"].as_str().unwrap_or("").trim());
    }
}
