//! Differential tests: the emulated verdict of every emitted program equals `decide` for
//! every syscall number (0..=highest+64), x32 variants, -1, foreign architectures and
//! boundary argument values; plus property tests over random specs, the cache proof,
//! determinism, long jumps and the 4096-instruction limit.

use aegis_targets::seccomp::cache::{check_cacheable, is_const_allow};
use aegis_targets::seccomp::codegen::CodegenError;
use aegis_targets::seccomp::hardening::{self, ConnectGate, ExecGate, Hardening};
use aegis_targets::seccomp::spec::ENOSYS;
use aegis_targets::seccomp::syscalls::{AUDIT_ARCH_ARM, AUDIT_ARCH_I386, X32_SYSCALL_BIT};
use aegis_targets::seccomp::*;
use proptest::prelude::*;


fn boundary_values() -> Vec<u64> {
    let mut v = vec![
        0,
        1,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        u64::MAX,
        u64::MAX - 1,
    ];
    v.extend((0..64).map(|b| 1u64 << b));
    v
}

/// Argument vectors worth trying for syscall `name`: zeros, each boundary value in each
/// position, and every value the rules mention (±1, with the other half flipped), both alone
/// and combined with the other conditions of the same rule.
fn arg_vectors(spec: &SeccompSpec, arch: Arch, name: &str) -> Vec<[u64; 6]> {
    let rules = spec.rules_for(arch, name);
    let mut out = vec![[0u64; 6]];
    if rules.iter().all(|r| r.conds.is_empty()) {
        out.push([u64::MAX; 6]);
        return out;
    }
    let mut interesting = boundary_values();
    for r in &rules {
        for c in &r.conds {
            let v = c.value;
            interesting.extend([
                v,
                v.wrapping_add(1),
                v.wrapping_sub(1),
                v ^ 0xffff_ffff_0000_0000,
                v ^ 0x1_0000_0000,
            ]);
            if let CmpOp::MaskedEq(m) = c.op {
                interesting.extend([v | !m, m, !m, v ^ (m & m.wrapping_neg())]);
            }
        }
    }
    interesting.sort_unstable();
    interesting.dedup();
    for i in 0..6 {
        for v in &interesting {
            let mut a = [0u64; 6];
            a[i] = *v;
            out.push(a);
        }
    }
    for r in &rules {
        // A vector that satisfies the rule's Eq/MaskedEq conditions, then perturbed.
        let mut base = [0u64; 6];
        for c in &r.conds {
            base[usize::from(c.index)] = c.value;
        }
        out.push(base);
        for c in &r.conds {
            for v in &interesting {
                let mut a = base;
                a[usize::from(c.index)] = *v;
                out.push(a);
            }
        }
    }
    out
}

fn check_nr(spec: &SeccompSpec, arch: Arch, prog: &[SockFilter], nr: u32, args_list: &[[u64; 6]]) {
    for args in args_list {
        let d = SeccompData::new(arch, nr, *args);
        let want = decide(spec, arch, &d).to_ret();
        let got = run(prog, &d).unwrap_or_else(|e| panic!("{arch} nr {nr:#x}: emulator error {e}"));
        assert_eq!(
            got,
            want,
            "{arch} nr {nr:#x} ({:?}) args {args:x?}: program says {}, decide says {}",
            arch.syscall_name(nr),
            Action::from_ret(got),
            Action::from_ret(want)
        );
    }
}

