//! The agent never owns the user's terminal (issue 11.5), through a pty harness: the test
//! makes a pty of its own, starts `aegis-exec` as the session leader with that pty as its
//! controlling terminal and stdio (the "user's terminal"), and types into its master, as a
//! user at a terminal would. Asserted: the agent cannot become the terminal's foreground
//! group; Ctrl-C reaches the agent and three Ctrl-C end any run; Ctrl-Z and a stopped
//! supervisor do not let the agent outlive its wall time; the terminal's modes are restored
//! after an agent that turned echo off; clipboard (OSC 52), title and forged `aegis-exec`
//! lines do not reach the terminal with the filter on (and do with it off: the control);
//! and, without a terminal, a SIGTERM to the supervisor ends an agent that has no handler
//! (its init forwards it; pid 1 itself would ignore it). Policy: `tests/fixtures/e2e/tty.toml`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aegis_tests::bin;

use crate::launch::{Lab, audit_events, fixture, sandbox_ready};

/// The user's terminal: a pty whose slave is `aegis-exec`'s controlling terminal and stdio.
struct Terminal {
    master: std::fs::File,
    slave: std::fs::File,
    /// Everything `aegis-exec` wrote to the terminal so far.
    seen: Arc<Mutex<Vec<u8>>>,
    child: Child,
    log: PathBuf,
}

fn openpty() -> (std::fs::File, std::fs::File) {
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on the new master; open of the name.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(s >= 0);
        let ws = libc::winsize { ws_row: 30, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
        libc::ioctl(m, libc::TIOCSWINSZ, &ws);
        (std::fs::File::from_raw_fd(m), std::fs::File::from_raw_fd(s))
    }
}

fn termios(f: &std::fs::File) -> libc::termios {
    // SAFETY: termios is plain data written by tcgetattr on our descriptor.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(f.as_raw_fd(), &mut t), 0);
        t
    }
}

