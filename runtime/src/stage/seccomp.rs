//! Stage 9, seccomp: the last restriction, installed just before exec; and the supervisor
//! side of the calls the filter sends to user space.
//!
//! Input: the bundle's `seccomp.<arch>.bpf` for this machine's architecture, decoded into
//! instructions by the supervisor, and (when the program notifies) the bundle's typed policy
//! and the launch parameters. Output, in the child: when the program returns USER_NOTIF for
//! `connect`, the broker is forked first (after Landlock, before the filter: see
//! [`crate::broker`]) and its control socket handed over; then the filter is installed
//! (no_new_privs + TSYNC; a program that notifies as the two filters of
//! `aegis_targets::seccomp::split`, the notify filter with `SECCOMP_FILTER_FLAG_NEW_LISTENER`,
//! whose listener is handed over too) and mode 2 is verified (`PR_GET_SECCOMP`, or
//! `/proc/self/status` when the filter itself denies that prctl). In the supervisor:
//! [`take_handover`] receives listener and broker before the child execs (the exec itself may
//! be a notified call) and [`serve`] starts the notification loop ([`crate::unotify`]) with
//! the handlers of [`registry`]. Invariants: a required filter that is missing for this
//! architecture, fails to install or does not verify stops the launch (exit 126); so does a
//! notifying filter whose listener cannot be served (nothing would answer the agent's calls);
//! only `fds` and `exec` run after it, and they fall back to syscalls any sane filter allows.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aegis_targets::seccomp::{self, Action, Arch, ApplyOptions, SeccompData, SockFilter};

use crate::stage::report::{ChildReport, Fail, INFO_LEN, INFO_SECCOMP_LEN, INFO_SECCOMP_MODE};
use crate::exit::RunError;
use crate::handoff::{self, Message, Tag};
use crate::stage::Stage;
use crate::stage::verify::Verified;
use crate::unotify::{self, Limits, Listener, Registry, Server};

pub const WHAT_APPLY: u32 = 1;
pub const WHAT_VERIFY: u32 = 2;
pub const WHAT_BROKER: u32 = 3;
pub const WHAT_HANDOFF: u32 = 4;

/// Child-side plan.
pub struct ChildSeccomp {
    /// The program (when it notifies: its policy filter, see `aegis_targets::seccomp::split`).
    program: Option<Vec<SockFilter>>,
    /// The program's notify filter, installed first with a listener that is handed over.
    notify: Option<Vec<SockFilter>>,
    /// `connect` is notified: fork the broker before the filters.
    broker: bool,
    /// Instructions of the bundle's program, for the report.
    len: usize,
}

impl ChildSeccomp {
    /// A plan that installs nothing (the layer is absent from the bundle).
    pub fn placeholder() -> ChildSeccomp {
        ChildSeccomp { program: None, notify: None, broker: false, len: 0 }
    }
}

/// What the supervisor must answer for the filter (prepared before clone).
pub struct Mediation {
    policy: Arc<aegis_policy::ir::Checked>,
    params: aegis_policy::eval::Params,
    /// `execve` is notified ([`unotify::exec::ExecGate`]).
    exec_gate: bool,
    /// `connect` and friends are notified ([`unotify::net::NetMediation`], the broker).
    connect: bool,
    /// Entry-creating calls are notified ([`unotify::fs::FsMediation`], the file helper).
    files: bool,
    /// The bundle's program: which errno a routed denial gets ([`unotify::deny`]).
    program: Vec<SockFilter>,
    /// Path-taking calls are traced ([`unotify::trace`]).
    tracing: Tracing,
}

impl Mediation {
    /// One line for the enforcement report.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.connect {
            let n = self.policy.network.unix.len();
            parts.push(format!(
                "connect/sendto performed by the broker on the supervisor's copies; pathname unix sockets need a [network] unix grant ({n} granted); unix datagram sockets refused"
            ));
        }
        if self.exec_gate {
            parts.push("execve refused after the agent's own (no [exec] grant)".to_string());
        }
        if self.files {
            parts.push("entries on the way to protected paths absent at launch made by the file helper, the protected names refused".to_string());
        }
        parts.push("denials answered by the supervisor with the program's errno and recorded (system call, arguments, rule)".to_string());
        if self.tracing.learn.is_some() {
            parts.push("LEARN MODE: every path-taking call observed and would-be filesystem denials recorded (explanations)".to_string());
        } else if self.tracing.explain {
            parts.push("--explain: path-taking calls traced, filesystem denials recorded as explanations".to_string());
        }
        parts.join("; ")
    }
}

