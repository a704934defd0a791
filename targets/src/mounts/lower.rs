//! Lowering of the policy's filesystem rules into a [`MountPlan`].
//!
//! Input: the same [`FsRule`]s the Landlock lowering takes, and [`PlanOptions`] (private
//! `/tmp` size, `/dev`, `/proc`, executable directories). Output: the plan and its
//! compile-time [`Loss`]es. Invariants: every grant becomes a bind of the same host path
//! (read: read-only; write: read-write `noexec` — a separate mount, so hard links from
//! anywhere else fail with `EXDEV`; exec: read-only with exec, or read-write when inside a
//! write tree); a read grant inside a write tree is a read-only carve-out (the most specific
//! read or write rule decides, [`Writability`]) and keeps the tree's `noexec`; every deny
//! becomes a mask; a carve-out or mask inside a writable tree gets its ancestors *pinned*
//! (bound onto themselves, so they cannot be renamed or removed and the protected path
//! cannot be moved away and recreated); grants inside a deny are dropped; executable
//! directories inside readable trees are re-bound `noexec` so `ld.so` cannot map a
//! non-granted program, and granted executables are bound over themselves with exec.

use super::plan::{MountEntry, MountKind, MountPlan};
use crate::landlock::{FsAccess, FsRule, Loss, PathTemplate, lower::Writability};
use std::collections::BTreeSet;

/// Directories that hold executables and are re-bound `noexec` when visible.
pub const EXEC_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    // Program directories that hold no shared libraries: noexec keeps `ld.so` from
    // loading an ungranted program kept there (git's helpers, libexec daemons).
    "/usr/libexec",
    "/usr/lib/git-core",
];

/// Knobs of the plan that do not come from fs rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Private `/tmp` of this many bytes (`None`: no private `/tmp`).
    pub tmp_size_bytes: Option<u64>,
    /// Fresh `/proc`.
    pub proc: bool,
    /// Minimal `/dev` with an `shm` tmpfs of this many bytes (`None`: no `/dev`).
    pub dev_shm_size_bytes: Option<u64>,
    /// Directories re-bound `noexec` (default [`EXEC_DIRS`]).
    pub exec_dirs: Vec<PathTemplate>,
    /// See [`MountPlan::memfd_noexec`].
    pub memfd_noexec: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            tmp_size_bytes: Some(64 << 20),
            proc: true,
            dev_shm_size_bytes: Some(16 << 20),
            exec_dirs: EXEC_DIRS
                .iter()
                .filter_map(|p| PathTemplate::parse(p).ok())
                .collect(),
            memfd_noexec: true,
        }
    }
}

fn root(p: &str) -> PathTemplate {
    PathTemplate::host(p.trim_start_matches('/').split('/'))
}

