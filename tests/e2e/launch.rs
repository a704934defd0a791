//! Real launches of signed bundles with `aegis-exec`, as root and as an unprivileged user
//! ([`Who`]): every example policy that `aegis-exec` supports runs, and for a set of paths,
//! executables and endpoints the real attempt inside the sandbox agrees with `aegisc check`
//! (the reference evaluator); a proxy bundle whose credential is missing, unsigned and
//! tampered bundles and missing parameters are refused; each launch's audit log verifies and
//! records the launch. Also holds the helpers `attacks` and `benign` share ([`Lab`],
//! [`audit_events`], probes).

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aegis_tests::*;
use serde_json::Value;

/// The uid/gid the agent runs as on the host when `aegis-exec` runs as root without `sudo`
/// or `--user` (the runtime's identity rule; `SUDO_UID` is removed from its environment).
pub(crate) const AGENT_UID: u32 = 65534;

/// The unprivileged user of the rootless runs (`cloudsdk` on the development machine).
pub(crate) const TEST_USER: u32 = 1000;

/// Who runs `aegis-exec`: root (the agent is then [`AGENT_UID`]) or an unprivileged user
/// (through `setpriv`; the agent is that user).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    Root,
    User(u32),
}

/// One test's world: a key pair, a serial store, and a scratch directory outside `/tmp`.
/// Scratch lives in `/var/tmp` on purpose: the evaluator treats host paths under `/tmp` as
/// covered by the built-in `/tmp` write grant, while the sandbox's `/tmp` is a private tmpfs,
/// so parameters under the host's `/tmp` would blur the differential. For a user's lab the
/// scratch directory belongs to that user (mode 0755, as a checkout does).
pub(crate) struct Lab {
    pub tmp: tempfile::TempDir,
    pub key: PathBuf,
    pub public: PathBuf,
    pub state: PathBuf,
    pub who: Who,
}

impl Lab {
    pub fn new() -> Lab {
        Lab::with(Who::Root)
    }

