//! Attacks an agent might try, run for real inside `aegis-exec` as root, each of which must be
//! contained: reaching a denied file (directly, symlink, hard link, `/proc/self/root`, rename,
//! `..`), writing outside the write paths, executing an ungranted binary (directly, through
//! ld.so, as a copy, from a memfd, as a script), reaching ungranted endpoints (TCP, UDP, IPv6,
//! raw and packet sockets), escaping (cgroup, namespaces, mount, ptrace, signals to host
//! processes, io_uring, x32), and exhausting resources (fork bomb, memory bomb, wall time).
//! Each test checks the real outcome (errno, exit status, host files) and, where the runtime
//! records it, the audit log. Policies: `tests/fixtures/e2e/attack.toml` and `limits.toml`.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use aegis_tests::{Run, run};

use crate::launch::*;

/// Helpers every attack script starts with: `t(name, f)` records "ok[ value]" or
/// "ERR <errno name | exit status: output>"; `call(nr, ...)` is a raw syscall raising OSError;
/// `runp(argv...)` runs a program and raises unless it exited 0; `done()` prints the JSON.
const PRELUDE: &str = r#"
import ctypes, errno, json, os, socket, subprocess, sys
R = {}
def why(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno is not None:
        return errno.errorcode.get(e.errno, str(e.errno))
    if isinstance(e, RuntimeError):
        return str(e)
    return type(e).__name__ + " " + str(e)
def t(name, f):
    try:
        r = f()
        R[name] = "ok" if r is None else "ok " + str(r)
    except BaseException as e:
        R[name] = "ERR " + why(e)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(nr, *a):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def cstr(s):
    return ctypes.addressof(ctypes.create_string_buffer(s.encode()))
def runp(*argv, **kw):
    p = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=10, **kw)
    out = (p.stdout + p.stderr).decode(errors="replace").strip()
    if p.returncode != 0:
        raise RuntimeError("exit %d: %s" % (p.returncode, out[-200:]))
    return out[-200:]
def done():
    print(json.dumps(R))
"#;

/// The attack lab: attack.toml built and signed, WORK (agent-owned, writable) and DATA
/// (root-owned, readable, holding the denied `secret.txt` and a readable `public.txt`).
struct Target {
    lab: Lab,
    bundle: PathBuf,
    work: PathBuf,
    data: PathBuf,
    log: PathBuf,
}

const SECRET: &str = "TOP-SECRET-7f3a\n";

fn target() -> Target {
    target_in(Lab::new())
}

/// The attack lab as root and as an unprivileged user (see [`Lab::each`]).
fn targets() -> Vec<Target> {
    Lab::each().into_iter().map(target_in).collect()
}

fn target_in(lab: Lab) -> Target {
    let bundle = lab.build(&fixture("attack.toml"), "bundle");
    let work = lab.agent_dir("work");
    let data = lab.root_dir("data");
    put(&data.join("secret.txt"), SECRET, None);
    put(&data.join("public.txt"), "public\n", None);
    let log = lab.path("audit.log");
    Target { lab, bundle, work, data, log }
}

impl Target {
    fn params(&self) -> [(&'static str, &Path); 2] {
        [("WORK", self.work.as_path()), ("DATA", self.data.as_path())]
    }

    /// Runs PRELUDE + body in the sandbox (`W`, `D` and `A` = extra args are defined) and
    /// returns the recorded outcomes.
    fn attack(&self, body: &str, extra: &[&str]) -> (Value, Run) {
        let script = format!("{PRELUDE}\nW, D, A = sys.argv[1], sys.argv[2], sys.argv[3:]\n{body}\ndone()\n");
        let w = self.work.display().to_string();
        let d = self.data.display().to_string();
        let mut cmd = vec!["/usr/bin/python3", "-c", &script, &w, &d];
        cmd.extend_from_slice(extra);
        let r = self.lab.exec(&self.bundle, &self.params(), &self.log, &cmd);
        assert_eq!(r.code, 0, "attack script failed: exit {}\n{}\n{}", r.code, r.stdout, r.stderr);
        let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
        eprintln!("outcomes: {}", serde_json::to_string_pretty(&v).unwrap());
        (v, r)
    }
}

fn get<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("no outcome {k} in {v}"))
}

/// Asserts that outcome `k` failed with one of the errno names.
fn denied(v: &Value, k: &str, errnos: &[&str]) {
    let got = get(v, k);
    assert!(is_err(got, errnos), "{k}: expected one of {errnos:?}, got {got}");
}

