//! The sockets of the agent's network namespace (the proxy's listener, transparent-forward
//! listeners, the NFLOG socket) are made inside that namespace and handed to the supervisor
//! (`aegis_runtime::handoff`): by the supervisor in its premade namespace (root, with a
//! table), by the child otherwise, and by the child of an unprivileged supervisor, which
//! cannot `setns` into the agent's namespace at all. Only loopback is used.

use aegis_targets::bundle::{Enforcement, NetworkMode};
use aegis_targets::nftables::{NetMode, NetPolicy};
use crate::common::*;
use std::net::TcpListener;

const PY: &str = "/usr/bin/python3";

/// Agent script: asks the proxy for a host the policy does not allow (the proxy answers
/// 403 itself), then talks through the transparent forward to `127.0.0.2:<port>`.
fn agent_script(forward_port: u16) -> String {
    format!(
        "import socket\n\
         s=socket.create_connection(('127.0.0.1',3128),timeout=5)\n\
         s.sendall(b'GET http://not-granted.invalid/ HTTP/1.1\\r\\nHost: not-granted.invalid\\r\\n\\r\\n')\n\
         print('proxy:', s.recv(64).split(b'\\r\\n')[0].decode())\n\
         f=socket.create_connection(('127.0.0.2',{forward_port}),timeout=5)\n\
         print('forward:', f.recv(64).decode())\n"
    )
}

/// A proxy-mode bundle that allows one transparent forward to `127.0.0.2:<port>`; with
/// `table`, its nftables ruleset too (root then premakes the namespace).
fn proxy_bundle(agent: &str, port: u16, table: bool, rootless: bool) -> TestBundle {
    let toml = format!(
        "version = 1\n[agent]\nname = \"{agent}\"\n[filesystem]\nread = [\"/usr\"]\n[exec]\nallow = [\"{PY}\"]\n[network]\nmode = \"proxy\"\nallow = [\"127.0.0.2:{port}\"]\n"
    );
    let mut spec = Spec::new(agent);
    spec.network = NetworkMode::Proxy;
    spec.extra_files.push(("policy.ir.json".into(), policy_ir(&toml)));
    spec.net = table.then(|| NetPolicy {
        mode: NetMode::Proxy { port: 3128 },
        endpoints: vec![aegis_targets::nftables::Endpoint {
            host: aegis_targets::nftables::Host::Ip("127.0.0.2".parse().unwrap()),
            ports: vec![aegis_targets::nftables::PortRange { lo: port, hi: port }],
            protocols: vec![aegis_targets::nftables::Proto::Tcp],
        }],
        resolvers: vec![],
    });
    if rootless {
        // This host's cgroups cannot be delegated to a user (hybrid v1): best-effort, and
        // the report must say so. nftables stays required: the user loads it.
        spec.enforcement.insert("cgroup".into(), Enforcement::BestEffort);
    }
    build(&spec, true)
}

/// A host service on `127.0.0.2:<port>` that greets each connection.
fn greeter() -> u16 {
    let l = TcpListener::bind(("127.0.0.2", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            use std::io::Write as _;
            let _ = c.write_all(b"hello from the host");
        }
    });
    port
}

fn assert_proxy_served(o: &std::process::Output, b: &TestBundle) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("proxy: HTTP/1.1 403"), "the proxy answered inside the agent's namespace: {out}\n{err}");
    assert!(out.contains("forward: hello from the host"), "the transparent forward relayed: {out}\n{err}");
    assert!(err.contains("proxy         fully enforced"), "{err}");
    let requests = b.events("proxy_request");
    assert!(
        requests.iter().any(|r| r.to_string().contains("not-granted.invalid")),
        "the refused request is audited: {requests:?}"
    );
}

#[test]
fn root_premade_namespace_gets_its_sockets_from_the_supervisor() {
    if !need_root("premade_sockets") || !have_nft() || !std::path::Path::new(PY).exists() {
        eprintln!("SKIP premade_sockets: needs root, nft and {PY}");
        return;
    }
    let port = greeter();
    let b = proxy_bundle("rt-hand-premade", port, true, false);
    let o = b.run(&["--verbose"], &[PY, "-c", &agent_script(port)]);
    assert_proxy_served(&o, &b);
    let err = text(&o).1;
    assert!(err.contains("nftables      fully enforced"), "{err}");
    assert!(err.contains("denials observed"), "NFLOG socket made in the premade namespace: {err}");
}

#[test]
fn root_child_makes_the_sockets_in_its_own_namespace() {
    if !need_root("child_sockets") || !std::path::Path::new(PY).exists() {
        return;
    }
    // No ruleset: no premade namespace, so the child makes the listeners from inside.
    let port = greeter();
    let b = proxy_bundle("rt-hand-child", port, false, false);
    let o = b.run(&["--verbose"], &[PY, "-c", &agent_script(port)]);
    assert_proxy_served(&o, &b);
}

