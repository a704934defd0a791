//! Issue 11.1: a pathname unix socket is a network grant. Real launches with `aegis-exec`:
//! host daemons (unix listeners of this test process, as root) in a directory the policy
//! lets the agent read; only the socket `[network] unix` names is reachable, in network
//! modes none, proxy and host and in the Landlock-only mode (user namespaces blocked); every
//! refusal is an audit record; `aegisc check ... unix PATH` agrees with the sandbox; the
//! server sees the agent's uid, never root; symlinks, relative paths, `/proc` descriptor
//! links and a thread racing address rewrites and `dup2` never reach the denied daemon; unix
//! datagram sockets are refused; abstract sockets stay scoped as before. Every case runs as
//! root (the agent is uid 65534) and as uid 1000 (a user without root; the agent is that user).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aegis_tests::{Run, aegisc, run};
use serde_json::Value;

use crate::launch::{Lab, audit_events, run_for, sandbox_ready};

/// `t(name, f)` records "ok[ value]" or "ERR <errno name>"; `done()` prints the JSON.
const PRELUDE: &str = include_str!("../fixtures/e2e/unix_probe.py");

/// A host daemon: a unix stream listener answering `<name> <peer pid> <peer uid>` (from
/// SO_PEERCRED) and counting the connections it accepted.
struct Daemon {
    path: PathBuf,
    accepted: Arc<AtomicUsize>,
}

fn daemon(path: &Path, name: &'static str) -> Daemon {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path).unwrap();
    // Any uid may connect as far as the file mode goes: only AEGIS stands in the way.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let cred = peer_cred(&s);
            // One write: a reader must never see half of the answer.
            let _ = s.write_all(format!("{name} {} {}", cred.0, cred.1).as_bytes());
        }
    });
    Daemon { path: path.to_path_buf(), accepted }
}

fn peer_cred(s: &std::os::unix::net::UnixStream) -> (i32, u32) {
    use std::os::fd::AsRawFd as _;
    let mut c = [0u32; 3];
    let mut len = 12u32;
    // SAFETY: getsockopt(SO_PEERCRED) writes a struct ucred (3 x 32 bits) into `c`.
    unsafe { getsockopt(s.as_raw_fd(), 1, 17, c.as_mut_ptr().cast(), &mut len) };
    (c[0] as i32, c[1])
}

unsafe extern "C" {
    fn getsockopt(fd: i32, level: i32, name: i32, val: *mut u8, len: *mut u32) -> i32;
}

/// The lab: RUN holds the daemons (readable by everyone), WORK is the agent's.
struct World {
    lab: Lab,
    run: PathBuf,
    work: PathBuf,
    granted: Daemon,
    denied: Daemon,
}

fn world(lab: Lab) -> World {
    let agent_uid = lab.agent_uid();
    let run = lab.root_dir("run");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The lab directory itself must be traversable by the agent.
    std::fs::set_permissions(lab.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = lab.path("work");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(agent_uid), Some(agent_uid)).unwrap();
    let granted = daemon(&run.join("granted.sock"), "granted");
    let denied = daemon(&run.join("denied.sock"), "denied");
    World { lab, run, work, granted, denied }
}