#[test]
fn denied_file_is_unreachable_by_every_path_trick() {
    if !sandbox_ready() {
        return;
    }
    let tg = target();
    let body = r##"
S = D + "/secret.txt"
t("control_public", lambda: open(D + "/public.txt").read().strip())
t("direct", lambda: open(S).read())
t("direct_cat", lambda: runp("/usr/bin/cat", S))
t("symlink_create", lambda: os.symlink(S, W + "/sl"))
t("symlink_read", lambda: open(W + "/sl").read())
t("symlink_tmp", lambda: (os.symlink(S, "/tmp/sl"), open("/tmp/sl").read()))
t("hardlink", lambda: os.link(S, W + "/hl"))
t("hardlink_ln", lambda: runp("/usr/bin/ln", S, W + "/hl2"))
t("hardlink_tmp", lambda: os.link(S, "/tmp/hl"))
t("proc_self_root", lambda: open("/proc/self/root" + S).read())
t("proc_1_root", lambda: open("/proc/1/root" + S).read())
t("dotdot", lambda: open(W + "/../data/secret.txt").read())
t("rename_out", lambda: os.rename(S, W + "/moved"))
t("rename_mv", lambda: runp("/usr/bin/mv", S, W + "/moved2"))
t("rename_in_place", lambda: os.rename(S, D + "/renamed"))
t("copy", lambda: runp("/usr/bin/cp", S, W + "/copy"))
t("truncate", lambda: open(S, "w").close())
t("chmod", lambda: os.chmod(S, 0o644))
t("unlink", lambda: os.unlink(S))
t("write_data", lambda: open(D + "/planted", "w").write("x"))
t("write_usr", lambda: open("/usr/planted", "w").write("x"))
t("write_etc", lambda: open("/etc/planted", "w").write("x"))
t("write_root", lambda: open("/planted", "w").write("x"))
t("mkdir_var", lambda: os.makedirs("/var/planted"))
t("control_work", lambda: open(W + "/ok.txt", "w").write("ok"))
"##;
    let (v, _) = tg.attack(body, &[]);
    assert_eq!(get(&v, "control_public"), "ok public", "the grant itself works");
    assert_eq!(get(&v, "control_work"), "ok 2");
    // The mask (mount plan: empty mode-000 file over the secret) answers EACCES; Landlock
    // refuses the same for every other name of the path.
    for k in ["direct", "symlink_read", "proc_self_root", "proc_1_root", "dotdot"] {
        denied(&v, k, &["EACCES"]);
    }
    // Opening for writing meets the read-only mask first.
    denied(&v, "truncate", &["EROFS", "EACCES"]);
    assert!(get(&v, "direct_cat").contains("Permission denied"), "{}", get(&v, "direct_cat"));
    assert!(get(&v, "copy").starts_with("ERR exit 1"), "{}", get(&v, "copy"));
    // Creating the symlink is allowed (it is a name in a writable dir), following it is not.
    assert_eq!(get(&v, "symlink_create"), "ok");
    denied(&v, "symlink_tmp", &["EACCES"]);
    // Hard links and renames across mounts: EXDEV; inside the read-only mount: EROFS; ln(1)
    // reports the same errno in words.
    for k in ["hardlink", "hardlink_tmp", "rename_out"] {
        denied(&v, k, &["EXDEV", "EPERM", "EACCES"]);
    }
    for k in ["hardlink_ln", "rename_mv"] {
        assert!(get(&v, k).starts_with("ERR exit 1"), "{k}: {}", get(&v, k));
    }
    for k in ["rename_in_place", "chmod", "unlink", "write_data", "write_usr"] {
        denied(&v, k, &["EROFS", "EACCES", "EPERM", "EBUSY"]);
    }
    // Paths outside the new root: nothing to write to (the root is a read-only tmpfs).
    for k in ["write_etc", "write_root", "mkdir_var"] {
        denied(&v, k, &["EROFS", "EACCES", "ENOENT"]);
    }
    // The host is untouched: the secret is whole, nothing was planted, moved or copied.
    assert_eq!(std::fs::read_to_string(tg.data.join("secret.txt")).unwrap(), SECRET);
    for p in ["planted", "renamed"] {
        assert!(!tg.data.join(p).exists(), "{p} exists on the host");
    }
    for p in ["hl", "hl2", "moved", "moved2"] {
        assert!(!tg.work.join(p).exists(), "{p} exists on the host");
    }
    if let Ok(c) = std::fs::read(tg.work.join("copy")) {
        assert!(c.is_empty() || !String::from_utf8_lossy(&c).contains("TOP-SECRET"), "the secret was copied out");
    }
    assert_launch_recorded(&tg.log);
}

#[test]
fn ungranted_code_cannot_be_executed() {
    if !sandbox_ready() {
        return;
    }
    let tg = target();
    let body = r##"
ID = open("/usr/bin/id", "rb").read()
t("control_cat", lambda: runp("/usr/bin/cat", D + "/public.txt"))
t("direct", lambda: runp("/usr/bin/id"))
t("via_bin_symlink", lambda: runp("/bin/id"))
t("ldso", lambda: runp("/lib64/ld-linux-x86-64.so.2", "/usr/bin/id"))
t("ldso_x86_64_dir", lambda: runp("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/usr/bin/id"))
def copy(p):
    with open(p, "wb") as f:
        f.write(ID)
    os.chmod(p, 0o755)
t("copy_work", lambda: copy(W + "/id"))
t("exec_copy_work", lambda: runp(W + "/id"))
t("ldso_copy_work", lambda: runp("/lib64/ld-linux-x86-64.so.2", W + "/id"))
t("copy_tmp", lambda: copy("/tmp/id"))
t("exec_copy_tmp", lambda: runp("/tmp/id"))
t("copy_shm", lambda: copy("/dev/shm/id"))
t("exec_copy_shm", lambda: runp("/dev/shm/id"))
def memfd_exec(flags):
    fd = os.memfd_create("payload", flags)
    os.write(fd, ID)
    return runp("/proc/self/fd/%d" % fd, pass_fds=(fd,))
t("memfd_proc_fd", lambda: memfd_exec(0))
def memfd_execveat():
    fd = os.memfd_create("payload", 0)
    os.write(fd, ID)
    pid = os.fork()
    if pid == 0:
        argv = (ctypes.c_char_p * 2)(b"id", None)
        envp = (ctypes.c_char_p * 1)(None)
        libc.syscall.argtypes = None
        r = libc.syscall(ctypes.c_long(322), ctypes.c_long(fd), ctypes.c_char_p(b""), argv, envp, ctypes.c_long(0x1000))
        os._exit(ctypes.get_errno() or 99)
    _, st = os.waitpid(pid, 0)
    raise OSError(os.waitstatus_to_exitcode(st), "execveat")
t("memfd_execveat", memfd_execveat)
def fexecve():
    fd = os.memfd_create("payload", 0)
    os.write(fd, ID)
    pid = os.fork()
    if pid == 0:
        try:
            os.execve(fd, ["id"], {})
        except OSError as e:
            os._exit(e.errno)
        os._exit(99)
    _, st = os.waitpid(pid, 0)
    raise OSError(os.waitstatus_to_exitcode(st), "fexecve")
t("memfd_fexecve", fexecve)
def script(p, interp):
    with open(p, "w") as f:
        f.write("#!%s\necho SCRIPT-RAN; /usr/bin/id\n" % interp)
    os.chmod(p, 0o755)
    return runp(p)
t("script_work_sh", lambda: script(W + "/s.sh", "/bin/sh"))
t("script_tmp_sh", lambda: script("/tmp/s.sh", "/bin/sh"))
t("script_interp_id", lambda: script("/tmp/s2.sh", "/usr/bin/id"))
t("sh_c_id", lambda: runp("/bin/sh", "-c", "/usr/bin/id"))
"##;
    let (v, r) = tg.attack(body, &[]);
    assert_eq!(get(&v, "control_cat"), "ok public", "a granted binary runs");
    assert!(!r.stdout.contains("uid="), "`id` ran somewhere: {}", r.stdout);
    // Landlock (no execute right) and noexec mounts: EACCES from execve.
    // /dev/shm is writable scratch (a built-in grant: shared memory needs it) but nothing
    // copied there can run: no Landlock execute right, and the tmpfs is noexec.
    assert_eq!(get(&v, "copy_shm"), "ok", "/dev/shm is writable scratch");
    denied(&v, "exec_copy_shm", &["EACCES", "EPERM"]);
    for k in ["direct", "via_bin_symlink", "exec_copy_work", "exec_copy_tmp", "script_work_sh", "script_tmp_sh", "script_interp_id"] {
        denied(&v, k, &["EACCES", "EPERM"]);
    }
    // ld.so is granted (every dynamic program needs it) but cannot map code from a noexec
    // mount: /usr/bin is mounted noexec except for the granted files.
    for k in ["ldso", "ldso_x86_64_dir", "ldso_copy_work"] {
        let got = get(&v, k);
        assert!(got.starts_with("ERR exit 127") && got.contains("failed to map segment"), "{k}: {got}");
    }
    // memfd: vm.memfd_noexec=2 in the sandbox's pid namespace refuses executable memfds;
    // /proc/self/fd/N of a non-exec memfd and execveat(AT_EMPTY_PATH) both fail.
    for k in ["memfd_proc_fd", "memfd_execveat", "memfd_fexecve"] {
        let got = get(&v, k);
        assert!(got.starts_with("ERR"), "{k}: {got}");
        assert!(!got.starts_with("ERR exit 0"), "{k}: {got}");
    }
    // The shell is granted; what it runs is still checked.
    assert!(get(&v, "sh_c_id").contains("Permission denied"), "{}", get(&v, "sh_c_id"));
    assert_launch_recorded(&tg.log);
}

