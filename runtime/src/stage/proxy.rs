//! Network mode `proxy`: the egress proxy of `aegis_proxy`, run by the supervisor.
//!
//! Input: the verified bundle's typed policy (`policy.ir.json`), the launch parameters,
//! `--resolve` pins, `--upstream-ca` files, and the credentials the policy names (from the
//! supervisor's environment or host files). Output, before clone: [`Prepared`] (the policy
//! gate with credentials loaded, the per-sandbox CA, upstream TLS, the trust bundle and the
//! environment for the agent); after clone: the listener on `127.0.0.1:3128` and the
//! forward listeners, made inside the agent's network namespace ([`super::netns`]) and
//! handed over ([`crate::handoff`]; the agent never holds them), checked here
//! ([`listeners_from`]), and the proxy's accept threads. Invariants: a credential that cannot be loaded, a missing
//! network namespace or a listener that cannot be created stops the launch; the CA key
//! never leaves this process; credentials never enter the agent's environment (a
//! placeholder does, for tools that insist on the variable).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use aegis_audit::Event;
use aegis_policy::ir::{NetworkMode, SecretSource};
use aegis_proxy::exe::AgentProcs;
use aegis_proxy::gate::{Gate, HostSecrets};
use aegis_proxy::resolve::Resolver;
use aegis_proxy::server::Proxy;
use aegis_proxy::tls::{SandboxCa, pem_certs, system_roots_pem, upstream_config};

use crate::exit::RunError;
use crate::handoff::{self, Message, Tag};
use crate::stage::verify::Verified;

/// Port the proxy listens on inside the agent's namespace (the nftables artifact opens it).
pub const PORT: u16 = aegis_targets::bundle::contract::PROXY_PORT;
/// Where the agent finds the trust bundle (system roots + upstream CAs + sandbox CA).
pub const CA_BUNDLE: &str = "/tmp/.aegis/ca-bundle.pem";
/// The sandbox CA alone (for `NODE_EXTRA_CA_CERTS`, which adds to Node's built-in roots).
pub const SANDBOX_CA: &str = "/tmp/.aegis/sandbox-ca.pem";
pub const SEED_DIR: &str = "/tmp/.aegis";
/// What a tool sees in a credential variable it insists on.
pub const PLACEHOLDER: &str = "aegis-proxy-injects-this-credential";

pub struct Prepared {
    gate: Gate,
    ca: SandboxCa,
    upstream: Arc<aegis_proxy::tls::ClientConfig>,
    resolver: Resolver,
    /// Files the child writes into its private /tmp: (path, contents).
    pub seed_files: Vec<(String, Vec<u8>)>,
    /// Variables added to the agent's environment (override `--env`).
    pub env: Vec<(String, String)>,
    /// Transparent TCP forwards: (address, port) the agent may connect to directly.
    pub forwards: Vec<std::net::SocketAddr>,
    /// One line for the enforcement report.
    pub summary: String,
    /// Learn mode: the observer of every decision.
    learn: Option<Arc<crate::learn::Learn>>,
}

fn env_vars(credential_vars: &[String]) -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{PORT}");
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "npm_config_proxy", "npm_config_https_proxy", "CARGO_HTTP_PROXY"] {
        env.insert(k.into(), url.clone());
    }
    for k in ["NO_PROXY", "no_proxy"] {
        env.insert(k.into(), "localhost,127.0.0.1,::1".into());
    }
    for k in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "PIP_CERT", "CARGO_HTTP_CAINFO", "AWS_CA_BUNDLE", "npm_config_cafile"] {
        env.insert(k.into(), CA_BUNDLE.into());
    }
    env.insert("NODE_EXTRA_CA_CERTS".into(), SANDBOX_CA.into());
    env.insert("AEGIS_DECISION_URL".into(), format!("{url}{}", aegis_proxy::decision::PATH));
    for v in credential_vars {
        env.insert(v.clone(), PLACEHOLDER.into());
    }
    env.into_iter().collect()
}

