//! Tracing: path-taking calls the filter sends to the supervisor so that filesystem denials
//! are explained (`--explain`) and, in learn mode, every access is observed.
//!
//! Input: a notified call the bundle's program allows (open, exec, create, remove, rename,
//! link, stat, ...: [`SYSCALLS`]), the policy and launch parameters, and an optional
//! [`Observer`]. Output: always CONTINUE — the kernel (Landlock, the mount plan) decides the
//! call exactly as without tracing — and, for each path the call names that the reference
//! evaluator refuses, a `denial` record (`source = "explanation"`) saying what the agent will
//! experience: `EACCES` from Landlock when the path exists in the sandbox, `EROFS` for a write
//! to a read-only mount, `ENOENT` when the mount plan hides a path that exists on the host.
//! Nothing is recorded for a path that exists nowhere (the agent gets ENOENT whatever the
//! policy says).
//!
//! Invariants and limits, said plainly: the records are explanations, not enforcement. The
//! supervisor reads the path from the agent's memory and looks at the agent's filesystem view
//! (`/proc/<tid>/root`, symlinks resolved inside it with `RESOLVE_IN_ROOT`) before the kernel
//! runs the call; another agent thread can change the path or the files in between, so a
//! hostile agent can make a record wrong — never a call succeed that the kernel would refuse.
//! A path is judged allowed when the evaluator allows the name the agent used or the file it
//! resolves to (a grant on `/usr/bin/python3` covers `/usr/bin/python3.11` it points to, as
//! the kernel's rules do). `..` is resolved lexically in the record's path.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use aegis_audit::Access;
use aegis_policy::eval::{self, Decision, FsQuery, Params, Query, Verdict};
use aegis_policy::ir::Checked;
use aegis_targets::seccomp::split::Traced;
use aegis_targets::seccomp::Arch;

use super::record::Denial;
use super::{Call, CallError, Handler, Outcome, Refusal, Response};

/// What a traced path is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Read,
    Write,
    Exec,
    /// A new entry (file, directory, node, link, the target of a rename).
    Create,
    /// An entry removed (or the source of a rename).
    Remove,
    /// Looked at (stat, access, readlink, chdir): needs the path to be visible.
    Stat,
}

impl Op {
    pub fn word(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Exec => "exec",
            Op::Create => "create",
            Op::Remove => "remove",
            Op::Stat => "stat",
        }
    }

    /// The evaluator question that decides it.
    fn query(self) -> FsQuery {
        match self {
            Op::Read | Op::Stat => FsQuery::Read,
            Op::Write | Op::Create | Op::Remove => FsQuery::Write,
            Op::Exec => FsQuery::Exec,
        }
    }

    fn modifies(self) -> bool {
        matches!(self, Op::Write | Op::Create | Op::Remove)
    }
}

/// Where learn mode's observations go: every traced access with its outcome.
pub trait Observer: Send + Sync {
    /// `path` (absolute, in the agent's view) was used for `op`; `allowed` is the
    /// evaluator's answer; `resolved` is the file it names with symlinks resolved, when that
    /// differs and could be found.
    fn file(&self, op: Op, path: &str, resolved: Option<&str>, allowed: bool);
}

/// The traced calls (by name; each architecture has its own subset) and the flag that
/// exempts a call naming no path (`AT_EMPTY_PATH`: an `fstat` in disguise).
pub const SYSCALLS: &[(&str, Option<(u8, u32)>)] = &[
    ("open", None),
    ("openat", None),
    ("openat2", None),
    ("creat", None),
    ("execve", None),
    ("execveat", Some((4, AT_EMPTY_PATH))),
    ("mkdir", None),
    ("mkdirat", None),
    ("mknod", None),
    ("mknodat", None),
    ("rmdir", None),
    ("unlink", None),
    ("unlinkat", None),
    ("rename", None),
    ("renameat", None),
    ("renameat2", None),
    ("link", None),
    ("linkat", Some((4, AT_EMPTY_PATH))),
    ("symlink", None),
    ("symlinkat", None),
    ("truncate", None),
    ("chdir", None),
    ("access", None),
    ("faccessat", None),
    ("faccessat2", Some((3, AT_EMPTY_PATH))),
    ("stat", None),
    ("lstat", None),
    ("newfstatat", Some((3, AT_EMPTY_PATH))),
    ("statx", Some((2, AT_EMPTY_PATH))),
    ("readlink", None),
    ("readlinkat", None),
];

const AT_EMPTY_PATH: u32 = 0x1000;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;

