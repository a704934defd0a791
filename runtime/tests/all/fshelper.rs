//! The file helper for real: a forked child applies a Landlock ruleset in which names absent
//! at launch (`.envrc`, `.git/hooks`) are protected, starts the helper through the apply hook,
//! and then, restricted as the agent, asks the helper what the supervisor would ask for each
//! mediated call (the seccomp side is tested with the launch). Checks what the agent can do
//! itself, what the helper does for it, and what is refused.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aegis_runtime::fshelper::{self, Answer, Client, Op, Request};
use aegis_targets::landlock::{self, Abi, FsAccess, FsRule, InForce, Mode, Params, PathTemplate};

fn rule(p: &str, access: FsAccess) -> FsRule {
    FsRule { path: PathTemplate::parse(p).unwrap(), access, origin: format!("test {p}") }
}

/// Runs `f` in a forked child; its failures (one per line) make the test fail.
fn in_child(f: impl FnOnce(&mut Vec<String>)) {
    let mut fds = [0; 2];
    // SAFETY: a two-int array for pipe2.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh descriptors owned by nobody else.
    let (mut r, mut w) = unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) };
    // SAFETY: fork; the child runs `f` and exits without returning to the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        drop(r);
        let mut failures = Vec::new();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut failures)));
        if let Err(p) = res {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
            failures.push(format!("child panicked: {msg}"));
        }
        let _ = w.write_all(failures.join("\n").as_bytes());
        drop(w);
        // SAFETY: leave without the harness's exit handlers.
        unsafe { libc::_exit(0) }
    }
    drop(w);
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(out.is_empty(), "failures:\n{out}");
}

/// Enforces `art` on this (child) process with the file helper started through the hook, as
/// the Landlock stage does; `None` (and a failure saying why) when no helper started.
fn enforce_with_helper(art: &landlock::LandlockArtifact, params: &Params, fail: &mut Vec<String>) -> Option<Client> {
    let mut client = None;
    let mut hook = |setup: landlock::HelperSetup| -> Result<(), String> {
        client = Some(Client::new(fshelper::fork_in_child(setup)?));
        Ok(())
    };
    let st = landlock::apply_with_helper(art, params, Mode::Required, InForce::NOTHING, Abi(u32::MAX), Some(&mut hook)).unwrap();
    if client.is_none() {
        fail.push(format!("no helper started: {:?}", st.details));
    }
    client
}

fn open_dir(p: &Path) -> OwnedFd {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; a new descriptor or -1.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    assert!(fd >= 0, "{}", p.display());
    // SAFETY: ours.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn req(op: Op, p1: &Path, p2: &Path) -> Request {
    Request {
        op,
        flags: if op == Op::Open { (libc::O_CREAT | libc::O_WRONLY) as u32 } else { 0 },
        mode: if op == Op::Mkdir { 0o755 } else { 0o644 },
        umask: 0o022,
        dev: 0,
        resolve: 0,
        path1: p1.as_os_str().as_bytes().to_vec(),
        path2: p2.as_os_str().as_bytes().to_vec(),
    }
}

fn kind(a: &Answer) -> String {
    match a {
        Answer::Continue => "continue".into(),
        Answer::Value(v) => format!("value {v}"),
        Answer::Errno(e) => format!("errno {e}"),
        Answer::Fd { .. } => "fd".into(),
        Answer::Refused { why, .. } => format!("refused ({why})"),
    }
}

