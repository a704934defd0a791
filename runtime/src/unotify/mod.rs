//! The seccomp user-notification supervisor: the calls the filter sends to user space
//! (`SECCOMP_RET_USER_NOTIF`) are decided and answered here, outside the sandbox.
//!
//! Input: the listener descriptor of the agent's filter (installed by the child with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, handed over through `crate::handoff`), a [`Registry`]
//! of [`Handler`]s by syscall name, [`Limits`], and a channel for audit events. Output: every
//! notification answered exactly once ([`Response`]), refused calls as aggregated audit
//! records ([`record`]), and [`Stats`] when the agent is gone. Invariants:
//! - **Fail closed.** A call with no handler, a handler that panics, or one the supervisor
//!   cannot inspect is refused (`EACCES`/`EPERM`), never let through.
//! - **Bounded.** At most [`Limits::workers`] handlers run at once (each may block, e.g. a
//!   `connect` performed by the broker) and at most [`Limits::queue`] notifications wait for
//!   one; beyond that the loop stops taking notifications and the agent's threads wait in
//!   the kernel (back-pressure, no memory growth). Handler work is additionally rate-limited
//!   ([`Limits::per_second`], token bucket): a looping agent slows itself down instead of
//!   burning the supervisor's CPU, which is not in the agent's cgroup. Records are aggregated
//!   (one per target per second, at most 32 targets per second).
//! - **Races.** A notification carries register values only; memory and descriptors are read
//!   through [`Call`], which checks the notification is still pending after each access.
//!   Handlers decide on their own copies and perform the call themselves (the broker does it
//!   for network calls) instead of answering CONTINUE, which would let the kernel re-read
//!   what another agent thread may have changed in between (`docs/mediation.md`).
//! - **Shutdown.** When the last task using the filter exits the listener reports POLLHUP and
//!   the loop ends; [`Server::stop`] also ends it (after the agent was reaped), waits for
//!   running handlers for a bounded time, flushes the records and returns the stats.
//!
//! # Adding a handler
//! 1. Make the filter notify the call (a rule with `Action::UserNotif` in the seccomp spec
//!    the compiler emits, `compiler/src/emit/seccomp.rs` / `aegis_targets::seccomp::hardening`).
//! 2. Implement [`Handler`]: `handle(&self, &Call) -> Outcome`. Read arguments with
//!    [`Call::arg`], memory with [`Call::read_bytes`]/[`Call::read_path`], descriptors with
//!    [`Call::dup_fd`]/[`Call::open_dirfd`]; on [`CallError::Gone`] return [`Outcome::gone`].
//!    Answer with a value, an errno, a descriptor ([`Response::AddFd`], installed into the
//!    caller atomically with the answer), or CONTINUE where that is race-free; add a
//!    [`Refusal`] to have it recorded. "Record this denial and answer errno" is
//!    [`Outcome::refuse`].
//! 3. Register it for its syscall names in the runtime's registry
//!    (`Registry::add(&["mkdirat", ...], Arc::new(MyHandler{..}))`, see
//!    `crate::stage::seccomp::registry`); a name registered twice is an error.

pub mod call;
pub mod deny;
pub mod exec;
pub mod fs;
pub mod net;
pub mod record;
pub mod sys;
pub mod trace;

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aegis_audit::Event;
use aegis_targets::seccomp::syscalls::Arch;

pub use call::{Call, CallError};
pub use record::Refusal;
pub use sys::{Listener, Notif, Response};

/// What a handler decided.
#[derive(Debug)]
pub struct Outcome {
    /// The answer; `None` when the notification is gone (nothing to answer).
    pub response: Option<Response>,
    /// A refusal to record (aggregated).
    pub refusal: Option<Refusal>,
}

impl Outcome {
    pub fn reply(response: Response) -> Outcome {
        Outcome { response: Some(response), refusal: None }
    }

    /// Refuse with `errno` and record why.
    pub fn refuse(errno: i32, refusal: Refusal) -> Outcome {
        Outcome { response: Some(Response::Errno(errno)), refusal: Some(refusal) }
    }

    /// The call went away while it was handled.
    pub fn gone() -> Outcome {
        Outcome { response: None, refusal: None }
    }

    /// The outcome of a failed look at the caller: gone, or that errno.
    pub fn from_error(e: CallError) -> Outcome {
        match e {
            CallError::Gone => Outcome::gone(),
            CallError::Errno(e) => Outcome::reply(Response::Errno(e)),
        }
    }
}

