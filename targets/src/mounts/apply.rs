//! Applying a [`MountPlan`] in the sandbox child at launch.
//!
//! Input: a validated plan and the launch [`Params`]; the caller has already unshared a
//! mount namespace (as root, or as uid 0 of a new user namespace) and, for a fresh `/proc`,
//! a pid namespace whose init is this process or its parent. Output: the process's root is
//! the plan's new root and the host's tree is unmounted; a [`MountReport`] says what was
//! mounted and skipped. Invariants: nothing propagates back to the host (`/` is made
//! `rprivate` first); a missing parameter or a non-absolute one is an error; a bind whose
//! host path is missing is skipped and reported; a grant inside a mask is never mounted
//! (deny beats allow); mount flags are set with `mount_setattr(AT_RECURSIVE)`, which only
//! adds restrictions and so never trips the flags a user namespace locks.
//!
//! Steps: (1) `/` rprivate; (2) a staging tmpfs on `/tmp` holds `newroot/`, `oldroot/` and
//! the empty mask file and directory; (3) `pivot_root` into the staging tmpfs, so the host
//! tree (including its real `/tmp`) is at `/oldroot`; (4) a tmpfs at `/newroot`, then each
//! entry, parent before child, from `/oldroot/<path>` to `/newroot/<path>`; symlinks on the
//! way to a bound path (`/lib64 -> usr/lib64`), and those directly in `/` whose target is
//! bound (`/bin -> usr/bin`), are recreated; (5) `vm.memfd_noexec=2` in the
//! sandbox's pid namespace; (6) the new root's own tmpfs is made read-only; (7)
//! `pivot_root(".", ".")` into it and the staging tree (with the host) is detached.

use super::plan::{MountKind, MountPlan};
use crate::landlock::{Loss, Params, TemplateError};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// What [`apply`] did, for the enforcement report.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MountReport {
    /// `target: kind` of each mount made, in order.
    pub mounted: Vec<String>,
    /// Entries not mounted, with the reason.
    pub skipped: Vec<String>,
    /// Launch-time losses (denied paths absent at launch, denied files with extra links).
    pub losses: Vec<Loss>,
    /// True when `vm.memfd_noexec = 2` is in force in the sandbox's pid namespace.
    pub memfd_noexec: bool,
    /// Why the plan's `memfd_noexec` could not be set, as an errno (`EACCES` when the
    /// launcher is not the host's root: the sysctl is writable by global root only, even
    /// in a child pid namespace).
    pub memfd_noexec_errno: Option<i32>,
}

/// Why the plan could not be applied. The child must not exec after this.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("mounts: {what} `{path}`: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> MountError + 'a {
    move |source| MountError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

const STAGE: &str = "/tmp";
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;

struct Resolved {
    path: PathBuf,
    kind: MountKind,
    origin: String,
}

