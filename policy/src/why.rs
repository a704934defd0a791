//! Why a policy refuses a system call, and the words shared by every "why" answer.
//!
//! Input: a policy ([`Policy`]) and one system call the seccomp program refused (name and
//! argument registers). Output: a [`Why`]: the rule that decided (with its source origin,
//! `None` for default deny and built-in hardening), the reason in words, and, where one
//! exists, the smallest [`Change`] to the policy that would allow exactly that.
//! Invariants: a syscall's reason is derived from the same hardening tables the seccomp
//! lowering uses (`aegis_targets::seccomp::hardening`), never from a second list; nothing
//! here reads the filesystem, so it is cheap enough for the supervisor to call for each first
//! denial of a target. Questions about files, endpoints and APIs are answered by the
//! compiler's `explain` (they can compile a changed policy), on top of these types.

use aegis_targets::seccomp::hardening::{
    self, AF_INET, AF_INET6, AF_NETLINK, AF_UNIX, ALWAYS_DENIED, CLONE_NEW_MASK, CLONE_NEWTIME, DEFAULT_BASE, IO_URING_SYSCALLS,
    KEYRING_SYSCALLS, MOUNT_SYSCALLS, NETLINK_ROUTE, PERSONALITY_ALLOWED, PTRACE_SYSCALLS, TIOCLINUX, TIOCSTI,
};

use crate::eval::RuleRef;
use crate::ir::{NetworkMode, Policy, SyscallAction, SyscallBase};

/// Syscalls that, when explicitly allowed, break isolation or widen kernel attack surface.
pub const DANGEROUS_SYSCALLS: &[&str] = &[
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "userfaultfd", "mount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "unshare", "setns", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "reboot", "swapon", "swapoff", "personality", "clone3", "name_to_handle_at",
    "open_by_handle_at", "iopl", "ioperm", "quotactl", "acct", "lookup_dcookie", "vm86", "vm86old",
];

/// A change to a policy, as text to add to it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// What to do, in words.
    pub words: String,
    /// TOML to add (a table header and one key), empty when the change is to edit or
    /// remove an existing rule (then `words` says which).
    pub toml: String,
    /// What the change would also open that a reviewer must weigh: credential stores,
    /// dangerous system calls, lints it triggers.
    pub warnings: Vec<String>,
}

/// Why something was refused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Why {
    /// The rule that decided (`None`: default deny or built-in hardening).
    pub rule: Option<RuleRef>,
    /// One or two sentences.
    pub reason: String,
    /// The smallest change that would allow it, when the policy can express one.
    pub change: Option<Change>,
}

