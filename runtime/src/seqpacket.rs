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

/// Sends `parts` as one packet with `fds` (at most two) attached. `Err` is the errno.
pub(crate) fn send_packet(sock: RawFd, parts: &[&[u8]], fds: &[RawFd]) -> Result<(), i32> {
    let mut iov: Vec<libc::iovec> = parts.iter().map(|p| libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() }).collect();
    let mut control = Control([0; 64]);
    // SAFETY: an all-zero msghdr is valid; the pointers are filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    if !fds.is_empty() {
        let n = (fds.len().min(2) * std::mem::size_of::<RawFd>()) as u32;
        // SAFETY: arithmetic on a constant size.
        let (space, len) = unsafe { (libc::CMSG_SPACE(n), libc::CMSG_LEN(n)) };
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer (64 bytes, aligned) holds CMSG_SPACE(8) = 24 bytes; one
        // header and at most two ints are written inside it.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            if c.is_null() {
                return Err(libc::EINVAL);
            }
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = len as usize;
            for (i, fd) in fds.iter().take(2).enumerate() {
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

/// Receives one packet into `buf`: its length and the descriptors that came with it
/// (close-on-exec). `Ok(None)` at EOF.
pub(crate) fn recv_packet(sock: RawFd, buf: &mut [u8]) -> Result<Option<(usize, Vec<OwnedFd>)>, i32> {
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
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
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
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(libc::EMSGSIZE);
    }
    Ok(Some((n, fds)))
}
