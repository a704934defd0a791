#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "a benchmark: a failed unwrap or index ends the run with its message")]
//! Egress proxy benchmark: what the proxy costs an agent, compared with going direct, on
//! loopback, in one run.
//!
//! Input: nothing (all loopback, no network): an in-process HTTPS upstream (rustls, a test CA
//! made with rcgen, HTTP/1.1 keep-alive, `GET /small` → 13-byte body, `GET /big` → 100 MiB
//! body; one certificate per name), the real `aegis_proxy::server` with a policy compiled
//! in-process (a tunnelled name `bench.test` pinned to 127.0.0.1, an inspected `[api.bench]`
//! at `api.bench.test` with a credential pinned to 127.0.0.2, granted by a `127.0.0.0/8` CIDR), a rustls client that speaks CONNECT,
//! and, when installed (`apt-get install tinyproxy`, for the benchmark only), Debian's
//! `tinyproxy` as the stock CONNECT proxy a user would otherwise deploy, in the same run.
//! Output: a table on stdout (median and p90 latency per request, throughput of a 100 MiB GET
//! in MB/s, proxied minus/over direct). Invariants: direct and proxied samples are taken
//! interleaved (one of each, in turn) so machine noise hits both alike; every response is
//! checked (status, body length) so a fast failure can never pass for a fast request; the
//! client does full TLS handshakes (no session resumption), as a fresh agent process would.
//!
//! Run: `cargo bench -p aegis-proxy --bench proxy` (`BENCH_ITERS=N` changes the latency
//! sample count, default 300; `BENCH_ROUNDS=N` the throughput rounds, default 4).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aegis_proxy::addr::parse_host;
use aegis_proxy::exe::AgentProcs;
use aegis_proxy::gate::{Gate, SecretStore};
use aegis_proxy::resolve::Resolver;
use aegis_proxy::server::{self, Proxy};
use aegis_proxy::tls::{SandboxCa, upstream_config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

const SMALL_BODY: &[u8] = b"Hello, world\n";
const BIG_LEN: usize = 100 * 1024 * 1024;
const CHUNK: usize = 1024 * 1024;
const TUNNEL_HOST: &str = "bench.test";
const API_HOST: &str = "api.bench.test";
const TOKEN: &str = "bench-token-not-secret";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------
// Upstream: an HTTPS server with keep-alive.

struct Upstream {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    /// Requests that arrived carrying the proxy-injected credential.
    with_token: Arc<AtomicUsize>,
}

fn start_upstream() -> Upstream {
    let ca_key = KeyPair::generate().unwrap();
    let mut cap = CertificateParams::default();
    cap.distinguished_name.push(DnType::CommonName, "bench upstream CA");
    cap.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = cap.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(cap, ca_key);
    // One certificate per name, chosen by SNI, and the API on an address of its own: the
    // tunnelled name shares neither address nor certificate with the API, so its tunnel is
    // a plain one (see `aegis_proxy::fronting`).
    let mut names = rustls::server::ResolvesServerCertUsingSni::new();
    for name in [TUNNEL_HOST, API_HOST] {
        let leaf_key = KeyPair::generate().unwrap();
        let mut lp = CertificateParams::default();
        lp.distinguished_name.push(DnType::CommonName, name);
        lp.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
        let leaf = lp.signed_by(&leaf_key, &issuer).unwrap();
        let chain = vec![leaf.der().clone(), ca_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        names.add(name, rustls::sign::CertifiedKey::from_der(chain, key, &provider()).unwrap()).unwrap();
    }
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(names));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let api_listener = TcpListener::bind(("127.0.0.2", addr.port())).unwrap();
    let with_token = Arc::new(AtomicUsize::new(0));
    for l in [listener, api_listener] {
        let (cfg, counter) = (cfg.clone(), with_token.clone());
        std::thread::spawn(move || {
            let big = Arc::new(vec![b'x'; CHUNK]);
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let (cfg, big, counter) = (cfg.clone(), big.clone(), counter.clone());
                std::thread::spawn(move || serve(s, cfg, &big, &counter));
            }
        });
    }
    Upstream {
        addr,
        ca: ca_cert.der().clone(),
        with_token,
    }
}

