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


use aegis_tests::upstream::{self, Serve, Upstream};
use aegis_tests::*;
use serde_json::{Value, json};



const GMAIL_TOKEN: &str = "ya29.test-gmail-token-7f3a9c";
const FILES_KEY: &str = "files-key-51d2e8b0";

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/proxy")
}

/// An upstream with its servers, or None (after printing why) when this host cannot make one.
fn upstream(name: &str, static_dir: Option<PathBuf>) -> Option<Upstream> {
    if let Some(why) = upstream::unavailable() {
        eprintln!("SKIP: {why}");
        return None;
    }
    let mut up = Upstream::start(name);
    up.serve(&Serve {
        credentials: vec![
            ("gmail.googleapis.com", "Authorization", format!("Bearer {GMAIL_TOKEN}")),
            ("files.example.net", "X-Api-Key", FILES_KEY.to_string()),
        ],
        static_dir,
    });
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
    let tmp = tempfile::Builder::new().prefix("aegis-up-git-").tempdir_in("/var/tmp").unwrap();
    let Some(up) = upstream("direct", Some(git_repo(tmp.path()))) else { return };
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
            {"op": "upload", "target": "files.example.net:443", "path": "/upload", "mb": 2, "headers": {"X-Api-Key": FILES_KEY}},
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
