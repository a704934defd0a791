//! Where a supervisor may create its agents' leaves: the hierarchy root (root), or a cgroup
//! v2 subtree delegated to the user who runs it (no root needed).
//!
//! Input: the host's [`Layout`], the caller's effective uid, its own cgroup
//! (`/proc/self/cgroup`) and what the kernel lets it write (`faccessat(AT_EACCESS)` on the
//! delegation files, the processes listed in `cgroup.procs`). Output: a [`Placement`] (no
//! side effects), or [`NoCgroup`] saying per candidate why not and naming the fix.
//! Invariants: an unprivileged supervisor never touches a cgroup it may not write and never
//! moves a process that is not itself or its own child; it only uses a subtree whose
//! controllers `memory` and `pids` are available (so limits are real, not silently absent).
//!
//! Candidates, in order (why: the first is what `systemd-run --user --scope -p
//! Delegate=yes aegis-exec ...` gives; the second is the subtree systemd delegates to every
//! user, usable when the supervisor already runs inside it, e.g. in a desktop terminal):
//! 1. **Its own cgroup, delegated**: writable directory, `cgroup.procs` and
//!    `cgroup.subtree_control`, and no process in it but the supervisor and its children.
//!    A cgroup with processes cannot enable controllers for its children (the kernel's
//!    "no internal processes" rule), so the supervisor first moves into a leaf of its own,
//!    `<own>/aegis-supervisor`, then enables the controllers in `<own>` and creates the
//!    agent's leaf beside it, under `<own>/aegis/` ([`Delegation::move_supervisor`]). A
//!    supervisor already in `aegis-supervisor` uses its parent.
//! 2. **`user@UID.service`**, when it is an ancestor of the supervisor's cgroup and writable:
//!    moving the agent from the supervisor's cgroup into `user@UID.service/aegis/<leaf>`
//!    needs write access to the common ancestor's `cgroup.procs`, which is this directory.
//!
//! Not implemented, on purpose: starting a transient scope over D-Bus (what `systemd-run
//! --user --scope` does) would need a D-Bus client (a dependency tree, or a hand-written
//! protocol) and would change the caller's process tree behind its back; re-executing
//! through `systemd-run` would do the same and add a process start to every launch. The
//! refusal prints the exact `systemd-run` line instead ([`NoCgroup::fix`]), and `doctor`
//! says the same before a launch.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Layout;

/// The cgroup a supervisor moves itself into before enabling controllers in its own
/// (delegated) cgroup.
pub const SUPERVISOR_DIR: &str = "aegis-supervisor";

/// A delegated cgroup v2 subtree the caller may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delegation {
    /// The directory whose `aegis/` child holds the leaves (absolute).
    pub base: PathBuf,
    /// `base` is the supervisor's own cgroup: it must move into `base/aegis-supervisor`
    /// (with its children) before controllers can be enabled in `base`.
    pub move_supervisor: bool,
    /// Which candidate this is, for reports (`own cgroup` / `user@UID.service`).
    pub kind: &'static str,
    /// Controllers available in `base` (its `cgroup.controllers`).
    pub controllers: Vec<String>,
}

/// Where leaves are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Under `<hierarchy root>/aegis/` in every hierarchy (the supervisor is root).
    Root,
    /// Under `<delegated base>/aegis/` (cgroup v2 only).
    Delegated(Delegation),
}

impl Placement {
    /// One line for reports.
    pub fn describe(&self) -> String {
        match self {
            Placement::Root => "as root: leaves under <hierarchy>/aegis/".into(),
            Placement::Delegated(d) => format!(
                "delegated {} {} (controllers {}): leaves under it in aegis/{}",
                d.kind,
                d.base.display(),
                d.controllers.join(","),
                if d.move_supervisor { format!(", the supervisor moves into {SUPERVISOR_DIR}/") } else { String::new() }
            ),
        }
    }
}

/// No cgroup this user may create leaves in, with the reasons and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no cgroup uid {uid} may create limits in ({}); {}", reasons.join("; "), self.fix())]
pub struct NoCgroup {
    pub uid: u32,
    /// Why each candidate was not usable.
    pub reasons: Vec<String>,
    /// The hierarchy is cgroup v2 (the `systemd-run` fix applies); false on v1/hybrid hosts.
    pub v2: bool,
    /// Controllers missing from an otherwise usable subtree (the fix is delegating them).
    pub missing_controllers: Vec<String>,
}

impl NoCgroup {
    /// The fix, as a sentence with the exact command where there is one.
    pub fn fix(&self) -> String {
        if !self.v2 {
            return "cgroup v1 controllers are not delegated to users: run as root, or on a cgroup v2 host \
                    (systemd.unified_cgroup_hierarchy=1), or make the policy's cgroup layer best-effort"
                .into();
        }
        if !self.missing_controllers.is_empty() {
            return format!(
                "delegate the controllers to the user's systemd (`systemctl edit user@.service`: [Service] Delegate=cpu cpuset io memory pids; missing: {}), or make the policy's cgroup layer best-effort",
                self.missing_controllers.join(",")
            );
        }
        format!(
            "run it in a delegated scope: {}, or make the policy's cgroup layer best-effort",
            systemd_run_line()
        )
    }
}

