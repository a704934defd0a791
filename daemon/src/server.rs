//! The daemon proper: accept loop, one thread per connection, request handling, audit.
//!
//! Input: a [`Config`] (socket path, audit log, trust, group). Output: a [`Server`] that
//! serves until the process ends, answering each request line with one response line, and an
//! audit record per decision: every `check-*` answered with a verdict, every `register`
//! (accepted or refused) and every refused connection (`Event::Decision`, component
//! `aegisd`). Invariants: at most [`MAX_CONNECTIONS`] connections are served at once, and
//! at most [`MAX_PER_MEMBER`] of them for one uid that is not root or the daemon's own (a
//! group member cannot take every slot from the others); when a limit is reached, the new
//! connection takes the place of the connection (of that uid, for the per-uid limit) that
//! has waited longest on its peer (for a request, or for the peer to read an answer), which
//! is closed and gives its slot back at once; only when every such connection is being
//! answered is the new one told `busy`. A connection whose peer sent a request the daemon
//! has not read yet is not waiting on its peer (the daemon is behind, under load): it is
//! never evicted for that.
//! So peers that trickle a byte at a time, sit idle or never read cannot lock a well-behaved
//! client out. Time is bounded in
//! total, not only between bytes: a request line must be complete [`REQUEST_TIMEOUT`] after
//! its first byte, a connection may wait [`IDLE_TIMEOUT`] for its next request, and it is
//! closed [`CONNECTION_LIFETIME`] after it was accepted (after the answer in progress). A
//! request line is at most [`MAX_LINE`] bytes (a longer one is answered `request_too_large`
//! and the connection closed, since the stream can no longer be trusted to be in step); a
//! verdict is sent only after its audit record was appended; no request and no peer can stop
//! the accept loop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aegis_audit::{AuditContext, AuditWriter, Durability, Event, Verdict as AuditVerdict, WriterOptions};
use aegis_policy::eval::{Query, Verdict};
use serde_json::{Value, json};

use crate::error::{RequestError, StartError};
use crate::peer::{self, Admission, PeerCred};
use crate::protocol::{MAX_LINE, RegisterSource, Request, error_response, to_line};
use crate::registry::{Provenance, Registered, Registry, Trust};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections served at once for one uid admitted as a `--group` member (root and the
/// daemon's own uid are not limited by this).
pub const MAX_PER_MEMBER: usize = 16;
/// A connection is closed after this long without the first byte of its next request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request line must be complete this long after its first byte arrived.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted (clients reconnect).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Longest a record waits for its sync with `--audit-group-commit`.
pub const GROUP_COMMIT_DELAY: Duration = Duration::from_millis(20);
/// A peer that does not read its responses is dropped after this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `aegisd` was started with.
#[derive(Debug)]
pub struct Config {
    pub socket: PathBuf,
    pub audit_log: Option<PathBuf>,
    /// `--audit-group-commit`: sync the log at most every [`GROUP_COMMIT_DELAY`] instead of
    /// before every answer. A crash of aegisd still loses nothing (records are written
    /// before the answer); a power loss may lose the last window.
    pub group_commit: bool,
    pub trust: Trust,
    /// `--group`: its members are admitted (and the socket is mode 0660, that group).
    pub group: Option<u32>,
}

/// Shared by every connection thread.
struct State {
    registry: Registry,
    trust: Trust,
    admission: Admission,
    audit: Option<Mutex<AuditWriter>>,
    /// Live connections, by id: each holds one of the [`MAX_CONNECTIONS`] slots (an evicted
    /// one is removed at once, its thread ends on its own).
    conns: Mutex<std::collections::HashMap<u64, Arc<ConnState>>>,
}

/// What a connection is doing, as far as eviction goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wait {
    /// Waiting for a request (or the rest of one): evictable while no byte of it is unread
    /// on the socket (one that is, the daemon owes an answer to).
    Request,
    /// Taking bytes its peer sent (between poll and read): never evicted, or a request the
    /// daemon already holds would go unanswered.
    Reading,
    /// Waiting for the peer to read an answer: evictable.
    Reader,
}

