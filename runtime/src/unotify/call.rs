//! One notified call, and safe access to the task that made it.
//!
//! Input: a [`Notif`] and the [`Listener`] it came from. Output: a [`Call`], whose methods
//! read the caller's memory (`process_vm_readv`), duplicate one of its descriptors
//! (`pidfd_getfd`, the open file itself: a later `dup2` over the number changes nothing for
//! us) and open its working directory (`/proc/<tid>/cwd`). Invariants: every such access is
//! followed by `SECCOMP_IOCTL_NOTIF_ID_VALID`: if the notification is no longer pending, the
//! task may be gone and its id reused, so the result is discarded and [`CallError::Gone`]
//! returned; what a handler gets is therefore what the calling task had at some moment while
//! it waited. A handler must still treat it as a snapshot: another thread of the agent can
//! change memory or descriptors at any time, which is why handlers decide on, and act on,
//! their own copies (see `docs/mediation.md`). Failures the kernel itself would report for
//! the call (an unreadable address: `EFAULT`, a closed descriptor: `EBADF`) are
//! [`CallError::Errno`] with that errno.

use std::os::fd::{FromRawFd, OwnedFd};

use super::sys::{Listener, Notif};

/// `PIDFD_THREAD` (Linux 6.9): a pidfd for one thread, not its thread group.
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;
/// The longest path the kernel accepts, NUL included.
pub const PATH_MAX: usize = 4096;

/// Why a handler could not look at the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The notification is no longer pending (the task died, or a signal ended its wait):
    /// there is nothing to answer.
    Gone,
    /// Answer the call with this errno.
    Errno(i32),
}


/// A notified call being handled.
pub struct Call<'a> {
    pub notif: Notif,
    /// The syscall's name on the caller's architecture.
    pub name: &'static str,
    listener: &'a Listener,
}

