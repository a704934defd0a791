//! Direct connects in network mode `none`, observed for real: the bundles here carry no
//! seccomp filter (the test harness default), so the agent can open INET sockets and the
//! namespace's nftables table is the layer that stops it. Only documentation addresses
//! (192.0.2.0/24, 2001:db8::/32) are used; nothing leaves the namespace.

use crate::common::*;

const PY: &str = "/usr/bin/python3";

/// Each attempt prints `<name> <errno name> <seconds>`.
const SCRIPT: &str = r#"
import errno, socket, time
def attempt(name, f):
    t0 = time.monotonic()
    try:
        f(); r = "ok"
    except OSError as e:
        r = errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
    print(name, r, round(time.monotonic() - t0, 3), flush=True)
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(20)
    u.connect(("192.0.2.9", 53)); u.send(b"q"); u.recv(512)
attempt("tcp4", lambda: socket.create_connection(("192.0.2.9", 443), timeout=20))
attempt("tcp6", lambda: socket.create_connection(("2001:db8::9", 8443), timeout=20))
attempt("udp4", udp)
"#;

#[test]
fn direct_connects_in_none_mode_fail_fast_and_are_recorded_with_their_destination() {
    direct_connects(None);
}

/// The same for an unprivileged supervisor: `nft` loads the table as the user (in the
/// agent's user namespace), the child makes the NFLOG socket and the routes.
#[test]
fn an_unprivileged_launch_filters_and_records_direct_connects_too() {
    if !need_root("netlog_user") {
        return;
    }
    if let Some(uid) = unprivileged_user("netlog_user") {
        direct_connects(Some(uid));
    }
}

fn direct_connects(user: Option<u32>) {
    if !need_root("netlog") || !have_nft() {
        return;
    }
    if !std::path::Path::new(PY).exists() {
        eprintln!("SKIP netlog: {PY} missing");
        return;
    }
    let mut spec = Spec::new("rt-netlog");
    if user.is_some() {
        // This host's cgroups cannot be delegated to a user; nftables stays required.
        spec.enforcement.insert("cgroup".into(), aegis_targets::bundle::Enforcement::BestEffort);
    }
    let b = build(&spec, true);
    let started = std::time::Instant::now();
    let o = match user {
        Some(uid) => {
            b.give_to(uid);
            b.command_as(uid, &["--verbose"], &[PY, "-c", SCRIPT]).output().unwrap()
        }
        None => b.run(&["--verbose"], &[PY, "-c", SCRIPT]),
    };
    let took = started.elapsed();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    eprintln!("{out}");
    let result = |name: &str| -> (String, f64) {
        let line = out.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name} in {out}"));
        let parts: Vec<&str> = line.split(' ').collect();
        (parts[1].to_string(), parts[2].parse().unwrap())
    };
    for name in ["tcp4", "tcp6"] {
        let (e, secs) = result(name);
        assert_eq!(e, "ECONNREFUSED", "{name}: rejected with a TCP reset: {out}");
        assert!(secs < 1.0, "{name}: fails at once, not after a timeout: {out}");
    }
    // The datagram is dropped on the way out (EPERM on send) and answered with an ICMP error.
    let (e, secs) = result("udp4");
    assert!(["EPERM", "ECONNREFUSED"].contains(&e.as_str()), "udp4: {out}");
    assert!(secs < 1.0, "udp4: {out}");
    assert!(took < std::time::Duration::from_secs(15), "the launch took {took:?}");
    assert!(err.contains("denials observed"), "the report says denials are observed: {err}");
    assert!(err.contains("nftables      fully enforced"), "{err}");

    let denials: Vec<serde_json::Value> = b.events("kernel_denial").into_iter().filter(|e| e["layer"] == "nftables").collect();
    for line in std::fs::read_to_string(&b.log).unwrap().lines().filter(|l| l.contains("\"kernel_denial\"")) {
        eprintln!("audit record: {line}");
    }
    let count: u64 = denials.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    assert_eq!(count, 3, "one count per attempt: {denials:?}");
    assert_eq!(denials[0]["detail"], "connect to 192.0.2.9:443/tcp in network mode none (dropped and rejected)", "{denials:?}");
}

/// A looping agent is rate-limited: hundreds of attempts become a few records whose counts
/// add up to what the table logged (its own limit: 10/s, burst 20), not one record each.
#[test]
fn a_looping_agent_does_not_flood_the_log() {
    if !need_root("netlog") || !have_nft() {
        return;
    }
    if !std::path::Path::new(PY).exists() {
        eprintln!("SKIP netlog: {PY} missing");
        return;
    }
    let b = build(&Spec::new("rt-netlog-loop"), true);
    let script = "import socket, time\nt = time.monotonic()\nn = 0\nwhile time.monotonic() - t < 1.5:\n    n += 1\n    try:\n        socket.create_connection(('192.0.2.10', 443), timeout=5)\n    except OSError:\n        pass\nprint(n)\n";
    let o = b.run(&[], &[PY, "-c", script]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let attempts: u64 = out.trim().parse().unwrap();
    let denials: Vec<serde_json::Value> = b.events("kernel_denial").into_iter().filter(|e| e["layer"] == "nftables").collect();
    let count: u64 = denials.iter().map(|d| d["count"].as_u64().unwrap()).sum();
    eprintln!("{attempts} attempts, {} records, count {count}", denials.len());
    assert!(attempts > 100, "the loop ran: {attempts}");
    assert!(denials.len() <= 3, "at most one record a second: {denials:?}");
    // The table's limit (burst 20, then 10/s) lets about 35 log lines through in 1.5 s.
    assert!((20..=40).contains(&count), "count {count} for {attempts} attempts: {denials:?}");
}