/// Whether `program` returns USER_NOTIF for `name` called with `args` on `arch`.
fn notifies(program: &[SockFilter], arch: Arch, name: &str, args: [u64; 6]) -> bool {
    arch.nr(name).is_some_and(|nr| seccomp::run(program, &SeccompData::new(arch, nr, args)).map(Action::from_ret) == Ok(Action::UserNotif))
}

/// Whether this bundle's program for this machine sends entry-creating calls (`mkdirat`) to
/// the supervisor: the file helper is then started where names must be protected.
pub fn mediates_files(v: &Verified) -> bool {
    let Some(arch) = Arch::native() else { return false };
    v.file(&seccomp::bpf_file_name(arch))
        .and_then(|b| seccomp::from_bytes(b).ok())
        .is_some_and(|p| notifies(&p, arch, "mkdirat", [0; 6]))
}

/// What the supervisor looks at besides what the program notifies: path-taking calls, to
/// explain filesystem denials (`--explain`) and to observe a learning run.
#[derive(Clone, Default)]
pub struct Tracing {
    pub explain: bool,
    pub learn: Option<Arc<crate::learn::Learn>>,
}

impl Tracing {
    fn on(&self) -> bool {
        self.explain || self.learn.is_some()
    }
}

/// Supervisor side. Returns the child plan, the report detail when absent or skipped, and
/// what the supervisor must serve when the program notifies.
pub fn prepare(v: &Verified, tracing: &Tracing) -> Result<(ChildSeccomp, Option<String>, Option<Mediation>), RunError> {
    let any = v.files.keys().any(|k| k.starts_with("seccomp.") && k.ends_with(".bpf"));
    if !any && !v.manifest.kernel.seccomp {
        return Ok((ChildSeccomp::placeholder(), Some("no seccomp program in bundle".into()), None));
    }
    let skip = |why: String| -> Result<(ChildSeccomp, Option<String>, Option<Mediation>), RunError> {
        if v.required("seccomp") {
            Err(RunError::Unavailable { layer: "seccomp", why })
        } else {
            Ok((ChildSeccomp::placeholder(), Some(format!("best-effort: {why}")), None))
        }
    };
    let Some(arch) = Arch::native() else {
        return skip("this machine's architecture has no seccomp tables in AEGIS".into());
    };
    let name = seccomp::bpf_file_name(arch);
    let Some(bytes) = v.file(&name) else {
        return skip(format!("the bundle has no {name} for this architecture"));
    };
    let program = seccomp::from_bytes(bytes).map_err(|e| RunError::Refused(format!("{name}: {e}")))?;
    let connect = notifies(&program, arch, "connect", [0; 6]);
    let exec_gate = notifies(&program, arch, "execve", [0; 6]);
    let files = notifies(&program, arch, "mkdirat", [0; 6]);
    let len = program.len();
    if v.file(aegis_targets::bundle::contract::POLICY_IR).is_none() && !tracing.on() && seccomp::split::split(&program).is_none() {
        // A bundle without its typed policy (made by hand: `aegisc build` always writes it)
        // whose program decides everything itself: the kernel refuses its denials as the
        // program says (enforcement is the same), reported only through the kernel log,
        // since the supervisor could not say which part of the policy refused them.
        return Ok((ChildSeccomp { program: Some(program), notify: None, broker: false, len }, None, None));
    }
    // Every policy denial (an errno other than ENOSYS) goes to the supervisor too, which
    // answers it with the program's own errno and records it (unotify::deny): the kernel
    // log, where the kernel would report it, is root's to read.
    let (policy_filter, notify_filter) = seccomp::split::split_routed(&program);
    // Tracing: the path-taking calls go to the supervisor too, which looks and lets the
    // kernel decide (unotify::trace).
    let notify_filter = if tracing.on() {
        seccomp::split::notify_also(&notify_filter, arch, &unotify::trace::traced(arch))
            .ok_or_else(|| RunError::internal("seccomp tracing", "too many traced calls for the filter's prefix"))?
    } else {
        notify_filter
    };
    let mediation = Mediation {
        policy: Arc::new(v.policy_ir("seccomp user notification")?),
        params: v.eval_params()?,
        exec_gate,
        connect,
        files,
        program,
        tracing: tracing.clone(),
    };
    let child = ChildSeccomp { program: Some(policy_filter), notify: Some(notify_filter), broker: connect, len };
    Ok((child, None, Some(mediation)))
}

