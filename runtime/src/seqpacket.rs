//! Packets with descriptors over a `SOCK_SEQPACKET` socket: the wire of the sandbox's helper
//! processes (the connect broker, [`crate::broker`], and the file helper,
//! [`crate::fshelper`]), shared so that both speak it the same way.
//!
//! Input: a connected `SOCK_SEQPACKET` socket, the parts of one packet (a fixed header
//! struct, then variable bytes) and at most two descriptors. Output: the packet on the other
//! side, with its descriptors (close-on-exec). Invariants: one packet is one `sendmsg`
//! (a short send is `EMSGSIZE`, never a second packet); a truncated packet or control
//! message is `EMSGSIZE`, never half a request; `EINTR` is retried; errors are errnos.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A fixed-size protocol header that may be sent as its bytes.
///
/// # Safety
/// Only for `repr(C)` structs of integers and byte arrays with explicit padding fields,
/// built from initialised values: every byte is initialised and every bit pattern is valid.
pub(crate) unsafe trait Plain: Copy {}

/// The bytes of a header.
pub(crate) fn as_bytes<T: Plain>(v: &T) -> &[u8] {
    // SAFETY: `T: Plain`: every byte of the value is initialised (see the trait).
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A header read from the start of `b`; `None` if `b` is too short.
pub(crate) fn from_bytes<T: Plain>(b: &[u8]) -> Option<T> {
    if b.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `T: Plain`: every bit pattern is valid; the slice holds at least
    // size_of::<T>() bytes and read_unaligned copes with alignment.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// Control buffer for up to two descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// Most parts one packet is gathered from (a header and up to two variable fields today).
pub const MAX_PARTS: usize = 4;
/// Most descriptors one packet carries.
pub const MAX_FDS: usize = 2;

/// Sends `parts` (at most [`MAX_PARTS`]) as one packet with `fds` (at most [`MAX_FDS`])
/// attached. `Err` is the errno: `EINVAL` for too many parts or descriptors, `EMSGSIZE` for a
/// short send. Allocation-free and lock-free (the iovecs and the control data live on the
/// stack), so the child may use it between `clone` and `execve` ([`crate::handoff`]).
pub(crate) fn send_packet(sock: RawFd, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), i32> {
    if parts.len() > MAX_PARTS || fds.len() > MAX_FDS {
        return Err(libc::EINVAL);
    }
    let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_PARTS];
    for (v, p) in iov.iter_mut().zip(parts) {
        *v = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
    }
    let mut control = Control([0; 64]);
    // SAFETY: an all-zero msghdr is valid; the pointers are filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len();
    if !fds.is_empty() {
        let n = std::mem::size_of_val(fds) as u32;
        // SAFETY: arithmetic on a constant size.
        let (space, len) = unsafe { (libc::CMSG_SPACE(n), libc::CMSG_LEN(n)) };
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer (64 bytes, aligned) holds CMSG_SPACE(8) = 24 bytes; one
        // header and at most two ints (checked above) are written inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() {
                return Err(libc::EINVAL);
            }
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = len as usize;
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>().add(i), *fd);
            }
        }
    }
    let want: usize = parts.iter().map(|p| p.len()).sum();
    loop {
        // SAFETY: sendmsg with buffers that live for the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return if n as usize == want { Ok(()) } else { Err(libc::EMSGSIZE) };
        }
        let e = crate::errno::last_or_eio();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// One received packet, before it is judged: its length, its descriptors (owned, so none
/// leaks whatever the caller refuses) and `recvmsg`'s flags (`MSG_TRUNC`, `MSG_CTRUNC`).
pub(crate) struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    pub flags: libc::c_int,
}

/// Receives one packet into `buf` with `recvmsg` flags `flags` (`MSG_CMSG_CLOEXEC` is always
/// added). `Ok(None)` at EOF; `EINTR` is retried, any other failure (`EAGAIN` of a
/// non-blocking call too) is `Err(errno)`.
pub(crate) fn recv_raw(sock: RawFd, buf: &mut [u8], flags: libc::c_int) -> Result<Option<Received>, i32> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut control = Control([0; 64]);
    // SAFETY: an all-zero msghdr is valid; the pointers are filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    let n = loop {
        // SAFETY: recvmsg into live buffers described by `msg`.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = crate::errno::last_or_eio();
        if e != libc::EINTR {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote, within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = (*c).cmsg_len.saturating_sub(data.offset_from(c.cast::<u8>()) as usize);
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.cast::<RawFd>().add(i))));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(Received { len: n, fds, flags: msg.msg_flags }))
}

/// Receives one packet into `buf`: its length and the descriptors that came with it
/// (close-on-exec). `Ok(None)` at EOF.
pub(crate) fn recv_packet(sock: RawFd, buf: &mut [u8]) -> Result<Option<(usize, Vec<OwnedFd>)>, i32> {
    let Some(r) = recv_raw(sock, buf, 0)? else { return Ok(None) };
    if r.flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(libc::EMSGSIZE);
    }
    Ok(Some((r.len, r.fds)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: socketpair writes two fds into our array.
        assert_eq!(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) }, 0);
        // SAFETY: two fresh fds nothing else owns.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn parts_gather_into_one_packet_with_its_descriptors() {
        let (a, b) = pair();
        let (x, y) = pair();
        send_packet(a.as_raw_fd(), &[b"head", b"", b"path1", b"p2"], &[x.as_raw_fd(), y.as_raw_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let (n, fds) = recv_packet(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(&buf[..n], b"headpath1p2");
        assert_eq!(fds.len(), 2);
        // More than the fixed arrays hold is refused, never truncated.
        assert_eq!(send_packet(a.as_raw_fd(), &[b"1", b"2", b"3", b"4", b"5"], &[]), Err(libc::EINVAL));
        assert_eq!(send_packet(a.as_raw_fd(), &[b"h"], &[x.as_raw_fd(); 3]), Err(libc::EINVAL));
        // A packet larger than the buffer is an error, not half a request.
        send_packet(a.as_raw_fd(), &[&[7u8; 100]], &[]).unwrap();
        assert_eq!(recv_packet(b.as_raw_fd(), &mut buf).unwrap_err(), libc::EMSGSIZE);
        drop(a);
        assert!(recv_packet(b.as_raw_fd(), &mut buf).unwrap().is_none());
    }
}
