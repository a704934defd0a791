//! Applying a [`LandlockArtifact`] to the calling process at launch.
//!
//! Input: a validated artifact, the launch [`Params`], a [`Mode`], and which other layers
//! are in force ([`InForce`]: the mount plan, the agent's namespaces). Output: the ruleset
//! is enforced on the calling thread and its future children (call it in the
//! single-threaded sandbox child, after the mount plan and before seccomp), and a
//! [`LandlockStatus`] says what is enforced. Invariants: `Required` never runs on a kernel
//! that lacks an item no layer in force makes up for (error naming the items and the fix,
//! no silent downgrade; see [`super::compat`]); items the kernel lacks but a fallback in
//! force enforces are named in the details and keep the status "fully enforced"; a missing
//! parameter is an error; an allow rule whose path is missing is skipped and reported; an
//! allow inside a denied path is dropped (deny beats allow).
//!
//! Denies and read-only carve-outs inside an allowed tree. Landlock grants are inherited by
//! everything beneath a rule's directory and there is no negative rule, so:
//! - With the mount plan applied, a denied path is a mask (an empty, mode-000, read-only
//!   mount) and a carve-out a read-only bind. `apply` recognises both (mount roots, the mask
//!   empty and mode 000, the bind read-only) and keeps the allowed tree whole. A carve-out is
//!   one of the artifact's `read_only` paths, or any grant without write or exec rights that
//!   a write grant covers once parameters and symlinks are resolved (a parameter under `/tmp`).
//! - Otherwise (no mount namespace, or a denied path absent at launch) the allowed tree is
//!   split around them (`split.rs`): the entries beside the chain of directories down
//!   to each such path get the rule's rights, the chain directories only what every path
//!   below them may inherit (nothing above an existing denied path, reading above a
//!   carve-out, everything but creating/removing/renaming entries above an absent denied
//!   path, so its parent stays listable and its files writable). A denied path absent at
//!   launch whose nearest existing ancestor is on a read-only mount needs nothing: it cannot
//!   be created. Losses (stricter): see `split`; symlinks directly in chain directories are
//!   not followed into grants (a symlink gets no rule; its target is governed by the
//!   target's own location). A carve-out absent at launch is not enforced (reported).
//!
//! Symlinks and hard links. Rules attach to the inode reached when the path is opened at
//! launch (symlinks resolved). A deny given through a symlink denies both the link's own
//! location and its target (the stricter reading). Landlock checks the path hierarchy of
//! each access, not the inode, so a hard link to a denied file that already exists inside
//! an allowed tree reaches it: denied regular files with more than one link are reported.
//! New hard links and renames cannot reach a denied file: linking and renaming need rights
//! on the source directory (`remove_*`, `make_*`) and `refer` forbids gaining rights.
//! `/proc/self/root/...` and `..` walks resolve to the real path, which is checked as such.
//! A Landlock-restricted process also cannot mount, unmount or pivot_root, so it cannot
//! remove a mask.

use super::artifact::LandlockArtifact;
use super::compat::{self, InForce};
use super::lower::Loss;
use super::rights::{Abi, FsRight, for_file, fs_bits};
use super::mediate::{Mediation, inode_of};
use super::split::{Grant, Hole, MUTATE, split, way};
use super::sys;
use super::template::{Params, TemplateError};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How strictly the host must match the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse unless the kernel supports the artifact's minimum ABI.
    Required,
    /// Enforce what the kernel supports and report the rest.
    BestEffort,
}

/// What the kernel enforces after [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    FullyEnforced,
    PartiallyEnforced,
    NotEnforced,
}

/// The result of [`apply`], for the enforcement report and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LandlockStatus {
    /// The kernel's ABI (0: no Landlock).
    pub kernel_abi: Abi,
    /// The ABI whose features are in force (min of kernel and artifact needs).
    pub abi_in_use: Abi,
    pub status: Enforcement,
    /// Launch-time facts: skipped rules, dropped rights, masks seen, splits made.
    pub details: Vec<String>,
    /// Launch-time losses (splits, denied files with extra hard links).
    pub losses: Vec<Loss>,
}