/// Serves HTTP/1.1 requests on one connection until the client goes away.
fn serve(sock: TcpStream, cfg: Arc<ServerConfig>, big: &[u8], with_token: &AtomicUsize) {
    let _ = sock.set_nodelay(true);
    let Ok(conn) = ServerConnection::new(cfg) else { return };
    let mut rd = BufReader::with_capacity(16 * 1024, StreamOwned::new(conn, sock));
    let want_auth = format!("authorization: bearer {TOKEN}").to_ascii_lowercase();
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut close = false;
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let lower = h.trim_end().to_ascii_lowercase();
            if lower.is_empty() {
                break;
            }
            if lower == want_auth {
                with_token.fetch_add(1, Ordering::Relaxed);
            }
            if lower == "connection: close" {
                close = true;
            }
        }
        let w = rd.get_mut();
        let ok = match path.as_str() {
            "/small" => {
                let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n", SMALL_BODY.len()).into_bytes();
                resp.extend_from_slice(SMALL_BODY);
                w.write_all(&resp).is_ok()
            }
            "/big" => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {BIG_LEN}\r\n\r\n");
                w.write_all(head.as_bytes()).is_ok() && (0..BIG_LEN / CHUNK).all(|_| w.write_all(big).is_ok())
            }
            _ => w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_ok(),
        };
        if !ok || w.flush().is_err() || close {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Proxy, configured the way aegis-exec configures it.

struct BenchSecrets;

impl SecretStore for BenchSecrets {
    fn env(&self, name: &str) -> Option<String> {
        (name == "BENCH_TOKEN").then(|| TOKEN.to_string())
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.to_string()))
    }
}

fn start_proxy(up: &Upstream, exe_lookup: bool) -> (SocketAddr, String, Arc<Proxy>) {
    let port = up.addr.port();
    let policy = format!(
        r#"version = 1
[agent]
name = "proxy-bench"

[network]
mode = "proxy"
allow = ["{TUNNEL_HOST}:{port}", "127.0.0.0/8:{port}"]

[api.bench]
host = "{API_HOST}"
port = {port}
allow = ["GET /small", "GET /big"]
deny = ["POST /send"]
credential = {{ header = "Authorization", prefix = "Bearer ", from_env = "BENCH_TOKEN" }}
"#
    );
    let compiled = match aegis_compiler::compile_bytes("proxy-bench.toml", policy.as_bytes()) {
        Ok(c) => c,
        Err(f) => panic!("bench policy does not compile: {:?}", f.diagnostics.iter().map(|d| &d.message).collect::<Vec<_>>()),
    };
    let gate = Gate::new(compiled.policy, BTreeMap::new(), &BenchSecrets).unwrap();
    let ca = SandboxCa::generate("proxy-bench").unwrap();
    let ca_pem = ca.cert_pem().to_string();
    let upstream_tls = upstream_config(&[], std::slice::from_ref(&up.ca)).unwrap();
    let resolver = Resolver::with_pins(&[format!("{TUNNEL_HOST}=127.0.0.1"), format!("{API_HOST}=127.0.0.2")]).unwrap();
    let agent = AgentProcs {
        // Beyond any pid_max, so no process is scanned and the lookup ends at once.
        pid: if exe_lookup { std::process::id() as i32 } else { i32::MAX },
        procs_file: None,
        // What aegis-exec gives the proxy: one exact sock_diag lookup per connection.
        diag: if exe_lookup { aegis_proxy::exe::diag_socket().ok().map(std::sync::Mutex::new) } else { None },
        helpers: Vec::new(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // Drain audit events as the supervisor's audit writer would.
    std::thread::spawn(move || for _ in rx {});
    let proxy = Arc::new(Proxy::new(gate, ca, upstream_tls, resolver, agent, tx));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    server::spawn(listener, proxy.clone()).unwrap();
    (addr, ca_pem, proxy)
}

/// The floor for a CONNECT tunnel on this machine: no policy, no audit, no SNI check, no
/// thread started per connection (workers wait in `accept`), both directions relayed with
/// splice(2) (as the proxy does) by one thread with poll(2). The gap between it and the real proxy is what the proxy's own
/// design costs; the gap between it and direct is what any CONNECT hop costs.
fn start_floor_tunnel(upstream: SocketAddr) -> SocketAddr {
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    for _ in 0..4 {
        let l = listener.clone();
        std::thread::Builder::new().name("bench-relay".into()).spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                floor_one(s, upstream);
            }
        }).unwrap();
    }
    addr
}

/// A stock CONNECT proxy, what a user would otherwise deploy: Debian's `tinyproxy` (installed
/// for the benchmark only: `apt-get install tinyproxy`), run in the foreground on a loopback
/// port with every CONNECT port allowed and logging off. `None` (and a line saying so) when it
/// is not installed.
struct Stock {
    addr: SocketAddr,
    child: std::process::Child,
    version: String,
    _dir: std::path::PathBuf,
}

