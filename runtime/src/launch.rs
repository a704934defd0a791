//! One launch, start to finish: the stages of [`crate::stage`] in order, then supervision
//! and cleanup. Input: [`LaunchOptions`]. Output: the process exit code (the agent's status,
//! or one of the codes in [`crate::exit`]). Invariants: nothing is created before every
//! artifact is verified and parsed; everything created (cgroup leaf, nftables table) is
//! owned by a value whose `Drop` removes it, so every return path — including errors after
//! `clone` and a SIGTERM to the supervisor — cleans up; the agent never execs unless every
//! required layer reported success and was verified.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use aegis_audit::Event;
use aegis_targets::bundle::NetworkMode;

use crate::audit::Audit;
use crate::child::{self, ChildPlan};
use crate::stage::report::{self as child_report, child_failure, fail_error, read_reports};
use crate::exit::RunError;
use crate::handoff;
use crate::identity::{self, Identity};
use crate::report::{EnforcementReport, Layer, LayerStatus, Timings};
use crate::signals::Signals;
use crate::stage::namespaces::{self, Isolation};
use crate::stage::verify::{LaunchOptions, Provenance, Verified};
use crate::stage::{self, Instance};
use crate::supervise;

fn pipe() -> Result<(i32, i32), RunError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(RunError::os("pipe2"));
    }
    Ok((fds[0], fds[1]))
}

fn close(fd: i32) {
    // SAFETY: closing an fd we own.
    unsafe { libc::close(fd) };
}

/// How the launch parameters' note starts (the rest is a JSON object NAME → path).
pub const PARAMS_NOTE: &str = "launch parameters: ";

/// Entry point of `aegis-exec BUNDLE [-- CMD]`.
pub fn run(opts: &LaunchOptions) -> i32 {
    let signals = match Signals::block() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            return e.exit_code();
        }
    };
    let dir_name = opts
        .bundle
        .path()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into());
    // A log whose directory does not exist is refused input, named (not an internal error).
    if let Some(log) = &opts.audit_log {
        let dir = log.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            let e = RunError::Refused(format!("--audit-log {}: the directory {} does not exist; create it first", log.display(), dir.display()));
            eprintln!("aegis-exec: {e}");
            return e.exit_code();
        }
    }
    let mut audit = match Audit::open(opts.audit_log.as_deref(), &dir_name, &opts.audit) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            return e.exit_code();
        }
    };
    let code = match launch(opts, &mut audit, &signals) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            audit.queue(Event::Note {
                component: "aegis-exec".into(),
                message: format!("launch failed (exit {}): {e}", e.exit_code()),
            });
            e.exit_code()
        }
    };
    // The log decides the status when it ended the run (or cannot hold its end).
    match audit.close() {
        Some(stop) => {
            eprintln!("aegis-exec: {stop}");
            stop.exit_code()
        }
        None => code,
    }
}

/// Supervisor time per step, for the report's stage timings.
struct Clock {
    t: Instant,
    timings: Timings,
}

impl Clock {
    fn new() -> Clock {
        Clock { t: Instant::now(), timings: Timings::default() }
    }

    /// Closes the step that ran since the last lap.
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.timings.supervisor.push((name, now - self.t));
        self.t = now;
    }
}

/// Everything a launch decided before anything exists (see [`prepare`]).
struct Prepared {
    v: Verified,
    ident: Identity,
    proxy_mode: bool,
    proxy_prep: Option<stage::proxy::Prepared>,
    instance: Instance,
    cg: Option<stage::cgroup::Prepared>,
    nftp: Option<stage::nftables::Prepared>,
    landlock_child: stage::landlock::ChildLandlock,
    landlock_note: Option<String>,
    seccomp_child: stage::seccomp::ChildSeccomp,
    seccomp_note: Option<String>,
    mediation: Option<stage::seccomp::Mediation>,
    /// The agent's environment.
    env: Vec<(String, String)>,
    /// Where it starts (and whether `--cwd` asked for it), and what it runs.
    cwd: std::path::PathBuf,
    cwd_asked: bool,
    command_path: std::path::PathBuf,
    /// The agent shares the host's network namespace (cgroup-matched host mode).
    host_net: bool,
    /// Host mode forwarded from the agent's own namespace.
    forwarded: Option<stage::nftables::Forwarded>,
    force_no_userns: bool,
    /// The agent's network namespace, made and being loaded by `nft` (root, none/proxy).
    premade_netns: Option<aegis_targets::nftables::PendingNetns>,
    /// The nftables line of the report so far (a host-mode load that could not start).
    nft_layer: Layer,
    /// Host mode (root, cgroup2): the table loading into the host's namespace.
    host_load: Option<aegis_targets::nftables::HostLoad>,
}

