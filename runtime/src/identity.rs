//! Who the agent runs as, and who launched it.
//!
//! Input: the supervisor's own ids, `--user NAME|UID[:GID]` and `--group NAME|GID` (each
//! repeatable), and `SUDO_UID`/`SUDO_GID` from the environment. Output: an [`Identity`]:
//! the agent's uid, gid and supplementary groups (the same numbers inside its user namespace
//! and on the host: the maps are identity maps), their names, and the launcher. Rules:
//!
//! - Launched by an unprivileged user U (gid G): the agent is U/G. The maps are `U U 1` and
//!   `G G 1` (after `setgroups deny`, which the kernel demands of an unprivileged map
//!   writer), so files the agent writes belong to U and U's own tools keep working on them.
//!   The supplementary groups cannot be dropped there (setgroups is denied in that user
//!   namespace): they stay, shown inside as the overflow gid, and the report says so.
//!   `--user` naming anyone else and `--group` are refused: only root can change identity.
//! - Launched by root: the agent is `--user`, else the invoking user when started through
//!   `sudo` (`SUDO_UID`/`SUDO_GID`), else 65534 (`nobody`). Supplementary groups are
//!   dropped unless named with `--group`. The maps are `0 0 1` plus the agent's ids and
//!   named groups: uid 0 of the namespace does the setup (creating files on the tmpfs it
//!   mounts, root-only sysctls of its pid namespace) and the caps stage switches to the
//!   agent's ids for good.
//! - The agent never runs as the host's root: uid 0 and gid 0 are refused as the agent's
//!   identity (a `SUDO_UID` of 0 is ignored).

use std::ffi::{CStr, CString};

use crate::exit::RunError;

/// The uid/gid an agent launched by root runs as by default.
pub const NOBODY: u32 = 65534;

/// Who launched the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub uid: u32,
    pub user: Option<String>,
    /// `SUDO_UID` when root was reached through sudo.
    pub sudo_uid: Option<u32>,
}

/// Who the agent is (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups the agent gets (root launcher: the named ones only).
    pub groups: Vec<u32>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// Names of `groups`, where they have one.
    pub group_names: Vec<Option<String>>,
    /// The supervisor is root: it maps `0 0 1` too and may set the groups.
    pub root: bool,
    /// Unprivileged launch: the launcher's supplementary groups, which stay (see the module doc).
    pub kept_groups: Vec<u32>,
    pub launcher: Launcher,
}

/// A passwd entry's name and primary gid, by uid.
fn passwd_by_uid(uid: u32) -> Option<(String, u32)> {
    passwd_entry(uid).map(|(name, gid, _)| (name, gid))
}

/// The home directory of `uid` in the passwd database.
pub fn home_of(uid: u32) -> Option<std::path::PathBuf> {
    passwd_entry(uid).map(|(_, _, home)| home).filter(|h| h.is_absolute())
}