/// Reads the typed policy from the bundle and prepares everything the proxy needs (in
/// learn mode, a gate that admits what the policy refuses by default, and records it).
pub fn prepare(v: &Verified, resolve: &[String], upstream_ca: &[PathBuf], learn: Option<&Arc<crate::learn::Learn>>) -> Result<Prepared, RunError> {
    let policy = v.policy_ir("proxy mode")?;
    if policy.network.mode != NetworkMode::Proxy {
        return Err(RunError::Refused("policy.ir.json does not say network mode `proxy`, but the manifest does".into()));
    }
    let params = v.eval_params()?;
    let credential_vars: Vec<String> = policy
        .apis
        .values()
        .filter_map(|a| match a.credential.as_ref().map(|c| &c.source) {
            Some(SecretSource::Env(var)) => Some(var.clone()),
            _ => None,
        })
        .collect();
    let forwards: Vec<std::net::SocketAddr> = policy
        .network
        .proxy_forwards()
        .0
        .into_iter()
        .flat_map(|e| {
            let addr = match &e.destination {
                aegis_policy::ir::Destination::Network(c) => Some(c.addr),
                _ => None,
            };
            e.ports
                .iter()
                .flat_map(|r| r.first..=r.last)
                .filter_map(move |port| addr.map(|a| std::net::SocketAddr::new(a, port)))
                .collect::<Vec<_>>()
        })
        .collect();
    let apis = policy.apis.len();
    let creds = policy.apis.values().filter(|a| a.credential.is_some()).count();
    let names = policy.network.allow.iter().filter(|e| e.destination.is_name()).count();
    let mut gate = Gate::new(policy, params, &HostSecrets).map_err(RunError::Refused)?;
    if let Some(l) = learn {
        gate = gate.learning(aegis_proxy::gate::Learning { inspect: l.inspect });
    }
    let resolver = Resolver::with_pins(resolve).map_err(RunError::Refused)?;
    let mut extra = Vec::new();
    let mut extra_pem = Vec::new();
    for p in upstream_ca {
        let pem = std::fs::read(p).map_err(|e| RunError::Refused(format!("--upstream-ca {}: {e}", p.display())))?;
        extra.extend(pem_certs(&pem, &p.display().to_string()).map_err(|e| RunError::Refused(format!("--upstream-ca {e}")))?);
        extra_pem.extend(pem);
        extra_pem.push(b'\n');
    }
    let mut bundle = system_roots_pem();
    let upstream = upstream_config(&bundle, &extra).map_err(|e| RunError::Unavailable { layer: "proxy", why: e })?;
    let ca = SandboxCa::generate(&v.manifest.agent).map_err(|e| RunError::internal("proxy CA", e))?;
    bundle.push(b'\n');
    bundle.extend_from_slice(&extra_pem);
    bundle.extend_from_slice(ca.cert_pem().as_bytes());
    let mut summary = format!(
        "egress proxy on 127.0.0.1:{PORT} in the agent's network namespace (the only route out): {names} allowed name endpoint(s); {apis} API(s) inspected with a per-sandbox CA, {creds} with an injected credential; {} transparent TCP forward(s); {} pinned name(s)",
        forwards.len(),
        resolve.len()
    );
    if let Some(l) = learn {
        summary.push_str(if l.inspect {
            "; LEARN MODE: destinations and requests the policy refuses by default are admitted and recorded, TLS to other port-443 hosts terminated to see requests"
        } else {
            "; LEARN MODE: destinations the policy refuses by default are admitted and recorded"
        });
    }
    Ok(Prepared {
        seed_files: vec![(CA_BUNDLE.into(), bundle), (SANDBOX_CA.into(), ca.cert_pem().as_bytes().to_vec())],
        env: env_vars(&credential_vars),
        forwards,
        gate,
        ca,
        upstream,
        resolver,
        summary,
        learn: learn.cloned(),
    })
}

/// The proxy's sockets inside the agent's network namespace.
pub struct Listeners {
    pub proxy: TcpListener,
    /// NETLINK_SOCK_DIAG socket in the agent's namespace (finds which process connected).
    pub diag: Option<std::os::fd::OwnedFd>,
    /// One per transparent forward, with the address it stands for.
    pub forwards: Vec<(TcpListener, std::net::SocketAddr)>,
}

