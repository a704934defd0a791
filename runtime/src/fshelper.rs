//! The file helper: a small process inside the sandbox that creates, removes and renames
//! directory entries for the agent where its own Landlock domain may not, except the names
//! the policy protects.
//!
//! Why it exists. Landlock cannot refuse one name in a writable directory. A protected or
//! denied path that does not exist at launch (`.envrc`, `.vscode`, a denied `.git`) has
//! nothing to mount on, so the directory that would hold it is split in Landlock: the agent
//! keeps reading and writing the files below it but may not create, remove or rename entries
//! in it (nor in directories it creates there later, which inherit the same rights). The
//! seccomp filter sends every entry-creating and -removing call to the supervisor, which hands
//! it to this helper: the helper resolves the parent directory as the agent's kernel would
//! (same root, same mounts, relative to the caller's working directory or `*at` descriptor),
//! and when the parent is such a directory it performs the call itself on (parent descriptor,
//! one name) unless the name is protected there (refused, `EACCES`, recorded). Everywhere
//! else it answers CONTINUE: the kernel then runs the agent's call under the agent's own
//! Landlock domain, which refuses whatever the agent may not do whatever it swaps in between
//! (another thread rewriting the path, a rename), so CONTINUE cannot widen anything.
//!
//! The helper is forked by the child after no_new_privs and before the agent's Landlock
//! ruleset: it has the agent's uid, gid and groups, no capabilities, its namespaces, and its
//! own Landlock domain: the agent's, except that directories on the way to absent names are
//! not split (so it can make entries there). It is not under the seccomp filter, not dumpable
//! (the agent, same uid, cannot ptrace it or open its `/proc` files), in its own session,
//! holds only its control socket and dies with the sandbox (`PR_SET_PDEATHSIG`, the pid
//! namespace, EOF on the control socket).
//!
//! Input (one request at a time, `SOCK_SEQPACKET`): an operation, its flags, mode, the
//! caller's umask, one or two paths as the agent passed them, and their base directories
//! (SCM_RIGHTS: the caller's `*at` descriptor or working directory). Output: CONTINUE, a
//! value, an errno, a new descriptor (SCM_RIGHTS, for `open(O_CREAT)`: the supervisor
//! installs it in the caller atomically with the answer), or a refusal with the rule.
//!
//! Invariants: the helper only ever makes, removes or renames one name in one directory it
//! holds open, never follows a symlink in that name (`O_EXCL|O_NOFOLLOW`, `*at` calls without
//! `AT_SYMLINK_FOLLOW`), never opens an existing file for the agent (an existing name is
//! CONTINUE: the agent opens it under its own rights), never links or moves a protected
//! inode, and refuses the protected names of each mediated directory in every role (created,
//! removed, renamed from or to, linked to).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Mutex;

use crate::errno::last_or_eio as errno;
use crate::seqpacket::{as_bytes, from_bytes, recv_packet, send_packet, Plain};

use aegis_targets::landlock::HelperSetup;
use aegis_targets::landlock::mediate::{Inode, MediatedDir, Mediation};

const MAGIC: u32 = 0xAE61_F5E1;
/// Longest path a request carries (PATH_MAX, NUL excluded).
pub const MAX_PATH: usize = 4095;
/// Directories walked up from a parent before giving up (answering CONTINUE).
const MAX_DEPTH: usize = 4096;

/// The operations (what the agent called, in the form the helper performs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// `open(O_CREAT)`, `openat`, `openat2`, `creat`: `flags`, `mode`, `resolve`.
    Open = 1,
    Mkdir = 2,
    /// `mknod`: `mode` (type and permissions), `dev`.
    Mknod = 3,
    /// `symlink`: path1 is the link's target text (no base), path2 the link.
    Symlink = 4,
    /// `link`: path1 (base1) to path2 (base2), `flags` (`AT_SYMLINK_FOLLOW`, `AT_EMPTY_PATH`).
    Link = 5,
    /// `rename`: path1 (base1) to path2 (base2), `flags` (`RENAME_*`).
    Rename = 6,
    /// `unlink`, `rmdir`: `flags` (`AT_REMOVEDIR`).
    Unlink = 7,
}

