//! The kernel's seccomp user-notification interface, wrapped.
//!
//! Input: the listener descriptor a filter installed with `SECCOMP_FILTER_FLAG_NEW_LISTENER`
//! returned (in the child; handed to the supervisor). Output: [`Listener`], whose methods
//! receive one notification ([`Notif`]), ask whether it is still pending
//! (`SECCOMP_IOCTL_NOTIF_ID_VALID`), and answer it exactly once ([`Response`]: a value, an
//! errno, CONTINUE, or a descriptor installed into the caller with `SECCOMP_IOCTL_NOTIF_ADDFD`
//! and `SECCOMP_ADDFD_FLAG_SEND`, which completes the call atomically). Invariants: the structure
//! sizes this module uses are checked against the running kernel's
//! (`SECCOMP_GET_NOTIF_SIZES`) when a listener is adopted, so a kernel with a different layout
//! is refused instead of misread; every ioctl retries on EINTR and reports any other failure
//! as its errno (ENOENT: the notification is gone, its task died or was interrupted).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use aegis_targets::seccomp::SeccompData;

/// `seccomp(2)` operation returning the kernel's structure sizes.
const SECCOMP_GET_NOTIF_SIZES: libc::c_uint = 3;

/// One notification: which task asked (`pid`, a thread id in the supervisor's pid
/// namespace) and what it called.
#[derive(Debug, Clone, Copy)]
pub struct Notif {
    /// The kernel's cookie for this notification: every answer and validity check names it.
    pub id: u64,
    /// Thread id of the caller (the supervisor's view).
    pub pid: u32,
    /// Number, architecture, instruction pointer and arguments, as the filter saw them.
    pub data: SeccompData,
}

/// How a notification is answered.
#[derive(Debug)]
pub enum Response {
    /// Let the kernel run the call as made. Only sound where nothing the agent can change
    /// after the check (its memory, its descriptor table) decides what the call does.
    Continue,
    /// The call returns this value (success).
    Value(i64),
    /// The call fails with this errno.
    Errno(i32),
    /// Install `fd` into the caller's descriptor table; the call returns its number.
    AddFd { fd: OwnedFd, cloexec: bool },
}

/// The supervisor's end of one filter's notifications.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
}


/// Retries `f` (a raw syscall returning -1 on error) while it fails with EINTR.
fn retry(mut f: impl FnMut() -> libc::c_long) -> Result<libc::c_long, i32> {
    loop {
        let r = f();
        if r >= 0 {
            return Ok(r);
        }
        let e = crate::errno::last_or_eio();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

impl Listener {
    /// Adopts a listener descriptor, after checking that the kernel's structures have the
    /// sizes this build was written for.
    pub fn new(fd: OwnedFd) -> Result<Listener, String> {
        let mut sizes = libc::seccomp_notif_sizes { seccomp_notif: 0, seccomp_notif_resp: 0, seccomp_data: 0 };
        // SAFETY: SECCOMP_GET_NOTIF_SIZES writes one seccomp_notif_sizes into `sizes`.
        let r = unsafe { libc::syscall(libc::SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &mut sizes as *mut libc::seccomp_notif_sizes) };
        if r != 0 {
            return Err(format!("SECCOMP_GET_NOTIF_SIZES: {}", std::io::Error::last_os_error()));
        }
        let ours = (std::mem::size_of::<libc::seccomp_notif>(), std::mem::size_of::<libc::seccomp_notif_resp>(), 64usize);
        let kernel = (usize::from(sizes.seccomp_notif), usize::from(sizes.seccomp_notif_resp), usize::from(sizes.seccomp_data));
        if ours != kernel {
            return Err(format!("the kernel's seccomp notification structures have sizes {kernel:?}, this build expects {ours:?}"));
        }
        Ok(Listener { fd })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Receives the next notification (blocks; poll the descriptor first). `Err(ENOENT)`:
    /// the task that caused it went away before we took it.
    pub fn recv(&self) -> Result<Notif, i32> {
        let mut n = zeroed_notif();
        retry(|| {
            n = zeroed_notif();
            // SAFETY: NOTIF_RECV writes one seccomp_notif into `n`.
            unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut libc::seccomp_notif) as libc::c_long }
        })?;
        let d = n.data;
        let args = d.args;
        Ok(Notif {
            id: n.id,
            pid: n.pid,
            data: SeccompData { nr: d.nr as u32, arch: d.arch, instruction_pointer: d.instruction_pointer, args },
        })
    }

    /// Whether notification `id` is still pending: its task is alive and still waiting in
    /// the call. Checked after every read of the task's memory or descriptors, so that what
    /// was read belongs to the task that made the call (a pid can be reused once it is gone).
    pub fn id_valid(&self, id: u64) -> bool {
        let mut id = id;
        // SAFETY: NOTIF_ID_VALID reads one u64.
        retry(|| unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &mut id as *mut u64) as libc::c_long }).is_ok()
    }

    /// Answers notification `id` (exactly once). `Err(ENOENT)`: it is gone (task killed or
    /// interrupted); nothing to do then.
    pub fn respond(&self, id: u64, response: Response) -> Result<(), i32> {
        match response {
            Response::AddFd { fd, cloexec } => {
                let add = libc::seccomp_notif_addfd {
                    id,
                    flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
                    srcfd: fd.as_raw_fd() as u32,
                    newfd: 0,
                    newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
                };
                // SAFETY: NOTIF_ADDFD reads one seccomp_notif_addfd; with SEND it also
                // answers the notification with the new descriptor's number.
                retry(|| unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &add as *const libc::seccomp_notif_addfd) as libc::c_long })
                    .map(|_| ())
            }
            other => {
                let (val, error, flags) = match other {
                    Response::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
                    Response::Value(v) => (v, 0, 0),
                    Response::Errno(e) => (0, -e.abs().max(1), 0),
                    Response::AddFd { .. } => (0, -libc::EIO, 0),
                };
                let mut resp = libc::seccomp_notif_resp { id, val, error, flags };
                // SAFETY: NOTIF_SEND reads one seccomp_notif_resp.
                retry(|| unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp as *mut libc::seccomp_notif_resp) as libc::c_long })
                    .map(|_| ())
            }
        }
    }
}

fn zeroed_notif() -> libc::seccomp_notif {
    // SAFETY: seccomp_notif is plain integers; all-zero is a valid value (and what the
    // kernel requires of the buffer it fills).
    unsafe { std::mem::zeroed() }
}
