//! The exec gate: `execve`/`execveat` of a policy that grants no executable
//! (`ExecGate::Notify` in the filter).
//!
//! Input: the child's pid. Output: CONTINUE for the first `execve` of that task (the
//! runtime's own exec of the agent's command: AEGIS code, before any agent code exists, so
//! nothing can change the path between our answer and the kernel's read of it), and EPERM
//! with an audit record for every later one. Invariants: the first call is let through at
//! most once, and only for the child itself.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Call, Handler, Outcome, Refusal, Response};

pub struct ExecGate {
    child: u32,
    used: AtomicBool,
}

impl ExecGate {
    pub fn new(child: u32) -> ExecGate {
        ExecGate { child, used: AtomicBool::new(false) }
    }
}

/// The names this gate answers.
pub const SYSCALLS: &[&str] = &["execve", "execveat"];

impl Handler for ExecGate {
    fn handle(&self, call: &Call<'_>) -> Outcome {
        if call.tid() == self.child && call.name == "execve" && !self.used.swap(true, Ordering::SeqCst) {
            return Outcome::reply(Response::Continue);
        }
        // For the record only: what the agent tried to run (never used to decide).
        let path_arg = if call.name == "execveat" { call.arg(1) } else { call.arg(0) };
        let target = match call.read_path(path_arg) {
            Ok(p) => String::from_utf8_lossy(&p).into_owned(),
            Err(super::CallError::Gone) => return Outcome::gone(),
            Err(super::CallError::Errno(e)) => format!("(unreadable path: errno {e})"),
        };
        Outcome::refuse(
            libc::EPERM,
            Refusal { subject: "exec", target, rule: None, reason: "the policy grants no executable ([exec] allow is empty)".into(), denial: None },
        )
    }
}
