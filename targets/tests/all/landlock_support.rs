//! Shared helpers of the Landlock and mount tests: run checks in a forked child (never in
//! the test runner), optionally inside new user + mount + pid namespaces, and collect the
//! failed expectations through a pipe.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Collected expectation failures of a child.
#[derive(Default)]
pub struct Checks {
    pub failures: Vec<String>,
}

impl Checks {
    pub fn expect(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// Runs `f` in a forked child and panics with its failures (or its crash) in the parent.
pub fn in_child(f: impl FnOnce(&mut Checks)) {
    let (mut r, w) = pipe();
    // SAFETY: fork; the child only runs `f` and exits without returning to the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(r);
        run_and_report(f, w);
    }
    drop(w);
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    let code = wait(pid);
    assert!(
        out.is_empty() && code == 0,
        "child (exit {code}) failures:\n{out}"
    );
}

fn run_and_report(f: impl FnOnce(&mut Checks), mut w: std::fs::File) -> ! {
    let mut c = Checks::default();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut c)));
    if let Err(p) = r {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        c.failures.push(format!("child panicked: {msg}"));
    }
    for l in &c.failures {
        let _ = writeln!(w, "  - {l}");
    }
    drop(w);
    // SAFETY: leave the forked child without running the harness's exit handlers.
    unsafe { libc::_exit(0) }
}

/// True when this host lets us create user + mount + pid namespaces.
pub fn namespaces_available() -> bool {
    std::fs::metadata("/proc/self/ns/user").is_ok()
        && std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
            .map(|s| s.trim() != "0")
            .unwrap_or(true)
}

/// Runs `f` as pid 1 of new user (uid 0 mapped to ours) + mount + pid namespaces, in a
/// grandchild of the test runner.
pub fn in_namespaces(f: impl FnOnce(&mut Checks)) {
    let (mut r, w) = pipe();
    // SAFETY: fork; the child only sets up namespaces, forks again and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop(r);
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
        // SAFETY: plain flags.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) }
            != 0
        {
            let mut w = w;
            let _ = writeln!(w, "  - unshare: {}", std::io::Error::last_os_error());
            // SAFETY: leave the forked child without the harness's exit handlers.
            unsafe { libc::_exit(0) }
        }
        let _ = std::fs::write("/proc/self/setgroups", "deny");
        let _ = std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"));
        let _ = std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"));
        // SAFETY: fork again so the grandchild is pid 1 of the new pid namespace.
        let pid2 = unsafe { libc::fork() };
        if pid2 == 0 {
            run_and_report(f, w);
        }
        drop(w);
        let code = wait(pid2);
        // SAFETY: leave the forked child without the harness's exit handlers.
        unsafe { libc::_exit(code) }
    }
    drop(w);
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    let code = wait(pid);
    assert!(
        out.is_empty() && code == 0,
        "namespaced child (exit {code}) failures:\n{out}"
    );
}

/// errno of opening `p` with `flags` (0 = success).
pub fn open_errno(p: &Path, flags: i32) -> i32 {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid path; the descriptor is closed right away.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error().unwrap_or(-1);
    }
    // SAFETY: we own fd.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    0
}

pub fn can_read(p: &Path) -> bool {
    std::fs::read(p).is_ok()
}

pub fn can_write(p: &Path) -> bool {
    open_errno(p, libc::O_WRONLY | libc::O_CREAT) == 0
}