/// Verify the bundle, decide the agent's identity, prepare every stage's plan, resolve the
/// command, and start the `nft` loads that do not need the agent (premade namespace, host
/// table): the longest steps of a launch run while the rest of it happens.
fn prepare(opts: &LaunchOptions, audit: &mut Audit, report: &mut EnforcementReport, clock: &mut Clock) -> Result<Prepared, RunError> {
    // ── 1. verify (the bundle, then everything derived from it) ────────────────────────
    let bundle_path = opts.bundle.path().display().to_string();
    let v = match stage::verify::run(opts) {
        Ok(v) => v,
        Err(e) => {
            audit.record(Event::BundleRefused {
                path: bundle_path,
                reason: e.to_string(),
            })?;
            return Err(e);
        }
    };
    audit.set_context(&v.manifest.agent, &v.bundle_sha256, &v.manifest.policy_sha256);
    clock.lap("verify");
    match &v.provenance {
        Provenance::Signed { key_id } => {
            audit.queue(Event::BundleVerified {
                path: bundle_path.clone(),
                key_id: key_id.clone(),
            });
            report.push(Layer::new("verify", LayerStatus::Fully, format!("signed by key {key_id}; digests, expiry, serial {} ok", v.manifest.serial)));
        }
        Provenance::UnsignedAllowed => {
            audit.queue(Event::UnsignedBundleAllowed {
                path: bundle_path.clone(),
                reason: "--allow-unsigned".into(),
            });
            report.push(Layer::new("verify", LayerStatus::Partially, "UNSIGNED bundle accepted (--allow-unsigned); digests checked"));
        }
        Provenance::LocalPolicy { path, sha256 } => {
            // Nobody signed it: the person running `aegis run` wrote or chose the policy.
            // Said as such, never as a verified bundle.
            let what = Provenance::local_description(path, sha256);
            audit.queue(Event::UnsignedBundleAllowed {
                path: bundle_path.clone(),
                reason: format!("{what}: compiled in memory by `aegis run`"),
            });
            report.push(Layer::new("verify", LayerStatus::Partially, format!("{what}; compiled in memory, digests checked")));
        }
    }
    // Who the agent runs as (refused input, like the bundle, before anything exists).
    let ident = identity::decide(opts.user.as_deref(), &opts.groups)?;
    report.identity = Some((ident.describe(), ident.to_audit()));
    let proxy_mode = v.manifest.network_mode == NetworkMode::Proxy;
    let proxy_prep = if proxy_mode { Some(stage::proxy::prepare(&v, &opts.resolve, &opts.upstream_ca, opts.learn.as_ref())?) } else { None };

    clock.lap("identity+proxy");
    // Everything is parsed and prepared now, before any namespace or cgroup exists.
    let instance = Instance::new();
    let cg = stage::cgroup::prepare(&v)?;
    // `host` mode filters the host's namespace only for root with a cgroup2 tree; anyone
    // else's agent gets its own namespace with the granted endpoints forwarded.
    let host_mode = stage::nftables::HostMode::decide(ident.root, cg.as_ref().map(|p| &p.layout));
    let nftp = stage::nftables::prepare(&v, &instance, host_mode)?;
    let (landlock_child, landlock_note) = stage::landlock::prepare(&v)?;
    let tracing = stage::seccomp::Tracing { explain: opts.explain, learn: opts.learn.clone() };
    let (seccomp_child, seccomp_note, mediation) = stage::seccomp::prepare(&v, &tracing)?;
    let judge = stage::exec::Judge::of(&v)?;
    let mut env = agent_environment(&opts.env, stage::exec::default_path(judge.as_ref().map(|j| j.policy())))?;
    if let Some(p) = &proxy_prep {
        // The proxy's variables win over `--env`: the agent cannot be pointed elsewhere.
        env.retain(|(k, _)| !p.env.iter().any(|(pk, _)| pk == k));
        env.extend(p.env.iter().cloned());
        env.sort();
    }
    // Where the agent starts and what it runs, as the sandbox sees them; a command the
    // policy does not let it execute is refused here, before anything exists.
    let (cwd, cwd_asked) = stage::exec::working_dir(judge.as_ref(), opts.cwd.as_deref(), std::env::current_dir().ok())?;
    let command_path = stage::exec::resolve(v.command.first().map(String::as_str).unwrap_or_default(), &env, &cwd, judge.as_ref())?;
    clock.lap("prepare");
    // The agent shares the host's network namespace (cgroup-matched host mode) or not.
    let host_net = v.manifest.network_mode == NetworkMode::Host && host_mode == stage::nftables::HostMode::Cgroup;
    // Host mode forwarded from the agent's own namespace: (TCP, UDP) targets.
    let forwarded = nftp.as_ref().and_then(|p| p.forwarded.clone());
    let force_no_userns = std::env::var_os("AEGIS_EXEC_TEST_NO_USERNS").is_some();
    // none/proxy: make the agent's network namespace now and let `nft` load its table
    // while everything else is prepared and the agent cloned into it (the load is the
    // longest step of a launch). Falls back to loading after clone if it cannot start.
    // (Root only: a user cannot make a network namespace outside a user namespace.)
    let premade_netns = match &nftp {
        Some(p) if !host_net && ident.root && !force_no_userns => stage::nftables::start_premade(p),
        _ => None,
    };
    // host mode (root, cgroup2): `nft` loads the table into the host's namespace from now
    // on; only its dispatch rule needs the agent's leaf, and it is added over netlink once
    // the agent is cloned, before it may run.
    let mut nft_layer = Layer::new("nftables", LayerStatus::NotEnforced, "no nftables.json in bundle");
    let mut host_load = None;
    if host_net && let Some(p) = &nftp {
        match stage::nftables::start_host(&v, p)? {
            Ok(l) => host_load = Some(l),
            Err(layer) => nft_layer = layer,
        }
    }
    clock.lap("nft start");

    Ok(Prepared {
        v,
        ident,
        proxy_mode,
        proxy_prep,
        instance,
        cg,
        nftp,
        landlock_child,
        landlock_note,
        seccomp_child,
        seccomp_note,
        mediation,
        env,
        cwd,
        cwd_asked,
        command_path,
        host_net,
        forwarded,
        force_no_userns,
        premade_netns,
        nft_layer,
        host_load,
    })
}

/// What a launch without user namespaces (and so without any namespace) gets instead: the
/// run's own /tmp, the environment pointing at it, and in proxy mode the proxy on a host
/// loopback port kept the only way out by Landlock and seccomp ([`stage::proxy::HostListener`]).
struct NoUserNamespaces {
    tmp: stage::mounts::PrivateTmp,
    env: Vec<(String, String)>,
    tmp_note: String,
    host_proxy: Option<stage::proxy::HostListener>,
    nonet: stage::nonet::ChildNoNet,
    /// The nftables line, when the network is not filtered at all.
    nft_layer: Option<Layer>,
}

/// Whether a launch may go on without user namespaces (and so without any namespace):
/// `Err` with the refusal (naming its fix) for what the bundle requires and Landlock +
/// seccomp + cgroup cannot give; `why` says why there are none, `kernel` is the host's
/// Landlock ABI. `net` is (proxy mode, cgroup-matched host mode, forwarded host mode).
/// `doctor` applies the same function to the probed host, so its verdict is the launch's.
pub(crate) fn refusal_without_user_namespaces(
    v: &Verified,
    why: &str,
    (proxy_mode, host_net, forwarded): (bool, bool, Option<&stage::nftables::Forwarded>),
    kernel: aegis_targets::landlock::Abi,
) -> Result<(), RunError> {
    if v.required("namespaces") {
        return Err(RunError::Unavailable {
            layer: "namespaces",
            why: format!("{why}; fix: allow unprivileged user namespaces on this host, or make the policy's namespaces and mounts layers best-effort (Landlock + seccomp only)"),
        });
    }
    if proxy_mode && v.required("nftables") {
        // Without its own network namespace only Landlock and seccomp could keep the proxy
        // the only way out, and Landlock tells TCP destinations apart by port, not address:
        // weaker than the namespace the policy requires.
        return Err(RunError::Unavailable {
            layer: "network",
            why: format!(
                "network mode `proxy` needs a network namespace to be the only route out: {why}; fix: allow unprivileged user namespaces on this host; with nftables \"best-effort\" it runs with Landlock + seccomp instead (TCP to the proxy's port only, told apart by port, not address)"
            ),
        });
    }
    if proxy_mode && (kernel.0 < 4 || v.file(stage::landlock::FILE).is_none()) {
        // The proxy on a host loopback port is the only way out only while Landlock's TCP
        // port rules (ABI 4) keep every other TCP destination closed.
        return Err(RunError::Unavailable {
            layer: "network",
            why: format!(
                "network mode `proxy` without a network namespace needs Landlock ABI 4 (TCP port rules) and a Landlock ruleset to keep the proxy the only way out; this kernel's ABI is {}{}; fix: allow unprivileged user namespaces on this host, or run it on Linux {}+",
                kernel.0,
                if v.file(stage::landlock::FILE).is_some() { "" } else { ", and the bundle has no ruleset" },
                aegis_targets::landlock::compat::linux_release(aegis_targets::landlock::Abi(4))
            ),
        });
    }
    if !proxy_mode && !host_net && v.required("nftables") {
        // Network mode `none` is a network namespace, and so is `host` mode for a launcher
        // that cannot filter the host's namespace; without one the agent would have the
        // host's network. Only a bundle that makes this best-effort runs.
        return Err(RunError::Unavailable {
            layer: "network",
            why: format!(
                "{}: {why}; fix: allow unprivileged user namespaces on this host{}",
                match forwarded {
                    Some(f) => format!("network mode `host` needs a network namespace here ({}), to forward only the granted endpoints", f.why),
                    None => "network mode `none` needs a network namespace".to_string(),
                },
                if forwarded.is_some() { ", or run aegis-exec as root on a host with a cgroup2 tree (host mode then filters the host's own namespace)" } else { "" }
            ),
        });
    }
    Ok(())
}

