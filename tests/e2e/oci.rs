//! Issue 15.4: `seccomp.oci.json` under a real OCI runtime. `runc` runs python3 (the host's
//! `/usr`, bind-mounted read-only into an otherwise empty root) in a container that shares the
//! host's network namespace, under the export of a host-mode policy granting a loopback
//! endpoint and of a policy without network. The program opens the sockets it is granted and
//! talks to test servers over them (TCP round trip, UDP `sendto`, unix stream socket pairs,
//! netlink route); the sockets the policy does not grant are refused with `EPERM`. The same
//! container without the filter (and with `CAP_NET_RAW`, so that `AF_PACKET` is refused by
//! nothing else) opens every one of them: the refusals are the export's. A policy whose exec
//! gate only the AEGIS supervisor can serve is refused by runc before anything runs (fail
//! closed). Root only (runc needs it here); SKIP when runc is missing.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use aegis_tests::{aegisc, have, is_root, run, run_for};

/// Each probe's outcome: `ok`, a reply, or the errno name.
const PROBES: &str = r#"
import errno, json, socket, sys
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
out = {}
def probe(name, f):
    try:
        r = f()
        out[name] = "ok" if r is None else r
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, str(e.errno))
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.sendall(b"x")
    assert b.recv(1) == b"x"
def tcp():
    s = socket.create_connection(("127.0.0.1", tcp_port), timeout=10)
    s.sendall(b"ping\n")
    return s.makefile().readline().strip()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"datagram", ("127.0.0.1", udp_port))
