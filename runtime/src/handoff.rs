//! The child → supervisor descriptor channel ("handoff").
//!
//! Input: descriptors the child creates between `clone` and `execve` that the supervisor
//! needs afterwards, each with a [`Tag`] (what it is), an index (which one, when a launch has
//! several of a kind) and an argument (a kind-specific number, e.g. an errno when the child
//! could not create it). Output: the same descriptors in the supervisor, close-on-exec, as
//! [`Message`]s. Why it exists: a socket lives in the network namespace it was created in,
//! and only a process inside the agent's user namespace holds the capabilities to configure
//! that namespace (an unprivileged supervisor cannot even `setns` into it: `setns(CLONE_NEWNET)`
//! needs CAP_SYS_ADMIN in the caller's own user namespace too). So the child creates the
//! proxy's listeners, the NFLOG socket and similar while it still has its capabilities, and
//! hands them over; this works the same for root and non-root supervisors.
//!
//! Protocol. One `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)` is made before `clone`.
//! Every message is one packet of [`HEADER_LEN`] bytes (`magic, tag, index, arg`, u32 each, in
//! native byte order) with zero or one descriptor attached as `SCM_RIGHTS`. The child sends
//! with raw `sendmsg` from stack buffers (no allocation after `clone`) and closes its own copy
//! of each descriptor after sending; the supervisor receives with `MSG_CMSG_CLOEXEC` and
//! refuses anything malformed (wrong size or magic, more than one descriptor, truncated
//! control data). Both ends are close-on-exec: the child's end closes itself when the agent's
//! command is exec'd, so the agent never holds it.
//!
//! Ordering. The child closes the supervisor's end first thing. Network sockets are sent in
//! the child's network step (after the mount stage, before it waits for the `N` byte and so
//! before the caps stage, while it holds its namespace capabilities); descriptors created
//! later (a seccomp listener, after the filter is installed) are sent before the final
//! report. Every message is therefore queued before the child writes its "ok" report, and
//! the supervisor [`Receiver::drain`]s them without blocking once the report pipe reached EOF
//! (the agent exec'd). A reader that needs a descriptor earlier (to serve it before exec)
//! uses [`Receiver::recv`] with a deadline; it sees EOF if the child died.
//!
//! Tags are stable numbers, allocated in one list ([`Tag`]): a number given twice does not
//! compile; the ranges are reserved per owner so that helpers can add their own without
//! touching each other's. A message with a number no tag has is refused like a malformed one.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::exit::RunError;
use crate::seqpacket;

/// First word of every message.
pub const MAGIC: u32 = 0xAE61_4844;
/// Bytes of every message's payload.
pub const HEADER_LEN: usize = 16;