/// Decides (and performs) notified calls. Runs on a worker thread and may block; it must
/// answer every call it is given (a refusal when in doubt).
pub trait Handler: Send + Sync {
    fn handle(&self, call: &Call<'_>) -> Outcome;
}

/// Sees every refusal as it is made, before the records aggregate them (learn mode).
pub type RefusalObserver = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// Handlers by syscall name; with [`Registry::route`], by what the bundle's program says
/// first.
#[derive(Default, Clone)]
pub struct Registry {
    by_name: BTreeMap<&'static str, Arc<dyn Handler>>,
    routing: Option<Routing>,
    observer: Option<RefusalObserver>,
}

/// Which handler a notification goes to when the notify filter carries more than the
/// program's own notifications (`aegis_targets::seccomp::split::split_routed`, tracing).
#[derive(Clone)]
struct Routing {
    /// The bundle's program, as it would decide the call on its own.
    program: Arc<[aegis_targets::seccomp::SockFilter]>,
    /// Its routed denials (record and refuse).
    denials: Arc<dyn Handler>,
    /// Calls it allows that the filter notifies anyway (tracing); `None`: refused as unknown.
    tracer: Option<Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `handler` for `names`; a name that has a handler already is an error.
    pub fn add(&mut self, names: &[&'static str], handler: Arc<dyn Handler>) -> Result<(), String> {
        if let Some(dup) = names.iter().find(|n| self.by_name.contains_key(*n)) {
            return Err(format!("two seccomp notification handlers for `{dup}`"));
        }
        for n in names {
            self.by_name.insert(n, handler.clone());
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.by_name.keys().copied()
    }

    /// Routes by the bundle's `program` first: a call it answers with a routed denial goes
    /// to `denials`, one it allows (a traced call) to `tracer`, one it sends to the
    /// supervisor itself to the handler registered for its name.
    pub fn route(&mut self, program: Vec<aegis_targets::seccomp::SockFilter>, denials: Arc<dyn Handler>, tracer: Option<Arc<dyn Handler>>) {
        self.routing = Some(Routing { program: program.into(), denials, tracer });
    }

    /// Calls `observer` with every refusal as it is made (before aggregation): learn mode
    /// keeps every distinct target, which the records summarise.
    pub fn observe(&mut self, observer: RefusalObserver) {
        self.observer = Some(observer);
    }

    fn get(&self, name: &str, notif: &Notif) -> Option<&Arc<dyn Handler>> {
        use aegis_targets::seccomp::Action;
        if let Some(r) = &self.routing {
            match aegis_targets::seccomp::run(&r.program, &notif.data).map(Action::from_ret) {
                Ok(Action::UserNotif) => {}
                Ok(Action::Allow | Action::Log) => return r.tracer.as_ref(),
                Ok(_) if deny::Denials::errno_of(&r.program, &notif.data).is_some() => return Some(&r.denials),
                // A kill or ENOSYS the kernel acts on before any notification: not ours.
                _ => return None,
            }
        }
        self.by_name.get(name)
    }

    /// The tracer, for a call the program sends to a handler of its own (file mediation,
    /// the exec gate) that is also traced: it looks too (learn mode observes the call,
    /// `--explain` may explain it), and the handler answers.
    fn also_traced(&self, name: &str, notif: &Notif) -> Option<&Arc<dyn Handler>> {
        use aegis_targets::seccomp::Action;
        let r = self.routing.as_ref()?;
        let t = r.tracer.as_ref()?;
        let own = aegis_targets::seccomp::run(&r.program, &notif.data).map(Action::from_ret) == Ok(Action::UserNotif);
        (own && self.by_name.contains_key(name) && trace::SYSCALLS.iter().any(|(n, _)| *n == name)).then_some(t)
    }
}

/// Resource bounds of the notification loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Handlers running at once (worker threads, started on demand).
    pub workers: usize,
    /// Notifications taken from the kernel but not yet handled.
    pub queue: usize,
    /// Sustained handler rate (calls per second) and burst: above it the loop waits.
    pub per_second: u32,
    pub burst: u32,
    /// How long [`Server::stop`] waits for running handlers.
    pub stop_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { workers: 16, queue: 256, per_second: 20_000, burst: 2_000, stop_grace: Duration::from_secs(2) }
    }
}

/// What the loop did, for the end-of-run note.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub handled: u64,
    pub refused: u64,
    /// Notifications that were gone before they could be answered.
    pub gone: u64,
    pub max_workers: usize,
    /// Times the loop waited for the rate limit or a full queue.
    pub throttled: u64,
    /// CPU time of the loop and its workers, microseconds.
    pub cpu_us: u64,
}