/// The full differential check of one spec on every architecture.
fn differential(spec: &SeccompSpec) {
    let weights = SyscallWeights::agent_mix();
    for arch in Arch::ALL {
        let prog = compile(spec, arch, &weights).unwrap();
        for nr in 0..=arch.highest_nr() + 64 {
            let args = match arch.syscall_name(nr) {
                Some(name) => arg_vectors(spec, arch, name),
                None => vec![[0; 6], [u64::MAX; 6]],
            };
            check_nr(spec, arch, &prog, nr, &args);
            // x32 variant (x86_64) or just a huge number (aarch64): always ENOSYS.
            check_nr(spec, arch, &prog, nr | X32_SYSCALL_BIT, &[[0; 6]]);
            let got = run(&prog, &SeccompData::new(arch, nr | X32_SYSCALL_BIT, [0; 6])).unwrap();
            assert_eq!(Action::from_ret(got), Action::Errno(ENOSYS));
        }
        for nr in [
            u32::MAX,
            u32::MAX - 1,
            0x7fff_ffff,
            0x8000_0000,
            X32_SYSCALL_BIT,
        ] {
            check_nr(spec, arch, &prog, nr, &[[0; 6]]);
        }
        // Foreign architectures: i386 (int 0x80), arm compat, the other 64-bit arch, garbage.
        for foreign in [AUDIT_ARCH_I386, AUDIT_ARCH_ARM, 0, u32::MAX]
            .into_iter()
            .chain(
                Arch::ALL
                    .iter()
                    .filter(|a| **a != arch)
                    .map(|a| a.audit_arch()),
            )
        {
            for nr in [0, 1, 39, 59, 172, 221, 435] {
                let d = SeccompData {
                    nr,
                    arch: foreign,
                    instruction_pointer: 0,
                    args: [0; 6],
                };
                assert_eq!(run(&prog, &d).unwrap(), Action::KillProcess.to_ret());
                assert_eq!(decide(spec, arch, &d), Action::KillProcess);
            }
        }
        let report = check_cacheable(spec, arch, &prog).unwrap();
        assert_eq!(report.always_allowed.len(), spec.always_allowed(arch).len());
    }
}

fn docker_spec() -> SeccompSpec {
    let text = include_str!("../../bench-data/docker-default-seccomp.json");
    oci::import(text).unwrap().spec
}

#[test]
fn minimal_spec_matches_decide() {
    let mut spec = SeccompSpec::new(Action::Errno(1));
    for n in [
        "read",
        "write",
        "exit_group",
        "getpid",
        "getppid",
        "rt_sigreturn",
        "brk",
        "mmap",
    ] {
        spec.allow(n);
    }
    differential(&spec);
}

#[test]
fn docker_default_import_matches_decide() {
    differential(&docker_spec());
}

#[test]
fn aegis_default_hardened_matches_decide() {
    differential(&hardening::aegis_default(&Hardening::default()));
}

#[test]
fn aegis_default_with_every_grant_matches_decide() {
    let h = Hardening {
        inet_network: true,
        exec: ExecGate::Notify,
        connect: ConnectGate::Mediate,
        namespaces: true,
        mount: true,
        bpf: true,
        perf_event_open: true,
        keyring: true,
        userfaultfd: true,
        ptrace: true,
        io_uring: true,
        tty_injection: true,
        personality: true,
    };
    differential(&hardening::aegis_default(&h));
}

#[test]
fn every_action_and_operator_with_64_bit_values() {
    let mut spec = SeccompSpec::new(Action::KillProcess);
    let v = 0x1234_5678_9abc_def0u64;
    let ops = [
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];
    let actions = [
        Action::Allow,
        Action::Log,
        Action::Errno(13),
        Action::Trap(7),
        Action::Trace(9),
        Action::UserNotif,
        Action::KillThread,
    ];
    for (i, (op, act)) in ops.iter().zip(actions.iter().cycle()).enumerate() {
        let name = [
            "getpriority",
            "setpriority",
            "lseek",
            "fcntl",
            "flock",
            "kill",
        ][i];
        spec.push(name, Rule::when(vec![ArgCond::new(1, *op, v)], *act));
        spec.push(
            name,
            Rule::when(vec![ArgCond::new(0, *op, 0xffff_ffff)], Action::Errno(2)),
        );
    }
    spec.push(
        "dup3",
        Rule::when(
            vec![ArgCond::new(
                2,
                CmpOp::MaskedEq(0xff00_0000_0000_00ff),
                0x0100_0000_0000_0001,
            )],
            Action::Allow,
        ),
    );
    spec.push(
        "dup3",
        Rule::when(
            vec![ArgCond::new(2, CmpOp::MaskedEq(0xffff_0000), 0)],
            Action::Log,
        ),
    );
    spec.push(
        "dup3",
        Rule::when(
            vec![ArgCond::new(
                2,
                CmpOp::MaskedEq(0x1_0000_0000),
                0x1_0000_0000,
            )],
            Action::Errno(5),
        ),
    );
    spec.push(
        "tgkill",
        Rule::when(
            vec![
                ArgCond::new(0, CmpOp::Eq, 1),
                ArgCond::new(1, CmpOp::Gt, u64::MAX - 1),
                ArgCond::new(2, CmpOp::Le, 0),
            ],
            Action::Allow,
        ),
    );
    spec.push("tgkill", Rule::always(Action::Errno(4)));
    differential(&spec);
}