/// Number of instructions of the bundle's program, for the report.
pub fn program_len(s: &ChildSeccomp) -> Option<usize> {
    s.program.as_ref().map(|_| s.len)
}

/// Child side: broker (if needed), filter, verification. `handoff` carries the listener
/// and the broker's control socket to the supervisor.
pub fn apply_in_child(s: &ChildSeccomp, handoff: Option<&handoff::Sender>, info: &mut [u32; INFO_LEN], msg: &mut ChildReport) -> Result<(), Fail> {
    let Some(program) = &s.program else {
        return Ok(());
    };
    let send = |tag: Tag, fd: &OwnedFd| -> Result<(), Fail> {
        let tx = handoff.ok_or(Fail { stage: Stage::Seccomp, what: WHAT_HANDOFF, errno: libc::ENOTCONN })?;
        tx.send(tag, 0, 0, Some(fd.as_raw_fd())).map_err(|errno| Fail { stage: Stage::Seccomp, what: WHAT_HANDOFF, errno })
    };
    if s.broker {
        // Forked now: after Landlock (its domain is the agent's), before the filter (it
        // performs the calls the filter sends to the supervisor).
        let (ctl, pidfd) = crate::broker::fork_in_child().map_err(|errno| Fail { stage: Stage::Seccomp, what: WHAT_BROKER, errno })?;
        send(Tag::BrokerControl, &ctl)?;
        send(Tag::BrokerProcess, &pidfd)?;
    }
    // The notify filter first (nothing it lets through can fail to install the next one),
    // without LOG: a notified call is not a denial, and logging each would flood the
    // kernel log; the policy's errno denials are notified too (the supervisor answers and
    // records them, `unotify::deny`). Then the policy filter with SECCOMP_FILTER_FLAG_LOG:
    // what it still refuses (kills, ENOSYS) the kernel logs (audit type 1326), which the
    // supervisor records as kernel denials when it may read the log; allowed calls are never
    // logged.
    let applied = match &s.notify {
        Some(n) => seccomp::apply_with_listener(n, ApplyOptions { log: false })
            .and_then(|l| send(Tag::SeccompListener, &l).map_err(|f| seccomp::ApplyError::Install { errno: f.errno })),
        None => Ok(()),
    }
    .and_then(|()| seccomp::apply(program, ApplyOptions { log: true }));
    if let Err(e) = applied {
        msg.set_msg(&e.to_string());
        let errno = match e {
            seccomp::ApplyError::Install { errno } | seccomp::ApplyError::NoNewPrivs { errno } => errno,
            _ => 0,
        };
        return Err(Fail {
            stage: Stage::Seccomp,
            what: WHAT_APPLY,
            errno,
        });
    }
    info[INFO_SECCOMP_LEN] = s.len as u32;
    // SAFETY: prctl with integer arguments.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let mode = if mode == 2 {
        2
    } else {
        // The filter may deny prctl itself; the kernel's own account is /proc/self/status.
        match seccomp::current_mode() {
            Ok(st) if st.mode == seccomp::apply::Mode::Filter => 2,
            _ => -1,
        }
    };
    info[INFO_SECCOMP_MODE] = mode.max(0) as u32;
    if mode != 2 {
        return Err(Fail::check(Stage::Seccomp, WHAT_VERIFY));
    }
    Ok(())
}

/// What the child handed over for the filter.
pub struct Handover {
    listener: OwnedFd,
    broker: Option<OwnedFd>,
    /// The broker's process, for the proxy (see [`Handover::broker_process`]).
    broker_process: Option<aegis_proxy::exe::Helper>,
    /// The file helper's control socket (sent by the Landlock stage, before the listener;
    /// none when nothing is mediated at this launch).
    fshelper: Option<OwnedFd>,
}

impl Handover {
    /// The broker as a process the proxy must not take for the agent's (it holds a copy of
    /// every socket it connects, during the connect); taken once.
    pub fn broker_process(&mut self) -> Option<aegis_proxy::exe::Helper> {
        self.broker_process.take()
    }
}

