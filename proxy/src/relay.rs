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

/// Tunnel between two TCP streams, both directions in this one thread (poll + non-blocking
/// splice through a pipe per direction: no copy through user space, no second thread);
/// `meanwhile` runs once, after the first bytes moved (work that should not delay them).
/// Returns (bytes client→upstream, bytes upstream→client).
pub fn tcp(client: TcpStream, upstream: TcpStream, meanwhile: impl FnOnce()) -> (u64, u64) {
    let (Ok(up), Ok(down)) = (Dir::new(&client, &upstream), Dir::new(&upstream, &client)) else {
        return (0, 0);
    };
    if client.set_nonblocking(true).is_err() || upstream.set_nonblocking(true).is_err() {
        return (0, 0);
    }
    let mut dirs = [up, down];
    let mut meanwhile = Some(meanwhile);
    // Which sockets poll said are readable (both at first: bytes may be waiting already).
    let mut readable = [true, true];
    loop {
        let mut progressed = false;
        for (d, r) in dirs.iter_mut().zip(readable) {
            progressed |= d.step(r);
        }
        if progressed && let Some(f) = meanwhile.take() {
            f();
        }
        if dirs.iter().all(|d| d.done) {
            break;
        }
        // Poll each socket for what its directions need: dirs[0] reads the client and
        // writes upstream; dirs[1] the other way round.
        let events = |reader: &Dir, writer: &Dir| {
            let mut e = 0;
            if !reader.done && reader.wants_read() {
                e |= libc::POLLIN;
            }
            if !writer.done && writer.in_pipe > 0 {
                e |= libc::POLLOUT;
            }
            e
        };
        let mut fds = [
            libc::pollfd {
                fd: client.as_raw_fd(),
                events: events(&dirs[0], &dirs[1]),
                revents: 0,
            },
            libc::pollfd {
                fd: upstream.as_raw_fd(),
                events: events(&dirs[1], &dirs[0]),
                revents: 0,
            },
        ];
        // A socket nothing is wanted from is left out: poll would report its hang-up over
        // and over and this loop would spin.
        for f in fds.iter_mut() {
            if f.events == 0 {
                f.fd = -1;
            }
        }
        // SAFETY: poll on two pollfds we own (negative fds are ignored).
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
            break;
        }
        readable = fds.map(|f| f.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0);
    }
    let _ = client.set_nonblocking(false);
    let _ = upstream.set_nonblocking(false);
    (dirs[0].moved, dirs[1].moved)
}

/// One direction of a tunnel: `from` → pipe → `to`.
struct Dir {
    from: i32,
    to: i32,
    to_stream: Option<TcpStream>,
    pipe: [i32; 2],
    in_pipe: usize,
    /// The pipe refused more (its slots are per segment: small segments fill it long before
    /// `PIPE_SIZE` bytes); reading waits until bytes moved out, or poll would spin.
    pipe_full: bool,
    eof: bool,
    done: bool,
    moved: u64,
}

const PIPE_SIZE: usize = 256 * 1024;

impl Dir {
    fn new(from: &TcpStream, to: &TcpStream) -> std::io::Result<Dir> {
        let mut p = [0i32; 2];
        // SAFETY: pipe2 fills our two-element array.
        if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: resizing our own pipe; failure only means smaller splices.
        unsafe { libc::fcntl(p[1], libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        Ok(Dir {
            from: from.as_raw_fd(),
            to: to.as_raw_fd(),
            to_stream: to.try_clone().ok(),
            pipe: p,
            in_pipe: 0,
            pipe_full: false,
            eof: false,
            done: false,
            moved: 0,
        })
    }

    fn wants_read(&self) -> bool {
        !self.eof && !self.pipe_full && self.in_pipe < PIPE_SIZE
    }

    /// Moves what can move without blocking; true if any byte moved or the state changed.
    /// `readable`: poll said the source has something (no read is tried otherwise: an
    /// attempt that can only say EAGAIN is a wasted system call per message).
    fn step(&mut self, readable: bool) -> bool {
        if self.done {
            return false;
        }
        let mut progressed = false;
        let mut try_read = readable;
        loop {
            let mut moved_now = false;
            if try_read && self.wants_read() {
                // SAFETY: splice between fds we own; null offsets (sockets and pipes have none).
                let n = unsafe {
                    libc::splice(self.from, std::ptr::null_mut(), self.pipe[1], std::ptr::null_mut(), PIPE_SIZE - self.in_pipe, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
                };
                match n {
                    0 => {
                        self.eof = true;
                        progressed = true;
                    }
                    n if n > 0 => {
                        self.in_pipe += n as usize;
                        moved_now = true;
                    }
                    _ => {
                        let e = std::io::Error::last_os_error().kind();
                        if e == ErrorKind::WouldBlock && self.in_pipe > 0 {
                            // Poll said the socket has data, so it is the pipe that is full.
                            self.pipe_full = true;
                        } else if e != ErrorKind::WouldBlock && e != ErrorKind::Interrupted {
                            self.eof = true;
                            progressed = true;
                        }
                    }
                }
                // One read per wake-up unless it filled the pipe's request (more may wait).
                try_read = n > 0 && self.in_pipe >= PIPE_SIZE;
            }
            if self.in_pipe > 0 {
                // SAFETY: as above.
                let n = unsafe {
                    libc::splice(self.pipe[0], std::ptr::null_mut(), self.to, std::ptr::null_mut(), self.in_pipe, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
                };
                if n > 0 {
                    self.in_pipe -= n as usize;
                    self.pipe_full = false;
                    self.moved += n as u64;
                    moved_now = true;
                } else if n < 0 {
                    let e = std::io::Error::last_os_error().kind();
                    if e != ErrorKind::WouldBlock && e != ErrorKind::Interrupted {
                        // The receiver is gone: nothing more can be delivered this way.
                        self.in_pipe = 0;
                        self.eof = true;
                        progressed = true;
                    }
                }
            }
            progressed |= moved_now;
            if !moved_now {
                break;
            }
        }
        if self.eof && self.in_pipe == 0 {
            self.done = true;
            // Half-close: the other side learns this direction ended.
            if let Some(t) = &self.to_stream {
                let _ = t.shutdown(Shutdown::Write);
            }
            progressed = true;
        }
        progressed
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: closing the pipe we created.
        unsafe {
            libc::close(self.pipe[0]);
            libc::close(self.pipe[1]);
        }
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
