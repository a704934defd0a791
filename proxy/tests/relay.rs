//! The tunnel relay under a slow receiver: it must wait, not spin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into our timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// An agent writing small segments faster than the upstream reads fills the relay's pipe
/// by slots long before by bytes; the relay must then sleep in poll until the upstream
/// drains, not burn a core (which it did: ~100% CPU for the whole stall).
#[test]
fn a_slow_receiver_does_not_make_the_relay_spin() {
    let (mut agent, proxy_client_side) = pair();
    let (proxy_upstream_side, mut upstream) = pair();
    agent.set_nodelay(true).unwrap();
    let relay = std::thread::spawn(move || {
        let before = thread_cpu();
        let moved = aegis_proxy::relay::tcp(proxy_client_side, proxy_upstream_side, || ());
        (thread_cpu() - before, moved)
    });
    // The agent writes 100-byte segments for a second; the upstream reads nothing meanwhile.
    agent.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        match agent.write(&[b'x'; 100]) {
            Ok(n) => sent += n as u64,
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    // Now the upstream drains everything and both sides finish.
    agent.set_nonblocking(false).unwrap();
    agent.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    upstream.read_to_end(&mut got).unwrap();
    upstream.shutdown(std::net::Shutdown::Write).unwrap();
    let (cpu, (up, _down)) = relay.join().unwrap();
    assert_eq!(got.len() as u64, sent, "every byte arrives");
    assert_eq!(up, sent);
    assert!(cpu < Duration::from_millis(400), "the relay used {cpu:?} of CPU while the receiver stalled for 1 s");
}
