//! Supervision of a running agent: forward signals, enforce the wall-clock limit, watch for
//! OOM kills (and emulate `memory.oom.group` on v1 by killing the whole leaf), collect
//! nftables denials — from the kernel log in host mode, from the namespace's NFLOG socket
//! ([`crate::stage::netlog`]) in `none`/`proxy` modes — rate-limited into one audit record
//! per second per layer (`Denials`), reap the agent, and read its resource usage.
//!
//! Input: the agent's pid, its cgroup leaf, limits, the signalfd, the audit sink. Output: an
//! [`Outcome`] (wait status, rusage, cgroup usage); the run's events go to the audit sink
//! ([`crate::audit::Audit`]) as they happen. Invariants: the loop ends only when the agent has
//! been reaped; once the agent must die (wall time, terminating signal not obeyed within the
//! grace period, OOM with oom group, the audit log failing or its budget used up) the whole
//! leaf (or, without a leaf, the agent — pid 1 of its namespace, so everything in it) gets
//! SIGKILL. The loop's side effects (reap, wait, signals, forward, kill, the leaf's usage)
//! go through [`Effects`], so their order is unit-tested with a recording double; the real
//! [`Kernel`] is what [`run`] uses.
//!
//! What cannot be observed here: seccomp denials that return an errno leave no trace
//! without `SECCOMP_RET_LOG`/user notification; Landlock denials are only visible through
//! the audit subsystem (Landlock ABI 7 audit records go to auditd, not to us).

use std::time::{Duration, Instant};

use aegis_audit::{Event, ResourceLimit};
use aegis_targets::cgroup::Leaf;

use crate::audit::Audit;
use crate::signals::{KILL_GRACE, Received, Signals, TERMINATING};

pub struct Limits {
    pub wall_time: Option<Duration>,
    pub oom_group: bool,
    /// nftables log prefix to look for in /dev/kmsg (host mode).
    pub deny_prefix: Option<String>,
    /// The NFLOG listener of the agent's network namespace (`none`/`proxy` modes).
    pub nflog: Option<crate::stage::netlog::Observer>,
    /// Read end of the init's status pipe ([`crate::stage::init`]).
    pub init_status: Option<i32>,
}