/// The proxy's sockets out of the messages the agent's namespace handed over
/// ([`super::netns`]): the listener on `127.0.0.1:3128` (checked: a listening TCP socket on
/// that address, in the namespace whose inode is `agent_netns`), one listener per forward
/// (same checks), the sock_diag socket if it could be made. Missing or wrong: the launch
/// stops (the proxy must be the agent's way out).
pub fn listeners_from(msgs: &mut Vec<Message>, forwards: &[std::net::SocketAddr], agent_netns: u64) -> Result<Listeners, RunError> {
    let unavailable = |why: String| RunError::Unavailable { layer: "proxy", why };
    let listener = |m: Message, want: std::net::SocketAddr| -> Result<TcpListener, RunError> {
        handoff::check_socket(&m, if want.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 }, libc::SOCK_STREAM)?;
        let fd = m.fd.ok_or_else(|| unavailable(format!("no {} for {want}", m.tag.name())))?;
        if handoff::socket_netns_ino(&fd)? != agent_netns {
            return Err(RunError::NotVerified {
                layer: "proxy",
                why: format!("the {} for {want} is not in the agent's network namespace", m.tag.name()),
            });
        }
        let l = TcpListener::from(fd);
        match l.local_addr() {
            Ok(a) if a == want => Ok(l),
            other => Err(RunError::NotVerified {
                layer: "proxy",
                why: format!("the {} is bound to {other:?}, expected {want}", m.tag.name()),
            }),
        }
    };
    let proxy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], PORT));
    let proxy = handoff::take(msgs, Tag::ProxyListener, 0).ok_or_else(|| unavailable(format!("no listener on {proxy_addr} was made in the agent's network namespace")))?;
    let proxy = listener(proxy, proxy_addr)?;
    let mut out = Vec::new();
    for (i, a) in forwards.iter().enumerate() {
        let m = handoff::take(msgs, Tag::Forward, i as u32).ok_or_else(|| unavailable(format!("no listener for the forward {a}")))?;
        out.push((listener(m, *a)?, *a));
    }
    let diag = handoff::take(msgs, Tag::SockDiag, 0).and_then(|m| m.fd);
    Ok(Listeners { proxy, forwards: out, diag })
}

/// Starts serving on the listeners. Decisions go to `events`. `helpers`: the sandbox's own
/// processes in the agent's leaf (the connect broker), never taken for the agent's.
pub fn start(
    p: Prepared,
    listeners: Listeners,
    agent_pid: libc::pid_t,
    procs_file: Option<PathBuf>,
    helpers: Vec<aegis_proxy::exe::Helper>,
    events: Sender<Event>,
) -> Result<Arc<Proxy>, RunError> {
    let mut proxy = Proxy::new(
        p.gate,
        p.ca,
        p.upstream,
        p.resolver,
        AgentProcs {
            pid: agent_pid,
            procs_file,
            diag: listeners.diag.map(std::sync::Mutex::new),
            helpers,
        },
        events,
    );
    if let Some(l) = p.learn {
        proxy.set_observer(Box::new(move |e| l.proxy_event(e)));
    }
    let proxy = Arc::new(proxy);
    aegis_proxy::server::spawn(listeners.proxy, proxy.clone()).map_err(|e| RunError::internal("starting the proxy", e))?;
    for (l, _) in listeners.forwards {
        aegis_proxy::server::spawn_forward(l, proxy.clone()).map_err(|e| RunError::internal("starting a proxy forward", e))?;
    }
    Ok(proxy)
}

/// Proxy mode without a network namespace (user namespaces blocked): the proxy listens on
/// an ephemeral port of the host's loopback; Landlock makes that port the agent's only TCP
/// destination ([`super::landlock::ChildLandlock::only_tcp_to`]) and seccomp refuses other
/// Internet sockets ([`super::nonet`]). Anyone on the host can connect to that port, so
/// each connection is admitted only when the socket at its other end is held by one of the
/// agent's processes ([`agent_holds`]).
pub struct HostListener {
    listener: TcpListener,
    pub port: u16,
}

/// Binds `127.0.0.1:0` in the supervisor's (the host's) network namespace.
pub fn host_listener() -> Result<HostListener, RunError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| RunError::Unavailable { layer: "proxy", why: format!("binding a host loopback port: {e}") })?;
    let port = listener.local_addr().map_err(|e| RunError::internal("the proxy's host port", e))?.port();
    Ok(HostListener { listener, port })
}