/// Why Landlock could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The kernel lacks items nothing else enforces at this launch; `why` names them and
    /// the fixes.
    #[error("{why}")]
    AbiTooLow {
        kernel: Abi,
        required: Abi,
        why: String,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("landlock: {what} `{path}`: {source}")]
    Path {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("landlock: {what}: {source}")]
    Kernel {
        what: &'static str,
        source: io::Error,
    },
}

/// The running kernel's Landlock ABI (`Abi(0)` when Landlock is unavailable).
pub fn kernel_abi() -> Abi {
    Abi(sys::abi_version())
}


/// Applies the artifact (see the module docs for the exact semantics).
pub fn apply(
    artifact: &LandlockArtifact,
    params: &Params,
    mode: Mode,
    in_force: InForce,
) -> Result<LandlockStatus, ApplyError> {
    apply_capped(artifact, params, mode, in_force, Abi(u32::MAX))
}

/// The ABI the ruleset is enforced at, or the refusal: `Required` refuses a kernel that
/// lacks an item no layer in `in_force` makes up for.
pub fn negotiate(
    artifact: &LandlockArtifact,
    kernel: Abi,
    mode: Mode,
    in_force: InForce,
) -> Result<Abi, ApplyError> {
    let needed = artifact.needed_abi(in_force);
    if kernel < needed && mode == Mode::Required {
        return Err(ApplyError::AbiTooLow {
            kernel,
            required: needed,
            why: compat::refusal(kernel, needed, &artifact.missing(kernel, in_force), in_force),
        });
    }
    Ok(kernel.min(artifact.min_abi))
}

/// [`apply`] as if the kernel's ABI were at most `cap` (pins behaviour across kernel
/// upgrades, and lets the downgrade path be tested on a new kernel).
pub fn apply_capped(
    artifact: &LandlockArtifact,
    params: &Params,
    mode: Mode,
    in_force: InForce,
    cap: Abi,
) -> Result<LandlockStatus, ApplyError> {
    apply_with_helper(artifact, params, mode, in_force, cap, None)
}

/// How the caller starts the file helper: called (at most once, before the agent's ruleset
/// is enforced) when names absent at launch must be mediated; it forks the helper, which
/// calls [`HelperSetup::enforce`] and serves. Without a hook nothing is mediated and those
/// entries simply cannot be created (the stricter reading).
pub type HelperHook<'a> = &'a mut dyn FnMut(HelperSetup) -> Result<(), String>;