/// What a launch without user namespaces gets instead (after
/// [`refusal_without_user_namespaces`]): the run's own /tmp in place of the private one, and
/// the proxy on a host loopback port in proxy mode.
fn without_user_namespaces(
    v: &Verified,
    ident: &Identity,
    why: &str,
    (proxy_mode, host_net, forwarded): (bool, bool, Option<&stage::nftables::Forwarded>),
    proxy_prep: Option<&stage::proxy::Prepared>,
    env: &[(String, String)],
    landlock: &mut stage::landlock::ChildLandlock,
) -> Result<NoUserNamespaces, RunError> {
    refusal_without_user_namespaces(v, why, (proxy_mode, host_net, forwarded), aegis_targets::landlock::kernel_abi())?;
    // No mount namespace, so no private /tmp: the run gets its own directory instead (never
    // the host's /tmp), granted by Landlock in place of /tmp.
    let tmp = stage::mounts::PrivateTmp::create(&v.manifest.agent, ident.uid, ident.gid, !ident.root)?;
    let moved = landlock.retarget_tmp(tmp.path())?;
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != "TMPDIR").cloned().collect();
    for (k, val) in env.iter_mut() {
        if k == "HOME" {
            *val = tmp.path().display().to_string();
        }
    }
    env.push(("TMPDIR".into(), tmp.path().display().to_string()));
    env.sort();
    let tmp_note = format!(
        "; private /tmp is {} (the agent's, mode 0700, {}TMPDIR and HOME point there; removed at exit)",
        tmp.path().display(),
        if moved { "granted by Landlock in place of /tmp; " } else { "" }
    );
    let mut host_proxy = None;
    let mut nonet = stage::nonet::ChildNoNet::default();
    if proxy_mode {
        // The proxy on a host loopback port, Landlock's only TCP destination, only TCP at
        // all, connections admitted from the agent's processes only.
        let host = stage::proxy::host_listener()?;
        if !landlock.only_tcp_to(host.port) {
            // Checked above (the bundle has a ruleset): a plan without one is a bug here.
            return Err(RunError::internal("proxy mode without a network namespace", "no Landlock ruleset to add the proxy's port rule to"));
        }
        if let Some(p) = proxy_prep {
            env = p.relocate(&env, host.port, tmp.path())?;
        }
        nonet = stage::nonet::ChildNoNet { stream_only: true };
        // Agent processes that daemonize stay the supervisor's descendants, so the proxy can
        // still tell them apart from strangers.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        host_proxy = Some(host);
    }
    let nft_layer = (!host_net && !proxy_mode).then(|| {
        Layer::new(
            "nftables",
            LayerStatus::NotEnforced,
            format!(
                "best-effort: no network namespace{}, the agent has the host's network UNFILTERED (Landlock TCP rules still apply if the bundle has them)",
                forwarded.map(|f| format!(" and {}", f.why)).unwrap_or_default()
            ),
        )
    });
    Ok(NoUserNamespaces { tmp, env, tmp_note, host_proxy, nonet, nft_layer })
}

/// Kills and reaps the child if the launch is abandoned after clone.
struct ChildGuard {
    pid: libc::pid_t,
    armed: bool,
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            let _ = supervise::reap_blocking(self.pid);
        }
    }
}

