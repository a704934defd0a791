#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Network modes for real. Only loopback addresses of this host are used.

mod common;
use aegis_targets::bundle::NetworkMode;
use aegis_targets::nftables::{Endpoint, Host, NetMode, NetPolicy, PortRange, Proto};
use common::*;
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
