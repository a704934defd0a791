//! Calls that create, remove or rename directory entries, sent by the filter to the
//! supervisor so that names protected by the policy cannot appear where Landlock alone cannot
//! refuse them (`docs/mediation.md`, `docs/policy.md` "How protected and denied paths are
//! enforced").
//!
//! Input: the notified call (`open`/`openat`/`openat2`/`creat` with `O_CREAT`, `mkdir(at)`,
//! `mknod(at)`, `symlink(at)`, `link(at)`, `rename(at,at2)`, `unlink(at)`, `rmdir`) and the
//! file helper ([`crate::fshelper`]). Output: CONTINUE where the helper says the caller's own
//! rights decide (outside mediated directories), the helper's result where it performed the
//! call (a new descriptor installed with ADDFD), `EACCES` and a record for a protected name.
//! Invariants: the supervisor copies each path once and duplicates the caller's base
//! directory (its `*at` descriptor or working directory: the open file, so a later `dup2` or
//! `chdir` changes nothing); the helper acts on those copies only, one name in one directory
//! it holds open. CONTINUE is always sound here: the agent's own Landlock domain refuses
//! every entry it may not make, whatever it changes after the check, so the helper only ever
//! adds what the policy allows. Without a helper (nothing mediated at this launch, or the
//! helper is gone) every call is CONTINUE: the agent's ruleset then refuses creating entries
//! in the mediated directories (the stricter reading), and a record says so once.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Call, CallError, Handler, Outcome, Refusal, Response};
use crate::fshelper::{Answer, Client, Op, Request};

/// The names this handler answers (x86_64 and aarch64).
pub const SYSCALLS: &[&str] = &[
    "open", "openat", "openat2", "creat", "mkdir", "mkdirat", "mknod", "mknodat", "symlink", "symlinkat", "link", "linkat", "rename",
    "renameat", "renameat2", "unlink", "unlinkat", "rmdir",
];

const AT_FDCWD: u64 = libc::AT_FDCWD as u32 as u64;

pub struct FsMediation {
    helper: Option<Client>,
    /// Set once the helper was found gone (recorded once).
    lost: AtomicBool,
}

impl FsMediation {
    /// `helper: None` when nothing is mediated at this launch.
    pub fn new(helper: Option<OwnedFd>) -> FsMediation {
        FsMediation { helper: helper.map(Client::new), lost: AtomicBool::new(false) }
    }
}

/// What a call asks, decoded from its registers: the request and the `*at` bases of its
/// paths (`AT_FDCWD` for the plain calls).
struct Decoded {
    req: Request,
    base1: u64,
    base2: u64,
}

fn request(op: Op) -> Request {
    Request { op, flags: 0, mode: 0, umask: 0, dev: 0, resolve: 0, path1: Vec::new(), path2: Vec::new() }
}

/// The caller's umask (`/proc/<tid>/status`), `022` when it cannot be read.
fn umask_of(call: &Call<'_>) -> u32 {
    std::fs::read_to_string(format!("/proc/{}/status", call.tid()))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .unwrap_or(0o022)
}