/// The policy: read RUN (so both sockets are visible), write WORK, python, and one unix grant.
fn policy(w: &World, mode: &str, extra: &str) -> PathBuf {
    let text = format!(
        "version = 1\n[agent]\nname = \"e2e-unix\"\n[parameters]\nRUN = \"host daemons' sockets\"\nWORK = \"writable\"\n\
         [filesystem]\nread = [\"/usr\", \"/etc/localtime\", \"${{RUN}}\"]\nwrite = [\"${{WORK}}\"]\n\
         [exec]\nallow = [\"/usr/bin/python3\"]\n\
         [network]\nmode = \"{mode}\"\nunix = [\"${{RUN}}/granted.sock\"]\n\
         [resources]\nmemory = \"256MiB\"\npids = 64\nwall_time = \"60s\"\n{extra}"
    );
    let p = w.lab.path(&format!("unix-{mode}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn params(w: &World) -> [(&'static str, &Path); 2] {
    [("RUN", w.run.as_path()), ("WORK", w.work.as_path())]
}

/// Runs PRELUDE + `body` in the sandbox; `env` goes to `aegis-exec` itself.
fn agent(w: &World, bundle: &Path, log: &Path, body: &str, args: &[&str], env: &[(&str, &str)]) -> (Value, Run) {
    let script = format!("{PRELUDE}\n{}\ndone()\n", dedent(body));
    let mut cmd = vec!["/usr/bin/python3", "-c", &script];
    cmd.extend_from_slice(args);
    let mut c = w.lab.exec_cmd(bundle, &params(w), log, &cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let r = run_for(&mut c, std::time::Duration::from_secs(60));
    assert_eq!(r.code, 0, "agent failed: exit {}\n{}\n{}", r.code, r.stdout, r.stderr);
    let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    eprintln!("outcomes: {v}");
    (v, r)
}

/// `body` without the indentation its lines share (scripts are written inside Rust blocks).
fn dedent(body: &str) -> String {
    let indent = body.lines().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
    body.lines().map(|l| l.get(indent..).unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn get<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no outcome {k} in {v}"))
}

/// The `decision` records of refused unix sockets: (target, reason).
fn unix_refusals(log: &Path) -> Vec<(String, String)> {
    audit_events(log)
        .iter()
        .filter(|e| e["kind"] == "decision" && e["subject"] == "unix")
        .map(|e| (e["target"].as_str().unwrap_or("").to_string(), e["reason"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn check(policy: &Path, w: &World, path: &Path) -> i32 {
    let r = run(aegisc()
        .arg("check")
        .arg(policy)
        .arg("--param")
        .arg(format!("RUN={}", w.run.display()))
        .arg("--param")
        .arg(format!("WORK={}", w.work.display()))
        .arg("unix")
        .arg(path));
    r.code
}

const REACH: &str = r#"
t("granted", lambda: unix_connect(sys.argv[1]))
t("denied", lambda: unix_connect(sys.argv[2]))
"#;

/// Asserts: granted reachable (the server saw the agent's uid), denied refused with EACCES,
/// never accepted, recorded; and `aegisc check` says the same.
fn assert_only_the_grant_is_reachable(w: &World, policy_path: &Path, v: &Value, log: &Path, agent_uid: u32, what: &str) {
    let granted = get(v, "granted");
    let parts: Vec<&str> = granted.split_whitespace().collect();
    assert_eq!(parts.get(1), Some(&"granted"), "{what}: the granted daemon answers: {granted}");
    let uid: u32 = parts[3].parse().unwrap();
    assert_eq!(uid, agent_uid, "{what}: SO_PEERCRED names the agent's uid");
    assert_ne!(uid, 0, "{what}: never root");
    assert_eq!(get(v, "denied"), "ERR EACCES", "{what}");
    assert_eq!(w.denied.accepted.load(Ordering::SeqCst), 0, "{what}: the denied daemon was never reached");
    let refusals = unix_refusals(log);
    assert!(
        refusals.iter().any(|(t, why)| t == &w.denied.path.display().to_string() && why.contains("no [network] unix grant")),
        "{what}: the refusal is an audit record: {refusals:?}"
    );
    assert_eq!(check(policy_path, w, &w.granted.path), 0, "{what}: aegisc check says ALLOW");
    assert_eq!(check(policy_path, w, &w.denied.path), 1, "{what}: aegisc check says DENY");
}

#[test]
fn a_host_daemon_in_a_read_granted_directory_is_reachable_only_when_granted_in_every_mode() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let w = world(lab);
        for mode in ["none", "proxy", "host"] {
            let p = policy(&w, mode, "");
            let bundle = w.lab.build(&p, &format!("b-{mode}"));
            let log = w.lab.path(&format!("audit-{mode}.log"));
            let (v, _) = agent(&w, &bundle, &log, REACH, &[w.granted.path.to_str().unwrap(), w.denied.path.to_str().unwrap()], &[]);
            assert_only_the_grant_is_reachable(&w, &p, &v, &log, w.lab.agent_uid(), mode);
            crate::launch::assert_launch_recorded(&log);
        }
    }
}

/// The agent's own sockets in its private /tmp are the agent talking to itself: Python's
/// multiprocessing (a Manager's listener, the forkserver) and a server of its own work
/// without any grant; `aegisc check` says so (built-in grant).
#[test]
fn the_agents_own_sockets_in_its_private_tmp_are_reachable() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let w = world(lab);
        let p = policy(&w, "none", "");
        let bundle = w.lab.build(&p, "b");
        let log = w.lab.path("audit.log");
        let body = r#"
    import multiprocessing as mp
    def own_server():
        l = socket.socket(socket.AF_UNIX)
        l.bind("/tmp/own.sock")
        l.listen()
        threading.Thread(target=lambda: l.accept()[0].send(b"mine"), daemon=True).start()
        return unix_connect("/tmp/own.sock")
    t("own_server", own_server)
    def manager():
        with mp.Manager() as m:
            d = m.dict()
            d["x"] = 1
            return d["x"]
    t("manager", manager)
    def forkserver():
        ctx = mp.get_context("forkserver")
        with ctx.Pool(2) as pool:
            return sum(pool.map(abs, [-1, -2]))
    t("forkserver", forkserver)
    "#;
        let (v, _) = agent(&w, &bundle, &log, body, &[], &[]);
        assert_eq!(get(&v, "own_server"), "ok mine");
        assert_eq!(get(&v, "manager"), "ok 1");
        assert_eq!(get(&v, "forkserver"), "ok 3");
        assert!(unix_refusals(&log).is_empty(), "{:?}", unix_refusals(&log));
        let r = run(aegisc().arg("check").arg(&p).args(["unix", "/tmp/pymp-x/listener-y"]));
        assert_eq!(r.code, 0, "{}", r.stdout);
        assert!(r.stdout.contains("is covered by built-in unix grant '/tmp' (the private /tmp holds only the agent's own sockets)"), "{}", r.stdout);
    }
}

/// Landlock-only: no user namespace (so no mount or network namespace either): the host
/// filesystem and network as the agent's uid, with Landlock and seccomp. The grant holds.
#[test]
fn in_the_landlock_only_mode_too() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let w = world(lab);
        // Mode none: without a network namespace it is the host's network (nftables
        // best-effort), which is what this mode gives up; the unix grant does not depend on it.
        let extra = "[enforcement]\nnamespaces = \"best-effort\"\nmounts = \"best-effort\"\nnftables = \"best-effort\"\n";
        let p = policy(&w, "none", extra);
        let bundle = w.lab.build(&p, "b-landlock-only");
        let log = w.lab.path("audit-landlock-only.log");
        let (v, r) = agent(&w, &bundle, &log, REACH, &[w.granted.path.to_str().unwrap(), w.denied.path.to_str().unwrap()], &[("AEGIS_EXEC_TEST_NO_USERNS", "1")]);
        let report = audit_events(&log).into_iter().find(|e| e["kind"] == "enforcement_report").unwrap();
        let ns = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "namespaces").unwrap().clone();
        assert_eq!(ns["status"], "not_enforced", "really without namespaces: {ns}\n{}", r.stderr);
        assert_only_the_grant_is_reachable(&w, &p, &v, &log, w.lab.agent_uid(), "landlock-only");
    }
}

#[test]
fn symlinks_relative_paths_proc_links_and_renames_never_reach_a_denied_socket() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let w = world(lab);
        let p = policy(&w, "none", "");
        let bundle = w.lab.build(&p, "b");
        let log = w.lab.path("audit.log");
        let body = r#"
    G, D, W = sys.argv[1], sys.argv[2], sys.argv[3]
    os.symlink(D, W + "/innocent.sock")
    t("symlink", lambda: unix_connect(W + "/innocent.sock"))
    os.symlink(os.path.dirname(D), W + "/dir")
    t("dir_symlink", lambda: unix_connect(W + "/dir/denied.sock"))
    os.symlink(G, W + "/alias.sock")
    t("symlink_to_granted", lambda: unix_connect(W + "/alias.sock").split()[0])
    t("hardlink", lambda: os.link(D, W + "/hard.sock"))
    t("rename_in", lambda: os.rename(D, W + "/moved.sock"))
    os.chdir(os.path.dirname(D))
    t("relative", lambda: unix_connect("denied.sock"))
    t("relative_granted", lambda: unix_connect("./granted.sock").split()[0])
    fd = os.open(D, os.O_PATH)
    t("proc_self_fd", lambda: unix_connect("/proc/self/fd/%d" % fd))
    t("proc_pid_fd", lambda: unix_connect("/proc/%d/fd/%d" % (os.getpid(), fd)))
    t("proc_thread_self_fd", lambda: unix_connect("/proc/thread-self/fd/%d" % fd))
    t("proc_cwd", lambda: unix_connect("/proc/self/cwd/denied.sock"))
    t("long_dotdot", lambda: unix_connect(W + "/../run/../run/denied.sock"))
    "#;
        let (v, _) = agent(&w, &bundle, &log, body, &[w.granted.path.to_str().unwrap(), w.denied.path.to_str().unwrap(), w.work.to_str().unwrap()], &[]);
        for k in ["symlink", "dir_symlink", "relative", "proc_pid_fd", "long_dotdot"] {
            assert_eq!(get(&v, k), "ERR EACCES", "{k}");
        }
        // In the broker /proc/self is the broker: the agent's descriptor numbers and working
        // directory name nothing there; whatever happens, never the denied socket. (Hard links
        // and renames across the sandbox's mounts fail with EXDEV.)
        for k in ["proc_self_fd", "proc_thread_self_fd", "proc_cwd", "hardlink", "rename_in"] {
            assert!(get(&v, k).starts_with("ERR"), "{k}: {v}");
        }
        assert_eq!(get(&v, "symlink_to_granted"), "ok granted");
        assert_eq!(get(&v, "relative_granted"), "ok granted");
        assert_eq!(w.denied.accepted.load(Ordering::SeqCst), 0);
        let targets: Vec<String> = unix_refusals(&log).into_iter().map(|(t, _)| t).collect();
        assert!(!targets.is_empty() && targets.iter().all(|t| t == &w.denied.path.display().to_string()), "refusals name the real path: {targets:?}");
    }
}

