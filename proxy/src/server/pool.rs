//! The accept pool: threads blocked in `accept` on one listener, so that a new connection
//! never waits for a thread to be created.
//!
//! Input: a listener, the shared [`Proxy`] and the handler for one accepted connection.
//! Output: a spawner thread that keeps the pool topped up. Invariants: at most
//! [`MAX_CONNECTIONS`] connections are served at once (further ones wait in the listen
//! backlog); an error from `accept` backs off instead of spinning.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::{MAX_CONNECTIONS, Proxy};

/// Idle acceptors kept waiting in `accept` (so a new connection never waits for a thread
/// to be created), and the most kept when load drops.
const MIN_IDLE: usize = 4;

const MAX_IDLE: usize = 16;

/// A pool of threads blocked in `accept` on one listener: the one the kernel wakes serves
/// the connection itself; a spawner thread tops the pool up in the background when fewer
/// than [`MIN_IDLE`] are left, up to [`MAX_CONNECTIONS`] busy ones (further connections
/// wait in the listen backlog); surplus idle threads retire.
struct Pool {
    idle: AtomicUsize,
    wake: std::sync::Condvar,
    lock: std::sync::Mutex<()>,
}

type Handler = fn(&Proxy, TcpStream);

pub(super) fn start_pool(name: &'static str, listener: TcpListener, proxy: Arc<Proxy>, handler: Handler) -> std::io::Result<std::thread::JoinHandle<()>> {
    let listener = Arc::new(listener);
    let pool = Arc::new(Pool {
        idle: AtomicUsize::new(0),
        wake: std::sync::Condvar::new(),
        lock: std::sync::Mutex::new(()),
    });
    std::thread::Builder::new().name(name.into()).spawn(move || {
        loop {
            while pool.idle.load(Ordering::Acquire) < MIN_IDLE && proxy.active.load(Ordering::Acquire) < MAX_CONNECTIONS {
                pool.idle.fetch_add(1, Ordering::AcqRel);
                let (l, p, pl) = (listener.clone(), proxy.clone(), pool.clone());
                if std::thread::Builder::new().name("aegis-proxy-conn".into()).spawn(move || acceptor(&l, &p, &pl, handler)).is_err() {
                    pool.idle.fetch_sub(1, Ordering::AcqRel);
                    break;
                }
            }
            let Ok(guard) = pool.lock.lock() else { return };
            // Re-checked every second as well, in case a wake-up was missed.
            let _ = pool.wake.wait_timeout(guard, Duration::from_secs(1));
        }
    })
}

fn acceptor(listener: &TcpListener, proxy: &Proxy, pool: &Pool, handler: Handler) {
    loop {
        let Ok((stream, _)) = listener.accept() else {
            // Out of descriptors or memory: back off instead of spinning on the error.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        proxy.active.fetch_add(1, Ordering::AcqRel);
        if pool.idle.fetch_sub(1, Ordering::AcqRel) <= MIN_IDLE {
            pool.wake.notify_one();
        }
        handler(proxy, stream);
        proxy.active.fetch_sub(1, Ordering::AcqRel);
        if pool.idle.load(Ordering::Acquire) >= MAX_IDLE {
            return;
        }
        pool.idle.fetch_add(1, Ordering::AcqRel);
    }
}