#[test]
fn unknown_numbers_and_clone3_get_enosys_and_arch_is_checked_first() {
    let spec = hardening::aegis_default(&Hardening::default());
    let prog = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    let ret = |nr: u32| {
        Action::from_ret(run(&prog, &SeccompData::new(Arch::X86_64, nr, [0; 6])).unwrap())
    };
    assert_eq!(ret(435), Action::Errno(ENOSYS), "clone3");
    assert_eq!(
        ret(470),
        Action::Errno(ENOSYS),
        "listns (Linux 6.19) is unknown here"
    );
    assert_eq!(ret(400), Action::Errno(ENOSYS), "hole in the x86_64 table");
    assert_eq!(
        ret(39 | X32_SYSCALL_BIT),
        Action::Errno(ENOSYS),
        "x32 getpid"
    );
    assert_eq!(ret(u32::MAX), Action::Errno(ENOSYS));
    assert_eq!(ret(39), Action::Allow, "getpid");
    assert_eq!(ret(165), Action::Errno(1), "mount is a policy denial");
    assert_eq!(ret(425), Action::Errno(1), "io_uring_setup");
    // The first instructions: load arch, compare, kill.
    assert_eq!(prog[0], SockFilter::load(4));
    assert_eq!(prog[1].k, 0xc000_003e);
}

#[test]
fn hardening_denies_sockets_namespaces_and_tty_injection_by_argument() {
    let spec = hardening::aegis_default(&Hardening::default());
    let a = Arch::X86_64;
    let d = |nr: u32, args: [u64; 6]| decide(&spec, a, &SeccompData::new(a, nr, args));
    let socket = a.nr("socket").unwrap();
    assert_eq!(d(socket, [1, 1, 0, 0, 0, 0]), Action::Allow, "AF_UNIX");
    assert_eq!(
        d(socket, [2, 1, 0, 0, 0, 0]),
        Action::Errno(1),
        "AF_INET without network"
    );
    assert_eq!(
        d(socket, [10, 2, 0, 0, 0, 0]),
        Action::Errno(1),
        "AF_INET6 without network"
    );
    assert_eq!(
        d(socket, [0x1_0000_0002, 1, 0, 0, 0, 0]),
        Action::Errno(1),
        "AF_INET with garbage upper half"
    );
    assert_eq!(
        d(socket, [16, 3, 0, 0, 0, 0]),
        Action::Allow,
        "NETLINK_ROUTE"
    );
    assert_eq!(
        d(socket, [16, 3, 9, 0, 0, 0]),
        Action::Errno(1),
        "NETLINK_AUDIT"
    );
    assert_eq!(
        d(socket, [17, 3, 0, 0, 0, 0]),
        Action::Errno(1),
        "AF_PACKET"
    );
    let net = hardening::aegis_default(&Hardening {
        inet_network: true,
        ..Hardening::default()
    });
    assert_eq!(
        decide(&net, a, &SeccompData::new(a, socket, [2, 1, 0, 0, 0, 0])),
        Action::Allow
    );
    assert_eq!(
        decide(&net, a, &SeccompData::new(a, socket, [40, 1, 0, 0, 0, 0])),
        Action::Errno(1),
        "AF_VSOCK"
    );
    let unshare = a.nr("unshare").unwrap();
    assert_eq!(
        d(unshare, [0x200, 0, 0, 0, 0, 0]),
        Action::Errno(1),
        "Docker's base denies unshare"
    );
    // A base that allows unshare keeps only the namespace-free calls.
    let mut open = hardening::base_spec();
    open.allow("unshare");
    Hardening::default().apply(&mut open);
    let u = |flags: u64| {
        decide(
            &open,
            a,
            &SeccompData::new(a, unshare, [flags, 0, 0, 0, 0, 0]),
        )
    };
    assert_eq!(u(0x1000_0000), Action::Errno(1), "CLONE_NEWUSER");
    assert_eq!(u(0x80), Action::Errno(1), "CLONE_NEWTIME");
    assert_eq!(u(0x200), Action::Allow, "CLONE_FILES");
    differential(&open);
    let clone = a.nr("clone").unwrap();
    assert_eq!(
        d(clone, [0x3d0f00, 0, 0, 0, 0, 0]),
        Action::Allow,
        "pthread_create flags"
    );
    assert_eq!(
        d(clone, [0x4000_0011, 0, 0, 0, 0, 0]),
        Action::Errno(1),
        "CLONE_NEWNET"
    );
    let ioctl = a.nr("ioctl").unwrap();
    assert_eq!(
        d(ioctl, [0, 0x5412, 0, 0, 0, 0]),
        Action::Errno(1),
        "TIOCSTI"
    );
    assert_eq!(
        d(ioctl, [0, 0xdead_0000_5412, 0, 0, 0, 0]),
        Action::Errno(1),
        "TIOCSTI, garbage upper half"
    );
    assert_eq!(
        d(ioctl, [0, 0x541c, 0, 0, 0, 0]),
        Action::Errno(1),
        "TIOCLINUX"
    );
    assert_eq!(d(ioctl, [0, 0x5401, 0, 0, 0, 0]), Action::Allow, "TCGETS");
    let pers = a.nr("personality").unwrap();
    assert_eq!(
        d(pers, [0xffff_ffff, 0, 0, 0, 0, 0]),
        Action::Allow,
        "query"
    );
    assert_eq!(
        d(pers, [0x0040000, 0, 0, 0, 0, 0]),
        Action::Errno(1),
        "ADDR_NO_RANDOMIZE"
    );
    for n in [
        "bpf",
        "perf_event_open",
        "keyctl",
        "userfaultfd",
        "ptrace",
        "process_vm_readv",
        "io_uring_setup",
        "setns",
        "mount",
        "kexec_load",
    ] {
        assert_eq!(d(a.nr(n).unwrap(), [0; 6]), Action::Errno(1), "{n}");
    }
}