/// Kernel denials counted per layer and target (the sample line: the destination of a
/// dropped packet, the call of a seccomp record) and written at most once a second, one
/// record per distinct target with its count, so a looping agent cannot flood the log and
/// every destination it tried is named. At most [`DENIAL_TARGETS`] distinct targets per
/// second; the rest are counted into one record per layer. Shared by every source (kernel
/// log, NFLOG).
struct Denials {
    /// (layer, sample line) → denials since the last record, in arrival order of targets.
    pending: Vec<((&'static str, String), u64)>,
    /// layer → denials of targets beyond [`DENIAL_TARGETS`].
    overflow: std::collections::BTreeMap<&'static str, u64>,
    last_flush: Instant,
}

/// Distinct denial targets recorded per second.
const DENIAL_TARGETS: usize = 32;

impl Denials {
    fn new() -> Denials {
        Denials { pending: Vec::new(), overflow: Default::default(), last_flush: Instant::now() }
    }

    fn count(&mut self, layer: &'static str, sample: &str) {
        let sample: String = sample.chars().take(300).collect();
        if let Some((_, n)) = self.pending.iter_mut().find(|((l, t), _)| *l == layer && *t == sample) {
            *n += 1;
        } else if self.pending.len() < DENIAL_TARGETS {
            self.pending.push(((layer, sample), 1));
        } else {
            *self.overflow.entry(layer).or_default() += 1;
        }
    }

    /// The records due now (all of them when `force`, at the agent's exit).
    fn take_events(&mut self, force: bool) -> Vec<Event> {
        if (self.pending.is_empty() && self.overflow.is_empty()) || (!force && self.last_flush.elapsed() < Duration::from_secs(1)) {
            return Vec::new();
        }
        self.last_flush = Instant::now();
        let mut out: Vec<Event> =
            std::mem::take(&mut self.pending).into_iter().map(|((layer, detail), count)| Event::KernelDenial { layer: layer.into(), detail, count }).collect();
        out.extend(std::mem::take(&mut self.overflow).into_iter().map(|(layer, count)| Event::KernelDenial {
            layer: layer.into(),
            detail: format!("denials of other targets (more than {DENIAL_TARGETS} distinct ones in a second): counted, not listed"),
            count,
        }));
        out
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: libc::c_int,
    pub rusage: libc::rusage,
    /// An OOM kill was recorded while the agent ran.
    pub oom_recorded: bool,
}

impl Outcome {
    /// Exit code of `aegis-exec`: the agent's status, or 128 + signal.
    pub fn exit_code(&self) -> i32 {
        if libc::WIFEXITED(self.status) {
            libc::WEXITSTATUS(self.status)
        } else if libc::WIFSIGNALED(self.status) {
            128 + libc::WTERMSIG(self.status)
        } else {
            crate::exit::EXIT_INTERNAL
        }
    }
    pub fn exited(&self) -> Option<i32> {
        libc::WIFEXITED(self.status).then(|| libc::WEXITSTATUS(self.status))
    }
    pub fn signal(&self) -> Option<i32> {
        libc::WIFSIGNALED(self.status).then(|| libc::WTERMSIG(self.status))
    }
    pub fn cpu_us(&self) -> (u64, u64) {
        let us = |t: libc::timeval| (t.tv_sec as u64).saturating_mul(1_000_000).saturating_add(t.tv_usec as u64);
        (us(self.rusage.ru_utime), us(self.rusage.ru_stime))
    }
}

fn reap(pid: libc::pid_t, flags: libc::c_int) -> Option<Outcome> {
    let mut status = 0;
    // SAFETY: rusage is plain data overwritten by wait4.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, flags, &mut ru) };
    (r == pid).then_some(Outcome {
        status,
        rusage: ru,
        oom_recorded: false,
    })
}

/// Kills everything of the agent.
pub fn kill_agent(pid: libc::pid_t, leaf: Option<&Leaf>) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if let Some(l) = leaf {
        let _ = l.kill_all();
    }
}

/// Kernel denials the supervisor can observe in `/dev/kmsg` (the kernel prints audit
/// records there when no audit daemon consumes them): nftables log lines with the agent's
/// prefix (host mode); seccomp records (audit type 1326) of processes in the agent's leaf,
/// except ENOSYS, which the filter returns by design for unknown syscalls and `clone3`;
/// Landlock access records (type 1423) of the agent's own domain, learned from the domain's
/// allocation record (type 1424), whose pid is the agent's. Counted into [`Denials`]. Limits: with an audit daemon running, seccomp and Landlock records go to it instead;
/// Landlock logs only when the kernel's audit is enabled (`auditctl -e 1`); records the
/// kernel prints after the agent has exited may be missed.
struct Kmsg {
    fd: i32,
    nft_prefix: Option<String>,
    agent_pid: i32,
    landlock_domain: Option<String>,
}

/// Whether a seccomp record is for a call every AEGIS filter answers with ENOSYS by design
/// (`clone3`, so libc falls back to `clone`; numbers unknown to the architecture): those
/// are not policy denials. (The record's `code` carries the action without its errno.)
fn returns_enosys_by_design(line: &str) -> bool {
    use aegis_targets::seccomp::syscalls::Arch;
    let arch = audit_field(line, "arch").and_then(|a| u32::from_str_radix(a, 16).ok()).and_then(Arch::from_audit_arch);
    let nr = audit_field(line, "syscall").and_then(|n| n.parse::<u32>().ok());
    match (arch, nr) {
        (Some(a), Some(n)) => a.syscall_name(n).is_none_or(|name| name == "clone3"),
        _ => false,
    }
}

/// The value of `key=` in an audit record (up to the next space).
fn audit_field<'a>(rec: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let at = rec.find(&pat)? + pat.len();
    rec.get(at..)?.split(' ').next()
}

impl Kmsg {
    fn open(nft_prefix: Option<String>, agent_pid: i32) -> Option<Kmsg> {
        // SAFETY: open(2) of a literal path.
        let fd = unsafe { libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // Only lines logged from now on.
        // SAFETY: lseek on our fd.
        unsafe { libc::lseek(fd, 0, libc::SEEK_END) };
        Some(Kmsg {
            fd,
            nft_prefix,
            agent_pid,
            landlock_domain: None,
        })
    }

    fn classify(&mut self, rec: &str, leaf: Option<&Leaf>, denials: &mut Denials) {
        let line = rec.split_once(';').map(|(_, l)| l).unwrap_or(rec).lines().next().unwrap_or_default();
        if let Some(p) = self.nft_prefix.as_deref()
            && let Some(pos) = line.find(p)
        {
            let sample = line.get(pos + p.len()..).unwrap_or_default().to_string();
            denials.count("nftables", &sample);
        } else if line.contains("type=1326") {
            let pid: Option<i32> = audit_field(line, "pid").and_then(|p| p.parse().ok());
            let ours = match (pid, leaf) {
                (Some(p), Some(l)) => p == self.agent_pid || l.verify_member(p).is_ok(),
                (Some(p), None) => p == self.agent_pid,
                (None, _) => false,
            };
            if ours && !returns_enosys_by_design(line) {
                let sample = ["syscall", "comm", "code"]
                    .iter()
                    .filter_map(|k| audit_field(line, k).map(|v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ");
                denials.count("seccomp", &sample);
            }
        } else if line.contains("type=1424") && line.contains("status=allocated") {
            if audit_field(line, "pid").and_then(|p| p.parse::<i32>().ok()) == Some(self.agent_pid) {
                self.landlock_domain = audit_field(line, "domain").map(str::to_string);
            }
        } else if line.contains("type=1423")
            && let Some(d) = self.landlock_domain.as_deref()
            && audit_field(line, "domain") == Some(d)
        {
            let sample = ["blockers", "path", "name"]
                .iter()
                .filter_map(|k| audit_field(line, k).map(|v| format!("{k}={v}")))
                .collect::<Vec<_>>()
                .join(" ");
            denials.count("landlock", &sample);
        }
    }

    fn read(&mut self, leaf: Option<&Leaf>, denials: &mut Denials) {
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: reading one kmsg record into our buffer.
            let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                // EAGAIN (nothing more) or EPIPE (overwritten records): stop for now.
                if n < 0 && crate::errno::last() == libc::EPIPE {
                    continue;
                }
                return;
            }
            let rec = String::from_utf8_lossy(buf.get(..n as usize).unwrap_or_default()).into_owned();
            self.classify(&rec, leaf, denials);
        }
    }
}

impl Drop for Kmsg {
    fn drop(&mut self) {
        // SAFETY: closing our fd.
        unsafe { libc::close(self.fd) };
    }
}

/// The supervisor's own decisions (proxy, seccomp notification handlers) as they happen: a
/// forwarding thread moves each event from their channel into a queue and wakes the
/// supervisor's loop through an eventfd, so a decision is written (and an append failure
/// noticed, and the agent stopped) one append after it was taken, not at the next timer
/// tick. The thread ends when every sender is dropped (this feed holds one). At the end,
/// [`ProxyFeed::finish`] sends a marker down the same channel and waits until the thread
/// passed it, so its last drain holds every record sent before: none is left on its way.
pub struct ProxyFeed<'a> {
    queue: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    wake: std::os::fd::OwnedFd,
    /// The proxy, whose connections are waited for at the end (`None`: records of the
    /// seccomp notification handlers only).
    active: Option<&'a aegis_proxy::server::Proxy>,
    /// For the markers.
    tx: std::sync::mpsc::Sender<Event>,
    /// Markers sent, and markers the thread has passed.
    markers: std::cell::Cell<u64>,
    passed: std::sync::Arc<(std::sync::Mutex<u64>, std::sync::Condvar)>,
    /// The note about connections still open at the end was written.
    noted_open: std::cell::Cell<bool>,
}

/// The component of the feed's markers (a note no component writes; never logged).
const MARKER: &str = "aegis-exec audit feed marker";

fn is_marker(e: &Event) -> bool {
    matches!(e, Event::Note { component, .. } if component == MARKER)
}

impl<'a> ProxyFeed<'a> {
    /// `tx`: a sender on the channel `rx` reads (for the end-of-run markers).
    pub fn start(
        tx: std::sync::mpsc::Sender<Event>,
        rx: std::sync::mpsc::Receiver<Event>,
        active: Option<&'a aegis_proxy::server::Proxy>,
    ) -> Result<ProxyFeed<'a>, crate::exit::RunError> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: eventfd with constant flags returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(crate::exit::RunError::os("eventfd for the proxy's records"));
        }
        // SAFETY: a new descriptor we own.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let writer = wake.try_clone().map_err(|e| crate::exit::RunError::internal("eventfd for the proxy's records", e))?;
        let queue = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let q = queue.clone();
        let passed = std::sync::Arc::new((std::sync::Mutex::new(0u64), std::sync::Condvar::new()));
        let pass = passed.clone();
        std::thread::Builder::new()
            .name("aegis-audit-feed".into())
            .spawn(move || {
                while let Ok(e) = rx.recv() {
                    let mut markers = 0;
                    if let Ok(mut v) = q.lock() {
                        for e in std::iter::once(e).chain(rx.try_iter()) {
                            if is_marker(&e) {
                                markers += 1;
                            } else {
                                v.push(e);
                            }
                        }
                    }
                    if markers > 0 {
                        let (n, cv) = &*pass;
                        if let Ok(mut n) = n.lock() {
                            *n += markers;
                        }
                        cv.notify_all();
                    }
                    let one: u64 = 1;
                    // SAFETY: an 8-byte write to our eventfd (EAGAIN at the counter's
                    // maximum only means the loop has not read yet: it will).
                    unsafe { libc::write(writer.as_raw_fd(), (&one as *const u64).cast(), 8) };
                }
            })
            .map_err(|e| crate::exit::RunError::internal("starting the proxy's record feed", e))?;
        Ok(ProxyFeed {
            queue,
            wake,
            active,
            tx,
            markers: std::cell::Cell::new(0),
            passed,
            noted_open: std::cell::Cell::new(false),
        })
    }

    /// Waits (at most 2 s) until the feed thread has moved everything sent to the channel
    /// so far into the queue.
    fn settle(&self) {
        let want = self.markers.get() + 1;
        self.markers.set(want);
        if self.tx.send(Event::Note { component: MARKER.into(), message: String::new() }).is_err() {
            return;
        }
        let (n, cv) = &*self.passed;
        let Ok(guard) = n.lock() else { return };
        let _ = cv.wait_timeout_while(guard, Duration::from_secs(2), |n| *n < want);
    }

    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.wake.as_raw_fd()
    }

    fn drain(&self, audit: &mut Audit) {
        let mut n = 0u64;
        // SAFETY: an 8-byte read from our non-blocking eventfd (resets the counter).
        unsafe { libc::read(self.fd(), (&mut n as *mut u64).cast(), 8) };
        let batch = match self.queue.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(_) => Vec::new(),
        };
        for e in batch {
            audit.run_event(e);
        }
    }

    /// After the agent exited: its connections end as their sockets close; wait a moment
    /// for their last records (bytes moved) before the log is closed.
    pub fn finish(&self, audit: &mut Audit) {
        let until = Instant::now() + Duration::from_millis(500);
        while self.active.is_some_and(|p| p.active_connections() > 0) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Repeats the proxy is still counting, and its usage note (sent when this returns).
        if let Some(p) = self.active {
            p.flush_records();
            let open = p.active_connections();
            if open > 0 && !self.noted_open.replace(true) {
                audit.run_event(Event::Note {
                    component: "supervisor".into(),
                    message: format!(
                        "{open} proxy connection(s) still being served 500 ms after the agent exited; a decision they take after the log is closed is not in it"
                    ),
                });
            }
        }
        // Everything sent so far is in the queue once the feed thread passed the marker.
        self.settle();
        self.drain(audit);
    }
}

