//! Step 2 of a launch, spawn: the cgroup leaf, the channels, the child's plan, the child.
//!
//! Input: the prepared launch ([`Prepared`], [`ChildLayers`]). Output: the child, cloned into
//! its namespaces (born in its cgroup2 leaf where the kernel allows), waiting on the go pipe
//! before its first stage, and what the supervisor holds for it ([`Spawned`]). Why here: the
//! leaf (limits written) exists before the child; the child waits until the supervisor has
//! confirmed what it applies ([`super::confirm`]). Without user namespaces the launch goes on
//! only as [`super::no_userns`] allows, with a child in no namespace. Invariants: the
//! supervisor is single-threaded at every clone; after clone the child runs only
//! [`child::run`]; a child the launch abandons is killed and reaped ([`ChildGuard`]).

use std::os::fd::OwnedFd;
use std::path::Path;

use super::no_userns::without_user_namespaces;
use super::prepare::{ChildLayers, Prepared};
use super::{Clock, close, pipe};
use crate::child::{self, ChildPlan};
use crate::exit::RunError;
use crate::handoff;
use crate::identity::Identity;
use crate::report::{EnforcementReport, Layer};
use crate::signals::Signals;
use crate::stage::namespaces::{self, Isolation};
use crate::stage::report::fail_error;
use crate::stage::verify::{LaunchOptions, Verified};
use crate::{stage, supervise};

/// Kills and reaps the child if the launch is abandoned after clone.
pub(super) struct ChildGuard {
    pid: libc::pid_t,
    pub(super) armed: bool,
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

/// Where the kernel created the agent.
#[derive(Clone, Copy)]
pub(super) struct Born {
    /// In its cgroup2 leaf already (CLONE_INTO_CGROUP): that hierarchy needs no migration.
    pub(super) in_unified_leaf: bool,
}

/// The child and what the supervisor holds for it until the launch ends.
pub(super) struct Spawned {
    pub(super) pid: libc::pid_t,
    pub(super) guard: ChildGuard,
    /// The agent's cgroup leaf (removed when dropped) and the report's cgroup line.
    pub(super) leaf: Option<aegis_targets::cgroup::Leaf>,
    pub(super) cg_layer: Layer,
    pub(super) iso: Isolation,
    pub(super) born: Born,
    /// The supervisor's ends of the go pipe (held open until the agent exec'd: the child
    /// checks it to know the supervisor is alive), the report pipe and the init's status pipe.
    pub(super) go_w: i32,
    pub(super) rep_r: i32,
    pub(super) status_r: i32,
    pub(super) handoff_rx: handoff::Receiver,
    pub(super) terminal: Option<crate::tty::Terminal>,
    /// Sockets the supervisor made in its premade namespace, and its rtnetlink socket there.
    pub(super) premade_net: Option<PremadeNet>,
    /// Without user namespaces: the run's own /tmp (removed when dropped), its words for the
    /// report, and in proxy mode the proxy's host loopback listener.
    pub(super) private_tmp: Option<stage::mounts::PrivateTmp>,
    pub(super) tmp_note: String,
    pub(super) host_proxy: Option<stage::proxy::HostListener>,
    /// The report's words for a launch without namespaces.
    pub(super) userns_note: String,
    pub(super) mounts_detail: String,
    pub(super) cap_last: u32,
    pub(super) landlock_min_abi: stage::landlock::Needs,
}

/// Sockets the supervisor made in its premade namespace, the plan they were made by, and its
/// rtnetlink socket there.
pub(super) type PremadeNet = (handoff::Collected, stage::netns::ChildNet, Option<OwnedFd>);

/// Clones the child into the premade network namespace `n` (this thread enters it for the
/// clone only) and, still inside, makes the namespace's sockets by `net`'s plan: the
/// namespace belongs to the supervisor's user namespace, not the child's, so the child could
/// not. Returns the clone's result (0 in the child, which runs [`child::run`] here) and the
/// sockets; a failure after clone kills and reaps the child.
fn clone_in_premade(
    n: &aegis_targets::nftables::PendingNetns,
    clone: impl FnOnce() -> Result<libc::pid_t, i32>,
    plan: &ChildPlan,
    net: impl FnOnce() -> stage::netns::ChildNet,
) -> Result<(Result<libc::pid_t, i32>, Option<PremadeNet>), RunError> {
    let home = std::fs::File::open("/proc/self/ns/net").map_err(|e| RunError::internal("opening /proc/self/ns/net", e))?;
    namespaces::enter_net(&n.ns)?;
    let r = clone();
    if let Ok(0) = r {
        child::run(plan)
    }
    let mut premade_net = None;
    if let Ok(pid) = r {
        let mut sink = handoff::Collected::default();
        let plan = net();
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
    Ok((r, premade_net))
}

/// What the child's plan is made from: the prepared launch's decisions and the channels.
struct PlanMaker<'a> {
    v: &'a Verified,
    ident: &'a Identity,
    proxy_prep: Option<&'a stage::proxy::Prepared>,
    forwarded: Option<&'a stage::nftables::Forwarded>,
    nftp: Option<&'a stage::nftables::Prepared>,
    host_net: bool,
    /// The supervisor premade the agent's network namespace.
    premade: bool,
    command_path: &'a Path,
    cwd: &'a Path,
    cwd_asked: bool,
    /// The child's ends and the supervisor's of the pipes and the handoff: go (read, the
    /// supervisor's write), report (write, the supervisor's read), the supervisor's handoff
    /// end, the init's status (write).
    fds: [i32; 6],
    old_mask: libc::sigset_t,
    cap_last: u32,
    terminal: Option<&'a crate::tty::Terminal>,
    wall_time_ms: u64,
}

impl PlanMaker<'_> {
    /// The sockets of the agent's network namespace (none/proxy mode): made by the child from
    /// inside, or by the supervisor itself in the namespace it premade (see stage::netns).
    fn net(&self, verify: bool) -> stage::netns::ChildNet {
        use stage::netns::{ChildNet, NetSpec};
        match (self.proxy_prep, self.forwarded) {
            (Some(p), _) => ChildNet::plan(NetSpec { proxy: true, tcp: &p.forwards, observe: self.nftp.is_some(), verify, ..NetSpec::default() }),
            (None, Some(f)) => ChildNet::plan(NetSpec { tcp: &f.tcp, udp: &f.udp, optional: true, observe: true, verify, ..NetSpec::default() }),
            (None, None) => ChildNet::plan(NetSpec { observe: !self.host_net && self.nftp.is_some(), verify, ..NetSpec::default() }),
        }
    }