/// Applies the plan (see the module docs for the steps and invariants).
pub fn apply(plan: &MountPlan, params: &Params) -> Result<MountReport, MountError> {
    let mut report = MountReport::default();
    let nested_pid_ns = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("NSpid:"))
                .map(|l| l.split_whitespace().count() > 2)
        })
        .unwrap_or(false);
    let mut entries = resolve(plan, params, &mut report)?;
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let masks: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.kind == MountKind::Mask)
        .map(|e| e.path.clone())
        .collect();
    entries.retain(|e| {
        let inside = e.kind != MountKind::Mask && masks.iter().any(|m| e.path.starts_with(m));
        if inside {
            report.skipped.push(format!(
                "{}: inside a denied path (deny beats allow)",
                e.path.display()
            ));
        }
        !inside
    });
    // A mask outside every mounted tree would only add an empty file to the new root.
    let covering: Vec<PathBuf> = entries
        .iter()
        .filter(|e| e.kind != MountKind::Mask)
        .map(|e| e.path.clone())
        .collect();
    entries.retain(|e| {
        let visible = e.kind != MountKind::Mask || covering.iter().any(|c| e.path.starts_with(c));
        if !visible {
            report.skipped.push(format!(
                "{}: mask not needed, not visible in the new root",
                e.path.display()
            ));
        }
        visible
    });
    let mut symlinks = symlinks_on_the_way(plan, params);
    symlinks.extend(root_symlinks(&entries));

    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let stage = Path::new(STAGE);
    mount(
        Some("tmpfs"),
        stage,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0700"),
    )?;
    for d in ["newroot", "oldroot", "mask-dir"] {
        let p = stage.join(d);
        std::fs::create_dir(&p).map_err(io_err("creating staging directory", &p))?;
    }
    let mask_file = stage.join("mask-file");
    std::fs::File::create(&mask_file).map_err(io_err("creating the mask file", &mask_file))?;
    for p in [stage.join("mask-dir"), mask_file] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000))
            .map_err(io_err("making a mask unreadable", &p))?;
    }
    pivot_root(stage, &stage.join("oldroot"))?;
    std::env::set_current_dir("/").map_err(io_err("entering the staging root", Path::new("/")))?;

    let new = Path::new("/newroot");
    mount(
        Some("tmpfs"),
        new,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    for e in &entries {
        let host = under(Path::new("/oldroot"), &e.path);
        let target = under(new, &e.path);
        mount_entry(e, &host, &target, &mut report)?;
        report.mounted.push(format!(
            "{}: {} ({})",
            e.path.display(),
            kind_name(e.kind),
            e.origin
        ));
    }
    for (link, dest) in &symlinks {
        let at = under(new, link);
        if at.symlink_metadata().is_err() && symlink(dest, &at).is_ok() {
            report
                .mounted
                .push(format!("{}: symlink -> {}", link.display(), dest.display()));
        }
    }
    let proc_sysctl = new.join("proc/sys/vm/memfd_noexec");
    if plan.memfd_noexec {
        // Only ever in the sandbox's own pid namespace: in the host's it would be host-wide.
        if !nested_pid_ns {
            report
                .skipped
                .push("memfd_noexec: not in a child pid namespace, left unchanged".to_owned());
        } else if let Err(e) = std::fs::write(&proc_sysctl, "2") {
            report.memfd_noexec_errno = Some(e.raw_os_error().unwrap_or(libc::EIO));
        } else {
            report.memfd_noexec = true;
        }
    }
    setattr(new, ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV, false)?;
    std::env::set_current_dir(new).map_err(io_err("entering the new root", new))?;
    pivot_root(Path::new("."), Path::new("."))?;
    umount_detach(Path::new("."))?;
    std::env::set_current_dir("/").map_err(io_err("entering the new root", Path::new("/")))?;
    Ok(report)
}

fn kind_name(k: MountKind) -> String {
    match k {
        MountKind::Bind { writable, exec } => format!(
            "bind {}{}",
            if writable { "rw" } else { "ro" },
            if exec { "" } else { ",noexec" }
        ),
        MountKind::Mask => "mask".to_owned(),
        MountKind::Tmpfs { size_bytes, .. } => format!("tmpfs size={size_bytes}"),
        MountKind::Proc => "proc".to_owned(),
        MountKind::Dev { .. } => "dev".to_owned(),
    }
}