fn launch(opts: &LaunchOptions, audit: &mut Audit, signals: &Signals) -> Result<i32, RunError> {
    let mut clock = Clock::new();
    let mut report = EnforcementReport::default();

    // ── prepare: every input checked, every artifact decoded, who and what decided ─────
    // Why first: a launch that will be refused creates nothing (no leaf, no namespace).
    let Prepared {
        v,
        ident,
        proxy_mode,
        proxy_prep,
        instance,
        cg,
        nftp,
        landlock_child,
        landlock_note,
        seccomp_child,
        seccomp_note,
        mediation,
        env,
        cwd,
        cwd_asked,
        command_path,
        host_net,
        forwarded,
        force_no_userns,
        mut premade_netns,
        mut nft_layer,
        mut host_load,
    } = prepare(opts, audit, &mut report, &mut clock)?;
    let premade = premade_netns.is_some();
    let mut table = None;

    // ── spawn: the cgroup leaf, the channels, the child ────────────────────────────────
    // Why here: the leaf (limits written) exists before the child, which is born in it
    // where the kernel allows; the child waits on the go pipe until confirmed.
    let (mut leaf, cg_layer) = stage::cgroup::create(&v, cg.as_ref(), &instance.id())?;
    report.cgroup_mode = cg.as_ref().map(|p| p.layout.name().to_string()).unwrap_or_default();
    clock.lap("cgroup");

    let cap_last = stage::caps::cap_last();
    let (go_r, go_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let (handoff_rx, handoff_tx) = handoff::channel()?;
    // The sockets of the agent's network namespace (none/proxy mode): made by the child from
    // inside, or by the supervisor itself in the namespace it premade (see stage::netns).
    let net_plan = |verify: bool| {
        use stage::netns::{ChildNet, NetSpec};
        match (&proxy_prep, &forwarded) {
            (Some(p), _) => ChildNet::plan(NetSpec { proxy: true, tcp: &p.forwards, observe: nftp.is_some(), verify, ..NetSpec::default() }),
            (None, Some(f)) => ChildNet::plan(NetSpec { tcp: &f.tcp, udp: &f.udp, optional: true, observe: true, verify, ..NetSpec::default() }),
            (None, None) => ChildNet::plan(NetSpec { observe: !host_net && nftp.is_some(), verify, ..NetSpec::default() }),
        }
    };
    // The agent's own session, its pty when the user's terminal is in play, and the init
    // that reports the agent's status on this pipe ([`crate::tty`], [`stage::init`]).
    let terminal = crate::tty::Terminal::open(opts.terminal_filter)?;
    let (status_r, status_w) = pipe()?;
    let wall_time_ms = cg.as_ref().and_then(|p| p.spec.wall_time_ms).unwrap_or(0);
    let mut iso = Isolation::Full { host_net };
    let mut userns_note = String::new();
    // The child's plan for an isolation, and the mounts line of the report.
    let build_plan = |iso: Isolation, env: &[(String, String)]| -> Result<(ChildPlan, String), RunError> {
        let full = matches!(iso, Isolation::Full { .. });
        let (mounts, mounts_detail) = stage::mounts::prepare(&v, full)?;
        // The trust bundle goes into the agent's private /tmp, which only a mount plan makes
        // (without one, /tmp is the host's: nothing is written there).
        let private_tmp = full && mounts.plan.is_some();
        let plan = ChildPlan {
            go_read: go_r,
            report_write: rep_w,
            parent_fds: [go_w, rep_r, handoff_rx.raw()],
            handoff: None,
            old_mask: signals.old_mask,
            ns: stage::namespaces::ChildNs {
                new_cgroupns: full,
                hostname: if full { std::ffi::CString::new(v.manifest.agent.as_str()).ok() } else { None },
                // A premade namespace already has lo up (and belongs to the supervisor's
                // user namespace, where the child has no capability).
                lo_up: full && !host_net && !premade,
            },
            net: if full && !host_net && !premade {
                // The table is loaded after clone and verified through the child's socket.
                net_plan(nftp.is_some())
            } else {
                stage::netns::ChildNet::default()
            },
            mounts,
            seed: stage::mounts::ChildSeed {
                dir: proxy_prep.as_ref().filter(|_| private_tmp).and_then(|_| std::ffi::CString::new(stage::proxy::SEED_DIR).ok()),
                files: proxy_prep
                    .as_ref()
                    .filter(|_| private_tmp)
                    .map(|p| p.seed_files.iter().filter_map(|(k, b)| Some((std::ffi::CString::new(k.as_str()).ok()?, b.clone()))).collect())
                    .unwrap_or_default(),
            },
            caps: stage::caps::ChildCaps {
                uid: ident.uid,
                gid: ident.gid,
                groups: ident.root.then(|| ident.groups.clone()),
                cap_last,
            },
            landlock: stage::landlock::ChildLandlock::placeholder(),
            nonet: stage::nonet::ChildNoNet::default(),
            seccomp: stage::seccomp::ChildSeccomp::placeholder(),
            exec: stage::exec::ChildExec::prepare(&command_path, &v.command, env, &cwd, cwd_asked)?,
            term: terminal.as_ref().map_or_else(stage::init::ChildTerm::none, |t| t.child()),
            init: stage::init::ChildInit { status_write: status_w, wall_time_ms },
        };
        Ok((plan, mounts_detail))
    };
    let landlock_min_abi = stage::landlock::min_abi(&landlock_child);
    let (mut plan, mut mounts_detail) = build_plan(iso, &env)?;
    plan.landlock = landlock_child;
    plan.seccomp = seccomp_child;
    plan.handoff = Some(handoff_tx);
    // The agent is born in its cgroup2 leaf where the kernel allows it (CLONE_INTO_CGROUP):
    // on a pure cgroup v2 host that replaces the migration, which waits for an RCU grace
    // period, the longest step of a launch; v1 hierarchies (hybrid hosts) still migrate.
    let cg_dir = leaf.as_ref().and_then(|l| l.unified_dir()).and_then(|d| {
        let c = std::ffi::CString::new(d.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: open(2) of a NUL-terminated path with constant flags.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        // SAFETY: a new fd we own.
        (fd >= 0).then(|| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    });
    let mut born_in_unified = false;
    let mut clone_agent = |flags: libc::c_int| -> Result<libc::pid_t, i32> {
        if let Some(fd) = &cg_dir {
            use std::os::fd::AsRawFd;
            // SAFETY: as for clone_child below.
            match unsafe { namespaces::clone_child_into(flags, fd.as_raw_fd()) } {
                Ok(Some(pid)) => {
                    born_in_unified = true;
                    return Ok(pid);
                }
                Ok(None) => {}
                Err(e) => return Err(e),
            }
        }
        // SAFETY: the supervisor is single-threaded here (no thread was ever spawned, or
        // every one was joined), and the child only runs `child::run`.
        unsafe { namespaces::clone_child(flags) }
    };
    // Without user namespaces: the run's own /tmp (removed when this value is dropped, at
    // the end of the launch), the environment pointing at it, and the report's words.
    let mut private_tmp: Option<stage::mounts::PrivateTmp> = None;
    let mut tmp_note = String::new();
    // Proxy mode without a network namespace: the proxy's host loopback listener.
    let mut host_proxy: Option<stage::proxy::HostListener> = None;
    // Sockets the supervisor made in its premade namespace, and its rtnetlink socket there.
    let mut premade_net: Option<(handoff::Collected, stage::netns::ChildNet, Option<OwnedFd>)> = None;
    let first = if force_no_userns {
        Err(libc::EPERM)
    } else if let Some(n) = &premade_netns {
        // Born in the premade namespace: this thread enters it for the clone only.
        let home = std::fs::File::open("/proc/self/ns/net").map_err(|e| RunError::internal("opening /proc/self/ns/net", e))?;
        namespaces::enter_net(&n.ns)?;
        let r = clone_agent(iso.clone_flags() & !libc::CLONE_NEWNET);
        if let Ok(0) = r {
            child::run(&plan)
        }
        // Still inside: the namespace belongs to our user namespace, not the child's, so we
        // make its sockets here, on this thread (the child could not).
        if let Ok(pid) = r {
            let mut sink = handoff::Collected::default();
            let plan = net_plan(false);
            match plan.create(&mut sink) {
                Ok(rtnl) => {
                    // SAFETY: `create` hands us ownership of its rtnetlink socket (or -1).
                    let rtnl = (rtnl >= 0).then(|| unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rtnl) });
                    premade_net = Some((sink, plan, rtnl));
                }
                Err(f) => {
                    let _ = namespaces::enter_net(&home);
                    // SAFETY: kill(2) on our own child; the launch is abandoned.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let _ = supervise::reap_blocking(pid);
                    return Err(fail_error(f, ""));
                }
            }
        }
        if let Err(e) = namespaces::enter_net(&home) {
            if let Ok(pid) = r {
                // SAFETY: kill(2) on our own child; the launch is abandoned.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                let _ = supervise::reap_blocking(pid);
            }
            return Err(e);
        }
        r
    } else {
        clone_agent(iso.clone_flags())
    };
    let pid = match first {
        Ok(0) => child::run(&plan),
        Ok(pid) => pid,
        Err(errno) if matches!(errno, libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EUSERS | libc::EACCES) => {
            let why = format!(
                "clone(CLONE_NEWUSER|NEWNS|NEWPID|NEWIPC|NEWUTS{}) failed: {} (user namespaces blocked?)",
                if host_net { "" } else { "|NEWNET" },
                std::io::Error::from_raw_os_error(errno)
            );
            let nous = without_user_namespaces(&v, &ident, &why, (proxy_mode, host_net, forwarded.as_ref()), proxy_prep.as_ref(), &env, &mut plan.landlock)?;
            iso = Isolation::None;
            if let Some(n) = premade_netns.take() {
                // Unused: reap its `nft`; the namespace goes with the file.
                let _ = n.finish();
            }
            userns_note = format!("best-effort: {why}; running with Landlock + seccomp + cgroup only");
            tmp_note = nous.tmp_note;
            host_proxy = nous.host_proxy;
            private_tmp = Some(nous.tmp);
            if let Some(l) = nous.nft_layer {
                nft_layer = l;
            }
            let env_no_mountns = nous.env;
            let (mut p2, detail) = build_plan(iso, &env_no_mountns)?;
            p2.nonet = nous.nonet;
            mounts_detail = detail;
            std::mem::swap(&mut p2.landlock, &mut plan.landlock);
            std::mem::swap(&mut p2.seccomp, &mut plan.seccomp);
            std::mem::swap(&mut p2.handoff, &mut plan.handoff);
            plan = p2;
            // SAFETY: as above.
            match unsafe { namespaces::clone_child(0) } {
                Ok(0) => child::run(&plan),
                Ok(pid) => pid,
                Err(e) => return Err(RunError::internal("fork", std::io::Error::from_raw_os_error(e))),
            }
        }
        Err(e) => return Err(RunError::internal("clone", std::io::Error::from_raw_os_error(e))),
    };
    let mut guard = ChildGuard { pid, armed: true };
    close(go_r);
    close(rep_w);
    // Our copy of the child's handoff end: once the child's copy closes (exec), the
    // channel reaches EOF.
    plan.handoff = None;
    close(status_w);
    drop(cg_dir);
    let born = Born { in_unified_leaf: born_in_unified };
    // ── confirm: maps, cgroup, nftables, sockets, then the child's own verdict ─────────
    // Why here: the child is held before it drops its capabilities until every layer the
    // supervisor applies is in place and verified; nothing of the agent runs before.
    let premade_routes = premade_net.as_mut().map(|(_, plan, rtnl)| (&*plan, rtnl.take()));
    // Messages the child handed over while the supervisor waited for one in particular.
    let mut early = Vec::new();
    let result = parent_setup(
        &v,
        iso,
        pid,
        leaf.as_ref(),
        born,
        nftp.as_ref(),
        premade_netns.take(),
        premade_routes,
        host_load.take(),
        host_net,
        &ident,
        go_w,
        (&handoff_rx, &mut early),
    );
    let (ns_detail, agent_netns, nft_child, supervisor_routed, host_table) = match result {
        Ok(r) => r,
        Err(e) => {
            // A child that failed first says why (our failure to signal it is only the
            // consequence): with the go pipe closed it stops waiting and exits.
            close(go_w);
            let report = read_reports(rep_r);
            close(rep_r);
            return Err(match report {
                Some(r) if r.ok == 0 && r.stage != 0 => child_failure(&r),
                _ => e,
            });
        }
    };
    clock.lap("clone+maps+cgroup+nft(overlapped)");
    // Records of the supervisor's own decisions (proxy, seccomp notifications).
    let (proxy_tx, proxy_rx) = std::sync::mpsc::channel();
    // A filter that notifies is served before the child execs: the exec itself, and the
    // agent's first connect, wait for an answer.
    let mut notify_server = None;
    // The sandbox's own processes in the agent's leaf (the broker), which the proxy skips.
    let mut helpers = Vec::new();
    if let Some(m) = &mediation {
        match stage::seccomp::take_handover(m, &handoff_rx, &mut early) {
            Ok(Some(mut h)) => {
                helpers.extend(h.broker_process());
                notify_server = Some(stage::seccomp::serve(m, h, pid, proxy_tx.clone())?);
            }
            Ok(None) => {} // the child ended first; its report says why
            Err(e) => {
                close(go_w);
                close(rep_r);
                return Err(e);
            }
        }
    }
    // Wait for the child's verdict: a report, then EOF when exec closes the pipe.
    let final_report = read_reports(rep_r);
    close(rep_r);
    // Held open until now: the child checks it to know the supervisor is still alive.
    close(go_w);
    clock.lap("wait-for-child-exec");
    let r = match final_report {
        Some(r) if r.ok == 1 => r,
        Some(r) => return Err(child_failure(&r)),
        None => {
            return Err(RunError::internal("child", "exited before reporting (killed?)"));
        }
    };
    clock.timings.child_ns = r.stage_ns;
    guard.armed = false;
    // ── services: what the supervisor runs for the agent, from what the child handed over
    // Why after exec: every message of the child is queued once it exec'd.
    let mut handed = early;
    handed.extend(handoff_rx.drain()?);
    if let Some((c, _, _)) = premade_net.take() {
        handed.extend(c.0);
    }
    let routed = supervisor_routed.unwrap_or(stage::netns::Routed {
        v4: r.info[child_report::INFO_NET_ROUTE4_ERRNO] as i32,
        v6: r.info[child_report::INFO_NET_ROUTE6_ERRNO] as i32,
    });
    let procs_file = leaf.as_ref().and_then(|l| l.procs_files().into_iter().next());
    let (nflog, proxy_handle, proxy_layer) = start_services(
        handed,
        NetFacts { proxy_mode, forwarded: forwarded.as_ref(), iso, agent_netns, routed },
        (nft_child, host_table),
        (&mut table, &mut nft_layer),
        proxy_prep.map(|p| (p, host_proxy.take())),
        (pid, procs_file, helpers, proxy_tx.clone()),
    )?;
    if proxy_handle.is_some() {
        clock.lap("proxy");
    }
    let proxy_feed = if proxy_handle.is_some() || notify_server.is_some() {
        Some(supervise::ProxyFeed::start(proxy_tx, proxy_rx, proxy_handle.as_deref())?)
    } else {
        None
    };

    // ── report: what was enforced, for whom, before the agent's own records ───────────
    if let Some((line, _)) = report.identity.as_mut() {
        match r.info[child_report::INFO_CWD_ERRNO] as i32 {
            0 => line.push_str(&format!("; runs {} in {}", command_path.display(), cwd.display())),
            e => line.push_str(&format!(
                "; runs {} in / ({} is not in the sandbox: {})",
                command_path.display(),
                cwd.display(),
                std::io::Error::from_raw_os_error(e)
            )),
        }
    }
    report.push(cg_layer);
    report.push(match iso {
        Isolation::Full { .. } => Layer::new(
            "namespaces",
            LayerStatus::Fully,
            format!("new {ns_detail},cgroup namespaces; pid 1 is aegis's init, the agent (pid 2) its child, with the same uid and gid inside and on the host"),
        ),
        Isolation::None => Layer::new("namespaces", LayerStatus::NotEnforced, userns_note.clone()),
    });
    let info = r.info;
    let plan_applied = v.file(stage::mounts::FILE).is_some() && matches!(iso, Isolation::Full { .. });
    report.push(mounts_layer(iso, plan_applied, &mounts_detail, &tmp_note, &info));
    if !host_net && nftp.is_none() && matches!(iso, Isolation::Full { .. }) {
        nft_layer = Layer::new("nftables", LayerStatus::Fully, "network mode none: own network namespace with loopback only (no ruleset needed)");
    }
    report.push(nft_layer);
    if let Some(l) = proxy_layer {
        report.push(l);
    }
    report.push(caps_layer(&info, cap_last));
    report.push(Layer::new("no_new_privs", LayerStatus::Fully, "set and verified"));
    report.landlock_abi = Some(aegis_targets::landlock::kernel_abi().0).filter(|a| *a > 0);
    let in_force = aegis_targets::landlock::InForce {
        pid_namespace: matches!(iso, Isolation::Full { .. }),
        network_namespace: matches!(iso, Isolation::Full { host_net: false }),
        mount_plan: plan_applied,
    };
    report.push(landlock_layer(landlock_note, &info, &landlock_min_abi, in_force));
    let mediated = mediation.as_ref().filter(|_| notify_server.is_some()).map(|m| m.describe());
    report.push(seccomp_layer(seccomp_note, &info, mediated));
    report.push(Layer::new("fds", LayerStatus::Fully, "inherited descriptors above 2 closed"));
    report.push(match &terminal {
        Some(t) => Layer::new("terminal", LayerStatus::Fully, t.describe()),
        None => Layer::new("terminal", LayerStatus::Fully, "no terminal among the agent's stdio; it runs in a session of its own, without a controlling terminal"),
    });
    report.push(Layer::new(
        "init",
        LayerStatus::Fully,
        "an init inside every layer forwards signals to the agent, reaps, resumes a stopped agent, enforces the wall time (also while the supervisor is stopped) and reports the agent's status",
    ));
    report.push(audit.layer());
    if !v.params.is_empty() {
        // For `aegis why`: the policy's parameterised rules are judged with these values.
        let values: std::collections::BTreeMap<&str, String> = v.params.iter().map(|(k, p)| (k.as_str(), p.display().to_string())).collect();
        audit.queue(Event::Note { component: "aegis-exec".into(), message: format!("{PARAMS_NOTE}{}", serde_json::to_string(&values).unwrap_or_default()) });
    }
    audit.queue(report.to_event());
    audit.queue(Event::AgentStarted {
        command: v.command.clone(),
        pid: pid as u32,
        identity: Some(ident.to_audit()),
    });
    // Nothing runs unrecorded: if the launch records cannot be written, the guard kills it.
    audit.flush()?;
    guard.armed = false;
    clock.lap("audit");
    if opts.verbose {
        eprint!("{}", report.to_text());
        eprint!("{}", clock.timings.to_text());
    }

    // ── supervise: until the agent is reaped ─────────────────────────────────────────
    let spec = cg.as_ref().map(|p| &p.spec);
    let limits = supervise::Limits {
        wall_time: spec.and_then(|s| s.wall_time_ms).map(Duration::from_millis),
        oom_group: spec.is_some_and(|s| s.memory_oom_group),
        deny_prefix: nftp.as_ref().filter(|_| host_net && table.is_some()).map(|p| p.log_prefix.clone()),
        nflog,
        init_status: Some(status_r),
    };
    // The user's terminal goes raw and is relayed from here on (the agent's first output
    // waited in its pty); restored when the relay finishes or is dropped on any path.
    let relay = terminal.map(crate::tty::Terminal::start).transpose()?;
    let mut events = Vec::new();
    let outcome = supervise::run(pid, leaf.as_ref(), &limits, signals, audit, proxy_feed.as_ref(), opts.verbose);
    if let Some(r) = relay {
        r.finish();
    }
    close(status_r);
    if let Some(s) = notify_server.take() {
        let stats = s.stop();
        // The handlers' last aggregated records were sent as the server stopped.
        if let Some(f) = &proxy_feed {
            f.finish(audit);
        }
        events.push(Event::Note {
            component: "supervisor".into(),
            message: format!(
                "seccomp notifications: {} answered ({} refused, {} abandoned by the agent), at most {} at once, throttled {} time(s), supervisor cpu {} us",
                stats.handled, stats.refused, stats.gone, stats.max_workers, stats.throttled, stats.cpu_us
            ),
        });
    }
    let usage = leaf.as_ref().map(|l| l.usage()).unwrap_or_default();
    if usage.pids_limit_hits > 0 {
        events.push(Event::Resource {
            limit: aegis_audit::ResourceLimit::PidsLimit,
            detail: format!("pids.max refused {} fork(s)", usage.pids_limit_hits),
        });
    }
    if usage.oom_kills > 0 && !outcome.oom_recorded {
        events.push(Event::Resource {
            limit: aegis_audit::ResourceLimit::OomKill,
            detail: format!("{} OOM kill(s); peak {} bytes", usage.oom_kills, usage.memory_peak.unwrap_or(0)),
        });
    }
    // ── clean up: on every path (Drop does it too if we return early) ─────────────────
    let mut cleanup_errors = Vec::new();
    if let Some(t) = table.as_mut() {
        if host_net {
            if let Err(e) = t.remove() {
                cleanup_errors.push(e.to_string());
            }
        } else {
            // The table lived in the agent's network namespace, which died with it.
            t.disarm();
        }
    }
    if let Some(l) = leaf.as_mut()
        && let Err(e) = l.remove()
    {
        cleanup_errors.push(e.to_string());
    }
    if let Some(t) = private_tmp.take()
        && let Err(e) = t.remove()
    {
        cleanup_errors.push(e);
    }
    // Leftovers of supervisors that were SIGKILLed (they cannot clean up themselves): swept
    // after the agent exited, so it costs no launch latency. Tables are listed over netlink
    // (one dump, no `nft` process), cheap enough for every run.
    let alive = |pid: i32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    if let Some(p) = &cg {
        for d in aegis_targets::cgroup::sweep_stale(&p.layout, &alive) {
            audit.queue(Event::Note {
                component: "supervisor".into(),
                message: format!("removed stale cgroup leaf {}", d.display()),
            });
        }
    }
    for t in aegis_targets::nftables::sweep_stale(&alive) {
        audit.queue(Event::Note {
            component: "supervisor".into(),
            message: format!("removed stale nftables table inet {t}"),
        });
    }
    let (cpu_user_us, cpu_sys_us) = outcome.cpu_us();
    let peak = usage.memory_peak.or_else(|| u64::try_from(outcome.rusage.ru_maxrss).ok().map(|kb| kb * 1024));
    for e in events {
        audit.queue(e);
    }
    for err in &cleanup_errors {
        eprintln!("aegis-exec: cleanup: {err}");
        audit.queue(Event::Note {
            component: "supervisor".into(),
            message: format!("cleanup failed: {err}"),
        });
    }
    audit.queue(Event::AgentExited {
        pid: pid as u32,
        status: outcome.exited(),
        signal: outcome.signal(),
        cpu_user_us,
        cpu_sys_us,
        peak_memory_bytes: peak,
    });
    // Written by `Audit::close` with the final checkpoint (into the reserved room if an
    // append failed during the run).
    if opts.verbose {
        eprintln!(
            "aegis-exec: agent exited: {} (exit code {}), cpu user {} us sys {} us, peak memory {} bytes",
            match (outcome.exited(), outcome.signal()) {
                (Some(c), _) => format!("status {c}"),
                (_, Some(s)) => format!("signal {s}"),
                _ => "unknown".into(),
            },
            outcome.exit_code(),
            cpu_user_us,
            cpu_sys_us,
            peak.unwrap_or(0)
        );
    }
    Ok(outcome.exit_code())
}

/// What [`start_services`] started: the NFLOG observer, the proxy and its report line.
type Services = (Option<stage::netlog::Observer>, Option<std::sync::Arc<aegis_proxy::server::Proxy>>, Option<Layer>);

/// The report's mounts line, from the child's facts.
fn mounts_layer(iso: Isolation, plan_applied: bool, detail: &str, tmp_note: &str, info: &[u32; child_report::INFO_LEN]) -> Layer {
    let hidden = if info[child_report::INFO_HOST_HIDDEN] == stage::mounts::hidden_count() { "hidden" } else { "NOT hidden" };
    if plan_applied {
        return Layer::new(
            "mounts",
            if info[child_report::INFO_MOUNTS_SKIPPED] == 0 { LayerStatus::Fully } else { LayerStatus::Partially },
            format!(
                "{detail}: {} mounted, {} skipped (missing on this host), {}; /proc/cmdline {hidden}; pivot_root, host tree detached",
                info[child_report::INFO_MOUNTS_MOUNTED],
                info[child_report::INFO_MOUNTS_SKIPPED],
                match (info[child_report::INFO_MEMFD_NOEXEC], info[child_report::INFO_MEMFD_ERRNO] as i32) {
                    (1, _) => "memfd_noexec 2 (memfd code cannot be executed)".to_string(),
                    (_, 0) => "memfd_noexec not asked for".to_string(),
                    (_, libc::EACCES) | (_, libc::EPERM) => "memfd_noexec NOT set (the vm.memfd_noexec sysctl is writable by the host's root only, even in the agent's own pid namespace)".to_string(),
                    (_, e) => format!("memfd_noexec NOT set ({})", std::io::Error::from_raw_os_error(e)),
                },
            ),
        );
    }
    match iso {
        Isolation::Full { .. } => Layer::new("mounts", LayerStatus::Partially, format!("{detail}; /proc/cmdline {hidden}")),
        Isolation::None => Layer::new("mounts", LayerStatus::NotEnforced, format!("{detail}{tmp_note}")),
    }
}

/// The report's capabilities line.
fn caps_layer(info: &[u32; child_report::INFO_LEN], cap_last: u32) -> Layer {
    if info[child_report::INFO_CAPS_BOUNDING] == 1 {
        Layer::new("capabilities", LayerStatus::Fully, format!("all sets and bounding set empty (caps 0..={cap_last}), securebits locked"))
    } else {
        Layer::new(
            "capabilities",
            LayerStatus::Fully,
            "effective, permitted, inheritable and ambient sets empty; the bounding set and securebits stay as they were (an unprivileged launch without a user namespace lacks CAP_SETPCAP), and no_new_privs keeps execve from granting anything",
        )
    }
}

/// The report's Landlock line (`note`: why the layer was not applied); `namespaces` and
/// `plan_applied` say what else of this launch enforces what an old ABI lacks.
fn landlock_layer(note: Option<String>, info: &[u32; child_report::INFO_LEN], needs: &stage::landlock::Needs, in_force: aegis_targets::landlock::InForce) -> Layer {
    if let Some(n) = note {
        return Layer::new("landlock", LayerStatus::NotEnforced, n);
    }
    Layer::new(
        "landlock",
        match info[child_report::INFO_LANDLOCK_STATUS] {
            1 => LayerStatus::Fully,
            2 => LayerStatus::Partially,
            _ => LayerStatus::NotEnforced,
        },
        needs.detail(info[child_report::INFO_LANDLOCK_ABI], info[child_report::INFO_LANDLOCK_DETAILS], in_force),
    )
}

/// The report's seccomp line (`note`: why the layer was not applied; `mediated`: what the
/// supervisor answers for the filter).
fn seccomp_layer(note: Option<String>, info: &[u32; child_report::INFO_LEN], mediated: Option<String>) -> Layer {
    match (note, info[child_report::INFO_SECCOMP_MODE]) {
        (Some(n), _) => Layer::new("seccomp", LayerStatus::NotEnforced, n),
        (None, 2) => Layer::new(
            "seccomp",
            LayerStatus::Fully,
            match mediated {
                Some(m) => format!("filter of {} instructions installed; Seccomp mode 2 verified; {m}", info[child_report::INFO_SECCOMP_LEN]),
                None => format!("filter of {} instructions installed; Seccomp mode 2 verified", info[child_report::INFO_SECCOMP_LEN]),
            },
        ),
        (None, m) => Layer::new("seccomp", LayerStatus::NotEnforced, format!("mode {m} after install")),
    }
}

/// A table a launch loaded (none when its best-effort load failed) and its report line.
type TableLoad = (Option<aegis_targets::nftables::LoadedTable>, Layer);

/// The network facts [`start_services`] decides from.
struct NetFacts<'a> {
    proxy_mode: bool,
    forwarded: Option<&'a stage::nftables::Forwarded>,
    iso: Isolation,
    agent_netns: u64,
    /// The default routes to `lo` (added by the child, or by the supervisor in its premade
    /// namespace).
    routed: stage::netns::Routed,
}