/// The traced calls of `arch`, for `aegis_targets::seccomp::split::notify_also`.
pub fn traced(arch: Arch) -> Vec<Traced> {
    SYSCALLS.iter().filter_map(|(n, unless)| arch.nr(n).map(|nr| Traced { nr, unless: *unless })).collect()
}

/// One path a call names: the base directory (`AT_FDCWD` or a descriptor), the pointer,
/// what it is used for, and whether a final symlink is followed.
struct Named {
    dirfd: i32,
    ptr: u64,
    op: Op,
    follow: bool,
}

fn open_op(flags: u64) -> Op {
    const O_ACCMODE: u64 = 3;
    const O_CREAT: u64 = 0o100;
    const O_TRUNC: u64 = 0o1000;
    const O_PATH: u64 = 0o10000000;
    if flags & O_PATH != 0 {
        Op::Stat
    } else if flags & O_CREAT != 0 {
        Op::Create
    } else if flags & O_ACCMODE != 0 || flags & O_TRUNC != 0 {
        Op::Write
    } else {
        Op::Read
    }
}

/// The paths `call` names, and what for.
fn named(call: &Call<'_>) -> Result<Vec<Named>, CallError> {
    let a = |i: usize| call.arg(i);
    let fd = |i: usize| a(i) as u32 as i32;
    let cwd = libc::AT_FDCWD;
    let n = |dirfd: i32, ptr: u64, op: Op| Named { dirfd, ptr, op, follow: true };
    let nofollow = |dirfd: i32, ptr: u64, op: Op| Named { dirfd, ptr, op, follow: false };
    Ok(match call.name {
        "open" => vec![Named { follow: a(1) & 0o400000 == 0, ..n(cwd, a(0), open_op(a(1))) }],
        "openat" => vec![Named { follow: a(2) & 0o400000 == 0, ..n(fd(0), a(1), open_op(a(2))) }],
        "openat2" => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let how = call.read_bytes(a(2), 8)?;
            let flags = u64::from_ne_bytes(how.as_slice().try_into().unwrap_or([0; 8]));
            vec![Named { follow: flags & 0o400000 == 0, ..n(fd(0), a(1), open_op(flags)) }]
        }
        "creat" => vec![n(cwd, a(0), Op::Create)],
        "execve" => vec![n(cwd, a(0), Op::Exec)],
        "execveat" => vec![n(fd(0), a(1), Op::Exec)],
        "mkdir" | "mknod" => vec![nofollow(cwd, a(0), Op::Create)],
        "mkdirat" | "mknodat" => vec![nofollow(fd(0), a(1), Op::Create)],
        "rmdir" | "unlink" => vec![nofollow(cwd, a(0), Op::Remove)],
        "unlinkat" => vec![nofollow(fd(0), a(1), Op::Remove)],
        "rename" => vec![nofollow(cwd, a(0), Op::Remove), nofollow(cwd, a(1), Op::Create)],
        "renameat" | "renameat2" => vec![nofollow(fd(0), a(1), Op::Remove), nofollow(fd(2), a(3), Op::Create)],
        "link" => vec![nofollow(cwd, a(0), Op::Read), nofollow(cwd, a(1), Op::Create)],
        "linkat" => vec![nofollow(fd(0), a(1), Op::Read), nofollow(fd(2), a(3), Op::Create)],
        "symlink" => vec![nofollow(cwd, a(1), Op::Create)],
        "symlinkat" => vec![nofollow(fd(1), a(2), Op::Create)],
        "truncate" => vec![n(cwd, a(0), Op::Write)],
        "chdir" | "access" | "stat" => vec![n(cwd, a(0), Op::Stat)],
        "lstat" | "readlink" => vec![nofollow(cwd, a(0), Op::Stat)],
        "faccessat" | "faccessat2" | "readlinkat" => vec![Named { follow: call.name != "readlinkat", ..n(fd(0), a(1), Op::Stat) }],
        "newfstatat" => vec![Named { follow: a(3) & AT_SYMLINK_NOFOLLOW == 0, ..n(fd(0), a(1), Op::Stat) }],
        "statx" => vec![Named { follow: a(2) & AT_SYMLINK_NOFOLLOW == 0, ..n(fd(0), a(1), Op::Stat) }],
        _ => Vec::new(),
    })
    .map(|mut v| {
        // `unlinkat(AT_REMOVEDIR)` is rmdir: still a removal.
        if call.name == "unlinkat" && a(2) & AT_REMOVEDIR != 0 {
            v.iter_mut().for_each(|x| x.op = Op::Remove);
        }
        v
    })
}

