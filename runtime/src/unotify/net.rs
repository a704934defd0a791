//! Network calls the filter sends to the supervisor: `connect`, `sendto` with a destination
//! address, and `socket`/`socketpair` of `AF_UNIX` with a type other than stream/seqpacket.
//!
//! Input: the notified call, the policy (`[network] unix` grants, evaluated by the reference
//! evaluator with the launch's parameter values) and the broker. Output: the call's result as
//! the broker obtained it, or `EACCES` and a record when a pathname unix socket is not
//! granted, or `EACCES` and a record for a unix datagram socket. Invariants: the supervisor
//! copies the address (and `sendto`'s data) once, duplicates the socket (the open file), and
//! has the broker perform the call on those copies, so nothing the agent changes afterwards
//! (the address, the descriptor number, a symlink, a rename) can make the call reach
//! something other than what was decided; a pathname socket is judged by the path the broker
//! opened with every symlink resolved (relative paths against the caller's working
//! directory); a socket file already removed is refused; the decision is the evaluator's
//! (`aegisc check POLICY unix PATH` answers the same). Every other address (abstract, IP,
//! netlink, unnamed) is performed as copied: Landlock and the network namespace decide it for
//! the broker exactly as for the agent.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use aegis_policy::eval::{self, Params, Query, Verdict};
use aegis_policy::ir::Checked;

use super::{Call, CallError, Handler, Outcome, Refusal, Response};
use crate::broker::{self, Client, Resolved};

/// The names this handler answers.
pub const SYSCALLS: &[&str] = &["connect", "sendto", "socket", "socketpair"];

pub struct NetMediation {
    policy: Arc<Checked>,
    params: Params,
    broker: Option<Arc<Client>>,
    /// The device of the sandbox's private /tmp (a tmpfs only the sandbox can write), where
    /// the policy's built-in unix grant applies; `Some(None)` when /tmp is not private (no
    /// mount namespace): the built-in grant then grants nothing. Learnt from the first caller
    /// (before the agent's exec an unprivileged supervisor may not look into the child).
    private_tmp: std::sync::Mutex<Option<Option<u64>>>,
}

impl NetMediation {
    /// `broker: None` when the broker could not be started: every performed call is then
    /// refused (fail closed), pathname unix sockets still judged and recorded.
    pub fn new(policy: Arc<Checked>, params: Params, broker: Option<Arc<Client>>) -> NetMediation {
        NetMediation { policy, params, broker, private_tmp: std::sync::Mutex::new(None) }
    }

    /// The private /tmp's device, as the calling task's root shows it (the agent can neither
    /// chroot nor mount: its /tmp is the sandbox's).
    fn private_tmp(&self, call: &Call<'_>) -> Option<u64> {
        let mut known = self.private_tmp.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = *known {
            return k;
        }
        let found = private_tmp_of(call.tid());
        if let Ok(k) = found {
            *known = Some(k);
        }
        found.ok().flatten()
    }

    /// The evaluator's answer for a resolved socket path, and the refusal to record.
    fn judge(&self, call: &Call<'_>, r: &Resolved) -> Result<(), Refusal> {
        let path = String::from_utf8_lossy(&r.path).into_owned();
        let refuse = |rule: Option<String>, reason: String| Refusal { subject: "unix", target: path.clone(), rule, reason, denial: None };
        if r.nlink == 0 {
            return Err(refuse(None, "the socket file was removed while the connect was checked".into()));
        }
        if !path.starts_with('/') {
            return Err(refuse(None, "the socket is not reachable by a path in the sandbox".into()));
        }
        match eval::evaluate(&self.policy, &self.params, &Query::Unix { path: path.clone() }) {
            // The built-in grant is about the private /tmp: a socket there is the agent's own
            // only if it is on that filesystem (a parameter bound under /tmp is not).
            Ok(d) if d.verdict == Verdict::Allow && d.rule.as_ref().is_some_and(|r| r.origin.is_none()) => match self.private_tmp(call) {
                Some(dev) if dev == r.dev => Ok(()),
                Some(_) => Err(refuse(None, "a built-in grant covers only sockets on the sandbox's private /tmp; this one is on another filesystem".into())),
                None => Err(refuse(None, "no [network] unix grant covers it, and /tmp is not private here (no mount namespace), so the built-in /tmp grant does not apply".into())),
            },
            Ok(d) if d.verdict == Verdict::Allow => Ok(()),
            Ok(d) => Err(refuse(d.rule.map(|r| r.text), d.reason)),
            Err(e) => Err(refuse(None, format!("the path cannot be judged: {e}"))),
        }
    }

    fn datagram(&self, call: &Call<'_>) -> Outcome {
        let ty = call.arg(1) as u32 & 0xf;
        Outcome::refuse(
            libc::EACCES,
            Refusal {
                subject: "unix",
                target: format!("{}(AF_UNIX, type {ty})", call.name),
                rule: None,
                reason: "unix datagram sockets are refused: one can send to any pathname socket, and the destination of sendmsg is not visible to the filter".into(),
                denial: None,
            },
        )
    }

