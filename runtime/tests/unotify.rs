//! The seccomp user-notification supervisor and the broker, with real processes and the
//! real kernel, without the rest of a launch.
//!
//! Own harness (`harness = false`): the agent side must start single-threaded (it forks the
//! broker, as the launch's child does), so this binary re-executes itself in the role
//! `agent`: become uid 1000 (when root), fork the broker, install an AEGIS filter that
//! mediates connections with a listener, hand listener and broker control socket to the
//! test over an inherited socket, and exec `/usr/bin/python3` with the scenario. The test
//! side serves the notifications with `aegis_runtime::unotify` and the policy under test,
//! and checks what the agent saw, what the servers saw, and the audit records.
//!
//! Run: `cargo test -p aegis-runtime --test unotify [-- NAME...]`; `-- --bench` prints
//! connect latencies with and without mediation instead (not a pass/fail test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aegis_audit::Event;
use aegis_runtime::broker;
use aegis_runtime::unotify::{self, Limits, Listener, Registry, Server, Stats};
use aegis_targets::seccomp::hardening::{ConnectGate, Hardening};
use aegis_targets::seccomp::{self, Arch, ApplyOptions, SyscallWeights};

const ROLE: &str = "AEGIS_UNOTIFY_TEST_ROLE";
const FD: &str = "AEGIS_UNOTIFY_TEST_FD";
const UID: &str = "AEGIS_UNOTIFY_TEST_UID";
const MEDIATE: &str = "AEGIS_UNOTIFY_TEST_MEDIATE";
const PY: &str = "/usr/bin/python3";

fn main() {
    if std::env::var_os(ROLE).is_some() {
        agent_role();
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--") || a == "--bench").collect();
    if args.iter().any(|a| a == "--bench") {
        bench();
        return;
    }
    let tests: &[(&str, fn())] = &[
        ("a_unix_socket_is_reachable_only_when_granted_and_refusals_are_recorded", a_unix_socket_is_reachable_only_when_granted_and_refusals_are_recorded),
        ("symlinks_relative_paths_and_proc_fd_tricks_are_judged_by_the_real_path", symlinks_relative_paths_and_proc_fd_tricks_are_judged_by_the_real_path),
        ("racing_threads_never_reach_the_denied_socket", racing_threads_never_reach_the_denied_socket),
        ("the_server_sees_the_agent_not_the_supervisor", the_server_sees_the_agent_not_the_supervisor),
        ("datagram_sockets_are_refused_and_other_families_work_as_before", datagram_sockets_are_refused_and_other_families_work_as_before),
        ("a_flood_of_refusals_is_a_handful_of_records_and_a_bounded_supervisor", a_flood_of_refusals_is_a_handful_of_records_and_a_bounded_supervisor),
        ("a_blocking_connect_does_not_stall_other_calls", a_blocking_connect_does_not_stall_other_calls),
        ("signals_during_a_mediated_connect_never_make_it_twice", signals_during_a_mediated_connect_never_make_it_twice),
        ("a_registry_refuses_two_handlers_for_one_call", a_registry_refuses_two_handlers_for_one_call),
    ];
    let mut failed = Vec::new();
    for (name, f) in tests {
        if !args.is_empty() && !args.iter().any(|a| name.contains(a.as_str())) {
            continue;
        }
        eprintln!("test {name} ...");
        let t = Instant::now();
        match std::panic::catch_unwind(f) {
            Ok(()) => eprintln!("test {name} ... ok ({:.2}s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                eprintln!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        eprintln!("failures: {failed:?}");
        std::process::exit(101);
    }
}

// ── the agent side (a fresh, single-threaded process) ───────────────────────────────────

fn agent_role() -> ! {
    let fd: RawFd = std::env::var(FD).unwrap().parse().unwrap();
    let fail = |what: &str| -> ! {
        eprintln!("agent role: {what}: {}", std::io::Error::last_os_error());
        std::process::exit(120)
    };
    if let Some(uid) = std::env::var(UID).ok().and_then(|u| u.parse::<u32>().ok()) {
        // SAFETY: credential calls with integer arguments, in a single-threaded process.
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setresgid(uid, uid, uid) != 0 || libc::setresuid(uid, uid, uid) != 0 {
                fail("dropping to the agent's uid");
            }
        }
    }
    let mediate = std::env::var_os(MEDIATE).is_some();
    let h = Hardening { inet_network: true, connect: if mediate { ConnectGate::Mediate } else { ConnectGate::Allow }, ..Hardening::default() };
    let spec = seccomp::aegis_default(&h);
    let program = seccomp::compile(&spec, Arch::native().unwrap(), &SyscallWeights::agent_mix()).unwrap();
    // As the launch's seccomp stage does: the broker first (outside the filter), then the
    // filter with its listener; both go to the supervisor.
    let (ctl, _broker_pidfd) = broker::fork_in_child().unwrap_or_else(|_| fail("forking the broker"));
    let listener = seccomp::apply_with_listener(&program, ApplyOptions { log: false }).unwrap_or_else(|e| fail(&e.to_string()));
    send_fds(fd, &[listener.as_raw_fd(), ctl.as_raw_fd()]);
    drop((listener, ctl));
    // SAFETY: closing the handoff socket before exec.
    unsafe { libc::close(fd) };
    let args: Vec<std::ffi::CString> = std::env::args().skip(1).take_while(|a| a != "--").map(|a| std::ffi::CString::new(a).unwrap()).collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: execv with NUL-terminated argv of live CStrings.
    unsafe { libc::execv(args[0].as_ptr(), argv.as_ptr()) };
    fail("exec")
}

fn send_fds(sock: RawFd, fds: &[RawFd]) {
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 8];
    // SAFETY: building a msghdr over live stack buffers; CMSG macros within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        let n = (fds.len() * 4) as u32;
        msg.msg_controllen = libc::CMSG_SPACE(n) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(n) as usize;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>().add(i), *fd);
        }
        assert_eq!(libc::sendmsg(sock, &msg, 0), 1);
    }
}

