//! The child side of a launch: what runs between `clone` and `execve`.
//!
//! Input: a [`ChildPlan`] prepared by the supervisor (artifacts already decoded and
//! validated). Output: either the agent's command replaces the process, or a
//! [`ChildReport`] saying which stage failed (and the errno) is written to the report pipe
//! and the child exits with [`CHILD_FAILED`]. Invariants: no artifact parsing after `clone`;
//! AEGIS's own stages make raw syscalls only. The mount plan and Landlock apply functions
//! of `aegis_targets` do allocate (they resolve launch paths, which only exist inside the
//! new mount namespace) — safe here because the supervisor is single-threaded when it
//! clones, so no lock can be held by a thread that does not exist in the child;
//! the stages run in the fixed order documented in [`crate::stage`]; on success a report with
//! `ok = 1` and per-stage timings is written just before `execve`, and the pipe (close-on-exec)
//! reaches EOF when `execve` succeeds.

use crate::stage::report::{CHILD_FAILED, ChildReport, Fail, INFO_CAPS_BOUNDING, INFO_CWD_ERRNO, INFO_LEN, INFO_NET_ROUTE4_ERRNO, INFO_NET_ROUTE6_ERRNO, write_report};
use crate::stage::{self, Stage};

/// Everything the child needs, prepared before `clone`.
pub struct ChildPlan {
    /// Read end of the "go" pipe (the supervisor writes one byte when the child may go on).
    pub go_read: i32,
    /// Write end of the report pipe (close-on-exec).
    pub report_write: i32,
    /// Fds of the supervisor's pipe ends and handoff end, closed first thing in the child.
    pub parent_fds: [i32; 3],
    /// The child's end of the descriptor handoff ([`crate::handoff`]); the supervisor drops
    /// its copy right after clone.
    pub handoff: Option<crate::handoff::Sender>,
    /// Signal mask to restore before exec (the supervisor blocks forwarded signals).
    pub old_mask: libc::sigset_t,
    pub ns: stage::namespaces::ChildNs,
    /// Sockets and routes of the agent's network namespace, made from inside (empty when
    /// the supervisor does it, or there is no own network namespace).
    pub net: stage::netns::ChildNet,
    pub mounts: stage::mounts::ChildMounts,
    pub seed: stage::mounts::ChildSeed,
    pub caps: stage::caps::ChildCaps,
    pub landlock: stage::landlock::ChildLandlock,
    /// Proxy mode without a network namespace: the stream-only filter ([`stage::nonet`]).
    pub nonet: stage::nonet::ChildNoNet,
    pub seccomp: stage::seccomp::ChildSeccomp,
    pub exec: stage::exec::ChildExec,
    /// The agent's own session and terminal ([`stage::init`]).
    pub term: stage::init::ChildTerm,
    /// The init that stays pid 1 ([`stage::init`]).
    pub init: stage::init::ChildInit,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Runs the child stages and execs. Never returns.
pub fn run(plan: &ChildPlan) -> ! {
    let mut report = ChildReport::zeroed();
    let result = run_stages(plan, &mut report);
    // Only reached on failure (success execs inside run_stages).
    let fail = match result {
        Err(f) => f,
        Ok(()) => Fail::check(Stage::Exec, 0),
    };
    report.ok = 0;
    report.stage = fail.stage as u32;
    report.what = fail.what;
    report.errno = fail.errno;
    write_report(plan.report_write, &report);
    // SAFETY: _exit is async-signal-safe and does not run Rust destructors or atexit
    // handlers that belong to the supervisor.
    unsafe { libc::_exit(CHILD_FAILED) }
}

fn timed<T>(report: &mut ChildReport, s: Stage, f: impl FnOnce() -> Result<T, Fail>) -> Result<T, Fail> {
    let t = now_ns();
    let r = f();
    if let Some(slot) = report.stage_ns.get_mut(s as usize) {
        *slot = slot.saturating_add(now_ns().saturating_sub(t));
    }
    r
}

fn run_stages(plan: &ChildPlan, report: &mut ChildReport) -> Result<(), Fail> {
    // Die with the supervisor: if it is killed, nothing may run unsupervised.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
    for fd in plan.parent_fds {
        // SAFETY: closing our copies of the supervisor's pipe ends.
        unsafe { libc::close(fd) };
    }
    // Wait until the supervisor has written the id maps, moved us into the cgroup leaf,
    // verified both, and (none mode) loaded the nftables table into our netns.
    let mut go = [0u8; 1];
    // SAFETY: read into a 1-byte stack buffer.
    let n = unsafe { libc::read(plan.go_read, go.as_mut_ptr().cast(), 1) };
    if n != 1 || go[0] != b'G' {
        // The supervisor gave up (or died): never continue.
        // SAFETY: see run().
        unsafe { libc::_exit(CHILD_FAILED) }
    }

    timed(report, Stage::Namespaces, || stage::namespaces::apply_in_child(&plan.ns))?;
    let mut info = [0u32; INFO_LEN];
    let mut msg = ChildReport::zeroed();
    let r = timed(report, Stage::Mounts, || stage::mounts::apply_in_child(&plan.mounts, &mut info, &mut msg));
    report.info = info;
    report.msg = msg.msg;
    r?;
    timed(report, Stage::Mounts, || stage::mounts::seed_in_child(&plan.seed))?;
    // The sockets that live in our network namespace, made while we hold its capabilities
    // and handed to the supervisor (none without a handoff channel: nothing to make).
    let rtnl = match &plan.handoff {
        Some(tx) if !plan.net.is_empty() => timed(report, Stage::Nftables, || plan.net.create(&mut &*tx))?,
        _ => -1,
    };
    {
        // While we mounted, the supervisor moved us into the cgroup leaf and (none mode)
        // loaded the nftables table into our network namespace; wait for it. `N`: the table
        // is in place, route outside destinations to lo so denials are seen; `n`: no table.
        let t = now_ns();
        // SAFETY: read into a 1-byte stack buffer.
        let n = unsafe { libc::read(plan.go_read, go.as_mut_ptr().cast(), 1) };
        if n != 1 || (go[0] != b'N' && go[0] != b'n') {
            // SAFETY: see run().
            unsafe { libc::_exit(CHILD_FAILED) }
        }
        let routed = if go[0] == b'N' {
            plan.net.route(rtnl)
        } else {
            if rtnl >= 0 {
                // SAFETY: closing the socket `create` returned to us.
                unsafe { libc::close(rtnl) };
            }
            stage::netns::Routed { v4: libc::ENOENT, v6: libc::ENOENT }
        };
        info[INFO_NET_ROUTE4_ERRNO] = routed.v4 as u32;
        info[INFO_NET_ROUTE6_ERRNO] = routed.v6 as u32;
        report.info = info;
        if let Some(slot) = report.stage_ns.get_mut(Stage::Nftables as usize) {
            *slot = slot.saturating_add(now_ns().saturating_sub(t));
        }
    }
    // Now in the leaf: the cgroup namespace is rooted there.
    timed(report, Stage::Namespaces, || stage::namespaces::enter_cgroupns(&plan.ns))?;
    let bounding = timed(report, Stage::Caps, || stage::caps::apply_in_child(&plan.caps))?;
    info[INFO_CAPS_BOUNDING] = u32::from(bounding);
    // As the agent's own ids: its search permission decides.
    info[INFO_CWD_ERRNO] = timed(report, Stage::Exec, || stage::exec::enter_cwd(&plan.exec))? as u32;
    report.info = info;
    // Changing uids clears the parent-death signal: arm it again, then make sure the
    // supervisor did not die in between (it holds the go pipe's write end open until the
    // agent has exec'd, so a hang-up means it is gone).
    // SAFETY: prctl with integer arguments; poll on one pollfd we own.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        let mut pfd = libc::pollfd {
            fd: plan.go_read,
            events: libc::POLLIN,
            revents: 0,
        };
        libc::poll(&mut pfd, 1, 0);
        if pfd.revents & libc::POLLHUP != 0 {
            libc::_exit(CHILD_FAILED);
        }
        libc::close(plan.go_read);
    }
    timed(report, Stage::NoNewPrivs, stage::no_new_privs::apply_in_child)?;
    // Out of the supervisor's session (and onto the pty, if any) before Landlock and
    // seccomp, which need not allow it.
    timed(report, Stage::Init, || stage::init::detach(&plan.term))?;
    let r = timed(report, Stage::Landlock, || stage::landlock::apply_in_child(&plan.landlock, plan.handoff.as_ref(), &mut info, &mut msg));
    report.info = info;
    report.msg = msg.msg;
    r?;
    timed(report, Stage::Seccomp, || stage::nonet::apply_in_child(&plan.nonet))?;
    // Seccomp is the last restriction: from here on every syscall must pass the filter.
    let r = timed(report, Stage::Seccomp, || stage::seccomp::apply_in_child(&plan.seccomp, plan.handoff.as_ref(), &mut info, &mut msg));
    report.info = info;
    report.msg = msg.msg;
    r?;
    timed(report, Stage::Fds, || stage::fds::apply_in_child([plan.report_write, plan.init.status_write]))?;
    // The init stays behind as pid 1; its child reports success and becomes the agent.
    let done = *report;
    let exec_agent = || -> Fail {
        // Restore the signal mask the agent should start with (the supervisor's was blocked).
        // SAFETY: sigprocmask with a valid set copied from the supervisor.
        if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &plan.old_mask, std::ptr::null_mut()) } != 0 {
            return Fail::errno(Stage::Exec, stage::exec::WHAT_SIGMASK);
        }
        let mut ok = done;
        ok.ok = 1;
        write_report(plan.report_write, &ok);
        stage::exec::exec(&plan.exec)
    };
    Err(stage::init::run(&plan.init, plan.report_write, &exec_agent))
}