impl Op {
    fn from_u32(v: u32) -> Option<Op> {
        [Op::Open, Op::Mkdir, Op::Mknod, Op::Symlink, Op::Link, Op::Rename, Op::Unlink].into_iter().find(|o| *o as u32 == v)
    }
}

/// One mediated call, as the supervisor read it from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub flags: u32,
    pub mode: u32,
    pub umask: u32,
    pub dev: u64,
    /// `openat2`'s `resolve` flags (0 otherwise).
    pub resolve: u64,
    pub path1: Vec<u8>,
    pub path2: Vec<u8>,
}

/// The helper's answer.
#[derive(Debug)]
pub enum Answer {
    /// Let the kernel run the call under the agent's own rights.
    Continue,
    /// The call's result.
    Value(i64),
    /// The call failed with this errno.
    Errno(i32),
    /// A new descriptor for the caller (`cloexec`: `O_CLOEXEC` was asked).
    Fd { fd: OwnedFd, cloexec: bool },
    /// Refused: a protected name or inode. `target` is where, `why` the rule.
    Refused { target: String, why: String },
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Head {
    magic: u32,
    op: u32,
    flags: u32,
    mode: u32,
    umask: u32,
    len1: u32,
    dev: u64,
    resolve: u64,
    len2: u32,
    /// Which bases come with the request (SCM_RIGHTS, in this order): bit 0 path1's, bit 1
    /// path2's. Without one a path resolves from the helper's root and working directory
    /// (the sandbox's root: right for absolute paths).
    bases: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ReplyHead {
    magic: u32,
    kind: u32,
    value: i64,
    len1: u32,
    len2: u32,
}

const HEAD_LEN: usize = std::mem::size_of::<Head>();
const REPLY_LEN: usize = std::mem::size_of::<ReplyHead>();
const K_CONTINUE: u32 = 1;
const K_VALUE: u32 = 2;
const K_ERRNO: u32 = 3;
const K_FD: u32 = 4;
const K_REFUSED: u32 = 5;

// SAFETY: repr(C), integers and byte arrays laid out without padding; any bit pattern is valid.
unsafe impl Plain for Head {}
// SAFETY: repr(C), integers and byte arrays laid out without padding; any bit pattern is valid.
unsafe impl Plain for ReplyHead {}

// ── the helper process ─────────────────────────────────────────────────────────────────

/// Forks the helper (child side, after no_new_privs, before the agent's Landlock ruleset).
/// Returns the supervisor's end of the control socket; the helper never returns from here.
pub fn fork_in_child(setup: HelperSetup) -> Result<OwnedFd, String> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two fds into our array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } != 0 {
        return Err(format!("socketpair: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh descriptors nothing else owns.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork from the single-threaded launch child; the helper only runs `serve`.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(ours);
            serve(theirs, parent, setup)
        }
        _ => {
            drop(theirs);
            Ok(ours)
        }
    }
}

fn serve(control: OwnedFd, parent: libc::pid_t, setup: HelperSetup) -> ! {
    let ctl = control.as_raw_fd();
    // Its ruleset first (it is a descriptor, closed below with everything else).
    let Ok(table) = setup.enforce() else {
        // Without its ruleset it must not act at all.
        // SAFETY: _exit ends the helper.
        unsafe { libc::_exit(1) }
    };
    crate::helper_process::isolate(ctl, parent);
    let mut buf = vec![0u8; HEAD_LEN + 2 * (MAX_PATH + 1)];
    while let Ok(Some((n, fds))) = recv_packet(ctl, &mut buf) {
        let answer = match decode(buf.get(..n).unwrap_or_default()) {
            Some((req, which)) => {
                let mut fds = fds.into_iter();
                let b1 = if which & 1 != 0 { fds.next() } else { None };
                let b2 = if which & 2 != 0 { fds.next() } else { None };
                handle(&table, &req, b1.as_ref(), b2.as_ref())
            }
            None => Answer::Errno(libc::EINVAL),
        };
        if reply(ctl, answer).is_err() {
            break;
        }
    }
    // SAFETY: _exit ends the helper without running anything inherited from the supervisor.
    unsafe { libc::_exit(0) }
}

fn decode(b: &[u8]) -> Option<(Request, u32)> {
    let h: Head = from_bytes(b)?;
    if h.magic != MAGIC {
        return None;
    }
    let (l1, l2) = (h.len1 as usize, h.len2 as usize);
    if l1 > MAX_PATH || l2 > MAX_PATH {
        return None;
    }
    let rest = b.get(HEAD_LEN..)?;
    let req = Request {
        op: Op::from_u32(h.op)?,
        flags: h.flags,
        mode: h.mode,
        umask: h.umask,
        dev: h.dev,
        resolve: h.resolve,
        path1: rest.get(..l1)?.to_vec(),
        path2: rest.get(l1..l1 + l2)?.to_vec(),
    };
    Some((req, h.bases))
}

fn reply(ctl: RawFd, a: Answer) -> Result<(), i32> {
    let mut head = ReplyHead { magic: MAGIC, kind: K_CONTINUE, value: 0, len1: 0, len2: 0 };
    match a {
        Answer::Continue => send_packet(ctl, &[as_bytes(&head)], &[]),
        Answer::Value(v) => {
            head.kind = K_VALUE;
            head.value = v;
            send_packet(ctl, &[as_bytes(&head)], &[])
        }
        Answer::Errno(e) => {
            head.kind = K_ERRNO;
            head.value = i64::from(e);
            send_packet(ctl, &[as_bytes(&head)], &[])
        }
        Answer::Fd { fd, cloexec } => {
            head.kind = K_FD;
            head.value = i64::from(cloexec);
            send_packet(ctl, &[as_bytes(&head)], &[fd.as_raw_fd()])
        }
        Answer::Refused { target, why } => {
            head.kind = K_REFUSED;
            head.len1 = target.len().min(MAX_PATH) as u32;
            head.len2 = why.len().min(MAX_PATH) as u32;
            let t = target.as_bytes().get(..head.len1 as usize).unwrap_or_default();
            let w = why.as_bytes().get(..head.len2 as usize).unwrap_or_default();
            send_packet(ctl, &[as_bytes(&head), t, w], &[])
        }
    }
}

/// A path split into its parent (as written; `.` for none) and its last component: with
/// the trailing slashes the call had (passed to the kernel as given) and without (checked
/// against protected names). `None` for `/`, an empty path, `.` and `..` as last component:
/// nothing is created there, the kernel answers those itself.
fn split_last(path: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let trimmed_len = path.iter().rposition(|&b| b != b'/').map(|i| i + 1)?;
    let trimmed = path.get(..trimmed_len)?;
    let (parent, start) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/".to_vec(), 1),
        Some(i) => (trimmed.get(..i)?.to_vec(), i + 1),
        None => (b".".to_vec(), 0),
    };
    let bare = trimmed.get(start..)?.to_vec();
    if bare.is_empty() || bare == b"." || bare == b".." {
        return None;
    }
    Some((parent, path.get(start..)?.to_vec(), bare))
}

