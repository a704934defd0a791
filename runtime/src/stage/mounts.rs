//! Stage 4, mounts.
//!
//! Input: the bundle's `mounts.json` (mount plan) if any. Output, in the child: the mount
//! tree made private recursively (nothing the agent mounts propagates to the host, nothing
//! the host mounts later appears inside), then either the mount plan applied by
//! `aegis_targets::mounts` (fresh /proc, minimal /dev, binds, masks, pivot_root) or — when
//! the bundle has no mount plan — only a fresh `/proc` for the new pid namespace so the
//! agent cannot see host processes. Invariants: a bundle that contains a mount plan is
//! refused with "not implemented: mounts" while this build lacks the mounts target's apply
//! function (it is not skipped); with `Isolation::None` nothing is mounted.

use crate::child::Fail;
use crate::exit::RunError;
use crate::stage::Stage;
use crate::stage::verify::Verified;

pub const WHAT_PRIVATE: u32 = 1;
pub const WHAT_PROC: u32 = 2;

/// Child-side plan.
pub struct ChildMounts {
    /// Make `/` rprivate and mount a fresh /proc (only with a new mount + pid namespace).
    pub base: bool,
}

/// Supervisor side: decides what the child mounts; refuses a mount plan this build cannot
/// apply.
pub fn prepare(v: &Verified, have_mount_ns: bool) -> Result<(ChildMounts, String), RunError> {
    if v.files.contains_key("mounts.json") {
        if v.required("mounts") {
            return Err(RunError::NotImplemented { layer: "mounts" });
        }
        return Ok((
            ChildMounts { base: have_mount_ns },
            "mount plan present but not applied (mounts target not implemented; bundle marks it best-effort)".into(),
        ));
    }
    Ok((
        ChildMounts { base: have_mount_ns },
        if have_mount_ns {
            "no mount plan in bundle: private propagation and a fresh /proc only".into()
        } else {
            "no mount namespace".into()
        },
    ))
}

pub fn apply_in_child(m: &ChildMounts) -> Result<(), Fail> {
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
    Ok(())
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_PRIVATE => "making / private (MS_REC|MS_PRIVATE)",
        WHAT_PROC => "mounting a fresh /proc",
        _ => "mounts",
    }
}