struct Job {
    notif: Notif,
    name: &'static str,
}

struct Shared {
    listener: Listener,
    registry: Registry,
    queue: Mutex<Queue>,
    ready: Condvar,
    space: Condvar,
    events: Mutex<Events>,
    stopping: AtomicBool,
    handled: AtomicU64,
    gone: AtomicU64,
    throttled: AtomicU64,
    cpu_us: AtomicU64,
}

struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
    workers: usize,
    max_workers: usize,
    running: usize,
    threads: Vec<JoinHandle<()>>,
}

struct Events {
    records: record::Records,
    tx: Sender<Event>,
}

impl Events {
    fn send(&self, e: Event) {
        // The receiver is the supervisor's loop; if it is gone, so is the run.
        let _ = self.tx.send(e);
    }
}

/// A running notification loop.
pub struct Server {
    shared: Arc<Shared>,
    wake: OwnedFd,
    thread: Option<JoinHandle<u64>>,
    limits: Limits,
}

fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into our struct.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000).saturating_add(ts.tv_nsec as u64 / 1000)
}

impl Server {
    /// Starts serving `listener` (the agent's filter) with `registry`.
    pub fn start(listener: Listener, registry: Registry, limits: Limits, events: Sender<Event>) -> Result<Server, String> {
        // SAFETY: eventfd with constant flags; returns a new fd or -1.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let shared = Arc::new(Shared {
            listener,
            registry,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), idle: 0, workers: 0, max_workers: 0, running: 0, threads: Vec::new() }),
            ready: Condvar::new(),
            space: Condvar::new(),
            events: Mutex::new(Events { records: record::Records::new(), tx: events }),
            stopping: AtomicBool::new(false),
            handled: AtomicU64::new(0),
            gone: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            cpu_us: AtomicU64::new(0),
        });
        let s = shared.clone();
        let wake_fd = wake.as_raw_fd();
        let thread = std::thread::Builder::new()
            .name("aegis-unotify".into())
            .spawn(move || serve(&s, wake_fd, limits))
            .map_err(|e| format!("starting the notification loop: {e}"))?;
        Ok(Server { shared, wake, thread: Some(thread), limits })
    }

    /// Ends the loop (call after the agent was reaped), waits for running handlers at most
    /// [`Limits::stop_grace`], writes the pending records and returns the stats.
    pub fn stop(mut self) -> Stats {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes to our eventfd wakes the loop's poll.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        let loop_cpu = self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0);
        let deadline = Instant::now() + self.limits.stop_grace;
        let threads = {
            let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            // Notifications never handled: their tasks are gone with the agent.
            q.jobs.clear();
            self.shared.ready.notify_all();
            while q.running > 0 && Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                q = self.shared.space.wait_timeout(q, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
            std::mem::take(&mut q.threads)
        };
        // Workers that finished leave at once; one still blocked (a broker that does not
        // answer) is left behind rather than hold up the end of the run.
        for t in threads {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        let max_workers = self.shared.queue.lock().map(|q| q.max_workers).unwrap_or(0);
        let mut ev = self.shared.events.lock().unwrap_or_else(|p| p.into_inner());
        for e in ev.records.flush(true) {
            ev.send(e);
        }
        Stats {
            handled: self.shared.handled.load(Ordering::SeqCst),
            refused: ev.records.total,
            gone: self.shared.gone.load(Ordering::SeqCst),
            max_workers,
            throttled: self.shared.throttled.load(Ordering::SeqCst),
            cpu_us: loop_cpu + self.shared.cpu_us.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.stopping.store(true, Ordering::SeqCst);
            let one: u64 = 1;
            // SAFETY: as in stop().
            unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

/// Token bucket: `take` waits until a token is available.
struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    fn take(&mut self, stopping: &AtomicBool, throttled: &AtomicU64) {
        loop {
            let now = Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
            self.last = now;
            if self.tokens >= 1.0 || stopping.load(Ordering::SeqCst) {
                self.tokens -= 1.0;
                return;
            }
            throttled.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs_f64(((1.0 - self.tokens) / self.rate).max(0.0001)));
        }
    }
}

/// The loop: take notifications, queue them for the workers, flush records.
fn serve(shared: &Arc<Shared>, wake: i32, limits: Limits) -> u64 {
    let arch = Arch::native();
    let mut bucket = Bucket { tokens: f64::from(limits.burst), last: Instant::now(), rate: f64::from(limits.per_second.max(1)), burst: f64::from(limits.burst.max(1)) };
    loop {
        let mut fds = [
            libc::pollfd { fd: shared.listener.raw(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: wake, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on two pollfds we own; at most one second, so records are flushed.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        flush_due(shared);
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        if r <= 0 {
            continue;
        }
        let [l, _] = fds;
        if l.revents & libc::POLLIN != 0 {
            bucket.take(&shared.stopping, &shared.throttled);
            let notif = match shared.listener.recv() {
                Ok(n) => n,
                Err(_) => continue, // ENOENT: the caller went away before we took it
            };
            let name = arch
                .filter(|a| a.audit_arch() == notif.data.arch)
                .and_then(|a| a.syscall_name(notif.data.nr))
                .unwrap_or("unknown");
            enqueue(shared, Job { notif, name }, limits);
        } else if l.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            // No task uses the filter any more: the agent is gone.
            break;
        }
    }
    thread_cpu_us()
}

fn flush_due(shared: &Shared) {
    let mut ev = shared.events.lock().unwrap_or_else(|p| p.into_inner());
    for e in ev.records.flush(false) {
        ev.send(e);
    }
}

/// Puts a job on the queue (waiting while it is full) and starts a worker if none is idle.
fn enqueue(shared: &Arc<Shared>, job: Job, limits: Limits) {
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    while q.jobs.len() >= limits.queue.max(1) && !shared.stopping.load(Ordering::SeqCst) {
        shared.throttled.fetch_add(1, Ordering::Relaxed);
        q = shared.space.wait_timeout(q, Duration::from_millis(100)).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
    }
    q.jobs.push_back(job);
    if q.idle == 0 && q.workers < limits.workers.max(1) {
        let s = shared.clone();
        if let Ok(t) = std::thread::Builder::new().name("aegis-unotify-w".into()).stack_size(256 << 10).spawn(move || work(&s)) {
            q.workers += 1;
            q.max_workers = q.max_workers.max(q.workers);
            q.threads.push(t);
        }
    }
    if q.workers == 0 {
        // Not even one worker could start: answer here rather than leave the call waiting.
        if let Some(job) = q.jobs.pop_back() {
            drop(q);
            answer(shared, job);
        }
        return;
    }
    shared.ready.notify_one();
}

fn work(shared: &Arc<Shared>) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    q.running += 1;
                    break Some(j);
                }
                if shared.stopping.load(Ordering::SeqCst) {
                    break None;
                }
                q.idle += 1;
                q = shared.ready.wait_timeout(q, Duration::from_millis(500)).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
                q.idle -= 1;
            }
        };
        let Some(job) = job else { break };
        shared.space.notify_one();
        answer(shared, job);
        let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.running -= 1;
        shared.space.notify_all();
    }
    shared.cpu_us.fetch_add(thread_cpu_us(), Ordering::SeqCst);
}