    pub fn with(who: Who) -> Lab {
        let tmp = tempfile::Builder::new().prefix("aegis-e2e-").tempdir_in("/var/tmp").unwrap();
        let r = run(aegisc().arg("keygen").arg("-o").arg(tmp.path().join("k")));
        assert_eq!(r.code, 0, "keygen: {}", r.stderr);
        let state = tmp.path().join("state");
        let lab = Lab {
            key: tmp.path().join("k.key"),
            public: tmp.path().join("k.pub"),
            state,
            tmp,
            who,
        };
        if let Who::User(_) = who {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(lab.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            lab.give_to_user();
        }
        lab
    }

    /// A root lab, and (where the test user exists and `setpriv` is installed) a user's lab:
    /// the launch cases run both ways.
    pub fn each() -> Vec<Lab> {
        let mut v = vec![Lab::new()];
        // SAFETY: getpwuid returns static storage or null; only null is tested.
        let user = unsafe { !libc_getpwuid(TEST_USER).is_null() };
        if user && have("setpriv") {
            v.push(Lab::with(Who::User(TEST_USER)));
        } else {
            eprintln!("SKIP (rootless half): no user {TEST_USER} or no setpriv");
        }
        v
    }

    /// The agent's uid on the host.
    pub fn agent_uid(&self) -> u32 {
        match self.who {
            Who::Root => AGENT_UID,
            Who::User(u) => u,
        }
    }

    /// Hands everything in the scratch directory to the user running `aegis-exec`.
    pub fn give_to_user(&self) {
        if let Who::User(u) = self.who {
            let r = run(Command::new("chown").arg("-R").arg(format!("{u}:{u}")).arg(self.tmp.path()));
            assert_eq!(r.code, 0, "chown: {}", r.stderr);
        }
    }

    /// The policy to build and check: `policy` itself for root; for a user, a wrapper that
    /// extends it and makes the cgroup layer best-effort (this host's cgroups cannot be
    /// delegated to a user; the report must then say the layer is not enforced).
    pub fn policy_for(&self, policy: &Path) -> PathBuf {
        match self.who {
            Who::Root => policy.to_path_buf(),
            Who::User(_) => {
                let text = std::fs::read_to_string(policy).unwrap();
                let name = text.lines().find_map(|l| l.trim().strip_prefix("name = ")).unwrap_or("\"agent\"").trim();
                let w = self.path(&format!("{}.rootless.toml", policy.file_stem().unwrap().to_string_lossy()));
                let body = format!("version = 1\n[agent]\nname = {name}\nextends = [{:?}]\n[enforcement]\ncgroup = \"best-effort\"\n", policy.display().to_string());
                std::fs::write(&w, body).unwrap();
                w
            }
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A directory the agent owns (mode 0755), so that DAC is not what denies a write.
    pub fn agent_dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        let u = self.agent_uid();
        std::os::unix::fs::chown(&p, Some(u), Some(u)).unwrap();
        p
    }

    /// A directory only root owns (the agent may read it, never write it by DAC either).
    pub fn root_dir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `aegisc build POLICY -o <tmp>/<name> --sign-key K`: a signed bundle (of
    /// [`Lab::policy_for`] `policy`).
    pub fn build(&self, policy: &Path, name: &str) -> PathBuf {
        let out = self.path(name);
        let policy = self.policy_for(policy);
        let r = run(aegisc().arg("build").arg(&policy).arg("-o").arg(&out).arg("--sign-key").arg(&self.key));
        assert_eq!(r.code, 0, "aegisc build {}: {}", policy.display(), r.stderr);
        self.give_to_user();
        out
    }

    /// `aegis-exec` as this lab's launcher, with the serial store and a fixed PATH.
    pub fn aegis_exec(&self) -> Command {
        let mut c = match self.who {
            Who::Root => Command::new(bin("aegis-exec")),
            Who::User(u) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={u}")).arg(format!("--regid={u}")).arg("--init-groups").arg(bin("aegis-exec"));
                c
            }
        };
        // Under sudo the agent would default to the invoking user; these tests expect 65534.
        c.env_remove("SUDO_UID").env_remove("SUDO_GID");
        c.env("AEGIS_STATE_DIR", &self.state)
            // A test runner's PATH may hold anything; aegis-exec finds nft itself.
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        c
    }

    /// `aegis-exec --trust-key K --audit-log LOG --param N=V... BUNDLE -- CMD...`.
    pub fn exec_cmd(&self, bundle: &Path, params: &[(&str, &Path)], log: &Path, cmd: &[&str]) -> Command {
        self.exec_cmd_env(bundle, params, &[], log, cmd)
    }

    /// Like [`Lab::exec_cmd`], passing `env` to the agent with `--env NAME=VALUE` (the
    /// agent gets only PATH, locale and terminal variables from the host by default).
    pub fn exec_cmd_env(&self, bundle: &Path, params: &[(&str, &Path)], env: &[(&str, &str)], log: &Path, cmd: &[&str]) -> Command {
        let mut c = self.aegis_exec();
        c.arg("--trust-key")
            .arg(&self.public)
            .arg("--audit-log")
            .arg(log);
        for (k, v) in params {
            c.arg("--param").arg(format!("{k}={}", v.display()));
        }
        for (k, v) in env {
            c.arg("--env").arg(format!("{k}={v}"));
        }
        c.arg(bundle).arg("--").args(cmd);
        c
    }

    pub fn exec(&self, bundle: &Path, params: &[(&str, &Path)], log: &Path, cmd: &[&str]) -> Run {
        run_for(&mut self.exec_cmd(bundle, params, log, cmd), Duration::from_secs(60))
    }
}

pub(crate) use aegis_tests::run_for;

/// The audit log's events, after `aegis-audit verify` accepted the chain.
pub(crate) fn audit_events(log: &Path) -> Vec<Value> {
    let v = run(Command::new(bin("aegis-audit")).arg("verify").arg(log));
    assert_eq!(v.code, 0, "aegis-audit verify {}: {}{}", log.display(), v.stdout, v.stderr);
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
        .collect()
}

pub(crate) fn kinds(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["kind"].as_str().unwrap_or("?").to_string()).collect()
}

/// Asserts the log verifies and holds one complete launch, in order, with every layer but the
/// cgroup fully enforced; returns its events.
pub(crate) fn assert_launch_recorded(log: &Path) -> Vec<Value> {
    let events = audit_events(log);
    let k = kinds(&events);
    let pos = |kind: &str| k.iter().position(|x| x == kind).unwrap_or_else(|| panic!("no {kind} in the audit log: {k:?}"));
    let (v, r, s, x) = (pos("bundle_verified"), pos("enforcement_report"), pos("agent_started"), pos("agent_exited"));
    assert!(v < r && r < s && s < x, "launch events out of order: {k:?}");
    let report = &events[r];
    for layer in ["verify", "namespaces", "capabilities", "no_new_privs", "landlock", "seccomp", "nftables"] {
        let l = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == layer);
        let l = l.unwrap_or_else(|| panic!("layer {layer} missing from the enforcement report: {report}"));
        assert_eq!(l["status"], "fully", "layer {layer}: {l}");
    }
    events
}

