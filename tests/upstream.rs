//! An isolated upstream network for the proxy tests. Input: a name (for messages). Output: an
//! [`Upstream`]: a fresh network namespace (`aegis-up-<pid>-<n>`) joined to the host by a veth
//! pair on its own /29 (`10.233.X.1` on the host, `10.233.X.2` and `.3` inside) and /64
//! (`fd00:a3:0:X::1` and `::2`), a test CA and two
//! server certificates (one for the API hosts, one for every other name the tests use) (generated with the `openssl` CLI into
//! a temporary directory), and the test servers of `tests/fixtures/proxy/server.py` running
//! inside the namespace (`ip netns exec`), listening on 443 and 8443 (TLS), 80 (plain) and
//! any raw TCP echo ports asked for.
//! Invariants: X is claimed atomically (creating the host-side link `aegupXh` fails if another
//! test or process holds X), so tests run in parallel; nothing is routed off the machine and
//! nothing touches `/etc/hosts` (names reach the upstream through `aegis-exec --resolve`);
//! `Drop` kills the servers and deletes the veth pair and the namespace, also on panic; the
//! servers also die with the test's thread, and namespaces of dead test processes are deleted
//! by the next run.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{have, is_root, repo_root};

/// Host names the API certificate covers: the servers present it for these names (by SNI)
/// and the general one for every other. `cdn.example.com` is a front end that also holds the
/// APIs' certificate (domain fronting by certificate).
pub const API_CERT_NAMES: &[&str] = &["gmail.googleapis.com", "files.example.net", "plainapi.example.org", "cdn.example.com"];

/// The API hosts of the test policy: pinned to [`Upstream::ip`]; every other name to
/// [`Upstream::ip_alt`], so a tunnel host shares neither address nor certificate with an API
/// unless a test makes it.
pub const API_HOSTS: &[&str] = &["gmail.googleapis.com", "files.example.net", "plainapi.example.org", "nocert.example.org"];

/// Host names the general server certificate covers (the tests pin each one to the upstream
/// with `--resolve`). Wildcards cover exactly one label, as in every TLS client.
pub const CERT_NAMES: &[&str] = &[
    "en.wikipedia.org",
    "*.wikimedia.org",
    "arxiv.org",
    "export.arxiv.org",
    "docs.python.org",
    "example.com",
    "*.example.com",
    "example.com.evil.com",
    "evilexample.com",
    "evil.test",
    "git.example.org",
];

/// The test PKI of one upstream: a CA (what `aegis-exec --upstream-ca` trusts) and the server
/// certificate and key it signed.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate for [`API_CERT_NAMES`] and its key.
    pub api_cert: PathBuf,
    pub api_key: PathBuf,
}

/// One isolated upstream network with its servers; see the module doc.
pub struct Upstream {
    pub name: String,
    /// X in 10.233.X.0/29.
    pub index: u8,
    /// The servers' address (inside the namespace): where the API hosts are pinned.
    pub ip: Ipv4Addr,
    /// A second address of the same servers: where every other name is pinned.
    pub ip_alt: Ipv4Addr,
    /// The host's end of the veth pair.
    pub host_ip: Ipv4Addr,
    /// The servers' IPv6 address (`fd00:a3:0:X::2`, unique local; the host has `::1`).
    pub ip6: Ipv6Addr,
    pub netns: String,
    pub pki: Pki,
    /// Scratch: certificates, server configuration, the request log, server stderr.
    pub dir: tempfile::TempDir,
    veth: Option<String>,
    servers: Vec<Child>,
}

/// What [`Upstream::serve`] runs.
#[derive(Default)]
pub struct Serve<'a> {
    /// `(host, header, value)`: the host answers 401 unless a request carries exactly this.
    pub credentials: Vec<(&'a str, &'a str, String)>,
    /// Directory served under `/repo.git/...` (e.g. a bare repository after
    /// `git update-server-info`), for any host.
    pub static_dir: Option<PathBuf>,
    /// Extra raw TCP echo listeners (greeting `echo PORT`, then each line echoed).
    pub echo_ports: Vec<u16>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why upstreams cannot be made here, or None when they can.
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("needs root: the upstream is a network namespace with a veth pair".into());
    }
    for tool in ["ip", "openssl"] {
        if !have(tool) && !Path::new("/usr/sbin").join(tool).exists() && !Path::new("/usr/bin").join(tool).exists() {
            return Some(format!("`{tool}` is missing (iproute2 / openssl)"));
        }
    }
    if !Path::new("/usr/bin/python3").exists() {
        return Some("/usr/bin/python3 is missing (the test servers are Python)".into());
    }
    None
}

fn ip_cmd() -> Command {
    let mut c = Command::new(if Path::new("/usr/sbin/ip").exists() { "/usr/sbin/ip" } else { "ip" });
    c.stdin(Stdio::null());
    c
}