fn recv_fds(sock: RawFd) -> Vec<OwnedFd> {
    let mut payload = [0u8; 1];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u64; 8];
    let mut out = Vec::new();
    // SAFETY: as in send_fds.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        assert_eq!(libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC), 1, "the agent role sent nothing: {}", std::io::Error::last_os_error());
        let c = libc::CMSG_FIRSTHDR(&msg);
        let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
        for i in 0..n {
            out.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>().add(i))));
        }
    }
    out
}

// ── the supervisor side ─────────────────────────────────────────────────────────────────

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The uid the agent runs as: 1000 when the tests run as root (so SO_PEERCRED can tell the
/// agent from the supervisor), else the test's own.
fn agent_uid() -> Option<u32> {
    is_root().then_some(1000)
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
    events: Vec<Event>,
    stats: Stats,
}

impl Run {
    fn outcomes(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: stdout {}\nstderr {}", self.stdout, self.stderr))
    }

    /// The refusal records: (target, reason).
    fn refusals(&self) -> Vec<(String, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Decision { subject, target, reason, .. } if subject == "unix" => Some((target.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }
}

fn compile_policy(toml: &str) -> aegis_policy::ir::Checked {
    aegis_compiler::compile_bytes("test.toml", toml.as_bytes()).unwrap_or_else(|f| panic!("{:?}", f.diagnostics)).policy
}

/// Runs `script` (Python, with the PRELUDE) as the agent under the mediated filter, served
/// with `policy`; `args` are passed to the script.
fn run_agent(policy: &str, script: &str, args: &[&str], mediate: bool) -> Run {
    let policy = Arc::new(compile_policy(policy));
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let theirs_fd = theirs.as_raw_fd();
    // SAFETY: clearing close-on-exec on the child's end only.
    unsafe { libc::fcntl(theirs_fd, libc::F_SETFD, 0) };
    let code = format!("{PRELUDE}\n{script}\ndone()\n");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, "agent").env(FD, theirs_fd.to_string()).arg(PY).arg("-c").arg(&code).args(args);
    if mediate {
        cmd.env(MEDIATE, "1");
    }
    if let Some(u) = agent_uid() {
        cmd.env(UID, u.to_string());
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(theirs);
    let fds = recv_fds(ours.as_raw_fd());
    let mut fds = fds.into_iter();
    let listener = Listener::new(fds.next().unwrap()).unwrap();
    let client = Arc::new(broker::Client::new(fds.next().unwrap()));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut registry = Registry::new();
    registry.add(unotify::net::SYSCALLS, Arc::new(unotify::net::NetMediation::new(policy, Default::default(), Some(client)))).unwrap();
    let server = Server::start(listener, registry, Limits::default(), tx).unwrap();
    let out = child.wait_with_output().unwrap();
    let stats = server.stop();
    let events: Vec<Event> = rx.try_iter().collect();
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        events,
        stats,
    }
}

/// `t(name, f)` records "ok[ value]" or "ERR <errno name>"; `done()` prints them as JSON.
const PRELUDE: &str = include_str!("../../tests/fixtures/e2e/unix_probe.py");

/// A unix stream server that answers every connection with `greeting` and the peer's
/// credentials (`pid uid`), counting connections.
struct Server0 {
    path: PathBuf,
    accepted: Arc<AtomicUsize>,
}

fn serve_unix(path: &Path, greeting: &'static str) -> Server0 {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            // SAFETY: getsockopt writes one ucred.
            unsafe { libc::getsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) };
            // One write: a reader must never see half of the answer.
            let _ = s.write_all(format!("{greeting} {} {}", cred.pid, cred.uid).as_bytes());
        }
    });
    Server0 { path: path.to_path_buf(), accepted }
}