#[test]
fn a_thread_racing_address_rewrites_and_dup2_never_reaches_the_denied_socket() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let w = world(lab);
        let p = policy(&w, "none", "");
        let bundle = w.lab.build(&p, "b");
        let log = w.lab.path("audit.log");
        let body = r#"
    import ctypes
    G, D = sys.argv[1].encode(), sys.argv[2].encode()
    assert len(G) == len(D) + 1
    D = D + b"\0"
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
            for fd in range(3, 16):
                try:
                    os.dup2(spare.fileno(), fd)
                except OSError:
                    pass
    threads = [threading.Thread(target=flip), threading.Thread(target=swap)]
    for th in threads: th.start()
    counts = {}
    for i in range(1500):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        r = libc.connect(s.fileno(), ctypes.byref(addr), ctypes.sizeof(addr))
        e = "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
        counts[e] = counts.get(e, 0) + 1
        s.close()
    stop = True
    for th in threads: th.join()
    R["counts"] = json.dumps(counts)
    "#;
        // "granted.sock" is one byte longer than "denied.sock": the rewrite flips whole paths.
        let (v, _) = agent(&w, &bundle, &log, body, &[w.granted.path.to_str().unwrap(), w.denied.path.to_str().unwrap()], &[]);
        eprintln!("race: {}", get(&v, "counts"));
        assert_eq!(w.denied.accepted.load(Ordering::SeqCst), 0, "the denied daemon must never be reached");
        assert!(w.granted.accepted.load(Ordering::SeqCst) > 0, "the race ran: some connects reached the granted daemon");
        assert!(!unix_refusals(&log).is_empty(), "and some read the denied path and were refused");
    }
}