impl Drop for Stock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

impl Stock {
    fn start() -> Option<Stock> {
        let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"].into_iter().find(|p| std::path::Path::new(p).exists())?;
        let version = std::process::Command::new(bin).arg("-v").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let dir = std::env::temp_dir().join(format!("aegis-bench-tinyproxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let conf = dir.join("tinyproxy.conf");
        std::fs::write(&conf, format!("Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 512\nAllow 127.0.0.1\nDisableViaHeader Yes\nLogLevel Critical\n")).ok()?;
        let child = std::process::Command::new(bin).arg("-d").arg("-c").arg(&conf).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().ok()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let t = Instant::now();
        while TcpStream::connect(addr).is_err() {
            if t.elapsed() > Duration::from_secs(5) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Stock { addr, child, version, _dir: dir })
    }

    /// CPU time (user + system) the stock proxy's process has used so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        Duration::from_millis(ticks * 1000 / hz)
    }
}

fn floor_one(mut client: TcpStream, upstream: SocketAddr) {
    use std::os::fd::AsRawFd;
    let _ = client.set_nodelay(true);
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
        return;
    }
    let Ok(up) = TcpStream::connect(upstream) else { return };
    let _ = up.set_nodelay(true);
    // One pipe per direction; splice(2) like the proxy's tunnel, but both directions in this
    // one thread, driven by poll(2).
    let mut pipes = [[0i32; 2]; 2];
    for p in &mut pipes {
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return;
        }
        // SAFETY: resizing our own pipe; failure only means smaller chunks.
        unsafe { libc::fcntl(p[1], libc::F_SETPIPE_SZ, 256 * 1024) };
    }
    let fds = [client.as_raw_fd(), up.as_raw_fd()];
    let mut open = [true, true];
    'relay: while open[0] || open[1] {
        let mut pfd = [0, 1].map(|i| libc::pollfd {
            fd: fds[i],
            events: if open[i] { libc::POLLIN } else { 0 },
            revents: 0,
        });
        // SAFETY: poll on two pollfds we own.
        if unsafe { libc::poll(pfd.as_mut_ptr(), 2, 10_000) } <= 0 {
            break;
        }
        for i in 0..2 {
            if pfd[i].revents == 0 || !open[i] {
                continue;
            }
            let (from, to, pipe) = (fds[i], fds[1 - i], pipes[i]);
            // SAFETY: splice between fds we own, null offsets (sockets and pipes have none).
            let n = unsafe { libc::splice(from, std::ptr::null_mut(), pipe[1], std::ptr::null_mut(), 256 * 1024, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK) };
            if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock) {
                open[i] = false;
                // SAFETY: half-closing a socket we own.
                unsafe { libc::shutdown(to, libc::SHUT_WR) };
                continue;
            }
            let mut left = n.max(0) as usize;
            while left > 0 {
                // Blocking the writer is fine here: the bench moves one response at a time.
                // SAFETY: as above.
                let m = unsafe { libc::splice(pipe[0], std::ptr::null_mut(), to, std::ptr::null_mut(), left, libc::SPLICE_F_MOVE) };
                if m <= 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                        continue;
                    }
                    break 'relay;
                }
                left -= m as usize;
            }
        }
    }
    for p in pipes {
        // SAFETY: closing the pipes we created.
        unsafe {
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Client.

type Tls = BufReader<StreamOwned<ClientConnection, TcpStream>>;

fn client_config(anchor: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(anchor).unwrap();
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every new connection is a full handshake, as from a freshly started agent process.
    cfg.resumption = Resumption::disabled();
    Arc::new(cfg)
}

#[derive(Clone, Copy)]
enum Route {
    Direct,
    Proxy(SocketAddr),
    /// The stock proxy: it resolves the CONNECT host itself, so it is given the upstream's
    /// address (the TLS inside still names the host).
    Stock(SocketAddr),
}

struct Client {
    upstream: SocketAddr,
    /// Requests sent to the inspected API host (each must reach upstream with the token).
    api_requests: std::cell::Cell<usize>,
}

impl Client {
    /// TCP (+ CONNECT through the proxy) + TLS handshake, ready for requests.
    fn open(&self, route: Route, cfg: &Arc<ClientConfig>, host: &str) -> Tls {
        self.open_phases(route, cfg, host, &mut Vec::new())
    }

    /// [`Client::open`], pushing the time at each phase's end into `marks` (connected,
    /// CONNECT answered, handshake done).
    fn open_phases(&self, route: Route, cfg: &Arc<ClientConfig>, host: &str, marks: &mut Vec<Instant>) -> Tls {
        let port = self.upstream.port();
        let sock = match route {
            Route::Direct => {
                let s = TcpStream::connect(self.upstream).unwrap();
                marks.push(Instant::now());
                marks.push(Instant::now());
                s
            }
            Route::Proxy(p) | Route::Stock(p) => {
                let mut s = TcpStream::connect(p).unwrap();
                marks.push(Instant::now());
                s.set_nodelay(true).unwrap();
                let target = match route {
                    Route::Stock(_) => self.upstream.ip().to_string(),
                    _ => host.to_string(),
                };
                s.write_all(format!("CONNECT {target}:{port} HTTP/1.1\r\nHost: {target}:{port}\r\n\r\n").as_bytes()).unwrap();
                // Nothing follows the proxy's answer until we send the ClientHello, so one
                // read up to the blank line takes exactly the answer.
                let mut head = Vec::new();
                let mut b = [0u8; 256];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut b).unwrap();
                    assert!(n > 0, "proxy closed during CONNECT");
                    head.extend_from_slice(&b[..n]);
                }
                assert!(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"), "CONNECT refused: {}", String::from_utf8_lossy(&head));
                marks.push(Instant::now());
                s
            }
        };
        sock.set_nodelay(true).unwrap();
        let conn = ClientConnection::new(cfg.clone(), ServerName::try_from(host.to_string()).unwrap()).unwrap();
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).unwrap();
        }
        marks.push(Instant::now());
        BufReader::with_capacity(64 * 1024, s)
    }

    /// One GET on an open connection; checks the status and returns the body length.
    fn get(&self, c: &mut Tls, host: &str, path: &str) -> usize {
        let port = self.upstream.port();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: aegis-bench\r\n\r\n");
        if host == API_HOST {
            self.api_requests.set(self.api_requests.get() + 1);
        }
        c.get_mut().write_all(req.as_bytes()).unwrap();
        c.get_mut().flush().unwrap();
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{host}{path}: {line}");
        let mut len = None;
        loop {
            line.clear();
            c.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = Some(v.trim().parse::<usize>().unwrap());
            }
        }
        let len = len.expect("response without Content-Length");
        let mut left = len;
        while left > 0 {
            let buf = c.fill_buf().unwrap();
            assert!(!buf.is_empty(), "body cut short with {left} bytes left");
            let k = buf.len().min(left);
            c.consume(k);
            left -= k;
        }
        len
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and the report.

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Stats {
    median: f64,
    p90: f64,
}