/// Runs `argv` and tells whether it exec'd and exited 0.
pub fn runs(argv: &[&str]) -> bool {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// memfd_create + write `/bin/true` + execveat(AT_EMPTY_PATH), in a child; true if it ran.
pub fn memfd_exec_runs() -> bool {
    let bytes = std::fs::read("/bin/true").unwrap();
    // SAFETY: fork; the child only does raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let name = CString::new("x").unwrap();
        // SAFETY: valid name; flags 0.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        if fd < 0 {
            // SAFETY: leave the forked child without the harness's exit handlers.
            unsafe { libc::_exit(10) }
        }
        // SAFETY: fd is ours; the buffer is valid.
        unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        let empty = CString::new("").unwrap();
        let arg0 = CString::new("true").unwrap();
        let argv = [arg0.as_ptr().cast_mut(), std::ptr::null_mut()];
        let envp: [*mut libc::c_char; 1] = [std::ptr::null_mut()];
        // SAFETY: valid, NULL-terminated argv/envp.
        unsafe {
            libc::execveat(
                fd,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        // SAFETY: leave the forked child without the harness's exit handlers.
        unsafe { libc::_exit(11) }
    }
    wait(pid) == 0
}

/// The dynamic loader of this host (from `/bin/true`'s `PT_INTERP`).
pub fn ld_so() -> PathBuf {
    aegis_targets::landlock::elf_interpreter(Path::new("/bin/true"))
        .unwrap()
        .expect("/bin/true is dynamic")
}

/// Host paths that [`policy`] grants by itself (its rules that are not `${BASE}`-relative),
/// symlinks resolved.
fn host_grants() -> Vec<PathBuf> {
    policy()
        .iter()
        .filter(|r| r.path.param().is_none())
        .filter_map(|r| std::fs::canonicalize(r.path.to_string()).ok())
        .collect()
}

/// Where [`tree`] puts its directory: the first candidate that lies outside every host
/// path [`policy`] grants. The tests assert that what the policy does not grant is denied,
/// so the tree must not sit under a grant: a checkout in `/tmp` (granted writable, and
/// replaced by the mount tests' private `/tmp`) or under `/usr` would make every "outside"
/// check pass or fail for the wrong reason.
fn tree_parent() -> PathBuf {
    let grants = host_grants();
    let candidates = [
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
        PathBuf::from("/var/tmp"),
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default(),
    ];
    candidates
        .iter()
        .filter_map(|c| std::fs::canonicalize(c).ok())
        .find(|c| c.is_dir() && !grants.iter().any(|g| c.starts_with(g)))
        .unwrap_or_else(|| {
            panic!("no directory for the test tree outside the test policy's grants {grants:?}; tried {candidates:?}")
        })
}

/// A fresh test tree outside every host path the test policy grants (see [`tree_parent`]):
/// ro/{file.txt,sub/deep.txt}, rw/{ok.txt,.env,secret/key.txt,work/}, bin/{mytrue,other}.
pub fn tree() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("aegis-fs-")
        .tempdir_in(tree_parent())
        .unwrap();
    let base = std::fs::canonicalize(dir.path()).unwrap();
    for d in ["ro/sub", "rw/secret", "rw/work", "bin", "outside"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::write(base.join("ro/file.txt"), "readable").unwrap();
    std::fs::write(base.join("ro/sub/deep.txt"), "deep").unwrap();
    std::fs::write(base.join("rw/ok.txt"), "ok").unwrap();
    std::fs::write(base.join("rw/.env"), "TOKEN=hunter2").unwrap();
    std::fs::write(base.join("rw/secret/key.txt"), "PRIVATE KEY").unwrap();
    for b in ["mytrue", "other"] {
        std::fs::copy("/bin/true", base.join("bin").join(b)).unwrap();
        std::fs::set_permissions(
            base.join("bin").join(b),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("../.env", base.join("rw/work/env-link")).unwrap();
    (dir, base)
}

use aegis_targets::landlock::{FsAccess, FsRule, Params, PathTemplate};

pub fn rule(path: &str, access: FsAccess, origin: &str) -> FsRule {
    FsRule {
        path: PathTemplate::parse(path).unwrap(),
        access,
        origin: origin.to_owned(),
    }
}

/// The test policy: system trees readable, `/usr/bin/true` and `${BASE}/bin/mytrue`
/// executable, `${BASE}/ro` readable, `${BASE}/rw` writable except `.env` and `secret/`.
pub fn policy() -> Vec<FsRule> {
    use FsAccess::*;
    let mut r = vec![
        rule("/usr", Read, "read /usr"),
        rule("/etc", Read, "read /etc"),
        rule("/lib", Read, "read /lib"),
        rule("/lib64", Read, "read /lib64"),
        rule("/tmp", Write, "write /tmp"),
        rule("/usr/bin/true", Exec, "exec /usr/bin/true"),
        rule("${BASE}/ro", Read, "read ${BASE}/ro"),
        rule("${BASE}/rw", Write, "write ${BASE}/rw"),
        rule("${BASE}/rw/.env", Deny, "deny ${BASE}/rw/.env"),
        rule("${BASE}/rw/secret", Deny, "deny ${BASE}/rw/secret"),
        rule("${BASE}/bin", Read, "read ${BASE}/bin"),
        rule("${BASE}/bin/mytrue", Exec, "exec ${BASE}/bin/mytrue"),
    ];
    r.extend(aegis_targets::landlock::loader_rules(
        std::env::consts::ARCH,
    ));
    r.extend(aegis_targets::landlock::runtime_rules());
    r
}

pub fn params(base: &Path) -> Params {
    Params::from_pairs([("BASE", base)]).unwrap()
}

pub fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}