#[test]
fn same_input_same_bytes_and_raw_roundtrip() {
    let spec = docker_spec();
    let w = SyscallWeights::agent_mix();
    for arch in Arch::ALL {
        let a = compile(&spec, arch, &w).unwrap();
        let b = compile(&spec.clone(), arch, &w).unwrap();
        assert_eq!(to_bytes(&a), to_bytes(&b));
        assert_eq!(from_bytes(&to_bytes(&a)).unwrap(), a);
    }
    assert!(from_bytes(&[0u8; 7]).is_err());
    assert!(from_bytes(&[]).is_err());
    assert!(from_bytes(&vec![0u8; 8 * 4097]).is_err());
}

#[test]
fn long_jumps_are_correct_in_a_program_over_256_instructions() {
    // Many argument-checked syscalls push shared returns out of jump range.
    let spec = crate::seccomp_support::spec_needing_trampolines();
    let prog = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    assert!(prog.len() > 1000, "{} instructions", prog.len());
    assert!(
        prog.iter().any(|i| i.code == 0x05),
        "needs at least one BPF_JA trampoline"
    );
    differential(&spec);
}

#[test]
fn over_4096_instructions_is_a_typed_error() {
    let mut spec = SeccompSpec::new(Action::Errno(1));
    for (nr, name) in Arch::X86_64.table() {
        if aegis_targets::seccomp::syscalls::POINTER_ARGS
            .iter()
            .any(|(n, _)| n == name)
        {
            continue;
        }
        for v in 0..4u64 {
            let value = u64::from(*nr) << 33 | v;
            spec.push(
                name,
                Rule::when(vec![ArgCond::new(3, CmpOp::Eq, value)], Action::Allow),
            );
        }
    }
    match compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()) {
        Err(CodegenError::TooLong { arch, len }) => {
            assert_eq!(arch, Arch::X86_64);
            assert!(len > 4096);
        }
        other => panic!("expected TooLong, got {:?}", other.map(|p| p.len())),
    }
}

#[test]
fn spec_validation_rejects_pointer_conditions_and_typos() {
    let mut spec = SeccompSpec::new(Action::Errno(1));
    spec.push(
        "openat",
        Rule::when(vec![ArgCond::new(1, CmpOp::Eq, 0x1000)], Action::Allow),
    );
    assert!(matches!(
        compile(&spec, Arch::X86_64, &SyscallWeights::default()),
        Err(CodegenError::Spec(_))
    ));
    let mut spec = SeccompSpec::new(Action::Errno(1));
    spec.allow("getpidd");
    assert!(compile(&spec, Arch::X86_64, &SyscallWeights::default()).is_err());
    let mut spec = SeccompSpec::new(Action::Errno(1));
    spec.push(
        "dup3",
        Rule::when(
            vec![ArgCond::new(2, CmpOp::MaskedEq(0xf), 0x10)],
            Action::Allow,
        ),
    );
    assert!(compile(&spec, Arch::X86_64, &SyscallWeights::default()).is_err());
    let mut spec = SeccompSpec::new(Action::Errno(0));
    spec.allow("read");
    assert!(compile(&spec, Arch::X86_64, &SyscallWeights::default()).is_err());
}