/// The report and `agent_started` say who the agent ran as; a user's launch says the cgroup
/// layer is not enforced here, and why.
pub(crate) fn assert_identity(lab: &Lab, events: &[Value]) {
    let started = events.iter().find(|e| e["kind"] == "agent_started").unwrap();
    assert_eq!(started["identity"]["uid"], lab.agent_uid(), "{started}");
    let report = events.iter().find(|e| e["kind"] == "enforcement_report").unwrap();
    if let Who::User(u) = lab.who {
        assert_eq!(started["identity"]["launched_by_uid"], u, "{started}");
        let cg = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "cgroup").unwrap();
        assert_eq!(cg["status"], "not_enforced", "{cg}");
        // No delegated cgroup v2 subtree for this user here: the report says why and the fix.
        let why = cg["detail"].as_str().unwrap();
        assert!(
            why.contains(&format!("no cgroup uid {u} may create limits in"))
                && (why.contains("systemd-run --user --scope") || why.contains("cgroup v1")),
            "the report says why and how to fix it: {cg}"
        );
    }
}

/// The probe script (tests/fixtures/e2e/probe.py), passed to `python3 -c`.
pub(crate) fn probe_script() -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures/e2e/probe.py")).unwrap()
}

/// A loopback TCP listener that greets every connection, and a UDP echo, on one port each.
pub(crate) struct Listeners {
    pub tcp: u16,
    pub udp: u16,
    pub tcp6: Option<u16>,
}

pub(crate) fn tcp_greeter(l: TcpListener) {
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            use std::io::Write as _;
            let _ = c.write_all(b"hello\n");
        }
    });
}

pub(crate) fn udp_echo(u: UdpSocket) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    });
}

pub(crate) fn listeners() -> Listeners {
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp, udp) = (t.local_addr().unwrap().port(), u.local_addr().unwrap().port());
    tcp_greeter(t);
    udp_echo(u);
    let tcp6 = TcpListener::bind("[::1]:0").ok().map(|l| {
        let p = l.local_addr().unwrap().port();
        tcp_greeter(l);
        p
    });
    Listeners { tcp, udp, tcp6 }
}

/// One probe: its JSON form for probe.py and its `aegisc check` query.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub json: Value,
    pub query: Vec<String>,
}

pub(crate) fn read(p: &Path) -> Probe {
    let s = p.display().to_string();
    Probe { json: serde_json::json!(["read", s]), query: vec!["fs".into(), "read".into(), s] }
}

pub(crate) fn write(p: &Path) -> Probe {
    let s = p.display().to_string();
    Probe { json: serde_json::json!(["write", s]), query: vec!["fs".into(), "write".into(), s] }
}

pub(crate) fn exec(argv: &[&str]) -> Probe {
    let mut j = vec![Value::from("exec")];
    j.extend(argv.iter().map(|a| Value::from(*a)));
    Probe { json: Value::Array(j), query: vec!["exec".into(), argv[0].into()] }
}

pub(crate) fn net(proto: &str, host: &str, port: u16) -> Probe {
    Probe {
        json: serde_json::json!([proto, host, port]),
        query: vec!["net".into(), host.into(), port.to_string(), proto.into()],
    }
}

/// `aegisc check` on each probe: true when allowed.
pub(crate) fn evaluator(policy: &Path, params: &[(&str, &Path)], probes: &[Probe]) -> Vec<(bool, String)> {
    probes
        .iter()
        .map(|p| {
            let mut c = aegisc();
            c.arg("check").arg(policy);
            for (k, v) in params {
                c.arg("--param").arg(format!("{k}={}", v.display()));
            }
            let r = run(c.args(&p.query));
            assert!(r.code == 0 || r.code == 1, "aegisc check {:?}: exit {}: {}{}", p.query, r.code, r.stdout, r.stderr);
            (r.code == 0, r.stdout.trim().to_string())
        })
        .collect()
}

/// Runs every probe in one sandboxed python3 and returns each outcome ("ok" or "ERR ...").
pub(crate) fn sandbox(lab: &Lab, bundle: &Path, params: &[(&str, &Path)], log: &Path, probes: &[Probe]) -> Vec<String> {
    let list = Value::Array(probes.iter().map(|p| p.json.clone()).collect()).to_string();
    let script = probe_script();
    let r = lab.exec(bundle, params, log, &["/usr/bin/python3", "-c", &script, &list]);
    assert_eq!(r.code, 0, "the probe agent failed: exit {}\n{}\n{}", r.code, r.stdout, r.stderr);
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("probe output {e}: {}\n{}", r.stdout, r.stderr));
    (0..probes.len()).map(|i| out[i.to_string()].as_str().unwrap().to_string()).collect()
}