/// A directory the agent (uid 1000) can read and write.
fn lab() -> tempfile::TempDir {
    let d = tempfile::Builder::new().prefix("aegis-unotify-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    d
}

fn policy_with(unix: &[&Path]) -> String {
    let list: Vec<String> = unix.iter().map(|p| format!("{:?}", p.display().to_string())).collect();
    format!("version = 1\n[agent]\nname = \"t\"\n[filesystem]\nread = [\"/\"]\n[network]\nmode = \"host\"\nunix = [{}]\n", list.join(", "))
}

fn get<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no outcome {k} in {v}"))
}

// ── the tests ───────────────────────────────────────────────────────────────────────────

fn a_unix_socket_is_reachable_only_when_granted_and_refusals_are_recorded() {
    let d = lab();
    let granted = serve_unix(&d.path().join("granted.sock"), "granted");
    let denied = serve_unix(&d.path().join("denied.sock"), "denied");
    let script = r#"
t("granted", lambda: unix_connect(sys.argv[1]).split()[0])
t("denied", lambda: unix_connect(sys.argv[2]))
t("missing", lambda: unix_connect(sys.argv[1] + ".nope"))
t("not_a_socket", lambda: unix_connect("/etc/hostname"))
"#;
    let r = run_agent(&policy_with(&[&granted.path]), script, &[granted.path.to_str().unwrap(), denied.path.to_str().unwrap()], true);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v = r.outcomes();
    assert_eq!(get(&v, "granted"), "ok granted");
    assert_eq!(get(&v, "denied"), "ERR EACCES");
    assert_eq!(get(&v, "missing"), "ERR ENOENT");
    assert_eq!(get(&v, "not_a_socket"), "ERR ECONNREFUSED");
    assert_eq!(denied.accepted.load(Ordering::SeqCst), 0, "the denied server was never reached");
    let refusals = r.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0].0, denied.path.display().to_string());
    // (The lab is under /tmp, which is not private here: the built-in /tmp grant does not apply.)
    assert!(refusals[0].1.contains("no [network] unix grant covers"), "{}", refusals[0].1);
    // Without mediation (today's filter), the read grant was enough: the defect.
    let r = run_agent(&policy_with(&[]), script, &[granted.path.to_str().unwrap(), denied.path.to_str().unwrap()], false);
    assert!(get(&r.outcomes(), "denied").starts_with("ok denied"), "control: the unmediated filter lets it through");
}

