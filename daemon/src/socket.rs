//! Creating the listening socket without trampling anything.
//!
//! Input: a path and an optional group. Output: a bound, listening [`UnixListener`] whose file
//! has mode 0600 (owner only) or, with a group, 0660 and that group. Invariants: an existing
//! path is replaced only if it is a socket that nobody answers on (a stale socket from a
//! daemon that died); a regular file, directory, symlink or a live socket makes start-up fail;
//! the socket file is never, even for an instant, more permissive than its final mode (it is
//! created under umask 0177 and widened afterwards if a group is given).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::error::StartError;

/// Binds `path` as described in the module docs.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, StartError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(StartError::InUse { path: path.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(StartError::io("remove stale socket", path))?;
            }
            Err(e) => return Err(StartError::Io { action: "probe existing socket", path: path.to_path_buf(), source: e }),
        },
        Ok(_) => return Err(StartError::NotASocket { path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StartError::Io { action: "inspect", path: path.to_path_buf(), source: e }),
    }
    // bind() creates the file with mode 0777 & ~umask. The daemon is single-threaded here
    // (start-up), so changing the process umask around the call affects nothing else.
    // SAFETY: umask has no preconditions and cannot fail.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(StartError::io("bind", path))?;
    if let Some(gid) = group {
        // Group first, then widen: never 0660 with the wrong group.
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(StartError::io("chgrp socket", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(StartError::io("chmod socket", path))?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(StartError::io("chmod socket", path))?;
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn refuses_files_and_live_sockets_replaces_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(bind(&file, None), Err(StartError::NotASocket { .. })));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(matches!(bind(&link, None), Err(StartError::NotASocket { .. })));

        let sock = dir.path().join("s");
        let live = bind(&sock, None).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(bind(&sock, None), Err(StartError::InUse { .. })));
        drop(live);
        // The file is left behind by a dead listener: stale, so it is replaced.
        let again = bind(&sock, Some(4242)).unwrap();
        let m = std::fs::metadata(&sock).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&m), 4242);
        drop(again);
    }
}