/// Builds, launches, and asserts that each probe's real outcome agrees with `aegisc check`.
/// Returns the outcomes (for assertions on the errno) and the audit events.
pub(crate) fn differential(lab: &Lab, policy: &Path, params: &[(&str, &Path)], probes: &[Probe]) -> (Vec<String>, Vec<Value>) {
    let name = policy.file_stem().unwrap().to_string_lossy().into_owned();
    let bundle = lab.build(policy, &format!("bundle-{name}"));
    let log = lab.path(&format!("{name}.audit.log"));
    let expected = evaluator(&lab.policy_for(policy), params, probes);
    let actual = sandbox(lab, &bundle, params, &log, probes);
    let mut table = String::new();
    let mut disagree = Vec::new();
    for ((p, (allow, why)), got) in probes.iter().zip(&expected).zip(&actual) {
        let ok = got == "ok";
        table.push_str(&format!("  {:<5} {:<5} {:?}: {got}\n", if *allow { "ALLOW" } else { "DENY" }, if ok { "ok" } else { "fail" }, p.query));
        if ok != *allow {
            disagree.push(format!("{:?}: aegisc check says `{why}`, the sandbox says {got}", p.query));
        }
    }
    eprintln!("{name} ({:?}): evaluator vs sandbox\n{table}", lab.who);
    assert!(disagree.is_empty(), "{name} ({:?}): the sandbox disagrees with aegisc check:\n{}", lab.who, disagree.join("\n"));
    let events = assert_launch_recorded(&log);
    assert_identity(lab, &events);
    (actual, events)
}

/// False (after printing why) unless this is root with python3 and nft: the caller returns.
pub(crate) fn sandbox_ready() -> bool {
    let why = if !is_root() {
        "needs root: aegis-exec creates cgroups, namespaces and nftables tables"
    } else if !Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3 is missing (the probe agent is a python script)"
    } else if !have("nft") && !Path::new("/usr/sbin/nft").exists() {
        "nft is missing (host-mode bundles need nftables)"
    } else {
        return true;
    };
    eprintln!("SKIP: {why}");
    false
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/e2e").join(name)
}

pub(crate) fn policy(name: &str) -> PathBuf {
    repo_root().join("policies").join(name)
}

pub(crate) fn put(p: &Path, text: &str, owner: Option<u32>) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
    if let Some(u) = owner {
        std::os::unix::fs::chown(p, Some(u), Some(u)).unwrap();
    }
}

pub(crate) fn is_err(got: &str, errno: &[&str]) -> bool {
    errno.iter().any(|e| got.starts_with(&format!("ERR {e}")))
}

#[test]
fn data_analyst_sandbox_agrees_with_aegisc_check() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let ds = lab.root_dir("dataset");
        let out = lab.agent_dir("reports");
        put(&ds.join("sales.csv"), "region,total\nnorth,10\n", None);
        put(&ds.join("raw-pii/people.csv"), "name,ssn\n", None);
        let l = listeners();
        let params = [("DATASET", ds.as_path()), ("OUTPUT", out.as_path())];
        let mut probes = vec![
            read(&ds.join("sales.csv")),
            // (listing ${DATASET} itself: see the ignored test below)
            read(&ds.join("raw-pii/people.csv")),
            read(&ds.join("raw-pii")),
            read(Path::new("/usr/lib/os-release")),
            read(Path::new("/etc/passwd")),
            read(Path::new("/etc/hostname")),
            read(lab.tmp.path()),
            write(&out.join("report.txt")),
            write(&ds.join("injected.csv")),
            write(Path::new("/usr/evil")),
            write(Path::new("/tmp/scratch")),
            exec(&["/usr/bin/python3", "-c", "pass"]),
            exec(&["/usr/bin/id"]),
            exec(&["/usr/bin/dash", "-c", "true"]),
            exec(&["/bin/sh", "-c", "true"]),
            net("tcp", "127.0.0.1", l.tcp),
            net("udp", "127.0.0.1", l.udp),
        ];
        if let Some(p6) = l.tcp6 {
            probes.push(net("tcp", "::1", p6));
        }
        let (got, events) = differential(&lab, &policy("data-analyst.toml"), &params, &probes);
        // Layer by layer: the denied dataset subtree is a mask (EACCES), the dataset is read-only
        // (EROFS), an ungranted binary is refused by Landlock/noexec (EACCES), the other port by
        // Landlock (EACCES) and UDP by nftables (EPERM).
        assert!(is_err(&got[1], &["EACCES"]), "raw-pii file: {}", got[1]);
        assert!(is_err(&got[8], &["EROFS", "EACCES"]), "write into the dataset: {}", got[8]);
        assert!(is_err(&got[12], &["EACCES"]), "exec id: {}", got[12]);
        assert!(is_err(&got[15], &["EACCES", "EPERM", "timeout"]), "tcp: {}", got[15]);
        assert!(std::fs::metadata(out.join("report.txt")).is_ok(), "the allowed write reached the host");
        assert!(std::fs::metadata(ds.join("injected.csv")).is_err());
        let exited = events.iter().find(|e| e["kind"] == "agent_exited").unwrap();
        assert_eq!(exited["status"], 0, "{exited}");
    }
}

