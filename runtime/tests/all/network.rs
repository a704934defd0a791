//! Network modes for real. Only loopback addresses of this host are used.

use aegis_targets::bundle::NetworkMode;
use aegis_targets::nftables::{Endpoint, Host, NetMode, NetPolicy, PortRange, Proto};
use crate::common::*;
use std::net::TcpListener;

const PY: &str = "/usr/bin/python3";

/// Python snippet: try to connect to each host:port, print `<port>:ok` or `<port>:blocked`.
fn probe_script(targets: &[(&str, u16)]) -> String {
    let list: Vec<String> = targets.iter().map(|(h, p)| format!("('{h}',{p})")).collect();
    format!(
        "import socket\nfor h,p in [{}]:\n    s=socket.socket(); s.settimeout(1.0)\n    try:\n        s.connect((h,p)); print(f'{{p}}:ok')\n    except Exception as e:\n        print(f'{{p}}:blocked {{e}}')\n",
        list.join(",")
    )
}

fn listener(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let p = l.local_addr().unwrap().port();
    (l, p)
}

#[test]
fn none_mode_cannot_reach_the_host_loopback() {
    if !need_root("none_mode") {
        return;
    }
    if !std::path::Path::new(PY).exists() {
        eprintln!("SKIP none_mode: {PY} missing");
        return;
    }
    let (_l, port) = listener("127.0.0.1");
    let b = build(&Spec::new("rt-netnone"), true);
    let o = b.run(&["--verbose"], &[PY, "-c", &probe_script(&[("127.0.0.1", port)])]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("{port}:blocked")), "host listener unreachable from the agent: {out}");
    // The ruleset was loaded into the agent's own namespace and reported.
    assert!(err.contains("nftables      fully enforced"), "{err}");
}

#[test]
fn host_mode_allows_the_granted_address_and_drops_the_rest() {
    if !need_root("host_mode") {
        return;
    }
    if !have_nft() || !std::path::Path::new(PY).exists() {
        eprintln!("SKIP host_mode: needs nft and {PY}");
        return;
    }
    let (_a, granted) = listener("127.0.0.1");
    let (_b, other_port) = listener("127.0.0.1");
    let (_c, other_addr_port) = listener("127.0.0.2");
    let mut spec = Spec::new("rt-nethost");
    spec.network = NetworkMode::Host;
    spec.net = Some(NetPolicy {
        mode: NetMode::Host,
        endpoints: vec![Endpoint {
            host: Host::Ip("127.0.0.1".parse().unwrap()),
            ports: vec![PortRange { lo: granted, hi: granted }],
            protocols: vec![Proto::Tcp],
        }],
        resolvers: vec![],
    });
    let b = build(&spec, true);
    let script = probe_script(&[("127.0.0.1", granted), ("127.0.0.1", other_port), ("127.0.0.2", other_addr_port)]);
    let o = b.run(&["--verbose"], &[PY, "-c", &script]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("{granted}:ok")), "granted endpoint reachable: {out}\n{err}");
    assert!(out.contains(&format!("{other_port}:blocked")), "other port dropped: {out}");
    assert!(out.contains(&format!("{other_addr_port}:blocked")), "other address dropped: {out}");
    // The host itself is not filtered: this test process can still connect.
    assert!(std::net::TcpStream::connect(("127.0.0.2", other_addr_port)).is_ok());
    assert!(b.tables().is_empty(), "table removed after exit");
    let denials = b.events("kernel_denial");
    eprintln!("kernel denials recorded: {denials:?}");
}

/// A UDP echo on `addr`, port chosen by the kernel.
fn udp_echo(addr: &str) -> u16 {
    let u = std::net::UdpSocket::bind((addr, 0)).unwrap();
    let port = u.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    });
    port
}

fn greeter(l: TcpListener) {
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            use std::io::Write as _;
            let _ = c.write_all(b"hello");
        }
    });
}

