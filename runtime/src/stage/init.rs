//! The agent's session and its init (issue 11.5): the child leaves the supervisor's session
//! and, when the user's terminal is in play, takes a pty the supervisor owns as its
//! controlling terminal ([`detach`], before the Landlock and seccomp stages); then, after
//! every layer is in place, it forks ([`run`]): the child execs the agent, the parent stays
//! behind as a tiny init, restricted by the same layers.
//!
//! Why an init: the agent used to be pid 1 of its pid namespace, and the kernel ignores a
//! signal pid 1 has no handler for, even from outside (so a forwarded SIGTERM or SIGINT did
//! nothing to `sleep`); and the wall-time limit depended on a supervisor that job control can
//! stop. The init (like `docker --init`, tini, bwrap's pid 1) forwards the supervisor's
//! signals to the agent, reaps every orphan, resumes the agent if Ctrl-Z in its pty stopped
//! it (nothing inside could resume it), enforces the wall time itself (a backstop one
//! second after the supervisor's own deadline: it holds while the supervisor is stopped), and
//! exits with the agent's status, which it also writes to the status pipe
//! ([`STATUS_LEN`] bytes: the agent's raw wait status, then [`FLAG_WALL_TIME`] if the init
//! killed it) so the supervisor reports the agent's real status (a signal stays a signal).
//!
//! Input: [`ChildTerm`] and [`ChildInit`], prepared by the supervisor before clone.
//! Invariants: the agent never holds the user's terminal (only the pty's slave, and only
//! when the supervisor made one); it runs in its own session, so nothing it does to its
//! terminal or process groups reaches the supervisor's; both processes after the fork make
//! raw system calls only; the init forwards only signals sent to it (not ones the pty's line
//! discipline sent to the whole foreground group, which reached the agent already); a
//! `kill(-1)` is only ever made by a pid 1, inside its own pid namespace.

use crate::stage::report::Fail;
use crate::stage::Stage;

pub const WHAT_SETSID: u32 = 1;
pub const WHAT_CTTY: u32 = 2;
pub const WHAT_DUP: u32 = 3;

/// Bytes the init writes to the status pipe: the agent's wait status, then flags.
pub const STATUS_LEN: usize = 8;
/// Flag: the init killed the agent at the wall-time limit (the supervisor had not).
pub const FLAG_WALL_TIME: u32 = 1;
/// The init's own deadline is this long after the supervisor's (a backstop, not a race).
pub const INIT_WALL_MARGIN_MS: u64 = 1000;

/// The terminal side of the child's plan.
pub struct ChildTerm {
    /// The pty's slave (opened `O_NOCTTY` by the supervisor), or -1: no terminal.
    pub slave: i32,
    /// Which of stdin, stdout, stderr were the user's terminal and become the slave.
    pub bind: [bool; 3],
}

impl ChildTerm {
    pub fn none() -> ChildTerm {
        ChildTerm { slave: -1, bind: [false; 3] }
    }
}

/// The init's side of the child's plan.
pub struct ChildInit {
    /// Write end of the status pipe (close-on-exec; the agent does not keep it).
    pub status_write: i32,
    /// Wall-time limit in milliseconds (0: none); the init's deadline is this plus
    /// [`INIT_WALL_MARGIN_MS`] from its start.
    pub wall_time_ms: u64,
}

/// Leaves the supervisor's session (so the agent can neither be signalled with it by the
/// user's terminal nor take that terminal: a new session has no controlling terminal) and,
/// with a pty, makes its slave the controlling terminal and the bound standard descriptors.
pub fn detach(t: &ChildTerm) -> Result<(), Fail> {
    // SAFETY: setsid has no arguments; the child is not a process group leader (its group
    // is the supervisor's), so it succeeds.
    if unsafe { libc::setsid() } < 0 {
        return Err(Fail::errno(Stage::Init, WHAT_SETSID));
    }
    if t.slave < 0 {
        return Ok(());
    }
    // SAFETY: ioctl on the slave we hold; argument 0 = do not steal it from another session
    // (nobody has it as a controlling terminal: the supervisor opened it O_NOCTTY).
    if unsafe { libc::ioctl(t.slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(Fail::errno(Stage::Init, WHAT_CTTY));
    }
    for (fd, bind) in t.bind.iter().enumerate() {
        // SAFETY: dup2 of a descriptor we hold onto a standard descriptor.
        if *bind && unsafe { libc::dup2(t.slave, fd as i32) } < 0 {
            return Err(Fail::errno(Stage::Init, WHAT_DUP));
        }
    }
    if t.slave > 2 {
        // SAFETY: closing our copy; the bound descriptors keep the terminal open.
        unsafe { libc::close(t.slave) };
    }
    Ok(())
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_SETSID => "leaving the supervisor's session (setsid)",
        WHAT_CTTY => "making the pty the agent's controlling terminal (TIOCSCTTY)",
        WHAT_DUP => "binding the pty to the agent's standard descriptors",
        _ => "init",
    }
}

fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Forks: the child calls `exec_agent` (which restores the signal mask, reports and execs,
/// returning only on failure); this process becomes the init and never returns. If the fork
/// is refused (a policy that denies it), the agent is exec'd here instead, as pid 1, as
/// before there was an init.
pub fn run(i: &ChildInit, report_write: i32, exec_agent: &dyn Fn() -> Fail) -> Fail {
    // SAFETY: fork in a single-threaded process (the child of clone); both sides make raw
    // system calls only.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return exec_agent();
    }
    if pid == 0 {
        // The agent dies with its init (outside a pid namespace nothing else would kill it).
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) };
        return exec_agent();
    }
    // The init: the report pipe is the agent's to close (at exec); keep no copy. Not
    // dumpable: the agent (same uid, no capability) cannot ptrace it or open its
    // descriptors, so it cannot make it write a forged status. Named for `ps`.
    // SAFETY: closing our copy of the report pipe; prctl with integer and static string
    // arguments (failures leave the defaults, which the other layers still contain).
    unsafe {
        libc::close(report_write);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"aegis-init".as_ptr(), 0, 0, 0);
    }
    supervise_agent(i, pid)
}

/// The init's loop. Signals the supervisor forwards, and SIGCHLD, stay blocked (as the
/// supervisor left them) and are taken with `sigtimedwait`.
fn supervise_agent(i: &ChildInit, agent: libc::pid_t) -> ! {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers; blocking what we wait for.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in crate::signals::FORWARDED.iter().chain([libc::SIGCHLD].iter()) {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let deadline = (i.wall_time_ms > 0).then(|| now_ms().saturating_add(i.wall_time_ms).saturating_add(INIT_WALL_MARGIN_MS));
    let mut flags = 0u32;
    loop {
        // Reap everything that has ended; note the agent's end, resume it if stopped.
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG | libc::WUNTRACED) };
            if r <= 0 {
                break;
            }
            if r != agent {
                continue;
            }
            if libc::WIFSTOPPED(status) {
                // Ctrl-Z in its pty: nothing inside could continue it (there is no shell to
                // `fg` it). A stop for touching the terminal from the background (SIGTTIN,
                // SIGTTOU) is left alone: resuming would repeat it forever.
                if libc::WSTOPSIG(status) == libc::SIGTSTP {
                    // SAFETY: kill(2) on our own child.
                    unsafe { libc::kill(agent, libc::SIGCONT) };
                }
                continue;
            }
            finish(i, status, flags);
        }
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_sub(now_ms());
                if left == 0 {
                    flags |= FLAG_WALL_TIME;
                    kill_all(agent);
                    1000
                } else {
                    left
                }
            }
            None => 60_000,
        };
        let ts = libc::timespec { tv_sec: (timeout / 1000) as libc::time_t, tv_nsec: ((timeout % 1000) * 1_000_000) as libc::c_long };
        // SAFETY: siginfo_t is plain data written by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waiting on a set we blocked, with valid pointers.
        let sig = unsafe { libc::sigtimedwait(&set, &mut info, &ts) };
        if sig > 0 && sig != libc::SIGCHLD && info.si_code != libc::SI_KERNEL {
            // Sent by the supervisor (from outside: no sender pid here). The line
            // discipline's own signals (SI_KERNEL) reached the agent's group already.
            // A stopped agent is continued, so that it gets the signal now.
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(agent, sig);
                libc::kill(agent, libc::SIGCONT);
            }
        }
    }
}

/// Kills the agent and everything with it: in our own pid namespace every process but us.
fn kill_all(agent: libc::pid_t) {
    // SAFETY: getpid has no preconditions; kill(2) with constant signals.
    unsafe {
        if libc::getpid() == 1 {
            libc::kill(-1, libc::SIGKILL);
        } else {
            libc::kill(agent, libc::SIGKILL);
        }
    }
}

/// Writes the agent's status for the supervisor and exits with it (128 + signal when it was
/// killed: pid 1 cannot die of a signal it sends itself).
fn finish(i: &ChildInit, status: libc::c_int, flags: u32) -> ! {
    let mut msg = [0u8; STATUS_LEN];
    for (d, s) in msg.iter_mut().zip(status.to_ne_bytes().iter().chain(flags.to_ne_bytes().iter())) {
        *d = *s;
    }
    // SAFETY: writing our stack buffer to the status pipe; then leaving without running
    // anything of the supervisor's (no destructors, no atexit).
    unsafe {
        libc::write(i.status_write, msg.as_ptr().cast(), STATUS_LEN);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            crate::exit::EXIT_INTERNAL
        };
        libc::_exit(code)
    }
}

/// Reads the init's message from the status pipe (non-blocking): the agent's wait status
/// and flags, or `None` if the init wrote none (the fork was refused and the agent was pid
/// 1 itself, or the init was killed).
pub fn read_status(fd: i32) -> Option<(libc::c_int, u32)> {
    let mut msg = [0u8; STATUS_LEN];
    // SAFETY: reading into our stack buffer from our pipe's read end.
    let n = unsafe { libc::read(fd, msg.as_mut_ptr().cast(), STATUS_LEN) };
    if n != STATUS_LEN as isize {
        return None;
    }
    let (s, f) = msg.split_at(4);
    let status = libc::c_int::from_ne_bytes(s.try_into().ok()?);
    let flags = u32::from_ne_bytes(f.try_into().ok()?);
    Some((status, flags))
}

/// For the report: which standard descriptors a report's `bind` bits name.
pub fn bound_names(bind: [bool; 3]) -> String {
    let names: Vec<&str> = ["stdin", "stdout", "stderr"].iter().zip(bind).filter(|(_, b)| *b).map(|(n, _)| *n).collect();
    names.join(", ")
}
