//! Step 3 of a launch, confirm: what the supervisor applies from outside, then the child's
//! own verdict.
//!
//! Input: the spawned child, held on the go pipe. Output: the child's final report (every
//! stage applied and verified; the agent exec'd) and what the supervisor learned on the way
//! ([`Confirmed`]). Why here: the child is held before it drops its capabilities until every
//! layer the supervisor applies (id maps, cgroup membership, the nftables table, the sockets
//! of its network namespace) is in place and verified; nothing of the agent runs before.
//! Invariants: a child that failed first says why (the supervisor's own failure is then only
//! the consequence); a seccomp filter that notifies is served before the child execs.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::services::TableLoad;
use super::spawn::{Born, Spawned};
use super::prepare::Prepared;
use super::{Clock, close};
use crate::exit::RunError;
use crate::handoff;
use crate::identity::Identity;
use crate::stage::namespaces::{self, Isolation};
use crate::stage::report::{ChildReport, child_failure, read_reports};
use crate::stage::verify::Verified;
use crate::stage;

/// What the supervisor has once the agent exec'd.
pub(super) struct Confirmed {
    /// The child's final report (`ok = 1`): its timings and facts.
    pub(super) report: ChildReport,
    pub(super) setup: ChildSetup,
    /// Messages the child handed over while the supervisor waited for one in particular.
    pub(super) early: Vec<handoff::Message>,
    /// The server of a filter that notifies, and the sandbox's own processes in the agent's
    /// leaf (the broker), which the proxy skips.
    pub(super) notify_server: Option<crate::unotify::Server>,
    pub(super) helpers: Vec<aegis_proxy::exe::Helper>,
}

/// The channel of the supervisor's own decisions (proxy, seccomp notifications) to the
/// audit log.
pub(super) type Records = (std::sync::mpsc::Sender<aegis_audit::Event>, std::sync::mpsc::Receiver<aegis_audit::Event>);

/// Lets the child go on step by step while the supervisor applies and verifies its layers,
/// serves a notifying filter's handover, and waits for the child's verdict.
pub(super) fn confirm(p: &mut Prepared, s: &mut Spawned, clock: &mut Clock) -> Result<(Confirmed, Records), RunError> {
    let Spawned { pid, iso, born, go_w, rep_r, ref leaf, ref handoff_rx, ref mut premade_net, .. } = *s;
    let premade_routes = premade_net.as_mut().map(|(_, plan, rtnl)| (&*plan, rtnl.take()));
    // Messages the child handed over while the supervisor waited for one in particular.
    let mut early = Vec::new();
    let result = parent_setup(
        &p.v,
        iso,
        pid,
        leaf.as_ref(),
        born,
        p.nftp.as_ref(),
        p.premade_netns.take(),
        premade_routes,
        p.host_load.take(),
        p.host_net,
        &p.ident,
        go_w,
        (handoff_rx, &mut early),
    );
    let setup = match result {
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
    if let Some(m) = &p.mediation {
        match stage::seccomp::take_handover(m, handoff_rx, &mut early) {
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
    let report = match final_report {
        Some(r) if r.ok == 1 => r,
        Some(r) => return Err(child_failure(&r)),
        None => {
            return Err(RunError::internal("child", "exited before reporting (killed?)"));
        }
    };
    clock.timings.child_ns = report.stage_ns;
    // The guard stays armed: the agent runs now, but until its start records are written
    // (launch step 5) a failure must still kill it, never leave it running unrecorded.
    Ok((Confirmed { report, setup, early, notify_server, helpers }, (proxy_tx, proxy_rx)))
}

/// What the supervisor learned while the child set itself up.
pub(super) struct ChildSetup {
    /// The namespaces line of the report.
    pub(super) ns_detail: String,
    /// The inode of the agent's network namespace (0 without one).
    pub(super) agent_netns: u64,
    /// The table loaded into the agent's namespace, with its report line.
    pub(super) nft_child: Option<TableLoad>,
    /// The routes the supervisor added itself (premade namespace; otherwise the child
    /// reports them).
    pub(super) routed: Option<stage::netns::Routed>,
    /// The host-mode table loaded into the host's namespace, with its report line.
    pub(super) host_table: Option<TableLoad>,
}

#[allow(clippy::too_many_arguments, reason = "what the earlier launch steps made for the child (leaf, namespaces, tables, handoff), handed over once")]
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
    Ok(ChildSetup { ns_detail, agent_netns, nft_child, routed, host_table })
}