/// Known loss (disclosed in `loss-report.txt` as "readable trees keep exec"): readable trees
/// stay mappable as code because shared libraries need it, and only the bin directories are
/// mounted noexec, so `ld.so` runs an ungranted program kept elsewhere under a readable tree
/// (`/usr/lib/git-core/git`, `/usr/libexec/*`). Direct exec of it is refused (Landlock).
#[test]
fn ldso_cannot_run_an_ungranted_program_outside_the_bin_directories() {
    if !sandbox_ready() {
        return;
    }
    if !Path::new("/usr/lib/git-core/git").exists() {
        aegis_tests::skip!("/usr/lib/git-core/git is missing");
    }
    let tg = target();
    let loss = std::fs::read_to_string(tg.bundle.join("loss-report.txt")).unwrap();
    assert!(loss.contains("readable trees keep exec"), "the loss is disclosed: {loss}");
    let body = r##"
t("direct", lambda: runp("/usr/lib/git-core/git", "--version"))
t("ldso", lambda: runp("/lib64/ld-linux-x86-64.so.2", "/usr/lib/git-core/git", "--version"))
"##;
    let (v, _) = tg.attack(body, &[]);
    denied(&v, "direct", &["EACCES"]);
    assert!(get(&v, "ldso").starts_with("ERR"), "git ran through ld.so: {}", get(&v, "ldso"));
}

/// Binds a loopback port or returns None (the test then skips: the policy names fixed ports).
fn bind_tcp(addr: &str) -> Option<TcpListener> {
    TcpListener::bind(addr).ok()
}