#[test]
fn cache_check_fails_for_an_allow_that_loads_arguments() {
    // A hand-written filter that loads args[0] before allowing getpid is not cacheable.
    let mut spec = SeccompSpec::new(Action::Errno(1));
    spec.allow("getpid");
    let bad = vec![
        SockFilter::load(4),
        SockFilter::jump(0x15, 0xc000_003e, 1, 0),
        SockFilter::ret(0x8000_0000),
        SockFilter::load(16),
        SockFilter::load(0),
        SockFilter::jump(0x15, 39, 0, 1),
        SockFilter::ret(0x7fff_0000),
        SockFilter::ret(0x0005_0001),
    ];
    assert!(!is_const_allow(&bad, 0xc000_003e, 39));
    let err = check_cacheable(&spec, Arch::X86_64, &bad).unwrap_err();
    assert!(err.to_string().contains("getpid"), "{err}");
    // The generated program caches it.
    let good = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    assert!(is_const_allow(&good, 0xc000_003e, 39));
    assert!(
        !is_const_allow(&good, 0xc000_003e, 40),
        "denied syscalls are not const-allow"
    );
}

#[test]
fn hot_syscalls_take_few_instructions() {
    let spec = docker_spec();
    let prog = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    for name in ["read", "newfstatat", "openat", "close"] {
        let nr = Arch::X86_64.nr(name).unwrap();
        let o = emulator::run_counted(&prog, &SeccompData::new(Arch::X86_64, nr, [0; 6])).unwrap();
        assert!(o.executed <= 7, "{name}: {} instructions", o.executed);
    }
}

// ---- property tests over random specs ----

fn arb_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => Just(Action::Allow),
        1 => Just(Action::Log),
        3 => (1u16..200).prop_map(Action::Errno),
        1 => Just(Action::UserNotif),
        1 => (0u16..5).prop_map(Action::Trace),
        1 => Just(Action::KillProcess),
        1 => Just(Action::KillThread),
        1 => (0u16..3).prop_map(Action::Trap),
    ]
}

fn arb_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0xffff_ffff),
        Just(0x1_0000_0000),
        Just(u64::MAX),
        (0u32..64).prop_map(|b| 1u64 << b),
        any::<u64>(),
        any::<u32>().prop_map(u64::from),
    ]
}

fn arb_cond() -> impl Strategy<Value = ArgCond> {
    let op = prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
        arb_value().prop_map(CmpOp::MaskedEq),
    ];
    (0u8..6, op, arb_value()).prop_map(|(index, op, value)| {
        let value = if let CmpOp::MaskedEq(m) = op {
            value & m
        } else {
            value
        };
        ArgCond { index, op, value }
    })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    (
        proptest::collection::vec(arb_cond(), 0..3),
        arb_action(),
        prop_oneof![6 => Just(None), 1 => Just(Some(Arch::X86_64)), 1 => Just(Some(Arch::Aarch64))],
    )
        .prop_map(|(conds, action, only_arch)| Rule {
            conds,
            action,
            only_arch,
        })
}