fn must(c: &mut Command, what: &str) {
    let o = c.output().unwrap_or_else(|e| panic!("{what}: {c:?}: {e}"));
    assert!(o.status.success(), "{what}: {c:?}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

unsafe extern "C" {
    fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
}

const PR_SET_PDEATHSIG: i32 = 1;
const SIGKILL: u64 = 9;

/// Deletes upstream namespaces left by test processes that no longer exist (killed before
/// their `Drop` ran); deleting a namespace also deletes its veth pair. Runs once per process.
fn remove_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("aegis-up-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip_cmd().args(["netns", "del", &name]).stderr(Stdio::null()).status();
            }
        }
    });
}

impl Upstream {
    /// Creates the namespace, the veth pair and the PKI (no servers yet: see [`Upstream::serve`]).
    pub fn start(name: &str) -> Upstream {
        remove_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let dir = tempfile::Builder::new().prefix(&format!("aegis-up-{name}-")).tempdir_in("/var/tmp").unwrap();
        let netns = format!("aegis-up-{pid}-{n}");
        must(ip_cmd().args(["netns", "add", &netns]), "create the upstream namespace");
        let mut up = Upstream {
            name: name.to_string(),
            index: 0,
            ip: Ipv4Addr::UNSPECIFIED,
            ip_alt: Ipv4Addr::UNSPECIFIED,
            host_ip: Ipv4Addr::UNSPECIFIED,
            ip6: Ipv6Addr::UNSPECIFIED,
            netns,
            pki: Pki { ca: PathBuf::new(), cert: PathBuf::new(), key: PathBuf::new(), api_cert: PathBuf::new(), api_key: PathBuf::new() },
            dir,
            veth: None,
            servers: Vec::new(),
        };
        // Claim an X: the link name is the lock, so parallel tests and processes never share
        // a subnet. Start at a pid-dependent place to make collisions rare.
        let first = (pid.wrapping_mul(37).wrapping_add(n * 7)) % 250;
        for k in 0..250u32 {
            let x = ((first + k) % 250 + 1) as u8;
            let (h, p) = (format!("aegup{x}h"), format!("aegup{x}n"));
            let o = ip_cmd().args(["link", "add", &h, "type", "veth", "peer", "name", &p]).output().unwrap();
            if o.status.success() {
                up.veth = Some(h);
                up.index = x;
                break;
            }
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("exists"), "ip link add {h}: {err}");
        }
        let x = up.index;
        assert!(x != 0, "no free 10.233.X.0/30 subnet (250 upstreams exist?)");
        up.host_ip = Ipv4Addr::new(10, 233, x, 1);
        up.ip = Ipv4Addr::new(10, 233, x, 2);
        up.ip_alt = Ipv4Addr::new(10, 233, x, 3);
        let (h, p) = (format!("aegup{x}h"), format!("aegup{x}n"));
        let ns = up.netns.clone();
        must(ip_cmd().args(["link", "set", &p, "netns", &ns]), "move the veth peer");
        must(ip_cmd().args(["addr", "add", &format!("{}/29", up.host_ip), "dev", &h]), "host address");
        must(ip_cmd().args(["link", "set", &h, "up"]), "host link up");
        must(ip_cmd().args(["-n", &ns, "addr", "add", &format!("{}/29", up.ip), "dev", &p]), "upstream address");
        must(ip_cmd().args(["-n", &ns, "addr", "add", &format!("{}/29", up.ip_alt), "dev", &p]), "upstream second address");
        must(ip_cmd().args(["-n", &ns, "link", "set", &p, "up"]), "upstream link up");
        must(ip_cmd().args(["-n", &ns, "link", "set", "lo", "up"]), "upstream loopback up");
        // IPv6 too (no duplicate address detection: the link is ours alone).
        up.ip6 = Ipv6Addr::new(0xfd00, 0xa3, 0, u16::from(x), 0, 0, 0, 2);
        let host6 = Ipv6Addr::new(0xfd00, 0xa3, 0, u16::from(x), 0, 0, 0, 1);
        must(ip_cmd().args(["-6", "addr", "add", &format!("{host6}/64"), "dev", &h, "nodad"]), "host IPv6 address");
        must(ip_cmd().args(["-n", &ns, "-6", "addr", "add", &format!("{}/64", up.ip6), "dev", &p, "nodad"]), "upstream IPv6 address");
        up.pki = make_pki(up.dir.path(), up.ip, up.ip6);
        up
    }

    /// A command run inside the upstream namespace.
    pub fn exec(&self, argv: &[&str]) -> Command {
        let mut c = ip_cmd();
        c.args(["netns", "exec", &self.netns]).args(argv);
        c
    }

    /// The request log of the servers.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }

    /// Starts `server.py` inside the namespace (443 and 8443 TLS, 80 plain, the echo ports)
    /// and waits until it listens.
    pub fn serve(&mut self, s: &Serve) {
        let mut creds = serde_json::Map::new();
        for (host, header, value) in &s.credentials {
            creds.insert(host.to_string(), serde_json::json!({"header": header, "value": value}));
        }
        let mut listen = vec![serde_json::json!({"port": 443, "tls": true}), serde_json::json!({"port": 8443, "tls": true}), serde_json::json!({"port": 80, "tls": false})];
        listen.extend(s.echo_ports.iter().map(|p| serde_json::json!({"port": p, "echo": true})));
        let cfg = serde_json::json!({
            "cert": self.pki.cert, "key": self.pki.key, "log": self.log_path(),
            "api_cert": self.pki.api_cert, "api_key": self.pki.api_key, "api_names": API_CERT_NAMES,
            "static": s.static_dir,
            "listen": listen,
            "credentials": creds,
        });
        let cfg_path = self.dir.path().join(format!("server-{}.json", self.servers.len()));
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        std::fs::write(self.log_path(), "").unwrap();
        let err_path = self.dir.path().join("server.stderr");
        let script = repo_root().join("tests/fixtures/proxy/server.py");
        let mut cmd = self.exec(&["/usr/bin/python3", "-u", &script.display().to_string(), &cfg_path.display().to_string()]);
        cmd.stdout(Stdio::piped()).stderr(std::fs::File::create(&err_path).unwrap());
        // The servers die with the test (thread) that started them, even when it is killed
        // before `Drop` runs (`ip netns exec` execs python, which keeps the setting).
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        self.servers.push(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
        assert_eq!(line.trim(), "READY", "the test server did not start: {}", std::fs::read_to_string(&err_path).unwrap_or_default());
    }

    /// Every request the servers received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// `--resolve NAME=IP` arguments for `aegis-exec`, pinning each name to the upstream:
    /// [`API_HOSTS`] to [`Upstream::ip`], every other name to [`Upstream::ip_alt`].
    pub fn resolve_args(&self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .flat_map(|n| ["--resolve".to_string(), format!("{n}={}", if API_HOSTS.contains(n) { self.ip } else { self.ip_alt })])
            .collect()
    }

    /// curl run on the host against the upstream (names pinned, test CA trusted): for
    /// checking the servers themselves, without the proxy.
    pub fn curl(&self, url: &str, extra: &[&str]) -> std::process::Output {
        let (scheme, rest) = url.split_once("://").unwrap();
        let authority = rest.split('/').next().unwrap();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().unwrap()),
            None => (authority, if scheme == "http" { 80 } else { 443 }),
        };
        Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "20", "--cacert"])
            .arg(&self.pki.ca)
            .arg("--resolve")
            .arg(format!("{host}:{port}:{}", self.ip))
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(h) = &self.veth {
            let _ = ip_cmd().args(["link", "del", h]).stderr(Stdio::null()).status();
        }
        let _ = ip_cmd().args(["netns", "del", &self.netns]).stderr(Stdio::null()).status();
    }
}