/// After the agent exec'd: the NFLOG observer of its namespace's table, the relays of host
/// mode without root, the proxy (on its listener in the agent's namespace, or on the
/// host's loopback without one). Takes the table the launch loaded (`own`: the agent's
/// namespace; `host`: the host's, observed through the kernel log instead) into `table` and
/// completes the nftables report line; returns the observer, the proxy and the proxy's
/// report line. Every handed-over socket is checked before use. `helpers`: the sandbox's
/// own processes in the agent's leaf (the connect broker), which the proxy never takes for
/// the agent's.
fn start_services(
    mut handed: Vec<handoff::Message>,
    net: NetFacts,
    (own, host): (Option<TableLoad>, Option<TableLoad>),
    (table, nft_layer): (&mut Option<aegis_targets::nftables::LoadedTable>, &mut Layer),
    proxy: Option<(stage::proxy::Prepared, Option<stage::proxy::HostListener>)>,
    (pid, procs_file, helpers, events): (libc::pid_t, Option<std::path::PathBuf>, Vec<aegis_proxy::exe::Helper>, std::sync::mpsc::Sender<Event>),
) -> Result<Services, RunError> {
    // With an own-namespace table loaded, outside destinations are routed to lo and NFLOG
    // is read, so a direct connect is stopped at once and recorded. Not a reason to refuse
    // the launch (the table stops everything either way), but the report says what is
    // observed. (Host mode's table logs to the kernel log instead.)
    let mut nflog = None;
    if let Some((t, mut layer)) = own {
        if t.is_some() {
            let context = match (net.proxy_mode, net.forwarded) {
                (true, _) => "outside the proxy",
                (false, Some(_)) => "outside the granted endpoints",
                (false, None) => "in network mode none",
            };
            match stage::netlog::observer_from(&mut handed, net.routed, context) {
                Ok(o) => {
                    layer.detail.push_str(&format!(
                        "; denials observed (other destinations routed to lo, logged to NFLOG group {}, {})",
                        stage::netlog::NFLOG_GROUP,
                        if net.forwarded.is_some() { "dropped" } else { "rejected" }
                    ));
                    if let Some(gap) = o.gap() {
                        layer.detail.push_str(&format!(" except IPv6 ({gap})"));
                    }
                    nflog = Some(o);
                }
                Err(e) => layer.detail.push_str(&format!("; denials NOT observed ({e}): a direct connect fails unrecorded")),
            }
        }
        *table = t;
        *nft_layer = layer;
    }
    if let Some((t, layer)) = host {
        *table = t;
        *nft_layer = layer;
    }
    // Host mode in the agent's own namespace: the supervisor relays the granted endpoints.
    if let (Some(fw), Isolation::Full { .. }) = (net.forwarded, net.iso) {
        use aegis_targets::nftables::Proto;
        let targets: Vec<_> = fw.tcp.iter().map(|a| (*a, Proto::Tcp)).chain(fw.udp.iter().map(|a| (*a, Proto::Udp))).collect();
        let f = stage::forward::Forwards::from_handoff(&mut handed, &targets, net.agent_netns)?;
        nft_layer.detail.push_str(&format!("; {}", f.summary()));
        f.start()?;
    }
    let Some((p, host_proxy)) = proxy else { return Ok((nflog, None, None)) };
    let summary = p.summary.clone();
    let forwards = p.forwards.len();
    if let Isolation::Full { .. } = net.iso {
        let l = stage::proxy::listeners_from(&mut handed, &p.forwards, net.agent_netns)?;
        let handle = stage::proxy::start(p, l, pid, procs_file, helpers, events)?;
        return Ok((nflog, Some(handle), Some(Layer::new("proxy", LayerStatus::Fully, summary))));
    }
    let Some(h) = host_proxy else { return Ok((nflog, None, None)) };
    let port = h.port;
    let handle = stage::proxy::start_host(p, h, pid, helpers, events)?;
    *nft_layer = Layer::new(
        "nftables",
        LayerStatus::NotEnforced,
        "best-effort: no network namespace; the proxy is kept the only way out by Landlock (TCP by port) and seccomp (no other Internet sockets) instead",
    );
    let layer = Layer::new(
        "proxy",
        LayerStatus::Partially,
        format!(
            "egress proxy on the host's 127.0.0.1:{port} (no network namespace): Landlock makes TCP port {port} the agent's only TCP destination, but by port, not address (port {port} of another host is reachable too); non-TCP Internet sockets refused by seccomp; connections from processes outside the agent refused; {}",
            if forwards > 0 { format!("{forwards} transparent forward(s) NOT available (their endpoints are reachable through the proxy only)") } else { "no transparent forwards".to_string() }
        ),
    );
    Ok((nflog, Some(handle), Some(layer)))
}

