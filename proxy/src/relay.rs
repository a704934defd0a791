//! Moving bytes both ways once a connection is allowed: a raw TCP tunnel (CONNECT in
//! tunnel mode) and a TLS-to-TLS relay (an allowed WebSocket upgrade in inspect mode).
//!
//! Input: two connected streams. Output: bytes moved each way, when both directions have
//! ended. Invariants: when one side stops sending, the other side's write half is shut
//! down (half-close is preserved, so request/response protocols over a tunnel finish);
//! the TLS relay never buffers more than one read of plaintext per direction (the peer is
//! not read while the other side cannot take more), so a fast sender cannot make the
//! supervisor's memory grow.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;

use rustls::{ClientConnection, ServerConnection};

/// Tunnel between two TCP streams; `meanwhile` runs once the bytes flow (work that should
/// not delay them). Returns (bytes client→upstream, bytes upstream→client).
pub fn tcp(client: TcpStream, upstream: TcpStream, meanwhile: impl FnOnce()) -> (u64, u64) {
    let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
        return (0, 0);
    };
    let up = std::thread::spawn(move || pump(c2, u2));
    meanwhile();
    let down = pump(upstream, client);
    let up = up.join().unwrap_or(0);
    (up, down)
}

/// Copies `from` → `to` until EOF or error, then half-closes `to`. Uses splice(2) through a
/// pipe (no copy through user space) and falls back to read/write.
fn pump(mut from: TcpStream, mut to: TcpStream) -> u64 {
    let mut total = 0u64;
    match splice_all(&from, &to, &mut total) {
        Ok(()) => {}
        Err(_) if total == 0 => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                            break;
                        }
                        total += n as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        Err(_) => {}
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
    total
}

fn splice_all(from: &TcpStream, to: &TcpStream, total: &mut u64) -> std::io::Result<()> {
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills our two-element array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    struct Pipe([i32; 2]);
    impl Drop for Pipe {
        fn drop(&mut self) {
            // SAFETY: closing the pipe we created.
            unsafe {
                libc::close(self.0[0]);
                libc::close(self.0[1]);
            }
        }
    }
    let pipe = Pipe(p);
    const CHUNK: usize = 256 * 1024;
    // SAFETY (for the fcntl): setting the pipe size on our own pipe; failure is harmless.
    unsafe { libc::fcntl(pipe.0[1], libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    loop {
        // SAFETY: splice between fds we own; null offsets (sockets and pipes have none).
        let n = unsafe {
            libc::splice(from.as_raw_fd(), std::ptr::null_mut(), pipe.0[1], std::ptr::null_mut(), CHUNK, libc::SPLICE_F_MOVE)
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(());
        }
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above.
            let m = unsafe {
                libc::splice(pipe.0[0], std::ptr::null_mut(), to.as_raw_fd(), std::ptr::null_mut(), left, libc::SPLICE_F_MOVE)
            };
            if m < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                // Bytes already moved: report them, but stop (no fallback mid-stream).
                *total += (n as usize - left) as u64;
                return if *total == 0 { Ok(()) } else { Err(e) };
            }
            left -= m as usize;
        }
        *total += n as u64;
    }
}

/// One side of the TLS relay.
struct Side<'a> {
    conn: &'a mut dyn TlsConn,
    sock: &'a mut TcpStream,
    /// Plaintext read from this side, not yet accepted by the other side's writer.
    pending: Vec<u8>,
    read_closed: bool,
    /// close_notify queued on this side (once).
    notified: bool,
    moved: u64,
}

/// The parts of a rustls connection the relay needs (client and server alike).
pub trait TlsConn {
    fn read_tls_from(&mut self, s: &mut TcpStream) -> std::io::Result<usize>;
    fn write_tls_to(&mut self, s: &mut TcpStream) -> std::io::Result<usize>;
    fn process(&mut self) -> Result<(), rustls::Error>;
    fn plaintext_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn plaintext_write(&mut self, buf: &[u8]) -> std::io::Result<usize>;
    fn wants_write(&self) -> bool;
    fn close_notify(&mut self);
}

