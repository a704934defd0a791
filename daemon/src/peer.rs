//! Who is on the other end of a connection, and whether the daemon admits them.
//!
//! Input: a connected Unix stream socket. Output: the peer's [`PeerCred`] as the kernel
//! recorded it when the peer called `connect` (SO_PEERCRED: pid, uid, primary gid; and its
//! supplementary groups from SO_PEERGROUPS, or from `/proc/PID/status` `Groups:` on kernels
//! without it), and an [`Admission`] verdict. Invariants: credentials come from the kernel,
//! never from anything the peer sends; the kernel records them at `connect`, so a peer that
//! later changes user (or passes the socket to another process) keeps the identity it
//! connected with; admitted are uid 0, the daemon's own uid, and members (primary or
//! supplementary) of the configured group, nobody else, whatever the socket file's mode.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The kernel's record of the connecting process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (may include `gid`).
    pub groups: Vec<u32>,
}

impl std::fmt::Display for PeerCred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} gid {} pid {}", self.uid, self.gid, self.pid)
    }
}

/// Who the daemon admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    /// The daemon's own uid.
    pub own_uid: u32,
    /// `--group`: members may connect (check and list; not register).
    pub group: Option<u32>,
}

impl Admission {
    /// Whether `p` may use the daemon at all.
    pub fn admits(&self, p: &PeerCred) -> bool {
        self.is_admin(p) || self.group.is_some_and(|g| p.gid == g || p.groups.contains(&g))
    }

    /// Whether `p` may register policies: root or the daemon's own user. A policy file is
    /// read with the daemon's privileges and its diagnostics quote the file, so letting any
    /// group member name a path would let them read any file the daemon can.
    pub fn is_admin(&self, p: &PeerCred) -> bool {
        p.uid == 0 || p.uid == self.own_uid
    }
}

/// The daemon's own uid.
pub fn own_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

/// Reads the peer's credentials and groups.
pub fn peer_cred(stream: &UnixStream) -> std::io::Result<PeerCred> {
    let fd = stream.as_raw_fd();
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: fd is a live socket owned by `stream`; `cred` and `len` are valid for writes of
    // the sizes given, and the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &raw mut len)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let groups = match peer_groups(fd) {
        Ok(g) => g,
        // Kernels before 4.13 lack SO_PEERGROUPS; /proc is racy against pid reuse, which is
        // why it is only the fallback.
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => proc_groups(cred.pid).unwrap_or_default(),
        Err(e) => return Err(e),
    };
    Ok(PeerCred { pid: cred.pid, uid: cred.uid, gid: cred.gid, groups })
}

fn peer_groups(fd: i32) -> std::io::Result<Vec<u32>> {
    let mut buf: Vec<libc::gid_t> = vec![0; 64];
    for _ in 0..2 {
        let mut len = (buf.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `buf` is valid for writes of `len` bytes; the kernel writes at most `len`
        // bytes and sets `len` to the size it needs (ERANGE) or wrote.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERGROUPS, buf.as_mut_ptr().cast(), &raw mut len)
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            buf.truncate(n);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
        // At most NGROUPS_MAX (65536) groups: bounded.
        buf.resize(n.clamp(1, 65536), 0);
    }
    Err(std::io::Error::from_raw_os_error(libc::ERANGE))
}

/// Supplementary groups of `pid` from `/proc/PID/status`.
fn proc_groups(pid: i32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_groups_line(&status))
}

/// The numbers on the `Groups:` line of a `/proc/PID/status` text.
pub fn parse_groups_line(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| rest.split_whitespace().filter_map(|g| g.parse().ok()).collect())
        .unwrap_or_default()
}

/// Resolves `--group NAME|GID` to a gid.
pub fn resolve_group(spec: &str) -> Option<u32> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Some(gid);
    }
    let name = std::ffi::CString::new(spec).ok()?;
    let mut grp: libc::group = libc::group { gr_name: std::ptr::null_mut(), gr_passwd: std::ptr::null_mut(), gr_gid: 0, gr_mem: std::ptr::null_mut() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    loop {
        // SAFETY: every pointer is valid for the duration of the call and `buf.len()` is the
        // size of `buf`; on success `result` points at `grp`, whose strings live in `buf`.
        let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &raw mut grp, buf.as_mut_ptr(), buf.len(), &raw mut result) };
        if rc == libc::ERANGE && buf.len() < (1 << 24) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        return if rc == 0 && !result.is_null() { Some(grp.gr_gid) } else { None };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn admission_rules() {
        let a = Admission { own_uid: 1000, group: Some(50) };
        let p = |uid, gid, groups: Vec<u32>| PeerCred { pid: 1, uid, gid, groups };
        assert!(a.admits(&p(0, 0, vec![])));
        assert!(a.admits(&p(1000, 1000, vec![])));
        assert!(a.admits(&p(2000, 50, vec![])));
        assert!(a.admits(&p(2000, 2000, vec![7, 50])));
        assert!(!a.admits(&p(2000, 2000, vec![7, 51])));
        assert!(!a.is_admin(&p(2000, 50, vec![50])));
        let no_group = Admission { own_uid: 1000, group: None };
        assert!(!no_group.admits(&p(2000, 50, vec![50])));
    }

    #[test]
    fn groups_line() {
        assert_eq!(parse_groups_line("Name:\tx\nGid:\t1\t1\t1\t1\nGroups:\t4 24 27 \nNgid:\t0\n"), vec![4, 24, 27]);
        assert_eq!(parse_groups_line("Groups:\n"), Vec::<u32>::new());
        assert_eq!(parse_groups_line("garbage"), Vec::<u32>::new());
    }

    #[test]
    fn own_connection_is_us() {
        let (a, _b) = UnixStream::pair().unwrap();
        let c = peer_cred(&a).unwrap();
        assert_eq!(c.uid, own_uid());
        assert_eq!(c.pid, std::process::id() as i32);
    }

    #[test]
    fn groups_resolve() {
        assert_eq!(resolve_group("4242"), Some(4242));
        assert_eq!(resolve_group("root"), Some(0));
        assert_eq!(resolve_group("no-such-group-aegis"), None);
    }
}
