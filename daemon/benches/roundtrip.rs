//! Cost of asking aegisd, against the alternatives a framework has: evaluating in-process
//! (needs the compiler linked in) and nothing else in this binary; `daemon/bench/compare.sh`
//! adds `aegisc check` per question (a process and a compile each time) with hyperfine.
//! Run: cargo bench -p aegis-daemon --bench roundtrip
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "a benchmark: a failed unwrap or index ends the run with its message")]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aegis_policy::eval::{self, Params, Query};

const SEND: &str = "{\"op\":\"check-api\",\"agent\":\"inbox-manager\",\"api\":\"gmail\",\"method\":\"POST\",\"path\":\"/gmail/v1/users/me/messages/send\"}\n";

fn ask(w: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str, buf: &mut String) {
    // One write per request, as a client that buffers its line does.
    w.write_all(line.as_bytes()).unwrap();
    buf.clear();
    r.read_line(buf).unwrap();
    assert!(buf.contains("\"DENY\""), "{buf}");
}

fn per_op(label: &str, n: u32, mut f: impl FnMut()) {
    for _ in 0..(n / 10).max(1) {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let per = t.elapsed() / n;
    println!("{label:<58} {:>9.1} µs/query  ({n} queries)", per.as_nanos() as f64 / 1000.0);
}

fn with_daemon(audit: &[&str], body: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aegisd"));
    cmd.arg("--socket").arg(&sock).stderr(Stdio::null());
    if audit.is_empty() {
        cmd.arg("--no-audit-log");
    } else {
        cmd.arg("--audit-log").arg(dir.path().join("audit.log")).args(&audit[1..]);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let policy = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/inbox-manager.toml")).canonicalize().unwrap();
    let mut s = UnixStream::connect(&sock).unwrap();
    writeln!(s, "{}", serde_json::json!({"op":"register","policy":policy})).unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
    body(&sock);
    child.kill().unwrap();
    child.wait().unwrap();
}

fn main() {
    let policy = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies/inbox-manager.toml"));
    let compiled = aegis_compiler::compile_file(policy).ok().unwrap();
    let q = Query::ApiHttp { api: "gmail".into(), method: "POST".into(), path: "/gmail/v1/users/me/messages/send".into() };
    let params = Params::new();
    per_op("in-process eval::evaluate (lower bound)", 200_000, || {
        std::hint::black_box(eval::evaluate(&compiled.policy, &params, &q).unwrap());
    });
    per_op("in-process compile_file + evaluate (what aegisc does)", 2_000, || {
        let c = aegis_compiler::compile_file(policy).ok().unwrap();
        std::hint::black_box(eval::evaluate(&c.policy, &params, &q).unwrap());
    });
    // The floor for any socket protocol on this machine: a line echoed by another thread.
    {
        let (a, b) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(b.try_clone().unwrap());
            let mut w = b;
            let mut line = String::new();
            while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let _ = w.write_all(line.replace("check-api", "\"DENY\"").as_bytes());
                line.clear();
            }
        });
        let mut w = a.try_clone().unwrap();
        let mut r = BufReader::new(a);
        let mut buf = String::new();
        per_op("echo thread over a Unix socket pair (floor)", 50_000, || ask(&mut w, &mut r, SEND, &mut buf));
    }
    with_daemon(&[], |sock| {
        let mut w = UnixStream::connect(sock).unwrap();
        let mut r = BufReader::new(w.try_clone().unwrap());
        let mut buf = String::new();
        per_op("aegisd, one connection, no audit log", 50_000, || ask(&mut w, &mut r, SEND, &mut buf));
        per_op("aegisd, new connection per query, no audit log", 10_000, || {
            let mut w = UnixStream::connect(sock).unwrap();
            let mut r = BufReader::new(w.try_clone().unwrap());
            ask(&mut w, &mut r, SEND, &mut buf);
        });
    });
    with_daemon(&["audit"], |sock| {
        let mut w = UnixStream::connect(sock).unwrap();
        let mut r = BufReader::new(w.try_clone().unwrap());
        let mut buf = String::new();
        per_op("aegisd, one connection, audit log (fdatasync per record)", 2_000, || ask(&mut w, &mut r, SEND, &mut buf));
    });
    with_daemon(&["audit", "--audit-group-commit"], |sock| {
        let mut w = UnixStream::connect(sock).unwrap();
        let mut r = BufReader::new(w.try_clone().unwrap());
        let mut buf = String::new();
        per_op("aegisd, one connection, audit log, --audit-group-commit", 20_000, || ask(&mut w, &mut r, SEND, &mut buf));
    });
}