/// Declares [`Tag`] from one list: the enum's explicit discriminants are the wire numbers,
/// so two tags with one number do not compile (E0081), and [`Tag::ALL`] and [`Tag::name`]
/// are generated from the same list, so neither can miss a tag.
macro_rules! tags {
    ($( $(#[$doc:meta])* $tag:ident = $n:literal, $name:literal; )*) => {
        /// What a handed-over descriptor is, as a stable number on the wire. Ranges: 1–15
        /// network (this module's owner, `launch`), 16–31 seccomp user notification, broker
        /// and file helper (`unix`, `fsprotect`), 32–47 reserved for init and terminal
        /// (`super`). Add a tag here, nowhere else.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum Tag {
            $( $(#[$doc])* $tag = $n, )*
        }

        impl Tag {
            /// Every tag, in the order declared.
            pub const ALL: &'static [Tag] = &[$(Tag::$tag),*];

            pub fn name(self) -> &'static str {
                match self {
                    $( Tag::$tag => $name, )*
                }
            }
        }
    };
}

tags! {
    /// The egress proxy's listener on `127.0.0.1:3128` in the agent's network namespace.
    ProxyListener = 1, "proxy listener";
    /// A transparent-forward listener; `index` is its position in the launch's forward list.
    Forward = 2, "transparent-forward listener";
    /// The NFLOG socket bound to the table's log group. Without a descriptor: `arg` is the
    /// errno of the step (`index`, see `stage::netlog`) that failed.
    Nflog = 3, "NFLOG socket";
    /// A NETLINK_SOCK_DIAG socket (the proxy finds which process connected).
    SockDiag = 4, "sock_diag socket";
    /// A NETLINK_NETFILTER socket opened with the child's capabilities (the supervisor
    /// verifies the agent's table through it).
    Netfilter = 5, "netfilter netlink socket";
    /// A UDP socket bound to a forwarded address (host mode in the agent's own namespace);
    /// `index` is its position in the launch's forward list. Without a descriptor: `arg` is
    /// the errno (that target is not forwarded). [`Tag::Forward`] listeners of host mode
    /// follow the same rule.
    UdpForward = 6, "UDP forward socket";
    /// The seccomp user-notification listener.
    SeccompListener = 16, "seccomp listener";
    /// The broker's control socket.
    BrokerControl = 17, "broker control socket";
    /// A pidfd of the broker (the proxy never takes it for one of the agent's processes).
    BrokerProcess = 18, "broker pidfd";
    /// The file helper's control socket.
    FsHelper = 19, "file helper control socket";
}

impl Tag {
    /// The tag a message's number stands for; `None` for a number no tag has.
    pub fn from_wire(n: u32) -> Option<Tag> {
        Tag::ALL.iter().copied().find(|t| *t as u32 == n)
    }
}

/// Makes the channel (before `clone`): the supervisor's end and the child's end.
pub fn channel() -> Result<(Receiver, Sender), RunError> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two fds into our array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(RunError::os("socketpair for the descriptor handoff"));
    }
    // SAFETY: two fresh fds nothing else owns.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((Receiver { fd: a }, Sender { fd: b }))
}

/// Where a step puts the descriptors it created: the handoff channel in the child, or a
/// plain list when the supervisor creates them itself (a network namespace it made).
pub trait Sink {
    /// Takes `fd` (ownership: the sink closes or keeps it) or, with `None`, a failure
    /// (`arg` = errno). `Err` is an errno.
    fn put(&mut self, tag: Tag, index: u32, arg: u32, fd: Option<RawFd>) -> Result<(), i32>;
}

/// The child's end. Raw: sending allocates nothing and takes no lock.
#[derive(Debug)]
pub struct Sender {
    fd: OwnedFd,
}

impl Sender {
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Sends one message (child side; async-signal-safe: `seqpacket::send_packet` builds
    /// it on the stack). `Err` is the errno.
    pub fn send(&self, tag: Tag, index: u32, arg: u32, fd: Option<RawFd>) -> Result<(), i32> {
        let mut payload = [0u8; HEADER_LEN];
        for (i, w) in [MAGIC, tag as u32, index, arg].into_iter().enumerate() {
            if let Some(d) = payload.get_mut(i * 4..i * 4 + 4) {
                d.copy_from_slice(&w.to_ne_bytes());
            }
        }
        seqpacket::send_packet(self.fd.as_raw_fd(), &[&payload], fd.as_slice())
    }
}

impl Sink for &Sender {
    /// Sends, then closes the child's copy: the supervisor now holds the only one.
    fn put(&mut self, tag: Tag, index: u32, arg: u32, fd: Option<RawFd>) -> Result<(), i32> {
        let r = self.send(tag, index, arg, fd);
        if let Some(fd) = fd {
            // SAFETY: the step gave us ownership of `fd`; it was sent (or the launch fails).
            unsafe { libc::close(fd) };
        }
        r
    }
}

/// A plain list (supervisor side, when it creates the descriptors itself).
#[derive(Debug, Default)]
pub struct Collected(pub Vec<Message>);

impl Sink for Collected {
    fn put(&mut self, tag: Tag, index: u32, arg: u32, fd: Option<RawFd>) -> Result<(), i32> {
        // SAFETY: the step gave us ownership of `fd`.
        let fd = fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        self.0.push(Message { tag, index, arg, fd });
        Ok(())
    }
}

/// One received message.
#[derive(Debug)]
pub struct Message {
    pub tag: Tag,
    pub index: u32,
    pub arg: u32,
    /// The descriptor (close-on-exec in the supervisor), if one came with it.
    pub fd: Option<OwnedFd>,
}

/// The supervisor's end.
#[derive(Debug)]
pub struct Receiver {
    fd: OwnedFd,
}

fn bad(why: impl std::fmt::Display) -> RunError {
    RunError::internal("descriptor handoff", why)
}

impl Receiver {
    /// The descriptor (the child closes it first thing).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One message: `Ok(None)` at EOF (every copy of the child's end is closed: the agent
    /// exec'd or the child died) or, with `block == false`, when none is queued.
    fn recv_one(&self, block: bool) -> Result<Option<Message>, RunError> {
        let mut payload = [0u8; HEADER_LEN + 1];
        let flags = if block { 0 } else { libc::MSG_DONTWAIT };
        let r = match seqpacket::recv_raw(self.fd.as_raw_fd(), &mut payload, flags) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(libc::EAGAIN) if !block => return Ok(None),
            Err(e) => return Err(bad(std::io::Error::from_raw_os_error(e))),
        };
        let (n, mut fds) = (r.len, r.fds);
        if r.flags & libc::MSG_CTRUNC != 0 {
            return Err(bad("control data truncated (descriptors lost)"));
        }
        if n != HEADER_LEN || r.flags & libc::MSG_TRUNC != 0 {
            return Err(bad(format!("message of {n} bytes, expected {HEADER_LEN}")));
        }
        let word = |i: usize| payload.get(i * 4..i * 4 + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes).unwrap_or(0);
        if word(0) != MAGIC {
            return Err(bad("bad magic"));
        }
        if fds.len() > 1 {
            return Err(bad(format!("{} descriptors in one message", fds.len())));
        }
        let Some(tag) = Tag::from_wire(word(1)) else {
            return Err(bad(format!("unknown tag {}", word(1))));
        };
        Ok(Some(Message {
            tag,
            index: word(2),
            arg: word(3),
            fd: fds.pop(),
        }))
    }