fn arb_spec() -> impl Strategy<Value = SeccompSpec> {
    let names: Vec<&'static str> = Arch::X86_64
        .table()
        .iter()
        .chain(Arch::Aarch64.table())
        .map(|(_, n)| *n)
        .collect();
    let entry = (
        proptest::sample::select(names),
        proptest::collection::vec(arb_rule(), 0..3),
    );
    (arb_action(), proptest::collection::vec(entry, 0..40)).prop_map(|(default_action, entries)| {
        let mut spec = SeccompSpec::new(default_action);
        for (name, mut rules) in entries {
            for r in &mut rules {
                r.conds
                    .retain(|c| !aegis_targets::seccomp::syscalls::is_pointer_arg(name, c.index));
            }
            spec.set(name, rules);
        }
        spec
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_specs_compile_to_programs_that_agree_with_decide(spec in arb_spec(), extra in proptest::collection::vec((any::<u16>(), any::<[u64; 6]>()), 32)) {
        let w = SyscallWeights::agent_mix();
        for arch in Arch::ALL {
            let prog = compile(&spec, arch, &w).unwrap();
            // Every syscall the spec mentions, with its interesting arguments.
            for name in spec.syscalls.keys() {
                if let Some(nr) = arch.nr(name) {
                    for args in arg_vectors(&spec, arch, name) {
                        let d = SeccompData::new(arch, nr, args);
                        prop_assert_eq!(run(&prog, &d).unwrap(), decide(&spec, arch, &d).to_ret(), "{} {} {:x?}", arch, name, args);
                    }
                }
            }
            // Random numbers and arguments.
            for (nr, args) in &extra {
                let nr = u32::from(*nr) % (arch.highest_nr() + 80);
                let d = SeccompData::new(arch, nr, *args);
                prop_assert_eq!(run(&prog, &d).unwrap(), decide(&spec, arch, &d).to_ret());
            }
            prop_assert!(check_cacheable(&spec, arch, &prog).is_ok());
            prop_assert_eq!(to_bytes(&prog), to_bytes(&compile(&spec, arch, &w).unwrap()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never make the decoder, emulator, disassembler, cache check or cost
    /// measure panic or loop: a hostile `seccomp.<arch>.bpf` only ever yields errors.
    #[test]
    fn arbitrary_programs_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), nr in any::<u32>(), args in any::<[u64; 6]>()) {
        if let Ok(prog) = from_bytes(&bytes) {
            let d = SeccompData::new(Arch::X86_64, nr, args);
            let _ = run(&prog, &d);
            let _ = emulator::run_traced(&prog, &d);
            let text = disassemble(&prog, Some(Arch::X86_64));
            prop_assert_eq!(text.lines().count(), prog.len());
            let _ = is_const_allow(&prog, Arch::X86_64.audit_arch(), nr);
            let _ = cost::longest_path(&prog);
        }
    }
}

#[test]
fn mediated_connections_go_to_the_supervisor_and_nothing_else_does() {
    for inet_network in [false, true] {
        let spec = hardening::aegis_default(&Hardening {
            inet_network,
            connect: ConnectGate::Mediate,
            ..Hardening::default()
        });
        differential(&spec);
        for a in Arch::ALL {
            let d = |name: &str, args: [u64; 6]| {
                decide(&spec, a, &SeccompData::new(a, a.nr(name).unwrap(), args))
            };
            let notif = Action::UserNotif;
            let (unix, inet, stream, dgram, seqpacket, raw) = (1, 2, 1, 2, 5, 3);
            let (cloexec, nonblock) = (0o2_000_000, 0o4000);
            assert_eq!(d("connect", [3, 0x7fff_0000, 110, 0, 0, 0]), notif);
            assert_eq!(d("sendto", [3, 0x7fff_0000, 10, 0, 0, 0]), Action::Allow, "send(): no address");
            assert_eq!(d("sendto", [3, 0x7fff_0000, 10, 0, 0x7fff_1000, 16]), notif);
            assert_eq!(d("sendto", [3, 0, 0, 0, 0x1_0000_0000, 16]), notif, "a high-half address");
            assert_eq!(d("socket", [unix, stream | cloexec, 0, 0, 0, 0]), Action::Allow);
            assert_eq!(d("socket", [unix, seqpacket | nonblock, 0, 0, 0, 0]), Action::Allow);
            assert_eq!(d("socket", [unix, dgram | cloexec, 0, 0, 0, 0]), notif);
            assert_eq!(d("socket", [unix, raw, 0, 0, 0, 0]), notif, "AF_UNIX turns SOCK_RAW into datagram");
            assert_eq!(d("socket", [unix | 0xffff_0000_0000, dgram, 0, 0, 0, 0]), notif, "int args are truncated");
            assert_eq!(d("socket", [unix, 0xffff_ffff_0000_0000 | stream, 0, 0, 0, 0]), Action::Allow);
            assert_eq!(d("socketpair", [unix, stream, 0, 0x7fff_0000, 0, 0]), Action::Allow);
            assert_eq!(d("socketpair", [unix, dgram, 0, 0x7fff_0000, 0, 0]), notif);
            let want = if inet_network { Action::Allow } else { Action::Errno(1) };
            assert_eq!(d("socket", [inet, dgram, 0, 0, 0, 0]), want, "other families as before");
            assert_eq!(d("socket", [17, raw, 0, 0, 0, 0]), Action::Errno(1), "AF_PACKET stays denied");
            for other in ["sendmsg", "recvfrom", "bind", "accept4", "read"] {
                assert_eq!(d(other, [3, 0x7fff_0000, 16, 0, 0x7fff_1000, 16]), Action::Allow, "{other}");
            }
        }
    }
}

#[test]
fn mediation_goes_last_and_survives_explicit_grants_and_foreign_bases() {
    // An imported base (Docker's, argument rules on socket) and an explicit allow of
    // connect/socket after hardening: mediation applied last still catches every call.
    for mut spec in [docker_spec(), hardening::base_spec()] {
        spec.allow("connect");
        spec.allow("socket");
        hardening::mediate_connections(&mut spec);
        differential(&spec);
        let a = Arch::X86_64;
        let d = |name: &str, args: [u64; 6]| decide(&spec, a, &SeccompData::new(a, a.nr(name).unwrap(), args));
        assert_eq!(d("connect", [3, 1, 2, 0, 0, 0]), Action::UserNotif);
        assert_eq!(d("socket", [1, 2, 0, 0, 0, 0]), Action::UserNotif);
        assert_eq!(d("socket", [1, 1, 0, 0, 0, 0]), Action::Allow);
    }
    // A denied call stays denied: mediation never grants.
    let mut spec = hardening::base_spec();
    spec.set("connect", vec![Rule::always(Action::Errno(13))]);
    spec.set("socketpair", vec![Rule::always(Action::Errno(13))]);
    hardening::mediate_connections(&mut spec);
    let a = Arch::X86_64;
    let d = |name: &str, args: [u64; 6]| decide(&spec, a, &SeccompData::new(a, a.nr(name).unwrap(), args));
    assert_eq!(d("connect", [3, 1, 2, 0, 0, 0]), Action::Errno(13));
    assert_eq!(d("socketpair", [1, 1, 0, 0, 0, 0]), Action::Errno(13));
}

/// The two filters a notifying program is installed as: for every syscall number and the
/// argument vectors of the differential, the kernel's combination of their verdicts is the
/// original program's verdict, the policy filter never notifies and the notify filter never
/// refuses (so LOG on the one and a listener on the other change nothing else).
#[test]
fn a_notifying_program_split_in_two_filters_is_the_same_program() {
    use aegis_targets::seccomp::split::{combine, split};
    let specs = [
        hardening::aegis_default(&Hardening { connect: ConnectGate::Mediate, exec: ExecGate::Notify, ..Hardening::default() }),
        hardening::aegis_default(&Hardening { connect: ConnectGate::Mediate, inet_network: true, ..Hardening::default() }),
    ];
    let weights = SyscallWeights::agent_mix();
    for spec in &specs {
        for arch in Arch::ALL {
            let prog = compile(spec, arch, &weights).unwrap();
            let (policy, notify) = split(&prog).expect("the program notifies");
            assert!(split(&policy).is_none(), "the policy filter never notifies");
            for nr in (0..=arch.highest_nr() + 8).chain([u32::MAX, X32_SYSCALL_BIT | 42]) {
                let args = match arch.syscall_name(nr) {
                    Some(name) => arg_vectors(spec, arch, name),
                    None => vec![[0; 6]],
                };
                for a in args {
                    for d in [SeccompData::new(arch, nr, a), SeccompData { arch: AUDIT_ARCH_I386, ..SeccompData::new(arch, nr, a) }] {
                        let whole = run(&prog, &d).unwrap();
                        let (p, n) = (run(&policy, &d).unwrap(), run(&notify, &d).unwrap());
                        assert_eq!(combine(p, n), whole, "{arch} nr {nr} {a:x?}");
                        let n = Action::from_ret(n);
                        assert!(n == Action::Allow || n == Action::UserNotif, "notify filter returns {n}");
                    }
                }
            }
            // The always-allowed syscalls stay decided from arch and number in both.
            assert_eq!(check_cacheable(spec, arch, &prog).unwrap().always_allowed.len(), spec.always_allowed(arch).len());
        }
    }
    assert!(split(&compile(&hardening::aegis_default(&Hardening::default()), Arch::X86_64, &weights).unwrap()).is_none());
}

#[test]
fn routed_denials_reach_the_supervisor_and_everything_else_is_the_same_program() {
    use aegis_targets::seccomp::split::{Traced, combine, is_routed_denial, notify_also, split_routed};
    let mut errno_spec = hardening::aegis_default(&Hardening { connect: ConnectGate::Mediate, inet_network: true, ..Hardening::default() });
    // A policy's own errno choices and kill rules: EACCES routed, ENOSYS not, kill not.
    errno_spec.set("personality", vec![Rule::always(Action::Errno(13))]);
    errno_spec.set("acct", vec![Rule::always(Action::Errno(ENOSYS))]);
    errno_spec.set("syslog", vec![Rule::always(Action::KillProcess)]);
    let specs = [
        hardening::aegis_default(&Hardening { connect: ConnectGate::Mediate, exec: ExecGate::Notify, ..Hardening::default() }),
        errno_spec,
        hardening::aegis_default(&Hardening::default()),
    ];
    let weights = SyscallWeights::agent_mix();
    for spec in &specs {
        for arch in Arch::ALL {
            let prog = compile(spec, arch, &weights).unwrap();
            let (policy, notify) = split_routed(&prog);
            // Traced: openat and mkdirat of this architecture go to the supervisor too, and
            // newfstatat unless it has AT_EMPTY_PATH (0x1000) in args[3].
            let traced: Vec<u32> = ["openat", "mkdirat"].iter().filter_map(|n| arch.nr(n)).collect();
            let fstatat = arch.nr("newfstatat").unwrap();
            let mut entries: Vec<Traced> = traced.iter().map(|nr| Traced { nr: *nr, unless: None }).collect();
            entries.push(Traced { nr: fstatat, unless: Some((3, 0x1000)) });
            let notify_traced = notify_also(&notify, arch, &entries).unwrap();
            for nr in (0..=arch.highest_nr() + 8).chain([u32::MAX, X32_SYSCALL_BIT | 42]) {
                let args = match arch.syscall_name(nr) {
                    Some(name) => arg_vectors(spec, arch, name),
                    None => vec![[0; 6]],
                };
                for a in args {
                    for d in [SeccompData::new(arch, nr, a), SeccompData { arch: AUDIT_ARCH_I386, ..SeccompData::new(arch, nr, a) }] {
                        let whole = run(&prog, &d).unwrap();
                        let (p, n) = (run(&policy, &d).unwrap(), run(&notify, &d).unwrap());
                        let expected = if is_routed_denial(whole) { Action::UserNotif.to_ret() } else { whole };
                        assert_eq!(combine(p, n), expected, "{arch} nr {nr} {a:x?}");
                        let na = Action::from_ret(n);
                        assert!(na == Action::Allow || na == Action::UserNotif, "notify filter returns {na}");
                        assert!(!is_routed_denial(p), "the policy filter never returns a routed denial");
                        // The traced prefix adds notifications for exactly the traced numbers
                        // of this architecture and changes nothing else.
                        let t = run(&notify_traced, &d).unwrap();
                        if d.arch == arch.audit_arch() && traced.contains(&nr) {
                            assert_eq!(Action::from_ret(t), Action::UserNotif);
                        } else if d.arch == arch.audit_arch() && nr == fstatat {
                            let exempt = a[3] as u32 & 0x1000 != 0;
                            assert_eq!(Action::from_ret(t), if exempt { Action::from_ret(n) } else { Action::UserNotif }, "{a:x?}");
                        } else {
                            assert_eq!(t, n, "{arch} nr {nr}");
                        }
                    }
                }
            }
            // ENOSYS stays with the kernel: unknown numbers and clone3 are not denials.
            let unknown = SeccompData::new(arch, arch.highest_nr() + 5, [0; 6]);
            assert_eq!(Action::from_ret(run(&policy, &unknown).unwrap()), Action::Errno(ENOSYS));
            // Both filters still decide every always-allowed syscall from arch and number.
            for filter in [&policy, &notify, &notify_traced] {
                for nr in spec.always_allowed(arch) {
                    if (traced.contains(&nr) || nr == fstatat) && std::ptr::eq(filter, &notify_traced) {
                        continue;
                    }
                    assert!(is_const_allow(filter, arch.audit_arch(), nr), "{arch} nr {nr} not cacheable");
                }
            }
        }
    }
}