/// The supervisor's side effects on the agent and what it asks the kernel while it runs:
/// the narrow surface [`run`]'s loop goes through, so that its order (forward a signal,
/// kill after the grace period or at the wall time, reap) is unit-tested with a recording
/// double, without root or an agent (youki's `Syscall`). [`Kernel`] is the real one; the
/// child side has no such trait (it must not allocate, and runs only real syscalls).
pub trait Effects {
    /// The current time (the double's advances with [`Effects::wait`]).
    fn now(&self) -> Instant;
    /// Reaps the agent if it has exited, without blocking.
    fn reap(&mut self, pid: libc::pid_t) -> Option<Outcome>;
    /// Waits until the signalfd or one of `watch` (the kernel log, NFLOG, the proxy feed;
    /// -1: none) is readable, at most `timeout_ms`.
    fn wait(&mut self, watch: [i32; 3], timeout_ms: i32);
    /// The signals received since the last call.
    fn signals(&mut self) -> Vec<Received>;
    /// Sends `signo` to the agent's init, which passes it on to the agent.
    fn forward(&mut self, pid: libc::pid_t, signo: i32);
    /// Kills everything of the agent (its leaf, or the agent: pid 1 of its namespace).
    fn kill_agent(&mut self, pid: libc::pid_t);
    /// The leaf's usage so far; `None` without a leaf.
    fn usage(&self) -> Option<aegis_targets::cgroup::Usage>;
    /// The leaf's name, for records.
    fn leaf_name(&self) -> String;
    /// The init's word on the agent once it wrote it: wait status and flags.
    fn init_status(&mut self) -> Option<(libc::c_int, u32)>;
}