    /// The child's plan for an isolation, and the mounts line of the report. Landlock,
    /// seccomp and the handoff are placeholders: the caller moves the real ones in.
    fn child(&self, iso: Isolation, env: &[(String, String)]) -> Result<(ChildPlan, String), RunError> {
        let Self { v, ident, proxy_prep, host_net, premade, .. } = *self;
        let [go_r, rep_w, go_w, rep_r, handoff_rx, status_w] = self.fds;
        let full = matches!(iso, Isolation::Full { .. });
        let (mounts, mounts_detail) = stage::mounts::prepare(v, full)?;
        // The trust bundle goes into the agent's private /tmp, which only a mount plan makes
        // (without one, /tmp is the host's: nothing is written there).
        let private_tmp = full && mounts.plan.is_some();
        let plan = ChildPlan {
            go_read: go_r,
            report_write: rep_w,
            parent_fds: [go_w, rep_r, handoff_rx],
            handoff: None,
            old_mask: self.old_mask,
            ns: stage::namespaces::ChildNs {
                new_cgroupns: full,
                hostname: if full { std::ffi::CString::new(v.manifest.agent.as_str()).ok() } else { None },
                // A premade namespace already has lo up (and belongs to the supervisor's
                // user namespace, where the child has no capability).
                lo_up: full && !host_net && !premade,
            },
            net: if full && !host_net && !premade {
                // The table is loaded after clone and verified through the child's socket.
                self.net(self.nftp.is_some())
            } else {
                stage::netns::ChildNet::default()
            },
            mounts,
            seed: stage::mounts::ChildSeed {
                dir: proxy_prep.filter(|_| private_tmp).and_then(|_| std::ffi::CString::new(stage::proxy::SEED_DIR).ok()),
                files: proxy_prep
                    .filter(|_| private_tmp)
                    .map(|p| p.seed_files.iter().filter_map(|(k, b)| Some((std::ffi::CString::new(k.as_str()).ok()?, b.clone()))).collect())
                    .unwrap_or_default(),
            },
            caps: stage::caps::ChildCaps {
                uid: ident.uid,
                gid: ident.gid,
                groups: ident.root.then(|| ident.groups.clone()),
                cap_last: self.cap_last,
            },
            landlock: stage::landlock::ChildLandlock::placeholder(),
            nonet: stage::nonet::ChildNoNet::default(),
            seccomp: stage::seccomp::ChildSeccomp::placeholder(),
            exec: stage::exec::ChildExec::prepare(self.command_path, &v.command, env, self.cwd, self.cwd_asked)?,
            term: self.terminal.map_or_else(stage::init::ChildTerm::none, |t| t.child()),
            init: stage::init::ChildInit { status_write: status_w, wall_time_ms: self.wall_time_ms },
        };
        Ok((plan, mounts_detail))
    }
}