#[test]
fn coding_agent_sandbox_agrees_with_aegisc_check() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let ws = lab.agent_dir("repo");
        put(&ws.join("src/main.py"), "print('hi')\n", Some(lab.agent_uid()));
        put(&ws.join(".env"), "TOKEN=hunter2\n", Some(lab.agent_uid()));
        put(&ws.join(".git/hooks/pre-commit"), "#!/bin/sh\n", Some(lab.agent_uid()));
        for d in ["src", ".git", ".git/hooks"] {
            std::os::unix::fs::chown(ws.join(d), Some(lab.agent_uid()), Some(lab.agent_uid())).unwrap();
        }
        let l = listeners();
        let params = [("WORKSPACE", ws.as_path())];
        let probes = vec![
            read(&ws.join("src/main.py")),
            read(&ws.join(".env")),
            read(&ws.join(".git/hooks/pre-commit")),
            read(Path::new("/etc/hosts")),
            read(Path::new("/etc/shadow")),
            read(Path::new("/etc/passwd")),
            read(Path::new("/root")),
            // A new file in an existing subdirectory.
            write(&ws.join("src/new.py")),
            write(&ws.join("src/main.py")),
            write(&ws.join(".git/hooks/post-checkout")),
            write(Path::new("/etc/evil")),
            write(Path::new("/usr/lib/evil")),
            exec(&["/usr/bin/git", "--version"]),
            exec(&["/usr/bin/python3", "-c", "pass"]),
            exec(&["/usr/bin/dash", "-c", "true"]),
            exec(&["/usr/bin/id"]),
            exec(&["/usr/bin/perl", "-e", "1"]),
            net("tcp", "127.0.0.1", l.tcp),
            net("udp", "127.0.0.1", l.udp),
            net("tcp", "127.0.0.1", 443),
        ];
        let (got, _) = differential(&lab, &policy("coding-agent.toml"), &params, &probes);
        assert!(is_err(&got[1], &["EACCES"]), ".env is masked: {}", got[1]);
        // `.git/hooks` is a built-in protection: readable, not writable (check says so too).
        assert_eq!(got[2], "ok", "hooks stay readable: {}", got[2]);
        assert!(is_err(&got[9], &["EROFS"]), "hooks are read-only: {}", got[9]);
        assert_eq!(std::fs::read_to_string(ws.join(".env")).unwrap(), "TOKEN=hunter2\n");
    }
}

/// With the mount plan applied, a denied directory inside a grant (data-analyst's
/// `${DATASET}/raw-pii`) is masked, and Landlock, applied after the agent switched to its
/// unprivileged uid, still recognises the mode-000 read-only mask and keeps the grant whole:
/// the workspace root and `.git/` stay writable and the dataset listable, as `aegisc check`
/// says. (Regression test: the mask used to be unrecognised and the grant split.)
///
/// The denied paths exist at launch here: a denied path that is absent cannot be masked, and
/// Landlock then splits its parent (the stricter reading the loss report states).
#[test]
fn a_masked_denied_directory_does_not_split_its_grant() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let ws = lab.agent_dir("repo");
        put(&ws.join(".git/hooks/pre-commit"), "#!/bin/sh\n", Some(lab.agent_uid()));
        put(&ws.join(".env"), "TOKEN=secret\n", Some(lab.agent_uid()));
        for d in [".git", ".git/hooks"] {
            std::os::unix::fs::chown(ws.join(d), Some(lab.agent_uid()), Some(lab.agent_uid())).unwrap();
        }
        let params = [("WORKSPACE", ws.as_path())];
        let probes = vec![write(&ws.join("new.txt")), write(&ws.join(".git/index.lock"))];
        differential(&lab, &policy("coding-agent.toml"), &params, &probes);
        let ds = lab.root_dir("dataset");
        let out = lab.agent_dir("reports");
        put(&ds.join("raw-pii/people.csv"), "name\n", None);
        let params = [("DATASET", ds.as_path()), ("OUTPUT", out.as_path())];
        differential(&lab, &policy("data-analyst.toml"), &params, &[read(&ds)]);
    }
}

