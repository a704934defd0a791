//! One connection: who holds it, what it costs the agent, the audit record of each decision,
//! and the dispatch of its first request to the shape that serves it.
//!
//! Input: an accepted stream and the shared [`Proxy`]. Output: one [`Record`] per decision
//! (emitted to the observer, then to the aggregating records). Invariants: every record has
//! a verdict and a reason; a destination is admitted only when the policy allows it, its
//! name resolves, and the resolved addresses are vetted ([`Conn::admit`]); the CPU a
//! connection's thread uses is charged to the agent's budget, also when it ends early
//! (`Drop`).

use std::io::BufReader;
use std::net::{IpAddr, TcpStream};
use std::sync::atomic::Ordering;

use aegis_audit::{Event, Verdict as AuditVerdict};

use super::exchange::{deny_reply, read_request, reply};
use super::{Decision, IDLE_TIMEOUT, Proxy, Verdict};
use crate::addr::Host;
use crate::gate::rule_text;
use crate::http1;
use crate::records::thread_cpu_ns;

/// One audit record in the making.
pub(super) struct Record {
    pub(super) mode: &'static str,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) method: Option<String>,
    pub(super) path: Option<String>,
    pub(super) verdict: Verdict,
    pub(super) rule: Option<String>,
    pub(super) reason: String,
    pub(super) up: u64,
    pub(super) down: u64,
}

impl Record {
    pub(super) fn new(mode: &'static str, host: &str, port: u16) -> Record {
        Record {
            mode,
            host: host.to_string(),
            port,
            method: None,
            path: None,
            verdict: Verdict::Deny,
            rule: None,
            reason: String::new(),
            up: 0,
            down: 0,
        }
    }
    pub(super) fn decided(mut self, d: &Decision) -> Record {
        self.verdict = d.verdict;
        self.rule = rule_text(d);
        self.reason = d.reason.clone();
        self
    }
    pub(super) fn denied(mut self, reason: impl Into<String>) -> Record {
        self.verdict = Verdict::Deny;
        self.reason = reason.into();
        self
    }
}

/// Whether to keep serving requests on a connection.
pub(super) enum Next {
    Continue,
    Close,
}

pub(super) struct Conn<'a> {
    pub(super) p: &'a Proxy,
    pub(super) stream: TcpStream,
    /// Inode of the agent's end of the connection (one sock_diag lookup at accept).
    pub(super) inode: Option<u64>,
    /// The executable behind the connection, resolved once, at a moment the proxy waits
    /// anyway (for the upstream's answer, or while a tunnel relays).
    pub(super) exe: Option<Option<String>>,
    /// The program decisions are made for, when a grant names programs: the executable of
    /// every process holding the agent's end (`None` inside: unknown, or several).
    pub(super) program: Option<Option<String>>,
    /// The thread's CPU time when this connection was last accounted.
    pub(super) cpu_mark: u64,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        self.account();
    }
}