/// Where the kernel created the agent.
#[derive(Clone, Copy)]
struct Born {
    /// In its cgroup2 leaf already (CLONE_INTO_CGROUP): that hierarchy needs no migration.
    in_unified_leaf: bool,
}

/// What the supervisor learned while the child set itself up: the namespaces line of the
/// report, the inode of the agent's network namespace (0 without one), the table loaded
/// into it (with its report line), and the routes the supervisor added itself (premade
/// namespace; otherwise the child reports them).
type ChildSetup = (
    String,
    u64,
    Option<TableLoad>,
    Option<stage::netns::Routed>,
    Option<TableLoad>,
);

#[allow(clippy::too_many_arguments)]
fn parent_setup(
    v: &Verified,
    iso: Isolation,
    pid: libc::pid_t,
    leaf: Option<&aegis_targets::cgroup::Leaf>,
    born: Born,
    nftp: Option<&stage::nftables::Prepared>,
    premade: Option<aegis_targets::nftables::PendingNetns>,
    premade_routes: Option<(&stage::netns::ChildNet, Option<OwnedFd>)>,
    host_load: Option<aegis_targets::nftables::HostLoad>,
    host_net: bool,
    ident: &Identity,
    go_w: i32,
    (handoff_rx, early): (&handoff::Receiver, &mut Vec<handoff::Message>),
) -> Result<ChildSetup, RunError> {
    let mut ns_detail = String::new();
    let mut agent_netns = 0;
    if let Isolation::Full { .. } = iso {
        namespaces::write_maps(pid, ident)?;
        ns_detail = namespaces::verify(pid, iso)?;
        if !host_net {
            // Read now: once the agent has exited, its namespace links are gone.
            agent_netns = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .map_err(|e| RunError::internal("reading the agent's network namespace", e))?;
        }
    }
    // The id maps are in place: let the child mount while we do the slow rest (cgroup v1
    // migrations wait for RCU grace periods; `nft` is a process start). The child waits for
    // `N` after its mounts, before it unshares its cgroup namespace (rooted at the leaf),
    // drops capabilities and execs.
    // SAFETY: write one byte from a static buffer to our pipe.
    if unsafe { libc::write(go_w, b"G".as_ptr().cast(), 1) } != 1 {
        return Err(RunError::os("signalling the child"));
    }
    let enter = || match leaf {
        Some(l) => stage::cgroup::enter(l, pid, born.in_unified_leaf),
        None => Ok(()),
    };
    let mut nft_child = None;
    let mut host_table = None;
    if let (Some(load), Some(p)) = (host_load, nftp) {
        // The host-namespace table has been loading since before the leaf existed; the
        // migration runs meanwhile, then the dispatch rule (which needs the leaf) goes in.
        let (loaded, entered) = stage::nftables::finish_host(v, p, load, leaf, enter);
        entered?;
        host_table = Some(loaded?);
    } else if let (Some(pending), Some(p)) = (premade, nftp) {
        // `nft` has been loading since before clone; the migration runs meanwhile.
        let (loaded, entered) = stage::nftables::finish_premade(v, p, pending, enter);
        entered?;
        nft_child = Some(loaded?);
    } else if !host_net && matches!(iso, Isolation::Full { .. }) && let Some(p) = nftp {
        // The cgroup migration runs while `nft` loads the table; the child hands over the
        // socket to verify it through as soon as its mounts are done.
        let verify_sock = || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match handoff_rx.recv(deadline)? {
                    Some(m) if m.tag == handoff::Tag::Netfilter => {
                        handoff::check_socket(&m, libc::AF_NETLINK, libc::SOCK_RAW)?;
                        return m.fd.ok_or_else(|| RunError::internal("descriptor handoff", "netfilter socket missing"));
                    }
                    Some(m) => early.push(m),
                    None => return Err(RunError::internal("child", "exited before handing over its netfilter socket")),
                }
            }
        };
        let (loaded, entered) = stage::nftables::load_in_child_netns(v, p, pid, enter, verify_sock);
        entered?;
        nft_child = Some(loaded?);
    } else {
        enter()?;
    }
    let table_loaded = matches!(nft_child, Some((Some(_), _)));
    // Routes to lo only once the table is in place (premade namespace: our own rtnetlink
    // socket there; otherwise the child adds them after `N`).
    let mut routed = None;
    if let Some((net, rtnl)) = premade_routes {
        routed = Some(match rtnl {
            Some(fd) if table_loaded => net.route(std::os::fd::IntoRawFd::into_raw_fd(fd)),
            _ => stage::netns::Routed { v4: libc::ENOENT, v6: libc::ENOENT },
        });
    }
    let go: &[u8; 1] = if table_loaded { b"N" } else { b"n" };
    // SAFETY: as above.
    if unsafe { libc::write(go_w, go.as_ptr().cast(), 1) } != 1 {
        return Err(RunError::os("signalling the child"));
    }
    Ok((ns_detail, agent_netns, nft_child, routed, host_table))
}