#[test]
fn network_none_sandbox_agrees_with_aegisc_check() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let data = lab.root_dir("data");
        let out = lab.agent_dir("out");
        put(&data.join("in.txt"), "input\n", None);
        put(&data.join("private/key.pem"), "-----BEGIN-----\n", None);
        let l = listeners();
        let params = [("DATA", data.as_path()), ("OUT", out.as_path())];
        let mut probes = vec![
            read(&data.join("in.txt")),
            read(&data.join("private/key.pem")),
            write(&out.join("result.txt")),
            write(&data.join("x")),
            exec(&["/usr/bin/cat", &data.join("in.txt").display().to_string()]),
            exec(&["/usr/bin/dash", "-c", "true"]),
            exec(&["/usr/bin/id"]),
            net("tcp", "127.0.0.1", l.tcp),
            net("udp", "127.0.0.1", l.udp),
        ];
        if let Some(p6) = l.tcp6 {
            probes.push(net("tcp", "::1", p6));
        }
        let (got, _) = differential(&lab, &fixture("probe-none.toml"), &params, &probes);
        // In its own network namespace the host's listeners do not exist, and the ruleset loaded
        // there drops the attempt (EPERM) before it could even be refused.
        assert!(is_err(&got[7], &["EPERM", "ECONNREFUSED", "EACCES"]), "tcp in netns: {}", got[7]);
        assert_eq!(std::fs::read_to_string(data.join("in.txt")).unwrap(), "input\n");
    }
}

#[test]
fn a_proxy_mode_launch_whose_credential_is_missing_is_refused_before_the_agent_runs() {
    if !sandbox_ready() {
        return;
    }
    // The test process has no GMAIL_TOKEN: the proxy could not inject the credential the
    // policy names, so the launch stops (exit 125) instead of running a half-working agent.
    assert!(std::env::var_os("GMAIL_TOKEN").is_none(), "the test environment must not set GMAIL_TOKEN");
    for lab in Lab::each() {
        let app = lab.root_dir("app");
        let state = lab.agent_dir("state");
        let bundle = lab.build(&policy("inbox-manager.toml"), "bundle-inbox");
        let log = lab.path("inbox.log");
        let marker = lab.path("inbox.ran");
        let cmd = format!("echo ran > {}", marker.display());
        let params = vec![("APP", app.as_path()), ("STATE", state.as_path())];
        let r = lab.exec(&bundle, &params, &log, &["/usr/bin/python3", "-c", &format!("import os; os.system({cmd:?})")]);
        assert_eq!(r.code, 125, "{}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("GMAIL_TOKEN"), "the refusal names the missing variable: {}", r.stderr);
        assert!(!marker.exists(), "the agent ran");
        let k = kinds(&audit_events(&log));
        assert!(!k.contains(&"agent_started".to_string()), "{k:?}");
        assert!(k.contains(&"note".to_string()), "the refusal is audited: {k:?}");
    }
}

/// `aegis-exec doctor` on a proxy bundle says which credential the launch will need and
/// whether it is there now (a missing one refuses the launch, as the test above shows).
#[test]
fn doctor_names_the_credentials_a_proxy_bundle_needs() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.build(&policy("inbox-manager.toml"), "bundle-doctor");
    let doctor = |token: Option<&str>| {
        let mut c = Command::new(bin("aegis-exec"));
        c.arg("doctor").arg(&bundle).env_remove("GMAIL_TOKEN");
        if let Some(t) = token {
            c.env("GMAIL_TOKEN", t);
        }
        run(&mut c)
    };
    let without = doctor(None);
    assert_eq!(without.code, 0, "{}", without.stderr);
    assert!(without.stdout.contains("inbox-manager: can run; api 'gmail' needs $GMAIL_TOKEN in aegis-exec's environment (NOT set now)"), "{}", without.stdout);
    let with = doctor(Some("t0ken"));
    assert!(with.stdout.contains("$GMAIL_TOKEN in aegis-exec's environment (set now)"), "{}", with.stdout);
    assert!(!with.stdout.contains("t0ken"), "the secret itself is never printed");
}