fn symlinks_relative_paths_and_proc_fd_tricks_are_judged_by_the_real_path() {
    let d = lab();
    let granted = serve_unix(&d.path().join("granted.sock"), "granted");
    let sub = d.path().join("secret");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let denied = serve_unix(&sub.join("denied.sock"), "denied");
    let work = d.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let script = r#"
G, D, W = sys.argv[1], sys.argv[2], sys.argv[3]
os.symlink(D, W + "/innocent.sock")
t("symlink_to_denied", lambda: unix_connect(W + "/innocent.sock"))
os.symlink(G, W + "/alias.sock")
t("symlink_to_granted", lambda: unix_connect(W + "/alias.sock").split()[0])
os.symlink(os.path.dirname(D), W + "/dirlink")
t("dir_symlink_to_denied", lambda: unix_connect(W + "/dirlink/denied.sock"))
os.chdir(os.path.dirname(D))
t("relative_denied", lambda: unix_connect("denied.sock"))
t("dotdot_to_granted", lambda: unix_connect("../granted.sock").split()[0])
fd = os.open(D, os.O_PATH)
t("proc_self_fd", lambda: unix_connect("/proc/self/fd/%d" % fd))
t("proc_pid_fd", lambda: unix_connect("/proc/%d/fd/%d" % (os.getpid(), fd)))
gfd = os.open(G, os.O_PATH)
t("proc_pid_fd_granted", lambda: unix_connect("/proc/%d/fd/%d" % (os.getpid(), gfd)).split()[0])
"#;
    let r = run_agent(&policy_with(&[&granted.path]), script, &[granted.path.to_str().unwrap(), denied.path.to_str().unwrap(), work.to_str().unwrap()], true);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v = r.outcomes();
    for k in ["symlink_to_denied", "dir_symlink_to_denied", "relative_denied", "proc_pid_fd"] {
        assert_eq!(get(&v, k), "ERR EACCES", "{k}");
    }
    // /proc/self in the broker is the broker: the agent's fd number names nothing there
    // (or something else), never the denied socket.
    assert!(get(&v, "proc_self_fd").starts_with("ERR"), "{v}");
    for k in ["symlink_to_granted", "dotdot_to_granted", "proc_pid_fd_granted"] {
        assert_eq!(get(&v, k), "ok granted", "{k}");
    }
    assert_eq!(denied.accepted.load(Ordering::SeqCst), 0);
    let targets: Vec<String> = r.refusals().into_iter().map(|(t, _)| t).collect();
    assert!(targets.iter().all(|t| t == &denied.path.display().to_string()), "every refusal names the real path: {targets:?}");
}