/// A connection's state, changed only under its lock: the evictor decides and marks, and
/// the connection's thread claims the bytes it is about to read, each under it, so a
/// connection is never evicted with a request in the daemon's hands.
struct Life {
    /// Since when it waits (kept across the bytes of one request), and how; `None` while
    /// an answer is being computed.
    since: Option<(std::time::Instant, Wait)>,
    evicted: bool,
}

/// What the accept loop knows of a live connection.
struct ConnState {
    /// A second handle on the socket, to shut it down when the connection is evicted.
    stream: UnixStream,
    /// The peer's uid (per-member limit).
    uid: u32,
    life: Mutex<Life>,
    /// A copy of `life.evicted` for the connection's thread.
    evicted: AtomicBool,
}

impl ConnState {
    fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection as waiting (keeping the time it started waiting, if it already
    /// was) or, with `None`, as being answered.
    fn waiting(&self, what: Option<Wait>) {
        let mut life = self.life();
        life.since = match (what, life.since) {
            (None, _) => None,
            (Some(w), Some((t, _))) => Some((t, w)),
            (Some(w), None) => Some((std::time::Instant::now(), w)),
        };
    }

    /// Before reading bytes the poll said are there: false if the connection was evicted
    /// (then nothing is read).
    fn claim(&self) -> bool {
        let mut life = self.life();
        if life.evicted {
            return false;
        }
        if let Some((t, Wait::Request)) = life.since {
            life.since = Some((t, Wait::Reading));
        }
        true
    }

    /// Since when it waits on its peer, if it does (or its peer is gone: nothing it reads
    /// can be answered; a connection being answered is never evictable, its work has no
    /// slot once evicted).
    fn waiting_on_peer(&self, life: &Life) -> Option<std::time::Instant> {
        match life.since? {
            (t, Wait::Reader) => Some(t),
            (t, Wait::Request) if unread_bytes(&self.stream) == 0 => Some(t),
            (t, Wait::Request | Wait::Reading) if peer_gone(&self.stream) => Some(t),
            _ => None,
        }
    }

    /// Evicts the connection if it (still) waits on its peer.
    fn evict_if_waiting(&self) -> bool {
        let mut life = self.life();
        if life.evicted || self.waiting_on_peer(&life).is_none() {
            return false;
        }
        life.evicted = true;
        life.since = None;
        self.evicted.store(true, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        true
    }
}

/// The peer closed its end (a stream socket's POLLHUP).
fn peer_gone(s: &UnixStream) -> bool {
    let mut p = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(s), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLHUP != 0
}

/// Bytes the peer sent that the daemon has not read from the socket yet.
fn unread_bytes(s: &UnixStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int we own; the descriptor is the live socket.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(s), libc::FIONREAD, &mut n) };
    if rc == 0 { usize::try_from(n).unwrap_or(0) } else { 0 }
}

/// A bound daemon, ready to serve.
pub struct Server {
    listener: UnixListener,
    state: Arc<State>,
    socket: PathBuf,
}