/// A P-256 CA and a server certificate for [`CERT_NAMES`], `ip` and `ip6`, valid for two days.
fn make_pki(dir: &Path, ip: Ipv4Addr, ip6: Ipv6Addr) -> Pki {
    let p = |f: &str| dir.join(f);
    let openssl = |args: &[&str], what: &str| {
        let mut c = Command::new("openssl");
        c.current_dir(dir).args(args).stdin(Stdio::null());
        must(&mut c, what);
    };
    openssl(
        &[
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=AEGIS test upstream CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ],
        "test CA",
    );
    openssl(
        &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=aegis test upstream"],
        "server key",
    );
    let mut san: Vec<String> = CERT_NAMES.iter().map(|n| format!("DNS:{n}")).collect();
    san.push(format!("IP:{ip}"));
    san.push(format!("IP:{ip6}"));
    let api_san: Vec<String> = API_CERT_NAMES.iter().map(|n| format!("DNS:{n}")).collect();
    for (name, san) in [("server", san), ("api", api_san)] {
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            san.join(",")
        );
        std::fs::write(p(&format!("{name}.ext")), ext).unwrap();
        if name == "api" {
            openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "api.key", "-out", "api.csr", "-subj", "/CN=aegis test API front end"], "API key");
        }
        let (csr, out, ext) = (format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        openssl(&["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", &out, "-days", "2", "-extfile", &ext], "server certificate");
    }
    Pki { ca: p("ca.pem"), cert: p("server.pem"), key: p("server.key"), api_cert: p("api.pem"), api_key: p("api.key") }
}