/// `systemd-run --user --scope -p Delegate=yes -- <this process's argv>`, shell-quoted.
pub fn systemd_run_line() -> String {
    let mut argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if let (Some(first), Ok(exe)) = (argv.first_mut(), std::env::current_exe())
        && !first.contains('/')
    {
        *first = exe.display().to_string();
    }
    let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    format!("systemd-run --user --scope -p Delegate=yes -- {}", quoted.join(" "))
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
    if plain { s.to_string() } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

/// Whether the caller may write `path` (and search it, for a directory): the kernel's
/// answer for the effective ids, not a guess from modes.
fn writable(path: &Path, dir: bool) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mode = if dir { libc::W_OK | libc::X_OK } else { libc::W_OK };
    // SAFETY: faccessat with a NUL-terminated path and constant flags.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// Why `dir` cannot be delegated to the caller (`None`: it can).
fn not_writable(dir: &Path) -> Option<String> {
    if !writable(dir, true) {
        return Some(format!("{} is not writable by this user", dir.display()));
    }
    for f in ["cgroup.procs", "cgroup.subtree_control"] {
        if !writable(&dir.join(f), false) {
            return Some(format!("{}/{f} is not writable by this user", dir.display()));
        }
    }
    None
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The parent pid of `pid` (from `/proc/<pid>/stat`, after the command name).
pub(super) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Processes in `dir` that are neither `me` nor a child of `me`.
pub(super) fn foreign_procs(dir: &Path, me: i32) -> Vec<i32> {
    procs(dir)
        .into_iter()
        .filter(|&p| p != me && parent_of(p) != Some(me))
        .collect()
}

fn controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect()
}

/// The caller's cgroup v2 path (relative to the cgroup2 mount, `/`-separated, no leading
/// slash; empty for the root) from `/proc/self/cgroup` text.
pub fn own_path(proc_self_cgroup: &str) -> Option<String> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim().trim_start_matches('/').to_string())
}

impl Layout {
    /// Where this process may create leaves (see the module docs). Reads only.
    pub fn placement(&self) -> Result<Placement, NoCgroup> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            return Ok(Placement::Root);
        }
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        self.placement_for(euid, std::process::id() as i32, &cgroup)
    }

    /// [`Layout::placement`] for an unprivileged `uid` whose process `me` has
    /// `/proc/self/cgroup` text `cgroup`.
    pub fn placement_for(&self, uid: u32, me: i32, cgroup: &str) -> Result<Placement, NoCgroup> {
        let mut no = NoCgroup {
            uid,
            reasons: Vec::new(),
            v2: matches!(self, Layout::V2 { .. }),
            missing_controllers: Vec::new(),
        };
        let root = match self {
            Layout::V2 { root } => root,
            Layout::Hybrid { .. } | Layout::V1 { .. } => {
                no.reasons.push(format!(
                    "this host's resource controllers are cgroup v1 ({} layout)",
                    self.name()
                ));
                return Err(no);
            }
        };
        let Some(own) = own_path(cgroup) else {
            no.reasons.push("/proc/self/cgroup names no cgroup v2 path".into());
            return Err(no);
        };
        let own_dir = if own.is_empty() { root.clone() } else { root.join(&own) };
        let mut candidates: Vec<(&'static str, PathBuf, bool)> = Vec::new();
        if own_dir.file_name().is_some_and(|n| n == SUPERVISOR_DIR)
            && let Some(parent) = own_dir.parent()
        {
            candidates.push(("own cgroup", parent.to_path_buf(), false));
        } else {
            candidates.push(("own cgroup", own_dir.clone(), true));
        }
        let user_unit = format!("user@{uid}.service");
        let mut acc = root.clone();
        for comp in own.split('/').filter(|c| !c.is_empty()) {
            acc.push(comp);
            if comp == user_unit {
                candidates.push(("user@UID.service", acc.clone(), false));
                break;
            }
        }
        for (kind, base, move_supervisor) in candidates {
            if base == *root {
                no.reasons.push(format!("{kind} is the hierarchy root {}", base.display()));
                continue;
            }
            if let Some(why) = not_writable(&base) {
                no.reasons.push(format!("{kind}: {why}"));
                continue;
            }
            let others = if move_supervisor {
                foreign_procs(&base, me)
            } else {
                procs(&base)
            };
            if !others.is_empty() {
                no.reasons.push(format!(
                    "{kind} {} holds other processes ({}): controllers cannot be enabled there",
                    base.display(),
                    others.iter().take(5).map(|p| p.to_string()).collect::<Vec<_>>().join(",")
                ));
                continue;
            }
            let have = controllers(&base);
            let missing: Vec<String> = ["memory", "pids"]
                .iter()
                .filter(|c| !have.iter().any(|h| h == *c))
                .map(|c| (*c).to_string())
                .collect();
            if !missing.is_empty() {
                no.reasons.push(format!(
                    "{kind} {} lacks the {} controller(s) (cgroup.controllers: {})",
                    base.display(),
                    missing.join(","),
                    have.join(" ")
                ));
                no.missing_controllers = missing;
                continue;
            }
            return Ok(Placement::Delegated(Delegation {
                base,
                move_supervisor,
                kind,
                controllers: have,
            }));
        }
        if no.reasons.is_empty() {
            no.reasons.push(format!("own cgroup /{own} is not delegated"));
        }
        Err(no)
    }
}

/// The bases [`super::sweep_stale`] looks in: every hierarchy root for root, the delegated
/// base otherwise (nothing when there is none).
pub(super) fn sweep_bases(layout: &Layout) -> Vec<PathBuf> {
    match layout.placement() {
        Ok(Placement::Root) => {
            let mut roots: Vec<PathBuf> = match layout {
                Layout::V2 { root } => vec![root.clone()],
                Layout::Hybrid { v1, unified } => v1.values().cloned().chain([unified.clone()]).collect(),
                Layout::V1 { v1 } => v1.values().cloned().collect(),
            };
            roots.sort();
            roots.dedup();
            roots
        }
        Ok(Placement::Delegated(d)) => vec![d.base],
        Err(_) => Vec::new(),
    }
}