impl Server {
    /// Opens the audit log and binds the socket (see [`crate::socket::bind`]).
    pub fn bind(config: Config) -> Result<Server, StartError> {
        let durability = if config.group_commit {
            Durability::Group { max_records: 256, max_delay: GROUP_COMMIT_DELAY }
        } else {
            Durability::EveryRecord
        };
        let audit = match &config.audit_log {
            Some(p) => Some(Mutex::new(
                AuditWriter::open(p, WriterOptions { durability, ..WriterOptions::default() })
                    .map_err(|e| StartError::Audit { path: p.clone(), message: e.to_string() })?,
            )),
            None => None,
        };
        let listener = crate::socket::bind(&config.socket, config.group)?;
        let state = State {
            registry: Registry::default(),
            trust: config.trust,
            admission: Admission { own_uid: peer::own_uid(), group: config.group },
            audit,
            conns: Mutex::new(std::collections::HashMap::new()),
        };
        Ok(Server { listener, state: Arc::new(state), socket: config.socket })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves forever (until the process is signalled).
    pub fn serve(&self) {
        let mut next_id: u64 = 0;
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                // EMFILE and friends: back off instead of spinning; the loop must survive.
                Err(e) => {
                    eprintln!("aegisd: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            next_id += 1;
            // The kernel's record of the peer: who it is decides its share of the slots.
            let peer = match peer::peer_cred(&stream) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("aegisd: cannot read peer credentials, closing: {e}");
                    continue;
                }
            };
            let member = !self.state.admission.is_admin(&peer);
            let Ok(handle) = stream.try_clone() else {
                continue;
            };
            let conn = Arc::new(ConnState {
                stream: handle,
                uid: peer.uid,
                life: Mutex::new(Life { since: Some((std::time::Instant::now(), Wait::Request)), evicted: false }),
                evicted: AtomicBool::new(false),
            });
            // One lock for counting, evicting and taking the slot: the count is exact.
            let room = {
                let mut conns = self.state.conns.lock().unwrap_or_else(PoisonError::into_inner);
                let room = if member && conns.values().filter(|c| c.uid == peer.uid).count() >= MAX_PER_MEMBER {
                    evict_longest_waiting(&mut conns, Some(peer.uid))
                } else {
                    conns.len() < MAX_CONNECTIONS || evict_longest_waiting(&mut conns, None)
                };
                if room {
                    conns.insert(next_id, Arc::clone(&conn));
                }
                room
            };
            if !room {
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let mut s = &stream;
                let _ = s.write_all(&to_line(&error_response(&RequestError::Busy { limit: MAX_CONNECTIONS })));
                continue;
            }
            let slot = Slot(Arc::clone(&self.state), next_id);
            let spawned = std::thread::Builder::new().name("aegisd-conn".into()).spawn(move || {
                let state = Arc::clone(&slot.0);
                serve_connection(&state, &conn, &peer, stream);
                drop(slot);
            });
            if let Err(e) = spawned {
                // The closure (and its slot) was dropped with the failed spawn.
                eprintln!("aegisd: cannot start a connection thread: {e}");
            }
        }
    }
}

/// One connection's place among [`MAX_CONNECTIONS`] (its id among the live connections);
/// released on drop, whatever happens (an evicted connection's was released already).
struct Slot(Arc<State>, u64);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.conns.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.1);
    }
}

/// Closes the connection (of `uid`, if given) that has waited longest on its peer and takes
/// it out of `conns`, so its slot is free at once; false if every such connection is being
/// answered (or has a request the daemon has not read yet). The evicted thread sees end of
/// stream (or a broken pipe) and ends without answering.
fn evict_longest_waiting(conns: &mut std::collections::HashMap<u64, Arc<ConnState>>, uid: Option<u32>) -> bool {
    let mut waiting: Vec<(std::time::Instant, u64)> = conns
        .iter()
        .filter(|(_, c)| uid.is_none_or(|u| c.uid == u))
        .filter_map(|(id, c)| c.waiting_on_peer(&c.life()).map(|t| (t, *id)))
        .collect();
    waiting.sort_unstable();
    // Decided again under each one's lock: it may have started reading meanwhile.
    let Some(id) = waiting.into_iter().map(|(_, id)| id).find(|id| conns.get(id).is_some_and(|c| c.evict_if_waiting())) else {
        return false;
    };
    conns.remove(&id);
    true
}

/// The connection's socket as a reader whose every read ends by a deadline: the whole
/// request line, not only the gap between two bytes, is bounded in time. It waits for bytes
/// in `poll` (evictable, as waiting on its peer) and claims them before it reads them (see
/// [`Life`]).
struct Deadlined<'a> {
    stream: &'a UnixStream,
    conn: &'a ConnState,
    deadline: std::time::Instant,
    /// Waiting for the first byte of a request (the deadline moves to the request's own
    /// once one arrives).
    idle: bool,
    /// When the connection must end.
    end: std::time::Instant,
}