/// Builds the mount plan and its losses from fs rules.
pub fn plan_from_rules(rules: &[FsRule], opts: &PlanOptions) -> (MountPlan, Vec<Loss>) {
    let mut plan = MountPlan {
        memfd_noexec: opts.memfd_noexec,
        ..Default::default()
    };
    let mut losses = BTreeSet::new();
    let (tmp, proc, dev) = (root("/tmp"), root("/proc"), root("/dev"));
    let denies: Vec<&FsRule> = rules
        .iter()
        .filter(|r| r.access == FsAccess::Deny)
        .collect();
    let grants: Vec<&FsRule> = rules
        .iter()
        .filter(|r| r.access != FsAccess::Deny)
        .filter(|r| !denies.iter().any(|d| d.path.contains(&r.path)))
        .collect();
    let origin = |o: &str| BTreeSet::from([o.to_owned()]);
    // Writability follows the most specific read or write rule (read-only carve-outs).
    let kept: Vec<FsRule> = grants.iter().map(|g| (*g).clone()).collect();
    let writability = Writability::new(&kept);
    let in_write = |p: &PathTemplate| writability.writable(p);
    let mut exec_mappable_read = false;
    for g in &grants {
        let replaced = [
            (opts.tmp_size_bytes.is_some(), &tmp, "the private /tmp"),
            (opts.proc, &proc, "the fresh /proc"),
            (opts.dev_shm_size_bytes.is_some(), &dev, "the minimal /dev"),
        ]
        .into_iter()
        .find(|(on, base, _)| *on && base.contains(&g.path));
        if let Some((_, base, what)) = replaced {
            if let Some(own) = private_dev_node(base, &dev, &g.path).filter(|_| !g.origin.starts_with("implicit:") && !g.origin.starts_with("built-in ")) {
                losses.insert(Loss {
                    rule: g.origin.clone(),
                    what: format!("`{}` is the sandbox's own {own}, not the host's: nothing written there reaches the host", g.path),
                    stricter_reading: true,
                });
            }
            if g.path != *base && !provided_by_dev(base, &dev, &g.path) {
                losses.insert(Loss {
                    rule: g.origin.clone(),
                    what: format!(
                        "`{}` is not bound from the host: {what} replaces it",
                        g.path
                    ),
                    stricter_reading: true,
                });
            }
            continue;
        }
        let kind = match g.access {
            // A read-only carve-out keeps the write tree's noexec.
            FsAccess::Read if writability.carved_from(&g.path).is_some() => MountKind::Bind {
                writable: false,
                exec: false,
            },
            // Inside an executable directory a readable path is data, not code.
            FsAccess::Read => MountKind::Bind {
                writable: false,
                exec: !opts.exec_dirs.iter().any(|d| d.contains(&g.path)),
            },
            FsAccess::Write => MountKind::Bind {
                writable: true,
                exec: false,
            },
            FsAccess::Exec => MountKind::Bind {
                writable: in_write(&g.path),
                exec: true,
            },
            FsAccess::Deny => continue,
        };
        exec_mappable_read |= g.access == FsAccess::Read
            && kind
                == (MountKind::Bind {
                    writable: false,
                    exec: true,
                });
        plan.entries.push(MountEntry {
            target: g.path.clone(),
            kind,
            origin: origin(&g.origin),
        });
    }
    // Executable directories visible through a readable tree lose exec, unless granted.
    for dir in &opts.exec_dirs {
        let visible = grants
            .iter()
            .any(|g| g.access != FsAccess::Write && g.path.contains(dir) && g.path != *dir);
        let granted = grants
            .iter()
            .any(|g| g.access == FsAccess::Exec && g.path.contains(dir));
        if visible && !granted && !denies.iter().any(|d| d.path.contains(dir)) {
            plan.entries.push(MountEntry {
                target: dir.clone(),
                kind: MountKind::Bind {
                    writable: in_write(dir),
                    exec: false,
                },
                origin: origin("implicit: executable directory noexec (ld.so containment)"),
            });
        }
    }
    if exec_mappable_read {
        losses.insert(Loss {
            rule: "implicit: readable trees keep exec".to_owned(),
            what: "readable trees stay mappable as code (shared libraries need it): a program \
                   kept outside the executable directories (e.g. /usr/lib/git-core, /usr/libexec) \
                   can still be loaded through `ld.so` even when exec of it is not granted"
                .to_owned(),
            stricter_reading: false,
        });
    }
    for d in &denies {
        plan.entries.push(MountEntry {
            target: d.path.clone(),
            kind: MountKind::Mask,
            origin: origin(&d.origin),
        });
    }
    pin_ancestors(&mut plan);
    if let Some(size_bytes) = opts.tmp_size_bytes {
        let exec = grants
            .iter()
            .any(|g| g.access == FsAccess::Exec && tmp.contains(&g.path));
        plan.entries.push(MountEntry {
            target: tmp,
            kind: MountKind::Tmpfs { size_bytes, exec },
            origin: origin("implicit: private /tmp"),
        });
    }
    if opts.proc {
        plan.entries.push(MountEntry {
            target: proc,
            kind: MountKind::Proc,
            origin: origin("implicit: fresh /proc"),
        });
    }
    if let Some(shm_size_bytes) = opts.dev_shm_size_bytes {
        plan.entries.push(MountEntry {
            target: dev,
            kind: MountKind::Dev { shm_size_bytes },
            origin: origin("implicit: minimal /dev"),
        });
    }
    plan.normalize();
    (plan, losses.into_iter().collect())
}

/// Keeps read-only carve-outs and masks inside writable trees where they are. Rename moves
/// a mount with the directory that holds it, so with only the carve-out mounted the agent
/// could rename `.git` away (the read-only `.git/config` with it) and create a new
/// `.git/config`. A mount point cannot be renamed or removed (`EBUSY`) in the mount
/// namespace that holds the mount, so every directory strictly between the writable tree's
/// root (a mount already) and the protected path is bound onto itself with the tree's own
/// flags: the directories stay writable for their other entries, and none of them can be
/// renamed, removed or replaced.
fn pin_ancestors(plan: &mut MountPlan) {
    let mut pins = Vec::new();
    for e in &plan.entries {
        let protected = matches!(e.kind, MountKind::Mask | MountKind::Bind { writable: false, .. });
        if !protected {
            continue;
        }
        // The nearest enclosing entry of the plan: the mount the protected path lives in.
        let enclosing = plan
            .entries
            .iter()
            .filter(|o| o.target != e.target && o.target.contains(&e.target))
            .max_by_key(|o| o.target.components().len());
        let Some(MountEntry { target: root, kind: MountKind::Bind { writable: true, exec }, .. }) = enclosing else {
            continue;
        };
        for a in e.target.ancestors().skip(1).take_while(|a| a != root) {
            pins.push(MountEntry {
                target: a,
                kind: MountKind::Bind { writable: true, exec: *exec },
                origin: BTreeSet::from([format!("pin: ancestor of `{}`", e.target)]),
            });
        }
    }
    plan.entries.extend(pins);
}

/// Paths the minimal `/dev` itself provides: rules on them need no host bind.
const DEV_NODES: &[&str] = &[
    "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin",
    "stdout", "stderr",
];

/// For a rule on a node of the minimal `/dev` that is private to the sandbox (not bound from
/// the host), what it is.
fn private_dev_node(base: &PathTemplate, dev: &PathTemplate, path: &PathTemplate) -> Option<&'static str> {
    if base != dev {
        return None;
    }
    match path.components().get(1).map(String::as_str) {
        Some("shm") => Some("tmpfs (shared memory is not shared with host processes)"),
        Some("pts" | "ptmx") => Some("pseudo-terminal instance (the host's terminals are not in it)"),
        _ => None,
    }
}

fn provided_by_dev(base: &PathTemplate, dev: &PathTemplate, path: &PathTemplate) -> bool {
    base == dev
        && path.components().len() >= 2
        && path
            .components()
            .get(1)
            .is_some_and(|c| DEV_NODES.contains(&c.as_str()))
}