fn stats(v: &[Duration]) -> Stats {
    let mut s: Vec<f64> = v.iter().map(|d| us(*d)).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median: pct(&s, 0.5),
        p90: pct(&s, 0.9),
    }
}

/// Median of the per-pair differences (proxied − direct of the same turn).
fn paired_median(direct: &[Duration], other: &[Duration]) -> f64 {
    let mut d: Vec<f64> = direct.iter().zip(other).map(|(a, b)| us(*b) - us(*a)).collect();
    d.sort_by(|a, b| a.total_cmp(b));
    pct(&d, 0.5)
}

fn latency_table(title: &str, target: Option<f64>, direct: &[Duration], others: &[(&str, &[Duration])]) {
    let d = stats(direct);
    println!("\n{title} ({} samples each, interleaved)", direct.len());
    println!("  {:<22} {:>12} {:>12} {:>16} {:>18}", "route", "median µs", "p90 µs", "added (median)", "added (paired med)");
    println!("  {:<22} {:>12.1} {:>12.1} {:>16} {:>18}", "direct", d.median, d.p90, "-", "-");
    for (name, v) in others {
        let s = stats(v);
        let added = s.median - d.median;
        let paired = paired_median(direct, v);
        let verdict = match target {
            Some(t) if paired < t => format!("  [target < {t:.0} µs: met]"),
            Some(t) => format!("  [target < {t:.0} µs: MISSED]"),
            None => String::new(),
        };
        println!("  {name:<22} {:>12.1} {:>12.1} {added:>16.1} {paired:>18.1}{verdict}", s.median, s.p90);
    }
}

/// Median µs of `f` over `n` runs.
fn time_it(n: usize, mut f: impl FnMut()) -> f64 {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        v.push(t.elapsed());
    }
    stats(&v).median
}