impl<'a> Conn<'a> {
    pub(super) fn new(p: &'a Proxy, stream: TcpStream) -> Conn<'a> {
        let inode = match (stream.peer_addr(), stream.local_addr()) {
            (Ok(peer), Ok(ours)) => p.agent.socket_inode(peer, ours),
            _ => None,
        };
        p.usage.connections.fetch_add(1, Ordering::Relaxed);
        Conn { p, stream, inode, exe: None, program: None, cpu_mark: thread_cpu_ns() }
    }

    /// The program asking, for grants that name programs (`None` when no grant does, or
    /// when it cannot be told which single program holds the connection).
    pub(super) fn program(&mut self) -> Option<String> {
        if !self.p.gate.needs_program() {
            return None;
        }
        if self.program.is_none() {
            let holders = self.inode.and_then(|i| self.p.agent.holders_of_inode(i)).unwrap_or_default();
            if self.exe.is_none() {
                self.exe = Some(holders.first().cloned());
            }
            self.program = Some(match holders.as_slice() {
                [one] => Some(one.clone()),
                _ => None,
            });
        }
        self.program.clone().flatten()
    }

    pub(super) fn resolve_exe(&mut self) {
        if self.exe.is_none() {
            self.exe = Some(self.inode.and_then(|i| self.p.agent.exe_of_inode(i)));
        }
    }

    pub(super) fn emit(&mut self, r: Record) {
        self.resolve_exe();
        let exe = self.exe.clone().flatten();
        let ev = Event::ProxyRequest {
            mode: r.mode.into(),
            host: r.host,
            port: r.port,
            method: r.method,
            path: r.path,
            decision: match r.verdict {
                Verdict::Allow => AuditVerdict::Allow,
                Verdict::Deny => AuditVerdict::Deny,
            },
            rule: r.rule,
            reason: r.reason,
            bytes_up: r.up,
            bytes_down: r.down,
            exe,
            count: 1,
        };
        if let Some(o) = &self.p.observer {
            o(&ev);
        }
        self.p.records.send(ev);
    }

    /// Charges the CPU this connection's thread used since the last call to the agent.
    fn account(&mut self) {
        let now = thread_cpu_ns();
        let spent = now.saturating_sub(self.cpu_mark);
        self.cpu_mark = now;
        self.p.usage.cpu_ns.fetch_add(spent, Ordering::Relaxed);
        self.p.budget.charge(spent);
    }

    /// Before more work for the agent: account for the last, and wait while the agent's CPU
    /// budget for this second is spent.
    pub(super) fn pace(&mut self) {
        self.account();
        let waited = self.p.budget.wait();
        self.p.usage.throttled_ns.fetch_add(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(super) fn run(mut self) {
        let _ = self.stream.set_nodelay(true);
        let _ = self.stream.set_read_timeout(Some(IDLE_TIMEOUT));
        let Ok(read_half) = self.stream.try_clone() else { return };
        let mut rd = BufReader::with_capacity(64 * 1024, read_half);
        loop {
            let req = match read_request(&mut rd) {
                Ok(Some(r)) => r,
                Ok(None) | Err(http1::HttpError::IdleTimeout) => return,
                Err(e) => {
                    let reason = format!("malformed request: {e}");
                    reply(&mut &self.stream, e.status(), &reason);
                    self.emit(Record::new("forward", "?", 0).denied(reason));
                    return;
                }
            };
            self.pace();
            let next = if req.head.method == "CONNECT" {
                self.connect(req, rd);
                return;
            } else if req.head.target.starts_with('/') {
                self.decision_endpoint(&req, &mut rd)
            } else if req.head.target.len() > 7 && req.head.target.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
                self.forward_plain(&req, &mut rd)
            } else {
                let reason = "only CONNECT, absolute http:// requests and the decision endpoint are served";
                reply(&mut &self.stream, 400, reason);
                self.emit(Record::new("forward", "?", 0).denied(format!("{reason} (target `{}`)", req.head.target)));
                Next::Close
            };
            if matches!(next, Next::Close) || !req.keep_alive {
                return;
            }
        }
    }

    /// Destination check + resolution + vetting. `Err` carries the status to answer and the
    /// record: 403 for what the policy refuses (the destination, or only refused addresses),
    /// 502 for a name that cannot be resolved (not a denial: the destination is allowed).
    pub(super) fn admit(&mut self, host: &Host, port: u16, mode: &'static str) -> Result<(Decision, Vec<IpAddr>), (u16, Box<Record>)> {
        let program = self.program();
        let d = self.p.gate.destination(host, port, program.as_deref());
        let rec = || Record::new(mode, &host.text(), port);
        if d.verdict == Verdict::Deny {
            return Err((403, Box::new(rec().decided(&d))));
        }
        let found = self.p.resolver.lookup(host, port).map_err(|why| {
            let reason = format!("allowed, but {why}");
            (502, Box::new(Record { reason, ..rec().decided(&d) }))
        })?;
        let addrs = self.p.gate.vet(host, port, &found, &self.p.own_addresses).map_err(|why| (403, Box::new(rec().denied(why))))?;
        Ok((d, addrs))
    }

    /// Answers `status` with the record's reason (a denial text unless it is a 502) and
    /// records it.
    pub(super) fn refuse(&mut self, status: u16, r: Record) {
        if status == 502 {
            reply(&mut &self.stream, status, &r.reason);
        } else {
            deny_reply(&mut &self.stream, status, &r.reason);
        }
        self.emit(r);
    }
}