macro_rules! tls_conn {
    ($t:ty) => {
        impl TlsConn for $t {
            fn read_tls_from(&mut self, s: &mut TcpStream) -> std::io::Result<usize> {
                self.read_tls(s)
            }
            fn write_tls_to(&mut self, s: &mut TcpStream) -> std::io::Result<usize> {
                self.write_tls(s)
            }
            fn process(&mut self) -> Result<(), rustls::Error> {
                self.process_new_packets().map(|_| ())
            }
            fn plaintext_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.reader().read(buf)
            }
            fn plaintext_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.writer().write(buf)
            }
            fn wants_write(&self) -> bool {
                let common: &rustls::CommonState = self;
                common.wants_write()
            }
            fn close_notify(&mut self) {
                self.send_close_notify()
            }
        }
    };
}
tls_conn!(ServerConnection);
tls_conn!(ClientConnection);

fn set_nonblocking(s: &TcpStream, on: bool) -> bool {
    s.set_nonblocking(on).is_ok()
}

/// Relays plaintext between two TLS connections until both directions end. `initial`
/// holds plaintext already read from each side (client first) that must go to the other.
/// Returns (bytes client→upstream, bytes upstream→client).
pub fn tls(
    client: (&mut ServerConnection, &mut TcpStream),
    upstream: (&mut ClientConnection, &mut TcpStream),
    initial: (Vec<u8>, Vec<u8>),
) -> (u64, u64) {
    let mut a = Side {
        conn: client.0,
        sock: client.1,
        pending: initial.0,
        read_closed: false,
        notified: false,
        moved: 0,
    };
    let mut b = Side {
        conn: upstream.0,
        sock: upstream.1,
        pending: initial.1,
        read_closed: false,
        notified: false,
        moved: 0,
    };
    if !set_nonblocking(a.sock, true) || !set_nonblocking(b.sock, true) {
        return (0, 0);
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Move pending plaintext into the other side's TLS writer.
        transfer(&mut a, &mut b);
        transfer(&mut b, &mut a);
        // Flush TLS records.
        let mut broken = false;
        for s in [&mut a, &mut b] {
            while s.conn.wants_write() {
                match s.conn.write_tls_to(s.sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken {
            break;
        }
        if a.read_closed && b.read_closed && !a.conn.wants_write() && !b.conn.wants_write() {
            break;
        }
        let ev = |s: &Side| {
            let mut e = 0;
            if !s.read_closed && s.pending.is_empty() {
                e |= libc::POLLIN;
            }
            if s.conn.wants_write() {
                e |= libc::POLLOUT;
            }
            e
        };
        let mut fds = [
            libc::pollfd {
                fd: a.sock.as_raw_fd(),
                events: ev(&a),
                revents: 0,
            },
            libc::pollfd {
                fd: b.sock.as_raw_fd(),
                events: ev(&b),
                revents: 0,
            },
        ];
        if fds.iter().all(|f| f.events == 0) {
            break;
        }
        // SAFETY: poll on two pollfds we own; 5 minutes of total silence ends the relay.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 300_000) };
        if r == 0 {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            break;
        }
        for (s, f) in [(&mut a, fds[0]), (&mut b, fds[1])] {
            if f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 || s.read_closed {
                continue;
            }
            match s.conn.read_tls_from(s.sock) {
                Ok(0) => s.read_closed = true,
                Ok(_) => {
                    if s.conn.process().is_err() {
                        s.read_closed = true;
                    }
                    loop {
                        match s.conn.plaintext_read(&mut buf) {
                            Ok(0) => {
                                s.read_closed = true;
                                break;
                            }
                            Ok(n) => s.pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
                            Err(_) => break,
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => s.read_closed = true,
            }
        }
    }
    let _ = set_nonblocking(a.sock, false);
    let _ = set_nonblocking(b.sock, false);
    (a.moved, b.moved)
}

/// Hands `from`'s pending plaintext to `to`'s TLS writer (as much as it takes), and ends
/// `to`'s sending side once `from` has closed and everything was handed over.
fn transfer(from: &mut Side, to: &mut Side) {
    while !from.pending.is_empty() {
        match to.conn.plaintext_write(&from.pending) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                from.moved += n as u64;
                from.pending.drain(..n);
            }
        }
    }
    if from.read_closed && from.pending.is_empty() && !to.notified {
        to.notified = true;
        to.conn.close_notify();
    }
}