/// [`apply_capped`], starting the file helper through `helper` when something is mediated.
pub fn apply_with_helper(
    artifact: &LandlockArtifact,
    params: &Params,
    mode: Mode,
    in_force: InForce,
    cap: Abi,
    helper: Option<HelperHook<'_>>,
) -> Result<LandlockStatus, ApplyError> {
    let kernel = kernel_abi().min(cap);
    let mut details = Vec::new();
    let mut losses = Vec::new();
    let abi_in_use = negotiate(artifact, kernel, mode, in_force)?;
    // Resolve every template first, so a missing parameter fails before anything is enforced.
    let mut denied: BTreeSet<PathBuf> = BTreeSet::new();
    let mut deny_origin: BTreeMap<PathBuf, String> = BTreeMap::new();
    for d in &artifact.denies {
        let lexical = d.path.resolve(params)?;
        let origin = d.origin.iter().cloned().collect::<Vec<_>>().join(", ");
        for p in deny_locations(&lexical) {
            deny_origin.insert(p.clone(), origin.clone());
            denied.insert(p);
        }
    }
    let mut roots = Vec::new();
    for r in &artifact.path_rules {
        let lexical = r.path.resolve(params)?;
        let origin = r.origin.iter().cloned().collect::<Vec<_>>().join(", ");
        match std::fs::canonicalize(&lexical) {
            Ok(path) => roots.push(Grant {
                path,
                access: r.access.clone(),
                follow: true,
                origin,
            }),
            Err(e) => details.push(format!(
                "skipped allow `{}` ({origin}): {} at launch",
                lexical.display(),
                if e.kind() == io::ErrorKind::NotFound {
                    "missing".to_owned()
                } else {
                    e.to_string()
                }
            )),
        }
    }
    if kernel == Abi(0) {
        details.push("kernel has no Landlock: nothing enforced".to_owned());
        return Ok(LandlockStatus {
            kernel_abi: kernel,
            abi_in_use: kernel,
            status: Enforcement::NotEnforced,
            details,
            losses,
        });
    }

    // Denied regular files with other names: Landlock and masks cannot follow inodes.
    for p in &denied {
        if let Ok(m) = std::fs::symlink_metadata(p)
            && m.is_file()
            && m.nlink() > 1
            && !is_mask(p)
        {
            {
                losses.push(Loss {
                    rule: deny_origin.get(p).cloned().unwrap_or_default(),
                    what: format!(
                        "denied file `{}` has {} hard links: another name inside an allowed tree reaches it",
                        p.display(),
                        m.nlink()
                    ),
                    stricter_reading: false,
                });
            }
        }
    }

    // Read-only carve-outs inside write trees, where they exist at launch (canonical): the
    // artifact's (read grants and protections below a write grant), and any grant without
    // write or exec rights that a write grant covers once parameters and symlinks are
    // resolved (a parameter under `/tmp`, or under another parameter): Landlock rights flow
    // down through mount points, so the outer grant would reach into it.
    let mut read_only: BTreeMap<PathBuf, (BTreeSet<FsRight>, String)> = roots
        .iter()
        .filter(|g| !g.access.iter().any(|r| MUTATE.contains(r) || matches!(r, FsRight::WriteFile | FsRight::Truncate | FsRight::Execute)))
        .map(|g| (g.path.clone(), (g.access.clone(), g.origin.clone())))
        .collect();
    // Names that must stay as they are on the way to a protected or denied path: symlinks
    // (replacing the link would bypass what protects its target) and files where a directory
    // should be. Only write grants can change them, so only write grants are split for them.
    let mut pinned: BTreeMap<PathBuf, (Hole, String)> = BTreeMap::new();
    let join = |o: &BTreeSet<String>| o.iter().cloned().collect::<Vec<_>>().join(", ");
    let lexical_protected: Vec<(PathBuf, String)> = artifact
        .read_only
        .iter()
        .map(|r| r.path.resolve(params).map(|p| (p, join(&r.origin))))
        .chain(artifact.denies.iter().map(|d| d.path.resolve(params).map(|p| (p, join(&d.origin)))))
        .collect::<Result<_, _>>()?;
    for (lexical, origin) in &lexical_protected {
        let w = way(lexical);
        for l in w.links {
            pinned.insert(l, (Hole::Absent, origin.clone()));
        }
        if let Some(b) = w.blocker {
            // A file where a directory of the protected path should be (`.git` holding
            // `gitdir: ...`): it decides where the path leads, so it is read-only.
            pinned.insert(b, (Hole::ReadOnly(super::rights::rights_for(super::rights::GrantKind::Read)), origin.clone()));
        }
    }
    for r in &artifact.read_only {
        let lexical = r.path.resolve(params)?;
        match std::fs::canonicalize(&lexical) {
            Ok(path) => {
                let access = roots.iter().find(|g| g.path == path).map(|g| g.access.clone()).unwrap_or_default();
                read_only.insert(path, (access, join(&r.origin)));
            }
            // Absent at launch: with a file helper its first missing component is a name
            // the agent may never create (mediated); without one, a gap (reported).
            Err(_) => match way(&lexical).missing {
                Some(first) if helper.is_some() => {
                    pinned.entry(first).or_insert_with(|| (Hole::Absent, join(&r.origin)));
                }
                _ => losses.push(Loss {
                    rule: join(&r.origin),
                    what: format!(
                        "read-only `{}` does not exist at launch: nothing is mounted or split there, so the agent can create it",
                        lexical.display()
                    ),
                    stricter_reading: false,
                }),
            },
        }
    }
    let mut grants = Vec::new();
    // The file helper's grants (the agent's, split only around denied paths: it makes the
    // entries of the directories on the way to the others for the agent) and its table.
    let mut helper_grants = Vec::new();
    let mut mediation = Mediation::default();
    for g in roots {
        if let Some(d) = denied.iter().find(|d| g.path.starts_with(d)) {
            details.push(format!(
                "dropped allow `{}` ({}): inside denied `{}`",
                g.path.display(),
                g.origin,
                d.display()
            ));
            continue;
        }
        // What this grant must not fully cover: denied paths below it (an existing one
        // unless the mount plan masks it, or one absent at launch) and, for a write grant,
        // the read-only carve-outs below it that no read-only mount enforces.
        let mut holes: BTreeMap<PathBuf, (Hole, String)> = BTreeMap::new();
        for d in denied.iter().filter(|d| d.starts_with(&g.path) && **d != g.path) {
            let origin = deny_origin.get(d).cloned().unwrap_or_default();
            if is_mask(d) {
                details.push(format!("deny `{}` is masked by the mount plan", d.display()));
            } else if std::fs::symlink_metadata(d).is_ok() {
                holes.insert(d.clone(), (Hole::Denied, origin));
            } else if d.ancestors().find(|a| a.exists()).is_some_and(is_read_only_mount) {
                // Nothing can be created on a read-only mount (a read-only grant bound there).
                details.push(format!("denied `{}` is absent, on a read-only mount", d.display()));
            } else {
                holes.insert(d.clone(), (Hole::Absent, origin));
            }
        }
        if g.access.contains(&FsRight::WriteFile) {
            for (p, hole) in pinned.range(g.path.clone()..).take_while(|(p, _)| p.starts_with(&g.path)) {
                if *p != g.path && !holes.contains_key(p) {
                    details.push(format!("`{}` on the way to a protected path is kept in place", p.display()));
                    holes.insert(p.clone(), hole.clone());
                }
            }
            for (c, (access, origin)) in read_only.range(g.path.clone()..).take_while(|(c, _)| c.starts_with(&g.path)) {
                if *c == g.path || holes.keys().any(|h| c.starts_with(h)) {
                    continue;
                }
                if is_mount_root(c) && is_read_only_mount(c) {
                    details.push(format!("read-only `{}` is a read-only mount of the plan", c.display()));
                } else {
                    holes.insert(c.clone(), (Hole::ReadOnly(access.clone()), origin.clone()));
                }
            }
        }
        for (h, (kind, _)) in &holes {
            if *kind != Hole::Absent || std::fs::symlink_metadata(h).is_ok() {
                mediation.protected.extend(inode_of(h));
            }
        }
        if holes.is_empty() {
            if g.access.contains(&FsRight::MakeReg) {
                mediation.full.extend(inode_of(&g.path));
            }
            helper_grants.push(g.clone());
            grants.push(g);
        } else {
            // The helper's tree is split only around denied paths (it never opens an existing
            // file, and refuses the protected names and inodes, so read-only and absent paths
            // need no split for it; a denied one must stay out of its reach entirely).
            let kept: BTreeMap<PathBuf, (Hole, String)> = holes.iter().filter(|(_, (k, _))| *k == Hole::Denied).map(|(p, h)| (p.clone(), h.clone())).collect();
            if kept.is_empty() {
                helper_grants.push(g.clone());
            } else {
                split(g.clone(), &kept, &denied, &mut helper_grants, &mut Vec::new(), &mut Vec::new(), None)?;
            }
            split(g, &holes, &denied, &mut grants, &mut details, &mut losses, Some(&mut mediation))?;
        }
    }

    // What the kernel lacks: enforced by a fallback in force (named), or, only reachable
    // in BestEffort, not enforced (partial).
    let mut partial = false;
    for m in artifact.missing(kernel, in_force) {
        partial |= m.by.is_none();
        details.push(format!("kernel ABI {kernel} lacks {}", m.describe()));
    }
    let keep = |since: Abi| since <= kernel;
    let handled_fs: BTreeSet<FsRight> = artifact
        .handled_fs
        .iter()
        .copied()
        .filter(|r| keep(r.since()))
        .collect();
    let net = artifact
        .handled_net
        .iter()
        .filter(|r| keep(r.since()))
        .fold(0, |a, r| a | r.bit());
    let scoped = artifact
        .scopes
        .iter()
        .filter(|s| keep(s.since()))
        .fold(0, |a, s| a | s.bit());
    let mut flags = 0u32;
    for f in &artifact.restrict_flags {
        if keep(f.since()) {
            flags |= u32::try_from(f.bit()).unwrap_or(0);
        } else {
            partial = true;
            details.push(format!(
                "kernel ABI {kernel} lacks flag `{f}`: audit logging differs"
            ));
        }
    }

    let ruleset = ruleset_of(&grants, &handled_fs, net, scoped, artifact, &keep, &mut details)?;
    let added = ruleset.1;
    let ruleset = ruleset.0;
    sys::set_no_new_privs().map_err(|source| ApplyError::Kernel {
        what: "setting no_new_privs",
        source,
    })?;
    // The file helper, when something is mediated: forked by the caller's hook with its own
    // ruleset (the agent's, not split for absent names), before the agent's is enforced.
    if !mediation.is_empty()
        && let Some(hook) = helper
    {
        let mut ignored = Vec::new();
        let (helper_ruleset, _) = ruleset_of(&helper_grants, &handled_fs, net, scoped, artifact, &keep, &mut ignored)?;
        let dirs = mediation.dirs.len();
        match hook(HelperSetup { mediation: std::mem::take(&mut mediation), ruleset: helper_ruleset, flags }) {
            Ok(()) => details.push(format!("file helper started: creating, removing and renaming entries in {dirs} director(ies) is mediated")),
            Err(e) => details.push(format!("file helper not started ({e}): entries cannot be created, removed or renamed in {dirs} director(ies)")),
        }
    }
    sys::restrict_self(&ruleset, flags).map_err(|source| ApplyError::Kernel {
        what: "landlock_restrict_self",
        source,
    })?;
    details.push(format!(
        "{added} path rules and {} port rules in force",
        artifact.net_rules.len()
    ));
    Ok(LandlockStatus {
        kernel_abi: kernel,
        abi_in_use,
        status: if partial {
            Enforcement::PartiallyEnforced
        } else {
            Enforcement::FullyEnforced
        },
        details,
        losses,
    })
}

