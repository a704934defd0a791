//! The user's terminal, kept from the agent (issue 11.5). Input: the supervisor's standard
//! descriptors and `--terminal-filter`. Output: when any of stdin, stdout, stderr is a
//! terminal, a pty the supervisor owns ([`Terminal::open`]): its slave replaces those
//! descriptors in the agent (which makes it its controlling terminal in a session of its own,
//! [`crate::stage::init`]); the supervisor relays between the user's terminal and the pty's
//! master from a thread ([`Relay`]), like `docker run -t` and `ssh -t`.
//!
//! Invariants:
//! - The agent never holds a descriptor of the user's terminal, so it cannot become its
//!   foreground process group, read its input behind the supervisor's back, or change its
//!   modes; whatever it does to its pty (echo off, raw mode, job control) stays there.
//! - The user's terminal is put in raw mode only when the supervisor is its foreground job
//!   and stdin is that terminal; its modes are restored by [`Relay`]'s `Drop` on every path the
//!   supervisor survives (normal end, errors, SIGTERM and the other signals it reads through
//!   its signalfd, panics, which unwind); the terminal modes the agent left set (alternate
//!   screen, hidden cursor, mouse reporting, …) are undone ([`filter::OutputFilter::finish`]).
//! - Input keys go to the agent's pty: Ctrl-C and Ctrl-Z act on the agent's foreground job
//!   inside (its init resumes a stopped agent), never on the supervisor; Ctrl-C three times
//!   within two seconds ends the run whatever the agent does with its terminal (the
//!   supervisor treats it as a SIGTERM: forwarded, then SIGKILL after the grace period).
//! - The window size follows the user's terminal (SIGWINCH, read by the relay's own signalfd).
//! - Output to a terminal goes through [`filter`] (`--terminal-filter safe`, the default).

pub mod filter;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::exit::RunError;
use crate::stage::init::ChildTerm;
pub use filter::Filter;

/// Parses `--terminal-filter`.
pub fn parse_filter(s: &str) -> Result<Filter, String> {
    match s {
        "safe" => Ok(Filter::Safe),
        "off" => Ok(Filter::Off),
        _ => Err(format!("--terminal-filter {s}: expected `safe` (the default) or `off`")),
    }
}

fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty on a descriptor number; no memory is passed.
    unsafe { libc::isatty(fd) == 1 }
}

fn os(what: &'static str) -> RunError {
    RunError::os(what)
}

/// A pty made for the agent, before the relay starts.
pub struct Terminal {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    /// Which standard descriptors are the user's terminal (and become the slave).
    bind: [bool; 3],
    filter: Filter,
}

impl Terminal {
    /// A pty when stdin, stdout or stderr is a terminal; `None` otherwise. The slave starts
    /// with the user's terminal's modes and window size.
    pub fn open(filter: Filter) -> Result<Option<Terminal>, RunError> {
        let bind = [is_tty(0), is_tty(1), is_tty(2)];
        let Some(user) = bind.iter().position(|b| *b) else {
            return Ok(None);
        };
        // SAFETY: posix_openpt with constant flags returns a new descriptor or -1.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if m < 0 {
            return Err(os("opening a pty for the agent (posix_openpt)"));
        }
        // SAFETY: a new descriptor we own.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: grantpt/unlockpt on our master; ptsname_r writes a NUL-terminated name into
        // our buffer of the given length.
        unsafe {
            if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
                return Err(os("unlocking the agent's pty"));
            }
            if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
                return Err(os("naming the agent's pty"));
            }
        }
        // SAFETY: open(2) of the NUL-terminated name ptsname_r wrote.
        let s = unsafe { libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if s < 0 {
            return Err(os("opening the agent's pty"));
        }
        // SAFETY: a new descriptor we own.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        let user = user as RawFd;
        // SAFETY: termios and winsize are plain data the kernel fills in; the ioctls act on
        // descriptors we hold.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(user, &mut t) == 0 {
                libc::tcsetattr(s, libc::TCSANOW, &t);
            }
            let mut ws: libc::winsize = std::mem::zeroed();
            if libc::ioctl(user, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(m, libc::TIOCSWINSZ, &ws);
            }
        }
        Ok(Some(Terminal { master, slave: Some(slave), bind, filter }))
    }

    /// The child's side: the slave and the descriptors it replaces.
    pub fn child(&self) -> ChildTerm {
        ChildTerm {
            slave: self.slave.as_ref().map_or(-1, AsRawFd::as_raw_fd),
            bind: self.bind,
        }
    }

    /// For the enforcement report.
    pub fn describe(&self) -> String {
        format!(
            "the agent's {} is a pty the supervisor relays (its controlling terminal, in a session of its own); output filter {}",
            crate::stage::init::bound_names(self.bind),
            match self.filter {
                Filter::Safe => "safe (OSC/DCS/APC, window operations, C1 controls dropped; lines like aegis-exec's marked)",
                Filter::Off => "off",
            }
        )
    }

    /// Starts relaying (after the agent is running; the supervisor's copy of the slave is
    /// closed, so the master reads EIO once every process of the agent has let go of it).
    pub fn start(mut self) -> Result<Relay, RunError> {
        self.slave = None;
        // SAFETY: eventfd with constant flags returns a new descriptor or -1.
        let e = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if e < 0 {
            return Err(os("eventfd for the terminal relay"));
        }
        // SAFETY: a new descriptor we own.
        let stop = unsafe { OwnedFd::from_raw_fd(e) };
        let winch = winch_fd()?;
        let input = self.bind[0] && foreground();
        let saved = if input { raw_mode(0) } else { None };
        let out_fd: RawFd = if self.bind[1] { 1 } else { 2 };
        let user_tty: RawFd = self.bind.iter().position(|b| *b).unwrap_or(0) as RawFd;
        let stop_w = stop.try_clone().map_err(|e| RunError::internal("eventfd for the terminal relay", e))?;
        let filter = self.filter;
        let master = self.master;
        let thread = std::thread::Builder::new()
            .name("aegis-tty".into())
            .spawn(move || relay(master, input, out_fd, user_tty, stop, winch, filter))
            .map_err(|e| RunError::internal("starting the terminal relay", e))?;
        if saved.is_some() {
            RAW.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Relay { thread: Some(thread), stop: stop_w, saved })
    }
}