/// What the proxy does per connection and per request, timed one piece at a time in this
/// thread (the same calls `server/` makes), to show where added latency comes from.
fn costs(p: &Proxy, up: &Upstream) {
    let port = up.addr.port();
    let tunnel = parse_host(TUNNEL_HOST).unwrap();
    let api_host = parse_host(API_HOST).unwrap();
    let api = p.gate.api_for(&api_host, port).cloned().unwrap();
    let addrs = p.resolver.lookup(&tunnel, port).unwrap();
    // A live connection of this process, as the agent's would be when the proxy accepts it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_server_end, _) = listener.accept().unwrap();
    let peer = client.local_addr().unwrap();
    let ours = client.peer_addr().unwrap();
    println!("
4. per-connection work of the proxy, timed alone (median µs)");
    let rows: Vec<(String, f64)> = vec![
        ("Gate::destination (CONNECT check)".into(), time_it(200, || drop(p.gate.destination(&tunnel, port, None)))),
        ("Resolver::lookup + Gate::vet".into(), time_it(200, || drop(p.resolver.lookup(&tunnel, port).and_then(|a| p.gate.vet(&tunnel, port, &a, &p.own_addresses))))),
        ("Gate::http (per inspected request)".into(), time_it(200, || drop(p.gate.http(&api, "GET", "/small", None)))),
        ("SandboxCa::server_config (cached)".into(), time_it(200, || drop(p.ca.server_config(&api_host)))),
        ("thread spawn + join".into(), time_it(200, || drop(std::thread::spawn(|| ()).join()))),
        ("TcpStream::connect to upstream (dial)".into(), time_it(200, || drop(TcpStream::connect((addrs[0], port))))),
        ("AgentProcs::socket_inode (one sock_diag lookup)".into(), time_it(200, || { std::hint::black_box(p.agent.socket_inode(peer, ours)); })),
        ("AgentProcs::exe_of (inode + this process's fds)".into(), time_it(200, || drop(p.agent.exe_of(peer, ours)))),
    ];
    for (what, us) in rows {
        println!("  {what:<58} {us:>10.1}");
    }
}

/// Name, route, client TLS configuration, host, target (% of direct) of a throughput row.
type ThroughputRoute<'a> = (&'static str, Route, &'a Arc<ClientConfig>, &'static str, Option<f64>);

/// Run time (ns, from schedstat) of each live thread of this process: tid → (is a proxy
/// thread, ns). Proxy threads are named `aegis-proxy*` (threads they start inherit the name).
fn thread_cpu() -> BTreeMap<u32, (bool, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return out };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(e.path().join("schedstat"))
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
            .unwrap_or(0);
        out.insert(tid, (comm.starts_with("aegis-proxy") || comm.starts_with("bench-relay"), ns));
    }
    out
}

/// CPU time spent by proxy threads between two [`thread_cpu`] snapshots.
fn proxy_cpu_since(before: &BTreeMap<u32, (bool, u64)>) -> Duration {
    let ns: u64 = thread_cpu()
        .iter()
        .filter(|(_, (proxy, _))| *proxy)
        .map(|(tid, (_, ns))| ns.saturating_sub(before.get(tid).map(|b| b.1).unwrap_or(0)))
        .sum();
    Duration::from_nanos(ns)
}

/// User + system CPU time of this whole process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; an all-zero rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above, RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn iters(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(default)
}