impl Deadlined<'_> {
    /// Before reading the next request: `started` if part of it is already buffered.
    fn next_request(&mut self, started: bool) {
        let now = std::time::Instant::now();
        self.idle = !started;
        self.deadline = (now + if started { REQUEST_TIMEOUT } else { IDLE_TIMEOUT }).min(self.end);
    }
}

impl Read for Deadlined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.conn.waiting(Some(Wait::Request));
        loop {
            let now = std::time::Instant::now();
            if now >= self.deadline {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let ms = i32::try_from((self.deadline - now).as_millis().saturating_add(1)).unwrap_or(i32::MAX);
            let mut p = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(self.stream), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one pollfd we own.
            match unsafe { libc::poll(&mut p, 1, ms) } {
                n if n > 0 => break,
                0 => {}
                _ => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        // Bytes (or the end of the stream) are there: from now on the connection is the
        // daemon's to answer, unless it was evicted first.
        if !self.conn.claim() {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
        let n = (&*self.stream).read(buf)?;
        if n > 0 && self.idle {
            self.idle = false;
            self.deadline = (std::time::Instant::now() + REQUEST_TIMEOUT).min(self.end);
        }
        Ok(n)
    }
}

enum Line {
    Request(Vec<u8>),
    TooLong,
    End,
}

/// Reads one request line of at most [`MAX_LINE`] bytes. A final line without a newline is a
/// peer that went away mid-request: it is dropped, not answered.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let limit = (MAX_LINE + 1) as u64;
    let n = reader.take(limit).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Line::Request(buf));
    }
    if buf.len() > MAX_LINE { Ok(Line::TooLong) } else { Ok(Line::End) }
}

