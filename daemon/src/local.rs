//! Where the local tools meet: `AEGIS_DIR` and `AEGIS_SOCKET`.
//!
//! Input: the process environment (`AEGIS_DIR`, `AEGIS_SOCKET`, `XDG_STATE_HOME`, `HOME`)
//! and the flags a command was given. Output: the socket `aegisd` serves and `aegis` asks,
//! the audit log `aegisd` and `aegis run` append to when no `--audit-log` is given, and the
//! directory that holds them, created or checked. Invariants: a flag beats `AEGIS_SOCKET`,
//! which beats `$AEGIS_DIR/aegisd.sock`; `AEGIS_DIR` defaults to
//! `${XDG_STATE_HOME:-$HOME/.local/state}/aegis`; the directory is created mode 0700 (0710
//! and the daemon's `--group` when one is admitted, so its members can reach the socket but
//! not list or write the directory), and an existing one is used only if it is a real
//! directory (not a symlink) owned by the caller or root and writable by nobody else, so no
//! other user can put a socket or a log in place of ours.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directory the local tools share.
pub const DIR_VAR: &str = "AEGIS_DIR";
/// The socket `aegisd` serves and `aegis` asks (beats `$AEGIS_DIR/aegisd.sock`).
pub const SOCKET_VAR: &str = "AEGIS_SOCKET";
/// The socket's file name in `AEGIS_DIR`.
pub const SOCKET_FILE: &str = "aegisd.sock";
/// The audit log's file name in `AEGIS_DIR`.
pub const AUDIT_FILE: &str = "audit.log";

/// The process environment; unset and empty are the same (an empty path is never what
/// someone meant).
fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// `AEGIS_DIR`, else `${XDG_STATE_HOME:-$HOME/.local/state}/aegis`; `None` when none of the
/// three is set.
pub fn dir() -> Option<PathBuf> {
    dir_in(&env)
}

fn dir_in(var: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    if let Some(d) = var(DIR_VAR) {
        return Some(PathBuf::from(d));
    }
    // As the XDG spec says (and the runtime's state directory does): a relative
    // XDG_STATE_HOME or HOME is ignored, never taken relative to the working directory.
    let absolute = |v: Option<OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    let state = absolute(var("XDG_STATE_HOME")).or_else(|| absolute(var("HOME")).map(|h| h.join(".local/state")))?;
    Some(state.join("aegis"))
}

/// Where a socket path came from: a directory we create, or a path the user chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketPath {
    /// `--socket PATH` or `AEGIS_SOCKET`: used as given.
    Given(PathBuf),
    /// `$AEGIS_DIR/aegisd.sock`: the daemon creates (or checks) the directory first.
    InDir { dir: PathBuf, socket: PathBuf },
}

impl SocketPath {
    pub fn path(&self) -> &Path {
        match self {
            SocketPath::Given(p) => p,
            SocketPath::InDir { socket, .. } => socket,
        }
    }
}

/// The socket: `flag`, else `AEGIS_SOCKET`, else `$AEGIS_DIR/aegisd.sock`.
pub fn socket(flag: Option<&Path>) -> Result<SocketPath, String> {
    socket_in(flag, &env)
}

fn socket_in(flag: Option<&Path>, var: &dyn Fn(&str) -> Option<OsString>) -> Result<SocketPath, String> {
    if let Some(p) = flag {
        return Ok(SocketPath::Given(p.to_path_buf()));
    }
    if let Some(p) = var(SOCKET_VAR) {
        return Ok(SocketPath::Given(PathBuf::from(p)));
    }
    match dir_in(var) {
        Some(dir) => Ok(SocketPath::InDir { socket: dir.join(SOCKET_FILE), dir }),
        None => Err(format!("no socket: give --socket PATH, or set {SOCKET_VAR} or {DIR_VAR} (neither HOME nor XDG_STATE_HOME is set for the default)")),
    }
}