impl<'a> Call<'a> {
    pub fn new(notif: Notif, name: &'static str, listener: &'a Listener) -> Call<'a> {
        Call { notif, name, listener }
    }

    /// Argument `i` (0..=5) as the filter saw it.
    pub fn arg(&self, i: usize) -> u64 {
        self.notif.data.args.get(i).copied().unwrap_or(0)
    }

    /// Thread id of the caller (the supervisor's pid namespace).
    pub fn tid(&self) -> u32 {
        self.notif.pid
    }

    /// Whether the call is still waiting for an answer.
    pub fn pending(&self) -> bool {
        self.listener.id_valid(self.notif.id)
    }

    fn still_pending(&self) -> Result<(), CallError> {
        if self.pending() { Ok(()) } else { Err(CallError::Gone) }
    }

    /// Exactly `len` bytes at `addr` in the caller's memory (`EFAULT` if any is unreadable,
    /// as the kernel's own copy would fail).
    pub fn read_bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, CallError> {
        let mut buf = vec![0u8; len];
        if len == 0 {
            self.still_pending()?;
            return Ok(buf);
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
        let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
        // SAFETY: process_vm_readv writes at most `len` bytes into `buf`; the remote address
        // is only dereferenced by the kernel, in the other process.
        let n = unsafe { libc::process_vm_readv(self.notif.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        let e = crate::errno::last_or_eio();
        self.still_pending()?;
        match n {
            n if n == len as isize => Ok(buf),
            n if n >= 0 => Err(CallError::Errno(libc::EFAULT)),
            _ if e == libc::ESRCH => Err(CallError::Gone),
            _ => Err(CallError::Errno(libc::EFAULT)),
        }
    }

    /// A NUL-terminated string at `addr` (a path), without its NUL: read page by page up to
    /// [`PATH_MAX`] bytes, as the kernel's `strncpy_from_user` would (`ENAMETOOLONG` without a
    /// NUL in that range, `EFAULT` if the memory ends first).
    pub fn read_path(&self, addr: u64) -> Result<Vec<u8>, CallError> {
        const PAGE: u64 = 4096;
        let mut buf = vec![0u8; PATH_MAX];
        let mut remote = Vec::with_capacity(2);
        let (mut at, mut left) = (addr, PATH_MAX as u64);
        while left > 0 {
            let piece = (PAGE - at % PAGE).min(left);
            remote.push(libc::iovec { iov_base: at as *mut libc::c_void, iov_len: piece as usize });
            at = at.wrapping_add(piece);
            left -= piece;
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: PATH_MAX };
        // SAFETY: as in read_bytes; the remote pieces add up to PATH_MAX bytes, the size of
        // `buf`. Partial reads stop at a piece (page) the task cannot read.
        let n = unsafe { libc::process_vm_readv(self.notif.pid as libc::pid_t, &local, 1, remote.as_ptr(), remote.len() as libc::c_ulong, 0) };
        let e = crate::errno::last_or_eio();
        self.still_pending()?;
        if n < 0 {
            return Err(if e == libc::ESRCH { CallError::Gone } else { CallError::Errno(libc::EFAULT) });
        }
        buf.truncate(n as usize);
        match buf.iter().position(|&b| b == 0) {
            Some(end) => {
                buf.truncate(end);
                Ok(buf)
            }
            None if n as usize == PATH_MAX => Err(CallError::Errno(libc::ENAMETOOLONG)),
            None => Err(CallError::Errno(libc::EFAULT)),
        }
    }

    /// A pidfd for the calling thread (for its own descriptor table, which a task created
    /// with `clone(CLONE_VM)` but without `CLONE_FILES` does not share with its process),
    /// or, on kernels before 6.9, for its thread group.
    fn pidfd(&self) -> Result<OwnedFd, CallError> {
        let tid = self.notif.pid as libc::pid_t;
        // SAFETY: pidfd_open with integer arguments; returns a new fd or -1.
        let mut fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
        if fd < 0 && crate::errno::last_or_eio() == libc::EINVAL {
            let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
                .ok()
                .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse::<libc::pid_t>().ok())))
                .ok_or(CallError::Gone)?;
            // SAFETY: as above.
            fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tgid, 0) };
        }
        if fd < 0 {
            return Err(CallError::Gone);
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pidfd names whatever task had this id when it was opened: only if the call is
        // still pending is that the caller.
        self.still_pending()?;
        Ok(fd)
    }

    /// A duplicate of the caller's descriptor `fd` (close-on-exec here): the open file, so
    /// whatever the agent does to the number afterwards, this is what it named. `EBADF` if
    /// it names nothing, as the call itself would fail.
    pub fn dup_fd(&self, fd: u64) -> Result<OwnedFd, CallError> {
        // The kernel reads an `int`: the upper half of the register is ignored.
        let fd = fd as u32 as i32;
        if fd < 0 {
            return Err(CallError::Errno(libc::EBADF));
        }
        let pidfd = self.pidfd()?;
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_getfd with integer arguments; returns a new fd (O_CLOEXEC) or -1.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        let e = crate::errno::last_or_eio();
        if got < 0 {
            self.still_pending()?;
            return Err(match e {
                libc::EBADF => CallError::Errno(libc::EBADF),
                libc::ESRCH => CallError::Gone,
                // EPERM (no ptrace access): the supervisor cannot look; refuse the call.
                e => CallError::Errno(if e == libc::EPERM { libc::EACCES } else { e }),
            });
        }
        // SAFETY: a new descriptor nothing else owns.
        let dup = unsafe { OwnedFd::from_raw_fd(got as i32) };
        self.still_pending()?;
        Ok(dup)
    }

    /// The caller's working directory, as an `O_PATH` descriptor (in the agent's mount
    /// namespace; usable as an `*at` base by a process there).
    pub fn open_cwd(&self) -> Result<OwnedFd, CallError> {
        let path = format!("/proc/{}/cwd\0", self.notif.pid);
        // SAFETY: open(2) of a NUL-terminated path with constant flags.
        let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            self.still_pending()?;
            return Err(CallError::Errno(libc::EACCES));
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        self.still_pending()?;
        Ok(fd)
    }

    /// The base directory of an `*at` call: the caller's `dirfd`, or its working directory
    /// for `AT_FDCWD`.
    pub fn open_dirfd(&self, dirfd: u64) -> Result<OwnedFd, CallError> {
        if dirfd as u32 as i32 == libc::AT_FDCWD {
            self.open_cwd()
        } else {
            self.dup_fd(dirfd)
        }
    }
}
