//! The AEGIS base syscall set and the hardening that follows from a policy.
//!
//! Input: [`Hardening`] — what the policy grants (network, exec, namespaces, …), set by the
//! compiler from the IR. Output: a [`SeccompSpec`] — [`base_spec`] (Docker's default profile
//! as an unprivileged container sees it, see [`DEFAULT_BASE`]) with every capability the
//! policy did not ask for taken away by [`Hardening::apply`]. Invariants: hardening only
//! removes permissions, never adds any (a syscall the input spec denies stays denied);
//! restrictions are composed with existing rules by conjunction, so first-match order can't
//! undo them; C `int` arguments are compared on their low 32 bits only (the kernel truncates
//! them, so upper-half garbage must not slip past a deny); denials return EPERM.

use super::spec::{Action, ArgCond, CmpOp, EPERM, Rule, SeccompSpec};

/// Syscalls the AEGIS default base (`base = "default"`) allows unconditionally: the
/// unconditional allow list of Docker's default profile (`bench-data/docker-default-seccomp.json`,
/// moby 2025) restricted to names that exist on x86_64 or aarch64, plus `arch_prctl`
/// (Docker allows it on amd64 by an arch-gated rule). Conditional rules of that profile
/// (`socket`, `personality`, `clone`) are added by [`base_spec`]; its capability-gated rules
/// are dropped because the agent holds no capabilities; its `ptrace` /
/// `process_vm_{readv,writev}` rule (kernel ≥ 4.8) is left out, as the hardening would remove
/// it anyway unless the policy asks ([`Hardening::ptrace`]).
pub const DEFAULT_BASE: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

const LOW32: u64 = 0xffff_ffff;

/// `(args[i] as u32) == v`: how a C `int`/`unsigned int` argument is compared.
pub const fn int_eq(index: u8, v: u32) -> ArgCond {
    ArgCond::new(index, CmpOp::MaskedEq(LOW32), v as u64)
}

/// Address families.
pub const AF_UNIX: u32 = 1;
pub const AF_INET: u32 = 2;
pub const AF_NETLINK: u32 = 16;
pub const AF_INET6: u32 = 10;
/// `NETLINK_ROUTE` (glibc's getaddrinfo/if_nameindex need it; harmless without CAP_NET_ADMIN).
pub const NETLINK_ROUTE: u32 = 0;
/// Every `CLONE_NEW*` flag `clone` accepts (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
/// NEWPID, NEWNET) — Docker's 0x7E020000. `CLONE_NEWTIME` (0x80) overlaps the exit signal
/// byte of `clone` and is only meaningful to `unshare`.
pub const CLONE_NEW_MASK: u64 = 0x7e02_0000;
/// `CLONE_NEWTIME`.
pub const CLONE_NEWTIME: u64 = 0x80;
/// `TIOCSTI`: push characters into a terminal's input (run commands in the parent shell).
pub const TIOCSTI: u32 = 0x5412;
/// `TIOCLINUX`: console tricks including selection paste (same attack).
pub const TIOCLINUX: u32 = 0x541c;
/// `personality()` values Docker allows: PER_LINUX, PER_LINUX32, UNAME26, both, and the query.
pub const PERSONALITY_ALLOWED: [u32; 5] = [0, 8, 0x20000, 0x20008, 0xffff_ffff];

/// How the agent may `execve` after the runtime's own initial exec (seccomp is installed
/// before it, so the filter must let that one through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecGate {
    /// `execve`/`execveat` allowed; which files may run is Landlock's `EXECUTE` right (the
    /// authoritative gate: a filter cannot see the path).
    #[default]
    Allow,
    /// `execve`/`execveat` return USER_NOTIF: the supervisor answers CONTINUE for the
    /// runtime's initial exec and EPERM afterwards (install with
    /// [`apply_with_listener`](super::apply::apply_with_listener)).
    Notify,
}

/// Whether socket connections go through the supervisor (the AEGIS runtime always asks for
/// [`ConnectGate::Mediate`]; `Allow` is the filter without a supervisor, as imported or
/// exported profiles and the filter tests use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectGate {
    /// `connect`, `sendto` and every socket type run as the rest of the spec says.
    #[default]
    Allow,
    /// USER_NOTIF for: `connect` (every call: the destination is in memory the filter
    /// cannot read), `sendto` with a destination address (`args[4] != NULL`; `send()` passes
    /// NULL and stays in the kernel), and `socket`/`socketpair` of `AF_UNIX` with a type
    /// other than `SOCK_STREAM`/`SOCK_SEQPACKET` (a datagram socket can `sendmsg` to any
    /// pathname socket, and `sendmsg`'s destination is in memory too; `SOCK_RAW` is a
    /// datagram socket for `AF_UNIX`). The supervisor decides on its own copy of the address
    /// and has a broker perform the call (`runtime/src/unotify`, `docs/mediation.md`).
    Mediate,
}