    /// `connect(fd, addr, len)` and `sendto(fd, buf, len, flags, addr, addrlen)`.
    fn perform(&self, call: &Call<'_>) -> Result<Outcome, CallError> {
        let is_sendto = call.name == "sendto";
        let (addr_ptr, addr_len) = if is_sendto { (call.arg(4), call.arg(5)) } else { (call.arg(1), call.arg(2)) };
        // `socklen_t` is an int: the kernel refuses negative and over-long lengths first.
        let addr_len = addr_len as u32 as i32;
        if addr_len < 0 || addr_len as usize > broker::MAX_ADDR {
            return Err(CallError::Errno(libc::EINVAL));
        }
        let addr = if addr_len > 0 { call.read_bytes(addr_ptr, addr_len as usize)? } else { Vec::new() };
        let sock = call.dup_fd(call.arg(0))?;
        let (data, flags) = if is_sendto { (self.sendto_data(call, &sock)?, call.arg(3) as u32 as i32) } else { (Vec::new(), 0) };
        let path = broker::unix_path(&addr);
        let dir = match path {
            Some(p) if p.first() != Some(&b'/') => Some(call.open_cwd()?),
            _ => None,
        };
        let Some(client) = &self.broker else {
            return Ok(Outcome::refuse(
                libc::EACCES,
                Refusal { subject: call.name, target: "broker".into(), rule: None, reason: "the broker process is not running, so no network call can be performed".into(), denial: None },
            ));
        };
        let op = if is_sendto { broker::OP_SENDTO } else { broker::OP_CONNECT };
        let mut refusal = None;
        let mut decide = |r: &Resolved| match self.judge(call, r) {
            Ok(()) => true,
            Err(why) => {
                refusal = Some(why);
                false
            }
        };
        let result = client.perform(op, &sock, &addr, &data, flags, dir.as_ref(), &mut decide);
        Ok(match result {
            Ok(Ok(v)) if v >= 0 => Outcome::reply(Response::Value(v)),
            Ok(Ok(v)) => {
                let e = i32::try_from(-v).unwrap_or(libc::EIO);
                if e == libc::EPIPE && is_sendto && flags & libc::MSG_NOSIGNAL == 0 {
                    sigpipe(call);
                }
                Outcome::reply(Response::Errno(e))
            }
            Ok(Err(())) => match refusal {
                Some(r) => Outcome::refuse(libc::EACCES, r),
                None => Outcome::reply(Response::Errno(libc::EACCES)),
            },
            Err(broker::BrokerError::Unavailable(why)) => Outcome::refuse(
                libc::EACCES,
                Refusal { subject: call.name, target: "broker".into(), rule: None, reason: format!("the broker could not perform the call: {why}"), denial: None },
            ),
        })
    }

    /// `sendto`'s data, copied once (at most `broker::MAX_DATA` bytes: a longer stream send
    /// becomes a short write, a longer datagram `EMSGSIZE`).
    fn sendto_data(&self, call: &Call<'_>, sock: &OwnedFd) -> Result<Vec<u8>, CallError> {
        let len = call.arg(2) as usize;
        if len > broker::MAX_DATA && socket_type(sock) != Some(libc::SOCK_STREAM) {
            return Err(CallError::Errno(libc::EMSGSIZE));
        }
        call.read_bytes(call.arg(1), len.min(broker::MAX_DATA))
    }
}

/// The device of `/tmp` in the root of task `tid` if it is a private tmpfs (not the
/// supervisor's own /tmp): `Ok(None)` when it is not private, `Err` when it cannot be seen.
fn private_tmp_of(tid: u32) -> Result<Option<u64>, ()> {
    use std::os::unix::fs::MetadataExt as _;
    const TMPFS_MAGIC: libc::c_long = 0x0102_1994;
    let theirs = format!("/proc/{tid}/root/tmp");
    let c = std::ffi::CString::new(theirs.as_str()).map_err(|_| ())?;
    // SAFETY: an all-zero statfs is valid; statfs fills it from a NUL-terminated path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0 {
        return Err(());
    }
    let dev = std::fs::metadata(&theirs).map_err(|_| ())?.dev();
    let host = std::fs::metadata("/tmp").ok().map(|m| m.dev());
    Ok((fs.f_type as libc::c_long == TMPFS_MAGIC && host != Some(dev)).then_some(dev))
}

fn socket_type(sock: &OwnedFd) -> Option<i32> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into `v`.
    let r = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&mut v as *mut i32).cast(), &mut len) };
    (r == 0).then_some(v)
}

/// The kernel sends SIGPIPE to a thread whose stream send hits a closed peer (unless
/// MSG_NOSIGNAL); the broker sent for it, so the supervisor delivers it.
fn sigpipe(call: &Call<'_>) {
    let tid = call.tid() as libc::pid_t;
    let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse::<libc::pid_t>().ok())));
    if let Some(tgid) = tgid
        && call.pending()
    {
        // SAFETY: tgkill with integer arguments, to a task that is still waiting in the call.
        unsafe { libc::syscall(libc::SYS_tgkill, tgid, tid, libc::SIGPIPE) };
    }
}

impl Handler for NetMediation {
    fn handle(&self, call: &Call<'_>) -> Outcome {
        match call.name {
            "socket" | "socketpair" => self.datagram(call),
            "connect" | "sendto" => self.perform(call).unwrap_or_else(Outcome::from_error),
            _ => Outcome::reply(Response::Errno(libc::ENOSYS)),
        }
    }
}