/// A passwd entry's name, primary gid and home directory, by uid.
fn passwd_entry(uid: u32) -> Option<(String, u32, std::path::PathBuf)> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pw` and `buf` (whose length we pass) and sets `out`.
    let r = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into `buf`, NUL-terminated.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }.to_string_lossy().into_owned();
    // SAFETY: likewise pw_dir (checked for NULL first).
    let home = if pw.pw_dir.is_null() { String::new() } else { unsafe { CStr::from_ptr(pw.pw_dir) }.to_string_lossy().into_owned() };
    Some((name, pw.pw_gid, std::path::PathBuf::from(home)))
}

/// A passwd entry's uid and primary gid, by name.
fn passwd_by_name(name: &str) -> Option<(u32, u32)> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in passwd_by_uid.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r with a NUL-terminated name; writes into `pw` and `buf`.
    let r = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some((pw.pw_uid, pw.pw_gid))
}

fn group_by_gid(gid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: an all-zero group is a valid out-parameter.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrgid_r writes into `gr` and `buf` and sets `out`.
    let r = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points into `buf`, NUL-terminated.
    Some(unsafe { CStr::from_ptr(gr.gr_name) }.to_string_lossy().into_owned())
}

fn group_by_name(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: as in group_by_gid.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r with a NUL-terminated name; writes into `gr` and `buf`.
    let r = unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    (r == 0 && !out.is_null()).then_some(gr.gr_gid)
}

/// The supervisor's supplementary groups.
fn own_groups() -> Vec<u32> {
    // SAFETY: getgroups(0, NULL) returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Vec::new();
    }
    let mut v = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds `n` gids.
    let got = unsafe { libc::getgroups(n, v.as_mut_ptr()) };
    v.truncate(got.max(0) as usize);
    v
}

fn refused(msg: String) -> RunError {
    RunError::Refused(msg)
}

/// A uid given by number or name; the passwd entry's gid when it has one.
fn resolve_user(spec: &str) -> Result<(u32, Option<u32>), RunError> {
    if let Ok(uid) = spec.parse::<u32>() {
        return Ok((uid, passwd_by_uid(uid).map(|(_, g)| g)));
    }
    passwd_by_name(spec)
        .map(|(u, g)| (u, Some(g)))
        .ok_or_else(|| refused(format!("--user {spec}: no such user on this host (give a name from /etc/passwd or a number)")))
}

fn resolve_group(spec: &str, flag: &str) -> Result<u32, RunError> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Ok(gid);
    }
    group_by_name(spec).ok_or_else(|| refused(format!("{flag} {spec}: no such group on this host (give a name from /etc/group or a number)")))
}

fn env_id(name: &str) -> Option<u32> {
    std::env::var(name).ok()?.trim().parse().ok()
}

/// Decides the agent's identity (see the module doc). `Err` is a refusal (exit 125).
pub fn decide(user: Option<&str>, groups: &[String]) -> Result<Identity, RunError> {
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let launcher = Launcher {
        uid: euid,
        user: passwd_by_uid(euid).map(|(n, _)| n),
        sudo_uid: if euid == 0 { env_id("SUDO_UID") } else { None },
    };
    let (uid, gid, named) = if euid == 0 {
        let (uid, gid) = match user {
            Some(spec) => {
                let (u, g) = match spec.split_once(':') {
                    Some((u, g)) => (resolve_user(u)?.0, Some(resolve_group(g, "--user ...:")?)),
                    None => resolve_user(spec)?,
                };
                (u, g.unwrap_or(u))
            }
            None => match (env_id("SUDO_UID").filter(|u| *u != 0), env_id("SUDO_GID")) {
                (Some(u), g) => (u, g.or_else(|| passwd_by_uid(u).map(|(_, g)| g)).unwrap_or(u)),
                (None, _) => (NOBODY, NOBODY),
            },
        };
        let mut named = Vec::new();
        for g in groups {
            let gid = resolve_group(g, "--group")?;
            if !named.contains(&gid) {
                named.push(gid);
            }
        }
        (uid, gid, named)
    } else {
        if let Some(spec) = user {
            let (u, g) = match spec.split_once(':') {
                Some((u, g)) => (resolve_user(u)?.0, Some(resolve_group(g, "--user ...:")?)),
                None => (resolve_user(spec)?.0, None),
            };
            if u != euid || g.is_some_and(|g| g != egid) {
                return Err(refused(format!(
                    "--user {spec}: only root can run the agent as another user; as uid {euid} the agent is uid {euid} gid {egid}"
                )));
            }
        }
        if !groups.is_empty() {
            return Err(refused(format!(
                "--group: only root can choose the agent's groups; an unprivileged launch keeps uid {euid}'s groups (the kernel denies setgroups in its user namespace)"
            )));
        }
        (euid, egid, Vec::new())
    };
    if uid == 0 || gid == 0 || named.contains(&0) {
        return Err(refused(format!(
            "the agent would run with the host's root {} (uid {uid} gid {gid}); give --user NAME|UID[:GID] with non-zero ids",
            if uid == 0 { "user" } else { "group" }
        )));
    }
    Ok(Identity {
        uid,
        gid,
        user: passwd_by_uid(uid).map(|(n, _)| n),
        group: group_by_gid(gid),
        group_names: named.iter().map(|g| group_by_gid(*g)).collect(),
        groups: named,
        root: euid == 0,
        kept_groups: if euid == 0 { Vec::new() } else { own_groups().into_iter().filter(|g| *g != egid).collect() },
        launcher,
    })
}

fn named(id: u32, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{id} ({n})"),
        None => id.to_string(),
    }
}

impl Identity {
    /// The uid and gid maps to write (`/proc/<pid>/uid_map`, `gid_map`): identity maps of
    /// the agent's ids, plus `0 0 1` for a root launcher (see the module doc).
    pub fn maps(&self) -> (String, String) {
        let mut umap = String::new();
        let mut gmap = String::new();
        if self.root {
            umap.push_str("0 0 1\n");
            gmap.push_str("0 0 1\n");
        }
        umap.push_str(&format!("{0} {0} 1\n", self.uid));
        let mut gids = vec![self.gid];
        for g in &self.groups {
            if !gids.contains(g) {
                gids.push(*g);
            }
        }
        for g in gids {
            gmap.push_str(&format!("{g} {g} 1\n"));
        }
        (umap, gmap)
    }

    /// One line for the report: `uid 1000 (alice) gid 1000 (alice), supplementary groups
    /// none; launched by uid 0 (root) via sudo from uid 1000`.
    pub fn describe(&self) -> String {
        let groups = if self.root {
            if self.groups.is_empty() {
                "supplementary groups dropped".to_string()
            } else {
                let g: Vec<String> = self.groups.iter().zip(&self.group_names).map(|(g, n)| named(*g, n)).collect();
                format!("supplementary groups {} (named), others dropped", g.join(", "))
            }
        } else if self.kept_groups.is_empty() {
            "no supplementary groups".to_string()
        } else {
            let g: Vec<String> = self.kept_groups.iter().map(|g| g.to_string()).collect();
            format!(
                "supplementary groups {} KEPT (an unprivileged launch cannot drop them: the kernel denies setgroups in its user namespace; they show as 65534 inside)",
                g.join(",")
            )
        };
        let by = match (self.launcher.uid, self.launcher.sudo_uid) {
            (0, Some(s)) => format!("uid 0 (root) via sudo from uid {}", named(s, &passwd_by_uid(s).map(|(n, _)| n))),
            (u, _) => format!("uid {}", named(u, &self.launcher.user)),
        };
        format!("uid {} gid {}, {groups}; launched by {by}", named(self.uid, &self.user), named(self.gid, &self.group))
    }

    /// The audit log's form of this identity.
    pub fn to_audit(&self) -> aegis_audit::AgentIdentity {
        aegis_audit::AgentIdentity {
            uid: self.uid,
            gid: self.gid,
            groups: if self.root { self.groups.clone() } else { self.kept_groups.clone() },
            user: self.user.clone(),
            group: self.group.clone(),
            launched_by_uid: self.launcher.uid,
            launched_by: self.launcher.user.clone(),
            sudo_uid: self.launcher.sudo_uid,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn id(root: bool, uid: u32, gid: u32, groups: Vec<u32>) -> Identity {
        Identity {
            uid,
            gid,
            group_names: groups.iter().map(|_| None).collect(),
            groups,
            user: None,
            group: None,
            root,
            kept_groups: vec![],
            launcher: Launcher { uid: if root { 0 } else { uid }, user: None, sudo_uid: None },
        }
    }

    #[test]
    fn maps_are_identity_maps_plus_root_for_a_root_launcher() {
        assert_eq!(id(false, 1000, 1000, vec![]).maps(), ("1000 1000 1\n".into(), "1000 1000 1\n".into()));
        assert_eq!(
            id(true, 1000, 100, vec![27, 100, 44]).maps(),
            ("0 0 1\n1000 1000 1\n".into(), "0 0 1\n100 100 1\n27 27 1\n44 44 1\n".into())
        );
    }
}
