//! Which executable of the agent opened a proxy connection, for the audit record.
//!
//! Input: the agent's pid (in the supervisor's pid namespace), the cgroup leaf's process
//! list (if any), a `NETLINK_SOCK_DIAG` socket opened inside the agent's network namespace
//! (if any), and the two addresses of an accepted connection. Output: the inode of the
//! agent's end of the connection, then the path of the executable holding it, or `None`
//! when it cannot be told (the process exited, or the socket was passed on in a way `/proc`
//! does not show). Invariants: read-only; the socket is found with one exact sock_diag
//! lookup (microseconds), never by dumping the namespace's TCP table (which walks every
//! socket of the host and costs milliseconds); only processes of the agent (its leaf, or
//! the agent itself) are looked at, never the sandbox's own [`Helper`]s (the connect
//! broker, which holds a copy of every socket of the agent while it connects it, on the
//! supervisor's behalf: it is an intermediary, not a program the agent runs).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;

/// Most descriptors one executable lookup reads (about 10 µs each).
pub const MAX_FDS_SCANNED: usize = 4096;

#[derive(Debug)]
pub struct AgentProcs {
    pub pid: i32,
    /// `cgroup.procs` of the agent's leaf.
    pub procs_file: Option<PathBuf>,
    /// A NETLINK_SOCK_DIAG socket in the agent's network namespace (see [`diag_socket`]).
    pub diag: Option<Mutex<OwnedFd>>,
    /// Processes in the agent's leaf that are the sandbox's, not the agent's: never a
    /// holder (see [`Helper`]).
    pub helpers: Vec<Helper>,
}

/// A process of the sandbox that runs in the agent's leaf but is not the agent's: the
/// connect broker (`aegis-exec`'s, forked before the agent's filter), which holds a copy
/// of the agent's socket from the moment it starts connecting it until the connection is
/// made, that is while the proxy accepts it. It is skipped by the holder scan, so a
/// connection is judged by the agent's processes that hold it, and only by them: an agent
/// that closes its own copy at once (or lets only the broker hold it) leaves no holder, and
/// the program is unknown. Known by a pidfd, so a pid the broker no longer has (it exited
/// and the number was reused by an agent process) is never skipped.
#[derive(Debug)]
pub struct Helper {
    /// Its pid in the supervisor's (= the proxy's) pid namespace.
    pid: i32,
    pidfd: OwnedFd,
}

impl Helper {
    /// From a pidfd (`pidfd_open`, or one handed over by the sandbox's child): the pid is the
    /// kernel's translation into this process's pid namespace (`/proc/self/fdinfo`).
    pub fn from_pidfd(pidfd: OwnedFd) -> std::io::Result<Helper> {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a pidfd (no Pid: line in its fdinfo)"))?;
        if pid <= 0 {
            // -1: it exited already; 0: it is not visible from this pid namespace.
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("the process of the pidfd is gone or not visible here (Pid: {pid})")));
        }
        Ok(Helper { pid, pidfd })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True if `pid` is this helper: its number, and it still runs (its pidfd is readable
    /// once it exited, after which the number may be another process's).
    fn is(&self, pid: i32) -> bool {
        if pid != self.pid {
            return false;
        }
        let mut p = libc::pollfd { fd: self.pidfd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one pollfd we own, without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n == 0
    }
}

/// Opens a NETLINK_SOCK_DIAG socket in the calling thread's network namespace.
pub fn diag_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the new fd.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_HDR: usize = aegis_targets::netlink::HEADER_LEN;
/// Size of `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;

fn put_addr(buf: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => buf.get_mut(..4).into_iter().for_each(|b| b.copy_from_slice(&v4.octets())),
        IpAddr::V6(v6) => buf.get_mut(..16).into_iter().for_each(|b| b.copy_from_slice(&v6.octets())),
    }
}

/// The inode of the TCP socket whose own address is `local` and whose peer is `remote`.
fn diag_inode(fd: &OwnedFd, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    if local.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
    // at ID (sport, dport, src[4], dst[4], if, cookie[2]). Constant offsets into an array of
    // constant length: checked when this compiles.
    const ID: usize = 8;
    let mut req = [0u8; REQ_LEN];
    req[0] = if local.is_ipv4() { libc::AF_INET as u8 } else { libc::AF_INET6 as u8 };
    req[1] = libc::IPPROTO_TCP as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[ID..ID + 2].copy_from_slice(&local.port().to_be_bytes());
    req[ID + 2..ID + 4].copy_from_slice(&remote.port().to_be_bytes());
    put_addr(&mut req[ID + 4..ID + 20], local.ip());
    put_addr(&mut req[ID + 20..ID + 36], remote.ip());
    // cookie = INET_DIAG_NOCOOKIE
    req[ID + 40..ID + 48].copy_from_slice(&[0xff; 8]);
    let msg = aegis_targets::netlink::message(SOCK_DIAG_BY_FAMILY, libc::NLM_F_REQUEST as u16, 1, &req, &[]);
    // SAFETY: send/recv on a netlink socket we own, with our own buffers.
    unsafe {
        if libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) < 0 {
            return None;
        }
    }
    let mut resp = [0u8; 512];
    // SAFETY: as above.
    let n = unsafe { libc::recv(fd.as_raw_fd(), resp.as_mut_ptr().cast(), resp.len(), 0) };
    let resp = resp.get(..usize::try_from(n).ok()?)?;
    let ty = u16::from_ne_bytes([*resp.get(4)?, *resp.get(5)?]);
    if ty != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    // inet_diag_msg: family, state, timer, retrans (4), sockid (48), expires, rqueue,
    // wqueue, uid (16), inode (4).
    let at = NLMSG_HDR + 4 + 48 + 16;
    let inode = resp.get(at..)?.first_chunk::<4>()?;
    Some(u64::from(u32::from_ne_bytes(*inode)))
}