/// `path` with `.` and empty components dropped and `..` applied, lexically.
pub fn normalise(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn readlink(path: &str) -> Option<String> {
    std::fs::read_link(path).ok().map(|p| p.to_string_lossy().into_owned())
}

/// The agent's view of the filesystem: its root directory, opened once per call.
struct AgentRoot {
    fd: OwnedFd,
}

impl AgentRoot {
    fn open(tid: u32) -> Option<AgentRoot> {
        let p = CString::new(format!("/proc/{tid}/root")).ok()?;
        // SAFETY: open(2) of a NUL-terminated path with constant flags.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        // SAFETY: a new descriptor nothing else owns.
        (fd >= 0).then(|| AgentRoot { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// `path` (absolute, the agent's view) opened `O_PATH` inside the agent's root, symlinks
    /// resolved there (`None`: it does not exist there).
    fn open_at(&self, path: &str, follow: bool) -> Option<OwnedFd> {
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
        const RESOLVE_IN_ROOT: u64 = 0x10;
        let rel = CString::new(path.trim_start_matches('/').as_bytes()).ok()?;
        let rel = if rel.as_bytes().is_empty() { CString::new(".").ok()? } else { rel };
        let mut flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
        if !follow {
            flags |= libc::O_NOFOLLOW as u64;
        }
        let how = OpenHow { flags, mode: 0, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        // SAFETY: openat2 reads `how` (its size given) and the NUL-terminated path; returns a
        // new descriptor or -1.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, self.fd.as_raw_fd(), rel.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>())
        };
        // SAFETY: a new descriptor nothing else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The path of the file `path` names in the agent's root, symlinks resolved (the kernel's
    /// name for it, in the agent's mount namespace).
    fn resolve(&self, path: &str, follow: bool) -> Option<String> {
        let fd = self.open_at(path, follow)?;
        readlink(&format!("/proc/self/fd/{}", fd.as_raw_fd()))
    }

    /// Whether `path` (which exists in the agent's root) is on a read-only mount there.
    fn read_only(&self, path: &str) -> bool {
        let Some(fd) = self.open_at(path, true) else { return false };
        // SAFETY: an all-zero statvfs is a valid out-parameter.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: fstatvfs on our O_PATH descriptor into our struct.
        let r = unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) };
        r == 0 && st.f_flag & libc::ST_RDONLY != 0
    }
}

/// Whether `path` exists on the host (the supervisor's own view), without following a final
/// symlink.
fn exists_on_host(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn parent(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => path.get(..i).unwrap_or("/").to_string(),
    }
}

pub struct Tracer {
    policy: Arc<Checked>,
    params: Params,
    /// Record would-be denials (`--explain`, and learn mode).
    explain: bool,
    observer: Option<Arc<dyn Observer>>,
}

impl Tracer {
    pub fn new(policy: Arc<Checked>, params: Params, explain: bool, observer: Option<Arc<dyn Observer>>) -> Tracer {
        Tracer { policy, params, explain, observer }
    }

    fn decide(&self, op: Op, path: &str) -> Option<Decision> {
        eval::evaluate(&self.policy, &self.params, &Query::Fs { access: op.query(), path: path.to_string() }).ok()
    }

    /// The absolute path (agent's view) that `n` names, `None` when it cannot be read.
    fn absolute(&self, call: &Call<'_>, n: &Named) -> Result<Option<String>, CallError> {
        if n.ptr == 0 {
            return Ok(None);
        }
        let raw = call.read_path(n.ptr)?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        if raw.starts_with('/') {
            return Ok(Some(normalise(&raw)));
        }
        if raw.is_empty() {
            return Ok(None);
        }
        let base = if n.dirfd == libc::AT_FDCWD { format!("/proc/{}/cwd", call.tid()) } else { format!("/proc/{}/fd/{}", call.tid(), n.dirfd) };
        let Some(base) = readlink(&base) else { return Ok(None) };
        // The notification must still be the caller's for the base to be its.
        if !call.pending() {
            return Err(CallError::Gone);
        }
        if !base.starts_with('/') {
            return Ok(None); // a descriptor that is not a directory path (pipe, socket, ...)
        }
        Ok(Some(normalise(&format!("{base}/{raw}"))))
    }

    /// What the agent will get, and which layer gives it, for a path the policy refuses.
    fn experience(&self, op: Op, path: &str, here: Option<&str>, root: Option<&AgentRoot>) -> Option<(&'static str, &'static str)> {
        let parent_here = root.is_some_and(|r| r.resolve(&parent(path), true).is_some());
        match (here.is_some(), op) {
            // Landlock has no right for looking at a path: what is visible can be looked at.
            (true, Op::Stat) => None,
            // Visible but refused. A change on a read-only mount fails with EROFS before
            // Landlock is asked; everything else is Landlock's EACCES.
            (true, _) => Some(if op.modifies() && root.is_some_and(|r| r.read_only(path)) { ("mounts", "EROFS") } else { ("landlock", "EACCES") }),
            (false, Op::Create) if parent_here => {
                Some(if root.is_some_and(|r| r.read_only(&parent(path))) { ("mounts", "EROFS") } else { ("landlock", "EACCES") })
            }
            // Not in the sandbox: hidden if the host has it (or, for a new entry, its
            // directory); a path that exists nowhere gets ENOENT whatever the policy says.
            (false, Op::Create) => exists_on_host(&parent(path)).then_some(("mounts", "ENOENT")),
            (false, _) => exists_on_host(path).then_some(("mounts", "ENOENT")),
        }
    }
}

impl Handler for Tracer {
    fn handle(&self, call: &Call<'_>) -> Outcome {
        let cont = |refusal: Option<Refusal>| Outcome { response: Some(Response::Continue), refusal };
        let names = match named(call) {
            Ok(n) => n,
            Err(CallError::Gone) => return Outcome::gone(),
            Err(CallError::Errno(_)) => return cont(None),
        };
        let mut refusal = None;
        for n in &names {
            let path = match self.absolute(call, n) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(CallError::Gone) => return Outcome::gone(),
                Err(CallError::Errno(_)) => continue,
            };
            let named_ok = self.decide(n.op, &path);
            let allowed_by_name = named_ok.as_ref().is_some_and(|d| d.verdict == Verdict::Allow);
            // The file the name resolves to in the agent's view: needed to judge a denial,
            // and by the observer.
            let need_view = !allowed_by_name || self.observer.is_some();
            let root = if need_view { AgentRoot::open(call.tid()) } else { None };
            // A final magic link (`/dev/stdin` → `/proc/self/fd/0`) is not followed here: the
            // entry itself then says whether the path exists in the sandbox.
            let here = root.as_ref().and_then(|r| r.resolve(&path, n.follow).or_else(|| if n.follow { r.resolve(&path, false) } else { None }));
            let resolved = here.as_deref().filter(|r| *r != path);
            let allowed = allowed_by_name || resolved.is_some_and(|r| self.decide(n.op, r).is_some_and(|d| d.verdict == Verdict::Allow));
            if let Some(o) = &self.observer {
                o.file(n.op, &path, resolved, allowed);
            }
            if allowed || !self.explain || refusal.is_some() {
                continue;
            }
            let Some((layer, result)) = self.experience(n.op, &path, here.as_deref(), root.as_ref()) else { continue };
            let d = named_ok.unwrap_or(Decision { verdict: Verdict::Deny, reason: "the path cannot be judged".into(), rule: None, notes: vec![] });
            let what = match layer {
                "mounts" if result == "ENOENT" => "hidden by the mount plan (not in the sandbox)",
                "mounts" => "on a read-only mount",
                _ => "refused by Landlock",
            };
            refusal = Some(Refusal {
                subject: layer,
                target: format!("{} {path}", n.op.word()),
                rule: d.rule.map(|r| format!("{} '{}'", r.kind, r.text)),
                reason: format!("{what}: {}", d.reason),
                denial: Some(Box::new(Denial {
                    access: Access::File { op: n.op.word().into(), path: path.clone() },
                    result: result.into(),
                    source: "explanation",
                })),
            });
        }
        if !call.pending() {
            return Outcome::gone();
        }
        cont(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        assert_eq!(normalise("/a/./b//c/../d"), "/a/b/d");
        assert_eq!(normalise("/../.."), "/");
        assert_eq!(normalise("/home/u/"), "/home/u");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
    }

    #[test]
    fn open_flags_say_what_the_path_is_for() {
        assert_eq!(open_op(0), Op::Read);
        assert_eq!(open_op(1), Op::Write);
        assert_eq!(open_op(2 | 0o1000), Op::Write);
        assert_eq!(open_op(0o101), Op::Create);
        assert_eq!(open_op(0o10000000), Op::Stat);
    }
}