#[test]
fn unsigned_tampered_and_incomplete_launches_are_refused() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let out = lab.agent_dir("out");
        let data = lab.root_dir("data");
        let params = [("DATA", data.as_path()), ("OUT", out.as_path())];
        let pol = fixture("probe-none.toml");
        let marker = out.join("ran");
        let touch = format!("open({:?}, 'w').write('x')", marker.display().to_string());
        let cmd = ["/usr/bin/python3", "-c", touch.as_str()];

        // Unsigned: refused with a trust key, accepted (and audited) only with --allow-unsigned.
        let unsigned = lab.path("unsigned");
        let r = run(aegisc().arg("build").arg(lab.policy_for(&pol)).arg("-o").arg(&unsigned));
        assert_eq!(r.code, 0, "{}", r.stderr);
        lab.give_to_user();
        let log = lab.path("unsigned.log");
        let r = lab.exec(&unsigned, &params, &log, &cmd);
        assert_eq!(r.code, 125, "unsigned bundle with --trust-key: {}", r.stderr);
        assert!(!marker.exists());
        assert!(kinds(&audit_events(&log)).contains(&"bundle_refused".to_string()));
        let mut c = lab.aegis_exec();
        c.arg("--allow-unsigned").arg("--audit-log").arg(&log);
        for (k, v) in &params {
            c.arg("--param").arg(format!("{k}={}", v.display()));
        }
        let r = run_for(c.arg(&unsigned).arg("--").args(cmd), Duration::from_secs(60));
        assert_eq!(r.code, 0, "--allow-unsigned: {}", r.stderr);
        assert!(marker.exists());
        std::fs::remove_file(&marker).unwrap();
        let k = kinds(&audit_events(&log));
        assert!(k.contains(&"unsigned_bundle_allowed".to_string()), "the choice is audited: {k:?}");
        let report = audit_events(&log).into_iter().find(|e| e["kind"] == "enforcement_report").unwrap();
        let verify = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "verify").unwrap().clone();
        assert_eq!(verify["status"], "partially", "{verify}");

        // Tampered: one byte of the Landlock ruleset flipped after signing.
        let signed = lab.build(&pol, "signed");
        let log = lab.path("tampered.log");
        let ll = signed.join("landlock.json");
        let mut bytes = std::fs::read(&ll).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x20;
        std::fs::write(&ll, &bytes).unwrap();
        let r = lab.exec(&signed, &params, &log, &cmd);
        assert_eq!(r.code, 125, "tampered bundle: {}", r.stderr);
        assert!(r.stderr.contains("landlock.json"), "the refusal names the file: {}", r.stderr);
        assert!(!marker.exists());
        assert!(kinds(&audit_events(&log)).contains(&"bundle_refused".to_string()));
        bytes[i] ^= 0x20;
        std::fs::write(&ll, &bytes).unwrap();

        // Parameters: missing, relative, nonexistent, undeclared.
        let missing = [("DATA", data.as_path())];
        let nowhere = lab.path("nowhere");
        let undeclared = [("DATA", data.as_path()), ("OUT", out.as_path()), ("EXTRA", out.as_path())];
        for (what, p) in [
            ("missing OUT", &missing[..]),
            ("relative OUT", &[("DATA", data.as_path()), ("OUT", Path::new("out"))][..]),
            ("nonexistent OUT", &[("DATA", data.as_path()), ("OUT", nowhere.as_path())][..]),
            ("undeclared EXTRA", &undeclared[..]),
        ] {
            let log = lab.path("params.log");
            let r = lab.exec(&signed, p, &log, &cmd);
            assert_eq!(r.code, 125, "{what}: {}", r.stderr);
            assert!(!marker.exists(), "{what}: the agent ran");
        }
        // The intact, signed bundle with its parameters runs.
        let r = lab.exec(&signed, &params, &lab.path("ok.log"), &cmd);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(marker.exists());
        assert_launch_recorded(&lab.path("ok.log"));
    }
}

/// A parameter directory under the host's `/tmp` is bind-mounted read-only over the
/// sandbox's private `/tmp`: writing into it fails with EROFS, and `aegisc check` agrees (the
/// built-in `/tmp` write grant does not reach inside a parameter bound there).
#[test]
fn a_read_only_parameter_under_tmp_is_read_only_for_the_evaluator_too() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let host_tmp = tempfile::Builder::new().prefix("aegis-e2e-").tempdir_in("/tmp").unwrap();
        let ds = host_tmp.path().join("dataset");
        std::fs::create_dir(&ds).unwrap();
        let out = lab.agent_dir("reports");
        let params = [("DATASET", ds.as_path()), ("OUTPUT", out.as_path())];
        differential(&lab, &policy("data-analyst.toml"), &params, &[write(&ds.join("x.csv"))]);
    }
}