/// The real [`Effects`]: syscalls on the agent, its leaf and the supervisor's signalfd.
pub struct Kernel<'a> {
    pub leaf: Option<&'a Leaf>,
    pub signals: &'a Signals,
    /// Read end of the init's status pipe ([`crate::stage::init`]).
    pub init_status: Option<i32>,
}

impl Effects for Kernel<'_> {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn reap(&mut self, pid: libc::pid_t) -> Option<Outcome> {
        reap(pid, libc::WNOHANG)
    }

    fn wait(&mut self, [kmsg, nflog, proxy]: [i32; 3], timeout_ms: i32) {
        let mut fds = [self.signals.fd, kmsg, nflog, proxy].map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
        // SAFETY: poll on the pollfd structs we own (a negative fd is ignored).
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    }

    fn signals(&mut self) -> Vec<Received> {
        self.signals.drain()
    }

    fn forward(&mut self, pid: libc::pid_t, signo: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, signo) };
    }

    fn kill_agent(&mut self, pid: libc::pid_t) {
        kill_agent(pid, self.leaf);
    }

    fn usage(&self) -> Option<aegis_targets::cgroup::Usage> {
        self.leaf.map(Leaf::usage)
    }

    fn leaf_name(&self) -> String {
        self.leaf.map(|l| l.name().to_string()).unwrap_or_default()
    }

    fn init_status(&mut self) -> Option<(libc::c_int, u32)> {
        self.init_status.and_then(crate::stage::init::read_status)
    }
}

