//! The mount plan applied for real, in a grandchild that has unshared user + mount + pid
//! namespaces (as the runtime does), then the Landlock ruleset on top (denies enforced by
//! masks, no split): private bounded /tmp, fresh /proc, minimal /dev, read-only binds,
//! masks, noexec containment of `ld.so`, memfd exec refused, and the attacks again.


use aegis_targets::landlock::{self, Abi, InForce, Mode, PathTemplate};
use aegis_targets::mounts::{self, EXEC_DIRS, PlanOptions};
use std::path::Path;
use crate::landlock_support::*;

fn options() -> PlanOptions {
    let mut exec_dirs: Vec<PathTemplate> = EXEC_DIRS
        .iter()
        .map(|p| PathTemplate::parse(p).unwrap())
        .collect();
    exec_dirs.push(PathTemplate::parse("${BASE}/bin").unwrap());
    PlanOptions {
        tmp_size_bytes: Some(1 << 20),
        exec_dirs,
        ..PlanOptions::default()
    }
}

#[test]
fn plan_builds_an_isolated_root_and_contains_attacks() {
    if !namespaces_available() || landlock::kernel_abi() < Abi(3) {
        eprintln!("SKIP: needs user namespaces and Landlock ABI >= 3");
        return;
    }
    let (_dir, base) = tree();
    let marker = tempfile::NamedTempFile::new_in("/tmp").unwrap();
    let (plan, _losses) = mounts::plan_from_rules(&policy(), &options());
    let ll = landlock::lower_fs(&policy()).artifact;
    let ld = ld_so();
    in_namespaces(|c| {
        let rep = match mounts::apply(&plan, &params(&base)) {
            Ok(r) => r,
            Err(e) => return c.expect(false, format!("mounts::apply: {e}")),
        };
        // /tmp: private and bounded
        c.expect(!marker.path().exists(), "the host's /tmp is not visible");
        c.expect(std::fs::write("/tmp/x", b"x").is_ok(), "/tmp is writable");
        let big = std::fs::write("/tmp/big", vec![0u8; 2 << 20]);
        c.expect(errno_of(big) == libc::ENOSPC, "/tmp is bounded (1 MiB)");
        let _ = std::fs::remove_file("/tmp/big");
        // /proc: fresh, our pid namespace only
        // SAFETY: getpid has no preconditions.
        c.expect(unsafe { libc::getpid() } == 1, "we are pid 1");
        let pids = std::fs::read_dir("/proc").unwrap().filter(|e| {
            e.as_ref()
                .map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|ch| ch.is_ascii_digit())
                })
                .unwrap_or(false)
        });
        c.expect(
            pids.count() <= 2,
            "/proc shows only the sandbox's processes",
        );
        // /dev: minimal
        let mut devs: Vec<String> = std::fs::read_dir("/dev")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        devs.sort();
        c.expect(
            devs == [
                "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout",
                "tty", "urandom", "zero",
            ],
            format!("/dev is minimal: {devs:?}"),
        );
        c.expect(
            std::fs::write("/dev/null", b"x").is_ok(),
            "/dev/null works (not nodev)",
        );
        let mut buf = [0u8; 16];
        let rnd = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
        c.expect(rnd.is_ok(), "/dev/urandom is readable");
        // binds and masks
        c.expect(
            can_read(&base.join("ro/file.txt")),
            "read-only tree is readable",
        );
        c.expect(
            errno_of(std::fs::write(base.join("ro/file.txt"), "x")) == libc::EROFS,
            "read-only bind refuses writes (EROFS)",
        );
        c.expect(
            std::fs::write(base.join("rw/ok.txt"), "changed").is_ok(),
            "writable bind accepts writes",
        );
        c.expect(
            !base.join("outside").exists(),
            "paths outside every grant are not in the new root",
        );
        // Host trees that hold nothing granted (the test tree's own ancestors are in the
        // new root as mount points, wherever the checkout lives).
        let absent = ["/var", "/root", "/srv", "/home"]
            .into_iter()
            .filter(|t| !base.starts_with(t))
            .collect::<Vec<_>>();
        c.expect(
            absent.len() >= 3 && absent.iter().all(|t| !Path::new(t).exists()),
            format!("host trees not granted are absent: {absent:?}"),
        );
        let env = std::fs::read(base.join("rw/.env")).unwrap_or_default();
        c.expect(env.is_empty(), "the denied file shows as an empty mask");
        c.expect(
            !base.join("rw/secret/key.txt").exists(),
            "the denied directory is masked",
        );
        // memfd exec refused by vm.memfd_noexec=2
        c.expect(
            rep.memfd_noexec,
            format!("memfd_noexec set: {:?}", rep.skipped),
        );
        c.expect(!memfd_exec_runs(), "memfd_create + execveat must fail");

        // Landlock on top: the masks are recognised, so the writable tree is not split.
        let st = match landlock::apply(&ll, &params(&base), Mode::Required, InForce::EVERYTHING) {
            Ok(s) => s,
            Err(e) => return c.expect(false, format!("landlock::apply: {e}")),
        };
        c.expect(
            st.details.iter().any(|d| d.contains(".env` is masked"))
                && !st.details.iter().any(|d| d.contains("split")),
            format!("masks seen, no split: {:?}", st.details),
        );
        c.expect(
            can_write(&base.join("rw/new-at-top.txt")),
            "with masks, new files directly in the writable tree work",
        );
        c.expect(
            !can_read(&base.join("rw/secret/key.txt")),
            "denied key stays unreadable",
        );
        c.expect(
            std::fs::read(base.join("rw/work/env-link"))
                .unwrap_or_default()
                .is_empty(),
            "symlink to the mask reads nothing",
        );
        c.expect(
            std::fs::rename(base.join("rw/.env"), base.join("rw/work/x")).is_err(),
            "a mask cannot be renamed away",
        );
        c.expect(
            std::fs::remove_file(base.join("rw/.env")).is_err(),
            "a mask cannot be deleted",
        );
        c.expect(
            errno_of(std::fs::hard_link(
                base.join("ro/file.txt"),
                base.join("rw/work/hl"),
            )) == libc::EXDEV,
            "hard links into a writable tree from another tree fail with EXDEV",
        );
        // SAFETY: umount2 on a valid path; it must be refused under Landlock.
        let c_env = std::ffi::CString::new(base.join("rw/.env").to_str().unwrap()).unwrap();
        c.expect(
            // SAFETY: a NUL-terminated path; detaching a mount changes only this namespace.
            unsafe { libc::umount2(c_env.as_ptr(), libc::MNT_DETACH) } != 0,
            "a Landlock-restricted process cannot unmount a mask",
        );
        c.expect(
            std::fs::write("/dev/null", b"x").is_ok(),
            "/dev/null stays writable under Landlock",
        );
        c.expect(
            can_read(Path::new("/proc/self/status")),
            "/proc stays readable under Landlock",
        );
        c.expect(
            std::fs::write("/tmp/y", b"y").is_ok(),
            "private /tmp stays writable under Landlock",
        );
        // exec
        let mytrue = base.join("bin/mytrue");
        c.expect(
            runs(&[mytrue.to_str().unwrap()]),
            "granted binary runs through its exec bind",
        );
        c.expect(
            runs(&["/usr/bin/true"]),
            "granted dynamic system binary runs (loader reachable via /lib64)",
        );
        c.expect(
            !runs(&["/usr/bin/false"]),
            "non-granted binary must not exec",
        );
        let ld = ld.to_str().unwrap();
        c.expect(
            !runs(&[ld, "/usr/bin/false"]),
            "ld.so /usr/bin/false must fail (noexec /usr/bin)",
        );
        c.expect(
            !runs(&[ld, base.join("bin/other").to_str().unwrap()]),
            "ld.so on a non-granted binary must fail",
        );
        c.expect(
            runs(&[ld, mytrue.to_str().unwrap()]),
            "ld.so on a granted binary works (exec bind)",
        );
        let copied = base.join("rw/work/cp");
        c.expect(
            std::fs::copy("/usr/bin/true", &copied).is_ok(),
            "copy into the writable tree",
        );
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o755));
        c.expect(
            !runs(&[copied.to_str().unwrap()]),
            "copied binary must not exec",
        );
        c.expect(
            !runs(&[ld, copied.to_str().unwrap()]),
            "ld.so on the copied binary must fail (noexec)",
        );
        let script = base.join("rw/work/s.sh");
        let _ = std::fs::write(&script, "#!/bin/sh\nexit 0\n");
        let _ = std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755));
        c.expect(
            !runs(&[script.to_str().unwrap()]),
            "shebang script must not exec",
        );
        c.expect(
            !memfd_exec_runs(),
            "memfd exec still refused under Landlock",
        );
    });
    // The host is untouched.
    assert_eq!(
        std::fs::read_to_string(base.join("rw/.env")).unwrap(),
        "TOKEN=hunter2"
    );
    assert!(marker.path().exists());
}