/// Fills templates; host paths are canonicalised so targets mirror the host's real layout.
fn resolve(
    plan: &MountPlan,
    params: &Params,
    report: &mut MountReport,
) -> Result<Vec<Resolved>, MountError> {
    let mut out: Vec<Resolved> = Vec::new();
    for e in &plan.entries {
        let lexical = e.target.resolve(params)?;
        let origin = e.origin.iter().cloned().collect::<Vec<_>>().join(", ");
        let path = match e.kind {
            MountKind::Tmpfs { .. } | MountKind::Proc | MountKind::Dev { .. } => lexical,
            MountKind::Bind { .. } | MountKind::Mask => match std::fs::canonicalize(&lexical) {
                Ok(p) => p,
                Err(err) => {
                    if e.kind == MountKind::Mask {
                        report.losses.push(Loss {
                            rule: origin.clone(),
                            what: format!(
                                "denied `{}` does not exist at launch, so it is not masked: if \
                                 created later inside a writable tree it is reachable (Landlock \
                                 splits around it instead)",
                                lexical.display()
                            ),
                            stricter_reading: false,
                        });
                    }
                    report
                        .skipped
                        .push(format!("{} ({origin}): {err}", lexical.display()));
                    continue;
                }
            },
        };
        if e.kind == MountKind::Mask
            && let Ok(m) = std::fs::metadata(&path)
            && m.is_file()
            && std::os::unix::fs::MetadataExt::nlink(&m) > 1
        {
            report.losses.push(Loss {
                rule: origin.clone(),
                what: format!(
                    "denied file `{}` has {} hard links: the mask hides this name only",
                    path.display(),
                    std::os::unix::fs::MetadataExt::nlink(&m)
                ),
                stricter_reading: false,
            });
        }
        // Two templates can meet at one host path (`/bin` and `/usr/bin`): merge like the plan.
        if let Some(prev) = out.iter_mut().find(|r| r.path == path) {
            let mut tmp = MountPlan::default();
            for k in [prev.kind, e.kind] {
                tmp.entries.push(super::plan::MountEntry {
                    target: e.target.clone(),
                    kind: k,
                    origin: Default::default(),
                });
            }
            tmp.normalize();
            if let Some(m) = tmp.entries.first() {
                prev.kind = m.kind;
            }
            continue;
        }
        out.push(Resolved {
            path,
            kind: e.kind,
            origin,
        });
    }
    Ok(out)
}

/// Symlinks met on the lexical way to each bound path (e.g. `/lib64`), to recreate them.
fn symlinks_on_the_way(plan: &MountPlan, params: &Params) -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for e in &plan.entries {
        let Ok(lexical) = e.target.resolve(params) else {
            continue;
        };
        let mut cur = PathBuf::from("/");
        for c in lexical.components().skip(1) {
            cur.push(c);
            if let Ok(dest) = std::fs::read_link(&cur) {
                let Some(parent) = cur.parent() else { break };
                let Ok(parent) = std::fs::canonicalize(parent) else {
                    break;
                };
                let Some(name) = cur.file_name() else { break };
                let at = parent.join(name);
                if !out.iter().any(|(l, _)| *l == at) {
                    out.push((at, dest));
                }
                let Ok(real) = std::fs::canonicalize(&cur) else {
                    break;
                };
                cur = real;
            }
        }
    }
    out.sort();
    out
}

/// Symlinks directly in the host's `/` (`/bin -> usr/bin` on merged-/usr hosts) whose
/// target is bound: shebangs and `PT_INTERP` paths name them. One directory listed.
fn root_symlinks(entries: &[Resolved]) -> Vec<(PathBuf, PathBuf)> {
    let Ok(dir) = std::fs::read_dir("/") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let at = e.path();
        let (Ok(dest), Ok(real)) = (std::fs::read_link(&at), std::fs::canonicalize(&at)) else {
            continue;
        };
        let bound = entries
            .iter()
            .any(|r| matches!(r.kind, MountKind::Bind { .. }) && real.starts_with(&r.path));
        if bound {
            out.push((at, dest));
        }
    }
    out.sort();
    out
}

fn under(base: &Path, p: &Path) -> PathBuf {
    base.join(p.strip_prefix("/").unwrap_or(p))
}