/// What the file helper needs: its table and its ruleset (see [`apply_with_helper`]).
pub struct HelperSetup {
    pub mediation: Mediation,
    ruleset: std::os::fd::OwnedFd,
    flags: u32,
}

impl HelperSetup {
    /// Enforces the helper's ruleset on the calling process (the forked helper) and returns
    /// its table (the ruleset's descriptor is closed).
    pub fn enforce(self) -> Result<Mediation, ApplyError> {
        sys::restrict_self(&self.ruleset, self.flags).map_err(|source| ApplyError::Kernel { what: "landlock_restrict_self (file helper)", source })?;
        Ok(self.mediation)
    }
}

/// A ruleset handling `handled_fs`, `net` and `scoped`, with one rule per grant that can be
/// opened (the rest are reported in `details`) and the artifact's port rules; the number of
/// path rules added.
fn ruleset_of(
    grants: &[Grant],
    handled_fs: &BTreeSet<FsRight>,
    net: u64,
    scoped: u64,
    artifact: &LandlockArtifact,
    keep: &dyn Fn(Abi) -> bool,
    details: &mut Vec<String>,
) -> Result<(std::os::fd::OwnedFd, usize), ApplyError> {
    let ruleset = sys::create_ruleset(fs_bits(handled_fs), net, scoped).map_err(|source| {
        ApplyError::Kernel {
            what: "creating the ruleset",
            source,
        }
    })?;
    let mut added = 0usize;
    for g in grants {
        let fd = match open_path(&g.path, g.follow) {
            Ok(fd) => fd,
            Err(e) => {
                details.push(format!(
                    "skipped allow `{}` ({}): {e}",
                    g.path.display(),
                    g.origin
                ));
                continue;
            }
        };
        let is_dir = std::fs::metadata(format!("/proc/self/fd/{}", raw(&fd)))
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let access: BTreeSet<FsRight> = g.access.intersection(handled_fs).copied().collect();
        let access = if is_dir { access } else { for_file(&access) };
        if access.is_empty() {
            continue;
        }
        sys::add_path_rule(&ruleset, &fd, fs_bits(&access)).map_err(|source| ApplyError::Path {
            what: "adding a path rule for",
            path: g.path.clone(),
            source,
        })?;
        added += 1;
    }
    if net != 0 {
        for n in &artifact.net_rules {
            let bits = n
                .access
                .iter()
                .filter(|r| keep(r.since()))
                .fold(0, |a, r| a | r.bit());
            if bits != 0 {
                sys::add_port_rule(&ruleset, n.port, bits).map_err(|source| {
                    ApplyError::Kernel {
                        what: "adding a TCP port rule",
                        source,
                    }
                })?;
            }
        }
    }
    Ok((ruleset, added))
}