fn cstring(b: &[u8]) -> Option<CString> {
    CString::new(b.to_vec()).ok()
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat` (or `openat2` with `resolve`), returning an owned descriptor or the errno.
fn open_at(base: RawFd, path: &[u8], flags: i32, mode: u32, resolve: u64) -> Result<OwnedFd, i32> {
    let c = cstring(path).ok_or(libc::EINVAL)?;
    let fd = if resolve == 0 {
        // SAFETY: openat with a NUL-terminated path; returns a new fd or -1.
        unsafe { libc::openat(base, c.as_ptr(), flags | libc::O_CLOEXEC, mode) }
    } else {
        let how = OpenHow { flags: (flags | libc::O_CLOEXEC) as u32 as u64, mode: u64::from(mode), resolve };
        // SAFETY: openat2 with a NUL-terminated path and a live open_how of the size passed.
        unsafe { libc::syscall(libc::SYS_openat2, base, c.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) as i32 }
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn inode(fd: RawFd) -> Option<Inode> {
    // SAFETY: an all-zero stat is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat into our struct.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

fn inode_at(dir: RawFd, name: &[u8], follow: bool) -> Option<Inode> {
    let c = cstring(name)?;
    // SAFETY: an all-zero stat is valid; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: fstatat with a NUL-terminated name into our struct.
    (unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, flags) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Where a parent directory lies for the agent's Landlock domain.
enum Territory<'t> {
    /// The agent may create, remove and rename its entries itself (or nothing there at all):
    /// the kernel decides.
    Agent,
    /// Only the helper may; `names` are protected in it (when it is a directory of the
    /// table itself rather than one created inside one).
    Mediated { dir: Option<&'t MediatedDir> },
}

/// Walks up from `dir` (following `..` as the kernel does, across mount points) to the
/// first directory of the table or with a full rule of its own.
fn territory<'t>(table: &'t Mediation, dir: &OwnedFd) -> Territory<'t> {
    let Some(mut key) = inode(dir.as_raw_fd()) else { return Territory::Agent };
    if let Some(d) = table.dirs.get(&key) {
        return Territory::Mediated { dir: Some(d) };
    }
    let mut cur: Option<OwnedFd> = None;
    for _ in 0..MAX_DEPTH {
        if table.full.contains(&key) {
            return Territory::Agent;
        }
        let base = cur.as_ref().map_or(dir.as_raw_fd(), |c| c.as_raw_fd());
        let Ok(up) = open_at(base, b"..", libc::O_PATH | libc::O_DIRECTORY, 0, 0) else { return Territory::Agent };
        let Some(up_key) = inode(up.as_raw_fd()) else { return Territory::Agent };
        if up_key == key {
            return Territory::Agent; // the root
        }
        if table.dirs.contains_key(&up_key) {
            return Territory::Mediated { dir: None };
        }
        key = up_key;
        cur = Some(up);
    }
    Territory::Agent
}

fn protected_name<'t>(dir: Option<&'t MediatedDir>, name: &[u8]) -> Option<(&'t MediatedDir, &'t String)> {
    let d = dir?;
    d.protects(name).map(|why| (d, why))
}

fn refusal(d: &MediatedDir, name: &[u8], why: &str) -> Answer {
    Answer::Refused { target: d.path.join(OsStr::from_bytes(name)).display().to_string(), why: why.to_owned() }
}

fn result(r: libc::c_int) -> Answer {
    if r < 0 { Answer::Errno(errno()) } else { Answer::Value(i64::from(r)) }
}

/// One side of a call: its parent directory (held open), its name (as given, and bare).
struct Side {
    parent: OwnedFd,
    name: Vec<u8>,
    bare: Vec<u8>,
}

fn side(base: Option<&OwnedFd>, path: &[u8], resolve: u64) -> Option<Side> {
    let (parent, name, bare) = split_last(path)?;
    let b = base.map_or(libc::AT_FDCWD, |f| f.as_raw_fd());
    let parent = open_at(b, &parent, libc::O_PATH | libc::O_DIRECTORY, 0, resolve).ok()?;
    Some(Side { parent, name, bare })
}

/// Decides and performs one request (module docs). `base1` is the base of path1 (path2 for
/// `Symlink`), `base2` of path2 for `Link` and `Rename`; `None` resolves from the helper's
/// root and working directory.
pub fn handle(table: &Mediation, req: &Request, base1: Option<&OwnedFd>, base2: Option<&OwnedFd>) -> Answer {
    // The caller's umask, applied by the kernel as for the caller (a default ACL of the
    // directory replaces it, as it would for the agent). One request at a time: a process
    // setting is exact.
    // SAFETY: umask with an integer argument.
    unsafe { libc::umask(req.umask & 0o777) };
    let mode = req.mode & 0o7777;
    match req.op {
        Op::Open | Op::Mkdir | Op::Mknod | Op::Symlink | Op::Unlink => {
            let (base, path) = if req.op == Op::Symlink { (base1, &req.path2) } else { (base1, &req.path1) };
            // A resolve restriction decides how the parent is reached, not the last name.
            let resolve = if req.op == Op::Open { req.resolve } else { 0 };
            let Some(s) = side(base, path, resolve) else { return Answer::Continue };
            let dir = match territory(table, &s.parent) {
                Territory::Agent => return Answer::Continue,
                Territory::Mediated { dir } => dir,
            };
            if let Some((d, why)) = protected_name(dir, &s.bare) {
                return refusal(d, &s.bare, why);
            }
            let p = s.parent.as_raw_fd();
            let Some(name) = cstring(&s.name) else { return Answer::Errno(libc::EINVAL) };
            match req.op {
                Op::Open => open_create(p, &s.name, req, mode),
                // SAFETY: a call on our open directory and a NUL-terminated name (so each arm below).
                Op::Mkdir => result(unsafe { libc::mkdirat(p, name.as_ptr(), mode) }),
                Op::Mknod => match req.mode & libc::S_IFMT {
                    0 | libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {
                        // SAFETY: as above.
                        result(unsafe { libc::mknodat(p, name.as_ptr(), (req.mode & libc::S_IFMT) | mode, 0) })
                    }
                    // Devices are never granted: the kernel refuses them for the agent.
                    _ => Answer::Continue,
                },
                Op::Symlink => {
                    let Some(target) = cstring(&req.path1) else { return Answer::Errno(libc::EINVAL) };
                    // SAFETY: as above.
                    result(unsafe { libc::symlinkat(target.as_ptr(), p, name.as_ptr()) })
                }
                _ => {
                    // Removing an entry: never a protected inode (a name pinned on the way).
                    if inode_at(p, &s.bare, false).is_some_and(|i| table.protected.contains(&i)) {
                        return Answer::Refused { target: String::from_utf8_lossy(path).into_owned(), why: "a protected path".into() };
                    }
                    let flags = (req.flags as i32) & libc::AT_REMOVEDIR;
                    // SAFETY: as above.
                    result(unsafe { libc::unlinkat(p, name.as_ptr(), flags) })
                }
            }
        }
        Op::Link | Op::Rename => two_sided(table, req, base1, base2),
    }
}

/// `open(O_CREAT)` in a mediated directory: create the name exclusively (never through a
/// symlink); if it exists, the agent's own open of it needs no new entry: CONTINUE.
fn open_create(parent: RawFd, name: &[u8], req: &Request, mode: u32) -> Answer {
    let flags = req.flags as i32;
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let exclusive = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
    let resolve = req.resolve & (0x02 | 0x04); // RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS
    match open_at(parent, name, exclusive & !libc::O_CLOEXEC, mode, resolve) {
        Ok(fd) => Answer::Fd { fd, cloexec },
        Err(libc::EEXIST) if flags & libc::O_EXCL == 0 => Answer::Continue,
        Err(e) => Answer::Errno(e),
    }
}

fn two_sided(table: &Mediation, req: &Request, base1: Option<&OwnedFd>, base2: Option<&OwnedFd>) -> Answer {
    let follow = req.op == Op::Link && (req.flags as i32) & libc::AT_SYMLINK_FOLLOW != 0;
    let empty = req.op == Op::Link && (req.flags as i32) & libc::AT_EMPTY_PATH != 0 && req.path1.is_empty();
    let Some(new) = side(base2, &req.path2, 0) else { return Answer::Continue };
    let new_dir = territory(table, &new.parent);
    // The source: linking a descriptor (`AT_EMPTY_PATH`) has no source directory.
    let old = if empty { None } else { side(base1, &req.path1, 0) };
    if old.is_none() && !empty {
        return Answer::Continue;
    }
    let old_dir = old.as_ref().map(|o| territory(table, &o.parent));
    let mediated = matches!(new_dir, Territory::Mediated { .. }) || matches!(old_dir, Some(Territory::Mediated { .. }));
    if !mediated {
        return Answer::Continue;
    }
    if let Territory::Mediated { dir } = new_dir
        && let Some((d, why)) = protected_name(dir, &new.bare)
    {
        return refusal(d, &new.bare, why);
    }
    if let (Some(o), Some(Territory::Mediated { dir })) = (&old, &old_dir)
        && let Some((d, why)) = protected_name(*dir, &o.bare)
    {
        return refusal(d, &o.bare, why);
    }
    let Some(new_name) = cstring(&new.name) else { return Answer::Errno(libc::EINVAL) };
    match req.op {
        Op::Link => {
            // Link what the source names, as an open descriptor: the inode checked is the one
            // linked (through /proc/self/fd, which needs no capability).
            // (`AT_EMPTY_PATH`: the caller's descriptor itself, e.g. an `O_TMPFILE`.)
            let opened;
            let src: &OwnedFd = match (&old, empty, base1) {
                (_, true, Some(b)) => b,
                (Some(o), _, _) => {
                    let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
                    match open_at(o.parent.as_raw_fd(), &o.name, flags, 0, 0) {
                        Ok(f) => {
                            opened = f;
                            &opened
                        }
                        Err(e) => return Answer::Errno(e),
                    }
                }
                _ => return Answer::Errno(libc::EBADF),
            };
            if inode(src.as_raw_fd()).is_some_and(|i| table.protected.contains(&i)) {
                return Answer::Refused { target: String::from_utf8_lossy(&req.path1).into_owned(), why: "a protected path cannot be linked".into() };
            }
            let Some(via) = cstring(format!("/proc/self/fd/{}", src.as_raw_fd()).as_bytes()) else { return Answer::Errno(libc::EINVAL) };
            // SAFETY: linkat with NUL-terminated paths; the source is our own descriptor.
            result(unsafe { libc::linkat(libc::AT_FDCWD, via.as_ptr(), new.parent.as_raw_fd(), new_name.as_ptr(), libc::AT_SYMLINK_FOLLOW) })
        }
        _ => {
            let Some(o) = old else { return Answer::Errno(libc::EINVAL) };
            let flags = req.flags;
            // RENAME_WHITEOUT needs CAP_MKNOD: the kernel refuses it for the agent.
            if flags & 4 != 0 {
                return Answer::Continue;
            }
            let moved = [inode_at(o.parent.as_raw_fd(), &o.bare, false), if flags & 2 != 0 { inode_at(new.parent.as_raw_fd(), &new.bare, false) } else { None }];
            if moved.iter().flatten().any(|i| table.protected.contains(i)) {
                return Answer::Refused { target: String::from_utf8_lossy(&req.path1).into_owned(), why: "a protected path cannot be moved".into() };
            }
            let Some(old_name) = cstring(&o.name) else { return Answer::Errno(libc::EINVAL) };
            // SAFETY: renameat2 on our open directories with NUL-terminated names.
            let r = unsafe { libc::syscall(libc::SYS_renameat2, o.parent.as_raw_fd(), old_name.as_ptr(), new.parent.as_raw_fd(), new_name.as_ptr(), flags) };
            result(r as libc::c_int)
        }
    }
}

// ── the supervisor's side ──────────────────────────────────────────────────────────────

/// The supervisor's handle on the helper: one request at a time (each takes microseconds).
pub struct Client {
    sock: Mutex<OwnedFd>,
}

/// The helper is gone (the sandbox is ending, or the agent killed it) or broke protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl Client {
    pub fn new(sock: OwnedFd) -> Client {
        Client { sock: Mutex::new(sock) }
    }

    /// Sends `req` with its bases (see [`handle`]) and returns the helper's answer.
    pub fn ask(&self, req: &Request, base1: Option<&OwnedFd>, base2: Option<&OwnedFd>) -> Result<Answer, Unavailable> {
        let gone = |what: &str| Unavailable(what.to_string());
        if req.path1.len() > MAX_PATH || req.path2.len() > MAX_PATH {
            return Ok(Answer::Errno(libc::ENAMETOOLONG));
        }
        let head = Head {
            magic: MAGIC,
            op: req.op as u32,
            flags: req.flags,
            mode: req.mode,
            umask: req.umask,
            len1: req.path1.len() as u32,
            dev: req.dev,
            resolve: req.resolve,
            len2: req.path2.len() as u32,
            bases: u32::from(base1.is_some()) | (u32::from(base2.is_some()) << 1),
        };
        let fds: Vec<RawFd> = base1.into_iter().chain(base2).map(|f| f.as_raw_fd()).collect();
        let sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let s = sock.as_raw_fd();
        send_packet(s, &[as_bytes(&head), &req.path1, &req.path2], &fds).map_err(|_| gone("the file helper does not take requests"))?;
        let mut buf = vec![0u8; REPLY_LEN + 2 * (MAX_PATH + 1)];
        let (n, mut got) = recv_packet(s, &mut buf).map_err(|_| gone("file helper connection broken"))?.ok_or_else(|| gone("the file helper is gone"))?;
        drop(sock);
        let r: ReplyHead = from_bytes(&buf).filter(|r: &ReplyHead| r.magic == MAGIC).ok_or_else(|| gone("malformed file helper reply"))?;
        let text = |from: usize, len: u32| String::from_utf8_lossy(buf.get(from..(from + len as usize).min(n)).unwrap_or_default()).into_owned();
        Ok(match r.kind {
            K_CONTINUE => Answer::Continue,
            K_VALUE => Answer::Value(r.value),
            K_ERRNO => Answer::Errno(r.value as i32),
            K_FD => match got.pop() {
                Some(fd) => Answer::Fd { fd, cloexec: r.value != 0 },
                None => return Err(gone("the file helper sent no descriptor")),
            },
            K_REFUSED => Answer::Refused { target: text(REPLY_LEN, r.len1), why: text(REPLY_LEN + r.len1 as usize, r.len2) },
            _ => return Err(gone("malformed file helper reply")),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn paths_split_into_parent_and_name_as_the_kernel_walks_them() {
        let s = |p: &str| split_last(p.as_bytes()).map(|(a, b, c)| (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap(), String::from_utf8(c).unwrap()));
        assert_eq!(s("a"), Some((".".into(), "a".into(), "a".into())));
        assert_eq!(s("/a"), Some(("/".into(), "a".into(), "a".into())));
        assert_eq!(s("/w/.git/hooks"), Some(("/w/.git".into(), "hooks".into(), "hooks".into())));
        assert_eq!(s("d/new/"), Some(("d".into(), "new/".into(), "new".into())));
        assert_eq!(s("d//x"), Some(("d/".into(), "x".into(), "x".into())));
        for none in ["", "/", "//", ".", "..", "a/..", "a/."] {
            assert_eq!(s(none), None, "{none:?}");
        }
    }

    #[test]
    fn the_wire_structures_have_no_hidden_padding() {
        assert_eq!(HEAD_LEN, 4 * 6 + 8 * 2 + 4 * 2);
        assert_eq!(REPLY_LEN, 4 * 2 + 8 + 4 * 2);
    }
}