    /// Every message queued now (non-blocking), in order. Used after the child's report
    /// pipe reached EOF: everything the child sent is queued by then.
    pub fn drain(&self) -> Result<Vec<Message>, RunError> {
        let mut out = Vec::new();
        while let Some(m) = self.recv_one(false)? {
            out.push(m);
        }
        Ok(out)
    }

    /// Waits (at most until `deadline`) for the next message; `Ok(None)` at EOF.
    pub fn recv(&self, deadline: Instant) -> Result<Option<Message>, RunError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left == Duration::ZERO {
                return Err(bad("timed out waiting for the child"));
            }
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one pollfd we own.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, i32::MAX as u128) as i32) };
            if r < 0 && crate::errno::last() != libc::EINTR {
                return Err(RunError::os("poll on the descriptor handoff"));
            }
            if r > 0 {
                return self.recv_one(true);
            }
        }
    }
}

/// Removes and returns the message with `tag` and `index` from `msgs`.
pub fn take(msgs: &mut Vec<Message>, tag: Tag, index: u32) -> Option<Message> {
    let at = msgs.iter().position(|m| m.tag == tag && m.index == index)?;
    Some(msgs.remove(at))
}

/// Checks that `fd` is a socket of `domain` and `ty` (a child that sent something else is
/// a bug, never trusted).
pub fn check_socket(m: &Message, domain: i32, ty: i32) -> Result<&OwnedFd, RunError> {
    let Some(fd) = m.fd.as_ref() else {
        return Err(bad(format!("{} #{} came without a descriptor", m.tag.name(), m.index)));
    };
    let get = |opt: i32| -> Option<i32> {
        let mut v: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt writes one int into `v`.
        let r = unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, (&mut v as *mut i32).cast(), &mut len) };
        (r == 0).then_some(v)
    };
    if get(libc::SO_DOMAIN) != Some(domain) || get(libc::SO_TYPE) != Some(ty) {
        return Err(bad(format!("{} #{} is not the expected kind of socket", m.tag.name(), m.index)));
    }
    Ok(fd)
}