fn mount_entry(
    e: &Resolved,
    host: &Path,
    target: &Path,
    report: &mut MountReport,
) -> Result<(), MountError> {
    match e.kind {
        MountKind::Bind { writable, exec } => {
            let meta = std::fs::metadata(host).map_err(io_err("reading the bind source", host))?;
            ensure_mountpoint(target, meta.is_dir())?;
            mount(
                Some(path_str(host)?),
                target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            let mut set = ATTR_NOSUID | ATTR_NODEV;
            if !writable {
                set |= ATTR_RDONLY;
            }
            if !exec {
                set |= ATTR_NOEXEC;
            }
            setattr(target, set, true)
        }
        MountKind::Mask => {
            let dir = std::fs::metadata(host).map(|m| m.is_dir()).unwrap_or(false);
            let src = if dir { "/mask-dir" } else { "/mask-file" };
            ensure_mountpoint(target, dir)?;
            mount(Some(src), target, None, libc::MS_BIND, None)?;
            setattr(
                target,
                ATTR_RDONLY | ATTR_NOSUID | ATTR_NODEV | ATTR_NOEXEC,
                false,
            )
        }
        MountKind::Tmpfs { size_bytes, exec } => {
            ensure_mountpoint(target, true)?;
            let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
            if !exec {
                flags |= libc::MS_NOEXEC;
            }
            let data = format!("size={size_bytes},mode=1777");
            mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(&data))
        }
        MountKind::Proc => {
            ensure_mountpoint(target, true)?;
            mount(
                Some("proc"),
                target,
                Some("proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            )
        }
        MountKind::Dev { shm_size_bytes } => mount_dev(host, target, shm_size_bytes, report),
    }
}

fn mount_dev(
    host: &Path,
    target: &Path,
    shm: u64,
    report: &mut MountReport,
) -> Result<(), MountError> {
    ensure_mountpoint(target, true)?;
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )?;
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let (src, dst) = (host.join(name), target.join(name));
        ensure_mountpoint(&dst, false)?;
        let bound = mount(Some(path_str(&src)?), &dst, None, libc::MS_BIND, None)
            .and_then(|()| setattr(&dst, ATTR_NOSUID | ATTR_NOEXEC, false));
        if let Err(e) = bound {
            report.skipped.push(format!("/dev/{name}: {e}"));
            let _ = std::fs::remove_file(&dst);
        }
    }
    for (name, dest) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let at = target.join(name);
        symlink(dest, &at).map_err(io_err("creating a /dev symlink", &at))?;
    }
    let pts = target.join("pts");
    ensure_mountpoint(&pts, true)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm_dir = target.join("shm");
    ensure_mountpoint(&shm_dir, true)?;
    let data = format!("size={shm},mode=1777");
    mount(
        Some("tmpfs"),
        &shm_dir,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&data),
    )?;
    setattr(target, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOEXEC, false)
}

fn ensure_mountpoint(target: &Path, dir: bool) -> Result<(), MountError> {
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating mount point parents", parent))?;
    }
    let r = if dir {
        std::fs::create_dir(target)
    } else {
        std::fs::File::create(target).map(drop)
    };
    r.map_err(io_err("creating a mount point", target))
}

fn path_str(p: &Path) -> Result<&str, MountError> {
    p.to_str().ok_or_else(|| MountError::Io {
        what: "non-UTF-8 path",
        path: p.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn cstr(p: &Path) -> Result<CString, MountError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| MountError::Io {
        what: "path with a NUL byte",
        path: p.to_path_buf(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })
}

fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), MountError> {
    let err = |source| MountError::Io {
        what: "mount",
        path: target.to_path_buf(),
        source,
    };
    let c = |s: Option<&str>| {
        s.map(CString::new)
            .transpose()
            .map_err(|_| err(io::Error::from_raw_os_error(libc::EINVAL)))
    };
    let (src, fstype, data) = (c(src)?, c(fstype)?, c(data)?);
    let t = cstr(target)?;
    let ptr = |o: &Option<CString>| o.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string alive for the whole call.
    let r = unsafe {
        libc::mount(
            ptr(&src),
            t.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if r < 0 {
        Err(err(io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Adds mount attributes (never clears any, so locked flags are kept).
fn setattr(target: &Path, set: u64, recursive: bool) -> Result<(), MountError> {
    let t = cstr(target)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { libc::AT_RECURSIVE } else { 0 } | libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: `t` is a NUL-terminated path and `attr` a valid struct of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(MountError::Io {
            what: "mount_setattr",
            path: target.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn pivot_root(new: &Path, old: &Path) -> Result<(), MountError> {
    let (n, o) = (cstr(new)?, cstr(old)?);
    // SAFETY: both are NUL-terminated paths alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) };
    if r < 0 {
        return Err(MountError::Io {
            what: "pivot_root",
            path: new.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn umount_detach(target: &Path) -> Result<(), MountError> {
    let t = cstr(target)?;
    // SAFETY: `t` is a NUL-terminated path alive for the call.
    let r = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if r < 0 {
        return Err(MountError::Io {
            what: "detaching the old root",
            path: target.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}
