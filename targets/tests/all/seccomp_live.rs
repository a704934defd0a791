//! Live tests: install real filters in a forked child (never in the test runner) and check
//! what the kernel does: allowed calls work, denials return the right errno, unknown
//! numbers / clone3 / x32 get ENOSYS, int 0x80 is killed, every thread is covered (TSYNC),
//! and a real program runs under the AEGIS default filter.

use aegis_targets::seccomp::apply::{Mode, status_of};
use aegis_targets::seccomp::hardening::{Hardening, aegis_default};
use aegis_targets::seccomp::*;


/// Run `f` in a forked child; its return value is the child's exit code. Returns the exit
/// code, or 128 + signal if the child was killed.
fn in_child(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork in a test; the child only runs `f` and `_exit`s, never returning into the
    // harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = f();
        // SAFETY: terminate the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `syscall(nr, args...)` → Ok(ret) or Err(errno).
fn sys(nr: i64, a: [u64; 6]) -> Result<i64, i32> {
    // SAFETY: raw syscalls with integer arguments (or NULL pointers) in a disposable child.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

fn hardened_program() -> Vec<SockFilter> {
    let spec = aegis_default(&Hardening::default());
    compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap()
}

fn x86_64_only() -> bool {
    if Arch::native() != Some(Arch::X86_64) {
        eprintln!("SKIP: live seccomp tests need an x86_64 host");
        return false;
    }
    true
}

/// Each check is numbered; the child exits with the number of the first that fails.
#[test]
fn hardened_filter_outcomes_in_a_real_process() {
    if !x86_64_only() {
        return;
    }
    let prog = hardened_program();
    let code = in_child(|| {
        let before = status_of("/proc/self/status").unwrap();
        let pid = sys(libc::SYS_getpid, [0; 6]);
        if apply(&prog, ApplyOptions::default()).is_err() {
            return 1;
        }
        let after = current_mode().unwrap();
        if after.mode != Mode::Filter || after.filters != before.filters.map(|n| n + 1) {
            return 2;
        }
        if sys(libc::SYS_getpid, [0; 6]) != pid || sys(libc::SYS_getppid, [0; 6]).is_err() {
            return 3;
        }
        // Policy denials: EPERM (as root, the kernel itself would allow these).
        if sys(
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
        ) != Err(libc::EPERM)
        {
            return 4;
        }
        if sys(
            libc::SYS_socket,
            [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
        ) != Err(libc::EPERM)
        {
            return 5;
        }
        match sys(
            libc::SYS_socket,
            [libc::AF_UNIX as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
        ) {
            // SAFETY: closing the socket we just created.
            Ok(fd) => unsafe {
                libc::close(fd as i32);
            },
            Err(_) => return 6,
        }
        // io_uring_setup(1, NULL): the kernel would say EFAULT; the filter says EPERM first.
        if sys(libc::SYS_io_uring_setup, [1, 0, 0, 0, 0, 0]) != Err(libc::EPERM) {
            return 7;
        }
        // clone3 exists on this kernel (it would say EFAULT/EINVAL): ENOSYS means the filter.
        if sys(libc::SYS_clone3, [0, 0, 0, 0, 0, 0]) != Err(libc::ENOSYS) {
            return 8;
        }
        // Unknown and future numbers, x32 getpid, -1.
        for nr in [1000i64, 470, 0x4000_0000 | 39, 0xffff_ffff] {
            if sys(nr, [0; 6]) != Err(libc::ENOSYS) {
                return 9;
            }
        }
        if sys(libc::SYS_bpf, [0; 6]) != Err(libc::EPERM)
            || sys(libc::SYS_ptrace, [0; 6]) != Err(libc::EPERM)
        {
            return 10;
        }
        // TIOCSTI with upper-half garbage is still caught.
        if sys(libc::SYS_ioctl, [0, 0xdead_0000_0000_5412, 0, 0, 0, 0]) != Err(libc::EPERM) {
            return 11;
        }
        if sys(libc::SYS_mount, [0; 6]) != Err(libc::EPERM) {
            return 12;
        }
        0
    });
    assert_eq!(code, 0, "check {code} failed in the filtered child");
}

#[test]
fn every_thread_is_covered_with_tsync() {
    if !x86_64_only() {
        return;
    }
    let prog = hardened_program();
    let code = in_child(|| {
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (res_tx, res_rx) = std::sync::mpsc::channel::<Result<i64, i32>>();
        // A thread that exists before the filter is installed.
        let t = std::thread::spawn(move || {
            let tid = sys(libc::SYS_gettid, [0; 6]).unwrap_or(-1);
            res_tx.send(Ok(tid)).ok();
            go_rx.recv().ok();
            res_tx
                .send(sys(
                    libc::SYS_unshare,
                    [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0],
                ))
                .ok();
        });
        let tid = match res_rx.recv() {
            Ok(Ok(t)) => t,
            _ => return 1,
        };
        if apply(&prog, ApplyOptions::default()).is_err() {
            return 2;
        }
        let st = status_of(&format!("/proc/self/task/{tid}/status")).unwrap();
        if st.mode != Mode::Filter {
            return 3;
        }
        go_tx.send(()).ok();
        let r = res_rx.recv();
        t.join().ok();
        if r != Ok(Err(libc::EPERM)) {
            return 4;
        }
        0
    });
    assert_eq!(code, 0, "check {code} failed in the filtered child");
}

#[test]
fn i386_entry_kills_the_process() {
    if !x86_64_only() {
        return;
    }
    // First, without a filter: does this kernel have IA32 emulation at all?
    #[cfg(target_arch = "x86_64")]
    fn int80_getpid() -> i64 {
        let mut ret: i64 = 20; // __NR_getpid on i386
        // SAFETY: the i386 getpid syscall via int 0x80 touches no memory.
        unsafe { std::arch::asm!("int 0x80", inout("rax") ret, options(nostack)) };
        ret
    }
    #[cfg(not(target_arch = "x86_64"))]
    fn int80_getpid() -> i64 {
        -1
    }
    let plain = in_child(|| if int80_getpid() > 0 { 0 } else { 1 });
    if plain != 0 {
        eprintln!(
            "SKIP: int 0x80 does not work here without a filter (no IA32 emulation: {plain})"
        );
        return;
    }
    let prog = hardened_program();
    let code = in_child(|| {
        if apply(&prog, ApplyOptions::default()).is_err() {
            return 1;
        }
        int80_getpid();
        2
    });
    assert_eq!(
        code,
        128 + libc::SIGSYS,
        "int 0x80 under the filter must be killed by SIGSYS"
    );
}

#[test]
fn a_real_program_runs_under_the_default_filter() {
    if !x86_64_only() {
        return;
    }
    let prog = hardened_program();
    let sh = std::ffi::CString::new("/bin/sh").unwrap();
    let script = std::ffi::CString::new(
        "cat /proc/self/status | grep -q '^Seccomp:.2' && ls / >/dev/null && echo ok | tr o O | grep -q Ok",
    )
    .unwrap();
    let dash_c = std::ffi::CString::new("-c").unwrap();
    let code = in_child(|| {
        if apply(&prog, ApplyOptions::default()).is_err() {
            return 100;
        }
        let argv = [
            sh.as_ptr(),
            dash_c.as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        // SAFETY: argv is a NULL-terminated array of C strings that outlive the call.
        unsafe { libc::execv(sh.as_ptr(), argv.as_ptr()) };
        101
    });
    assert_eq!(code, 0, "sh pipeline under the AEGIS default filter");
}

#[test]
fn log_flag_and_bad_programs() {
    if !x86_64_only() {
        return;
    }
    let prog = hardened_program();
    let code = in_child(|| match apply(&prog, ApplyOptions { log: true }) {
        Ok(()) if sys(libc::SYS_keyctl, [0; 6]) == Err(libc::EPERM) => 0,
        _ => 1,
    });
    assert_eq!(code, 0);
    // An empty program is refused before any syscall.
    assert!(matches!(
        apply(&[], ApplyOptions::default()),
        Err(ApplyError::BadLength { len: 0 })
    ));
    // A program the kernel rejects (jump out of range) is a typed error, in a child.
    let bad = vec![
        SockFilter::jump(0x15, 0, 5, 5),
        SockFilter::ret(0x7fff_0000),
    ];
    let code = in_child(|| match apply(&bad, ApplyOptions::default()) {
        Err(ApplyError::Install { errno }) if errno == libc::EINVAL => 0,
        _ => 1,
    });
    assert_eq!(code, 0);
}

/// ExecGate::Notify end to end: a filtered process's execve goes to a supervisor (another
/// process holding the listener), which lets the first exec through and denies later ones.
#[test]
fn exec_gate_notify_allows_the_initial_exec_only() {
    use aegis_targets::seccomp::hardening::ExecGate;
    if !x86_64_only() {
        return;
    }
    let spec = aegis_default(&Hardening {
        exec: ExecGate::Notify,
        ..Hardening::default()
    });
    let prog = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    let sh = std::ffi::CString::new("/bin/sh").unwrap();
    let dash_c = std::ffi::CString::new("-c").unwrap();
    let script = std::ffi::CString::new("/bin/true && exit 0 || exit 7").unwrap();
    let code = in_child(|| {
        let mut fds = [0i32; 2];
        // SAFETY: a pipe into a local array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return 1;
        }
        // SAFETY: fork in the (single-threaded) test child.
        let agent = unsafe { libc::fork() };
        if agent == 0 {
            let Ok(listener) = apply_with_listener(&prog, ApplyOptions::default()) else {
                // SAFETY: leaving the grandchild.
                unsafe { libc::_exit(90) };
            };
            let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
            let argv = [
                sh.as_ptr(),
                dash_c.as_ptr(),
                script.as_ptr(),
                std::ptr::null(),
            ];
            // SAFETY: report the listener's number, then exec (blocks until the supervisor
            // answers); argv is NULL-terminated and outlives the call.
            unsafe {
                libc::write(fds[1], (&fd as *const i32).cast(), 4);
                libc::execv(sh.as_ptr(), argv.as_ptr());
                libc::_exit(91);
            }
        }
        // Supervisor: copy the agent's listener with pidfd_getfd.
        let mut remote = 0i32;
        // SAFETY: reading 4 bytes into a local.
        if unsafe { libc::read(fds[0], (&mut remote as *mut i32).cast(), 4) } != 4 {
            return 2;
        }
        let Ok(pidfd) = sys(libc::SYS_pidfd_open, [agent as u64, 0, 0, 0, 0, 0]) else {
            return 3;
        };
        let Ok(listener) = sys(
            libc::SYS_pidfd_getfd,
            [pidfd as u64, remote as u64, 0, 0, 0, 0],
        ) else {
            return 4;
        };
        let mut answered = 0;
        let mut status = 0;
        loop {
            let mut pfd = libc::pollfd {
                fd: listener as i32,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polling one fd we own.
            let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
            if ready > 0 && pfd.revents & libc::POLLIN != 0 {
                // SAFETY: seccomp_notif is plain data; the kernel fills it.
                let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
                // SAFETY: RECV into our struct.
                if unsafe { libc::ioctl(listener as i32, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) }
                    != 0
                {
                    continue;
                }
                let nr = req.data.nr as i64;
                let mut resp = libc::seccomp_notif_resp {
                    id: req.id,
                    val: 0,
                    error: 0,
                    flags: 0,
                };
                if answered == 0 && nr == libc::SYS_execve {
                    resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32;
                } else {
                    resp.error = -libc::EPERM;
                }
                answered += 1;
                // SAFETY: SEND our response.
                unsafe { libc::ioctl(listener as i32, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
            }
            // SAFETY: non-blocking check on our own child.
            if unsafe { libc::waitpid(agent, &mut status, libc::WNOHANG) } == agent {
                break;
            }
        }
        if answered < 2 {
            return 5;
        }
        if !libc::WIFEXITED(status) {
            return 6;
        }
        // 7: sh ran (first exec continued) and its exec of /bin/true was refused.
        libc::WEXITSTATUS(status)
    });
    assert_eq!(
        code, 7,
        "expected sh to run and /bin/true to be refused (exit 7), got {code}"
    );
}

/// The kernel's own checker accepts a program that needs long-jump trampolines, and the
/// verdicts hold through them.
#[test]
fn kernel_accepts_programs_with_trampolines() {
    if !x86_64_only() {
        return;
    }
    let mut spec = crate::seccomp_support::spec_needing_trampolines();
    for name in ["exit_group", "getpid"] {
        spec.set(name, vec![Rule::always(Action::Allow)]);
    }
    let prog = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    assert!(prog.len() > 1000 && prog.iter().any(|i| i.code == 0x05));
    let gettid = Arch::X86_64.nr("gettid").unwrap();
    let want = decide(
        &spec,
        Arch::X86_64,
        &SeccompData::new(Arch::X86_64, gettid, [1 << 41, 0, 0, 0, 0, 0]),
    );
    let code = in_child(|| {
        if apply(&prog, ApplyOptions::default()).is_err() {
            return 1;
        }
        if sys(libc::SYS_getpid, [0; 6]).is_err() {
            return 2;
        }
        let got = match sys(libc::SYS_gettid, [1 << 41, 0, 0, 0, 0, 0]) {
            Ok(_) => Action::Allow,
            Err(e) => Action::Errno(e as u16),
        };
        if got != want {
            return 3;
        }
        0
    });
    assert_eq!(code, 0, "check {code} failed");
}

/// A filter for the other architecture kills the process at its very next syscall: the
/// architecture check comes first.
#[test]
fn a_filter_for_another_architecture_kills_at_the_first_syscall() {
    if !x86_64_only() {
        return;
    }
    let spec = aegis_default(&Hardening::default());
    let prog = compile(&spec, Arch::Aarch64, &SyscallWeights::agent_mix()).unwrap();
    let code = in_child(|| {
        if apply(&prog, ApplyOptions::default()).is_err() {
            return 1;
        }
        let _ = sys(libc::SYS_getpid, [0; 6]);
        2
    });
    assert_eq!(code, 128 + libc::SIGSYS);
}