#[test]
fn the_helper_makes_entries_the_agent_cannot_and_refuses_protected_names() {
    if landlock::kernel_abi() < Abi(3) {
        eprintln!("SKIP: kernel Landlock ABI {} < V3", landlock::kernel_abi());
        return;
    }
    let dir = tempfile::Builder::new().prefix("aegis-fshelper-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let w: PathBuf = std::fs::canonicalize(dir.path()).unwrap().join("w");
    for d in [".git/objects", "src"] {
        std::fs::create_dir_all(w.join(d)).unwrap();
    }
    std::fs::write(w.join("README"), "hi").unwrap();
    std::fs::write(w.join(".git/config"), "[core]\n").unwrap();
    let rules = vec![
        rule("/usr", FsAccess::Read),
        rule("/proc", FsAccess::Read),
        rule("${W}", FsAccess::Write),
        rule("${W}/.envrc", FsAccess::Read),
        rule("${W}/.git/hooks", FsAccess::Read),
        rule("${W}/.claude/commands", FsAccess::Read),
    ];
    let art = landlock::lower_fs(&rules).artifact;
    let params = Params::from_pairs([("W", w.as_path())]).unwrap();
    in_child(|fail| {
        let Some(client) = enforce_with_helper(&art, &params, fail) else {
            return;
        };
        let mut expect = |ok: bool, what: &str| {
            if !ok {
                fail.push(what.to_string());
            }
        };
        let root = open_dir(Path::new("/"));
        let ask = |r: &Request| client.ask(r, Some(&root), Some(&root)).unwrap();
        let none = Path::new("");
        // The agent itself: the workspace root can be read and its files written, but no entry
        // made in it; subdirectories that existed at launch are whole.
        expect(std::fs::read_dir(&w).is_ok(), "ls w");
        expect(std::fs::OpenOptions::new().append(true).open(w.join("README")).is_ok(), "write README");
        expect(std::fs::write(w.join("new.txt"), "x").is_err(), "the agent cannot create in w itself");
        expect(std::fs::write(w.join("src/ok.rs"), "x").is_ok(), "src stays whole");
        // What the helper does for it.
        let a = ask(&req(Op::Open, &w.join("new.txt"), none));
        expect(matches!(a, Answer::Fd { .. }), &format!("create w/new.txt: {}", kind(&a)));
        expect(std::fs::OpenOptions::new().append(true).open(w.join("new.txt")).is_ok(), "the created file is the agent's to write");
        let a = ask(&req(Op::Open, &w.join("README"), none));
        expect(matches!(a, Answer::Continue), &format!("an existing file needs no helper: {}", kind(&a)));
        let a = ask(&req(Op::Open, &w.join("src/x.rs"), none));
        expect(matches!(a, Answer::Continue), &format!("src is the agent's own: {}", kind(&a)));
        let a = ask(&req(Op::Mkdir, &w.join("build"), none));
        expect(matches!(a, Answer::Value(0)), &format!("mkdir w/build: {}", kind(&a)));
        expect(std::fs::write(w.join("build/out"), "x").is_err(), "a directory made in w inherits its rights");
        let a = ask(&req(Op::Open, &w.join("build/out"), none));
        expect(matches!(a, Answer::Fd { .. }), &format!("the helper makes entries there too: {}", kind(&a)));
        let a = ask(&req(Op::Rename, &w.join("new.txt"), &w.join("renamed.txt")));
        expect(matches!(a, Answer::Value(0)), &format!("rename in w: {}", kind(&a)));
        let a = ask(&req(Op::Unlink, &w.join("renamed.txt"), none));
        expect(matches!(a, Answer::Value(0)), &format!("unlink in w: {}", kind(&a)));
        // Protected names: never made, in any role.
        for (what, r) in [
            ("create .envrc", req(Op::Open, &w.join(".envrc"), none)),
            ("mkdir .envrc", req(Op::Mkdir, &w.join(".envrc"), none)),
            ("mkdir .git/hooks", req(Op::Mkdir, &w.join(".git/hooks"), none)),
            ("mkdir .claude (the first missing part of .claude/commands)", req(Op::Mkdir, &w.join(".claude"), none)),
            ("rename .git away", req(Op::Rename, &w.join(".git"), &w.join("git-old"))),
            ("rename onto .git", req(Op::Rename, &w.join("build"), &w.join(".git"))),
            ("rename onto .envrc", req(Op::Rename, &w.join("README"), &w.join(".envrc"))),
            ("symlink .envrc", Request { path1: b"/etc/passwd".to_vec(), ..req(Op::Symlink, none, &w.join(".envrc")) }),
            ("link to .envrc", req(Op::Link, &w.join("README"), &w.join(".envrc"))),
            ("create .envrc via a relative path", req(Op::Open, &w.join("src/../.envrc"), none)),
            ("create .envrc with a trailing slash", req(Op::Mkdir, Path::new(&format!("{}/.envrc/", w.display())), none)),
        ] {
            let a = ask(&r);
            expect(matches!(a, Answer::Refused { .. }), &format!("{what}: {}", kind(&a)));
        }
        // A symlink the agent makes to a protected name: following it is the agent's own
        // call, which its ruleset refuses.
        let a = ask(&Request { path1: b".envrc".to_vec(), ..req(Op::Symlink, none, &w.join("lnk")) });
        expect(matches!(a, Answer::Value(0)), &format!("symlink lnk: {}", kind(&a)));
        let a = ask(&req(Op::Open, &w.join("lnk"), none));
        expect(matches!(a, Answer::Continue), &format!("an existing name (a link) is the agent's own call: {}", kind(&a)));
        expect(std::fs::write(w.join("lnk"), "x").is_err(), "creating .envrc through the link fails");
        expect(!w.join(".envrc").exists() && !w.join(".git/hooks").exists() && !w.join(".claude").exists(), "nothing protected appeared");
    });
}

/// Without a mount namespace (Landlock only) an existing read-only path (`.git/config`) splits
/// its write tree too: the directories on the way are read-only for the agent, and the helper
/// makes their entries, so git's lock-and-rename still works, while the protected names and
/// inodes stay where they are.
#[test]
fn without_mounts_the_helper_keeps_git_working_around_a_read_only_config() {
    if landlock::kernel_abi() < Abi(3) {
        eprintln!("SKIP: kernel Landlock ABI {} < V3", landlock::kernel_abi());
        return;
    }
    let dir = tempfile::Builder::new().prefix("aegis-fshelper-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let w: PathBuf = std::fs::canonicalize(dir.path()).unwrap().join("w");
    std::fs::create_dir_all(w.join(".git/objects")).unwrap();
    std::fs::write(w.join(".git/config"), "[core]\n").unwrap();
    std::fs::write(w.join(".git/index"), "old").unwrap();
    let rules = vec![rule("/usr", FsAccess::Read), rule("${W}", FsAccess::Write), rule("${W}/.git/config", FsAccess::Read)];
    let art = landlock::lower_fs(&rules).artifact;
    let params = Params::from_pairs([("W", w.as_path())]).unwrap();
    in_child(|fail| {
        let Some(client) = enforce_with_helper(&art, &params, fail) else {
            return;
        };
        let mut expect = |ok: bool, what: &str| {
            if !ok {
                fail.push(what.to_string());
            }
        };
        let ask = |r: &Request| client.ask(r, None, None).unwrap();
        let none = Path::new("");
        let git = w.join(".git");
        expect(std::fs::read_to_string(git.join("config")).is_ok(), "git reads its config");
        expect(std::fs::OpenOptions::new().append(true).open(git.join("config")).is_err(), "and cannot write it");
        expect(std::fs::write(git.join("objects/ab"), "x").is_ok(), "objects stay whole");
        expect(std::fs::write(git.join("index.lock"), "x").is_err(), "the agent cannot make entries in .git itself");
        let a = ask(&req(Op::Open, &git.join("index.lock"), none));
        match a {
            Answer::Fd { fd, .. } => {
                let mut f = std::fs::File::from(fd);
                expect(f.write_all(b"new").is_ok(), "git writes the lock through its descriptor");
            }
            other => expect(false, &format!("create index.lock: {}", kind(&other))),
        }
        let a = ask(&req(Op::Rename, &git.join("index.lock"), &git.join("index")));
        expect(matches!(a, Answer::Value(0)), &format!("rename the lock over the index: {}", kind(&a)));
        expect(std::fs::read_to_string(git.join("index")).ok().as_deref() == Some("new"), "the index was replaced");
        for (what, r) in [
            ("unlink .git/config", req(Op::Unlink, &git.join("config"), none)),
            ("rename over .git/config", req(Op::Rename, &git.join("index"), &git.join("config"))),
            ("rename .git away", req(Op::Rename, &git, &w.join("g"))),
            ("link .git/config out", req(Op::Link, &git.join("config"), &w.join("cfg"))),
        ] {
            let a = ask(&r);
            expect(matches!(a, Answer::Refused { .. }), &format!("{what}: {}", kind(&a)));
        }
        expect(std::fs::read_to_string(git.join("config")).ok().as_deref() == Some("[core]\n"), "the config is untouched");
    });
}
