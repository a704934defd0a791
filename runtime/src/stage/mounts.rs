//! Stage 4, mounts.
//!
//! Input: the bundle's `mounts.json` (mount plan, decoded and validated by the supervisor)
//! and the launch parameters. Output, in the child: with a plan, `aegis_targets::mounts::apply`
//! builds the new root (read-only and read-write binds, masks for denied paths, fresh
//! `/proc`, minimal `/dev`, private `/tmp`) and pivots into it, detaching the host tree;
//! without a plan, the tree is made private recursively and a fresh `/proc` is mounted for
//! the new pid namespace (so host processes are invisible). Invariants: nothing propagates
//! to the host; a plan the bundle requires is applied or the launch fails (exit 126); with
//! `Isolation::None` (no mount namespace) a required plan refuses the launch.

use aegis_targets::landlock::Params;
use aegis_targets::mounts::MountPlan;

use crate::stage::report::{ChildReport, Fail, INFO_HOST_HIDDEN, INFO_LEN, INFO_MEMFD_ERRNO, INFO_MEMFD_NOEXEC, INFO_MOUNTS_MOUNTED, INFO_MOUNTS_SKIPPED};
use crate::exit::RunError;
use crate::stage::Stage;
use crate::stage::verify::Verified;

pub const WHAT_PRIVATE: u32 = 1;
pub const WHAT_PROC: u32 = 2;
pub const WHAT_PLAN: u32 = 3;
pub const WHAT_SEED: u32 = 4;

pub const FILE: &str = aegis_targets::bundle::contract::MOUNTS;

/// Child-side plan.
pub struct ChildMounts {
    /// Make `/` rprivate and mount a fresh /proc (only with a new mount + pid namespace and
    /// no plan).
    pub base: bool,
    pub plan: Option<(MountPlan, Params)>,
}

/// Launch parameters in the form the mounts and Landlock targets take.
pub fn params(v: &Verified) -> Result<Params, RunError> {
    let mut p = Params::new();
    for (k, val) in &v.params {
        p.insert(k, val.clone()).map_err(|e| RunError::Refused(e.to_string()))?;
    }
    Ok(p)
}

/// Supervisor side: decodes the plan; returns the child plan and the report detail.
pub fn prepare(v: &Verified, have_mount_ns: bool) -> Result<(ChildMounts, String), RunError> {
    let Some(bytes) = v.file(FILE) else {
        return Ok((
            ChildMounts { base: have_mount_ns, plan: None },
            if have_mount_ns {
                "no mount plan in bundle: private propagation and a fresh /proc only".into()
            } else {
                "no mount namespace".into()
            },
        ));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| RunError::Refused("mounts.json is not UTF-8".into()))?;
    let plan = MountPlan::from_json(text).map_err(|e| RunError::Refused(format!("mounts.json: {e}")))?;
    if !have_mount_ns {
        if v.required("mounts") {
            return Err(RunError::Unavailable {
                layer: "mounts",
                why: "the mount plan needs a mount namespace, which this host cannot create (user namespaces unavailable); fix: allow unprivileged user namespaces on this host, or [enforcement] mounts = \"best-effort\" (Landlock alone then guards the filesystem)".into(),
            });
        }
        return Ok((ChildMounts { base: false, plan: None }, "best-effort: no mount namespace, plan not applied".into()));
    }
    let n = plan.entries.len();
    Ok((
        ChildMounts {
            base: false,
            plan: Some((plan, params(v)?)),
        },
        format!("mount plan of {n} entries"),
    ))
}

/// Host files a fresh `/proc` still shows that the agent has no use for, hidden behind an
/// empty read-only file (`/dev/null` bound over them): the kernel's boot command line can
/// carry cloud metadata, root device names, even tokens. Cheap, and no program needs it.
const HIDDEN: &[&std::ffi::CStr] = &[c"/proc/cmdline"];

/// Binds `/dev/null` read-only over each of [`HIDDEN`]; returns how many are hidden (one
/// that cannot be is left visible and reported: nothing depends on it).
fn hide_host_files() -> u32 {
    let mut hidden = 0;
    for path in HIDDEN {
        // SAFETY: mount(2) with NUL-terminated paths and null data.
        let ok = unsafe {
            libc::mount(c"/dev/null".as_ptr(), path.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) == 0
                && libc::mount(
                    std::ptr::null(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    std::ptr::null(),
                ) == 0
        };
        hidden += u32::from(ok);
    }
    hidden
}

/// How many of the host files in `HIDDEN` there are.
pub fn hidden_count() -> u32 {
    HIDDEN.len() as u32
}

pub fn apply_in_child(m: &ChildMounts, info: &mut [u32; INFO_LEN], msg: &mut ChildReport) -> Result<(), Fail> {
    if let Some((plan, params)) = &m.plan {
        return match aegis_targets::mounts::apply(plan, params) {
            Ok(r) => {
                info[INFO_MOUNTS_MOUNTED] = r.mounted.len() as u32;
                info[INFO_MOUNTS_SKIPPED] = r.skipped.len() as u32;
                info[INFO_MEMFD_NOEXEC] = u32::from(r.memfd_noexec);
                info[INFO_MEMFD_ERRNO] = r.memfd_noexec_errno.unwrap_or(0) as u32;
                info[INFO_HOST_HIDDEN] = hide_host_files();
                Ok(())
            }
            Err(e) => {
                msg.set_msg(&e.to_string());
                let errno = match &e {
                    aegis_targets::mounts::MountError::Io { source, .. } => source.raw_os_error().unwrap_or(0),
                    _ => 0,
                };
                Err(Fail {
                    stage: Stage::Mounts,
                    what: WHAT_PLAN,
                    errno,
                })
            }
        };
    }
    if !m.base {
        return Ok(());
    }
    // SAFETY: mount(2) with NUL-terminated literals and null data.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Fail::errno(Stage::Mounts, WHAT_PRIVATE));
    }
    // SAFETY: as above.
    let r = unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(Fail::errno(Stage::Mounts, WHAT_PROC));
    }
    info[INFO_HOST_HIDDEN] = hide_host_files();
    Ok(())
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_PRIVATE => "making / private (MS_REC|MS_PRIVATE)",
        WHAT_PROC => "mounting a fresh /proc",
        WHAT_PLAN => "applying the mount plan",
        WHAT_SEED => "writing the proxy trust bundle into the private /tmp",
        _ => "mounts",
    }
}

