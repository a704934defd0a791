//! System calls in words, for audit records: `socket(AF_INET6, SOCK_RAW|SOCK_CLOEXEC, 0)`
//! instead of `syscall=41`.
//!
//! Input: a syscall name, its six argument registers, and a way to read a string argument
//! from the caller's memory (a path, a file system type; `None` when it cannot be read).
//! Output: one line, `name(arg, arg, ...)`. Invariants: only for people — nothing decides on
//! this text; C `int` arguments are shown from their low 32 bits as the kernel reads them;
//! flags the tables do not know stay as hex next to the known ones; a string is quoted,
//! escaped and cut at [`MAX_STRING`] characters; the output never exceeds a few hundred
//! bytes whatever the arguments hold. Syscalls without a table entry show every argument
//! up to the last non-zero one, in hex.

/// Longest string argument shown (characters).
pub const MAX_STRING: usize = 96;

/// How one argument is shown.
#[derive(Clone, Copy)]
enum Kind {
    /// A signed C `int`.
    Int,
    /// An unsigned quantity, in hex.
    Hex,
    /// A descriptor (`AT_FDCWD` by name).
    Fd,
    /// A NUL-terminated string in the caller's memory.
    Str,
    /// A pointer: only its value means anything here.
    Ptr,
    /// One value of a table.
    Enum(&'static [(u64, &'static str)]),
    /// A set of flags of a table (low 32 bits).
    Flags(&'static [(u64, &'static str)]),
    /// `socket()`'s type: a SOCK_* value plus SOCK_NONBLOCK / SOCK_CLOEXEC.
    SockType,
    /// clone/unshare flags: CLONE_* plus the exit signal in the low byte (clone only).
    Clone { signal: bool },
}

use Kind::*;

const AF: &[(u64, &str)] = &[
    (0, "AF_UNSPEC"),
    (1, "AF_UNIX"),
    (2, "AF_INET"),
    (3, "AF_AX25"),
    (4, "AF_IPX"),
    (5, "AF_APPLETALK"),
    (10, "AF_INET6"),
    (16, "AF_NETLINK"),
    (17, "AF_PACKET"),
    (29, "AF_CAN"),
    (31, "AF_BLUETOOTH"),
    (38, "AF_ALG"),
    (40, "AF_VSOCK"),
    (42, "AF_QIPCRTR"),
    (44, "AF_XDP"),
];

const SOCK: &[(u64, &str)] = &[
    (1, "SOCK_STREAM"),
    (2, "SOCK_DGRAM"),
    (3, "SOCK_RAW"),
    (4, "SOCK_RDM"),
    (5, "SOCK_SEQPACKET"),
    (6, "SOCK_DCCP"),
    (10, "SOCK_PACKET"),
];