/// The inode of the network namespace `fd` (a socket) lives in (`SIOCGSKNS`), to compare
/// with the agent's `/proc/<pid>/ns/net`. Needs CAP_NET_ADMIN over that namespace, which
/// the supervisor has (root, or the owner of the agent's user namespace).
pub fn socket_netns_ino(fd: &OwnedFd) -> Result<u64, RunError> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd (close-on-exec) or -1.
    let ns = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS as _) };
    if ns < 0 {
        return Err(RunError::os("SIOCGSKNS on a handed-over socket"));
    }
    // SAFETY: a fresh fd nothing else owns.
    let ns = unsafe { OwnedFd::from_raw_fd(ns) };
    let f = std::fs::File::from(ns);
    use std::os::unix::fs::MetadataExt as _;
    f.metadata().map(|m| m.ino()).map_err(|e| RunError::internal("fstat of a socket's namespace", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn tagged_descriptors_cross_in_order_and_eof_ends_the_stream() {
        let (rx, tx) = channel().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let dup = l.try_clone().unwrap();
        let mut sink = &tx;
        sink.put(Tag::Forward, 3, 0, Some(std::os::fd::IntoRawFd::into_raw_fd(dup))).unwrap();
        sink.put(Tag::Nflog, 2, libc::EPERM as u32, None).unwrap();
        drop(tx);
        let got = rx.drain().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].tag, got[0].index), (Tag::Forward, 3));
        let fd = check_socket(&got[0], libc::AF_INET, libc::SOCK_STREAM).unwrap();
        // The received descriptor is the same listener, close-on-exec in the receiver.
        let again = std::net::TcpListener::from(fd.try_clone().unwrap());
        assert_eq!(again.local_addr().unwrap().port(), port);
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags & libc::FD_CLOEXEC != 0);
        assert!(got[1].fd.is_none());
        assert_eq!(got[1].arg, libc::EPERM as u32);
        assert!(check_socket(&got[1], libc::AF_INET, libc::SOCK_STREAM).is_err());
        // EOF after the sender is gone.
        assert!(rx.recv(Instant::now() + Duration::from_secs(1)).unwrap().is_none());
    }

    #[test]
    fn malformed_messages_are_refused_and_their_descriptors_closed() {
        let (rx, tx) = channel().unwrap();
        // Wrong size.
        // SAFETY: send on our socket from a stack buffer.
        unsafe { libc::send(tx.raw(), [1u8; 7].as_ptr().cast(), 7, 0) };
        assert!(rx.drain().is_err());
        // Wrong magic.
        let mut m = [0u8; HEADER_LEN];
        m[0] = 1;
        // SAFETY: as above.
        unsafe { libc::send(tx.raw(), m.as_ptr().cast(), m.len(), 0) };
        assert!(rx.drain().is_err());
        // The wrong kind of socket for its tag.
        let (_r2, t2) = channel().unwrap();
        tx.send(Tag::ProxyListener, 0, 0, Some(t2.raw())).unwrap();
        let got = rx.drain().unwrap();
        assert!(check_socket(&got[0], libc::AF_INET, libc::SOCK_STREAM).is_err());
    }

    #[test]
    fn every_tag_crosses_as_itself_and_an_unknown_number_is_refused() {
        let (rx, tx) = channel().unwrap();
        for (i, t) in Tag::ALL.iter().enumerate() {
            tx.send(*t, i as u32, 0, None).unwrap();
        }
        let got = rx.drain().unwrap();
        assert_eq!(got.iter().map(|m| m.tag).collect::<Vec<_>>(), Tag::ALL);
        // Names are what error messages say: one per tag, none the fallback of old.
        let names: std::collections::BTreeSet<_> = Tag::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), Tag::ALL.len());
        // A number no tag has (a reserved one of `super`'s range) is refused.
        let mut m = [0u8; HEADER_LEN];
        for (i, w) in [MAGIC, 32, 0, 0].into_iter().enumerate() {
            m[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        // SAFETY: send on our socket from a stack buffer.
        unsafe { libc::send(tx.raw(), m.as_ptr().cast(), m.len(), 0) };
        let e = rx.drain().unwrap_err().to_string();
        assert!(e.contains("unknown tag 32"), "{e}");
    }

    #[test]
    fn a_socket_names_the_namespace_it_lives_in() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = OwnedFd::from(l);
        use std::os::unix::fs::MetadataExt as _;
        let mine = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        match socket_netns_ino(&fd) {
            Ok(ino) => assert_eq!(ino, mine),
            Err(e) => eprintln!("SKIP a_socket_names_the_namespace_it_lives_in: {e} (not root?)"),
        }
    }
}