/// Variables the agent gets from the supervisor's environment without asking: what
/// programs need to speak the user's locale and draw on the terminal. Everything else
/// (tokens, cloud credentials, SSH agent sockets, the operator's `PATH` with its
/// `~/.cargo`, `~/.pyenv` entries) stays outside unless a `--env` names it.
const PASSED_BY_DEFAULT: &[&str] = &["LANG", "LANGUAGE", "TERM", "COLORTERM", "NO_COLOR", "TZ"];

/// The agent's environment: the default set, `LC_*`, `HOME=/tmp` (its private, writable
/// /tmp; the host home is not in the sandbox), `PATH` built from the policy's exec grants
/// ([`stage::exec::default_path`]), and each `--env NAME[=VALUE]` (which may set `PATH`).
fn agent_environment(extra: &[String], path: String) -> Result<Vec<(String, String)>, RunError> {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| PASSED_BY_DEFAULT.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    env.insert("HOME".into(), "/tmp".into());
    env.insert("PATH".into(), path);
    for e in extra {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => return Err(RunError::Refused(format!("--env {e}: not set in this environment"))),
            },
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(RunError::Refused(format!("--env {e}: `{k}` is not a variable name")));
        }
        env.insert(k, v);
    }
    Ok(env.into_iter().collect())
}