fn racing_threads_never_reach_the_denied_socket() {
    let d = lab();
    let granted = serve_unix(&d.path().join("g.sock"), "granted");
    let denied = serve_unix(&d.path().join("d.sock"), "denied");
    // Thread A flips the path bytes in the sockaddr buffer between the granted and the
    // denied socket while thread B connects with it; thread C dup2()s a socket connected
    // to nothing over the descriptor B connects. 2000 attempts.
    let script = r#"
import ctypes
G, D = sys.argv[1].encode(), sys.argv[2].encode()
assert len(G) == len(D)
libc = ctypes.CDLL(None, use_errno=True)
class SUN(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("path", ctypes.c_char * 108)]
addr = SUN(socket.AF_UNIX, G)
stop = False
def flip():
    while not stop:
        ctypes.memmove(ctypes.addressof(addr) + 2, D, len(D))
        ctypes.memmove(ctypes.addressof(addr) + 2, G, len(G))
spare = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
def swap():
    while not stop:
        for fd in range(3, 12):
            try:
                os.dup2(spare.fileno(), fd)
            except OSError:
                pass
threads = [threading.Thread(target=flip), threading.Thread(target=swap)]
for th in threads: th.start()
counts = {}
for i in range(2000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    r = libc.connect(s.fileno(), ctypes.byref(addr), ctypes.sizeof(addr))
    e = "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    counts[e] = counts.get(e, 0) + 1
    s.close()
stop = True
for th in threads: th.join()
R["counts"] = json.dumps(counts)
"#;
    let r = run_agent(&policy_with(&[&granted.path]), script, &[granted.path.to_str().unwrap(), denied.path.to_str().unwrap()], true);
    assert_eq!(r.status, 0, "{}", r.stderr);
    eprintln!("race outcomes: {}", get(&r.outcomes(), "counts"));
    assert_eq!(denied.accepted.load(Ordering::SeqCst), 0, "the denied server must never be reached");
    assert!(granted.accepted.load(Ordering::SeqCst) > 0, "some connects reached the granted server (the race ran)");
    assert!(!r.refusals().is_empty(), "some connects read the denied path and were refused");
}

fn the_server_sees_the_agent_not_the_supervisor() {
    let d = lab();
    let granted = serve_unix(&d.path().join("granted.sock"), "granted");
    let script = r#"
t("cred", lambda: unix_connect(sys.argv[1]))
R["me"] = "%d %d" % (os.getpid(), os.getuid())
"#;
    let r = run_agent(&policy_with(&[&granted.path]), script, &[granted.path.to_str().unwrap()], true);
    let v = r.outcomes();
    let cred = get(&v, "cred").to_string();
    let parts: Vec<&str> = cred.split_whitespace().collect();
    let (pid, uid): (u32, u32) = (parts[2].parse().unwrap(), parts[3].parse().unwrap());
    let me_uid: u32 = get(&v, "me").split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(uid, me_uid, "SO_PEERCRED names the agent's uid");
    if let Some(u) = agent_uid() {
        assert_eq!(uid, u, "never root");
    }
    assert_ne!(pid, std::process::id(), "never the supervisor's pid");
    // The peer is the broker: the agent's uid, not dumpable.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    eprintln!("peer pid {pid}: {}", status.lines().filter(|l| l.starts_with("Uid") || l.starts_with("Seccomp")).collect::<Vec<_>>().join("; "));
}

fn datagram_sockets_are_refused_and_other_families_work_as_before() {
    let d = lab();
    let dgram_path = d.path().join("log.sock");
    let dg = UnixDatagram::bind(&dgram_path).unwrap();
    std::fs::set_permissions(&dgram_path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            let _ = s.map(|mut s| s.write_all(b"tcp"));
        }
    });
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp.local_addr().unwrap().port();
    let abstract_name = format!("aegis-test-{}", std::process::id());
    let ab = std::os::unix::net::UnixListener::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap()).unwrap();
    std::thread::spawn(move || {
        for s in ab.incoming() {
            let _ = s.map(|mut s| s.write_all(b"abstract"));
        }
    });
    let script = r#"
P, port, uport, ab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t("dgram", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
t("raw", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_RAW))
t("dgram_pair", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
t("stream_pair", lambda: [s.close() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)] and None)
t("seqpacket", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).close())
def tcp():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s.recv(10).decode()
t("tcp", tcp)
def tcp_nonblocking():
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    import select
    select.select([], [s], [], 5)
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
t("tcp_nonblocking", tcp_nonblocking)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendto(b"hello", ("127.0.0.1", uport))
t("udp_sendto", udp)
def abstract():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + ab)
    return s.recv(10).decode()