/// `SOCK_STREAM`, `SOCK_DGRAM`, `SOCK_SEQPACKET` and the mask of the type part of
/// `socket()`'s second argument (the rest is `SOCK_NONBLOCK | SOCK_CLOEXEC`).
pub const SOCK_STREAM: u32 = 1;
pub const SOCK_DGRAM: u32 = 2;
pub const SOCK_SEQPACKET: u32 = 5;
pub const SOCK_TYPE_MASK: u64 = 0xf;

/// What the policy grants; every `false` removes a kernel attack surface from the filter.
/// `Default` grants nothing, except that the two gates default to the filter-only reading
/// ([`ExecGate::Allow`], [`ConnectGate::Allow`]): a supervisor must be there to serve them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hardening {
    /// AF_INET/AF_INET6 sockets (any network grant). Without it only AF_UNIX and
    /// NETLINK_ROUTE sockets can be created.
    pub inet_network: bool,
    pub exec: ExecGate,
    pub connect: ConnectGate,
    /// `clone`/`unshare` with `CLONE_NEW*` flags and `setns`.
    pub namespaces: bool,
    /// mount, umount2, pivot_root, chroot and the new mount API.
    pub mount: bool,
    pub bpf: bool,
    pub perf_event_open: bool,
    /// keyctl, add_key, request_key.
    pub keyring: bool,
    pub userfaultfd: bool,
    /// ptrace, process_vm_readv/writev, process_madvise, kcmp, pidfd_getfd.
    pub ptrace: bool,
    /// io_uring_setup/enter/register (io_uring bypasses seccomp for the operations it runs).
    pub io_uring: bool,
    /// `ioctl(TIOCSTI)` / `ioctl(TIOCLINUX)` (terminal input injection).
    pub tty_injection: bool,
    /// `personality()` beyond Docker's safe values (e.g. ADDR_NO_RANDOMIZE).
    pub personality: bool,
}

/// Syscalls denied by each group.
pub const MOUNT_SYSCALLS: &[&str] = &[
    "chroot",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "open_tree_attr",
    "pivot_root",
    "umount2",
];
pub const KEYRING_SYSCALLS: &[&str] = &["add_key", "keyctl", "request_key"];
pub const PTRACE_SYSCALLS: &[&str] = &[
    "kcmp",
    "pidfd_getfd",
    "process_madvise",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];
pub const IO_URING_SYSCALLS: &[&str] = &["io_uring_enter", "io_uring_register", "io_uring_setup"];
/// Denied whatever the policy says: machine administration that needs capabilities the
/// agent never has, obsolete interfaces, and x86 LDT changes.
pub const ALWAYS_DENIED: &[&str] = &[
    "acct",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "init_module",
    "iopl",
    "ioperm",
    "kexec_file_load",
    "kexec_load",
    "lookup_dcookie",
    "modify_ldt",
    "nfsservctl",
    "open_by_handle_at",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "swapoff",
    "swapon",
    "syslog",
    "_sysctl",
    "sysfs",
    "uselib",
    "ustat",
    "vhangup",
];

fn deny() -> Action {
    Action::Errno(EPERM)
}

/// Whether an action lets the syscall run (possibly after a supervisor or tracer says so).
fn permissive(a: Action) -> bool {
    matches!(
        a,
        Action::Allow | Action::Log | Action::UserNotif | Action::Trace(_)
    )
}

/// Deny `name` outright.
fn deny_all(spec: &mut SeccompSpec, name: &str) {
    spec.set(name, vec![Rule::always(deny())]);
}