/// Section 1: a small GET on a new connection per request, direct vs tunnel vs inspect
/// through `via`, interleaved; prints totals and per-phase medians.
fn new_connection_block(c: &Client, n: usize, via: Route, direct_cfg: &Arc<ClientConfig>, inspect_cfg: &Arc<ClientConfig>, title: &str) {
    // Each sample: time to TCP connected, CONNECT answered, TLS handshake done, response read.
    let one = |route: Route, cfg: &Arc<ClientConfig>, host: &str| -> [Duration; 4] {
        let mut marks = Vec::with_capacity(4);
        let t = Instant::now();
        let mut s = c.open_phases(route, cfg, host, &mut marks);
        assert_eq!(c.get(&mut s, host, "/small"), SMALL_BODY.len());
        marks.push(Instant::now());
        let mut out = [Duration::ZERO; 4];
        let mut prev = t;
        for (o, m) in out.iter_mut().zip(&marks) {
            *o = m.duration_since(prev);
            prev = *m;
        }
        out
    };
    let (mut d_ph, mut t_ph, mut i_ph) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        d_ph.push(one(Route::Direct, direct_cfg, TUNNEL_HOST));
        t_ph.push(one(via, direct_cfg, TUNNEL_HOST));
        i_ph.push(one(via, inspect_cfg, API_HOST));
    }
    let total = |v: &[[Duration; 4]]| -> Vec<Duration> { v.iter().map(|p| p.iter().sum()).collect() };
    let (d_new, t_new, i_new) = (total(&d_ph), total(&t_ph), total(&i_ph));
    latency_table(title, Some(100.0), &d_new, &[("tunnel (CONNECT+SNI)", &t_new)]);
    latency_table("   same connections, inspect mode (TLS terminated and re-originated)", None, &d_new, &[("inspect", &i_new)]);
    println!("   phases, median µs: {:>10} {:>10} {:>10} {:>10}", "connect", "CONNECT", "handshake", "GET");
    for (name, v) in [("direct", &d_ph), ("tunnel", &t_ph), ("inspect", &i_ph)] {
        let m: Vec<f64> = (0..4).map(|i| stats(&v.iter().map(|p| p[i]).collect::<Vec<_>>()).median).collect();
        println!("   {name:<18} {:>10.1} {:>10.1} {:>10.1} {:>10.1}", m[0], m[1], m[2], m[3]);
    }
}

/// Section 1c: direct vs the floor tunnel ([`start_floor_tunnel`]), new connection per request.
fn floor_block(c: &Client, n: usize, via: Route, floor: Route, stock: Option<Route>, direct_cfg: &Arc<ClientConfig>) {
    let (mut d, mut t, mut f, mut k) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let routes = [(Some(Route::Direct), &mut d), (Some(via), &mut t), (Some(floor), &mut f), (stock, &mut k)];
        for (route, out) in routes {
            let Some(route) = route else { continue };
            let t0 = Instant::now();
            let mut s = c.open(route, direct_cfg, TUNNEL_HOST);
            assert_eq!(c.get(&mut s, TUNNEL_HOST, "/small"), SMALL_BODY.len());
            out.push(t0.elapsed());
        }
    }
    let mut others: Vec<(&str, &[Duration])> = vec![("AEGIS tunnel", &t), ("minimal CONNECT relay", &f)];
    if stock.is_some() {
        others.push(("tinyproxy (stock)", &k));
    }
    latency_table(
        "1c. same, AEGIS tunnel beside a minimal CONNECT relay in this bench (no checks, no thread per connection: the floor for any CONNECT hop) and a stock CONNECT proxy",
        None,
        &d,
        &others,
    );
    if stock.is_some() {
        println!("   AEGIS tunnel vs tinyproxy, added latency (paired medians): {:.1} µs vs {:.1} µs", paired_median(&d, &t), paired_median(&d, &k));
    }
}