/// The places a deny covers: its target (symlinks resolved) and, if the path itself is a
/// symlink, the link's own location too.
/// A deny on a path that does not exist yet still covers it (the longest existing prefix
/// is resolved, the rest kept), so something created there later stays denied.
fn deny_locations(lexical: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(c) = std::fs::canonicalize(lexical) {
        out.push(c);
    }
    let mut tail = Vec::new();
    let mut cur = lexical.parent();
    if let Some(name) = lexical.file_name() {
        tail.push(name.to_owned());
    }
    while let Some(dir) = cur {
        if let Ok(mut p) = std::fs::canonicalize(dir) {
            for t in tail.iter().rev() {
                p.push(t);
            }
            if !out.contains(&p) {
                out.push(p);
            }
            break;
        }
        if let Some(name) = dir.file_name() {
            tail.push(name.to_owned());
        }
        cur = dir.parent();
    }
    out
}

/// A mount-plan mask: a mount root that has mode 000 and is empty. The runtime applies
/// Landlock after switching to the agent's unprivileged uid, which cannot list a mode-000
/// directory; such a directory still hides its contents from the agent if its mount is
/// read-only (no chmod back), so "unreadable, mode 000, read-only mount root" counts too.
fn is_mask(path: &Path) -> bool {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if m.permissions().mode() & 0o7777 != 0 {
        return false;
    }
    let empty = if m.is_dir() {
        match std::fs::read_dir(path) {
            Ok(mut d) => d.next().is_none(),
            Err(e) => e.kind() == std::io::ErrorKind::PermissionDenied && is_read_only_mount(path),
        }
    } else {
        m.is_file() && m.len() == 0
    };
    empty && is_mount_root(path)
}

fn is_read_only_mount(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs writes into `st`, a zeroed struct of the right type that outlives the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path; `st` is valid for writes.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

fn is_mount_root(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statx writes into `st`, a zeroed struct of the right type that outlives the call.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path; `st` is valid for writes.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            0,
            &mut st,
        )
    };
    r == 0
        && st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
        && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
}

fn open_path(path: &Path, follow: bool) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    // SAFETY: `c` is a valid NUL-terminated path; open does not keep the pointer.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; we own it exclusively.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd;
    fd.as_raw_fd()
}