#[test]
fn a_missing_parameter_fails_before_any_mount() {
    let (plan, _) = mounts::plan_from_rules(&policy(), &options());
    // Resolution happens before the first mount, so this is safe in the runner itself...
    // but stay in a child anyway: the rule is never to touch the runner's namespaces.
    in_child(|c| {
        let r = mounts::apply(&plan, &landlock::Params::new());
        c.expect(
            matches!(r, Err(mounts::MountError::Template(_))),
            format!("{r:?}"),
        );
        c.expect(Path::new("/proc/1").exists(), "nothing was mounted");
    });
}

/// Benchmark (not a pass/fail test): launch cost of the fs stages against bubblewrap.
/// `cargo test -p aegis-targets --release --test mounts_apply -- --ignored --nocapture bench`
#[test]
#[ignore]
fn bench_fs_stages_against_bwrap() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (_dir, base) = tree();
    let (plan, _) = mounts::plan_from_rules(&policy(), &options());
    let ll = landlock::lower_fs(&policy()).artifact;
    let p = params(&base);
    const N: u32 = 100;
    let (mut mounts_t, mut landlock_t, mut total) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..N {
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let start = Instant::now();
        // SAFETY: fork; the child sets up namespaces, forks, and the grandchild execs.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: our pipe's read end, unused in the child.
            unsafe { libc::close(fds[0]) };
            // SAFETY: plain flags; the forked child changes only its own namespaces.
            unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID) };
            let _ = std::fs::write("/proc/self/setgroups", "deny");
            let _ = std::fs::write("/proc/self/uid_map", "0 0 1");
            let _ = std::fs::write("/proc/self/gid_map", "0 0 1");
            // SAFETY: fork again so the grandchild is pid 1 of the new pid namespace.
            let pid2 = unsafe { libc::fork() };
            if pid2 == 0 {
                let t0 = Instant::now();
                let ok = mounts::apply(&plan, &p).is_ok();
                let t1 = Instant::now();
                let ok = ok && landlock::apply(&ll, &p, Mode::Required, InForce::EVERYTHING).is_ok();
                let t2 = Instant::now();
                let mut w =
                    // SAFETY: the pipe's write end, owned by this process alone from here.
                    unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
                let _ = write!(
                    w,
                    "{} {} {}",
                    ok,
                    (t1 - t0).as_nanos(),
                    (t2 - t1).as_nanos()
                );
                drop(w);
                let prog = std::ffi::CString::new("/usr/bin/true").unwrap();
                let argv = [prog.as_ptr(), std::ptr::null()];
                // SAFETY: a NUL-terminated path and a NULL-terminated argv.
                unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
                // SAFETY: leave the forked child without the harness's exit handlers.
                unsafe { libc::_exit(127) }
            }
            // SAFETY: our pipe's write end, unused here.
            unsafe { libc::close(fds[1]) };
            let mut st = 0;
            // SAFETY: our child, and a status int to write.
            unsafe { libc::waitpid(pid2, &mut st, 0) };
            // SAFETY: leave the forked child without the harness's exit handlers.
            unsafe {
                libc::_exit(if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    99
                })
            }
        }
        // SAFETY: our pipe's write end, unused in the parent.
        unsafe { libc::close(fds[1]) };
        let mut st = 0;
        // SAFETY: our child, and a status int to write.
        unsafe { libc::waitpid(pid, &mut st, 0) };
        total += start.elapsed();
        let mut out = String::new();
        // SAFETY: the pipe's read end, owned by nobody else.
        let mut r = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
        r.read_to_string(&mut out).unwrap();
        let v: Vec<&str> = out.split(' ').collect();
        assert_eq!(v[0], "true", "stages failed");
        assert_eq!(libc::WEXITSTATUS(st), 0);
        mounts_t += Duration::from_nanos(v[1].parse().unwrap());
        landlock_t += Duration::from_nanos(v[2].parse().unwrap());
    }
    eprintln!(
        "aegis fs stages, mean of {N}: mounts::apply {:?}, landlock::apply {:?}, whole launch of /usr/bin/true {:?}",
        mounts_t / N,
        landlock_t / N,
        total / N
    );
    if std::process::Command::new("bwrap")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: bwrap not installed, no comparison");
        return;
    }
    let b = base.to_str().unwrap();
    let args = [
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind",
        "/etc",
        "/etc",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--ro-bind",
        &format!("{b}/ro"),
        &format!("{b}/ro"),
        "--bind",
        &format!("{b}/rw"),
        &format!("{b}/rw"),
        "--ro-bind",
        "/dev/null",
        &format!("{b}/rw/.env"),
        "--tmpfs",
        &format!("{b}/rw/secret"),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/usr/bin/true",
    ];
    for (what, unshare) in [
        (
            "same namespaces as above (user, mount, pid)",
            &["--unshare-user", "--unshare-pid"][..],
        ),
        (
            "--unshare-all (adds net, ipc, uts, cgroup)",
            &["--unshare-all"][..],
        ),
    ] {
        let start = Instant::now();
        for _ in 0..N {
            let st = std::process::Command::new("bwrap")
                .args(unshare)
                .args(&args[1..])
                .status()
                .unwrap();
            assert!(st.success());
        }
        eprintln!(
            "bwrap, same layout, no Landlock, {what}, mean of {N}: {:?}",
            start.elapsed() / N
        );
    }
}