const CLONE: &[(u64, &str)] = &[
    (0x80, "CLONE_NEWTIME"),
    (0x100, "CLONE_VM"),
    (0x200, "CLONE_FS"),
    (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"),
    (0x1000, "CLONE_PIDFD"),
    (0x2000, "CLONE_PTRACE"),
    (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"),
    (0x10000, "CLONE_THREAD"),
    (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"),
    (0x80000, "CLONE_SETTLS"),
    (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"),
    (0x400000, "CLONE_DETACHED"),
    (0x800000, "CLONE_UNTRACED"),
    (0x1000000, "CLONE_CHILD_SETTID"),
    (0x2000000, "CLONE_NEWCGROUP"),
    (0x4000000, "CLONE_NEWUTS"),
    (0x8000000, "CLONE_NEWIPC"),
    (0x10000000, "CLONE_NEWUSER"),
    (0x20000000, "CLONE_NEWPID"),
    (0x40000000, "CLONE_NEWNET"),
    (0x80000000, "CLONE_IO"),
];

const MS: &[(u64, &str)] = &[
    (1, "MS_RDONLY"),
    (2, "MS_NOSUID"),
    (4, "MS_NODEV"),
    (8, "MS_NOEXEC"),
    (16, "MS_SYNCHRONOUS"),
    (32, "MS_REMOUNT"),
    (64, "MS_MANDLOCK"),
    (128, "MS_DIRSYNC"),
    (256, "MS_NOSYMFOLLOW"),
    (1024, "MS_NOATIME"),
    (2048, "MS_NODIRATIME"),
    (4096, "MS_BIND"),
    (8192, "MS_MOVE"),
    (16384, "MS_REC"),
    (32768, "MS_SILENT"),
    (1 << 16, "MS_POSIXACL"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
    (1 << 21, "MS_RELATIME"),
    (1 << 24, "MS_STRICTATIME"),
    (1 << 25, "MS_LAZYTIME"),
];

const PTRACE: &[(u64, &str)] = &[
    (0, "PTRACE_TRACEME"),
    (1, "PTRACE_PEEKTEXT"),
    (2, "PTRACE_PEEKDATA"),
    (3, "PTRACE_PEEKUSER"),
    (4, "PTRACE_POKETEXT"),
    (5, "PTRACE_POKEDATA"),
    (6, "PTRACE_POKEUSER"),
    (7, "PTRACE_CONT"),
    (8, "PTRACE_KILL"),
    (9, "PTRACE_SINGLESTEP"),
    (12, "PTRACE_GETREGS"),
    (13, "PTRACE_SETREGS"),
    (16, "PTRACE_ATTACH"),
    (17, "PTRACE_DETACH"),
    (24, "PTRACE_SYSCALL"),
    (0x4200, "PTRACE_SETOPTIONS"),
    (0x4201, "PTRACE_GETEVENTMSG"),
    (0x4202, "PTRACE_GETSIGINFO"),
    (0x4203, "PTRACE_SETSIGINFO"),
    (0x4204, "PTRACE_GETREGSET"),
    (0x4205, "PTRACE_SETREGSET"),
    (0x4206, "PTRACE_SEIZE"),
    (0x4207, "PTRACE_INTERRUPT"),
    (0x4208, "PTRACE_LISTEN"),
    (0x420e, "PTRACE_GET_SYSCALL_INFO"),
];

const BPF_CMD: &[(u64, &str)] = &[
    (0, "BPF_MAP_CREATE"),
    (1, "BPF_MAP_LOOKUP_ELEM"),
    (2, "BPF_MAP_UPDATE_ELEM"),
    (3, "BPF_MAP_DELETE_ELEM"),
    (4, "BPF_MAP_GET_NEXT_KEY"),
    (5, "BPF_PROG_LOAD"),
    (6, "BPF_OBJ_PIN"),
    (7, "BPF_OBJ_GET"),
    (8, "BPF_PROG_ATTACH"),
    (9, "BPF_PROG_DETACH"),
    (10, "BPF_PROG_TEST_RUN"),
];

const KEYCTL: &[(u64, &str)] = &[
    (0, "KEYCTL_GET_KEYRING_ID"),
    (1, "KEYCTL_JOIN_SESSION_KEYRING"),
    (2, "KEYCTL_UPDATE"),
    (3, "KEYCTL_REVOKE"),
    (4, "KEYCTL_CHOWN"),
    (5, "KEYCTL_SETPERM"),
    (6, "KEYCTL_DESCRIBE"),
    (7, "KEYCTL_CLEAR"),
    (8, "KEYCTL_LINK"),
    (9, "KEYCTL_UNLINK"),
    (10, "KEYCTL_SEARCH"),
    (11, "KEYCTL_READ"),
];

const IOCTL: &[(u64, &str)] = &[
    (0x5401, "TCGETS"),
    (0x5402, "TCSETS"),
    (0x540e, "TIOCSCTTY"),
    (0x540f, "TIOCGPGRP"),
    (0x5410, "TIOCSPGRP"),
    (0x5412, "TIOCSTI"),
    (0x5413, "TIOCGWINSZ"),
    (0x5414, "TIOCSWINSZ"),
    (0x541b, "FIONREAD"),
    (0x541c, "TIOCLINUX"),
    (0x5421, "FIONBIO"),
];

const UMOUNT: &[(u64, &str)] = &[(1, "MNT_FORCE"), (2, "MNT_DETACH"), (4, "MNT_EXPIRE"), (8, "UMOUNT_NOFOLLOW")];

/// The argument kinds of the syscalls worth decoding (those a policy denies by default or a
/// user would look up). Argument lists shorter than six end the call's arguments.
fn kinds(name: &str) -> Option<&'static [Kind]> {
    Some(match name {
        "socket" => &[Enum(AF), SockType, Int],
        "socketpair" => &[Enum(AF), SockType, Int, Ptr],
        "clone" => &[Clone { signal: true }, Ptr, Ptr, Ptr, Hex],
        "unshare" => &[Clone { signal: false }],
        "setns" => &[Fd, Clone { signal: false }],
        "mount" => &[Str, Str, Str, Flags(MS), Ptr],
        "umount2" => &[Str, Flags(UMOUNT)],
        "pivot_root" => &[Str, Str],
        "chroot" | "acct" | "swapoff" => &[Str],
        "swapon" => &[Str, Hex],
        "ptrace" => &[Enum(PTRACE), Int, Ptr, Ptr],
        "process_vm_readv" | "process_vm_writev" => &[Int, Ptr, Int, Ptr, Int, Hex],
        "kcmp" => &[Int, Int, Int, Hex, Hex],
        "pidfd_getfd" => &[Fd, Int, Hex],
        "bpf" => &[Enum(BPF_CMD), Ptr, Int],
        "perf_event_open" => &[Ptr, Int, Int, Fd, Hex],
        "keyctl" => &[Enum(KEYCTL), Hex, Hex, Hex, Hex],
        "add_key" => &[Str, Str, Ptr, Int, Int],
        "request_key" => &[Str, Str, Str, Int],
        "userfaultfd" | "personality" => &[Hex],
        "io_uring_setup" => &[Int, Ptr],
        "io_uring_enter" => &[Fd, Int, Int, Hex, Ptr, Int],
        "io_uring_register" => &[Fd, Int, Ptr, Int],
        "ioctl" => &[Fd, Enum(IOCTL), Hex],
        "reboot" => &[Hex, Hex, Hex, Ptr],
        "syslog" => &[Int, Ptr, Int],
        "init_module" => &[Ptr, Int, Str],
        "finit_module" => &[Fd, Str, Hex],
        "delete_module" => &[Str, Hex],
        "kexec_load" => &[Hex, Int, Ptr, Hex],
        "kexec_file_load" => &[Fd, Fd, Int, Ptr, Hex],
        "open_by_handle_at" => &[Fd, Ptr, Hex],
        "name_to_handle_at" => &[Fd, Str, Ptr, Ptr, Hex],
        "quotactl" => &[Hex, Str, Int, Ptr],
        "iopl" => &[Int],
        "ioperm" => &[Hex, Hex, Int],
        "modify_ldt" => &[Int, Ptr, Int],
        "execve" => &[Str, Ptr, Ptr],
        "execveat" => &[Fd, Str, Ptr, Ptr, Hex],
        "open" => &[Str, Hex, Hex],
        "openat" => &[Fd, Str, Hex, Hex],
        "mkdir" | "rmdir" | "unlink" | "chdir" => &[Str, Hex],
        "mkdirat" | "unlinkat" => &[Fd, Str, Hex],
        "connect" | "bind" => &[Fd, Ptr, Int],
        _ => return None,
    })
}

/// A table entry's name, or the value in hex.
fn enum_text(table: &[(u64, &str)], v: u64) -> String {
    table.iter().find(|(k, _)| *k == v).map(|(_, n)| (*n).to_string()).unwrap_or_else(|| format!("{v:#x}"))
}

/// Known flags joined with `|`, the rest as hex; `0` for none.
fn flags_text(table: &[(u64, &str)], v: u64) -> String {
    let mut parts = Vec::new();
    let mut rest = v;
    for (bit, name) in table {
        if v & bit == *bit && *bit != 0 {
            parts.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 || parts.is_empty() {
        parts.push(format!("{rest:#x}"));
    }
    parts.join("|")
}

/// A string argument as shown: quoted, escaped, cut.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_STRING) + 2);
    out.push('"');
    let mut chars = s.chars();
    for c in chars.by_ref().take(MAX_STRING) {
        out.extend(c.escape_debug());
    }
    out.push('"');
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

fn one(kind: Kind, v: u64, read: &mut dyn FnMut(u64) -> Option<String>) -> String {
    let int = v as u32 as i32;
    match kind {
        Int => int.to_string(),
        Hex => format!("{v:#x}"),
        Fd if int == -100 => "AT_FDCWD".into(),
        Fd => int.to_string(),
        Ptr if v == 0 => "NULL".into(),
        Ptr => format!("{v:#x}"),
        Str if v == 0 => "NULL".into(),
        Str => match read(v) {
            Some(s) => quoted(&s),
            None => format!("{v:#x}"),
        },
        Enum(t) => enum_text(t, u64::from(v as u32)),
        Flags(t) => flags_text(t, u64::from(v as u32)),
        SockType => {
            let t = u64::from(v as u32);
            let mut s = enum_text(SOCK, t & 0xf);
            if t & 0x800 != 0 {
                s.push_str("|SOCK_NONBLOCK");
            }
            if t & 0x80000 != 0 {
                s.push_str("|SOCK_CLOEXEC");
            }
            let rest = t & !(0xf | 0x800 | 0x80000);
            if rest != 0 {
                s.push_str(&format!("|{rest:#x}"));
            }
            s
        }
        Clone { signal } => {
            let f = if signal { v & !0xff } else { v };
            let mut s = if f == 0 { String::new() } else { flags_text(CLONE, f) };
            if signal && v & 0xff != 0 {
                if !s.is_empty() {
                    s.push('|');
                }
                s.push_str(&format!("signal {}", v & 0xff));
            }
            if s.is_empty() { "0".into() } else { s }
        }
    }
}

/// `name(arg, ...)` for people; `read` fetches a string argument from the caller.
pub fn call(name: &str, args: &[u64; 6], read: &mut dyn FnMut(u64) -> Option<String>) -> String {
    let shown: Vec<String> = match kinds(name) {
        Some(ks) => ks.iter().zip(args.iter()).map(|(k, v)| one(*k, *v, read)).collect(),
        None => {
            let n = args.iter().rposition(|a| *a != 0).map_or(0, |i| i + 1);
            args.iter().take(n).map(|a| format!("{a:#x}")).collect()
        }
    };
    format!("{name}({})", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_memory(_: u64) -> Option<String> {
        None
    }

    #[test]
    fn known_calls_read_like_strace() {
        let c = |name: &str, a: [u64; 6]| call(name, &a, &mut no_memory);
        assert_eq!(c("socket", [10, 3 | 0x80000, 0, 0, 0, 0]), "socket(AF_INET6, SOCK_RAW|SOCK_CLOEXEC, 0)");
        assert_eq!(c("unshare", [0x1000_0000 | 0x2_0000, 0, 0, 0, 0, 0]), "unshare(CLONE_NEWNS|CLONE_NEWUSER)");
        assert_eq!(c("clone", [0x1000_0000 | 17, 0, 0, 0, 0, 0]), "clone(CLONE_NEWUSER|signal 17, NULL, NULL, NULL, 0x0)");
        assert_eq!(c("ptrace", [16, 4242, 0, 0, 0, 0]), "ptrace(PTRACE_ATTACH, 4242, NULL, NULL)");
        assert_eq!(c("ioctl", [0, 0x5412, 0x7ffd_0000, 0, 0, 0]), "ioctl(0, TIOCSTI, 0x7ffd0000)");
        // Upper-half garbage in an int argument is what the kernel ignores.
        assert_eq!(c("socket", [0xdead_0000_0000_0011, 1, 0, 0, 0, 0]), "socket(AF_PACKET, SOCK_STREAM, 0)");
        assert_eq!(c("mount", [1, 2, 3, 4096 | 16384 | (1 << 30), 0, 0]), "mount(0x1, 0x2, 0x3, MS_BIND|MS_REC|0x40000000, NULL)");
        assert_eq!(c("getrandom_x", [1, 0, 3, 0, 0, 0]), "getrandom_x(0x1, 0x0, 0x3)");
        assert_eq!(c("sync", [0; 6]), "sync()");
    }

    #[test]
    fn strings_are_quoted_escaped_and_cut() {
        let mut mem = |a: u64| Some(if a == 1 { "/tmp/a\"b\n".to_string() } else { "x".repeat(10_000) });
        assert_eq!(call("chroot", &[1, 0, 0, 0, 0, 0], &mut mem), r#"chroot("/tmp/a\"b\n")"#);
        let long = call("acct", &[2, 0, 0, 0, 0, 0], &mut mem);
        assert!(long.len() < MAX_STRING + 20 && long.ends_with("\"…)"), "{long}");
    }
}