/// Host mode launched by a user: the host's namespace cannot be filtered without root, so
/// the agent gets its own namespace and the supervisor forwards exactly the granted
/// endpoints (TCP and UDP); everything else stays unreachable.
#[test]
fn host_mode_without_root_forwards_exactly_the_granted_endpoints() {
    if !need_root("host_forwarded") || !have_nft() || !std::path::Path::new(PY).exists() {
        eprintln!("SKIP host_forwarded: needs root (to switch to the test user), nft and {PY}");
        return;
    }
    let Some(uid) = unprivileged_user("host_forwarded") else { return };
    let (a, granted) = listener("127.0.0.2");
    let (b, other) = listener("127.0.0.2");
    greeter(a);
    greeter(b);
    let udp = udp_echo("127.0.0.2");
    let mut spec = Spec::new("rt-hostfwd");
    spec.network = NetworkMode::Host;
    spec.enforcement.insert("cgroup".into(), aegis_targets::bundle::Enforcement::BestEffort);
    spec.net = Some(NetPolicy {
        mode: NetMode::Host,
        endpoints: vec![
            Endpoint {
                host: Host::Ip("127.0.0.2".parse().unwrap()),
                ports: vec![PortRange { lo: granted, hi: granted }],
                protocols: vec![Proto::Tcp],
            },
            Endpoint {
                host: Host::Ip("127.0.0.2".parse().unwrap()),
                ports: vec![PortRange { lo: udp, hi: udp }],
                protocols: vec![Proto::Udp],
            },
        ],
        resolvers: vec![],
    });
    let b = build(&spec, true);
    b.give_to(uid);
    let script = format!(
        "{}import socket\nu=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)\nu.sendto(b'ping', ('127.0.0.2', {udp}))\ntry:\n    print('udp:', u.recv(16).decode())\nexcept Exception as e:\n    print('udp: blocked', e)\n",
        probe_script(&[("127.0.0.2", granted), ("127.0.0.2", other), ("127.0.0.1", granted)])
    );
    let o = b.command_as(uid, &["--verbose"], &[PY, "-c", &script]).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("{granted}:ok")), "the granted endpoint is forwarded: {out}\n{err}");
    assert!(out.contains(&format!("{other}:blocked")), "another port of the same host is not: {out}");
    assert_eq!(out.matches(&format!("{granted}:blocked")).count(), 1, "the granted port on another address is not: {out}");
    assert!(out.contains("udp: ping"), "the granted UDP endpoint is relayed: {out}\n{err}");
    assert!(err.contains("host mode in the agent's own network namespace (the launcher is not root"), "{err}");
    assert!(err.contains(&format!("forwarded by the supervisor: tcp 127.0.0.2:{granted}; udp 127.0.0.2:{udp}")), "{err}");
    assert!(b.tables().is_empty(), "nothing was loaded into the host's namespace");
}

/// What cannot be forwarded one address at a time is refused with the fix, never widened.
#[test]
fn host_mode_without_root_refuses_a_network_wider_than_one_address() {
    if !need_root("host_forwarded_wide") || !have_nft() {
        return;
    }
    let Some(uid) = unprivileged_user("host_forwarded_wide") else { return };
    let mut spec = Spec::new("rt-hostwide");
    spec.network = NetworkMode::Host;
    spec.enforcement.insert("cgroup".into(), aegis_targets::bundle::Enforcement::BestEffort);
    spec.net = Some(NetPolicy {
        mode: NetMode::Host,
        endpoints: vec![Endpoint {
            host: Host::Cidr { addr: "10.20.0.0".parse().unwrap(), prefix: 16 },
            ports: vec![PortRange { lo: 5432, hi: 5432 }],
            protocols: vec![Proto::Tcp],
        }],
        resolvers: vec![],
    });
    let b = build(&spec, true);
    b.give_to(uid);
    let o = b.command_as(uid, &[], &["/bin/true"]).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(126), "{err}");
    assert!(err.contains("10.20.0.0/16") && err.contains("fix:"), "{err}");
}

/// Without user namespaces a user's agent has no network namespace, and the host's cannot
/// be filtered: host mode is refused unless the bundle makes nftables best-effort, and then
/// the report says the network is not filtered.
#[test]
fn host_mode_without_root_or_user_namespaces_is_refused_or_reported_unfiltered() {
    if !need_root("host_nouserns") {
        return;
    }
    let Some(uid) = unprivileged_user("host_nouserns") else { return };
    for best_effort in [false, true] {
        let mut spec = Spec::new(if best_effort { "rt-hostnous-be" } else { "rt-hostnous" });
        spec.network = NetworkMode::Host;
        spec.net = Some(NetPolicy { mode: NetMode::Host, endpoints: vec![], resolvers: vec![] });
        for layer in ["cgroup", "namespaces"] {
            spec.enforcement.insert(layer.into(), aegis_targets::bundle::Enforcement::BestEffort);
        }
        if best_effort {
            spec.enforcement.insert("nftables".into(), aegis_targets::bundle::Enforcement::BestEffort);
        }
        let b = build(&spec, true);
        b.give_to(uid);
        let o = b.command_as(uid, &["--verbose"], &["/bin/true"]).env("AEGIS_EXEC_TEST_NO_USERNS", "1").output().unwrap();
        let err = text(&o).1;
        if best_effort {
            assert_eq!(o.status.code(), Some(0), "{err}");
            assert!(err.contains("nftables      not enforced") && err.contains("UNFILTERED"), "{err}");
        } else {
            assert_eq!(o.status.code(), Some(126), "{err}");
            assert!(err.contains("network mode `host` needs a network namespace here"), "{err}");
        }
    }
}
