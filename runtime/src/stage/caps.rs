//! Stage 6, drop capabilities (and switch to the agent's uid/gid).
//!
//! Input: the agent's uid/gid as seen in its namespace (see [`super::namespaces`]) and the kernel's last capability
//! number (read by the supervisor from `/proc/sys/kernel/cap_last_cap`). Output, in the
//! child: securebits locked (`NOROOT`, `NO_SETUID_FIXUP`, `KEEP_CAPS` off, no ambient raise),
//! every capability removed from the bounding set, ambient set cleared, supplementary groups
//! set to the named ones (root launcher; an unprivileged launch cannot change them), uid/gid
//! switched, and effective/permitted/inheritable set to empty. Invariants:
//! verified before returning (capget reads all-zero, every bounding bit reads 0), so nothing
//! the agent execs can regain a capability, even as uid 0 of its namespace.

use crate::stage::report::Fail;
use crate::stage::Stage;

pub const WHAT_SECUREBITS: u32 = 1;
pub const WHAT_BOUNDING: u32 = 2;
pub const WHAT_AMBIENT: u32 = 3;
pub const WHAT_SETGROUPS: u32 = 4;
pub const WHAT_SETGID: u32 = 5;
pub const WHAT_SETUID: u32 = 6;
pub const WHAT_CAPSET: u32 = 7;
pub const WHAT_VERIFY: u32 = 8;

/// linux/capability.h
const CAP_SETPCAP: u32 = 8;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
// SECBIT_NOROOT | _LOCKED, SECBIT_NO_SETUID_FIXUP | _LOCKED, SECBIT_KEEP_CAPS_LOCKED,
// SECBIT_NO_CAP_AMBIENT_RAISE | _LOCKED (linux/securebits.h).
const SECUREBITS_ALL_LOCKED: libc::c_ulong = 0b1110_1111;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Child-side plan.
pub struct ChildCaps {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups to set (root launcher: the named ones, often none). `None`:
    /// leave them (an unprivileged launch, where the kernel denies setgroups).
    pub groups: Option<Vec<libc::gid_t>>,
    pub cap_last: u32,
}

fn capget() -> Option<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget(2) reads the header and writes two CapData structs we own.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    (r == 0).then_some(data)
}

/// Drops every capability (see the module doc). Returns whether the bounding set and the
/// securebits could be set too: not without CAP_SETPCAP, which an unprivileged launch
/// without a user namespace never has; it then holds no capability in any set but the
/// bounding one, and no_new_privs (the next stage) keeps execve from granting any.
pub fn apply_in_child(c: &ChildCaps) -> Result<bool, Fail> {
    let have_setpcap = capget().is_some_and(|d| d[0].effective & (1 << CAP_SETPCAP) != 0);
    if have_setpcap {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS_ALL_LOCKED, 0, 0, 0) } != 0 {
            return Err(Fail::errno(Stage::Caps, WHAT_SECUREBITS));
        }
        for cap in 0..=c.cap_last {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(Fail::errno(Stage::Caps, WHAT_BOUNDING));
            }
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(Fail::errno(Stage::Caps, WHAT_AMBIENT));
    }
    if let Some(groups) = &c.groups {
        // SAFETY: setgroups with a pointer to `groups.len()` gids we own.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(Fail::errno(Stage::Caps, WHAT_SETGROUPS));
        }
    }
    // SAFETY: set*id with plain integers.
    if unsafe { libc::setresgid(c.gid, c.gid, c.gid) } != 0 {
        return Err(Fail::errno(Stage::Caps, WHAT_SETGID));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(c.uid, c.uid, c.uid) } != 0 {
        return Err(Fail::errno(Stage::Caps, WHAT_SETUID));
    }
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset(2) reads the header and two CapData structs we own.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } != 0 {
        return Err(Fail::errno(Stage::Caps, WHAT_CAPSET));
    }
    verify(c, have_setpcap)?;
    Ok(have_setpcap)
}

fn verify(c: &ChildCaps, bounding: bool) -> Result<(), Fail> {
    let Some(d) = capget() else {
        return Err(Fail::errno(Stage::Caps, WHAT_VERIFY));
    };
    if d.iter().any(|x| x.effective != 0 || x.permitted != 0 || x.inheritable != 0) {
        return Err(Fail::check(Stage::Caps, WHAT_VERIFY));
    }
    if !bounding {
        return Ok(());
    }
    for cap in 0..=c.cap_last {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            return Err(Fail::check(Stage::Caps, WHAT_VERIFY));
        }
    }
    Ok(())
}

/// The kernel's highest capability number (from `/proc/sys/kernel/cap_last_cap`).
pub fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_SECUREBITS => "setting securebits",
        WHAT_BOUNDING => "dropping the bounding set",
        WHAT_AMBIENT => "clearing ambient capabilities",
        WHAT_SETGROUPS => "setgroups to the agent's supplementary groups",
        WHAT_SETGID => "setresgid to the agent's gid",
        WHAT_SETUID => "setresuid to the agent's uid",
        WHAT_CAPSET => "capset to empty sets",
        WHAT_VERIFY => "capabilities still present after dropping",
        _ => "capabilities",
    }
}
