//! nftables target: snapshots of the artifact per mode, determinism, `nft -c` of every
//! artifact after launch-time filling, and (as root) a real load/verify/delete cycle.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::Command;

use aegis_targets::nftables::{
    Dispatch, Endpoint, Host, NetMode, NetPolicy, PortRange, Proto, Ruleset, apply, lower, table_exists,
};

fn host_policy() -> NetPolicy {
    NetPolicy {
        mode: NetMode::Host,
        endpoints: vec![
            Endpoint {
                host: Host::Name("api.github.com".into()),
                ports: vec![PortRange { lo: 443, hi: 443 }],
                protocols: vec![Proto::Tcp],
            },
            Endpoint {
                host: Host::Cidr { addr: "10.20.0.0".parse().unwrap(), prefix: 16 },
                ports: vec![PortRange { lo: 8000, hi: 8080 }, PortRange { lo: 22, hi: 22 }],
                protocols: vec![Proto::Udp, Proto::Tcp],
            },
            Endpoint {
                host: Host::Ip("2001:db8::1".parse().unwrap()),
                ports: vec![PortRange { lo: 5432, hi: 5432 }],
                protocols: vec![Proto::Tcp],
            },
        ],
        resolvers: vec!["127.0.0.53".parse().unwrap(), "::1".parse().unwrap()],
    }
}

fn own_ns(mode: NetMode) -> NetPolicy {
    NetPolicy { mode, endpoints: vec![], resolvers: vec![] }
}

/// Proxy mode with two transparent TCP forwards (a database, and an IPv6 service).
fn proxy_forwards() -> NetPolicy {
    NetPolicy {
        mode: NetMode::Proxy { port: 3128 },
        endpoints: vec![
            Endpoint {
                host: Host::Ip("10.0.0.5".parse().unwrap()),
                ports: vec![PortRange { lo: 5432, hi: 5432 }],
                protocols: vec![Proto::Tcp],
            },
            Endpoint {
                host: Host::Ip("2001:db8::5".parse().unwrap()),
                ports: vec![PortRange { lo: 8000, hi: 8001 }],
                protocols: vec![Proto::Tcp],
            },
        ],
        resolvers: vec![],
    }
}

/// `snapshots/nftables/nftables_target__NAME.snap`: the name this file's snapshots had when it was its
/// own test binary (insta would now prefix the module path `all::nftables_target`).
fn snap(name: &str, value: String) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/nftables"));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(format!("nftables_target__{name}"), value));
}

fn nft_available() -> bool {
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("SKIP: the nft binary is not installed");
            false
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn snapshots_per_mode_and_determinism() {
    for (name, agent, p) in [
        ("host", "coding-agent", host_policy()),
        ("none", "offline", own_ns(NetMode::None)),
        ("proxy", "browser", own_ns(NetMode::Proxy { port: 3128 })),
        ("proxy_forwards", "db-client", proxy_forwards()),
    ] {
        let a = lower(agent, &p).unwrap();
        assert_eq!(a.to_json(), lower(agent, &p).unwrap().to_json(), "{name}: same input, same bytes");
        let back = Ruleset::from_json(&a.to_json()).unwrap();
        assert_eq!(back.mode(), p.mode, "{name}: mode read back from the artifact");
        snap(&format!("{name}_json"), String::from_utf8(a.to_json()).unwrap());
        snap(&format!("{name}_text"), a.to_text());
    }
    let a = lower("coding-agent", &host_policy()).unwrap();
    let hs = a.host_sets();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].name, "api.github.com");
}