/// Let `name` run only where it ran before AND one of `alternatives` holds.
fn restrict(spec: &mut SeccompSpec, name: &str, alternatives: &[Vec<ArgCond>]) {
    let default = spec.default_action;
    let old = spec.syscalls.get(name).cloned().unwrap_or_default();
    let mut rules = Vec::new();
    let mut ended = false;
    for r in old.iter().chain(std::iter::once(&Rule::always(default))) {
        if ended {
            break;
        }
        ended = r.conds.is_empty() && r.only_arch.is_none();
        if !permissive(r.action) {
            rules.push(r.clone());
            continue;
        }
        for alt in alternatives {
            let mut conds = r.conds.clone();
            for c in alt {
                // Skip a condition another one already implies (`args[0] == 0` implies
                // `(args[0] & 0xffffffff) == 0`).
                let implied = conds.iter().any(|d| {
                    d.index == c.index && d.op == CmpOp::Eq && {
                        let mut args = [0u64; 6];
                        if let Some(a) = args.get_mut(usize::from(c.index)) {
                            *a = d.value;
                        }
                        c.holds(&args)
                    }
                });
                if !implied && !conds.contains(c) {
                    conds.push(*c);
                }
            }
            if satisfiable(&conds) {
                rules.push(Rule {
                    conds,
                    action: r.action,
                    only_arch: r.only_arch,
                });
            }
        }
    }
    if !rules
        .iter()
        .any(|r| r.conds.is_empty() && r.only_arch.is_none())
    {
        rules.push(Rule::always(deny()));
    }
    if rules.iter().all(|r| !permissive(r.action)) {
        deny_all(spec, name);
    } else {
        spec.set(name, rules);
    }
}

/// Whether some argument values satisfy all `conds` (tries every boundary value the
/// conditions mention; a conjunction of these comparisons, if satisfiable, is satisfied by
/// one of them). Only used to leave out rules that can never match.
pub(crate) fn satisfiable(conds: &[ArgCond]) -> bool {
    (0u8..6).all(|i| {
        let mine: Vec<&ArgCond> = conds.iter().filter(|c| c.index == i).collect();
        if mine.is_empty() {
            return true;
        }
        let mut cands = vec![0u64, u64::MAX];
        for c in &mine {
            cands.extend([c.value, c.value.wrapping_sub(1), c.value.wrapping_add(1)]);
            if let CmpOp::MaskedEq(m) = c.op {
                cands.extend([
                    c.value | !m,
                    c.value | (!m & 0xffff_ffff),
                    c.value | (!m & !0xffff_ffff),
                ]);
            }
        }
        cands.iter().any(|v| {
            let mut args = [0u64; 6];
            if let Some(a) = args.get_mut(usize::from(i)) {
                *a = *v;
            }
            mine.iter().all(|c| c.holds(&args))
        })
    })
}

/// The calls [`ConnectGate::Mediate`] sends to the supervisor for their destination
/// address: `connect` always, `sendto` with one.
pub const DESTINATION_CALLS: [&str; 2] = ["connect", "sendto"];

/// [`ConnectGate::Mediate`] on `spec` (apply once, after every other change to the socket
/// syscalls: a later `allow` of `connect` would otherwise undo it).
pub fn mediate_connections(spec: &mut SeccompSpec) {
    let [connect, sendto] = DESTINATION_CALLS;
    notify_all(spec, connect);
    notify_when(spec, sendto, vec![ArgCond::new(4, CmpOp::Ne, 0)]);
    for n in ["socket", "socketpair"] {
        mediate_unix_non_stream(spec, n);
    }
}

/// Calls that create, remove or rename directory entries (besides `open`/`openat` with
/// `O_CREAT`): sent to the supervisor by [`mediate_file_entries`].
pub const FILE_ENTRY_SYSCALLS: &[&str] = &[
    "creat", "link", "linkat", "mkdir", "mkdirat", "mknod", "mknodat", "openat2", "rename", "renameat", "renameat2", "rmdir",
    "symlink", "symlinkat", "unlink", "unlinkat",
];
/// `O_CREAT` (the same on x86_64 and aarch64).
pub const O_CREAT: u64 = 0o100;

/// Sends every call that may create, remove or rename a directory entry to the supervisor,
/// where it may run: the runtime's file helper makes such entries for the agent in the
/// directories where its Landlock ruleset may not (on the way to protected paths that do
/// not exist at launch), except the protected names, and answers CONTINUE everywhere else.
/// `open`/`openat` only with `O_CREAT` (seccomp sees the flags); `openat2`'s flags are in
/// memory, so every `openat2`. Apply once, after the policy's own syscall rules.
pub fn mediate_file_entries(spec: &mut SeccompSpec) {
    for n in FILE_ENTRY_SYSCALLS {
        if runs(spec, n) {
            notify_all(spec, n);
        }
    }
    notify_when(spec, "open", vec![ArgCond::new(1, CmpOp::MaskedEq(O_CREAT), O_CREAT)]);
    notify_when(spec, "openat", vec![ArgCond::new(2, CmpOp::MaskedEq(O_CREAT), O_CREAT)]);
}