t("abstract", abstract)
t("connect_bad_fd", lambda: socket.socket(fileno=os.dup(1)).connect(("127.0.0.1", port)))
"#;
    let r = run_agent(
        &policy_with(&[]),
        script,
        &[dgram_path.to_str().unwrap(), &port.to_string(), &uport.to_string(), &abstract_name],
        true,
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v = r.outcomes();
    for k in ["dgram", "raw", "dgram_pair"] {
        assert_eq!(get(&v, k), "ERR EACCES", "{k}");
    }
    assert_eq!(get(&v, "stream_pair"), "ok");
    assert_eq!(get(&v, "seqpacket"), "ok");
    assert_eq!(get(&v, "tcp"), "ok tcp");
    assert_eq!(get(&v, "tcp_nonblocking"), "ok 0");
    assert_eq!(get(&v, "udp_sendto"), "ok 5");
    let mut buf = [0u8; 16];
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(udp.recv(&mut buf).unwrap(), 5, "the datagram arrived");
    assert_eq!(get(&v, "abstract"), "ok abstract");
    assert_eq!(get(&v, "connect_bad_fd"), "ERR ENOTSOCK");
    dg.set_nonblocking(true).unwrap();
    assert!(dg.recv(&mut buf).is_err(), "nothing reached the datagram listener");
    assert!(r.refusals().iter().any(|(t, _)| t.starts_with("socket(AF_UNIX, type 2)")), "{:?}", r.refusals());
}

fn a_flood_of_refusals_is_a_handful_of_records_and_a_bounded_supervisor() {
    let d = lab();
    let denied = serve_unix(&d.path().join("denied.sock"), "denied");
    let script = r#"
n = 0
end = time.time() + 2
while time.time() < end:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sys.argv[1])
    except OSError:
        n += 1
    s.close()
R["refused"] = str(n)
"#;
    let r = run_agent(&policy_with(&[]), script, &[denied.path.to_str().unwrap()], true);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let n: u64 = get(&r.outcomes(), "refused").parse().unwrap();
    let records = r.refusals();
    eprintln!("{n} refusals in 2 s → {} records; stats {:?}", records.len(), r.stats);
    assert!(n > 100, "the loop ran ({n})");
    assert!(records.len() <= 4, "one record per target per second (and the first at once): {records:?}");
    assert_eq!(r.stats.refused, n, "every refusal counted");
    let total: u64 = records
        .iter()
        .map(|(_, why)| why.split("(refused ").nth(1).and_then(|x| x.split(' ').next()).and_then(|x| x.parse::<u64>().ok()).unwrap_or(1))
        .sum();
    assert_eq!(total, n, "the records add up to every refusal: {records:?}");
    assert!(r.stats.max_workers <= Limits::default().workers);
}