#[test]
fn only_the_granted_endpoint_is_reachable() {
    if !sandbox_ready() {
        return;
    }
    // attack.toml grants exactly 127.0.0.1:47801/tcp. Everything else here is loopback too.
    let (Some(granted), Some(other_addr)) = (bind_tcp("127.0.0.1:47801"), bind_tcp("127.0.0.2:47801")) else {
        aegis_tests::skip!("port 47801 on 127.0.0.1/127.0.0.2 is in use (attack.toml grants that fixed port)");
    };
    tcp_greeter(granted);
    tcp_greeter(other_addr);
    let other_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = other_port.local_addr().unwrap().port();
    tcp_greeter(other_port);
    let udp = UdpSocket::bind("127.0.0.1:47801").or_else(|_| UdpSocket::bind("127.0.0.1:0")).unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    udp_echo(udp);
    let v6 = bind_tcp("[::1]:47801");
    let has_v6 = v6.is_some();
    if let Some(l) = v6 {
        tcp_greeter(l);
    }
    for tg in targets() {
        let mut probes = vec![
            net("tcp", "127.0.0.1", 47801),
            net("tcp", "127.0.0.2", 47801),
            net("tcp", "127.0.0.1", other),
            net("udp", "127.0.0.1", udp_port),
            // IPv4-mapped IPv6: the packets are IPv4 to 127.0.0.2, dropped like the plain form.
            net("tcp", "::ffff:127.0.0.2", 47801),
        ];
        if has_v6 {
            probes.push(net("tcp", "::1", 47801));
        }
        let (got, events) = differential(&tg.lab, &fixture("attack.toml"), &tg.params(), &probes);
        assert_eq!(got[0], "ok", "the granted endpoint answers");
        // Landlock's TCP port rule refuses the other port at connect (EACCES); nftables drops the
        // granted port on another address (the SYN never leaves: timeout or EPERM) and UDP.
        assert!(is_err(&got[1], &["timeout", "EPERM"]), "127.0.0.2: {}", got[1]);
        assert!(is_err(&got[2], &["EACCES"]), "other port: {}", got[2]);
        assert!(is_err(&got[3], &["EPERM", "timeout"]), "udp: {}", got[3]);
        assert!(is_err(&got[4], &["timeout", "EPERM"]), "::ffff:127.0.0.2: {}", got[4]);
        if has_v6 {
            assert!(is_err(&got[5], &["timeout", "EPERM", "EACCES"]), "::1: {}", got[5]);
        }
        // nftables drops are logged by the kernel and recorded by the supervisor.
        let denials: Vec<&Value> = events.iter().filter(|e| e["kind"] == "kernel_denial").collect();
        // (root: the kernel log line of the host-namespace table; a user: the NFLOG record of
        // the table in the agent's own namespace)
        assert!(
            denials.iter().any(|e| e.to_string().contains("DST=127.0.0.2") || e.to_string().contains("127.0.0.2:47801/tcp")),
            "the drop to 127.0.0.2 is in the audit log ({:?}): {denials:?}",
            tg.lab.who
        );

        // Raw and packet sockets (ICMP and hand-made packets bypass TCP/UDP port rules).
        let body = r##"
t("raw_icmp", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
t("raw_tcp", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP))
t("raw6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
t("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
t("ping_dgram", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).sendto(b"\x08\0\0\0\0\0\0\0", ("127.0.0.2", 0)))
"##;
        let (v, _) = tg.attack(body, &[]);
        for k in ["raw_icmp", "raw_tcp", "raw6", "packet"] {
            denied(&v, k, &["EPERM", "EACCES", "EAFNOSUPPORT", "EINVAL"]);
        }
        denied(&v, "ping_dgram", &["EPERM", "EACCES", "EAFNOSUPPORT", "EINVAL"]);
    }
}

#[test]
fn escapes_from_the_sandbox_are_refused() {
    if !sandbox_ready() {
        return;
    }
    for tg in targets() {
        // A host process the agent must not be able to signal.
        let mut victim = Command::new("sleep").arg("30").spawn().unwrap();
        let vpid = victim.id().to_string();
        let body = r##"
import signal, time
VICTIM = int(A[0])
t("status", lambda: " ".join(l.split()[1] for l in open("/proc/self/status") if l.startswith(("CapEff", "CapBnd", "NoNewPrivs", "Seccomp:"))))
t("cgroup_view", lambda: open("/proc/self/cgroup").read().strip().replace("\n", " | "))
for name in ["/sys/fs/cgroup/cgroup.procs", "/sys/fs/cgroup/pids/cgroup.procs", "/sys/fs/cgroup/unified/cgroup.procs", "/sys/fs/cgroup/memory/cgroup.procs"]:
    t("cgroup_write " + name, lambda: open(name, "w").write(str(os.getpid())))
os.makedirs("/tmp/cg", exist_ok=True)
t("mount_cgroup2", lambda: call(165, cstr("none"), cstr("/tmp/cg"), cstr("cgroup2"), 0, 0))
t("mount_tmpfs", lambda: call(165, cstr("none"), cstr("/tmp/cg"), cstr("tmpfs"), 0, 0))
t("mount_bin", lambda: runp("/usr/bin/mount", "-t", "tmpfs", "none", "/tmp/cg"))
t("umount_mask", lambda: call(166, cstr(D + "/secret.txt"), 2))
t("pivot_root", lambda: call(155, cstr("/tmp"), cstr("/tmp/cg")))
t("chroot", lambda: os.chroot("/tmp"))
for flag, nm in [(0x10000000, "user"), (0x00020000, "mnt"), (0x40000000, "net"), (0x20000000, "pid"), (0x02000000, "cgroup")]:
    t("unshare_" + nm, lambda: call(272, flag))
t("unshare_bin", lambda: runp("/usr/bin/unshare", "-U", "/usr/bin/cat", "/proc/self/uid_map"))
def clone_newuser():
    r = call(56, 0x10000000 | 17, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)
    os.waitpid(r, 0)
    return r
t("clone_newuser", clone_newuser)
t("setns", lambda: call(308, os.open("/proc/self/ns/user", os.O_RDONLY), 0))
t("ptrace_pid1", lambda: call(101, 16, 1, 0, 0))
t("ptrace_traceme", lambda: call(101, 0, 0, 0, 0))
t("strace", lambda: runp("/usr/bin/strace", "-f", "/usr/bin/cat", "/dev/null"))
t("process_vm_readv", lambda: call(310, 1, 0, 0, 0, 0, 0))
t("kill_victim", lambda: os.kill(VICTIM, signal.SIGKILL))
t("kill_all", lambda: os.kill(-1, 0))
t("ppid", lambda: os.getppid())
t("io_uring_setup", lambda: call(425, 8, ctypes.addressof(ctypes.create_string_buffer(120))))
t("io_uring_enter", lambda: call(426, 0, 0, 0, 0, 0, 0))
t("x32_getpid", lambda: call(0x40000000 | 39))
t("x32_write", lambda: call(0x40000000 | 1, 1, cstr("X32-RAN\n"), 8))
t("bpf", lambda: call(321, 0, 0, 0))
t("perf_event_open", lambda: call(298, 0, 0, -1, -1, 0))
t("kexec_load", lambda: call(246, 0, 0, 0, 0))
t("init_module", lambda: call(175, 0, 0, 0))
t("keyctl", lambda: call(250, 0, 0, 0, 0, 0))
t("userfaultfd", lambda: call(323, 0))
t("control_getpid", lambda: call(39))
open(W + "/escape-done", "w").write("1")
time.sleep(1.5)
"##;
        let mut c = tg.lab.exec_cmd(&tg.bundle, &tg.params(), &tg.log, &[]);
        // Replace the empty command with the attack (exec_cmd appends CMD after `--`).
        let script = format!("{PRELUDE}\nW, D, A = sys.argv[1], sys.argv[2], sys.argv[3:]\n{body}\ndone()\n");
        let (w, d) = (tg.work.display().to_string(), tg.data.display().to_string());
        c.args(["/usr/bin/python3", "-c", &script, &w, &d, &vpid]);
        let child = std::thread::spawn(move || run_for(&mut c, Duration::from_secs(60)));
        // While the agent sleeps: it is still inside its cgroup leaf on the host.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !tg.work.join("escape-done").exists() {
            if child.is_finished() {
                let r = child.join().unwrap();
                panic!("the agent ended before finishing its attempts ({:?}): exit {}\n{}\n{}", tg.lab.who, r.code, r.stdout, r.stderr);
            }
            assert!(Instant::now() < deadline, "the agent never finished its attempts");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The supervisor writes agent_started once the agent has exec'd, so on a loaded
        // machine the agent can be this far before the record is in the log: wait for it.
        let started = loop {
            let started: Vec<Value> = std::fs::read_to_string(&tg.log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|l| l["event"].clone())
                .filter(|e| e["kind"] == "agent_started")
                .collect();
            if !started.is_empty() {
                break started;
            }
            assert!(Instant::now() < deadline, "no agent_started record while the agent runs");
            std::thread::sleep(Duration::from_millis(20));
        };
        let host_pid = started[0]["pid"].as_u64().unwrap();
        let cg = std::fs::read_to_string(format!("/proc/{host_pid}/cgroup")).unwrap();
        let r = child.join().unwrap();
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
        eprintln!("outcomes: {}", serde_json::to_string_pretty(&v).unwrap());
        if tg.lab.who == Who::Root {
            // (a user's launch has no cgroup leaf on this host: the report says so)
            assert!(cg.contains("/aegis/e2e-attack-"), "after the attempts the agent is still in its leaf: {cg}");
        }

        assert_eq!(get(&v, "status"), "ok 0000000000000000 0000000000000000 1 2", "no capabilities, no_new_privs, seccomp filter");
        // Its cgroup namespace is rooted at its leaf, and no cgroup fs is mounted in its root.
        assert!(get(&v, "cgroup_view").contains("0::/"), "{}", get(&v, "cgroup_view"));
        for k in ["cgroup_write /sys/fs/cgroup/cgroup.procs", "cgroup_write /sys/fs/cgroup/pids/cgroup.procs", "cgroup_write /sys/fs/cgroup/unified/cgroup.procs", "cgroup_write /sys/fs/cgroup/memory/cgroup.procs"] {
            denied(&v, k, &["ENOENT", "EACCES", "EROFS", "EPERM"]);
        }
        for k in ["mount_cgroup2", "mount_tmpfs", "umount_mask", "pivot_root", "chroot", "unshare_user", "unshare_mnt", "unshare_net", "unshare_pid", "unshare_cgroup", "clone_newuser", "setns"] {
            denied(&v, k, &["EPERM", "EACCES", "ENOSYS", "EINVAL"]);
        }
        for k in ["mount_bin", "unshare_bin", "strace"] {
            let got = get(&v, k);
            assert!(got.starts_with("ERR exit"), "{k}: {got}");
        }
        for k in ["ptrace_pid1", "ptrace_traceme", "process_vm_readv", "bpf", "perf_event_open", "kexec_load", "init_module", "keyctl", "userfaultfd"] {
            denied(&v, k, &["EPERM", "EACCES", "ENOSYS", "ESRCH"]);
        }
        // The victim is outside its pid namespace: it does not exist for the agent.
        denied(&v, "kill_victim", &["ESRCH", "EPERM"]);
        assert!(victim.try_wait().unwrap().is_none(), "the host process was killed");
        victim.kill().unwrap();
        let _ = victim.wait();
        assert_eq!(get(&v, "ppid"), "ok 1", "the agent's parent is its init (pid 1); the supervisor has no pid in the namespace");
        for k in ["io_uring_setup", "io_uring_enter"] {
            denied(&v, k, &["EPERM", "ENOSYS", "EACCES"]);
        }
        // x32 numbers never run (the filter rejects nr & 0x40000000).
        for k in ["x32_getpid", "x32_write"] {
            let got = get(&v, k);
            assert!(got.starts_with("ERR"), "{k}: {got}");
        }
        assert!(!r.stdout.contains("X32-RAN"));
        assert_eq!(get(&v, "control_getpid"), "ok 4", "the agent is pid 4 of its namespace: pid 1 is aegis's init, pid 2 the file helper (attack.toml's write grant has protected names absent at launch), pid 3 the connect broker");
        assert_launch_recorded(&tg.log);
    }
}

/// Terminal injection (the bubblewrap CVE-2017-5226 class): the agent shares the user's
/// controlling terminal and pushes `echo PWNED\n` into its input with TIOCSTI, so the shell
/// would run it after the agent exits. This host allows TIOCSTI (dev.tty.legacy_tiocsti=1);
/// the seccomp filter must refuse it, including with high bits set in the 64-bit argument
/// (the kernel truncates `cmd` to 32 bits), and TIOCLINUX.
#[test]
fn terminal_input_injection_is_refused() {
    if !sandbox_ready() {
        return;
    }
    let runner = fixture("tty_inject.py");
    let parse = |r: &Run| -> Value {
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    };
    // Control, without the sandbox: shows the attack works here, so the test can fail.
    let control = parse(&run_for(Command::new("/usr/bin/python3").arg(&runner), Duration::from_secs(30)));
    if control["injected"] != "echo PWNED\n" {
        eprintln!("note: TIOCSTI is refused on this host even without a sandbox: {control}");
    }
    let tg = target();
    let mut c = Command::new("/usr/bin/python3");
    c.arg(&runner).arg(aegis_tests::bin("aegis-exec")).env("AEGIS_STATE_DIR", &tg.lab.state).env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    c.arg("--trust-key").arg(&tg.lab.public).arg("--audit-log").arg(&tg.log);
    for (k, v) in tg.params() {
        c.arg("--param").arg(format!("{k}={}", v.display()));
    }
    c.arg(&tg.bundle).arg("--");
    let v = parse(&run_for(&mut c, Duration::from_secs(60)));
    assert_eq!(v["code"], 0, "{v}");
    assert_eq!(v["agent"], "AGENT tioclinux=ERR 1|tiocsti=ERR 1|tiocsti_high_bits=ERR 1", "EPERM from seccomp for all three: {v}");
    assert_eq!(v["injected"], "", "nothing reached the terminal's input: {v}");
    assert_launch_recorded(&tg.log);
}

/// The supervisor's side stays out of reach (DESIGN principle 5): the audit log, the signing
/// and trust keys and the serial store sit next to the agent's directories on the host
/// (same parent), yet the agent can neither read nor write them, nor list their directory.
#[test]
fn the_supervisors_log_keys_and_state_are_out_of_reach() {
    if !sandbox_ready() {
        return;
    }
    let tg = target();
    let key = tg.lab.key.display().to_string();
    let public = tg.lab.public.display().to_string();
    let log = tg.log.display().to_string();
    let serials = tg.lab.state.join("serials.json").display().to_string();
    let parent = tg.lab.tmp.path().display().to_string();
    let body = r##"
key, pub, log, serials, parent = A
t("read_key", lambda: open(key).read())
t("read_pub", lambda: open(pub).read())
t("append_log", lambda: open(log, "a").write("{}\n"))
t("read_log", lambda: open(log).read())
t("write_serials", lambda: open(serials, "w").write("{}"))
t("list_parent", lambda: os.listdir(parent))
t("replace_log", lambda: os.rename(W + "/ok", log))
"##;
    std::fs::write(tg.work.join("ok"), "x").unwrap();
    let (v, _) = tg.attack(body, &[&key, &public, &log, &serials, &parent]);
    for k in ["read_key", "read_pub", "append_log", "read_log", "write_serials", "list_parent", "replace_log"] {
        denied(&v, k, &["ENOENT", "EACCES", "EROFS", "EXDEV", "EPERM"]);
    }
    // The store holds what the supervisor recorded for this launch, not the agent's "{}".
    let store: Value = serde_json::from_str(&std::fs::read_to_string(tg.lab.state.join("serials.json")).unwrap()).unwrap();
    assert!(store["e2e-attack"].as_u64().is_some_and(|s| s > 0), "serial store: {store}");
    assert_launch_recorded(&tg.log);
}

/// An agent under `coding-agent.toml` plants a hook directory in the workspace and points
/// `core.hooksPath` at it from `.git/config`, so that the user's next `git commit` on the
/// host would run it. `.git/config` is a built-in protection (read-only, still readable), so
/// the plant fails and the host's commit runs nothing (the hook only touches a marker). The
/// renaming and replacing variants are in `protect.rs`.
#[test]
fn a_planted_git_hook_does_not_run_on_the_host() {
    if !sandbox_ready() {
        return;
    }
    for lab in Lab::each() {
        let ws = lab.agent_dir("repo");
        let r = run(Command::new("git").arg("init").arg("-q").arg(&ws));
        assert_eq!(r.code, 0, "{}", r.stderr);
        put(&ws.join("src/app.py"), "x = 1\n", None);
        let u = lab.agent_uid();
        let r = run(Command::new("chown").arg("-R").arg(format!("{u}:{u}")).arg(&ws));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let marker = lab.path("hook-ran-on-host");
        let bundle = lab.build(&policy("coding-agent.toml"), "bundle");
        let agent = format!(
            "import os\nws = {ws:?}\nos.makedirs(ws + '/src/hooks', exist_ok=True)\nopen(ws + '/src/hooks/pre-commit', 'w').write('#!/bin/sh\\ntouch {marker}\\n')\nos.chmod(ws + '/src/hooks/pre-commit', 0o755)\nopen(ws + '/.git/config', 'a').write('[core]\\n\\thooksPath = src/hooks\\n')\nprint('planted')\n",
            ws = ws.display().to_string(),
            marker = marker.display()
        );
        let r = lab.exec(&bundle, &[("WORKSPACE", ws.as_path())], &lab.path("audit.log"), &["/usr/bin/python3", "-c", &agent]);
        eprintln!("agent: exit {} {}{}", r.code, r.stdout, r.stderr);
        assert!(r.code != 0 && r.stderr.contains("Read-only file system") && !r.stdout.contains("planted"), "planting the config was not refused: {}{}", r.stdout, r.stderr);
        // Later, the user commits on the host (as the owner of the repository would).
        let c = run(Command::new("git")
            .args(["-c", "safe.directory=*", "-c", "user.name=u", "-c", "user.email=u@example.invalid", "-C"])
            .arg(&ws)
            .args(["commit", "-q", "--allow-empty", "-m", "user commit"]));
        eprintln!("host git commit: exit {} {}{}", c.code, c.stdout, c.stderr);
        assert!(!marker.exists(), "the agent's hook ran on the host during the user's git commit");
    }
}

/// A host service on an abstract UNIX socket (named by the test, on this host only) answers
/// "host-secret"; the agent tries to connect to it and reports what it read.
fn abstract_socket_attempt(lab: &Lab, bundle: &Path, params: &[(&str, &Path)], log: &Path) -> String {
    let name = format!("aegis-e2e-{}-{}", std::process::id(), lab.tmp.path().file_name().unwrap().to_string_lossy());
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\ntry:\n    s.connect('\\0{name}')\n    print('got', s.recv(64).decode())\nexcept OSError as e:\n    print('ERR', e.errno)\n"
    );
    // std has no abstract-socket API on stable without a feature; python on the host does it.
    let mut host = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import socket,sys\nu=socket.socket(socket.AF_UNIX); u.bind('\\0{name}'); u.listen(); print('ready', flush=True)\nu.settimeout(20)\ntry:\n    c,_=u.accept(); c.sendall(b'host-secret')\nexcept OSError:\n    pass\n"
        ))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(host.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let r = lab.exec(bundle, params, log, &["/usr/bin/python3", "-c", &script]);
    let _ = host.kill();
    let _ = host.wait();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    r.stdout.trim().to_string()
}