/// Runs until the agent is reaped. Every event of the run goes to `audit` as it happens
/// (a proxy decision is written at once, a kernel denial within a second); when the log ends the run ([`crate::audit::Stop`]: an
/// append failed, or the budget is used up) the whole agent is killed at once.
pub fn run(
    pid: libc::pid_t,
    leaf: Option<&Leaf>,
    limits: &Limits,
    signals: &Signals,
    audit: &mut Audit,
    proxy: Option<&ProxyFeed>,
    verbose: bool,
) -> Outcome {
    let mut kernel = Kernel { leaf, signals, init_status: limits.init_status };
    run_with(&mut kernel, pid, leaf, limits, audit, proxy, verbose)
}

/// [`run`]'s loop over any [`Effects`]. `leaf` is read here only for the kernel log's
/// records (whose processes are the agent's) and the poll interval.
fn run_with(
    fx: &mut impl Effects,
    pid: libc::pid_t,
    leaf: Option<&Leaf>,
    limits: &Limits,
    audit: &mut Audit,
    proxy: Option<&ProxyFeed>,
    verbose: bool,
) -> Outcome {
    let start = fx.now();
    let deadline = limits.wall_time.map(|d| start + d);
    let mut grace: Option<Instant> = None;
    let mut wall_hit = false;
    let mut oom_seen = fx.usage().map(|u| u.oom_kills).unwrap_or(0);
    let mut oom_recorded = false;
    let mut kmsg = Kmsg::open(limits.deny_prefix.clone(), pid);
    let mut denials = Denials::new();
    let read_denials = |kmsg: &mut Option<Kmsg>, denials: &mut Denials| {
        if let Some(k) = kmsg.as_mut() {
            k.read(leaf, denials);
        }
        if let Some(o) = &limits.nflog {
            o.drain(&mut |line| denials.count("nftables", &line));
        }
    };
    loop {
        if let Some(mut o) = fx.reap(pid) {
            // The init's word on the agent: its real wait status (a signal stays a signal),
            // and whether the init enforced the wall time while the supervisor could not.
            if let Some((status, flags)) = fx.init_status() {
                o.status = status;
                if flags & crate::stage::init::FLAG_WALL_TIME != 0 && !wall_hit {
                    audit.run_event(Event::Resource {
                        limit: ResourceLimit::WallTime,
                        detail: format!(
                            "wall time {} ms reached while the supervisor was stopped; the agent's init killed it",
                            limits.wall_time.unwrap_or_default().as_millis()
                        ),
                    });
                }
            }
            if let Some(p) = &proxy {
                p.finish(audit);
            }
            read_denials(&mut kmsg, &mut denials);
            for e in denials.take_events(true) {
                audit.run_event(e);
            }
            // The run's own records (repeat counts included) come before the closing ones.
            audit.end_run();
            return Outcome { oom_recorded, ..o };
        }
        let now = fx.now();
        // Poll at most every 50 ms when there is something to watch (OOM counter).
        let mut wake = now + if leaf.is_some() || proxy.is_some() { Duration::from_millis(50) } else { Duration::from_secs(1) };
        for t in [deadline, grace].into_iter().flatten() {
            wake = wake.min(t);
        }
        let timeout = wake.saturating_duration_since(now).as_millis().min(i32::MAX as u128) as i32;
        let watch = [kmsg.as_ref().map(|k| k.fd).unwrap_or(-1), limits.nflog.as_ref().map(|o| o.fd()).unwrap_or(-1), proxy.as_ref().map(|p| p.fd()).unwrap_or(-1)];
        fx.wait(watch, timeout.max(1));
        for Received { signo, from_kernel } in fx.signals() {
            if signo == libc::SIGCHLD {
                continue;
            }
            if crate::signals::JOB_CONTROL.contains(&signo) {
                if verbose {
                    crate::tty::note(&format!("signal {signo} (job control) ignored: the supervisor keeps the agent's wall time"));
                }
                continue;
            }
            // To the agent's init, which passes it on to the agent.
            fx.forward(pid, signo);
            if verbose {
                crate::tty::note(&format!("received signal {signo}{}, forwarded", if from_kernel { " from the kernel" } else { "" }));
            }
            if TERMINATING.contains(&signo) && grace.is_none() {
                grace = Some(fx.now() + KILL_GRACE);
            }
        }
        read_denials(&mut kmsg, &mut denials);
        for e in denials.take_events(false) {
            audit.run_event(e);
        }
        if let Some(p) = &proxy {
            p.drain(audit);
        }
        let now = fx.now();
        if let Some(d) = deadline
            && now >= d
            && !wall_hit
        {
            wall_hit = true;
            fx.kill_agent(pid);
            audit.run_event(Event::Resource {
                limit: ResourceLimit::WallTime,
                detail: format!("wall time {} ms reached; agent killed", limits.wall_time.unwrap_or_default().as_millis()),
            });
        }
        if let Some(g) = grace
            && now >= g
        {
            fx.kill_agent(pid);
            grace = None;
            audit.run_event(Event::Note {
                component: "supervisor".into(),
                message: format!("agent still running {} s after a terminating signal; killed", KILL_GRACE.as_secs()),
            });
        }
        if let Some(u) = fx.usage()
            && u.oom_kills > oom_seen
        {
            oom_seen = u.oom_kills;
            let mut detail = format!(
                "OOM kill in leaf {} (oom_kill={}, peak={} bytes)",
                fx.leaf_name(),
                u.oom_kills,
                u.memory_peak.unwrap_or(0)
            );
            if limits.oom_group {
                // v1 has no memory.oom.group: do what it would, kill the whole agent.
                fx.kill_agent(pid);
                detail.push_str("; whole agent killed (oom group)");
            }
            oom_recorded = true;
            audit.run_event(Event::Resource {
                limit: ResourceLimit::OomKill,
                detail,
            });
        }
        if let Some(stop) = audit.tick(false) {
            // The log cannot record what the agent does next (or it has had its share):
            // nothing of it runs on. Its proxy connections die with it.
            fx.kill_agent(pid);
            crate::tty::note(&format!("{stop}; killing the agent"));
        }
    }
}