fn a_blocking_connect_does_not_stall_other_calls() {
    let d = lab();
    let granted = serve_unix(&d.path().join("granted.sock"), "granted");
    // A listener with a backlog of 0 that never accepts: the second connect blocks.
    let stuck = d.path().join("stuck.sock");
    let l = std::os::unix::net::UnixListener::bind(&stuck).unwrap();
    std::fs::set_permissions(&stuck, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    // SAFETY: listen(2) on our socket.
    unsafe { libc::listen(l.as_raw_fd(), 0) };
    let script = r#"
S, G = sys.argv[1], sys.argv[2]
held = []
def stall():
    for i in range(3):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.append(s)
        s.connect(S)
threading.Thread(target=stall, daemon=True).start()
time.sleep(0.5)
t0 = time.time()
ok = sum(1 for i in range(20) if unix_connect(G).startswith("granted"))
R["others"] = "%d in %.2fs" % (ok, time.time() - t0)
R["stalled"] = str(len(held))
print(json.dumps(R), flush=True)
os._exit(0)
"#;
    let r = run_agent(&policy_with(&[&granted.path, &stuck]), script, &[stuck.to_str().unwrap(), granted.path.to_str().unwrap()], true);
    let v = r.outcomes();
    let others = get(&v, "others");
    let secs: f64 = others.split(" in ").nth(1).unwrap().trim_end_matches('s').parse().unwrap();
    assert!(others.starts_with("20 in "), "{others}");
    assert!(secs < 5.0, "the other connects waited for the stalled one: {others}");
    assert_eq!(get(&v, "stalled"), "2", "the thread is stuck in its second connect");
    drop(l);
}

/// A signal that arrives while the supervisor performs a call must not abandon it: with
/// `SA_RESTART` the kernel would run the call again, and a connect the broker had already
/// made answers the restarted one `EISCONN` (Go's preemption signal, profilers' and
/// programs' timers). `WAIT_KILLABLE_RECV` (`seccomp::apply_with_listener`) keeps the wait
/// for an answer uninterruptible but for fatal signals once the supervisor took the call.
fn signals_during_a_mediated_connect_never_make_it_twice() {
    let d = lab();
    let granted = serve_unix(&d.path().join("granted.sock"), "granted");
    let script = r#"
import signal
fired = [0]
def tick(*a):
    fired[0] += 1
signal.signal(signal.SIGALRM, tick)
signal.siginterrupt(signal.SIGALRM, False)   # SA_RESTART: the kernel restarts the call
signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
ok, errs = 0, {}
for i in range(2000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sys.argv[1])
        ok += 1
    except OSError as e:
        n = errno.errorcode.get(e.errno, str(e.errno))
        errs[n] = errs.get(n, 0) + 1
    s.close()
signal.setitimer(signal.ITIMER_REAL, 0)
R["ok"] = str(ok)
R["errors"] = json.dumps(errs, sort_keys=True)
R["signals"] = str(fired[0])
"#;
    let r = run_agent(&policy_with(&[&granted.path]), script, &[granted.path.to_str().unwrap()], true);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v = r.outcomes();
    let signals: u64 = get(&v, "signals").parse().unwrap();
    assert!(signals >= 100, "the timer hardly fired ({signals} signals): the test proves nothing");
    assert_eq!((get(&v, "ok"), get(&v, "errors")), ("2000", "{}"), "connects failed under {signals} signals: {v}");
}

fn a_registry_refuses_two_handlers_for_one_call() {
    let mut reg = Registry::new();
    let gate = Arc::new(unotify::exec::ExecGate::new(1));
    reg.add(unotify::exec::SYSCALLS, gate.clone()).unwrap();
    let err = reg.add(&["execveat"], gate).unwrap_err();
    assert!(err.contains("execveat"), "{err}");
}

// ── connect latency (`-- --bench`) ──────────────────────────────────────────────────────

fn bench() {
    let d = lab();
    let granted = serve_unix(&d.path().join("g.sock"), "g");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    std::thread::spawn(move || for s in tcp.incoming() { drop(s) });
    let script = r#"
N = int(sys.argv[3])
def lat(make, addr):
    ts = []
    for i in range(N):
        s = make()
        t0 = time.perf_counter_ns()
        s.connect(addr)
        ts.append(time.perf_counter_ns() - t0)
        s.close()
    ts.sort()
    return "%d %d" % (ts[len(ts) // 2], ts[len(ts) * 99 // 100])
t("unix", lambda: lat(lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), sys.argv[1]))
t("tcp", lambda: lat(lambda: socket.socket(), ("127.0.0.1", int(sys.argv[2]))))
"#;
    let n = "3000";
    for mediate in [false, true] {
        let r = run_agent(&policy_with(&[&granted.path]), script, &[granted.path.to_str().unwrap(), &port.to_string(), n], mediate);
        let v = r.outcomes();
        for k in ["unix", "tcp"] {
            let s = get(&v, k);
            let ns: Vec<u64> = s.trim_start_matches("ok ").split(' ').map(|x| x.parse().unwrap()).collect();
            println!("connect {k:<4} {}: median {:>7.1} us, p99 {:>7.1} us ({n} connects)", if mediate { "mediated  " } else { "unmediated" }, ns[0] as f64 / 1000.0, ns[1] as f64 / 1000.0);
        }
        if mediate {
            println!("supervisor: {:?}", r.stats);
        }
    }
    let _ = std::io::stdout().flush();
}