/// In network mode `none` the agent has its own network namespace, so the host's abstract
/// UNIX sockets (which live in the network namespace) do not exist for it.
#[test]
fn host_abstract_unix_sockets_are_unreachable_in_network_none() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.build(&fixture("probe-none.toml"), "bundle");
    let (data, out) = (lab.root_dir("data"), lab.agent_dir("out"));
    let got = abstract_socket_attempt(&lab, &bundle, &[("DATA", data.as_path()), ("OUT", out.as_path())], &lab.path("audit.log"));
    assert_eq!(got, format!("ERR {}", 111), "ECONNREFUSED: no such socket in the agent's netns");
}

/// In network mode `none` a direct attempt to reach the outside (TCP over IPv4 and IPv6, UDP)
/// fails at once, not after a timeout, and is recorded. The first layer to stop it is seccomp:
/// without a network grant the filter refuses INET sockets (EPERM), and the record names the
/// `socket` call. (Behind it, the namespace's table would reject a packet and record its
/// destination over NFLOG; `runtime/tests/netlog.rs` shows that layer alone, and proxy mode,
/// where INET sockets exist, in `a_direct_connection_that_bypasses_the_proxy_is_audited`.)
#[test]
fn direct_connects_in_network_none_fail_fast_and_are_recorded() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let bundle = lab.build(&fixture("probe-none.toml"), "bundle");
    let (data, out) = (lab.root_dir("data"), lab.agent_dir("out"));
    let log = lab.path("audit.log");
    let body = r##"
