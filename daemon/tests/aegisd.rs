#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
//! `aegisd` as a user meets it: the real daemon binary on a real socket in a temp dir, the
//! real `aegis` client, other users made with setuid in spawned children, the real audit
//! log checked with the `aegis_audit` verifier. Modules of this file, in order: helpers;
//! agreement with the reference evaluator (and the audit log that records it); bundles and
//! trust keys; who may connect; malformed input and limits; socket life cycle.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aegis_policy::eval::{self, FsQuery, Params, Query};
use aegis_policy::ir::Protocol;
use serde_json::{Value, json};

const AEGISD: &str = env!("CARGO_BIN_EXE_aegisd");

/// `aegisd` with `AEGIS_DIR` in `dir` and no `AEGIS_SOCKET`: a test never touches the
/// shared directory of whoever runs the suite.
fn aegisd(dir: &Path) -> Command {
    let mut c = Command::new(AEGISD);
    c.env("AEGIS_DIR", dir).env_remove("AEGIS_SOCKET");
    c
}

/// The `aegis` client: the `aegis-cli` package's binary, next to `aegisd` in the target
/// directory (`cargo test --workspace` builds every binary before any test runs).
fn aegis() -> Command {
    let bin = Path::new(AEGISD).with_file_name("aegis");
    assert!(bin.exists(), "{} is not built: run `cargo test --workspace` (or `cargo build -p aegis-cli` first)", bin.display());
    let mut c = Command::new(bin);
    c.env_remove("AEGIS_SOCKET").env_remove("AEGIS_DIR");
    c
}

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).canonicalize().unwrap()
}

fn policy(name: &str) -> PathBuf {
    repo().join("policies").join(name)
}

// ---------------------------------------------------------------------------------------
// Helpers

struct Daemon {
    child: Child,
    socket: PathBuf,
    audit: PathBuf,
    dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts aegisd with `args` on `<tempdir>/aegisd.sock`, auditing to `<tempdir>/audit.log`.
    fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // Other users (the setuid tests) must be able to reach the socket through the
        // directory: only the socket's own mode may decide whether they get in.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("aegisd.sock");
        let audit = dir.path().join("audit.log");
        let child = aegisd(dir.path())
            .arg("--socket")
            .arg(&socket)
            .arg("--audit-log")
            .arg(&audit)
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, socket, audit, dir };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("aegisd exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "aegisd did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// One request line on a fresh connection, one response object back.
    fn ask(&self, req: &Value) -> Value {
        let mut c = Conn::open(&self.socket);
        c.send(&serde_json::to_vec(req).unwrap());
        c.recv().expect("a response")
    }

    fn aegis(&self, args: &[&str]) -> Output {
        aegis().arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw connection: requests as bytes, responses as JSON lines.
struct Conn {
    out: UnixStream,
    inp: BufReader<UnixStream>,
}

impl Conn {
    fn open(socket: &Path) -> Conn {
        let s = UnixStream::connect(socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { inp: BufReader::new(s.try_clone().unwrap()), out: s }
    }
    /// Write errors are ignored: a daemon that refused us may already have closed, and
    /// what it said is still waiting to be read.
    fn send(&mut self, line: &[u8]) {
        let _ = self.out.write_all(line);
        let _ = self.out.write_all(b"\n");
    }
    /// The next response, or `None` when the daemon closed the connection.
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.inp.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
            // ECONNRESET: the daemon closed with our unread bytes in its buffer.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a response: {e}"),
        }
    }
}

fn error_code(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected an error, got {v}");
    v["error"]["code"].as_str().unwrap()
}

fn register(d: &Daemon, path: &Path, params: Value) -> Value {
    let v = d.ask(&json!({"op":"register","policy":path,"params":params}));
    assert_eq!(v["ok"], true, "{v}");
    v
}

// ---------------------------------------------------------------------------------------
// Agreement with the reference evaluator, and the audit log

/// (agent, request, the same question as an evaluator query)
fn questions() -> Vec<(&'static str, Value, Query)> {
    let fs = |agent: &'static str, access: FsQuery, path: &str| {
        (agent, json!({"op":"check-fs","agent":agent,"access":access.word(),"path":path}), Query::Fs { access, path: path.into() })
    };
    let exec = |agent: &'static str, path: &str| {
        (agent, json!({"op":"check-exec","agent":agent,"path":path}), Query::Fs { access: FsQuery::Exec, path: path.into() })
    };
    let net = |agent: &'static str, host: &str, port: u16, udp: bool| {
        let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
        let mut req = json!({"op":"check-net","agent":agent,"host":host,"port":port});
        if udp {
            req["protocol"] = json!("udp");
        }
        (agent, req, Query::Net { host: host.into(), port, protocol })
    };
    let scope = |agent: &'static str, api: &str, s: &str| {
        (agent, json!({"op":"check-api","agent":agent,"api":api,"scope":s}), Query::ApiScope { api: api.into(), scope: s.into() })
    };
    let http = |agent: &'static str, api: &str, m: &str, p: &str| {
        (
            agent,
            json!({"op":"check-api","agent":agent,"api":api,"method":m,"path":p}),
            Query::ApiHttp { api: api.into(), method: m.into(), path: p.into() },
        )
    };
    let (im, ca) = ("inbox-manager", "coding-agent");
    vec![
        fs(im, FsQuery::Read, "/etc/passwd"),
        fs(im, FsQuery::Read, "/usr/lib/python3/os.py"),
        fs(im, FsQuery::Write, "/usr/lib/python3/os.py"),
        fs(im, FsQuery::Read, "/etc/ssl/certs/ca.pem"),
        fs(im, FsQuery::Write, "/tmp/x"),
        exec(im, "/usr/bin/python3"),
        exec(im, "/bin/sh"),
        net(im, "gmail.googleapis.com", 443, false),
        net(im, "example.com", 443, false),
        scope(im, "gmail", "https://www.googleapis.com/auth/gmail.modify"),
        scope(im, "gmail", "https://www.googleapis.com/auth/gmail.send"),
        http(im, "gmail", "POST", "/gmail/v1/users/me/messages/send"),
        http(im, "gmail", "GET", "/gmail/v1/users/me/messages"),
        http(im, "gmail", "GET", "/gmail/v1/users/me/messages/abc123"),
        http(im, "gmail", "POST", "/gmail/v1/users/me/messages/abc123/modify"),
        http(im, "gmail", "POST", "/gmail/v1/users/me/messages/abc123/trash"),
        http(im, "gmail", "GET", "/gmail/v1/users/me/messages/../send"),
        fs(ca, FsQuery::Write, "/home/u/repo/src/main.rs"),
        fs(ca, FsQuery::Read, "/home/u/repo/.env"),
        fs(ca, FsQuery::Read, "/etc/shadow"),
        fs(ca, FsQuery::Write, "/home/u/other"),
        exec(ca, "/usr/bin/git"),
        exec(ca, "/usr/lib/git-core/git-remote-https"),
        exec(ca, "/usr/bin/curl"),
        net(ca, "github.com", 443, false),
        net(ca, "github.com", 22, false),
        net(ca, "1.1.1.1", 53, true),
        net(ca, "evil.example", 443, false),
    ]
}