#[test]
fn unix_datagram_sockets_are_refused_and_abstract_sockets_stay_scoped() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let w = world(lab);
        let dgram = w.run.join("log.sock");
        let listener = UnixDatagram::bind(&dgram).unwrap();
        std::fs::set_permissions(&dgram, std::fs::Permissions::from_mode(0o777)).unwrap();
        // A host abstract socket: outside the agent's Landlock domain (scoped since ABI 6).
        let name = format!("aegis-e2e-unix-{}", std::process::id());
        let abs = {
            use std::os::linux::net::SocketAddrExt as _;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            UnixListener::bind_addr(&a).unwrap()
        };
        abs.set_nonblocking(true).unwrap();
        let p = policy(&w, "host", "");
        let bundle = w.lab.build(&p, "b");
        let log = w.lab.path("audit.log");
        let body = r#"
    P, A = sys.argv[1], sys.argv[2]
    t("dgram", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    t("raw", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_RAW))
    t("dgram_pair", lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
    t("stream_pair", lambda: [s.close() for s in socket.socketpair()] and None)
    t("sendto_denied", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).sendto(b"x", P))
    def abstract_host():
        s = socket.socket(socket.AF_UNIX)
        s.connect("\0" + A)
    t("abstract_host", abstract_host)
    def abstract_own():
        l = socket.socket(socket.AF_UNIX)
        l.bind("\0own-" + A)
        l.listen()
        s = socket.socket(socket.AF_UNIX)
        s.connect("\0own-" + A)
        c, _ = l.accept()
        c.send(b"own")
        return s.recv(3).decode()
    t("abstract_own", abstract_own)
    "#;
        let (v, _) = agent(&w, &bundle, &log, body, &[dgram.to_str().unwrap(), &name], &[]);
        for k in ["dgram", "raw", "dgram_pair"] {
            assert_eq!(get(&v, k), "ERR EACCES", "{k}");
        }
        assert_eq!(get(&v, "stream_pair"), "ok");
        // sendto with an address is judged like connect: the listener is not granted.
        assert_eq!(get(&v, "sendto_denied"), "ERR EACCES");
        let mut buf = [0u8; 8];
        listener.set_nonblocking(true).unwrap();
        assert!(listener.recv(&mut buf).is_err(), "nothing reached the host's datagram listener");
        // As before this change: Landlock's scope refuses the host's abstract socket (EPERM on
        // kernels with ABI 6), the agent's own abstract sockets work.
        if aegis_landlock_abi() >= 6 {
            // EPERM from Landlock's scope in the host's network namespace; ECONNREFUSED where
            // the agent has a network namespace of its own (abstract names are per namespace).
            assert!(["ERR EPERM", "ERR ECONNREFUSED"].contains(&get(&v, "abstract_host")), "{v}");
            assert!(abs.accept().is_err(), "the host's abstract listener saw no connection");
        }
        assert_eq!(get(&v, "abstract_own"), "ok own");
        let refusals = unix_refusals(&log);
        assert!(refusals.iter().any(|(t, _)| t.starts_with("socket(AF_UNIX, type 2)")), "{refusals:?}");
        assert!(refusals.iter().any(|(t, _)| t.starts_with("socketpair(AF_UNIX, type 2)")), "{refusals:?}");
    }
}

/// The kernel's Landlock ABI (0 without Landlock).
fn aegis_landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) has no memory arguments.
    unsafe { syscall(444, 0usize, 0usize, 1u32) }
}

unsafe extern "C" {
    fn syscall(nr: i64, ...) -> i64;
}