import time
def timed(name, f):
    t0 = time.monotonic()
    t(name, f)
    R[name + "_s"] = round(time.monotonic() - t0, 3)
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(20)
    u.connect(("192.0.2.7", 53))
    u.send(b"query")
    u.recv(512)
timed("tcp4", lambda: socket.create_connection(("192.0.2.7", 443), timeout=20))
timed("tcp6", lambda: socket.create_connection(("2001:db8::7", 443), timeout=20))
timed("udp4", udp)
"##;
    let script = format!("{PRELUDE}\n{body}\ndone()\n");
    let started = Instant::now();
    let r = lab.exec(&bundle, &[("DATA", data.as_path()), ("OUT", out.as_path())], &log, &["/usr/bin/python3", "-c", &script]);
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr));
    eprintln!("outcomes: {v}");
    for k in ["tcp4", "tcp6", "udp4"] {
        denied(&v, k, &["EPERM", "ECONNREFUSED", "EHOSTUNREACH"]);
        assert!(v[format!("{k}_s")].as_f64().unwrap() < 2.0, "{k}: fails at once, not after a timeout: {v}");
    }
    assert!(took < Duration::from_secs(20), "the launch took {took:?}");
    let events = assert_launch_recorded(&log);
    // The filter routes its denials to the supervisor, which answers them with the
    // program's errno and records each call with its arguments (no kernel log needed).
    let denials: Vec<&Value> = events.iter().filter(|e| e["kind"] == "denial" || e["kind"] == "kernel_denial").collect();
    eprintln!("denials: {denials:?}");
    let named = denials.iter().any(|d| {
        let detail = d["detail"].as_str().unwrap_or("");
        (d["kind"] == "denial" && d["layer"] == "seccomp" && d["access"]["name"] == "socket" && d["target"].as_str().is_some_and(|t| t.starts_with("socket(AF_INET")) && d["result"] == "EPERM")
            || (d["layer"] == "nftables" && detail.contains("192.0.2.7:443/tcp"))
    });
    assert!(named, "a record names the refused socket call or the destination: {denials:?}");
}