/// Creates the leaf and the channels, builds the child's plan and clones the child (in the
/// premade network namespace when there is one; with no namespace at all when user
/// namespaces are blocked and the bundle allows it).
pub(super) fn spawn(
    opts: &LaunchOptions,
    signals: &Signals,
    p: &mut Prepared,
    layers: ChildLayers,
    report: &mut EnforcementReport,
    clock: &mut Clock,
) -> Result<Spawned, RunError> {
    let Prepared {
        ref v,
        ref ident,
        proxy_mode,
        ref proxy_prep,
        ref instance,
        ref cg,
        ref nftp,
        ref env,
        ref cwd,
        cwd_asked,
        ref command_path,
        host_net,
        ref forwarded,
        force_no_userns,
        ref mut premade_netns,
        ref mut nft_layer,
        ..
    } = *p;
    let premade = premade_netns.is_some();
    let (leaf, cg_layer) = stage::cgroup::create(v, cg.as_ref(), &instance.id())?;
    report.cgroup_mode = cg.as_ref().map(|p| p.layout.name().to_string()).unwrap_or_default();
    clock.lap("cgroup");

    let cap_last = stage::caps::cap_last();
    let (go_r, go_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let (handoff_rx, handoff_tx) = handoff::channel()?;
    // The agent's own session, its pty when the user's terminal is in play, and the init
    // that reports the agent's status on this pipe ([`crate::tty`], [`stage::init`]).
    let terminal = crate::tty::Terminal::open(opts.terminal_filter)?;
    let (status_r, status_w) = pipe()?;
    let wall_time_ms = cg.as_ref().and_then(|p| p.spec.wall_time_ms).unwrap_or(0);
    let mut iso = Isolation::Full { host_net };
    let mut userns_note = String::new();
    let maker = PlanMaker {
        v,
        ident,
        proxy_prep: proxy_prep.as_ref(),
        forwarded: forwarded.as_ref(),
        nftp: nftp.as_ref(),
        host_net,
        premade,
        command_path,
        cwd,
        cwd_asked,
        fds: [go_r, rep_w, go_w, rep_r, handoff_rx.raw(), status_w],
        old_mask: signals.old_mask,
        cap_last,
        terminal: terminal.as_ref(),
        wall_time_ms,
    };
    let landlock_min_abi = stage::landlock::min_abi(&layers.landlock);
    let (mut plan, mut mounts_detail) = maker.child(iso, env)?;
    plan.landlock = layers.landlock;
    plan.seccomp = layers.seccomp;
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
    let mut premade_net: Option<PremadeNet> = None;
    let first = if force_no_userns {
        Err(libc::EPERM)
    } else if let Some(n) = &premade_netns {
        let (r, net) = clone_in_premade(n, || clone_agent(iso.clone_flags() & !libc::CLONE_NEWNET), &plan, || maker.net(false))?;
        premade_net = net;
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
            let nous = without_user_namespaces(v, ident, &why, (proxy_mode, host_net, forwarded.as_ref()), proxy_prep.as_ref(), env, &mut plan.landlock)?;
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
                *nft_layer = l;
            }
            let env_no_mountns = nous.env;
            let (mut p2, detail) = maker.child(iso, &env_no_mountns)?;
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
    let guard = ChildGuard { pid, armed: true };
    close(go_r);
    close(rep_w);
    // Our copy of the child's handoff end: once the child's copy closes (exec), the
    // channel reaches EOF.
    plan.handoff = None;
    close(status_w);
    drop(cg_dir);
    let born = Born { in_unified_leaf: born_in_unified };
    Ok(Spawned {
        pid,
        guard,
        leaf,
        cg_layer,
        iso,
        born,
        go_w,
        rep_r,
        status_r,
        handoff_rx,
        terminal,
        premade_net,
        private_tmp,
        tmp_note,
        host_proxy,
        userns_note,
        mounts_detail,
        cap_last,
        landlock_min_abi,
    })
}