probe("socketpair_unix_stream", pair)
probe("unix_stream", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
probe("unix_dgram", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close())
probe("tcp_round_trip", tcp)
probe("udp_sendto", udp)
probe("inet6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).close())
probe("netlink_route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close())
probe("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close())
print(json.dumps(out))
"#;

/// Test servers on the host's loopback: a TCP server answering `pong <line>` to every
/// connection, and a UDP socket the program sends to.
struct Servers {
    tcp: u16,
    udp: UdpSocket,
}

fn servers() -> Servers {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut line = String::new();
            let mut conn = BufReader::new(conn);
            if conn.read_line(&mut line).is_ok() {
                let _ = writeln!(conn.get_mut(), "pong {}", line.trim());
            }
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    Servers { tcp, udp }
}

/// `aegisc build` of a policy with these `[exec]` and `[network]` sections; the export.
fn export(dir: &Path, name: &str, exec: &str, network: &str) -> Value {
    let policy = dir.join(format!("{name}.toml"));
    let text = format!("version = 1\n[agent]\nname = \"e2e-oci-{name}\"\n[filesystem]\nread = [\"/usr\"]\n{exec}\n[network]\n{network}\n");
    std::fs::write(&policy, text).unwrap();
    let out = dir.join(format!("{name}.bundle"));
    let r = run(aegisc().arg("build").arg(&policy).arg("-o").arg(&out));
    assert_eq!(r.code, 0, "aegisc build {name}: {}{}", r.stdout, r.stderr);
    serde_json::from_slice(&std::fs::read(out.join("seccomp.oci.json")).unwrap()).unwrap()
}

/// Runs the probes in a runc container under `seccomp` (none: no filter at all); returns
/// runc's outcome.
fn container(dir: &Path, id: &str, seccomp: Option<&Value>, s: &Servers) -> aegis_tests::Run {
    let bundle = dir.join(id);
    let rootfs = bundle.join("rootfs");
    for d in ["usr", "proc", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for (link, to) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")] {
        std::os::unix::fs::symlink(to, rootfs.join(link)).unwrap();
    }
    let caps = json!(["CAP_NET_RAW"]);
    let mut config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/usr/bin/python3", "-I", "-c", PROBES, s.tcp.to_string(), s.udp.local_addr().unwrap().port().to_string()],
            "env": ["PATH=/usr/bin", "LANG=C.UTF-8"],
            "cwd": "/",
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "aegis-oci",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=65536k"] },
            { "destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"] }
        ],
        "linux": {
            // The host's network namespace: the test servers are on its loopback.
            "namespaces": [{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }],
            "maskedPaths": ["/proc/kcore", "/proc/keys"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    });
    if let Some(filter) = seccomp {
        config["linux"]["seccomp"] = filter.clone();
    }
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let mut c = Command::new("runc");
    c.arg("--root").arg(dir.join("runc-state")).arg("run").arg("--bundle").arg(&bundle).arg(format!("{id}-{}", std::process::id()));
    run_for(&mut c, Duration::from_secs(60))
}

/// The probes' outcomes (the last line runc's container printed).
fn outcomes(what: &str, r: &aegis_tests::Run) -> Value {
    assert_eq!(r.code, 0, "{what}: runc exit {}\n{}\n{}", r.code, r.stdout, r.stderr);
    let v: Value = serde_json::from_str(r.stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{what}: {e}: {}\n{}", r.stdout, r.stderr));
    eprintln!("{what}: {v}");
    v
}

fn received(s: &Servers) -> bool {
    let mut buf = [0u8; 16];
    matches!(s.udp.recv_from(&mut buf), Ok((8, _)) if &buf[..8] == b"datagram")
}

/// A scratch directory and the test servers, or `None` (with a printed SKIP) where runc
/// cannot run.
fn lab() -> Option<(tempfile::TempDir, Servers)> {
    let why = if !is_root() {
        "runc needs root here"
    } else if !have("runc") {
        "runc is not installed (apt-get install runc)"
    } else {
        return Some((tempfile::tempdir().unwrap(), servers()));
    };
    eprintln!("SKIP: {why}");
    None
}

#[test]
fn runc_runs_a_networked_program_under_the_export_and_refuses_what_is_not_granted() {
    let Some((dir, s)) = lab() else { return };
    let exec = "[exec]\nallow = [\"/usr/bin/python3\"]";
    let host = export(dir.path(), "host", exec, &format!("mode = \"host\"\nallow = [\"127.0.0.1:{}\"]", s.tcp));
    let none = export(dir.path(), "none", exec, "mode = \"none\"");

    // Without the filter every probe succeeds: what the export refuses below, it refuses.
    let open = outcomes("no filter", &container(dir.path(), "open", None, &s));
    assert!(received(&s), "no filter: the UDP datagram arrived");
    for probe in ["socketpair_unix_stream", "unix_stream", "unix_dgram", "udp_sendto", "inet6", "netlink_route", "packet"] {
        assert_eq!(open[probe], "ok", "no filter: {probe}: {open}");
    }
    assert_eq!(open["tcp_round_trip"], "pong ping", "{open}");

    // The host-mode policy: the granted network works, unix stream sockets too.
    let v = outcomes("host-mode export", &container(dir.path(), "host", Some(&host), &s));
    assert_eq!(v["tcp_round_trip"], "pong ping", "TCP to the granted endpoint: {v}");
    assert_eq!(v["udp_sendto"], "ok", "{v}");
    assert!(received(&s), "host-mode export: the UDP datagram arrived");
    for probe in ["socketpair_unix_stream", "unix_stream", "inet6", "netlink_route"] {
        assert_eq!(v[probe], "ok", "host-mode export: {probe}: {v}");
    }
    // Refused by the filter (EPERM), as by AEGIS (which answers unix datagram sockets EACCES).
    assert_eq!(v["unix_dgram"], "EPERM", "{v}");
    assert_eq!(v["packet"], "EPERM", "AF_PACKET is no granted family: {v}");

    // No network: no inet socket at all; unix stream sockets and NETLINK_ROUTE remain.
    let v = outcomes("no-network export", &container(dir.path(), "none", Some(&none), &s));
    for probe in ["tcp_round_trip", "udp_sendto", "inet6", "unix_dgram", "packet"] {
        assert_eq!(v[probe], "EPERM", "no-network export: {probe}: {v}");
    }
    for probe in ["socketpair_unix_stream", "unix_stream", "netlink_route"] {
        assert_eq!(v[probe], "ok", "no-network export: {probe}: {v}");
    }
}

/// A policy without `[exec]` grants lets only the runtime's own first exec through, which
/// only the AEGIS supervisor can tell apart: the export keeps `SCMP_ACT_NOTIFY` for `execve`,
/// and runc refuses to start the container rather than run it unguarded.
#[test]
fn runc_refuses_an_export_whose_exec_gate_needs_the_aegis_supervisor() {
    let Some((dir, s)) = lab() else { return };
    let gated = export(dir.path(), "gated", "", "mode = \"none\"");
    let notified: Vec<&Value> = gated["syscalls"].as_array().unwrap().iter().filter(|e| e["action"] == "SCMP_ACT_NOTIFY").collect();
    assert_eq!(notified.len(), 1, "{notified:?}");
    assert_eq!(notified[0]["names"], json!(["execve", "execveat"]));
    let r = container(dir.path(), "gated", Some(&gated), &s);
    assert_ne!(r.code, 0, "runc ran it: {}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("listenerPath"), "runc says why: {}", r.stderr);
    assert!(!r.stdout.contains("socketpair"), "nothing ran: {}", r.stdout);
}
