//! The broker: a small process inside the sandbox that performs the agent's network calls
//! (`connect`, `sendto` with an address) for the supervisor, on the agent's own socket.
//!
//! Why it exists. A filter cannot read a socket address, and a supervisor that reads it and
//! answers CONTINUE is racy twice over: another agent thread can rewrite the address, or
//! `dup2` another socket over the descriptor number, between the check and the kernel's own
//! read. So the supervisor decides on its own copy of the address and has the call performed
//! on its own duplicate of the socket (`pidfd_getfd`: the open file, not the number). It must
//! not perform it itself: the server would see the supervisor's `SO_PEERCRED` (root) and pid,
//! and polkit or D-Bus would take the agent for root. The broker is forked by the child after
//! Landlock and before seccomp, so it has the agent's uid/gid and groups, no capabilities,
//! `no_new_privs`, the agent's namespaces and **the agent's Landlock domain** (TCP connect
//! rules and abstract-socket scoping apply to it exactly as to the agent), and is not under
//! the seccomp filter. It is not dumpable (the agent, same uid, can neither ptrace it nor open
//! its `/proc/PID/mem` or `/proc/PID/fd/*`), holds no descriptor but its control socket
//! (and a request's socket until the call returned, before it answers), runs
//! in its own session (terminal signals do not reach it), and dies with the sandbox
//! (`PR_SET_PDEATHSIG`, the pid namespace, and EOF on its control socket). The supervisor
//! gets a pidfd of it with the control socket: the proxy judges per-program grants by the
//! processes holding a connection's socket and must skip the broker, which holds it while
//! the proxy accepts (`aegis_proxy::exe::Helper`).
//!
//! Input (per request, from a supervisor worker over a private `SOCK_SEQPACKET` connection):
//! an operation (`CONNECT`, `SENDTO`), the socket (SCM_RIGHTS), the address bytes the
//! supervisor copied, `sendto`'s data and flags, and for a relative unix path the caller's
//! working directory (an `O_PATH` descriptor). Output: the call's result (a value or
//! `-errno`). For a **pathname unix socket** the broker first opens the path `O_PATH`
//! (following symlinks, inside the agent's root and mount namespace, relative to the caller's
//! working directory), replies with the real path (`/proc/self/fd/N`'s link: the kernel's
//! name for what was opened, symlinks resolved), device, inode and link count, and waits for
//! the supervisor's verdict; if allowed it connects to `/proc/self/fd/N`, so that the socket
//! the decision was about and the one connected to are the same inode whatever the agent
//! renames or replaces meanwhile. Other addresses (abstract, IP, netlink) are used as copied.
//!
//! Invariants: the broker acts only on what a request carries (never on agent memory or
//! descriptor numbers); one request at a time per connection, at most [`MAX_CONNECTIONS`]
//! connections (one thread each, so a blocking connect stalls only its own connection);
//! `sendto` data is at most [`MAX_DATA`] bytes (the supervisor cuts a stream send there, as
//! a short write, and refuses a larger datagram with `EMSGSIZE`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::errno::last_or_eio as errno;
use crate::seqpacket::{as_bytes, from_bytes, recv_packet, send_packet, Plain};

/// Connections (threads) the broker serves at once.
pub const MAX_CONNECTIONS: usize = 32;
/// The most `sendto` data one request carries.
pub const MAX_DATA: usize = 64 << 10;
/// The longest socket address (`sockaddr_storage`).
pub const MAX_ADDR: usize = 128;

const MAGIC: u32 = 0xAE61_B40C;
/// Request operations.
pub const OP_CONNECT: u32 = 1;
pub const OP_SENDTO: u32 = 2;
/// Reply kinds.
const R_RESOLVED: u32 = 1;
const R_RESULT: u32 = 2;
/// `sizeof(struct sockaddr_un)` and where its path starts.
const SUN_LEN: usize = 110;
const SUN_PATH_AT: usize = 2;