/// Blocks until `pid` is reaped (after it was killed on an error path).
pub fn reap_blocking(pid: libc::pid_t) -> Option<Outcome> {
    reap(pid, 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use aegis_targets::cgroup::Usage;

    /// A scripted agent and clock: signals arrive at given times, the agent exits only when
    /// killed (or at `exit_at`), the leaf's OOM counter rises at `oom_at`. Records every
    /// effect with the time it happened, in milliseconds since the start.
    struct Recorder {
        start: Instant,
        t: Instant,
        signals: Vec<(u64, i32)>,
        exit_at: Option<u64>,
        oom_at: Option<u64>,
        leaf: bool,
        killed: bool,
        log: Vec<String>,
    }

    impl Recorder {
        fn new(signals: &[(u64, i32)]) -> Recorder {
            let start = Instant::now();
            Recorder { start, t: start, signals: signals.to_vec(), exit_at: None, oom_at: None, leaf: false, killed: false, log: Vec::new() }
        }
        fn ms(&self) -> u64 {
            (self.t - self.start).as_millis() as u64
        }
    }

    impl Effects for Recorder {
        fn now(&self) -> Instant {
            self.t
        }
        fn reap(&mut self, _pid: libc::pid_t) -> Option<Outcome> {
            let exited = self.killed || self.exit_at.is_some_and(|at| self.ms() >= at);
            exited.then(|| {
                self.log.push(format!("reap at {}", self.ms()));
                // SAFETY: rusage is plain data.
                Outcome { status: if self.killed { libc::SIGKILL } else { 0 }, rusage: unsafe { std::mem::zeroed() }, oom_recorded: false }
            })
        }
        fn wait(&mut self, _watch: [i32; 3], timeout_ms: i32) {
            // Wakes for the next scripted signal, or when the timeout runs out.
            let now = self.ms();
            let next = self.signals.iter().map(|(at, _)| *at).filter(|at| *at > now).min();
            let until = next.map_or(now + timeout_ms as u64, |n| n.min(now + timeout_ms as u64));
            self.t = self.start + Duration::from_millis(until);
        }
        fn signals(&mut self) -> Vec<Received> {
            let now = self.ms();
            let (due, later): (Vec<_>, Vec<_>) = self.signals.iter().partition(|(at, _)| *at <= now);
            self.signals = later;
            due.into_iter().map(|(_, signo)| Received { signo, from_kernel: false }).collect()
        }
        fn forward(&mut self, _pid: libc::pid_t, signo: i32) {
            self.log.push(format!("forward {signo} at {}", self.ms()));
        }
        fn kill_agent(&mut self, _pid: libc::pid_t) {
            self.killed = true;
            self.log.push(format!("kill at {}", self.ms()));
        }
        fn usage(&self) -> Option<Usage> {
            self.leaf.then(|| Usage { oom_kills: u64::from(self.oom_at.is_some_and(|at| self.ms() >= at)), ..Usage::default() })
        }
        fn leaf_name(&self) -> String {
            "leaf".into()
        }
        fn init_status(&mut self) -> Option<(libc::c_int, u32)> {
            None
        }
    }

    /// Runs the loop against `fx` with a real audit log; returns the outcome and the log's text.
    fn supervise(fx: &mut Recorder, wall_time: Option<Duration>, oom_group: bool) -> (Outcome, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut audit = Audit::open(Some(&path), "t", &crate::audit::AuditOptions::default()).unwrap();
        let limits = Limits { wall_time, oom_group, deny_prefix: None, nflog: None, init_status: None };
        // A pid no process has: the kernel log's records are never the agent's.
        let o = run_with(fx, i32::MAX, None, &limits, &mut audit, None, false);
        let _ = audit.close();
        (o, std::fs::read_to_string(&path).unwrap())
    }

    #[test]
    fn a_terminating_signal_is_forwarded_and_the_agent_killed_when_the_grace_period_ends() {
        let grace = KILL_GRACE.as_millis() as u64;
        let mut fx = Recorder::new(&[(100, libc::SIGTSTP), (100, libc::SIGCHLD), (200, libc::SIGTERM), (300, libc::SIGINT)]);
        let (o, log) = supervise(&mut fx, None, false);
        // Job control and SIGCHLD stay with the supervisor; the grace period runs from the
        // first terminating signal, not the last.
        assert_eq!(fx.log, [
            "forward 15 at 200".to_string(),
            "forward 2 at 300".to_string(),
            format!("kill at {}", 200 + grace),
            format!("reap at {}", 200 + grace),
        ]);
        assert_eq!(o.signal(), Some(libc::SIGKILL));
        assert!(log.contains("after a terminating signal; killed"), "{log}");
    }

    #[test]
    fn the_wall_time_kills_the_agent_once_and_is_recorded() {
        let mut fx = Recorder::new(&[]);
        let (_, log) = supervise(&mut fx, Some(Duration::from_millis(1500)), false);
        assert_eq!(fx.log, ["kill at 1500", "reap at 1500"]);
        assert!(log.contains("wall time 1500 ms reached; agent killed"), "{log}");
    }

    #[test]
    fn an_agent_that_exits_in_time_is_reaped_untouched() {
        let mut fx = Recorder::new(&[]);
        fx.exit_at = Some(700);
        let (o, _) = supervise(&mut fx, Some(Duration::from_secs(5)), false);
        assert_eq!(fx.log, ["reap at 1000"]);
        assert_eq!(o.exit_code(), 0);
    }

    #[test]
    fn an_oom_kill_kills_the_whole_agent_only_with_oom_group() {
        for (group, expect) in [(true, vec!["kill at 1000", "reap at 1000"]), (false, vec!["reap at 3000"])] {
            let mut fx = Recorder::new(&[]);
            fx.leaf = true;
            fx.oom_at = Some(400);
            fx.exit_at = Some(3000);
            let (o, log) = supervise(&mut fx, None, group);
            assert_eq!(fx.log, expect, "oom group {group}");
            assert!(o.oom_recorded);
            assert!(log.contains("OOM kill in leaf leaf"), "{log}");
        }
    }
}