/// Supervisor side, after the child was let go and before waiting for its exec: receives
/// the listener (and the broker's control socket) from the handoff. Messages for other
/// stages that arrive first are put into `others` for the later drain. `Ok(None)`: the
/// child ended before sending them (its report says why).
pub fn take_handover(m: &Mediation, rx: &handoff::Receiver, others: &mut Vec<Message>) -> Result<Option<Handover>, RunError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    // `broker_process`: `Some(None)` once handed over for a broker that already exited.
    let (mut listener, mut broker, mut broker_process, mut fshelper) = (None, None, None, None);
    while listener.is_none() || (m.connect && (broker.is_none() || broker_process.is_none())) {
        let Some(msg) = rx.recv(deadline)? else {
            return Ok(None);
        };
        match msg.tag {
            Tag::SeccompListener => listener = msg.fd,
            Tag::BrokerControl => {
                handoff::check_socket(&msg, libc::AF_UNIX, libc::SOCK_SEQPACKET)?;
                broker = msg.fd;
            }
            Tag::BrokerProcess => {
                let fd = msg.fd.ok_or_else(|| RunError::internal("broker pidfd", "handed over without a descriptor"))?;
                broker_process = Some(match aegis_proxy::exe::Helper::from_pidfd(fd) {
                    Ok(helper) => Some(helper),
                    // The broker already exited (a short agent, e.g. `true`, ended first; the
                    // kernel says the same of a process outside our pid namespace, where the
                    // proxy then cannot tell the broker apart and refuses per-program grants):
                    // a process that is gone holds no socket, so there is nothing for the
                    // proxy to leave out of its holder scan.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(RunError::internal("broker pidfd", e)),
                });
            }
            Tag::FsHelper => {
                handoff::check_socket(&msg, libc::AF_UNIX, libc::SOCK_SEQPACKET)?;
                fshelper = msg.fd;
            }
            _ => others.push(msg),
        }
    }
    let listener = listener.ok_or_else(|| RunError::internal("seccomp listener", "handed over without a descriptor"))?;
    Ok(Some(Handover { listener, broker, broker_process: broker_process.flatten(), fshelper }))
}

/// The handlers for what this bundle's filter notifies. Add new handlers here (see
/// [`crate::unotify`]'s module docs).
pub fn registry(m: &Mediation, child: libc::pid_t, broker: Option<OwnedFd>, fshelper: Option<OwnedFd>) -> Result<Registry, RunError> {
    let mut r = Registry::new();
    let bug = |e: String| RunError::internal("seccomp notification handlers", e);
    let tracer: Option<Arc<dyn unotify::Handler>> = m.tracing.on().then(|| {
        let observer = m.tracing.learn.clone().map(|l| l as Arc<dyn unotify::trace::Observer>);
        Arc::new(unotify::trace::Tracer::new(m.policy.clone(), m.params.clone(), true, observer)) as Arc<dyn unotify::Handler>
    });
    let mut denials = unotify::deny::Denials::new(m.program.clone(), m.policy.clone());
    if m.tracing.learn.is_some() {
        denials = denials.learning();
    }
    r.route(m.program.clone(), Arc::new(denials), tracer);
    if let Some(l) = &m.tracing.learn {
        let l = l.clone();
        r.observe(Arc::new(move |refusal| l.refusal(refusal)));
    }
    if m.exec_gate {
        r.add(unotify::exec::SYSCALLS, Arc::new(unotify::exec::ExecGate::new(child as u32))).map_err(bug)?;
    }
    if m.connect {
        let client = broker.map(|b| Arc::new(crate::broker::Client::new(b)));
        let net = unotify::net::NetMediation::new(m.policy.clone(), m.params.clone(), client);
        r.add(unotify::net::SYSCALLS, Arc::new(net)).map_err(bug)?;
    }
    if m.files {
        r.add(unotify::fs::SYSCALLS, Arc::new(unotify::fs::FsMediation::new(fshelper))).map_err(bug)?;
    }
    Ok(r)
}

/// Starts answering the agent's notified calls; refusals go to `events`.
pub fn serve(m: &Mediation, h: Handover, child: libc::pid_t, events: std::sync::mpsc::Sender<aegis_audit::Event>) -> Result<Server, RunError> {
    let unavailable = |why: String| RunError::Unavailable { layer: "seccomp", why: format!("the filter's user notifications cannot be served: {why}") };
    let listener = Listener::new(h.listener).map_err(unavailable)?;
    let registry = registry(m, child, h.broker, h.fshelper)?;
    Server::start(listener, registry, Limits::default(), events).map_err(unavailable)
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_APPLY => "installing the seccomp filter",
        WHAT_VERIFY => "seccomp mode is not 2 (filter) after installing",
        WHAT_BROKER => "forking the network broker",
        WHAT_HANDOFF => "handing the seccomp listener or broker to the supervisor",
        _ => "seccomp",
    }
}