fn main() {
    let n = iters("BENCH_ITERS", 300);
    let rounds = iters("BENCH_ROUNDS", 4);
    let sections = std::env::var("BENCH_SECTIONS").unwrap_or_else(|_| "1,2,3,4".into());
    let run = |k: u8| sections.split(',').any(|s| s.trim() == k.to_string());
    let started = Instant::now();
    let up = start_upstream();
    // As aegis-exec runs it: the connecting executable is looked up for each connection.
    let (proxy, sandbox_ca_pem, shared) = start_proxy(&up, true);
    // The same proxy with that lookup made free (its agent pid does not exist), to show what
    // the rest of the proxy costs.
    let (proxy_noexe, sandbox_ca_pem_noexe, _) = start_proxy(&up, false);
    let direct_cfg = client_config(up.ca.clone());
    let anchor = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    };
    let inspect_cfg = client_config(anchor(&sandbox_ca_pem));
    let inspect_cfg_noexe = client_config(anchor(&sandbox_ca_pem_noexe));
    let floor = start_floor_tunnel(up.addr);
    let stock = Stock::start();
    let stock_route = stock.as_ref().map(|s| Route::Stock(s.addr));
    let c = Client {
        upstream: up.addr,
        api_requests: std::cell::Cell::new(0),
    };
    let via = Route::Proxy(proxy);
    let via_noexe = Route::Proxy(proxy_noexe);

    println!("aegis-proxy benchmark: loopback, upstream 127.0.0.1:{}, proxy {proxy}", up.addr.port());
    println!(
        "cpus: {}; kernel {}; cpu: {}; loadavg before: {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string()))
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    );
    println!("TLS: rustls 0.23 / ring, TLS 1.3 full handshakes (no resumption), ECDSA P-256 certificates");
    match &stock {
        Some(s) => println!("stock CONNECT proxy: {} on {} (thread per connection, read/write copies)", s.version, s.addr),
        None => println!("stock CONNECT proxy: tinyproxy is not installed (apt-get install tinyproxy): its rows are left out"),
    }

    // Warm-up: certificate minting for the API host, caches, thread stacks.
    for _ in 0..20 {
        assert_eq!(c.get(&mut c.open(Route::Direct, &direct_cfg, TUNNEL_HOST), TUNNEL_HOST, "/small"), SMALL_BODY.len());
        for (v, icfg) in [(via, &inspect_cfg), (via_noexe, &inspect_cfg_noexe)] {
            assert_eq!(c.get(&mut c.open(v, &direct_cfg, TUNNEL_HOST), TUNNEL_HOST, "/small"), SMALL_BODY.len());
            assert_eq!(c.get(&mut c.open(v, icfg, API_HOST), API_HOST, "/small"), SMALL_BODY.len());
        }
    }

    if run(1) {
        // 1. New connection per request.
        new_connection_block(
            &c,
            n,
            via,
            &direct_cfg,
            &inspect_cfg,
            "1. small HTTPS GET, new connection per request (TCP [+ CONNECT] + TLS handshake + GET), proxy as aegis-exec runs it",
        );
        new_connection_block(
            &c,
            n,
            via_noexe,
            &direct_cfg,
            &inspect_cfg_noexe,
            "1b. same, proxy with the per-connection executable lookup disabled (AgentProcs pid that does not exist)",
        );
        floor_block(&c, n, via, Route::Proxy(floor), stock_route, &direct_cfg);
    }
    if run(2) {
        // 2. Kept-alive connection, after the handshake.
        let mut d_conn = c.open(Route::Direct, &direct_cfg, TUNNEL_HOST);
        let mut t_conn = c.open(via, &direct_cfg, TUNNEL_HOST);
        let mut f_conn = c.open(Route::Proxy(floor), &direct_cfg, TUNNEL_HOST);
        let mut i_conn = c.open(via, &inspect_cfg, API_HOST);
        let mut k_conn = stock_route.map(|r| c.open(r, &direct_cfg, TUNNEL_HOST));
        for _ in 0..10 {
            c.get(&mut d_conn, TUNNEL_HOST, "/small");
            c.get(&mut t_conn, TUNNEL_HOST, "/small");
            c.get(&mut f_conn, TUNNEL_HOST, "/small");
            c.get(&mut i_conn, API_HOST, "/small");
            if let Some(k) = k_conn.as_mut() {
                c.get(k, TUNNEL_HOST, "/small");
            }
        }
        let (mut d_ka, mut t_ka, mut i_ka, mut f_ka, mut k_ka) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n * 3 {
            for (conn, host, out) in [
                (&mut d_conn, TUNNEL_HOST, &mut d_ka),
                (&mut t_conn, TUNNEL_HOST, &mut t_ka),
                (&mut i_conn, API_HOST, &mut i_ka),
                (&mut f_conn, TUNNEL_HOST, &mut f_ka),
            ] {
                let t = Instant::now();
                assert_eq!(c.get(conn, host, "/small"), SMALL_BODY.len());
                out.push(t.elapsed());
            }
            if let Some(k) = k_conn.as_mut() {
                let t = Instant::now();
                assert_eq!(c.get(k, TUNNEL_HOST, "/small"), SMALL_BODY.len());
                k_ka.push(t.elapsed());
            }
        }
        let mut others: Vec<(&str, &[Duration])> = vec![("tunnel", &t_ka), ("inspect", &i_ka), ("minimal relay", &f_ka)];
        if k_conn.is_some() {
            others.push(("tinyproxy (stock)", &k_ka));
        }
        latency_table("2. small HTTPS GET on a kept-alive connection (request → full response)", None, &d_ka, &others);
        drop((d_conn, t_conn, i_conn, f_conn, k_conn));
    }

    if run(3) {
        // 3. Throughput of a 100 MiB GET (request sent → last byte), on a fresh connection each,
        // with the CPU time the whole process (client, upstream and proxy threads) spent on it.
        let mut routes: Vec<ThroughputRoute> = vec![
            ("direct", Route::Direct, &direct_cfg, TUNNEL_HOST, None),
            ("tunnel (splice)", via, &direct_cfg, TUNNEL_HOST, Some(80.0)),
            ("inspect (TLS↔TLS)", via, &inspect_cfg, API_HOST, Some(50.0)),
            ("tunnel, no exe lookup", via_noexe, &direct_cfg, TUNNEL_HOST, None),
            ("inspect, no exe lookup", via_noexe, &inspect_cfg_noexe, API_HOST, None),
            ("minimal relay (splice)", Route::Proxy(floor), &direct_cfg, TUNNEL_HOST, None),
        ];
        if let Some(r) = stock_route {
            routes.push(("tinyproxy (stock)", r, &direct_cfg, TUNNEL_HOST, None));
        }
        let stock_cpu = || stock.as_ref().map(Stock::cpu).unwrap_or_default();
        let mut samples: Vec<Vec<(Duration, Duration, Duration)>> = vec![Vec::new(); routes.len()];
        for _ in 0..rounds {
            for ((_, route, cfg, host, _), out) in routes.iter().zip(samples.iter_mut()) {
                let mut s = c.open(*route, cfg, host);
                // Let the proxy's per-connection work (exe lookup) run first: it is counted in
                // the latency sections, here only the transfer is.
                std::thread::sleep(Duration::from_millis(50));
                // The stock proxy is another process: its CPU is added to both columns (it is
                // idle while the other routes run).
                let (threads, t, cpu, ext) = (thread_cpu(), Instant::now(), cpu_time(), stock_cpu());
                assert_eq!(c.get(&mut s, host, "/big"), BIG_LEN);
                let ext = stock_cpu().saturating_sub(ext);
                out.push((t.elapsed(), cpu_time().saturating_sub(cpu) + ext, proxy_cpu_since(&threads) + ext));
            }
        }
        let mbps = |v: &[(Duration, Duration, Duration)]| -> (f64, f64, f64, f64) {
            let per_100mb = |d: Duration| d.as_secs_f64() * 1e3 / (BIG_LEN as f64 / 1e8);
            let mut r: Vec<f64> = v.iter().map(|(d, _, _)| BIG_LEN as f64 / 1e6 / d.as_secs_f64()).collect();
            r.sort_by(|a, b| a.total_cmp(b));
            let mut cpu: Vec<f64> = v.iter().map(|(_, c, _)| per_100mb(*c)).collect();
            cpu.sort_by(|a, b| a.total_cmp(b));
            let mut pcpu: Vec<f64> = v.iter().map(|(_, _, c)| per_100mb(*c)).collect();
            pcpu.sort_by(|a, b| a.total_cmp(b));
            (pct(&r, 0.5), r[0], pct(&cpu, 0.5), pct(&pcpu, 0.5))
        };
        let (d_med, _, _, _) = mbps(&samples[0]);
        println!("\n3. throughput of a 100 MiB GET ({rounds} rounds, interleaved; MB = 10^6 bytes; CPU = all threads of this process, \"of it proxy\" = the proxy's or minimal relay's threads)");
        println!("  {:<26} {:>12} {:>12} {:>12} {:>14} {:>14}", "route", "median MB/s", "worst MB/s", "% of direct", "CPU ms/100MB", "of it proxy");
        for ((name, _, _, _, target), v) in routes.iter().zip(&samples) {
            let (m, w, cpu, pcpu) = mbps(v);
            let p = m / d_med * 100.0;
            let verdict = match target {
                Some(t) if p >= *t => format!("  [target ≥ {t:.0} %: met]"),
                Some(t) => format!("  [target ≥ {t:.0} %: MISSED]"),
                None => String::new(),
            };
            println!("  {name:<26} {m:>12.0} {w:>12.0} {p:>10.1} % {cpu:>14.0} {pcpu:>14.0}{verdict}");
        }
        if let Some(k) = routes.iter().position(|r| r.0 == "tinyproxy (stock)") {
            let (stock_m, _, _, stock_p) = mbps(&samples[k]);
            for (i, name) in [(1, "tunnel"), (2, "inspect")] {
                let (m, _, _, p) = mbps(&samples[i]);
                println!("  AEGIS {name} vs tinyproxy: {:.2}× the throughput, {:.2}× the proxy CPU per 100 MB", m / stock_m, p / stock_p.max(1.0));
            }
        }

    }
    if run(4) {
        costs(&shared, &up);
    }

    let injected = up.with_token.load(Ordering::Relaxed);
    let sent = c.api_requests.get();
    assert_eq!(injected, sent, "the proxy must inject the credential into every inspected request");
    println!("\ncheck: all {injected} inspected requests reached upstream with the proxy-injected credential");
    println!("total bench time: {:.1} s; loadavg after: {}", started.elapsed().as_secs_f64(), std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}