#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    magic: u32,
    op: u32,
    flags: i32,
    addr_len: u32,
    /// Set: a relative unix path; the second descriptor is the working directory.
    has_dir: u32,
    /// Set: the address is a unix path the supervisor must judge (RESOLVED step).
    judge: u32,
    addr: [u8; MAX_ADDR],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Reply {
    magic: u32,
    kind: u32,
    value: i64,
    dev: u64,
    ino: u64,
    nlink: u64,
    path_len: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Verdict {
    magic: u32,
    allow: u32,
}

const REQ_LEN: usize = std::mem::size_of::<Request>();
const REPLY_LEN: usize = std::mem::size_of::<Reply>();
const VERDICT_LEN: usize = std::mem::size_of::<Verdict>();

// SAFETY: repr(C), integers and byte arrays laid out without padding; any bit pattern is valid.
unsafe impl Plain for Request {}
// SAFETY: repr(C), integers and byte arrays laid out without padding; any bit pattern is valid.
unsafe impl Plain for Reply {}
// SAFETY: repr(C), integers and byte arrays laid out without padding; any bit pattern is valid.
unsafe impl Plain for Verdict {}

// ── the broker process ─────────────────────────────────────────────────────────────────

/// Forks the broker (child side, after Landlock, before seccomp). Returns the supervisor's
/// end of the control socket and a pidfd of the broker (both to hand over: the proxy must
/// know the broker, which holds a copy of each socket it connects, from the agent's own
/// processes); the broker process never returns from here. `Err` is an errno.
pub fn fork_in_child() -> Result<(OwnedFd, OwnedFd), i32> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two fds into our array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    // SAFETY: two fresh descriptors nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork from the child, which is single-threaded (it was cloned from a
    // single-threaded supervisor and started no thread); the broker runs only `serve`.
    match unsafe { libc::fork() } {
        -1 => Err(errno()),
        0 => {
            drop(ours);
            serve(theirs, parent)
        }
        pid => {
            drop(theirs);
            // The broker cannot be reaped before this (its parent reaps only once it is the
            // agent's init), so `pid` is still the broker's.
            // SAFETY: pidfd_open with integer arguments; returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if fd < 0 {
                let e = errno();
                // SAFETY: kill on the process we just forked.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return Err(e);
            }
            // SAFETY: a new descriptor nothing else owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
            Ok((ours, pidfd))
        }
    }
}