/// Whether any rule of `name` (or the default, when it has none) lets the syscall run.
fn runs(spec: &SeccompSpec, name: &str) -> bool {
    match spec.syscalls.get(name) {
        Some(rs) if !rs.is_empty() => rs.iter().any(|r| permissive(r.action)),
        _ => permissive(spec.default_action),
    }
}

/// Send every call of `name` that may run to the supervisor (a denied one stays denied).
fn notify_all(spec: &mut SeccompSpec, name: &str) {
    let default = spec.default_action;
    let rules = spec.syscalls.entry(name.to_owned()).or_default();
    if rules.is_empty() {
        rules.push(Rule::always(default));
    }
    for r in rules.iter_mut() {
        if permissive(r.action) {
            r.action = Action::UserNotif;
        }
    }
}

/// Send the calls of `name` where `conds` hold to the supervisor, where they may run.
fn notify_when(spec: &mut SeccompSpec, name: &str, conds: Vec<ArgCond>) {
    if !runs(spec, name) {
        return;
    }
    let default = spec.default_action;
    let old = std::mem::take(spec.syscalls.entry(name.to_owned()).or_default());
    let old = if old.is_empty() { vec![Rule::always(default)] } else { old };
    let mut rules = Vec::new();
    for r in &old {
        if permissive(r.action) {
            let mut c = r.conds.clone();
            c.extend(conds.iter().copied());
            if satisfiable(&c) {
                rules.push(Rule { conds: c, action: Action::UserNotif, only_arch: r.only_arch });
            }
        }
        rules.push(r.clone());
    }
    spec.set(name, rules);
}

/// `socket`/`socketpair` of `AF_UNIX` run as before for `SOCK_STREAM` and
/// `SOCK_SEQPACKET`, and go to the supervisor for every other type (datagram, `SOCK_RAW`,
/// which `AF_UNIX` turns into datagram, and types the kernel refuses anyway).
fn mediate_unix_non_stream(spec: &mut SeccompSpec, name: &str) {
    if !runs(spec, name) {
        return;
    }
    let unix = int_eq(0, AF_UNIX);
    let of_type = |t: u32| ArgCond::new(1, CmpOp::MaskedEq(SOCK_TYPE_MASK), u64::from(t));
    let default = spec.default_action;
    let old = std::mem::take(spec.syscalls.entry(name.to_owned()).or_default());
    let mut rules = Vec::new();
    let mut ended = false;
    for r in old.iter().chain(std::iter::once(&Rule::always(default))) {
        if ended {
            break;
        }
        ended = r.conds.is_empty() && r.only_arch.is_none();
        if !permissive(r.action) {
            rules.push(r.clone());
            continue;
        }
        let with = |extra: &[ArgCond]| {
            let mut c = r.conds.clone();
            for e in extra {
                if !c.contains(e) {
                    c.push(*e);
                }
            }
            c
        };
        let mut could_be_unix = false;
        for t in [SOCK_STREAM, SOCK_SEQPACKET] {
            let c = with(&[unix, of_type(t)]);
            if satisfiable(&c) {
                could_be_unix = true;
                rules.push(Rule { conds: c, action: r.action, only_arch: r.only_arch });
            }
        }
        let c = with(&[unix]);
        if satisfiable(&c) {
            could_be_unix = true;
            rules.push(Rule { conds: c, action: Action::UserNotif, only_arch: r.only_arch });
        }
        // The rule itself still decides other families (unless it only ever meant AF_UNIX).
        if !could_be_unix || !r.conds.contains(&unix) {
            rules.push(r.clone());
        }
    }
    if rules.last().is_some_and(|r| r.conds.is_empty() && r.only_arch.is_none() && r.action == default) {
        rules.pop();
    }
    spec.set(name, rules);
}

/// Deny `name` when `conds` hold, before anything else is considered.
fn deny_when(spec: &mut SeccompSpec, name: &str, conds: Vec<ArgCond>) {
    let default = spec.default_action;
    let rules = spec.syscalls.entry(name.to_owned()).or_default();
    if rules.is_empty() {
        if !permissive(default) {
            return; // already denied
        }
        rules.push(Rule::always(default));
    }
    rules.insert(0, Rule::when(conds, deny()));
}