/// True if `fd` is a socket (never handed to the file helper, see [`FsMediation`]'s handler).
fn is_socket(fd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstat writes into the zeroed struct we own; the descriptor is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0;
    ok && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// `Ok(None)`: nothing to mediate (an `open` without `O_CREAT`, an `openat2` whose `how` the
/// kernel will judge itself).
fn decode(call: &Call<'_>) -> Result<Option<Decoded>, CallError> {
    let a = |i| call.arg(i);
    let path = |i| call.read_path(a(i));
    let create = |flags: u64| flags & libc::O_CREAT as u64 != 0;
    let d = |op: Op, base1: u64, p1: Vec<u8>, base2: u64, p2: Vec<u8>| Decoded { req: Request { path1: p1, path2: p2, ..request(op) }, base1, base2 };
    let decoded = match call.name {
        "open" | "openat" | "creat" => {
            let (base, p, flags, mode) = match call.name {
                "open" => (AT_FDCWD, 0, a(1), a(2)),
                "openat" => (a(0), 1, a(2), a(3)),
                _ => (AT_FDCWD, 0, (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64, a(1)),
            };
            if !create(flags) {
                return Ok(None);
            }
            let mut x = d(Op::Open, base, path(p)?, base, Vec::new());
            x.req.flags = flags as u32;
            x.req.mode = mode as u32;
            x
        }
        "openat2" => {
            // struct open_how { u64 flags, mode, resolve }: a size other than the first
            // version is the kernel's to judge (E2BIG for unknown fields, EINVAL if short).
            if a(3) != 24 {
                return Ok(None);
            }
            let how = call.read_bytes(a(2), 24)?;
            let word = |i: usize| how.get(i * 8..i * 8 + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_ne_bytes);
            if !create(word(0)) {
                return Ok(None);
            }
            let mut x = d(Op::Open, a(0), path(1)?, a(0), Vec::new());
            x.req.flags = word(0) as u32;
            x.req.mode = word(1) as u32;
            x.req.resolve = word(2);
            x
        }
        "mkdir" | "mkdirat" => {
            let at = call.name == "mkdirat";
            let mut x = d(Op::Mkdir, if at { a(0) } else { AT_FDCWD }, path(usize::from(at))?, AT_FDCWD, Vec::new());
            x.req.mode = a(usize::from(at) + 1) as u32;
            x
        }
        "mknod" | "mknodat" => {
            let at = call.name == "mknodat";
            let i = usize::from(at);
            let mut x = d(Op::Mknod, if at { a(0) } else { AT_FDCWD }, path(i)?, AT_FDCWD, Vec::new());
            x.req.mode = a(i + 1) as u32;
            x.req.dev = a(i + 2);
            x
        }
        "symlink" => d(Op::Symlink, AT_FDCWD, path(0)?, AT_FDCWD, path(1)?),
        "symlinkat" => d(Op::Symlink, a(1), path(0)?, a(1), path(2)?),
        "link" => d(Op::Link, AT_FDCWD, path(0)?, AT_FDCWD, path(1)?),
        "linkat" => {
            let mut x = d(Op::Link, a(0), path(1)?, a(2), path(3)?);
            x.req.flags = a(4) as u32;
            x
        }
        "rename" => d(Op::Rename, AT_FDCWD, path(0)?, AT_FDCWD, path(1)?),
        "renameat" | "renameat2" => {
            let mut x = d(Op::Rename, a(0), path(1)?, a(2), path(3)?);
            if call.name == "renameat2" {
                x.req.flags = a(4) as u32;
            }
            x
        }
        "unlink" => d(Op::Unlink, AT_FDCWD, path(0)?, AT_FDCWD, Vec::new()),
        "rmdir" => {
            let mut x = d(Op::Unlink, AT_FDCWD, path(0)?, AT_FDCWD, Vec::new());
            x.req.flags = libc::AT_REMOVEDIR as u32;
            x
        }
        "unlinkat" => {
            let mut x = d(Op::Unlink, a(0), path(1)?, AT_FDCWD, Vec::new());
            x.req.flags = a(2) as u32;
            x
        }
        _ => return Ok(None),
    };
    Ok(Some(decoded))
}

impl Handler for FsMediation {
    fn handle(&self, call: &Call<'_>) -> Outcome {
        let Some(helper) = &self.helper else {
            return Outcome::reply(Response::Continue);
        };
        let mut d = match decode(call) {
            Ok(Some(d)) => d,
            Ok(None) => return Outcome::reply(Response::Continue),
            Err(e) => return Outcome::from_error(e),
        };
        if matches!(d.req.op, Op::Open | Op::Mkdir | Op::Mknod) {
            d.req.umask = umask_of(call);
        }
        // The bases: the caller's own (its `*at` descriptor, or its working directory). An
        // absolute path needs none: the helper has the caller's root. A relative path in an
        // `*at` call with AT_FDCWD, or a plain call, is relative to the working directory.
        let (path_of_base1, path_of_base2) = match d.req.op {
            Op::Symlink => (&d.req.path2, &d.req.path2),
            _ => (&d.req.path1, &d.req.path2),
        };
        let needs = |p: &[u8], base: u64| base != AT_FDCWD || !p.starts_with(b"/");
        let open = |base: u64| call.open_dirfd(base).map(Some);
        let base1 = match if needs(path_of_base1, d.base1) { open(d.base1) } else { Ok(None) } {
            Ok(f) => f,
            Err(e) => return Outcome::from_error(e),
        };
        let two = matches!(d.req.op, Op::Link | Op::Rename);
        let base2 = match if two && needs(path_of_base2, d.base2) { open(d.base2) } else { Ok(None) } {
            Ok(f) => f,
            Err(e) => return Outcome::from_error(e),
        };
        // A socket never reaches the helper: the proxy tells a connection's program by the
        // processes that hold its socket, and the helper runs in the agent's leaf. A socket
        // is no directory, so the kernel answers such a call itself: ENOTDIR for a relative
        // path; an absolute one ignores the descriptor and the agent's ruleset decides (in a
        // mediated directory that refuses the entry: the stricter reading).
        if [&base1, &base2].into_iter().flatten().any(is_socket) {
            return Outcome::reply(Response::Continue);
        }
        match helper.ask(&d.req, base1.as_ref(), base2.as_ref()) {
            Ok(Answer::Continue) => Outcome::reply(Response::Continue),
            Ok(Answer::Value(v)) => Outcome::reply(Response::Value(v)),
            Ok(Answer::Errno(e)) => Outcome::reply(Response::Errno(e)),
            Ok(Answer::Fd { fd, cloexec }) => Outcome::reply(Response::AddFd { fd, cloexec }),
            Ok(Answer::Refused { target, why }) => Outcome::refuse(
                libc::EACCES,
                Refusal {
                    subject: "file",
                    target,
                    rule: Some(why),
                    reason: format!("{}: a protected path may not be created, removed or renamed", call.name),
                    denial: None,
                },
            ),
            Err(gone) => {
                // CONTINUE stays sound (the agent's ruleset decides); entries in mediated
                // directories can no longer be made. Said once.
                let first = !self.lost.swap(true, Ordering::SeqCst);
                let refusal = first.then(|| Refusal {
                    subject: "file",
                    target: "the file helper".into(),
                    rule: None,
                    reason: format!("{}: entries can no longer be created, removed or renamed in directories that lead to protected paths", gone.0),
                    denial: None,
                });
                Outcome { response: Some(Response::Continue), refusal }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_socket;
    use std::os::fd::OwnedFd;

    #[test]
    fn only_sockets_are_kept_from_the_helper() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(is_socket(&OwnedFd::from(a)));
        assert!(!is_socket(&OwnedFd::from(std::fs::File::open("/").unwrap())));
        assert!(!is_socket(&OwnedFd::from(std::fs::File::open("/proc/self/status").unwrap())));
    }
}