pub fn toml_list(table: &str, key: &str, value: &str) -> String {
    format!("[{table}]\n{key} = [{}]", toml_string(value))
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[syscalls] allow = ["name"]`, flagged when the lints call the syscall dangerous.
pub fn allow_syscall(name: &str, why: &str) -> Change {
    let mut warnings = Vec::new();
    if DANGEROUS_SYSCALLS.contains(&name) {
        warnings.push(format!("`{name}` is a dangerous system call (aegis::lint::dangerous_syscall): {why}"));
    }
    Change { words: format!("allow `{name}` in [syscalls]"), toml: toml_list("syscalls", "allow", name), warnings }
}

/// Why the policy's seccomp program refuses `name(args)` on `arch` (the program said so;
/// this says which part of the policy made it). `errno_for` names the errno for the text.
pub fn syscall(policy: &Policy, name: &str, args: &[u64; 6]) -> Why {
    let int = |i: usize| args.get(i).map_or(0, |a| *a as u32);
    if let Some(r) = policy.syscalls.rules.iter().find(|r| r.name == name) {
        let (what, change) = match r.action {
            SyscallAction::Deny(_) => ("deny", format!("remove `{name}` from [syscalls] deny (and errno)")),
            SyscallAction::Kill => ("kill", format!("remove `{name}` from [syscalls] kill")),
            SyscallAction::Allow | SyscallAction::Log => ("allow", String::new()),
        };
        let rule = RuleRef { kind: format!("[syscalls] {what} rule"), text: name.to_string(), origin: r.origin };
        return Why {
            rule: Some(rule),
            reason: format!("the policy's [syscalls] {what} rule names `{name}`"),
            change: (!change.is_empty()).then(|| Change { words: change, toml: String::new(), warnings: Vec::new() }),
        };
    }
    let group = |names: &[&str]| names.contains(&name);
    let hardened = |what: &str| Why {
        rule: None,
        reason: format!("AEGIS hardening: {what} is refused unless [syscalls] allow names it (the policy grants nothing that needs it)"),
        change: Some(allow_syscall(name, what)),
    };
    if group(ALWAYS_DENIED) {
        return Why {
            rule: None,
            reason: format!("`{name}` is always refused: machine administration the agent never has the capability for, or an obsolete interface"),
            change: None,
        };
    }
    if group(IO_URING_SYSCALLS) {
        return Why {
            rule: None,
            reason: "AEGIS hardening: io_uring runs file and network operations without the seccomp filter or the supervisor's checks".into(),
            change: None,
        };
    }
    if group(MOUNT_SYSCALLS) {
        return hardened(&format!("mounting (`{name}`)"));
    }
    if group(PTRACE_SYSCALLS) {
        return hardened(&format!("tracing other processes (`{name}`)"));
    }
    if group(KEYRING_SYSCALLS) {
        return hardened(&format!("the kernel keyring (`{name}`)"));
    }
    if ["bpf", "perf_event_open", "userfaultfd"].contains(&name) {
        return hardened(&format!("`{name}`"));
    }
    match name {
        "setns" => return hardened("joining namespaces (`setns`)"),
        "unshare" | "clone" if u64::from(int(0)) & (CLONE_NEW_MASK | CLONE_NEWTIME) != 0 => {
            return Why { change: Some(allow_syscall("unshare", "it lets the agent make namespaces")), ..hardened(&format!("making namespaces (`{name}` with CLONE_NEW* flags)")) };
        }
        "ioctl" if int(1) == TIOCSTI || int(1) == TIOCLINUX => {
            return Why {
                rule: None,
                reason: "AEGIS hardening: TIOCSTI and TIOCLINUX push input into a terminal (commands typed into your shell after the agent exits)".into(),
                change: None,
            };
        }
        "personality" if !PERSONALITY_ALLOWED.contains(&int(0)) => return hardened(&format!("personality({:#x}) (it can turn off address space randomisation)", int(0))),
        "socket" | "socketpair" => {
            let family = int(0);
            let inet = family == AF_INET || family == AF_INET6;
            if inet && policy.network.mode == NetworkMode::None {
                return Why {
                    rule: None,
                    reason: "network mode is `none`: the agent may not make Internet sockets".into(),
                    change: Some(Change {
                        words: "give the agent a network: network mode `proxy` and the endpoints it needs".into(),
                        toml: "[network]\nmode = \"proxy\"\nallow = [\"HOST:PORT\"]".into(),
                        warnings: Vec::new(),
                    }),
                };
            }
            if family == AF_NETLINK && policy.network.mode == NetworkMode::None && int(2) != NETLINK_ROUTE {
                return Why { rule: None, reason: "without a network grant only NETLINK_ROUTE netlink sockets are allowed".into(), change: None };
            }
            if family != AF_UNIX && !inet && family != AF_NETLINK {
                return Why {
                    rule: None,
                    reason: format!(
                        "the base set allows sockets of AF_UNIX, AF_NETLINK and (with a network grant) AF_INET/AF_INET6 only; family {family} is refused"
                    ),
                    change: Some(allow_syscall("socket", "allowing `socket` outright allows every address family (raw packets, kernel crypto, ...)")),
                };
            }
        }
        _ => {}
    }
    let in_base = match &policy.syscalls.base {
        SyscallBase::Default => DEFAULT_BASE.contains(&name) || hardening::base_spec().syscalls.contains_key(name),
        SyscallBase::Oci { .. } => false,
    };
    let base = match &policy.syscalls.base {
        SyscallBase::Default => "the default base set (Docker's default profile)".to_string(),
        SyscallBase::Oci { path, .. } => format!("the base profile {path}"),
    };
    if in_base {
        return Why { rule: None, reason: format!("{base} allows `{name}` only with other arguments"), change: Some(allow_syscall(name, "it is allowed with any arguments")) };
    }
    Why { rule: None, reason: format!("`{name}` is not in {base}"), change: Some(allow_syscall(name, "outside the base set")) }
}