#[test]
fn bad_policies_are_rejected() {
    let mut p = host_policy();
    p.endpoints[0].ports = vec![PortRange { lo: 10, hi: 5 }];
    assert!(lower("a", &p).unwrap_err().to_string().contains("ports"));
    let mut p = host_policy();
    p.endpoints[0].host = Host::Name("Evil\";drop".into());
    assert!(lower("a", &p).is_err());
    let mut p = host_policy();
    p.endpoints[1].host = Host::Cidr { addr: "10.0.0.0".parse().unwrap(), prefix: 33 };
    assert!(lower("a", &p).is_err());
    assert!(lower("Bad Agent", &host_policy()).is_err());
    let mut p = own_ns(NetMode::None);
    p.endpoints = host_policy().endpoints;
    assert!(lower("a", &p).is_err(), "endpoints need host mode");
    let mut p = proxy_forwards();
    p.endpoints[0].host = Host::Name("db.example.com".into());
    assert!(lower("a", &p).is_err(), "a proxy-mode forward is one address");
    let mut p = proxy_forwards();
    p.endpoints[0].protocols = vec![Proto::Udp];
    assert!(lower("a", &p).is_err(), "a proxy-mode forward is TCP");
    assert!(Ruleset::from_json(br#"{"nftables":[{"table":{"family":"ip","name":"filter"}}]}"#).is_err());
}

#[test]
fn fill_puts_resolved_addresses_in_the_named_sets_and_renames_the_table() {
    let a = lower("coding-agent", &host_policy()).unwrap();
    let mut resolved = BTreeMap::new();
    resolved.insert(
        "api.github.com".to_string(),
        vec!["140.82.121.6".parse::<IpAddr>().unwrap(), "2606:50c0::6".parse().unwrap()],
    );
    let prefix = aegis_targets::nftables::instance_log_prefix("coding-agent", "7-0000beef");
    let filled: serde_json::Value = serde_json::from_slice(&a.fill("aegis_coding_agent_7", &prefix, &resolved)).unwrap();
    let items = filled["nftables"].as_array().unwrap();
    let set = |n: &str| items.iter().find(|o| o["set"]["name"] == n).unwrap()["set"].clone();
    assert_eq!(set("h4_api.github.com")["elem"], serde_json::json!(["140.82.121.6"]));
    assert_eq!(set("h6_api.github.com")["elem"], serde_json::json!(["2606:50c0::6"]));
    assert!(items.iter().filter(|o| o.get("rule").is_some()).all(|o| o["rule"]["table"] == "aegis_coding_agent_7"));
    // Every log statement carries this instance's prefix, none the agent-wide one.
    let logs: Vec<&serde_json::Value> = items
        .iter()
        .filter_map(|o| o.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap())
        .filter_map(|e| e.get("log"))
        .collect();
    assert!(!logs.is_empty());
    assert!(logs.iter().all(|l| l["prefix"] == "aegis:coding-agent:7-0000beef:deny "), "{logs:?}");
}

/// Two launches of one agent at once get different tables, and a later run can still tell
/// which supervisor each belonged to.
#[test]
fn instance_tables_are_unique_and_name_their_supervisor() {
    use aegis_targets::nftables::{instance_table, table_pid};
    let a = instance_table("coding_agent", 4242, 0x0a0b_0c0d);
    let b = instance_table("coding_agent", 4242, 0x0102_0304);
    assert_ne!(a, b);
    assert_eq!(a, "aegis_coding_agent_4242_0a0b0c0d");
    assert_eq!(table_pid(&a), Some(4242));
    // Older names (`aegis_<agent>_<pid>`) and an agent name ending in digits.
    assert_eq!(table_pid("aegis_coding_agent_77"), Some(77));
    assert_eq!(table_pid(&instance_table("a_12345678", 9, 0x1234_5678)), Some(9));
    assert_eq!(table_pid("aegis_coding_agent"), None);
    assert_eq!(table_pid("filter"), None);
}

/// Host mode for an agent with its own namespace: the supervisor forwards exactly what the
/// agent chain accepts, one address:port at a time; a network wider than one address (or a
/// huge port range) cannot be forwarded and says which grant it is.
#[test]
fn forward_targets_are_exactly_the_accepted_addresses_and_ports() {
    let mut p = host_policy();
    p.endpoints.remove(1); // the /16: see below
    let a = lower("fwd", &p).unwrap();
    let mut resolved = BTreeMap::new();
    resolved.insert("api.github.com".to_string(), vec!["140.82.121.6".parse::<IpAddr>().unwrap(), "140.82.121.5".parse().unwrap()]);
    let got: Vec<String> = a.forward_targets(&resolved).unwrap().iter().map(|(a, p)| format!("{a}/{p:?}")).collect();
    assert_eq!(
        got,
        [
            "127.0.0.53:53/Tcp",
            "127.0.0.53:53/Udp",
            "140.82.121.5:443/Tcp",
            "140.82.121.6:443/Tcp",
            "[::1]:53/Tcp",
            "[::1]:53/Udp",
            "[2001:db8::1]:5432/Tcp",
        ]
    );
    // An unresolved name forwards nothing (it is unreachable, as in the host's namespace).
    assert_eq!(a.forward_targets(&BTreeMap::new()).unwrap().len(), 5);
    let wide = lower("fwd", &host_policy()).unwrap();
    let e = wide.forward_targets(&resolved).unwrap_err();
    assert!(e.contains("10.20.0.0/16"), "{e}");
}

/// Every artifact, filled with plausible launch values, passes `nft -c -j -f FILE`; the host
/// dispatch rule passes `nft -c -f` against the loaded table.
#[test]
fn every_filled_artifact_passes_nft_check() {
    if !nft_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut resolved = BTreeMap::new();
    resolved.insert("api.github.com".to_string(), vec!["192.0.2.10".parse::<IpAddr>().unwrap()]);
    for (name, p) in [
        ("host", host_policy()),
        ("none", own_ns(NetMode::None)),
        ("proxy", own_ns(NetMode::Proxy { port: 3128 })),
        ("proxy_forwards", proxy_forwards()),
    ] {
        let a = lower("check", &p).unwrap();
        let f = dir.path().join(format!("{name}.json"));
        std::fs::write(&f, a.fill("aegis_check", "aegis:check:1-00000001:deny ", &resolved)).unwrap();
        let out = Command::new("nft").args(["-c", "-j", "-f"]).arg(&f).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        if name == "host" {
            // The variant for the agent's own namespace (no cgroup dispatch, NFLOG).
            let own = a.fill_own_netns("aegis_check", "aegis:check:1-00000001:deny ", &resolved);
            assert!(String::from_utf8_lossy(&own).contains(r#""group":1"#));
            std::fs::write(&f, own).unwrap();
            let out = Command::new("nft").args(["-c", "-j", "-f"]).arg(&f).output().unwrap();
            assert!(out.status.success(), "host in its own namespace: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Also the unfilled artifact (empty sets) is valid input.
        std::fs::write(&f, a.to_json()).unwrap();
        let out = Command::new("nft").args(["-c", "-j", "-f"]).arg(&f).output().unwrap();
        assert!(out.status.success(), "{name} unfilled: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Loads the host ruleset into the real kernel with a real cgroup leaf, sees it listed with
/// the dispatch rule, and sees it gone after drop.
#[test]
fn apply_loads_verifies_and_deletes_on_drop() {
    if !nft_available() {
        return;
    }
    if !is_root() {
        eprintln!("SKIP: loading nftables needs root");
        return;
    }
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if unified.join("cgroup.procs").exists() { unified.to_path_buf() } else { "/sys/fs/cgroup".into() };
    let leaf = root.join(format!("aegis-nfttest-{}", std::process::id()));
    std::fs::create_dir_all(&leaf).unwrap();
    let a = lower("nfttest", &host_policy()).unwrap();
    let table = format!("aegis_nfttest_{}", std::process::id());
    let cg = aegis_targets::nftables::nft_cgroup_path(&leaf).unwrap();
    let dispatch = Dispatch::of_dir(&leaf, 1).unwrap();
    let prefix = aegis_targets::nftables::instance_log_prefix("nfttest", "1-00000001");
    let loaded = apply(&a.fill(&table, &prefix, &BTreeMap::new()), &table, Some(dispatch));
    let ok = loaded.is_ok();
    if let Err(e) = &loaded {
        eprintln!("apply: {e}");
    }
    if ok {
        assert!(table_exists(&table));
        assert!(aegis_targets::nftables::table_present(&table, None).unwrap(), "netlink sees the table");
        assert!(aegis_targets::nftables::list_tables(None).unwrap().contains(&table), "the netlink dump lists it");
        assert!(!aegis_targets::nftables::table_present("aegis_no_such_table_x", None).unwrap());
        let listed = Command::new("nft").args(["list", "table", "inet", &table]).output().unwrap();
        let text = String::from_utf8_lossy(&listed.stdout);
        // The dispatch rule added over netlink reads back as the text form would.
        assert!(text.contains(&format!("socket cgroupv2 level 1 \"{cg}\" goto agent")), "{text}");
        assert!(text.contains("log prefix \"aegis:nfttest:1-00000001:deny \""), "{text}");
    }
    drop(loaded);
    assert!(!table_exists(&table), "table deleted on drop");
    assert!(!aegis_targets::nftables::table_present(&table, None).unwrap(), "netlink agrees");
    assert!(!aegis_targets::nftables::list_tables(None).unwrap().contains(&table));
    std::fs::remove_dir(&leaf).unwrap();
    assert!(ok, "apply failed");
}

/// The fast path of `none`/`proxy` launches: a namespace made before the agent, loaded by
/// `nft` in the background, verified over netlink, and not the host's namespace.
#[test]
fn a_premade_namespace_gets_its_table_and_is_not_the_hosts() {
    if !nft_available() || !is_root() {
        eprintln!("SKIP: needs root and nft");
        return;
    }
    let a = lower("premade", &own_ns(NetMode::Proxy { port: 3128 })).unwrap();
    let json = a.fill("aegis_premade_test", "aegis:premade:1-00000001:deny ", &BTreeMap::new());
    let pending = aegis_targets::nftables::load_in_new_netns(&json, "aegis_premade_test").unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let theirs = pending.ns.metadata().unwrap().ino();
    let mine = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert_ne!(theirs, mine, "a new network namespace");
    let loaded = pending.finish().unwrap();
    assert_eq!(loaded.table(), "aegis_premade_test");
    assert!(!aegis_targets::nftables::table_exists("aegis_premade_test"), "nothing in the host namespace");
    // A ruleset nft refuses is an error, not a silently empty namespace.
    let bad = aegis_targets::nftables::load_in_new_netns(br#"{"nftables":[{"rule":{}}]}"#, "aegis_bad").unwrap();
    assert!(bad.finish().is_err());
}