impl Hardening {
    /// Take away from `spec` everything this policy did not grant.
    pub fn apply(&self, spec: &mut SeccompSpec) {
        let groups: [(bool, &[&str]); 8] = [
            (self.mount, MOUNT_SYSCALLS),
            (self.bpf, &["bpf"]),
            (self.perf_event_open, &["perf_event_open"]),
            (self.keyring, KEYRING_SYSCALLS),
            (self.userfaultfd, &["userfaultfd"]),
            (self.ptrace, PTRACE_SYSCALLS),
            (self.io_uring, IO_URING_SYSCALLS),
            (false, ALWAYS_DENIED),
        ];
        for (granted, names) in groups {
            if !granted {
                for n in names {
                    deny_all(spec, n);
                }
            }
        }
        if !self.namespaces {
            restrict(
                spec,
                "clone",
                &[vec![ArgCond::new(0, CmpOp::MaskedEq(CLONE_NEW_MASK), 0)]],
            );
            let unshare_mask = CLONE_NEW_MASK | CLONE_NEWTIME;
            restrict(
                spec,
                "unshare",
                &[vec![ArgCond::new(0, CmpOp::MaskedEq(unshare_mask), 0)]],
            );
            deny_all(spec, "setns");
        }
        // With inet sockets every netlink protocol, else NETLINK_ROUTE only.
        let netlink = if self.inet_network {
            vec![int_eq(0, AF_NETLINK)]
        } else {
            vec![int_eq(0, AF_NETLINK), int_eq(2, NETLINK_ROUTE)]
        };
        let mut families = vec![vec![int_eq(0, AF_UNIX)], netlink];
        if self.inet_network {
            families.push(vec![int_eq(0, AF_INET)]);
            families.push(vec![int_eq(0, AF_INET6)]);
        }
        restrict(spec, "socket", &families);
        if !self.tty_injection {
            deny_when(spec, "ioctl", vec![int_eq(1, TIOCSTI)]);
            deny_when(spec, "ioctl", vec![int_eq(1, TIOCLINUX)]);
        }
        if !self.personality {
            let alts: Vec<Vec<ArgCond>> = PERSONALITY_ALLOWED
                .iter()
                .map(|v| vec![int_eq(0, *v)])
                .collect();
            restrict(spec, "personality", &alts);
        }
        if self.connect == ConnectGate::Mediate {
            mediate_connections(spec);
        }
        if self.exec == ExecGate::Notify {
            for n in ["execve", "execveat"] {
                let runs = spec
                    .syscalls
                    .get(n)
                    .is_some_and(|rs| rs.iter().any(|r| permissive(r.action)));
                if runs {
                    spec.set(n, vec![Rule::always(Action::UserNotif)]);
                }
            }
        }
    }
}

/// The AEGIS default base before hardening: [`DEFAULT_BASE`] allowed, plus Docker's
/// conditional rules for an unprivileged container (socket families except AF_ALG and
/// AF_VSOCK, safe personalities, clone without namespace flags). Denials return EPERM.
pub fn base_spec() -> SeccompSpec {
    let mut spec = SeccompSpec::new(deny());
    for n in DEFAULT_BASE {
        spec.allow(n);
    }
    spec.set(
        "socket",
        vec![
            Rule::when(vec![ArgCond::new(0, CmpOp::Lt, 38)], Action::Allow),
            Rule::when(vec![ArgCond::new(0, CmpOp::Eq, 39)], Action::Allow),
            Rule::when(vec![ArgCond::new(0, CmpOp::Gt, 40)], Action::Allow),
        ],
    );
    spec.set(
        "personality",
        PERSONALITY_ALLOWED
            .iter()
            .map(|v| {
                Rule::when(
                    vec![ArgCond::new(0, CmpOp::Eq, u64::from(*v))],
                    Action::Allow,
                )
            })
            .collect(),
    );
    spec.set(
        "clone",
        vec![Rule::when(
            vec![ArgCond::new(0, CmpOp::MaskedEq(CLONE_NEW_MASK), 0)],
            Action::Allow,
        )],
    );
    spec
}

/// `base = "default"` hardened by `h`: the spec the compiler starts from before adding the
/// policy's own `[syscalls]` grants.
pub fn aegis_default(h: &Hardening) -> SeccompSpec {
    let mut spec = base_spec();
    h.apply(&mut spec);
    spec
}