#[test]
fn answers_agree_with_the_reference_evaluator_and_each_decision_is_audited() {
    let d = Daemon::start(&[]);
    register(&d, &policy("inbox-manager.toml"), json!({}));
    register(&d, &policy("coding-agent.toml"), json!({"WORKSPACE":"/home/u/repo"}));

    let inbox = aegis_compiler::compile_file(&policy("inbox-manager.toml")).ok().unwrap();
    let coding = aegis_compiler::compile_file(&policy("coding-agent.toml")).ok().unwrap();
    let mut coding_params = Params::new();
    let (k, v) = eval::parse_param("WORKSPACE=/home/u/repo").unwrap();
    coding_params.insert(k, v);
    let none = Params::new();

    let qs = questions();
    let mut seen = std::collections::BTreeSet::new();
    for (agent, req, query) in &qs {
        let (compiled, params) = if *agent == "inbox-manager" { (&inbox, &none) } else { (&coding, &coding_params) };
        let want = eval::evaluate(&compiled.policy, params, query).unwrap();
        let got = d.ask(req);
        assert_eq!(got["ok"], true, "{req} → {got}");
        assert_eq!(got["verdict"], want.verdict.to_string(), "{req}");
        assert_eq!(got["reason"], want.reason, "{req}");
        assert_eq!(got["notes"], json!(want.notes), "{req}");
        match &want.rule {
            None => assert!(got["rule"].is_null(), "{req} → {got}"),
            Some(r) => {
                assert_eq!(got["rule"]["kind"], r.kind, "{req}");
                assert_eq!(got["rule"]["text"], r.text, "{req}");
                let loc = r.origin.map(|o| compiled.sources.locate(o).to_string());
                assert_eq!(got["rule"]["location"], json!(loc), "{req}");
            }
        }
        seen.insert((*agent, want.verdict.to_string()));
    }
    // Both agents got both answers: the comparison above is not all-DENY.
    assert_eq!(seen.len(), 4, "{seen:?}");

    // The issue's example, spelled out: send is refused, listing is allowed.
    let send = d.ask(&json!({"op":"check-api","agent":"inbox-manager","api":"gmail","method":"POST","path":"/gmail/v1/users/me/messages/send"}));
    assert_eq!(send["verdict"], "DENY");
    assert_eq!(send["rule"]["kind"], "deny rule");
    let list = d.ask(&json!({"op":"check-api","agent":"inbox-manager","api":"gmail","method":"GET","path":"/gmail/v1/users/me/messages"}));
    assert_eq!(list["verdict"], "ALLOW");

    // The client prints what `aegisc check` prints, with its exit codes.
    let out = d.aegis(&["check-api", "inbox-manager", "gmail", "POST", "/gmail/v1/users/me/messages/send"]);
    let loc = inbox.sources.locate(eval::evaluate(&inbox.policy, &none, &qs[11].2).unwrap().rule.unwrap().origin.unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("DENY: {} ({loc})\n", send["reason"].as_str().unwrap()));
    assert_eq!(out.status.code(), Some(1));
    let out = d.aegis(&["check-fs", "coding-agent", "write", "/home/u/repo/src/lib.rs"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ALLOW: path '/home/u/repo/src/lib.rs' is covered by write grant"));
    let out = d.aegis(&["check-exec", "no-such-agent", "/bin/sh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aegis::daemon::unknown_agent"));
    let out = d.aegis(&["--format", "json", "check-net", "coding-agent", "1.1.1.1", "53", "--udp"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rule"]["kind"], "dns resolver");

    // The log verifies, and holds exactly one record per decision, in order, each saying
    // what was asked, the verdict and who asked.
    let report = aegis_audit::verify_log(&d.audit, &aegis_audit::VerifyOptions::default()).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let n_checks = qs.len() + 2 + 2 + 1; // questions, the two spelled out, client ALLOW/DENY and json
    assert_eq!(report.records as usize, 2 + n_checks);
    let lines = d.audit_lines();
    assert_eq!(lines.len(), 2 + n_checks);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["event"]["kind"], "decision");
        assert_eq!(l["event"]["component"], "aegisd");
        assert!(l["event"]["reason"].as_str().unwrap().contains("[asked by uid 0 "), "{l}");
        if i < 2 {
            assert_eq!(l["event"]["subject"], "register");
        }
    }
    assert_eq!(lines[1]["agent"], "coding-agent");
    for (i, (agent, req, _)) in qs.iter().enumerate() {
        let rec = &lines[2 + i];
        let got = d.ask(req);
        assert_eq!(rec["agent"], *agent);
        assert_eq!(rec["event"]["decision"], got["verdict"].as_str().unwrap().to_lowercase(), "{rec}");
        let subject = match req["op"].as_str().unwrap() {
            "check-fs" => "fs",
            "check-exec" => "exec",
            "check-net" => "net",
            _ => "api",
        };
        assert_eq!(rec["event"]["subject"], subject);
    }
    let send_rec = &lines[2 + 11];
    assert_eq!(send_rec["event"]["target"], "gmail POST /gmail/v1/users/me/messages/send");
    assert!(send_rec["event"]["rule"].as_str().unwrap().starts_with("deny rule 'POST /gmail/v1/users/me/messages/send' ("));
}

#[test]
fn register_replaces_validates_parameters_and_is_audited() {
    // Group commit syncs later, but still writes each record before its answer.
    let d = Daemon::start(&["--audit-group-commit"]);
    let ca = policy("coding-agent.toml");
    register(&d, &ca, json!({"WORKSPACE":"/home/u/repo"}));
    let q = json!({"op":"check-fs","agent":"coding-agent","access":"write","path":"/srv/checkout/a.rs"});
    assert_eq!(d.ask(&q)["verdict"], "DENY");
    let v = register(&d, &ca, json!({"WORKSPACE":"/srv/checkout"}));
    assert_eq!(v["replaced"], true);
    assert_eq!(d.ask(&q)["verdict"], "ALLOW");

    for (params, code) in [
        (json!({"WORKSPACE":"relative"}), "aegis::daemon::invalid_parameter"),
        (json!({"NOPE":"/x"}), "aegis::daemon::invalid_parameter"),
    ] {
        let v = d.ask(&json!({"op":"register","policy":ca,"params":params}));
        assert_eq!(error_code(&v), code);
    }
    // Refused registrations leave the previous one in force.
    assert_eq!(d.ask(&q)["verdict"], "ALLOW");
    let v = d.ask(&json!({"op":"register","policy":"policies/coding-agent.toml"}));
    assert_eq!(error_code(&v), "aegis::daemon::relative_path");
    let bad = d.dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[agent]\nname = \"x\"\n[filesystem]\nread = [\"usr\"]\n").unwrap();
    let v = d.ask(&json!({"op":"register","policy":bad}));
    assert_eq!(error_code(&v), "aegis::daemon::invalid_policy");
    assert!(v["error"]["message"].as_str().unwrap().contains("aegis::policy::relative_path"), "{v}");

    // The client resolves relative paths against its own working directory.
    let o = aegis()
        .current_dir(repo().join("daemon"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["register", "../policies/inbox-manager.toml"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!("registered agent 'inbox-manager' from policy {}\n", policy("inbox-manager.toml").display());
    assert_eq!(String::from_utf8_lossy(&o.stdout), want);
    let o = d.aegis(&["register", "/nonexistent/policy.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let list = d.ask(&json!({"op":"list"}));
    assert_eq!(list["agents"].as_array().unwrap().len(), 2);
    assert_eq!(list["agents"][0]["agent"], "coding-agent");
    assert_eq!(list["agents"][0]["params"]["WORKSPACE"], "/srv/checkout");

    // register ×2 allowed, 2 checks before... every register attempt and check is a record.
    let lines = d.audit_lines();
    let registers: Vec<&Value> = lines.iter().filter(|l| l["event"]["subject"] == "register").collect();
    assert_eq!(registers.len(), 8, "3 accepted, 5 refused");
    assert_eq!(registers.iter().filter(|l| l["event"]["decision"] == "allow").count(), 3);
    assert!(registers[1]["event"]["reason"].as_str().unwrap().contains("replacing the previous registration"));
    assert_eq!(lines.len(), 8 + 3);
}

// ---------------------------------------------------------------------------------------
// Bundles and trust keys

fn build_bundle(out: &Path, key: Option<&aegis_targets::bundle::SecretKey>) {
    use aegis_compiler::emit;
    let c = aegis_compiler::compile_file(&policy("inbox-manager.toml")).ok().unwrap();
    let a = emit::emit(&c.policy, &c.sources).unwrap();
    let issue = emit::bundle::Issue { issued_at: 1_700_000_000, serial: 1, expires_at: None };
    let mut w = aegis_targets::bundle::BundleWriter::new(emit::bundle::manifest_fields(&c.policy, &a.digest, a.landlock_abi, issue));
    for (name, bytes) in a.files {
        w.add(name, bytes).unwrap();
    }
    w.write(out, key).unwrap();
}

#[test]
fn bundles_register_only_with_the_right_key_and_untampered() {
    let keys = tempfile::tempdir().unwrap();
    let (good_sec, good_pub, other_sec, other_pub) =
        (keys.path().join("good.key"), keys.path().join("good.pub"), keys.path().join("other.key"), keys.path().join("other.pub"));
    aegis_targets::bundle::generate_keypair(&good_sec, &good_pub, false).unwrap();
    aegis_targets::bundle::generate_keypair(&other_sec, &other_pub, false).unwrap();
    let signed = keys.path().join("signed");
    build_bundle(&signed, Some(&aegis_targets::bundle::load_secret_key(&good_sec).unwrap()));
    let unsigned = keys.path().join("unsigned");
    build_bundle(&unsigned, None);
    let tampered = keys.path().join("tampered");
    std::fs::create_dir(&tampered).unwrap();
    for e in std::fs::read_dir(&signed).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), tampered.join(e.file_name())).unwrap();
    }
    // Lift the deny on sending mail: what an attacker who can write the bundle would do.
    let ir = tampered.join("policy.ir.json");
    let text = std::fs::read_to_string(&ir).unwrap();
    assert!(text.contains("/gmail/v1/users/me/messages/send"));
    std::fs::write(&ir, text.replace("/gmail/v1/users/me/messages/send", "/gmail/v1/users/me/messages/sendx")).unwrap();

    let send = json!({"op":"check-api","agent":"inbox-manager","api":"gmail","method":"POST","path":"/gmail/v1/users/me/messages/send"});
    let d = Daemon::start(&["--trust-key", good_pub.to_str().unwrap()]);
    let v = d.ask(&json!({"op":"register","bundle":signed}));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["from"], "bundle");
    assert!(v["signed_by"].is_string());
    let got = d.ask(&send);
    assert_eq!(got["verdict"], "DENY");
    // A bundle has the IR but not the policy text: the location is the file and byte offset.
    let loc = got["rule"]["location"].as_str().unwrap();
    assert!(loc.contains("inbox-manager.toml (byte "), "{loc}");
    let v = d.ask(&json!({"op":"register","bundle":tampered}));
    assert!(error_code(&v).starts_with("aegis::bundle::"), "{v}");
    let v = d.ask(&json!({"op":"register","bundle":unsigned}));
    assert!(error_code(&v).starts_with("aegis::bundle::"), "{v}");
    let out = d.aegis(&["register", tampered.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    drop(d);

    let d = Daemon::start(&["--trust-key", other_pub.to_str().unwrap()]);
    let v = d.ask(&json!({"op":"register","bundle":signed}));
    assert!(error_code(&v).starts_with("aegis::bundle::"), "{v}");
    assert_eq!(error_code(&d.ask(&send)), "aegis::daemon::unknown_agent");
    let refusals = d.audit_lines();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0]["event"]["decision"], "deny");
    drop(d);

    let d = Daemon::start(&[]);
    assert_eq!(error_code(&d.ask(&json!({"op":"register","bundle":signed}))), "aegis::daemon::no_trust_key");
    drop(d);

    let d = Daemon::start(&["--allow-unsigned"]);
    let out = d.aegis(&["register", unsigned.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(d.ask(&send)["verdict"], "DENY");
    // Unsigned is allowed; altered is still refused (the manifest's digests).
    assert!(error_code(&d.ask(&json!({"op":"register","bundle":tampered}))).starts_with("aegis::bundle::"));
}

// ---------------------------------------------------------------------------------------
// Who may connect

fn is_root() -> bool {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() == 0 }
}

/// Runs the real client as `uid`/`gid` with supplementary `groups`.
fn aegis_as(d: &Daemon, uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = aegis();
    cmd.arg("--socket").arg(&d.socket).args(args);
    // SAFETY: the closure only makes async-signal-safe system calls on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn users_the_socket_does_not_admit_are_refused() {
    if !is_root() {
        eprintln!("SKIP: needs root to run clients as other users");
        return;
    }
    let nobody = 65534;
    let d = Daemon::start(&[]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    register(&d, &policy("inbox-manager.toml"), json!({}));

    // The kernel refuses the connect: the socket file is owner-only.
    let o = aegis_as(&d, nobody, nobody, &[], &["list"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));

    // An operator widens the mode by mistake: the kernel now lets nobody connect, and the
    // daemon's own SO_PEERCRED check refuses it, says why, and records it.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = aegis_as(&d, nobody, nobody, &[], &["check-exec", "inbox-manager", "/usr/bin/python3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("aegis::daemon::not_permitted"), "{}", stderr(&o));
    assert!(stderr(&o).contains("uid 65534"), "{}", stderr(&o));
    let lines = d.audit_lines();
    let refused = lines.last().unwrap();
    assert_eq!(refused["event"]["subject"], "connection");
    assert_eq!(refused["event"]["decision"], "deny");
    assert!(refused["event"]["target"].as_str().unwrap().starts_with("uid 65534 gid 65534 pid "), "{refused}");
    // Root still gets answers.
    assert_eq!(d.aegis(&["check-exec", "inbox-manager", "/usr/bin/python3"]).status.code(), Some(0));
}

#[test]
fn members_of_the_group_may_check_but_not_register() {
    if !is_root() {
        eprintln!("SKIP: needs root to run clients as other users");
        return;
    }
    let (nobody, group) = (65534, 4242);
    let d = Daemon::start(&["--group", "4242"]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), group);
    register(&d, &policy("inbox-manager.toml"), json!({}));

    // Member through a supplementary group, and through the primary group.
    let o = aegis_as(&d, nobody, nobody, &[group], &["check-exec", "inbox-manager", "/usr/bin/python3"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = aegis_as(&d, nobody, group, &[], &["check-exec", "inbox-manager", "/bin/sh"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let last = d.audit_lines().pop().unwrap();
    assert!(last["event"]["reason"].as_str().unwrap().contains("[asked by uid 65534 gid 4242 "), "{last}");
    // Members may not make the daemon read files for them.
    let o = aegis_as(&d, nobody, nobody, &[group], &["register", policy("coding-agent.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("aegis::daemon::not_permitted"));

    // Not a member: the kernel refuses; with a widened mode, the daemon does.
    let o = aegis_as(&d, nobody, nobody, &[], &["list"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = aegis_as(&d, nobody, nobody, &[4243], &["list"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("aegis::daemon::not_permitted"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// Malformed input and limits

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    let d = Daemon::start(&[]);
    register(&d, &policy("inbox-manager.toml"), json!({}));
    let ok = json!({"op":"check-exec","agent":"inbox-manager","path":"/usr/bin/python3"});
    let mut c = Conn::open(&d.socket);
    let cases: Vec<(&[u8], &str)> = vec![
        (b"not json", "aegis::daemon::malformed_request"),
        (b"\xff\xfe\x00garbage\x01", "aegis::daemon::malformed_request"),
        (b"{\"op\":\"format-disk\"}", "aegis::daemon::malformed_request"),
        (b"{\"op\":\"list\",\"admin\":true}", "aegis::daemon::malformed_request"),
        (b"{\"op\":\"check-exec\",\"agent\":\"inbox-manager\"}", "aegis::daemon::malformed_request"),
        (b"{\"op\":\"check-net\",\"agent\":\"inbox-manager\",\"host\":\"a.b\",\"port\":\"443\"}", "aegis::daemon::malformed_request"),
        (b"{\"op\":\"check-net\",\"agent\":\"inbox-manager\",\"host\":\"a.b\",\"port\":99999}", "aegis::daemon::invalid_query"),
        (b"{\"op\":\"check-fs\",\"agent\":\"inbox-manager\",\"access\":\"read\",\"path\":\"etc/passwd\"}", "aegis::daemon::invalid_query"),
        (b"{\"op\":\"check-api\",\"agent\":\"inbox-manager\",\"api\":\"slack\",\"scope\":\"x\"}", "aegis::daemon::invalid_query"),
        (b"{\"op\":\"check-api\",\"agent\":\"inbox-manager\",\"api\":\"gmail\",\"method\":\"get\",\"path\":\"/\"}", "aegis::daemon::invalid_query"),
        (b"{\"op\":\"check-exec\",\"agent\":\"ghost\",\"path\":\"/bin/sh\"}", "aegis::daemon::unknown_agent"),
        (b"{\"op\":\"register\",\"policy\":\"/a\",\"bundle\":\"/b\"}", "aegis::daemon::malformed_request"),
        (b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]", "aegis::daemon::malformed_request"),
    ];
    for (line, code) in &cases {
        c.send(line);
        let v = c.recv().expect("an answer");
        assert_eq!(error_code(&v), *code, "{}", String::from_utf8_lossy(line));
        assert!(v["error"]["message"].is_string());
    }
    // Random bytes (no newline, not all blank): one error each, in step.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..300 {
        let len = 1 + (i * 37) % 700;
        let mut line: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .filter(|b| *b != b'\n')
            .collect();
        line.push(b'{');
        c.send(&line);
        let v = c.recv().expect("an answer to garbage");
        assert_eq!(error_code(&v), "aegis::daemon::malformed_request");
    }
    // Same connection, still in step.
    c.send(&serde_json::to_vec(&ok).unwrap());
    assert_eq!(c.recv().unwrap()["verdict"], "ALLOW");
    // Blank lines are not requests.
    c.send(b"");
    c.send(b"{\"op\":\"list\"}");
    assert_eq!(c.recv().unwrap()["agents"][0]["agent"], "inbox-manager");

    // An over-long line: one error, then the connection is closed.
    let mut big = Conn::open(&d.socket);
    let huge = vec![b'a'; (1 << 20) + 10];
    let _ = big.out.write_all(&huge);
    let v = big.recv().expect("an answer before closing");
    assert_eq!(error_code(&v), "aegis::daemon::request_too_large");
    assert!(big.recv().is_none());

    // A peer that vanishes mid-line.
    let mut gone = UnixStream::connect(&d.socket).unwrap();
    gone.write_all(b"{\"op\":\"check-exec\",\"agent\":\"inbox-").unwrap();
    drop(gone);

    // Only decisions were audited: the register and the two checks.
    assert_eq!(d.ask(&ok)["verdict"], "ALLOW");
    assert_eq!(d.audit_lines().len(), 3);
}

/// All slots held by connections that wait on their peers (idle ones here): a new
/// connection takes the place of the one that waited longest, which is closed; it is told
/// `busy` only when every connection is being answered (here: 64 registrations blocked on
/// FIFOs nobody writes yet) or has sent a request the daemon has not read yet (a loaded
/// daemon that is behind never drops a request it owes an answer: registrations that come
/// while the slots of closed connections are being freed, and a new client asking before
/// every registration was read, must not evict one).
#[test]
fn full_slots_evict_the_longest_waiting_or_are_told_busy() {
    let d = Daemon::start(&[]);
    let max = aegis_daemon::server::MAX_CONNECTIONS;
    let mut held: Vec<Conn> = (0..max + 1).map(|_| Conn::open(&d.socket)).collect();
    // Connections are accepted in order: the one past the limit takes the first one's place.
    assert!(held[0].recv().is_none(), "the longest waiting connection was closed to make room");
    let v = d.ask(&json!({"op":"list"}));
    assert_eq!(v["ok"], true, "answered, not busy: {v}");
    assert!(held[1].recv().is_none(), "and the next longest waiting one for this client");
    drop(held);

    // Every slot busy answering: registrations that read a FIFO with no writer yet.
    let fifos: Vec<PathBuf> = (0..max).map(|i| d.dir.path().join(format!("p{i}.toml"))).collect();
    let mut blocked = Vec::new();
    for f in &fifos {
        let c = std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut conn = Conn::open(&d.socket);
        conn.send(&serde_json::to_vec(&json!({"op":"register","policy":f})).unwrap());
        blocked.push(conn);
    }
    // At once: whether or not the daemon has read every registration yet, none may be evicted.
    let v = d.ask(&json!({"op":"list"}));
    assert_eq!(error_code(&v), "aegis::daemon::busy", "every connection is being answered or has a request to answer: {v}");
    // Release them: each registration reads its (invalid) policy and is answered. A FIFO can
    // be opened for writing once the daemon opened it for reading (a loaded daemon may take
    // a while to get there; how long is not what this test is about).
    for f in &fifos {
        let t = Instant::now();
        let mut w = loop {
            match std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(f) {
                Ok(w) => break w,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) && t.elapsed() < Duration::from_secs(60) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("the daemon never read {}: {e}", f.display()),
            }
        };
        w.write_all(b"version = 1\n").unwrap();
    }
    for (i, c) in blocked.iter_mut().enumerate() {
        let t = Instant::now();
        let v = c.recv().unwrap_or_else(|| panic!("registration {i} is answered (closed after {:?})", t.elapsed()));
        assert_eq!(v["ok"], false, "{v}");
    }
    assert_eq!(d.ask(&json!({"op":"list"}))["ok"], true);
}

/// Hostile peers of three kinds, each in a loop until `stop`: trickle a request one byte
/// every 300 ms (kind 0), connect and say nothing (1), send requests and never read the
/// answers (2). Dropped, they come back after `pause`.
fn hostile_peers(socket: &Path, n: usize, pause: Duration, stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    use std::sync::atomic::Ordering::Relaxed;
    (0..n)
        .map(|i| {
            let (socket, stop) = (socket.to_path_buf(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    let Ok(mut s) = UnixStream::connect(&socket) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    match i % 3 {
                        0 => {
                            for b in br#"{"op":"list"}"#.iter().cycle() {
                                if stop.load(Relaxed) || s.write_all(&[*b]).is_err() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(300));
                            }
                        }
                        1 => {
                            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                            let mut b = [0u8; 1];
                            while !stop.load(Relaxed) {
                                match s.read(&mut b) {
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                    _ => break,
                                }
                            }
                        }
                        _ => {
                            let many = b"{\"op\":\"list\"}\n".repeat(4000);
                            while !stop.load(Relaxed) && s.write_all(&many).is_ok() {}
                        }
                    }
                    std::thread::sleep(pause);
                }
            })
        })
        .collect()
}

/// A well-behaved client asks 20 times; every answer comes, promptly.
fn assert_client_is_answered(d: &Daemon) {
    let q = json!({"op":"check-exec","agent":"coding-agent","path":"/usr/bin/git"});
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let v = d.ask(&q);
        assert_eq!(v["ok"], true, "a well-behaved client is answered: {v}");
        slowest = slowest.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Not a timing benchmark: a locked-out client waits for a slot forever (or is told
    // "busy"); 10 s leaves room for a loaded CI machine.
    assert!(slowest < Duration::from_secs(10), "answered, not locked out: slowest {slowest:?}");
    let out = d.aegis(&["check-exec", "coding-agent", "/usr/bin/git"]);
    assert_eq!(out.status.code(), Some(0), "the aegis client is answered too: {}", stderr(&out));
}

/// Issue 11.11: a peer that trickles a byte at a time (the old limit was only the gap
/// between bytes), sits idle or never reads held one of the 64 slots as long as it liked, so
/// 64 of them locked everyone out. With 150 such peers (of the client's own uid, coming back
/// a second after each drop), a well-behaved client is answered every time, and a trickled
/// request is cut off `REQUEST_TIMEOUT` after its first byte.
#[test]
fn tricklers_idlers_and_non_readers_cannot_lock_a_client_out() {
    let d = Daemon::start(&[]);
    register(&d, &policy("coding-agent.toml"), json!({"WORKSPACE": "/srv/ws"}));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peers = hostile_peers(&d.socket, 150, Duration::from_secs(1), &stop);
    std::thread::sleep(Duration::from_secs(2));
    assert_client_is_answered(&d);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in peers {
        let _ = p.join();
    }

    // Alone, a trickler is cut off REQUEST_TIMEOUT after its first byte, not kept forever.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let t = Instant::now();
    let limit = aegis_daemon::server::REQUEST_TIMEOUT + Duration::from_secs(3);
    for b in br#"{"op":"list"}"#.iter().cycle() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        assert!(t.elapsed() < limit, "the trickled request was not cut off");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(t.elapsed() >= aegis_daemon::server::REQUEST_TIMEOUT - Duration::from_millis(500), "not before its time: {:?}", t.elapsed());
}

/// Entry point of the hostile group member below (a no-op in a normal test run): this test
/// binary, re-run as uid 65534 in group 4242, floods the daemon from 200 threads that come
/// back at once when dropped, for `AEGISD_TEST_FLOOD_SECS` seconds.
#[test]
fn hostile_member_entry() {
    let (Ok(socket), Ok(secs)) = (std::env::var("AEGISD_TEST_FLOOD"), std::env::var("AEGISD_TEST_FLOOD_SECS")) else {
        return;
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peers = hostile_peers(Path::new(&socket), 200, Duration::ZERO, &stop);
    std::thread::sleep(Duration::from_secs(secs.parse().unwrap()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in peers {
        let _ = p.join();
    }
}

/// A group member that reconnects as fast as it is dropped cannot take the slots from
/// others either: one uid gets at most `MAX_PER_MEMBER` of them.
#[test]
fn a_flooding_group_member_gets_only_its_share() {
    if !is_root() {
        eprintln!("SKIP: needs root to run the flood as another user");
        return;
    }
    let d = Daemon::start(&["--group", "4242"]);
    register(&d, &policy("coding-agent.toml"), json!({"WORKSPACE": "/srv/ws"}));
    let mut flood = Command::new(std::env::current_exe().unwrap());
    flood
        .args(["--exact", "hostile_member_entry", "--nocapture"])
        .env("AEGISD_TEST_FLOOD", &d.socket)
        .env("AEGISD_TEST_FLOOD_SECS", "8")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe system calls.
    unsafe {
        flood.pre_exec(|| {
            let groups = [4242 as libc::gid_t];
            if libc::setgroups(1, groups.as_ptr()) != 0 || libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut flood = flood.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(flood.try_wait().unwrap().is_none(), "the flood is running");
    assert_client_is_answered(&d);
    let _ = flood.wait();
}

// ---------------------------------------------------------------------------------------
// Socket life cycle

#[test]
fn refuses_to_replace_files_replaces_stale_sockets_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "precious").unwrap();
    let o = aegisd(dir.path()).arg("--socket").arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");

    let mut d = Daemon::start(&[]);
    // A second daemon on a live socket refuses.
    let o = aegisd(dir.path()).arg("--socket").arg(&d.socket).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("another daemon"));
    // SIGKILL leaves the socket file behind; the next start replaces it.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    assert!(d.socket.exists());
    let mut again = aegisd(dir.path()).arg("--socket").arg(&d.socket).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&d.socket).is_err() {
        assert!(again.try_wait().unwrap().is_none(), "aegisd did not replace the stale socket");
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGTERM removes it.
    // SAFETY: kill on our own child's pid.
    assert_eq!(unsafe { libc::kill(again.id() as i32, libc::SIGTERM) }, 0);
    let status = again.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!d.socket.exists());
}

#[test]
fn aegis_dir_is_created_private_and_holds_the_socket_and_the_audit_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/aegis");
    // No flags at all: the socket and the audit log go to AEGIS_DIR, made mode 0700.
    let mut child = aegisd(&dir).stderr(Stdio::piped()).spawn().unwrap();
    let socket = dir.join("aegisd.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "aegisd exited");
        assert!(Instant::now() < deadline, "aegisd did not serve {}", socket.display());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o700);
    let mut c = Conn::open(&socket);
    c.send(&serde_json::to_vec(&json!({"op":"register","policy":policy("inbox-manager.toml")})).unwrap());
    assert_eq!(c.recv().unwrap()["ok"], true);
    c.send(br#"{"op":"check-fs","agent":"inbox-manager","access":"read","path":"/etc/passwd"}"#);
    assert_eq!(c.recv().unwrap()["verdict"], "DENY");
    let log = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    assert!(log.contains("/etc/passwd"), "the answer was audited in AEGIS_DIR: {log}");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();

    // A directory others may write is refused (they could swap the socket or the log),
    // and left as it was.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = aegisd(&open).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is writable by others") && stderr(&o).contains("chmod go-w"), "{}", stderr(&o));
    assert!(!open.join("aegisd.sock").exists());
}

#[test]
fn unreachable_daemon_and_bad_arguments_have_their_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("none.sock");
    let o = aegis().arg("--socket").arg(&s).arg("list").output().unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("cannot connect to aegisd"));
    let o = aegis().arg("--socket").arg(&s).args(["check-net", "a", "h", "https"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = aegis().arg("--socket").arg(&s).args(["check-api", "a", "gmail"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    // No socket named anywhere (no flag, no AEGIS_SOCKET, no AEGIS_DIR, no HOME for its
    // default): invalid input, and the message says how to name one.
    let o = aegis().env_remove("HOME").env_remove("XDG_STATE_HOME").args(["list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("give --socket PATH, or set AEGIS_SOCKET or AEGIS_DIR"), "{}", stderr(&o));
}