/// `aegisc explain-syscall POLICY NR ARGS...` (the seccomp filter in the emulator): the errno
/// the filter answers, or None for ALLOW.
fn filter_verdict(policy: &Path, nr: u64, args: &[u64]) -> Option<i64> {
    let r = run(aegisc().arg("explain-syscall").arg(policy).arg(nr.to_string()).args(args.iter().map(|a| format!("{a:#x}"))));
    assert!(r.code == 0 || r.code == 1, "explain-syscall {nr}: {}{}", r.stdout, r.stderr);
    let line = r.stdout.lines().find(|l| l.contains("filter answers")).unwrap_or_else(|| panic!("{}", r.stdout));
    if line.contains("answers ALLOW") {
        return None;
    }
    let n = line.split("ERRNO(").nth(1).and_then(|s| s.split(')').next()).unwrap_or_else(|| panic!("unexpected verdict: {line}"));
    Some(n.parse().unwrap())
}

/// The seccomp layer, differentially: each raw syscall made inside the sandbox fails with
/// exactly the errno the filter answers in `aegisc explain-syscall`, and the ones it allows
/// succeed (arguments are chosen so that an allowed call cannot fail).
#[test]
fn seccomp_layer_agrees_with_aegisc_explain_syscall() {
    if !sandbox_ready() {
        return;
    }
    // (name, nr, args). Null pointers: a call the filter wrongly allowed would say EFAULT.
    let calls: &[(&str, u64, &[u64])] = &[
        ("getpid", 39, &[]),
        ("personality_query", 135, &[0xffff_ffff]),
        ("socket_inet_stream", 41, &[2, 1, 0]),
        ("ptrace_attach_1", 101, &[16, 1, 0, 0]),
        ("io_uring_setup", 425, &[8, 0]),
        ("unshare_user", 272, &[0x1000_0000]),
        ("mount", 165, &[0, 0, 0, 0, 0]),
        ("bpf", 321, &[0, 0, 0]),
        ("kexec_load", 246, &[0, 0, 0, 0]),
        ("keyctl", 250, &[0, 0]),
        ("chroot", 161, &[0]),
        ("clone3", 435, &[0, 0]),
        ("x32_getpid", 0x4000_0000 | 39, &[]),
        ("socket_netlink_audit", 41, &[16, 3, 9]),
        ("ioctl_tiocsti_high_bits", 16, &[0, 0xffff_ffff_0000_5412, 0]),
    ];
    let script = r#"
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
out = []
for nr, args in json.loads(sys.argv[1]):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_ulong(a) for a in args])
    out.append(-ctypes.get_errno() if r < 0 else 0)
print(json.dumps(out))
"#;
    let list = Value::Array(calls.iter().map(|(_, nr, a)| serde_json::json!([nr, a])).collect()).to_string();
    for name in ["data-analyst.toml", "coding-agent.toml"] {
        let lab = Lab::new();
        let pol = policy(name);
        let bundle = lab.build(&pol, "bundle");
        let log = lab.path("audit.log");
        let ws = lab.agent_dir("ws");
        let ro = lab.root_dir("ro");
        let params: Vec<(&str, &Path)> = if name == "coding-agent.toml" { vec![("WORKSPACE", ws.as_path())] } else { vec![("DATASET", ro.as_path()), ("OUTPUT", ws.as_path())] };
        let r = lab.exec(&bundle, &params, &log, &["/usr/bin/python3", "-c", script, &list]);
        assert_eq!(r.code, 0, "{name}: {}\n{}", r.stdout, r.stderr);
        let got: Vec<i64> = serde_json::from_str(r.stdout.trim()).unwrap();
        let mut bad = Vec::new();
        let mut table = String::new();
        for ((call, nr, args), got) in calls.iter().zip(&got) {
            let want = filter_verdict(&pol, *nr, args);
            table.push_str(&format!("  {call:<24} filter {:<8} sandbox {}\n", want.map_or("ALLOW".into(), |e| format!("errno {e}")), if *got == 0 { "ok".into() } else { format!("errno {}", -got) }));
            let agrees = match want {
                Some(e) => *got == -e,
                None => *got == 0,
            };
            if !agrees {
                bad.push(format!("{call}: filter {want:?}, sandbox {got}"));
            }
        }
        eprintln!("{name}: explain-syscall vs sandbox\n{table}");
        assert!(bad.is_empty(), "{name}: the installed filter disagrees with explain-syscall: {bad:?}");
        assert_launch_recorded(&log);
    }
}

unsafe extern "C" {
    #[link_name = "getpwuid"]
    fn libc_getpwuid(uid: u32) -> *const std::ffi::c_void;
}