/// Runs the handler for one job and answers the kernel; records a refusal.
fn answer(shared: &Shared, job: Job) {
    let call = Call::new(job.notif, job.name, &shared.listener);
    // A traced call its own handler answers: the tracer looks first, its answer is dropped
    // and its explanation kept only when the handler records nothing.
    let looked = shared.registry.also_traced(job.name, &job.notif).and_then(|t| {
        let t = t.clone();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| t.handle(&call))).ok().and_then(|o| o.refusal)
    });
    let mut outcome = match shared.registry.get(job.name, &job.notif) {
        Some(h) => {
            let h = h.clone();
            // A handler bug must not leave the agent's thread waiting forever, nor let the
            // call through: a panic is a refusal.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.handle(&call))).unwrap_or_else(|_| {
                Outcome::refuse(
                    libc::EACCES,
                    Refusal { subject: "supervisor", target: job.name.into(), rule: None, reason: "the supervisor's handler for this call failed (bug); refused".into(), denial: None },
                )
            })
        }
        None => Outcome::refuse(
            libc::EPERM,
            Refusal { subject: "syscall", target: job.name.into(), rule: None, reason: "the filter asked the supervisor, which has no handler for this call; refused".into(), denial: None },
        ),
    };
    if outcome.refusal.is_none() {
        outcome.refusal = looked;
    }
    shared.handled.fetch_add(1, Ordering::Relaxed);
    match outcome.response {
        Some(r) => {
            if shared.listener.respond(job.notif.id, r).is_err() {
                shared.gone.fetch_add(1, Ordering::Relaxed);
            }
        }
        None => {
            shared.gone.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(refusal) = outcome.refusal {
        if let Some(o) = &shared.registry.observer {
            o(&refusal);
        }
        let mut ev = shared.events.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = ev.records.count(refusal) {
            ev.send(e);
        }
    }
}