/// The broker's main: isolate itself, then accept connections from the supervisor.
fn serve(control: OwnedFd, parent: libc::pid_t) -> ! {
    let ctl = control.as_raw_fd();
    // Die with the sandbox, not dumpable, its own session, only the control socket open.
    crate::helper_process::isolate(ctl, parent);
    let threads = std::sync::atomic::AtomicUsize::new(0);
    let threads = &*Box::leak(Box::new(threads));
    let mut buf = [0u8; 16];
    // Until EOF (the supervisor is gone) or a broken control socket.
    while let Ok(Some((_, fds))) = recv_packet(ctl, &mut buf) {
        for conn in fds {
            if threads.load(std::sync::atomic::Ordering::SeqCst) >= MAX_CONNECTIONS {
                continue; // dropped: the supervisor sees EOF on it
            }
            threads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let spawned = std::thread::Builder::new().stack_size(128 << 10).spawn(move || {
                serve_connection(&conn);
                threads.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
            if spawned.is_err() {
                threads.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    // SAFETY: _exit ends the broker without running anything inherited from the supervisor.
    unsafe { libc::_exit(0) }
}

fn reply(conn: RawFd, kind: u32, value: i64) -> Result<(), i32> {
    let r = Reply { magic: MAGIC, kind, value, dev: 0, ino: 0, nlink: 0, path_len: 0, _pad: 0 };
    send_packet(conn, &[as_bytes(&r)], &[])
}

/// Serves one supervisor connection: one request at a time until EOF.
fn serve_connection(conn: &OwnedFd) {
    let c = conn.as_raw_fd();
    let mut buf = vec![0u8; REQ_LEN + MAX_DATA];
    while let Ok(Some((n, fds))) = recv_packet(c, &mut buf) {
        let Some(req) = from_bytes::<Request>(&buf) else { return };
        if req.magic != MAGIC || n < REQ_LEN {
            return;
        }
        let data = buf.get(REQ_LEN..n).unwrap_or_default();
        let mut fds = fds.into_iter();
        let Some(sock) = fds.next() else { return };
        let dir = if req.has_dir != 0 { fds.next() } else { None };
        let addr_len = (req.addr_len as usize).min(MAX_ADDR);
        let addr = req.addr.get(..addr_len).unwrap_or_default();
        let result = if req.judge != 0 {
            match judge_unix(c, addr, dir.as_ref()) {
                Ok(Some(path_fd)) => perform(&req, &sock, &proc_self_fd_addr(path_fd.as_raw_fd()), data),
                Ok(None) => -i64::from(libc::EACCES),
                Err(Failed::Errno(e)) => -i64::from(e),
                Err(Failed::Connection) => return,
            }
        } else {
            perform(&req, &sock, addr, data)
        };
        // The copies go before the answer: once the agent learns its connect is done, the
        // broker holds nothing of it (the proxy skips the broker anyway, see
        // `aegis_proxy::exe::Helper`).
        drop((sock, dir));
        if reply(c, R_RESULT, result).is_err() {
            return;
        }
    }
}

enum Failed {
    /// The call fails with this errno (as the kernel would have failed it).
    Errno(i32),
    /// The supervisor connection broke.
    Connection,
}

/// Opens the unix path of `addr` (O_PATH, following symlinks), reports what it is, and
/// waits for the verdict. `Ok(Some(fd))`: allowed, connect through `fd`.
fn judge_unix(conn: RawFd, addr: &[u8], dir: Option<&OwnedFd>) -> Result<Option<OwnedFd>, Failed> {
    let path = unix_path(addr).ok_or(Failed::Errno(libc::EINVAL))?;
    let mut c = path.to_vec();
    c.push(0);
    let base = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: openat with a NUL-terminated path and constant flags; returns a new fd or -1.
    let fd = unsafe { libc::openat(base, c.as_ptr().cast(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Failed::Errno(errno()));
    }
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into our struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(Failed::Errno(errno()));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        // What the kernel answers for a path that is not a socket.
        return Err(Failed::Errno(libc::ECONNREFUSED));
    }
    let link = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
    let mut real = vec![0u8; 4096];
    // SAFETY: readlink into our buffer (it does not NUL-terminate; we use the length).
    let n = unsafe { libc::readlink(link.as_ptr().cast(), real.as_mut_ptr().cast(), real.len()) };
    if n < 0 {
        // No /proc in the sandbox: nothing can be judged, nothing is connected.
        return Err(Failed::Errno(libc::EACCES));
    }
    real.truncate(n as usize);
    let r = Reply {
        magic: MAGIC,
        kind: R_RESOLVED,
        value: 0,
        dev: st.st_dev,
        ino: st.st_ino,
        nlink: st.st_nlink,
        path_len: real.len() as u32,
        _pad: 0,
    };
    send_packet(conn, &[as_bytes(&r), &real], &[]).map_err(|_| Failed::Connection)?;
    let mut v = [0u8; VERDICT_LEN];
    match recv_packet(conn, &mut v) {
        Ok(Some((n, _))) if n == VERDICT_LEN => {}
        _ => return Err(Failed::Connection),
    }
    let v: Verdict = from_bytes(&v).ok_or(Failed::Connection)?;
    if v.magic != MAGIC {
        return Err(Failed::Connection);
    }
    Ok((v.allow == 1).then_some(fd))
}

/// `sockaddr_un` naming `/proc/self/fd/N`.
fn proc_self_fd_addr(fd: RawFd) -> Vec<u8> {
    let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
    a.extend_from_slice(format!("/proc/self/fd/{fd}").as_bytes());
    a.push(0);
    a
}

/// Runs the call on `sock` with `addr`; the result or `-errno`.
fn perform(req: &Request, sock: &OwnedFd, addr: &[u8], data: &[u8]) -> i64 {
    let (ptr, len) = if addr.is_empty() { (std::ptr::null(), 0) } else { (addr.as_ptr(), addr.len() as libc::socklen_t) };
    let r = loop {
        // SAFETY: connect/sendto with buffers that live for the call; the kernel copies the
        // address and data.
        let r = unsafe {
            match req.op {
                OP_CONNECT => libc::connect(sock.as_raw_fd(), ptr.cast(), len) as isize,
                OP_SENDTO => libc::sendto(sock.as_raw_fd(), data.as_ptr().cast(), data.len(), req.flags | libc::MSG_NOSIGNAL, ptr.cast(), len),
                _ => return -i64::from(libc::EINVAL),
            }
        };
        // The agent's call is restarted by its own kernel path if interrupted; ours is not
        // interrupted by the agent (no signal handlers run here), but retry to be safe.
        if r < 0 && errno() == libc::EINTR && req.op == OP_SENDTO {
            continue;
        }
        break r;
    };
    if r < 0 { -i64::from(errno()) } else { r as i64 }
}

/// The path of a pathname `sockaddr_un` (`None`: not one): the bytes of `sun_path` up to
/// the first NUL, within the address length, as the kernel reads it.
pub fn unix_path(addr: &[u8]) -> Option<&[u8]> {
    let family = u16::from_ne_bytes([*addr.first()?, *addr.get(1)?]);
    if i32::from(family) != libc::AF_UNIX || addr.len() <= SUN_PATH_AT || addr.len() > SUN_LEN {
        return None;
    }
    let path = addr.get(SUN_PATH_AT..)?;
    if path.first() == Some(&0) {
        return None; // abstract
    }
    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
    path.get(..end)
}

// ── the supervisor's side ──────────────────────────────────────────────────────────────

/// What the broker found at a unix path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The kernel's name for the socket file (symlinks resolved), in the agent's view.
    pub path: Vec<u8>,
    pub dev: u64,
    pub ino: u64,
    /// 0: the file was removed (the path no longer names it).
    pub nlink: u64,
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// The broker is gone or broke the protocol (the sandbox is ending, or it was killed).
    Unavailable(String),
}

/// The supervisor's handle on the broker: a pool of connections, one per concurrent
/// request, opened on demand (at most [`MAX_CONNECTIONS`]).
pub struct Client {
    control: OwnedFd,
    idle: Mutex<Vec<OwnedFd>>,
}

impl Client {
    pub fn new(control: OwnedFd) -> Client {
        Client { control, idle: Mutex::new(Vec::new()) }
    }

    fn connection(&self) -> Result<OwnedFd, BrokerError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        let mut fds = [0i32; 2];
        // SAFETY: socketpair writes two fds into our array.
        if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
            return Err(BrokerError::Unavailable(format!("socketpair: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: two fresh descriptors nothing else owns.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        send_packet(self.control.as_raw_fd(), &[&MAGIC.to_ne_bytes()], &[theirs.as_raw_fd()])
            .map_err(|e| BrokerError::Unavailable(format!("broker control socket: {}", std::io::Error::from_raw_os_error(e))))?;
        Ok(ours)
    }

    /// Performs `op` on `sock` with `addr` (and `data`, `flags` for `sendto`). For a
    /// pathname unix address, `decide` is asked first with what the path resolved to
    /// (`dir` is the base of a relative path); a refusal returns `Ok(Err(()))`
    /// and nothing is performed. Otherwise `Ok(Ok(result))`, the call's value or `-errno`.
    #[allow(clippy::too_many_arguments, reason = "the mediated call's own arguments, plus the base directory and the judge")]
    pub fn perform(
        &self,
        op: u32,
        sock: &OwnedFd,
        addr: &[u8],
        data: &[u8],
        flags: i32,
        dir: Option<&OwnedFd>,
        decide: &mut dyn FnMut(&Resolved) -> bool,
    ) -> Result<Result<i64, ()>, BrokerError> {
        let gone = |what: &str| BrokerError::Unavailable(what.to_string());
        let judge = unix_path(addr).is_some();
        let mut req = Request { magic: MAGIC, op, flags, addr_len: addr.len().min(MAX_ADDR) as u32, has_dir: u32::from(judge && dir.is_some()), judge: u32::from(judge), addr: [0; MAX_ADDR] };
        if let Some(d) = req.addr.get_mut(..addr.len().min(MAX_ADDR)) {
            d.copy_from_slice(addr.get(..addr.len().min(MAX_ADDR)).unwrap_or_default());
        }
        let conn = self.connection()?;
        let c = conn.as_raw_fd();
        let mut fds = vec![sock.as_raw_fd()];
        if let (true, Some(d)) = (judge, dir) {
            fds.push(d.as_raw_fd());
        }
        let data = data.get(..data.len().min(MAX_DATA)).unwrap_or_default();
        send_packet(c, &[as_bytes(&req), data], &fds).map_err(|_| gone("the broker does not take requests"))?;
        let mut buf = vec![0u8; REPLY_LEN + 4096];
        let mut refused = false;
        loop {
            let (n, _) = recv_packet(c, &mut buf).map_err(|_| gone("broker connection broken"))?.ok_or_else(|| gone("the broker closed the connection"))?;
            let r: Reply = from_bytes(&buf).filter(|r: &Reply| r.magic == MAGIC).ok_or_else(|| gone("malformed broker reply"))?;
            match r.kind {
                R_RESOLVED => {
                    let path = buf.get(REPLY_LEN..n.min(REPLY_LEN + r.path_len as usize)).unwrap_or_default().to_vec();
                    let allow = decide(&Resolved { path, dev: r.dev, ino: r.ino, nlink: r.nlink });
                    refused = !allow;
                    let v = Verdict { magic: MAGIC, allow: u32::from(allow) };
                    send_packet(c, &[as_bytes(&v)], &[]).map_err(|_| gone("broker connection broken"))?;
                }
                R_RESULT => {
                    self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                    return Ok(if refused { Err(()) } else { Ok(r.value) });
                }
                _ => return Err(gone("malformed broker reply")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn sun(path: &[u8], len: Option<usize>) -> Vec<u8> {
        let mut a = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(path);
        if let Some(l) = len {
            a.resize(l, 0);
        }
        a
    }

    #[test]
    fn unix_paths_are_read_as_the_kernel_reads_them() {
        assert_eq!(unix_path(&sun(b"/run/x.sock\0", None)), Some(&b"/run/x.sock"[..]));
        // Bytes after the first NUL do not count; a path filling sun_path needs no NUL.
        assert_eq!(unix_path(&sun(b"/a\0/b", None)), Some(&b"/a"[..]));
        assert_eq!(unix_path(&sun(&[b'x'; 108], None)), Some(&[b'x'; 108][..]));
        assert_eq!(unix_path(&sun(b"rel.sock", Some(110))), Some(&b"rel.sock"[..]));
        // Abstract, unnamed, too long, other families: not a path.
        assert_eq!(unix_path(&sun(b"\0abstract", None)), None);
        assert_eq!(unix_path(&sun(b"", None)), None);
        assert_eq!(unix_path(&sun(&[b'x'; 109], None)), None);
        let mut inet = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        inet.extend_from_slice(b"/not/a/path");
        assert_eq!(unix_path(&inet), None);
        assert_eq!(unix_path(&[1]), None);
    }

    #[test]
    fn the_wire_structures_have_no_hidden_padding() {
        assert_eq!(REQ_LEN, 4 * 6 + MAX_ADDR);
        assert_eq!(REPLY_LEN, 4 + 4 + 8 * 4 + 4 + 4);
        assert_eq!(VERDICT_LEN, 8);
    }
}