impl Prepared {
    /// Points the agent's proxy variables at `port` and its trust files at `dir/.aegis`
    /// (the run's own /tmp), and writes those files there: without a mount namespace there
    /// is no private /tmp to seed. Returns the agent's environment, rewritten.
    pub fn relocate(&self, env: &[(String, String)], port: u16, dir: &std::path::Path) -> Result<Vec<(String, String)>, RunError> {
        let seed = dir.join(".aegis");
        std::fs::create_dir(&seed).map_err(|e| RunError::internal("the proxy's trust files", format!("{}: {e}", seed.display())))?;
        for (path, bytes) in &self.seed_files {
            let name = std::path::Path::new(path).file_name().ok_or_else(|| RunError::internal("the proxy's trust files", path))?;
            let f = seed.join(name);
            std::fs::write(&f, bytes).map_err(|e| RunError::internal("the proxy's trust files", format!("{}: {e}", f.display())))?;
        }
        let url = format!("127.0.0.1:{PORT}");
        let here = format!("127.0.0.1:{port}");
        let seed_text = seed.display().to_string();
        Ok(env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(&url, &here).replace(SEED_DIR, &seed_text)))
            .collect())
    }
}

/// At most this many connections to the host-port proxy at once.
const MAX_HOST_CONNECTIONS: usize = 128;

/// Serves on the host loopback listener: each connection admitted by [`agent_holds`] is
/// served by the proxy, any other is closed and recorded. `helpers` as for [`start`].
pub fn start_host(p: Prepared, l: HostListener, agent_pid: libc::pid_t, helpers: Vec<aegis_proxy::exe::Helper>, events: Sender<Event>) -> Result<Arc<Proxy>, RunError> {
    let notes = events.clone();
    let diag = aegis_proxy::exe::diag_socket().map_err(|e| RunError::Unavailable { layer: "proxy", why: format!("a sock_diag socket to check who connects: {e}") })?;
    let proxy = Arc::new(Proxy::new(
        p.gate,
        p.ca,
        p.upstream,
        p.resolver,
        AgentProcs { pid: agent_pid, procs_file: None, diag: Some(std::sync::Mutex::new(diag)), helpers },
        events,
    ));
    let served = proxy.clone();
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("aegis-proxy-host".into())
        .spawn(move || {
            use std::sync::atomic::Ordering;
            loop {
                let Ok((stream, peer)) = l.listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let ours = stream.local_addr().ok();
                let inode = ours.and_then(|o| served.agent.socket_inode(peer, o));
                if !inode.is_some_and(agent_holds) {
                    let _ = notes.send(Event::Note {
                        component: "proxy".into(),
                        message: format!("refused a connection to the proxy's host port from {peer}: not one of the agent's processes"),
                    });
                    continue;
                }
                if active.fetch_add(1, Ordering::SeqCst) >= MAX_HOST_CONNECTIONS {
                    active.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (p, a) = (served.clone(), active.clone());
                if std::thread::Builder::new()
                    .name("aegis-proxy-conn".into())
                    .spawn(move || {
                        aegis_proxy::server::serve(&p, stream);
                        a.fetch_sub(1, Ordering::SeqCst);
                    })
                    .is_err()
                {
                    active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })
        .map_err(|e| RunError::internal("starting the proxy", e))?;
    Ok(proxy)
}

/// Descriptors scanned per admission at most (an agent holding many descriptors is refused
/// rather than costing the supervisor without bound).
const MAX_FDS_SCANNED: usize = 8192;

/// Whether socket `inode` is held by one of the agent's processes: a descendant of this
/// supervisor (which is their subreaper in this mode, so an agent process that daemonizes
/// stays in the tree). Pid reuse cannot admit a stranger: a reused pid belongs to a process
/// outside the tree, and the socket must be found in the descriptors of a process inside it
/// at the moment of the check.
pub fn agent_holds(inode: u64) -> bool {
    let me = std::process::id() as i32;
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    let mut parent: Vec<(i32, i32)> = Vec::new();
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; the last `)` ends it.
        let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok()) else {
            continue;
        };
        parent.push((pid, ppid));
    }
    let mut tree = vec![me];
    let mut i = 0;
    while let Some(&p) = tree.get(i) {
        tree.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    let link = format!("socket:[{inode}]");
    let mut budget = MAX_FDS_SCANNED;
    for pid in tree.into_iter().filter(|p| *p != me) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for e in dir.flatten() {
            let Some(b) = budget.checked_sub(1) else { return false };
            budget = b;
            if std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == link.as_str()) {
                return true;
            }
        }
    }
    false
}
