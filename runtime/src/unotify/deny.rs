//! Record and refuse: the seccomp denials the filter routes to the supervisor
//! (`aegis_targets::seccomp::split::split_routed`).
//!
//! Input: a notified call for which the bundle's program returns an errno (any but ENOSYS),
//! the program itself and the policy. Output: that errno as the call's answer — computed
//! by running the bundle's program on the call's registers, so the agent gets exactly what
//! the bundle says — and a `denial` record (aggregated by [`super::record`]) naming the call
//! with its decoded arguments (`socket(AF_INET6, SOCK_RAW, 0)`), the errno, and the part of
//! the policy that refused it (`aegis_policy::why::syscall`). Invariants: the answer is
//! always a refusal (a call this handler cannot place is refused with EPERM, never let
//! through); string arguments are read from the caller only for the record, never to
//! decide; the work per call is bounded (one emulation, at most two string reads of a few
//! hundred bytes, an explanation cached per call shape).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aegis_audit::Access;
use aegis_policy::ir::Checked;
use aegis_targets::seccomp::split::is_routed_denial;
use aegis_targets::seccomp::{self, Arch, SockFilter, describe};

use super::record::Denial;
use super::{Call, Handler, Outcome, Refusal};

/// Explanations kept (per syscall and its first three int arguments); beyond this they are
/// computed each time (cheap, but not free).
const CACHE: usize = 1024;

pub struct Denials {
    program: Vec<SockFilter>,
    arch: Option<Arch>,
    policy: Arc<Checked>,
    explained: Mutex<HashMap<(u32, [u32; 3]), Explained>>,
    /// Learn mode: a denial a proposal would grant without a warning is let through
    /// (CONTINUE) and recorded; the rest stay refused.
    learning: bool,
}

/// The account of one call shape.
#[derive(Clone)]
struct Explained {
    rule: Option<String>,
    reason: String,
    /// A plain `[syscalls] allow` grants it and nothing flags that grant: learn mode may
    /// let it run.
    harmless: bool,
}

impl Denials {
    pub fn new(program: Vec<SockFilter>, policy: Arc<Checked>) -> Denials {
        Denials { program, arch: Arch::native(), policy, explained: Mutex::new(HashMap::new()), learning: false }
    }

    /// For a learning run (see the field).
    pub fn learning(mut self) -> Denials {
        self.learning = true;
        self
    }

    /// The errno the bundle's program answers `call` with, if it is a routed denial.
    pub fn errno_of(program: &[SockFilter], data: &seccomp::SeccompData) -> Option<u16> {
        let ret = seccomp::run(program, data).ok()?;
        is_routed_denial(ret).then_some((ret & seccomp::spec::RET_DATA) as u16)
    }

    fn explain(&self, name: &str, nr: u32, args: &[u64; 6]) -> Explained {
        let key = (nr, [args[0] as u32, args[1] as u32, args[2] as u32]);
        if let Ok(c) = self.explained.lock()
            && let Some(w) = c.get(&key)
        {
            return w.clone();
        }
        let why = aegis_policy::why::syscall(&self.policy, name, args);
        let rule = why.rule.as_ref().map(|r| format!("{} '{}'", r.kind, r.text));
        let mut reason = why.reason;
        let harmless = why.rule.is_none() && why.change.as_ref().is_some_and(|c| c.warnings.is_empty() && c.toml.starts_with("[syscalls]"));
        if let Some(c) = &why.change {
            reason.push_str(&format!("; to allow it: {}", c.words));
        }
        let e = Explained { rule, reason, harmless };
        if let Ok(mut c) = self.explained.lock()
            && c.len() < CACHE
        {
            c.insert(key, e.clone());
        }
        e
    }
}

/// The errno's name, or its number.
pub fn errno_text(e: u16) -> String {
    aegis_policy::errno::name_of(e).map(str::to_string).unwrap_or_else(|| format!("errno {e}"))
}

impl Handler for Denials {
    fn handle(&self, call: &Call<'_>) -> Outcome {
        let data = &call.notif.data;
        let Some(errno) = Denials::errno_of(&self.program, data) else {
            // Routed here although the program does not deny it: a bug; refuse.
            return Outcome::refuse(
                libc::EPERM,
                Refusal { subject: "supervisor", target: call.name.into(), rule: None, reason: "a call was routed as a denial that the program does not deny (bug); refused".into(), denial: None },
            );
        };
        let args = data.args;
        let mut strings = 0;
        let target = describe::call(call.name, &args, &mut |addr| {
            // For the record only; at most two strings per call.
            strings += 1;
            if strings > 2 {
                return None;
            }
            call.read_path(addr).ok().map(|b| String::from_utf8_lossy(&b).into_owned())
        });
        let e = self.explain(call.name, data.nr, &args);
        let arch = self.arch.map(|a| a.name()).unwrap_or("unknown");
        let let_through = self.learning && e.harmless;
        let refusal = Refusal {
            subject: "seccomp",
            target,
            rule: e.rule,
            reason: e.reason,
            denial: Some(Box::new(Denial {
                access: Access::Syscall { name: call.name.to_string(), arch: arch.to_string(), args: args.to_vec() },
                result: if let_through { format!("allowed in learn mode (the policy answers {})", errno_text(errno)) } else { errno_text(errno) },
                source: if let_through { "explanation" } else { "kernel" },
            })),
        };
        if let_through {
            // The policy filter lets routed calls run, so CONTINUE runs it (learn mode only).
            return Outcome { response: Some(super::Response::Continue), refusal: Some(refusal) };
        }
        Outcome::refuse(i32::from(errno), refusal)
    }
}