#[test]
fn an_unprivileged_supervisor_runs_proxy_mode() {
    if !need_root("rootless_proxy") || !std::path::Path::new(PY).exists() {
        return;
    }
    let Some(uid) = unprivileged_user("rootless_proxy") else { return };
    let port = greeter();
    let b = proxy_bundle("rt-hand-user", port, true, true);
    b.give_to(uid);
    let o = b.command_as(uid, &["--verbose"], &[PY, "-c", &agent_script(port)]).output().unwrap();
    assert_proxy_served(&o, &b);
    let err = text(&o).1;
    assert!(err.contains("agent         uid 1000"), "the agent is the user: {err}");
    assert!(err.contains("cgroup        not enforced"), "the report says the cgroup layer is missing: {err}");
    assert!(err.contains("nftables      fully enforced"), "the user loaded the agent's table: {err}");
    assert!(err.contains("denials observed"), "{err}");
}

/// Without user namespaces there is no network namespace: with nftables best-effort the
/// proxy listens on a host loopback port, Landlock makes that port the agent's only TCP
/// destination, seccomp refuses other Internet sockets, and the proxy serves only the
/// agent's processes. As root and as a user.
#[test]
fn without_user_namespaces_the_proxy_is_the_only_way_out() {
    use aegis_targets::landlock::{FsAccess, FsRule, PathTemplate, loader_rules, lower_fs};
    use std::io::{BufRead as _, Read as _, Write as _};
    if !need_root("proxy_nouserns") || !std::path::Path::new(PY).exists() {
        return;
    }
    if aegis_targets::landlock::kernel_abi().0 < 4 {
        eprintln!("SKIP proxy_nouserns: Landlock ABI 4 (TCP rules) is needed");
        return;
    }
    let rule = |p: &str, access| FsRule { path: PathTemplate::parse(p).unwrap(), access, origin: format!("test {p}") };
    let mut rules = vec![rule("/usr", FsAccess::Read), rule("/usr/bin/python3", FsAccess::Exec), rule("/tmp", FsAccess::Write), rule("/dev/null", FsAccess::Write)];
    rules.extend(loader_rules(std::env::consts::ARCH));
    let ll = lower_fs(&rules);
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let script = format!(
        "import os, socket, sys, time\n\
         port = int(os.environ['HTTP_PROXY'].rsplit(':', 1)[1])\n\
         print('port', port, flush=True)\n\
         s = socket.create_connection(('127.0.0.1', port), timeout=5)\n\
         s.sendall(b'GET http://not-granted.invalid/ HTTP/1.1\\r\\nHost: not-granted.invalid\\r\\n\\r\\n')\n\
         print('proxy:', s.recv(64).split(b'\\r\\n')[0].decode(), flush=True)\n\
         def t(name, f):\n    try:\n        f(); print(name, 'ok', flush=True)\n    except OSError as e:\n        print(name, 'errno', e.errno, flush=True)\n\
         t('other_tcp', lambda: socket.create_connection(('127.0.0.1', {other_port}), timeout=2))\n\
         t('udp', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))\n\
         t('bind', lambda: socket.socket().bind(('127.0.0.1', 0)))\n\
         time.sleep(1.5)\n"
    );
    let mut runs: Vec<Option<u32>> = vec![None];
    runs.extend(unprivileged_user("proxy_nouserns_user").map(Some));
    for user in runs {
        let toml = "version = 1\n[agent]\nname = \"p\"\n[filesystem]\nread = [\"/usr\"]\n[exec]\nallow = [\"/usr/bin/python3\"]\n[network]\nmode = \"proxy\"\n";
        let mut spec = Spec::new("rt-proxy-nous");
        spec.network = NetworkMode::Proxy;
        spec.net = None;
        spec.landlock_abi = Some(ll.artifact.min_abi.0);
        spec.extra_files = vec![
            ("policy.ir.json".into(), policy_ir(toml)),
            ("landlock.json".into(), ll.artifact.to_json().unwrap().into_bytes()),
        ];
        for layer in ["namespaces", "nftables", "cgroup"] {
            spec.enforcement.insert(layer.into(), Enforcement::BestEffort);
        }
        let b = build(&spec, true);
        let mut cmd = match user {
            Some(uid) => {
                b.give_to(uid);
                b.command_as(uid, &["--verbose"], &[PY, "-c", &script])
            }
            None => b.command(&["--verbose"], &[PY, "-c", &script]),
        };
        let mut child = cmd.env("AEGIS_EXEC_TEST_NO_USERNS", "1").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port: u16 = first.trim().strip_prefix("port ").unwrap_or_else(|| panic!("{user:?}: {first}")).parse().unwrap();
        // A stranger (this test process) connects to the same port: refused without an answer.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"GET http://not-granted.invalid/ HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(answer.is_empty(), "{user:?}: the proxy served a process outside the agent: {answer}");
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{user:?}: {rest}{err}");
        assert!(rest.contains("proxy: HTTP/1.1 403"), "{user:?}: the agent's request reached the proxy: {rest}{err}");
        assert!(rest.contains("other_tcp errno 13"), "{user:?}: Landlock refuses any other TCP port: {rest}");
        assert!(rest.contains("udp errno 1"), "{user:?}: seccomp refuses UDP: {rest}");
        assert!(rest.contains("bind errno 13"), "{user:?}: binding TCP is refused: {rest}");
        assert!(err.contains("proxy         partially enforced") && err.contains("by port, not address"), "{user:?}: {err}");
        let notes = b.events("note");
        assert!(notes.iter().any(|n| n["message"].as_str().unwrap_or("").contains("not one of the agent's processes")), "{user:?}: {notes:?}");
    }
    drop(other);
}