/// Fallback without a diag socket: the `/proc` table of the agent's namespace.
fn table_inode(agent_pid: i32, local: &SocketAddr) -> Option<u64> {
    let SocketAddr::V4(v4) = local else { return None };
    let want = format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port());
    let table = std::fs::read_to_string(format!("/proc/{agent_pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&want.as_str())).then(|| f.get(9).and_then(|s| s.parse().ok())).flatten()
    })
}

impl AgentProcs {
    fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .procs_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default();
        if !v.contains(&self.pid) {
            v.push(self.pid);
        }
        v.retain(|p| !self.helpers.iter().any(|h| h.is(*p)));
        v
    }

    /// The inode of the agent's end of a connection the proxy accepted: `peer` is the
    /// agent's address, `ours` the proxy's.
    pub fn socket_inode(&self, peer: SocketAddr, ours: SocketAddr) -> Option<u64> {
        match &self.diag {
            Some(m) => {
                let fd = m.lock().ok()?;
                diag_inode(&fd, peer, ours)
            }
            None => table_inode(self.pid, &peer),
        }
    }

    /// The executable of the agent process holding socket `inode`. The scan is bounded
    /// ([`MAX_FDS_SCANNED`] descriptors in all): an agent holding many descriptors gets an
    /// undetermined `exe` instead of costing the supervisor CPU per connection.
    pub fn exe_of_inode(&self, inode: u64) -> Option<String> {
        let link = format!("socket:[{inode}]");
        let mut budget = MAX_FDS_SCANNED;
        for pid in self.pids() {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for e in dir.flatten() {
                budget = budget.checked_sub(1)?;
                if std::fs::read_link(e.path()).ok().is_some_and(|t| t.as_os_str() == link.as_str()) {
                    return std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string());
                }
            }
        }
        None
    }

    /// The executables of **every** agent process holding socket `inode` (distinct, in scan
    /// order), within the same bound as [`AgentProcs::exe_of_inode`]: `None` when the bound
    /// was reached (the answer would be incomplete). A per-program grant applies only when
    /// every holder is that program, so a granted program cannot lend its connection to
    /// another one by sharing the descriptor.
    pub fn holders_of_inode(&self, inode: u64) -> Option<Vec<String>> {
        let link = format!("socket:[{inode}]");
        let mut budget = MAX_FDS_SCANNED;
        let mut out: Vec<String> = Vec::new();
        for pid in self.pids() {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for e in dir.flatten() {
                budget = budget.checked_sub(1)?;
                if std::fs::read_link(e.path()).ok().is_some_and(|t| t.as_os_str() == link.as_str()) {
                    // A process whose executable cannot be read counts as an unknown program.
                    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_else(|_| "?".into());
                    if !out.contains(&exe) {
                        out.push(exe);
                    }
                    break;
                }
            }
        }
        Some(out)
    }

    /// Both steps at once (tests, benchmarks).
    pub fn exe_of(&self, peer: SocketAddr, ours: SocketAddr) -> Option<String> {
        self.exe_of_inode(self.socket_inode(peer, ours)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn finds_this_process_behind_a_loopback_connection_with_one_diag_lookup() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let procs = AgentProcs {
            pid: std::process::id() as i32,
            procs_file: None,
            diag: Some(Mutex::new(diag_socket().unwrap())),
            helpers: Vec::new(),
        };
        let (peer, ours) = (server.peer_addr().unwrap(), server.local_addr().unwrap());
        let inode = procs.socket_inode(peer, ours).unwrap();
        let me = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
        assert_eq!(procs.exe_of_inode(inode).as_deref(), Some(me.as_str()));
        // The proxy's own end is a different socket: asking the other way round finds it,
        // and a connection that does not exist finds nothing.
        assert_ne!(procs.socket_inode(ours, peer), Some(inode));
        let gone = SocketAddr::new(peer.ip(), 1);
        assert_eq!(procs.socket_inode(gone, ours), None);
        drop(client);
    }

    fn pidfd(pid: u32) -> OwnedFd {
        // SAFETY: pidfd_open with integer arguments; returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor we own.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) }
    }

    /// The connect broker holds a copy of the agent's socket while it connects it: as a
    /// helper it is never a holder (so the agent's own processes decide, and a socket only
    /// the broker holds has no program), but only while it runs: the pid of a helper that
    /// exited may be an agent process's by now, and is scanned.
    #[test]
    fn a_running_helper_is_never_a_holder_and_an_exited_one_hides_nothing() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let me = std::process::id();
        let mut procs = AgentProcs {
            pid: me as i32,
            procs_file: None,
            diag: Some(Mutex::new(diag_socket().unwrap())),
            helpers: vec![Helper::from_pidfd(pidfd(me)).unwrap()],
        };
        assert_eq!(procs.helpers[0].pid(), me as i32, "the pidfd's pid, read from fdinfo");
        let inode = procs.socket_inode(server.peer_addr().unwrap(), server.local_addr().unwrap()).unwrap();
        assert_eq!(procs.holders_of_inode(inode), Some(vec![]), "only the helper holds it: no holder, the program is unknown");
        assert_eq!(procs.exe_of_inode(inode), None);

        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let (gone, also_gone) = (pidfd(child.id()), pidfd(child.id()));
        child.wait().unwrap();
        assert!(Helper::from_pidfd(also_gone).is_err(), "a pidfd of an exited process names no helper");
        // A helper whose process exited, recorded with a pid that is now this process's.
        procs.helpers = vec![Helper { pid: me as i32, pidfd: gone }];
        let exe = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
        assert_eq!(procs.holders_of_inode(inode), Some(vec![exe]), "an exited helper's number is scanned");
        drop(client);
    }
}