/// Files the supervisor prepared for the agent's private `/tmp` (the proxy's trust
/// bundle): `dir` is created 0755, each file 0444 with O_EXCL|O_NOFOLLOW, before any
/// agent code runs. Runs after the mount plan (so `/tmp` is the sandbox's own tmpfs).
pub struct ChildSeed {
    pub dir: Option<std::ffi::CString>,
    pub files: Vec<(std::ffi::CString, Vec<u8>)>,
}

pub fn seed_in_child(seed: &ChildSeed) -> Result<(), Fail> {
    if let Some(d) = &seed.dir {
        // SAFETY: mkdir with a NUL-terminated path we own.
        if unsafe { libc::mkdir(d.as_ptr(), 0o755) } != 0 && crate::errno::last() != libc::EEXIST {
            return Err(Fail::errno(Stage::Mounts, WHAT_SEED));
        }
    }
    for (path, bytes) in &seed.files {
        // SAFETY: open with a NUL-terminated path we own and constant flags.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o444 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(Fail::errno(Stage::Mounts, WHAT_SEED));
        }
        let mut off = 0;
        while off < bytes.len() {
            let rest = bytes.get(off..).unwrap_or_default();
            // SAFETY: writing from a live slice to the fd we opened.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                if n < 0 && crate::errno::last() == libc::EINTR {
                    continue;
                }
                let f = Fail::errno(Stage::Mounts, WHAT_SEED);
                // SAFETY: closing our fd.
                unsafe { libc::close(fd) };
                return Err(f);
            }
            off += n as usize;
        }
        // SAFETY: closing our fd.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// The run's own `/tmp` when there is no mount namespace (user namespaces blocked): the
/// built-in private `/tmp` must never become the host's `/tmp` (other users' files and
/// sockets). A fresh directory, mode 0700, owned by the agent: under `$XDG_RUNTIME_DIR` when
/// the agent is the launching user and it is set (a per-user tmpfs), else a new
/// `mkdtemp` under `/tmp`. The Landlock grant on `/tmp` is moved to it
/// ([`super::landlock::ChildLandlock::retarget_tmp`]), `TMPDIR` and `HOME` point at it, and it
/// is removed (with what the agent left there) when the launch ends.
#[derive(Debug)]
pub struct PrivateTmp {
    dir: std::path::PathBuf,
}

impl PrivateTmp {
    pub fn create(agent: &str, uid: u32, gid: u32, launcher_is_agent: bool) -> Result<PrivateTmp, RunError> {
        use std::os::unix::fs::MetadataExt as _;
        let runtime_dir = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .filter(|d| launcher_is_agent && d.is_absolute() && std::fs::metadata(d).is_ok_and(|m| m.is_dir() && m.uid() == uid));
        let base = runtime_dir.unwrap_or_else(|| std::path::PathBuf::from("/tmp"));
        let name: String = agent.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(32).collect();
        let template = std::ffi::CString::new(format!("{}/aegis-{name}-XXXXXX", base.display()))
            .map_err(|_| RunError::internal("the run's /tmp", "a NUL byte in its path"))?;
        let mut bytes = template.into_bytes_with_nul();
        // SAFETY: mkdtemp rewrites the XXXXXX of our NUL-terminated buffer in place and
        // creates the directory with mode 0700.
        if unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) }.is_null() {
            return Err(RunError::internal("creating the run's /tmp", format!("under {}: {}", base.display(), std::io::Error::last_os_error())));
        }
        bytes.pop();
        let dir = std::path::PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
        let made = PrivateTmp { dir };
        if !launcher_is_agent {
            std::os::unix::fs::chown(&made.dir, Some(uid), Some(gid)).map_err(|e| RunError::internal("handing the run's /tmp to the agent", e))?;
        }
        Ok(made)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.dir
    }

    /// Removes it now (see [`Drop`]), saying what failed.
    pub fn remove(mut self) -> Result<(), String> {
        let dir = std::mem::take(&mut self.dir);
        std::fs::remove_dir_all(&dir).map_err(|e| format!("removing the run's /tmp {}: {e}", dir.display()))
    }
}

impl Drop for PrivateTmp {
    /// Removes the directory and everything the agent left in it (symbolic links are
    /// removed, never followed).
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
