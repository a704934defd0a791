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
use crate::child::{self, ChildPlan, ChildReport};
use crate::exit::RunError;
use crate::handoff;
use crate::identity::{self, Identity};
use crate::report::{EnforcementReport, Layer, LayerStatus, Timings};
use crate::signals::Signals;
use crate::stage::namespaces::{self, Isolation};
use crate::stage::verify::{LaunchOptions, Verified};
use crate::stage::{self, Instance, Stage};
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
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into());
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
    let mut timings = Timings::default();
    let mut report = EnforcementReport::default();
    let mut t = Instant::now();
    let mut lap = |timings: &mut Timings, name: &'static str| {
        let now = Instant::now();
        timings.supervisor.push((name, now - t));
        t = now;
    };

    // ── 1. verify ──────────────────────────────────────────────────────────────────────
    let bundle_path = opts.bundle.display().to_string();
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
    match &v.signed_by {
        Some(k) => {
            audit.queue(Event::BundleVerified {
                path: bundle_path.clone(),
                key_id: k.clone(),
            });
            report.push(Layer::new("verify", LayerStatus::Fully, format!("signed by key {k}; digests, expiry, serial {} ok", v.manifest.serial)));
        }
        None => {
            audit.queue(Event::UnsignedBundleAllowed {
                path: bundle_path.clone(),
                reason: "--allow-unsigned".into(),
            });
            report.push(Layer::new("verify", LayerStatus::Partially, "UNSIGNED bundle accepted (--allow-unsigned); digests checked"));
        }
    }
    // Who the agent runs as (refused input, like the bundle, before anything exists).
    let ident = identity::decide(opts.user.as_deref(), &opts.groups)?;
    report.identity = Some((ident.describe(), ident.to_audit()));
    let proxy_mode = v.manifest.network_mode == NetworkMode::Proxy;
    let proxy_prep = if proxy_mode { Some(stage::proxy::prepare(&v, &opts.resolve, &opts.upstream_ca)?) } else { None };

    // Everything is parsed and prepared now, before any namespace or cgroup exists.
    let instance = Instance::new();
    let cg = stage::cgroup::prepare(&v)?;
    // `host` mode filters the host's namespace only for root with a cgroup2 tree; anyone
    // else's agent gets its own namespace with the granted endpoints forwarded.
    let host_mode = stage::nftables::HostMode::decide(ident.root, cg.as_ref().map(|p| &p.layout));
    let nftp = stage::nftables::prepare(&v, &instance, host_mode)?;
    let (landlock_child, landlock_note) = stage::landlock::prepare(&v)?;
    let (seccomp_child, seccomp_note, mediation) = stage::seccomp::prepare(&v)?;
    let mut env = agent_environment(&opts.env)?;
    if let Some(p) = &proxy_prep {
        // The proxy's variables win over `--env`: the agent cannot be pointed elsewhere.
        env.retain(|(k, _)| !p.env.iter().any(|(pk, _)| pk == k));
        env.extend(p.env.iter().cloned());
        env.sort();
    }
    // The agent shares the host's network namespace (cgroup-matched host mode) or not.
    let host_net = v.manifest.network_mode == NetworkMode::Host && host_mode == stage::nftables::HostMode::Cgroup;
    // Host mode forwarded from the agent's own namespace: (TCP, UDP) targets.
    let forwarded = nftp.as_ref().and_then(|p| p.forwarded.clone());
    let force_no_userns = std::env::var_os("AEGIS_EXEC_TEST_NO_USERNS").is_some();
    // none/proxy: make the agent's network namespace now and let `nft` load its table
    // while everything else is prepared and the agent cloned into it (the load is the
    // longest step of a launch). Falls back to loading after clone if it cannot start.
    let mut premade_netns = match &nftp {
        Some(p) if !host_net => stage::nftables::start_premade(p),
        _ => None,
    };
    let premade = premade_netns.is_some();
    lap(&mut timings, "verify+prepare");

    // ── 2. cgroup ─────────────────────────────────────────────────────────────────────
    let (mut leaf, cg_layer) = stage::cgroup::create(&v, cg.as_ref(), &instance.id())?;
    report.cgroup_mode = cg.as_ref().map(|p| p.layout.name().to_string()).unwrap_or_default();
    lap(&mut timings, "cgroup");

    // ── 5 (host mode). nftables: needs the leaf's path, loaded before the agent exists ──
    let mut table = None;
    let mut nft_layer = Layer::new("nftables", LayerStatus::NotEnforced, "no nftables.json in bundle");
    if host_net && let Some(p) = &nftp {
        let (t, l) = stage::nftables::load_host(&v, p, leaf.as_ref())?;
        table = t;
        nft_layer = l;
        lap(&mut timings, "nftables(host)");
    }

    // ── 3. namespaces ─────────────────────────────────────────────────────────────────
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
    let build_plan = |iso: Isolation| -> Result<(ChildPlan, String), RunError> {
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
            seccomp: stage::seccomp::ChildSeccomp::placeholder(),
            exec: stage::exec::ChildExec::prepare(&v.command, &env)?,
            term: terminal.as_ref().map_or_else(stage::init::ChildTerm::none, |t| t.child()),
            init: stage::init::ChildInit { status_write: status_w, wall_time_ms },
        };
        Ok((plan, mounts_detail))
    };
    let landlock_min_abi = stage::landlock::min_abi(&landlock_child);
    let (mut plan, mut mounts_detail) = build_plan(iso)?;
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
            if v.required("namespaces") {
                return Err(RunError::Unavailable {
                    layer: "namespaces",
                    why: format!("{why}; fix: allow unprivileged user namespaces on this host, or make the policy's namespaces and mounts layers best-effort (Landlock + seccomp only)"),
                });
            }
            if proxy_mode {
                // Without its own network namespace the agent would reach the host's
                // network directly: the proxy would be a suggestion, not a boundary.
                return Err(RunError::Unavailable {
                    layer: "network",
                    why: format!("network mode `proxy` needs a network namespace (the proxy must be the only route out): {why}"),
                });
            }
            if !host_net && v.required("nftables") {
                // Network mode `none` is a network namespace, and so is `host` mode for a
                // launcher that cannot filter the host's namespace; without one the agent
                // would have the host's network. Only a bundle that makes this best-effort runs.
                return Err(RunError::Unavailable {
                    layer: "network",
                    why: match &forwarded {
                        Some(f) => format!(
                            "network mode `host` needs a network namespace here ({}), to forward only the granted endpoints: {why}",
                            f.why
                        ),
                        None => format!("network mode `none` needs a network namespace: {why}"),
                    },
                });
            }
            iso = Isolation::None;
            if let Some(n) = premade_netns.take() {
                // Unused: reap its `nft`; the namespace goes with the file.
                let _ = n.finish();
            }
            userns_note = format!("best-effort: {why}; running with Landlock + seccomp + cgroup only");
            if !host_net {
                nft_layer = Layer::new(
                    "nftables",
                    LayerStatus::NotEnforced,
                    format!(
                        "best-effort: no network namespace{}, the agent has the host's network UNFILTERED (Landlock TCP rules still apply if the bundle has them)",
                        forwarded.as_ref().map(|f| format!(" and {}", f.why)).unwrap_or_default()
                    ),
                );
            }
            let (mut p2, detail) = build_plan(iso)?;
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
        host_net,
        &ident,
        go_w,
        (&handoff_rx, &mut early),
    );
    let (ns_detail, agent_netns, mut nft_child, supervisor_routed) = match result {
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
    lap(&mut timings, "clone+maps+cgroup+nft(overlapped)");
    // Records of the supervisor's own decisions (proxy, seccomp notifications).
    let (proxy_tx, proxy_rx) = std::sync::mpsc::channel();
    // A filter that notifies is served before the child execs: the exec itself, and the
    // agent's first connect, wait for an answer.
    let mut early = Vec::new();
    let mut notify_server = None;
    if let Some(m) = &mediation {
        match stage::seccomp::take_handover(m, &handoff_rx, &mut early) {
            Ok(Some(h)) => notify_server = Some(stage::seccomp::serve(m, h, pid, proxy_tx.clone())?),
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
    lap(&mut timings, "wait-for-child-exec");
    let r = match final_report {
        Some(r) if r.ok == 1 => r,
        Some(r) => return Err(child_failure(&r)),
        None => {
            return Err(RunError::internal("child", "exited before reporting (killed?)"));
        }
    };
    timings.child_ns = r.stage_ns;
    guard.armed = false;
    // The agent exec'd: everything the child handed over is queued now.
    let mut handed = early;
    handed.extend(handoff_rx.drain()?);
    if let Some((c, _, _)) = premade_net.take() {
        handed.extend(c.0);
    }
    // With the table loaded, outside destinations are routed to lo and NFLOG is read, so a
    // direct connect is rejected at once and recorded. Not a reason to refuse the launch
    // (the table rejects everything either way), but the report says what is observed.
    let mut nflog = None;
    if let Some((Some(_), layer)) = nft_child.as_mut() {
        let routed = supervisor_routed.unwrap_or(stage::netns::Routed {
            v4: r.info[child::INFO_NET_ROUTE4_ERRNO] as i32,
            v6: r.info[child::INFO_NET_ROUTE6_ERRNO] as i32,
        });
        let context = match (proxy_mode, &forwarded) {
            (true, _) => "outside the proxy",
            (false, Some(_)) => "outside the granted endpoints",
            (false, None) => "in network mode none",
        };
        match stage::netlog::observer_from(&mut handed, routed, context) {
            Ok(o) => {
                layer.detail.push_str(&format!(
                    "; denials observed (other destinations routed to lo, logged to NFLOG group {}, {})",
                    stage::netlog::NFLOG_GROUP,
                    if forwarded.is_some() { "dropped" } else { "rejected" }
                ));
                if let Some(gap) = o.gap() {
                    layer.detail.push_str(&format!(" except IPv6 ({gap})"));
                }
                nflog = Some(o);
            }
            Err(e) => layer.detail.push_str(&format!("; denials NOT observed ({e}): a direct connect fails unrecorded")),
        }
    }
    if let Some((t, l)) = nft_child {
        table = t;
        nft_layer = l;
    }
    // Host mode in the agent's own namespace: the supervisor relays the granted endpoints.
    if let (Some(fw), Isolation::Full { .. }) = (&forwarded, iso) {
        use aegis_targets::nftables::Proto;
        let targets: Vec<_> = fw.tcp.iter().map(|a| (*a, Proto::Tcp)).chain(fw.udp.iter().map(|a| (*a, Proto::Udp))).collect();
        let f = stage::forward::Forwards::from_handoff(&mut handed, &targets, agent_netns)?;
        nft_layer.detail.push_str(&format!("; {}", f.summary()));
        f.start()?;
    }
    let listener = match &proxy_prep {
        Some(p) if matches!(iso, Isolation::Full { .. }) => Some(stage::proxy::listeners_from(&mut handed, &p.forwards, agent_netns)?),
        _ => None,
    };
    let mut proxy_layer = None;
    let mut proxy_handle = None;
    if let (Some(p), Some(l)) = (proxy_prep, listener) {
        let summary = p.summary.clone();
        proxy_handle = Some(stage::proxy::start(p, l, pid, leaf.as_ref().and_then(|l| l.procs_files().into_iter().next()), proxy_tx)?);
        proxy_layer = Some(Layer::new("proxy", LayerStatus::Fully, summary));
        lap(&mut timings, "proxy");
    }
    let proxy_feed = if proxy_handle.is_some() || notify_server.is_some() {
        Some(supervise::ProxyFeed::start(proxy_rx, proxy_handle.as_deref())?)
    } else {
        None
    };

    // ── report ───────────────────────────────────────────────────────────────────────
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
    report.push(if plan_applied {
        Layer::new(
            "mounts",
            if info[child::INFO_MOUNTS_SKIPPED] == 0 { LayerStatus::Fully } else { LayerStatus::Partially },
            format!(
                "{mounts_detail}: {} mounted, {} skipped (missing on this host), {}; pivot_root, host tree detached",
                info[child::INFO_MOUNTS_MOUNTED],
                info[child::INFO_MOUNTS_SKIPPED],
                match (info[child::INFO_MEMFD_NOEXEC], info[child::INFO_MEMFD_ERRNO] as i32) {
                    (1, _) => "memfd_noexec 2 (memfd code cannot be executed)".to_string(),
                    (_, 0) => "memfd_noexec not asked for".to_string(),
                    (_, libc::EACCES) | (_, libc::EPERM) => "memfd_noexec NOT set (the vm.memfd_noexec sysctl is writable by the host's root only, even in the agent's own pid namespace)".to_string(),
                    (_, e) => format!("memfd_noexec NOT set ({})", std::io::Error::from_raw_os_error(e)),
                }
            ),
        )
    } else {
        Layer::new(
            "mounts",
            if matches!(iso, Isolation::Full { .. }) { LayerStatus::Partially } else { LayerStatus::NotEnforced },
            mounts_detail,
        )
    });
    if !host_net && nftp.is_none() && matches!(iso, Isolation::Full { .. }) {
        nft_layer = Layer::new("nftables", LayerStatus::Fully, "network mode none: own network namespace with loopback only (no ruleset needed)");
    }
    report.push(nft_layer);
    if let Some(l) = proxy_layer {
        report.push(l);
    }
    report.push(if r.info[child::INFO_CAPS_BOUNDING] == 1 {
        Layer::new("capabilities", LayerStatus::Fully, format!("all sets and bounding set empty (caps 0..={cap_last}), securebits locked"))
    } else {
        Layer::new(
            "capabilities",
            LayerStatus::Fully,
            "effective, permitted, inheritable and ambient sets empty; the bounding set and securebits stay as they were (an unprivileged launch without a user namespace lacks CAP_SETPCAP), and no_new_privs keeps execve from granting anything",
        )
    });
    report.push(Layer::new("no_new_privs", LayerStatus::Fully, "set and verified"));
    report.landlock_abi = Some(aegis_targets::landlock::kernel_abi().0).filter(|a| *a > 0);
    report.push(match (landlock_note, info[child::INFO_LANDLOCK_STATUS]) {
        (Some(n), _) => Layer::new("landlock", LayerStatus::NotEnforced, n),
        (None, s) => Layer::new(
            "landlock",
            match s {
                1 => LayerStatus::Fully,
                2 => LayerStatus::Partially,
                _ => LayerStatus::NotEnforced,
            },
            landlock_min_abi.detail(
                info[child::INFO_LANDLOCK_ABI],
                info[child::INFO_LANDLOCK_DETAILS],
                aegis_targets::landlock::InForce {
                    pid_namespace: matches!(iso, Isolation::Full { .. }),
                    network_namespace: matches!(iso, Isolation::Full { host_net: false }),
                    mount_plan: plan_applied,
                },
            ),
        ),
    });
    report.push(match (seccomp_note, info[child::INFO_SECCOMP_MODE]) {
        (Some(n), _) => Layer::new("seccomp", LayerStatus::NotEnforced, n),
        (None, 2) => Layer::new(
            "seccomp",
            LayerStatus::Fully,
            match mediation.as_ref().filter(|_| notify_server.is_some()) {
                Some(m) => format!("filter of {} instructions installed; Seccomp mode 2 verified; {}", info[child::INFO_SECCOMP_LEN], m.describe()),
                None => format!("filter of {} instructions installed; Seccomp mode 2 verified", info[child::INFO_SECCOMP_LEN]),
            },
        ),
        (None, m) => Layer::new("seccomp", LayerStatus::NotEnforced, format!("mode {m} after install")),
    });
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
    audit.queue(report.to_event());
    audit.queue(Event::AgentStarted {
        command: v.command.clone(),
        pid: pid as u32,
        identity: Some(ident.to_audit()),
    });
    // Nothing runs unrecorded: if the launch records cannot be written, the guard kills it.
    audit.flush()?;
    guard.armed = false;
    lap(&mut timings, "audit");
    if opts.verbose {
        eprint!("{}", report.to_text());
        eprint!("{}", timings.to_text());
    }

    // ── supervise ────────────────────────────────────────────────────────────────────
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
    // ── cleanup: on every path (Drop does it too if we return early) ─────────────────
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
    Option<(Option<aegis_targets::nftables::LoadedTable>, Layer)>,
    Option<stage::netns::Routed>,
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
    if let (Some(pending), Some(p)) = (premade, nftp) {
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
                    Some(m) if m.tag == handoff::Tag::NETFILTER => {
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
    Ok((ns_detail, agent_netns, nft_child, routed))
}

/// Reads reports until EOF; returns the last complete one.
fn read_reports(fd: i32) -> Option<ChildReport> {
    let mut last = None;
    let mut buf = [0u8; ChildReport::SIZE];
    loop {
        let mut got = 0;
        while got < buf.len() {
            let rest = buf.get_mut(got..).unwrap_or_default();
            // SAFETY: reading into the remaining part of our buffer.
            let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
            if n < 0 && crate::child::last_errno() == libc::EINTR {
                continue;
            }
            if n <= 0 {
                return last;
            }
            got += n as usize;
        }
        if let Some(r) = ChildReport::from_bytes(&buf) {
            last = Some(r);
        }
    }
}

fn child_failure(r: &ChildReport) -> RunError {
    stage_failure(Stage::from_u32(r.stage).unwrap_or(Stage::Exec), r.what, r.errno, &r.msg())
}

/// A failed step of the child's stages that the supervisor ran itself (premade namespace).
fn fail_error(f: child::Fail, msg: &str) -> RunError {
    stage_failure(f.stage, f.what, f.errno, msg)
}

fn stage_failure(stage: Stage, what: u32, errno: i32, msg: &str) -> RunError {
    let what = match stage {
        Stage::Namespaces => stage::namespaces::describe(what),
        Stage::Mounts => stage::mounts::describe(what),
        Stage::Caps => stage::caps::describe(what),
        Stage::NoNewPrivs => stage::no_new_privs::describe(what),
        Stage::Landlock => stage::landlock::describe(what),
        Stage::Seccomp => stage::seccomp::describe(what),
        Stage::Fds => stage::fds::describe(what),
        Stage::Nftables => stage::netns::describe(what),
        Stage::Init => stage::init::describe(what),
        _ => stage::exec::describe(what),
    };
    let errno = if errno != 0 { format!(": {}", std::io::Error::from_raw_os_error(errno)) } else { String::new() };
    let why = if msg.is_empty() { format!("{what}{errno}") } else { format!("{what}{errno}: {msg}") };
    match stage {
        Stage::Exec => RunError::internal("exec", why),
        // The agent's network namespace could not be given its sockets: the network layer
        // (proxy, forwards) is not available.
        Stage::Nftables => RunError::Unavailable { layer: "network", why },
        s => RunError::NotVerified { layer: s.name(), why },
    }
}

/// Variables the agent gets from the supervisor's environment without asking: what
/// programs need to find executables, speak the user's locale and draw on the terminal.
/// Everything else (tokens, cloud credentials, SSH agent sockets) stays outside unless a
/// `--env` names it.
const PASSED_BY_DEFAULT: &[&str] = &["PATH", "LANG", "LANGUAGE", "TERM", "COLORTERM", "NO_COLOR", "TZ"];

/// The agent's environment: the default set, `LC_*`, `HOME=/tmp` (its private, writable
/// /tmp; the host home is not in the sandbox), and each `--env NAME[=VALUE]`.
fn agent_environment(extra: &[String]) -> Result<Vec<(String, String)>, RunError> {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| PASSED_BY_DEFAULT.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    env.insert("HOME".into(), "/tmp".into());
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