impl Terminal {
    /// `aegis-exec [flags] BUNDLE -- python3 -c SCRIPT` on a fresh terminal.
    fn run(lab: &Lab, bundle: &std::path::Path, flags: &[&str], script: &str) -> Terminal {
        let (master, slave) = openpty();
        let log = lab.path(&format!("tty-{}.log", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()));
        let mut c = Command::new(bin("aegis-exec"));
        c.env("AEGIS_STATE_DIR", &lab.state)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("TERM", "xterm")
            .arg("--trust-key")
            .arg(&lab.public)
            .arg("--audit-log")
            .arg(&log)
            .args(flags)
            .arg(bundle)
            .args(["--", "/usr/bin/python3", "-c", script])
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe; the child gets the pty as its
        // controlling terminal, as a login shell's job would.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c.spawn().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut r, s2) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Terminal { master, slave, seen, child, log }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, what: &str) {
        let t = Instant::now();
        while !self.text().contains(what) {
            if t.elapsed() > Duration::from_secs(30) {
                let text = self.text();
                let tail: String = text.chars().rev().take(400).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("never saw {what:?} on the terminal ({} bytes), which ends in: {tail:?}", text.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Waits for `aegis-exec` to end; its exit code.
    fn wait(&mut self, limit: Duration) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                use std::os::unix::process::ExitStatusExt as _;
                // Let the reader catch the last output.
                std::thread::sleep(Duration::from_millis(100));
                return s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
            }
            assert!(t.elapsed() < limit, "aegis-exec still running after {limit:?}: {:?}", self.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The foreground process group of the user's terminal.
    fn foreground(&self) -> i32 {
        let mut pgrp: libc::pid_t = 0;
        // SAFETY: TIOCGPGRP writes a pid_t into our variable.
        assert_eq!(unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCGPGRP, &mut pgrp) }, 0);
        pgrp
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup() -> Option<(Lab, PathBuf)> {
    if !sandbox_ready() {
        return None;
    }
    let lab = Lab::new();
    let bundle = lab.build(&fixture("tty.toml"), "bundle");
    Some((lab, bundle))
}

/// Fields 5 (pgrp), 6 (session) and 7 (tty_nr) of /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(i32, i32, u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?, f.get(4)?.parse().ok()?, f.first()?.chars().next()?))
}

/// The host pid of the agent: the python3 process whose command line holds `marker`
/// (aegis-exec's own command line holds it too).
fn find_process(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).find(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "python3")
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

const TRY_TO_TAKE_THE_TERMINAL: &str = r#"
import json, os, signal, sys, time
signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # as a shell does before tcsetpgrp
r = {}
for name, f in (("setpgid", lambda: os.setpgid(0, 0)), ("tcsetpgrp", lambda: os.tcsetpgrp(0, os.getpgrp())),
                ("open_dev_tty", lambda: os.close(os.open("/dev/tty", os.O_RDWR)))):
    try:
        f(); r[name] = "ok"
    except OSError as e:
        r[name] = "ERR %d" % e.errno
print("AGENT " + json.dumps(r), flush=True)
time.sleep(2)  # marker: take-the-terminal
"#;

/// The agent does everything a process can to take its terminal; what it gets is its own
/// pty. The user's terminal keeps aegis-exec's group in the foreground, and the agent is in
/// another session whose controlling terminal is not the user's.
#[test]
fn the_agent_cannot_become_the_foreground_of_the_users_terminal() {
    let Some((lab, bundle)) = setup() else { return };
    let mut t = Terminal::run(&lab, &bundle, &[], TRY_TO_TAKE_THE_TERMINAL);
    t.wait_for("AGENT ");
    let supervisor = t.child.id() as i32;
    assert_eq!(t.foreground(), supervisor, "the user's terminal's foreground group is aegis-exec's");
    let agent = find_process("marker: take-the-terminal").expect("the agent runs");
    let (_, agent_sid, agent_tty, _) = proc_stat(agent).unwrap();
    let (_, user_sid, _, _) = proc_stat(supervisor).unwrap();
    // SAFETY: fstat into a plain struct.
    let user_tty = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        assert_eq!(libc::fstat(t.slave.as_raw_fd(), &mut st), 0);
        st.st_rdev
    };
    assert_ne!(agent_sid, user_sid, "the agent runs in a session of its own");
    assert_ne!(agent_tty, user_tty, "its controlling terminal is not the user's");
    assert_ne!(agent_tty, 0, "it has one: the pty aegis-exec relays");
    assert_eq!(t.wait(Duration::from_secs(30)), 0);
    // What the agent did succeeded, on its own pty: the harm it could do stayed there.
    assert!(t.text().contains(r#"AGENT {"setpgid": "ok", "tcsetpgrp": "ok", "open_dev_tty": "ok"}"#), "{}", t.text());
}

/// Ctrl-C on the user's terminal reaches the agent (its pty's line discipline signals it);
/// an agent that ignores SIGINT is ended by Ctrl-C three times within two seconds.
#[test]
fn ctrl_c_ends_the_run() {
    let Some((lab, bundle)) = setup() else { return };
    let mut t = Terminal::run(&lab, &bundle, &[], "import time; print('READY', flush=True); time.sleep(30)");
    t.wait_for("READY");
    let start = Instant::now();
    t.type_keys(b"\x03");
    assert_eq!(t.wait(Duration::from_secs(10)), 128 + libc::SIGINT, "the agent died of SIGINT: {}", t.text());
    assert!(start.elapsed() < Duration::from_secs(5));

    let script = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('READY', flush=True); time.sleep(30)";
    let mut t = Terminal::run(&lab, &bundle, &[], script);
    t.wait_for("READY");
    t.type_keys(b"\x03");
    std::thread::sleep(Duration::from_millis(500));
    assert!(t.child.try_wait().unwrap().is_none(), "one Ctrl-C is the agent's to handle");
    let start = Instant::now();
    t.type_keys(b"\x03\x03");
    let code = t.wait(Duration::from_secs(10));
    assert!(code == 128 + libc::SIGTERM || code == 128 + libc::SIGKILL, "ended by the supervisor: {code} {}", t.text());
    assert!(start.elapsed() < Duration::from_secs(5), "within the grace period: {:?}", start.elapsed());
    assert!(t.text().contains("Ctrl-C three times"), "{}", t.text());
}

/// Ctrl-Z goes to the agent's pty, never stops the supervisor, and the init resumes the
/// agent. Even a supervisor stopped with SIGSTOP (which nothing can catch) does not stretch
/// the 4 s wall time: the agent's init kills it at the limit, and the run records why.
#[test]
fn ctrl_z_does_not_let_the_agent_outlive_its_wall_time() {
    let Some((lab, bundle)) = setup() else { return };
    let mut t = Terminal::run(&lab, &bundle, &[], "import time; print('READY', flush=True); time.sleep(60)  # marker: ctrl-z");
    t.wait_for("READY");
    let start = Instant::now();
    let agent = find_process("marker: ctrl-z").expect("the agent runs");
    t.type_keys(b"\x1a");
    std::thread::sleep(Duration::from_millis(300));
    let supervisor = t.child.id() as i32;
    assert_ne!(proc_stat(supervisor).unwrap().3, 'T', "Ctrl-Z did not stop the supervisor");
    assert_ne!(proc_stat(agent).map(|s| s.3), Some('T'), "the agent's init resumed it");
    // SAFETY: stopping our own child (as a shell's job control would).
    unsafe { libc::kill(supervisor, libc::SIGSTOP) };
    // 4 s wall time + the init's 1 s margin, and some slack.
    while proc_stat(agent).is_some() {
        assert!(start.elapsed() < Duration::from_secs(9), "the agent outlived its wall time while the supervisor was stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(proc_stat(supervisor).unwrap().3, 'T', "the supervisor was still stopped");
    // SAFETY: resuming our own child.
    unsafe { libc::kill(supervisor, libc::SIGCONT) };
    assert_eq!(t.wait(Duration::from_secs(10)), 128 + libc::SIGKILL);
    let events = audit_events(&t.log);
    assert!(
        events.iter().any(|e| e["kind"] == "resource" && e["limit"] == "wall_time"),
        "the wall time is recorded: {events:?}"
    );
}

/// The agent turns echo and canonical mode off on its terminal and exits without undoing
/// it (and leaves the alternate screen and a hidden cursor): the user's terminal is as it
/// was. While the agent ran, the user's terminal was raw (keys went to the agent as typed).
#[test]
fn the_terminals_modes_are_restored() {
    let Some((lab, bundle)) = setup() else { return };
    let script = "import sys, termios, time\nt = termios.tcgetattr(0)\nt[3] &= ~(termios.ECHO | termios.ICANON)\ntermios.tcsetattr(0, termios.TCSANOW, t)\nsys.stdout.write('\\x1b[?1049h\\x1b[?25lREADY\\n'); sys.stdout.flush(); time.sleep(1)";
    let (_m, fresh) = openpty();
    let before = termios(&fresh);
    let mut t = Terminal::run(&lab, &bundle, &[], script);
    let original = termios(&t.slave);
    assert_eq!(original.c_lflag, before.c_lflag, "a fresh terminal");
    t.wait_for("READY");
    let during = termios(&t.slave);
    assert_eq!(during.c_lflag & (libc::ECHO | libc::ICANON | libc::ISIG), 0, "raw while relaying");
    assert_eq!(t.wait(Duration::from_secs(30)), 0);
    let after = termios(&t.slave);
    assert_eq!((after.c_iflag, after.c_oflag, after.c_lflag, after.c_cflag), (original.c_iflag, original.c_oflag, original.c_lflag, original.c_cflag), "modes restored");
    let text = t.text();
    let tail = text.rsplit("READY").next().unwrap_or_default();
    assert!(tail.contains("\x1b[?25h") && tail.contains("\x1b[?1049l"), "the agent's screen modes undone: {tail:?}");
}

const HOSTILE_OUTPUT: &str = r#"
import sys, time
w = sys.stdout.write
w("hello \x1b[31mred\x1b[0m\n")
w("\x1b]52;c;ZWNobyBwd25lZA==\x07")            # clipboard
w("\x1b]0;innocent title\x07")                 # window title
w("\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\")    # DCS passthrough
w("aegis-exec: agent exited: status 0 (exit code 0)\n")
w("DONE\n")
sys.stdout.flush()
"#;

/// What the agent prints that acts on the terminal (clipboard, title, passthrough) is
/// dropped, and a line it forges in aegis-exec's name is marked; text and colours pass.
/// With `--terminal-filter off` the clipboard write goes through (the control).
#[test]
fn clipboard_titles_and_forged_lines_do_not_reach_the_terminal() {
    let Some((lab, bundle)) = setup() else { return };
    let mut t = Terminal::run(&lab, &bundle, &[], HOSTILE_OUTPUT);
    assert_eq!(t.wait(Duration::from_secs(30)), 0);
    let text = t.text();
    assert!(text.contains("hello \x1b[31mred\x1b[0m"), "text and colours pass: {text:?}");
    assert!(text.contains("DONE"), "{text:?}");
    for bad in ["\x1b]52", "\x1b]0;", "innocent title", "\x1bP", "tmux;"] {
        assert!(!text.contains(bad), "{bad:?} reached the terminal: {text:?}");
    }
    assert!(text.contains("[agent] aegis-exec: agent exited"), "the forged line is marked: {text:?}");

    let mut t = Terminal::run(&lab, &bundle, &["--terminal-filter", "off"], HOSTILE_OUTPUT);
    assert_eq!(t.wait(Duration::from_secs(30)), 0);
    assert!(t.text().contains("\x1b]52;c;ZWNobyBwd25lZA=="), "control: unfiltered, it gets through: {:?}", t.text());
}

/// Without any terminal: the agent used to be pid 1 of its namespace, which ignores a
/// SIGTERM it has no handler for, so `aegis-exec` waited out its grace period and killed it
/// (exit 137). Its init now forwards the signal, and the agent dies of it at once (143).
#[test]
fn a_sigterm_to_the_supervisor_reaches_an_agent_without_a_handler() {
    let Some((lab, bundle)) = setup() else { return };
    let mut c = Command::new(bin("aegis-exec"));
    c.env("AEGIS_STATE_DIR", &lab.state)
        .arg("--trust-key")
        .arg(&lab.public)
        .arg("--audit-log")
        .arg(lab.path("term.log"))
        .arg(&bundle)
        .args(["--", "/usr/bin/python3", "-c", "import time; print('READY', flush=True); time.sleep(30)"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 5];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"READY");
    let start = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "the agent died of the forwarded SIGTERM");
    assert!(start.elapsed() < Duration::from_millis(1500), "at once, not after the grace period: {:?}", start.elapsed());
    let events = audit_events(&lab.path("term.log"));
    let exited = events.iter().find(|e| e["kind"] == "agent_exited").unwrap();
    assert_eq!(exited["signal"], libc::SIGTERM, "the agent's own status, from its init: {exited}");
}

/// Keys the agent does not read must not stop its output: a big paste into an agent that is
/// busy printing (and never reads) once blocked the relay on the paste and the agent on its
/// output. The output flows and the run ends.
#[test]
fn a_paste_the_agent_does_not_read_does_not_stall_its_output() {
    let Some((lab, bundle)) = setup() else { return };
    let t = Terminal::run(&lab, &bundle, &[], "import sys, time; time.sleep(1); sys.stdout.write('x' * 300000 + '\\nEND\\n'); sys.stdout.flush()");
    let mut keys = t.master.try_clone().unwrap();
    let paster = std::thread::spawn(move || {
        let line = [b'k'; 1000];
        for _ in 0..200 {
            if keys.write_all(&line).is_err() {
                break;
            }
        }
    });
    let mut t = t;
    t.wait_for("END");
    assert_eq!(t.wait(Duration::from_secs(30)), 0);
    drop(t);
    let _ = paster.join();
}