/// Creates `dir` (and missing parents) mode 0700, or 0710 with `group` as its group; or
/// checks that an existing `dir` is safe to keep a socket and an audit log in (see the
/// module docs). The message of an error names the directory and the fix.
pub fn ensure_dir(dir: &Path, group: Option<u32>) -> Result<(), String> {
    let created = match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            true
        }
        _ => false,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{} is not a directory (a symlink or a file); point {DIR_VAR} at a directory you own",
            dir.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "{} belongs to uid {}, not to you (uid {me}): another user could replace the socket or the log there; point {DIR_VAR} at a directory you own",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by others (mode {:o}): they could replace the socket or the log; run `chmod go-w {}` or point {DIR_VAR} elsewhere",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        ));
    }
    // A directory that existed keeps the mode its owner gave it; only a fresh one is shaped
    // here. The mode is set explicitly: the umask may have narrowed 0700 (to nothing useful).
    if created {
        let mode = match group {
            Some(gid) => {
                // Group first, then widen: never 0710 with the wrong group.
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|e| format!("cannot chgrp {}: {e}", dir.display()))?;
                0o710
            }
            None => 0o700,
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("cannot chmod {}: {e}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn a_flag_beats_aegis_socket_which_beats_aegis_dir() {
        let all = vars(&[("AEGIS_SOCKET", "/s/env.sock"), ("AEGIS_DIR", "/d"), ("HOME", "/home/u")]);
        assert_eq!(socket_in(Some(Path::new("/s/flag.sock")), &all).unwrap(), SocketPath::Given("/s/flag.sock".into()));
        assert_eq!(socket_in(None, &all).unwrap(), SocketPath::Given("/s/env.sock".into()));
        let dir_only = vars(&[("AEGIS_DIR", "/d"), ("HOME", "/home/u")]);
        assert_eq!(socket_in(None, &dir_only).unwrap(), SocketPath::InDir { dir: "/d".into(), socket: "/d/aegisd.sock".into() });
    }

    #[test]
    fn the_directory_defaults_to_the_users_state_directory() {
        assert_eq!(dir_in(&vars(&[("HOME", "/home/u")])).unwrap(), Path::new("/home/u/.local/state/aegis"));
        assert_eq!(dir_in(&vars(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/xdg")])).unwrap(), Path::new("/xdg/aegis"));
        // Empty is unset: an empty AEGIS_DIR does not mean the current directory.
        assert_eq!(dir_in(&vars(&[("AEGIS_DIR", ""), ("HOME", "/home/u")])).unwrap(), Path::new("/home/u/.local/state/aegis"));
        assert_eq!(dir_in(&vars(&[])), None);
        assert_eq!(dir_in(&vars(&[("HOME", "relative"), ("XDG_STATE_HOME", "also/relative")])), None);
        let e = socket_in(None, &vars(&[])).unwrap_err();
        assert!(e.contains("give --socket PATH, or set AEGIS_SOCKET or AEGIS_DIR"), "{e}");
    }

    #[test]
    fn creates_the_directory_private_and_refuses_unsafe_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;

        // Created with its missing parents, owner only, whatever the umask widened or narrowed.
        let d = tmp.path().join("a/b/aegis");
        ensure_dir(&d, None).unwrap();
        assert_eq!(mode(&d), 0o700);
        // Reached again: kept as it is.
        ensure_dir(&d, None).unwrap();

        // With a group: its members may reach the socket, not list or write the directory.
        // SAFETY: getegid cannot fail.
        let gid = unsafe { libc::getegid() };
        let g = tmp.path().join("grouped");
        ensure_dir(&g, Some(gid)).unwrap();
        assert_eq!(mode(&g), 0o710);
        assert_eq!(std::fs::metadata(&g).unwrap().gid(), gid);

        // Writable by others (like /tmp itself): another user could swap the socket or the log.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(&open, None).unwrap_err();
        assert!(e.contains("writable by others") && e.contains("chmod go-w"), "{e}");
        assert_eq!(mode(&open), 0o777, "an existing directory is never changed");

        // A symlink (even to a good directory) or a file.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(ensure_dir(&link, None).unwrap_err().contains("not a directory"));
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(ensure_dir(&file, None).unwrap_err().contains("not a directory"));
    }

    #[test]
    fn refuses_a_directory_another_user_owns() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root to make a directory another user owns");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(1000), Some(1000)).unwrap();
        let e = ensure_dir(&theirs, None).unwrap_err();
        assert!(e.contains("belongs to uid 1000, not to you (uid 0)"), "{e}");
    }
}