/// BUG (runtime/landlock): in network mode `host` the agent shares the host's network
/// namespace and with it every abstract UNIX socket of the host (the containerd-shim
/// CVE-2020-15257 class). The kernel has Landlock ABI 7, whose
/// LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (ABI 6) would refuse this, but the ruleset sets no
/// scope ("scopes: (none)" in landlock.txt).
#[test]
fn host_abstract_unix_sockets_are_unreachable_in_network_host() {
    if !sandbox_ready() {
        return;
    }
    for tg in targets() {
        let got = abstract_socket_attempt(&tg.lab, &tg.bundle, &tg.params(), &tg.log);
        assert!(got.starts_with("ERR"), "the agent reached a host abstract socket: {got}");
    }
}

/// BUG (nftables/landlock lowering): in network mode `host` the agent may listen on any TCP
/// port of the host and serve whoever connects: Landlock handles only `connect_tcp` (not
/// `bind_tcp`), and the agent's output chain accepts `ct state established` packets in both
/// directions, so its replies to an inbound connection leave. An inbound channel the policy
/// never granted (here a loopback client; on a real host any peer that can reach it).
#[test]
fn the_agent_cannot_serve_inbound_connections_in_network_host() {
    if !sandbox_ready() {
        return;
    }
    for tg in targets() {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let script = format!(
            "import socket\nl = socket.socket(); l.settimeout(5)\ntry:\n    l.bind(('127.0.0.1', {port})); l.listen(); print('listening', flush=True)\n    c, _ = l.accept(); c.sendall(b'exfiltrated'); c.close(); print('served')\nexcept OSError as e:\n    print('ERR', e.errno)\n"
        );
        let mut c = tg.lab.exec_cmd(&tg.bundle, &tg.params(), &tg.log, &["/usr/bin/python3", "-c", &script]);
        let agent = std::thread::spawn(move || run_for(&mut c, Duration::from_secs(60)));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut received = String::new();
        while Instant::now() < deadline && !agent.is_finished() {
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = std::io::Read::read_to_string(&mut s, &mut received);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let r = agent.join().unwrap();
        assert!(received.is_empty(), "the agent served an inbound connection: {received:?}; agent said {}", r.stdout);
        assert!(!r.stdout.contains("served"), "{}", r.stdout);
    }
}

/// Finding (compiler/evaluator): `aegisc check attack.toml net ::ffff:127.0.0.1 47801 tcp`
/// answers DENY, but an IPv4-mapped IPv6 address is the same IPv4 endpoint to the kernel
/// (the packets are IPv4 to 127.0.0.1:47801) and the granted connection succeeds. The
/// evaluator should normalise mapped addresses; the kernel is right to allow it.
#[test]
fn an_ipv4_mapped_address_is_the_same_endpoint_for_the_evaluator() {
    if !sandbox_ready() {
        return;
    }
    let Some(granted) = bind_tcp("127.0.0.1:47801") else {
        aegis_tests::skip!("port 47801 on 127.0.0.1 is in use (attack.toml grants that fixed port)");
    };
    tcp_greeter(granted);
    let tg = target();
    differential(&tg.lab, &fixture("attack.toml"), &tg.params(), &[net("tcp", "::ffff:127.0.0.1", 47801)]);
}

/// Issue 6 §6: the kernel's own Landlock audit records (ABI 7, type 1423 in `/dev/kmsg`) of
/// the agent's domain are recorded as `kernel_denial`s. They exist only when the kernel's
/// audit is enabled; without it Landlock denials are explained by the supervisor's tracer
/// (`--explain`, tested in `why.rs`), and seccomp denials are answered and recorded by the
/// supervisor in every case (`seccomp_denials_are_recorded`).
#[test]
#[ignore = "HOST: Landlock writes denial records only when the kernel's audit is enabled (auditctl -e 1), which this machine does not have; seccomp denials are covered by seccomp_denials_are_recorded"]
fn landlock_and_seccomp_denials_are_recorded() {
    if !sandbox_ready() {
        return;
    }
    let tg = target();
    let body = r##"
t("landlock_exec", lambda: runp("/usr/bin/id"))
t("landlock_read", lambda: open("/usr/../" + W + "/../data/secret.txt").read())
t("seccomp_io_uring", lambda: call(425, 8, 0))
t("seccomp_ptrace", lambda: call(101, 16, 1, 0, 0))
"##;
    let (v, _) = tg.attack(body, &[]);
    for k in ["landlock_exec", "landlock_read", "seccomp_io_uring", "seccomp_ptrace"] {
        assert!(get(&v, k).starts_with("ERR"), "{k}: {}", get(&v, k));
    }
    let events = assert_launch_recorded(&tg.log);
    let layers: Vec<&str> = events.iter().filter(|e| e["kind"] == "kernel_denial").filter_map(|e| e["layer"].as_str()).collect();
    assert!(layers.contains(&"landlock"), "a Landlock denial is recorded: {layers:?}");
    assert!(layers.contains(&"seccomp"), "a seccomp denial is recorded: {layers:?}");
}

/// Refused system calls are answered by the supervisor (the filter routes the policy's
/// denials to it; it answers with the bundle program's own errno) and written to the audit
/// log as `denial` records naming the call with its decoded arguments, the errno and the
/// part of the policy that refused it: no kernel log (root's only) involved.
#[test]
fn seccomp_denials_are_recorded() {
    if !sandbox_ready() {
        return;
    }
    let tg = target();
    let body = r##"
t("seccomp_io_uring", lambda: call(425, 8, 0))
t("seccomp_ptrace", lambda: call(101, 16, 1, 0, 0))
"##;
    let (v, _) = tg.attack(body, &[]);
    for k in ["seccomp_io_uring", "seccomp_ptrace"] {
        assert_eq!(get(&v, k), "ERR EPERM", "{k}: the program's errno");
    }
    let events = assert_launch_recorded(&tg.log);
    let seccomp: Vec<&Value> = events.iter().filter(|e| e["kind"] == "denial" && e["layer"] == "seccomp").collect();
    let named = |target: &str| seccomp.iter().find(|e| e["target"].as_str().is_some_and(|t| t.starts_with(target)));
    let ptrace = named("ptrace(PTRACE_ATTACH, 1, NULL, NULL)").unwrap_or_else(|| panic!("the ptrace call is recorded: {seccomp:?}"));
    assert_eq!((ptrace["result"].as_str(), ptrace["source"].as_str()), (Some("EPERM"), Some("kernel")), "{ptrace}");
    assert_eq!(ptrace["access"]["args"].as_array().map(Vec::len), Some(6), "{ptrace}");
    assert!(ptrace["reason"].as_str().unwrap_or("").contains("tracing other processes"), "{ptrace}");
    assert!(named("io_uring_setup(8, NULL)").is_some(), "{seccomp:?}");
}

/// This launch's cgroup leaf, from the enforcement report ("... leaf NAME: ...").
fn leaf_name(events: &[Value]) -> String {
    let report = events.iter().find(|e| e["kind"] == "enforcement_report").unwrap();
    let cg = report["layers"].as_array().unwrap().iter().find(|l| l["layer"] == "cgroup").unwrap();
    let detail = cg["detail"].as_str().unwrap();
    let rest = detail.split("leaf ").nth(1).unwrap_or_else(|| panic!("no leaf in {detail}"));
    rest.split([':', ' ', ',']).next().unwrap().to_string()
}

/// The leaf is removed from every hierarchy once the agent is gone.
fn assert_leaf_removed(events: &[Value]) {
    let leaf = leaf_name(events);
    assert!(leaf.starts_with("e2e-limits-"), "{leaf}");
    for h in ["pids", "memory", "cpu", "cpuacct", "blkio", "unified", ""] {
        let p = Path::new("/sys/fs/cgroup").join(h).join("aegis").join(&leaf);
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

/// Launches limits.toml (pids 32, memory 64MiB, wall time 2s) with CMD; returns the run, the
/// elapsed time and the audit events.
fn limited(cmd: &[&str]) -> (Run, Duration, Vec<Value>) {
    let lab = Lab::new();
    let bundle = lab.build(&fixture("limits.toml"), "bundle");
    let log = lab.path("audit.log");
    let t = Instant::now();
    let r = lab.exec(&bundle, &[], &log, cmd);
    let took = t.elapsed();
    let events = assert_launch_recorded(&log);
    (r, took, events)
}

fn resource_events(events: &[Value]) -> Vec<String> {
    events.iter().filter(|e| e["kind"] == "resource").map(|e| e["limit"].as_str().unwrap_or("?").to_string()).collect()
}

/// The host stays usable while and after the bomb runs: this process can still fork.
fn host_can_fork() -> bool {
    Command::new("/bin/true").status().is_ok_and(|s| s.success())
}

#[test]
fn fork_bomb_is_contained_by_pids_max() {
    if !sandbox_ready() {
        return;
    }
    // Counts how many children it got before fork failed, then goes on as a classic bomb
    // until the wall clock ends it.
    let script = r#"
import os, time
n = 0
err = None
while True:
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
    except OSError as e:
        err = e.strerror
        break
print("forked", n, "then", err, flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"#;
    let (r, took, events) = limited(&["/usr/bin/python3", "-c", script]);
    assert!(host_can_fork());
    let line = r.stdout.lines().find(|l| l.starts_with("forked")).unwrap_or_else(|| panic!("{}\n{}", r.stdout, r.stderr));
    let n: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(n < 32, "at most pids.max - 1 children: {line}");
    assert!(line.contains("Resource temporarily unavailable"), "fork fails with EAGAIN: {line}");
    assert_eq!(r.code, 128 + 9, "the bomb is killed at the wall time: {}", r.stderr);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let res = resource_events(&events);
    assert!(res.contains(&"pids_limit".to_string()), "pids limit recorded: {res:?}");
    assert!(res.contains(&"wall_time".to_string()), "wall time recorded: {res:?}");
    assert_leaf_removed(&events);
}

#[test]
fn memory_bomb_is_killed_by_the_memory_limit() {
    if !sandbox_ready() {
        return;
    }
    let script = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n    print('MiB', 16 * len(chunks), flush=True)\n";
    let (r, took, events) = limited(&["/usr/bin/python3", "-c", script]);
    assert!(host_can_fork());
    assert_eq!(r.code, 128 + 9, "killed by SIGKILL (OOM): {}", r.stderr);
    let last: u64 = r.stdout.lines().filter_map(|l| l.strip_prefix("MiB ")).filter_map(|n| n.parse().ok()).max().unwrap_or(0);
    assert!(last <= 64, "never held more than the 64MiB limit: {last} MiB");
    assert!(took < Duration::from_secs(2), "killed by the OOM killer, not the wall clock: {took:?}");
    let res = resource_events(&events);
    assert!(res.contains(&"oom_kill".to_string()), "OOM kill recorded: {res:?}");
    let exited = events.iter().find(|e| e["kind"] == "agent_exited").unwrap();
    assert_eq!(exited["signal"], 9, "{exited}");
    let peak = exited["peak_memory_bytes"].as_u64().unwrap_or(0);
    assert!(peak <= 64 << 20, "peak {peak} within the limit");
    assert_leaf_removed(&events);
}

#[test]
fn wall_time_is_enforced() {
    if !sandbox_ready() {
        return;
    }
    let (r, took, events) = limited(&["/usr/bin/sleep", "20"]);
    assert_eq!(r.code, 128 + 9, "sleep is killed: {}", r.stderr);
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(6), "killed at the 2s wall time: {took:?}");
    let res = resource_events(&events);
    assert!(res.contains(&"wall_time".to_string()), "wall time recorded: {res:?}");
    let exited = events.iter().find(|e| e["kind"] == "agent_exited").unwrap();
    assert_eq!(exited["signal"], 9, "{exited}");
    assert_leaf_removed(&events);
}

