//! `aegisc explain-syscall POLICY|BUNDLE NAME_OR_NR [ARGS...] [--arch A]`: run the emitted
//! seccomp program in the emulator on one syscall and say what it does and why.
//! Exit 0 when the call runs (allow, log), 1 when it is refused or kills the agent.

use std::path::Path;

use aegis_targets::seccomp::{self, Action, SeccompData, SockFilter, syscalls::Arch};

use super::{Exit, Format, compile_or_report, print_json};
use crate::emit::seccomp as lower;
use crate::ir::SyscallAction;
use crate::lower::errno_name;

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok().or_else(|| s.parse::<i64>().ok().map(|v| v as u64)),
    }
}

pub fn run(target: &Path, syscall: &str, args: &[String], arch: Arch, format: Format) -> Exit {
    let (nr, name) = match parse_u64(syscall) {
        Some(n) => match u32::try_from(n) {
            Ok(n) => (n, arch.syscall_name(n).unwrap_or("unknown").to_string()),
            Err(_) => {
                eprintln!("error: syscall number {n} does not fit in 32 bits");
                return Exit::Invalid;
            }
        },
        None => match arch.nr(syscall) {
            Some(n) => (n, syscall.to_string()),
            None => {
                eprintln!("error: `{syscall}` is not a {} system call", arch.name());
                return Exit::Invalid;
            }
        },
    };
    let mut argv = [0u64; 6];
    if args.len() > 6 {
        eprintln!("error: a system call has at most 6 arguments");
        return Exit::Invalid;
    }
    for (slot, a) in argv.iter_mut().zip(args) {
        match parse_u64(a) {
            Some(v) => *slot = v,
            None => {
                eprintln!("error: argument `{a}` is not a number (decimal or 0x hex)");
                return Exit::Invalid;
            }
        }
    }
    let mut why = String::new();
    let program: Vec<SockFilter> = if target.is_dir() {
        let file = target.join(seccomp::bpf_file_name(arch));
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", file.display());
                return Exit::Invalid;
            }
        };
        match seccomp::from_bytes(&bytes) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                return Exit::Invalid;
            }
        }
    } else {
        let c = match compile_or_report(target) {
            Ok(c) => c,
            Err(exit) => return exit,
        };
        let mut losses = Vec::new();
        let spec = match lower::spec(&c.policy, &mut losses) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        };
        why = match c.policy.syscalls.rules.iter().find(|r| r.name == name) {
            Some(r) => {
                let what = match r.action {
                    SyscallAction::Allow => "allow",
                    SyscallAction::Deny(_) => "deny",
                    SyscallAction::Log => "log",
                    SyscallAction::Kill => "kill",
                };
                let at = r.origin.map(|o| c.sources.locate(o).to_string()).unwrap_or_default();
                format!("the policy's [syscalls] {what} rule for `{name}` ({at})")
            }
            None => {
                let data = SeccompData { nr, arch: arch.audit_arch(), instruction_pointer: 0, args: argv };
                let now = seccomp::decide(&spec, arch, &data);
                match now {
                    Action::UserNotif => "mediation: aegis-exec's supervisor decides and performs the call on its own copies (a pathname unix socket needs a [network] unix grant, unix datagram sockets are refused; docs/mediation.md)".to_string(),
                    Action::Allow | Action::Log => "the base set (not changed by this policy)".to_string(),
                    // A refusal: the same account `aegis why` and the audit records give.
                    _ => {
                        let w = crate::explain::syscall(&c.policy, &name, &argv);
                        match w.change {
                            Some(ch) => format!("{}; to allow it: {}", w.reason, ch.words),
                            None => w.reason,
                        }
                    }
                }
            }
        };
        match lower::programs(&spec) {
            Ok(ps) => match ps.into_iter().find(|(a, _)| *a == arch) {
                Some((_, p)) => p,
                None => return Exit::Internal,
            },
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        }
    };
    let data = SeccompData { nr, arch: arch.audit_arch(), instruction_pointer: 0, args: argv };
    let outcome = match seccomp::emulator::run_counted(&program, &data) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: the filter is broken on this input: {e}");
            return Exit::Internal;
        }
    };
    let action = Action::from_ret(outcome.ret);
    let errno = match action {
        Action::Errno(e) => errno_name(e).map(|n| format!(" ({n})")).unwrap_or_default(),
        _ => String::new(),
    };
    match format {
        Format::Human => {
            println!("{name} ({} nr {nr}) args {:?}", arch.name(), argv);
            println!("  filter answers {action}{errno} after {} BPF instructions", outcome.executed);
            if !why.is_empty() {
                println!("  because of {why}");
            }
        }
        Format::Json => print_json(&serde_json::json!({
            "syscall": name, "nr": nr, "arch": arch.name(), "args": argv,
            "action": action.to_string(), "instructions": outcome.executed, "because": why,
        })),
    }
    if matches!(action, Action::Allow | Action::Log) { Exit::Ok } else { Exit::Denied }
}