fn serve_connection(state: &State, conn: &ConnState, peer: &PeerCred, stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut out = &stream;
    if !state.admission.admits(peer) {
        let e = RequestError::NotPermitted { uid: peer.uid, what: "use this daemon" };
        let audited = state.audit(
            "",
            "",
            "",
            "connection",
            &format!("{peer}"),
            AuditVerdict::Deny,
            None,
            "peer is neither root, the daemon's user, nor a member of its group",
        );
        let e = audited.err().unwrap_or(e);
        let _ = out.write_all(&to_line(&error_response(&e)));
        return;
    }
    let now = std::time::Instant::now();
    let mut reader = BufReader::new(Deadlined { stream: &stream, conn, deadline: now, idle: true, end: now + CONNECTION_LIFETIME });
    loop {
        let started = !reader.buffer().is_empty();
        reader.get_mut().next_request(started);
        // A whole request already buffered is the daemon's to answer (pipelined requests).
        conn.waiting(Some(if reader.buffer().contains(&b'\n') { Wait::Reading } else { Wait::Request }));
        let line = match read_line(&mut reader) {
            Ok(Line::Request(l)) => l,
            Ok(Line::TooLong) => {
                let _ = out.write_all(&to_line(&error_response(&RequestError::TooLarge { limit: MAX_LINE })));
                return;
            }
            // End of stream, idle timeout, reset: nothing more to answer.
            Ok(Line::End) | Err(_) => return,
        };
        // Evicted while its request was on its way: the slot is another's now.
        if conn.evicted.load(Ordering::SeqCst) {
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        conn.waiting(None);
        let response = match state.answer(peer, &line) {
            Ok(v) => v,
            Err(e) => error_response(&e),
        };
        // Blocked on a peer that does not read is waiting on it too (evictable).
        conn.waiting(Some(Wait::Reader));
        if out.write_all(&to_line(&response)).is_err() {
            return;
        }
    }
}

impl State {
    fn answer(&self, peer: &PeerCred, line: &[u8]) -> Result<Value, RequestError> {
        let request = Request::parse(line)?;
        if let Some(q) = request.query() {
            let (agent, query) = q?;
            return self.check(peer, agent, &query);
        }
        if let Some(src) = request.register_source() {
            let params = match &request {
                Request::Register { params, .. } => params.clone(),
                _ => Default::default(),
            };
            return self.register(peer, src?, &params);
        }
        Ok(self.list())
    }

    fn check(&self, peer: &PeerCred, agent: &str, query: &Query) -> Result<Value, RequestError> {
        let r = self.registry.get(agent)?;
        let answer = r.check(query)?;
        let d = &answer.decision;
        let (subject, target) = describe(query);
        let rule = d.rule.as_ref().map(|rule| match &answer.location {
            Some(l) => format!("{} '{}' ({l})", rule.kind, rule.text),
            None => format!("{} '{}'", rule.kind, rule.text),
        });
        let verdict = match d.verdict {
            Verdict::Allow => AuditVerdict::Allow,
            Verdict::Deny => AuditVerdict::Deny,
        };
        let bundle = match &r.from {
            Provenance::Bundle { manifest_sha256, .. } => format!("sha256:{manifest_sha256}"),
            Provenance::Policy { .. } => String::new(),
        };
        self.audit(
            r.name(),
            &bundle,
            &r.policy_digest,
            subject,
            &target,
            verdict,
            rule,
            &format!("{} [asked by {peer}]", d.reason),
        )?;
        Ok(json!({
            "ok": true,
            "agent": r.name(),
            "verdict": d.verdict,
            "reason": d.reason,
            "rule": d.rule.as_ref().map(|rule| json!({
                "kind": rule.kind,
                "text": rule.text,
                "location": answer.location,
            })),
            "notes": d.notes,
        }))
    }

    fn register(
        &self,
        peer: &PeerCred,
        src: RegisterSource,
        params: &std::collections::BTreeMap<String, String>,
    ) -> Result<Value, RequestError> {
        let path = match &src {
            RegisterSource::Policy(p) | RegisterSource::Bundle(p) => p.clone(),
        };
        let loaded = if self.admission.is_admin(peer) {
            match &src {
                RegisterSource::Policy(p) => Registered::from_policy(p, params),
                RegisterSource::Bundle(b) => Registered::from_bundle(b, params, &self.trust),
            }
        } else {
            Err(RequestError::NotPermitted { uid: peer.uid, what: "register policies" })
        };
        let r = match loaded {
            Ok(r) => r,
            Err(e) => {
                // First line only: a refused policy's full diagnostics belong to the client.
                let why = e.to_string();
                let why = why.lines().next().unwrap_or_default();
                self.audit("", "", "", "register", &path, AuditVerdict::Deny, None, &format!("{why} [asked by {peer}]"))?;
                return Err(e);
            }
        };
        let (kind, bundle, signed_by) = match &r.from {
            Provenance::Policy { .. } => ("policy", String::new(), None),
            Provenance::Bundle { manifest_sha256, signed_by, .. } => {
                ("bundle", format!("sha256:{manifest_sha256}"), signed_by.clone())
            }
        };
        let name = r.name().to_string();
        let digest = r.policy_digest.clone();
        // Audit before the new policy takes effect: no answer from it goes unrecorded.
        let replaces = self.registry.get(&name).is_ok();
        let reason = format!(
            "registered agent '{name}' from {kind} {path}{}{} [asked by {peer}]",
            signed_by.as_deref().map(|k| format!(" signed by key {k}")).unwrap_or_default(),
            if replaces { ", replacing the previous registration" } else { "" }
        );
        self.audit(&name, &bundle, &digest, "register", &path, AuditVerdict::Allow, None, &reason)?;
        let replaced = self.registry.insert(r).is_some();
        Ok(json!({
            "ok": true,
            "registered": name,
            "from": kind,
            "path": path,
            "policy_digest": digest,
            "signed_by": signed_by,
            "replaced": replaced,
        }))
    }

    fn list(&self) -> Value {
        let agents: Vec<Value> = self
            .registry
            .all()
            .iter()
            .map(|r| {
                let (kind, path, signed_by) = match &r.from {
                    Provenance::Policy { path } => ("policy", path.display().to_string(), None),
                    Provenance::Bundle { dir, signed_by, .. } => ("bundle", dir.display().to_string(), signed_by.clone()),
                };
                json!({
                    "agent": r.name(),
                    "from": kind,
                    "path": path,
                    "policy_digest": r.policy_digest,
                    "signed_by": signed_by,
                    "params": r.raw_params,
                })
            })
            .collect();
        json!({ "ok": true, "agents": agents })
    }

    #[allow(clippy::too_many_arguments, reason = "one argument per field of the decision record it writes")]
    fn audit(
        &self,
        agent: &str,
        bundle: &str,
        policy: &str,
        subject: &str,
        target: &str,
        decision: AuditVerdict,
        rule: Option<String>,
        reason: &str,
    ) -> Result<(), RequestError> {
        let Some(log) = &self.audit else { return Ok(()) };
        let ctx = AuditContext { agent: agent.into(), bundle_digest: bundle.into(), policy_digest: policy.into() };
        let event = Event::Decision {
            component: "aegisd".into(),
            subject: subject.into(),
            target: target.into(),
            decision,
            rule,
            reason: reason.into(),
        };
        let mut w = log.lock().unwrap_or_else(PoisonError::into_inner);
        w.append(&ctx, &event).map(|_| ()).map_err(|e| RequestError::Audit(e.to_string()))
    }
}

/// The audit subject and target of a query.
fn describe(q: &Query) -> (&'static str, String) {
    use aegis_policy::eval::FsQuery;
    match q {
        Query::Fs { access: FsQuery::Exec, path } => ("exec", path.clone()),
        Query::Fs { access, path } => ("fs", format!("{} {path}", access.word())),
        Query::Net { host, port, protocol } => ("net", format!("{host}:{port}/{protocol}")),
        Query::Unix { path } => ("unix", path.clone()),
        Query::ApiScope { api, scope } => ("api", format!("{api} scope {scope}")),
        Query::ApiHttp { api, method, path } => ("api", format!("{api} {method} {path}")),
    }
}

/// SIGINT, SIGTERM and SIGHUP, blocked by [`block_exit_signals`] and awaited by
/// [`Server::exit_on_signals`].
pub struct ExitSignals(libc::sigset_t);

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread. Call it first thing in `main`,
/// before any thread exists, so every thread inherits the mask and only the waiting thread
/// of [`Server::exit_on_signals`] ever sees them.
pub fn block_exit_signals() -> Result<ExitSignals, StartError> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::sigaddset(&raw mut set, libc::SIGHUP);
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(StartError::Signals(std::io::Error::from_raw_os_error(rc)));
    }
    Ok(ExitSignals(set))
}

impl Server {
    /// Starts a thread that, on any of `signals`, waits for an audit append in progress to
    /// finish (so the log never ends in a torn record), removes the socket file and exits 0.
    /// Without it a stopped daemon leaves a stale socket behind (the next start replaces it,
    /// but until then `ls` misleads an operator).
    pub fn exit_on_signals(&self, signals: ExitSignals) -> Result<(), StartError> {
        let state = Arc::clone(&self.state);
        let socket = self.socket.clone();
        std::thread::Builder::new()
            .name("aegisd-signals".into())
            .spawn(move || {
                let set = signals.0;
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is initialised and blocked in every thread; `sig` is writable.
                let rc = unsafe { libc::sigwait(&raw const set, &raw mut sig) };
                if rc == 0 {
                    eprintln!("aegisd: signal {sig}, removing {} and exiting", socket.display());
                }
                // Held until exit: no further record is started.
                let _guard = state.audit.as_ref().map(|m| m.lock().unwrap_or_else(PoisonError::into_inner));
                let _ = std::fs::remove_file(&socket);
                std::process::exit(0);
            })
            .map(|_| ())
            .map_err(StartError::Signals)
    }
}