/// True while the user's terminal is raw: the supervisor's own messages then need `\r\n`.
static RAW: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints one of the supervisor's messages on stderr, readable also while the user's
/// terminal is in raw mode.
pub fn note(msg: &str) {
    if RAW.load(std::sync::atomic::Ordering::Relaxed) {
        eprint!("aegis-exec: {msg}\r\n");
    } else {
        eprintln!("aegis-exec: {msg}");
    }
}

/// Whether this process is the foreground job of its controlling terminal on stdin.
fn foreground() -> bool {
    // SAFETY: tcgetpgrp/getpgrp on our own stdin and process.
    unsafe { libc::tcgetpgrp(0) == libc::getpgrp() }
}

/// Puts `fd`'s terminal in raw mode; returns the modes to restore.
fn raw_mode(fd: RawFd) -> Option<(RawFd, libc::termios)> {
    // SAFETY: termios is plain data; tcgetattr/tcsetattr on our descriptor.
    unsafe {
        let mut saved: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut saved) != 0 {
            return None;
        }
        let mut raw = saved;
        libc::cfmakeraw(&mut raw);
        (libc::tcsetattr(fd, libc::TCSAFLUSH, &raw) == 0).then_some((fd, saved))
    }
}

/// A signalfd for SIGWINCH (blocked in every thread by [`crate::signals::Signals::block`];
/// only the relay reads it).
fn winch_fd() -> Result<OwnedFd, RunError> {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; signalfd returns a new fd.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(os("signalfd for window size changes"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: writing from our buffer to a descriptor we hold.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 {
            return false;
        }
        buf = buf.get(n as usize..).unwrap_or_default();
    }
    true
}

const CTRL_C: u8 = 0x03;
/// Ctrl-C this many times within [`CTRL_C_WINDOW`] ends the run.
const CTRL_C_TIMES: usize = 3;
const CTRL_C_WINDOW: Duration = Duration::from_secs(2);
/// A held line start is shown after the output paused this long.
const STALL_MS: i32 = 100;
/// After the agent is gone: how long its last output may take to drain.
const DRAIN: Duration = Duration::from_secs(1);

/// The relay thread: user's input → master; master → filter → user's terminal.
fn relay(master: OwnedFd, mut input: bool, out_fd: RawFd, user_tty: RawFd, stop: OwnedFd, winch: OwnedFd, filter: Filter) {
    let m = master.as_raw_fd();
    // Non-blocking: keys the agent does not read yet wait here (and stdin is not read
    // meanwhile), so its output keeps flowing: a blocked write of input must never stop the
    // relay of output (the agent could be blocked writing it).
    // SAFETY: fcntl on the master we own.
    unsafe { libc::fcntl(m, libc::F_SETFL, libc::fcntl(m, libc::F_GETFL) | libc::O_NONBLOCK) };
    let mut keys: Vec<u8> = Vec::new();
    let mut f = filter::OutputFilter::new(filter);
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(32 * 1024);
    let mut ctrl_c: Vec<Instant> = Vec::new();
    let mut ended = false;
    let mut drain_until: Option<Instant> = None;
    let mut output_ok = true;
    loop {
        let timeout = match drain_until {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(1000) as i32,
            // A held line start is shown after a short pause (see `OutputFilter::stalled`).
            None if f.holding() => STALL_MS,
            None => -1,
        };
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut fds = [
            libc::pollfd { fd: m, events: libc::POLLIN | if keys.is_empty() { 0 } else { libc::POLLOUT }, revents: 0 },
            libc::pollfd { fd: if input && keys.is_empty() { 0 } else { -1 }, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: winch.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on pollfd structs we own (a negative fd is ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        if n == 0 && f.holding() {
            out.clear();
            f.stalled(&mut out);
            output_ok = output_ok && write_all(out_fd, &out);
        }
        let [pm, pin, pstop, pwinch] = fds;
        if pm.revents & libc::POLLOUT != 0 && !keys.is_empty() {
            // SAFETY: writing from our buffer to the master we hold.
            let w = unsafe { libc::write(m, keys.as_ptr().cast(), keys.len()) };
            if w > 0 {
                keys.drain(..w as usize);
            }
        }
        if pm.revents & !libc::POLLOUT != 0 {
            // SAFETY: reading into our buffer from the master we hold.
            let r = unsafe { libc::read(m, buf.as_mut_ptr().cast(), buf.len()) };
            if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                // Nothing after all (a spurious wake-up).
            } else if r <= 0 {
                // EIO: no process holds the slave any more; the agent is gone.
                ended = true;
            } else {
                out.clear();
                f.feed(buf.get(..r as usize).unwrap_or_default(), &mut out);
                output_ok = output_ok && write_all(out_fd, &out);
            }
        }
        if pin.revents != 0 {
            // SAFETY: reading into our buffer from stdin.
            let r = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                input = false;
            } else {
                let chunk = buf.get(..r as usize).unwrap_or_default();
                let now = Instant::now();
                for _ in chunk.iter().filter(|b| **b == CTRL_C) {
                    ctrl_c.push(now);
                }
                ctrl_c.retain(|t| now.duration_since(*t) < CTRL_C_WINDOW);
                if ctrl_c.len() >= CTRL_C_TIMES {
                    ctrl_c.clear();
                    note("Ctrl-C three times: ending the run");
                    // The supervisor's own SIGTERM path: forwarded, then SIGKILL after the grace.
                    // SAFETY: kill(2) on our own process.
                    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                }
                keys.extend_from_slice(chunk);
            }
        }
        if pwinch.revents != 0 {
            // SAFETY: signalfd_siginfo and winsize are plain data; reads and ioctls on our fds.
            unsafe {
                let mut info: libc::signalfd_siginfo = std::mem::zeroed();
                while libc::read(winch.as_raw_fd(), (&mut info as *mut libc::signalfd_siginfo).cast(), std::mem::size_of::<libc::signalfd_siginfo>()) > 0 {}
                let mut ws: libc::winsize = std::mem::zeroed();
                if libc::ioctl(user_tty, libc::TIOCGWINSZ, &mut ws) == 0 {
                    libc::ioctl(m, libc::TIOCSWINSZ, &ws);
                }
            }
        }
        if pstop.revents != 0 && drain_until.is_none() {
            drain_until = Some(Instant::now() + DRAIN);
            input = false;
        }
        if ended {
            break;
        }
    }
    out.clear();
    f.finish(&mut out);
    if output_ok {
        let _ = write_all(out_fd, &out);
    }
}

/// The running relay. Dropping it (or [`Relay::finish`]) stops it and restores the user's
/// terminal.
pub struct Relay {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: OwnedFd,
    saved: Option<(RawFd, libc::termios)>,
}

impl Relay {
    /// After the agent has been reaped: lets its last output through (at most a second),
    /// undoes the modes it left set and restores the user's terminal.
    pub fn finish(mut self) {
        self.stop_and_restore();
    }

    fn stop_and_restore(&mut self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some((fd, t)) = self.saved.take() {
            // SAFETY: restoring the modes saved from this descriptor's terminal.
            unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &t) };
            RAW.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop_and_restore();
    }
}
