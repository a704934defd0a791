//! Interop and reference checks: syscall tables against the installed kernel headers and
//! libseccomp, OCI import/export (shape, snapshot, accepted by libseccomp), libseccomp as a
//! second oracle for the Docker-default filter, and disassembly snapshots.

use std::path::Path;
use std::process::Command;

use aegis_targets::seccomp::hardening::{Hardening, aegis_default};
use aegis_targets::seccomp::spec::ENOSYS;
use aegis_targets::seccomp::*;

const DOCKER: &str = include_str!("../../bench-data/docker-default-seccomp.json");
const PY: &str = "/usr/bin/python3";
const LIBSECCOMP_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/bench-data/libseccomp_filter.py"
);

fn have_libseccomp() -> bool {
    let ok = Command::new(PY)
        .args(["-c", "import seccomp"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: {PY} cannot import seccomp (python3-seccomp not installed)");
    }
    ok
}

fn snapshot(name: &str, text: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/seccomp"));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, text));
}

/// `src/seccomp/table.rs` is byte for byte what `gen_syscall_table` makes from this host's
/// headers (linux-libc-dev 6.1 .. 6.18 all give the same file); SKIP without headers or cpp.
#[test]
fn table_rs_is_what_its_generator_makes() {
    let out = Command::new(env!("CARGO_BIN_EXE_gen_syscall_table")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(2) {
        eprintln!("SKIP: {}", err.trim());
        return;
    }
    assert!(out.status.success(), "the generator refused this host's headers: {err}");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/seccomp/table.rs")).unwrap();
    let generated = String::from_utf8(out.stdout).unwrap();
    if committed != generated {
        let line = committed.lines().zip(generated.lines()).position(|(a, b)| a != b);
        panic!(
            "src/seccomp/table.rs differs from the generator's output (first at line {}): run \
             `cargo run -q -p aegis-targets --bin gen_syscall_table > targets/src/seccomp/table.rs`",
            line.map_or(committed.lines().count().min(generated.lines().count()) + 1, |l| l + 1)
        );
    }
}

#[test]
fn tables_are_sorted_unique_and_match_the_kernel_headers() {
    for arch in Arch::ALL {
        let t = arch.table();
        assert!(
            t.windows(2).all(|w| w[0].0 < w[1].0),
            "{arch}: sorted, unique numbers"
        );
        let mut names: Vec<&str> = t.iter().map(|(_, n)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), t.len(), "{arch}: unique names");
        assert_eq!(
            arch.highest_nr(),
            469,
            "{arch}: file_setattr (6.17) is the newest in 6.18"
        );
    }
    // Numbers every Linux developer knows, and the post-6.1 additions.
    let x = Arch::X86_64;
    for (name, nr) in [
        ("read", 0),
        ("getpid", 39),
        ("clone", 56),
        ("execve", 59),
        ("uretprobe", 335),
        ("uprobe", 336),
        ("clone3", 435),
        ("io_uring_setup", 425),
        ("cachestat", 451),
        ("mseal", 462),
        ("file_setattr", 469),
    ] {
        assert_eq!(x.nr(name), Some(nr), "x86_64 {name}");
    }
    let a = Arch::Aarch64;
    for (name, nr) in [
        ("io_setup", 0),
        ("openat", 56),
        ("read", 63),
        ("write", 64),
        ("getpid", 172),
        ("socket", 198),
        ("clone", 220),
        ("execve", 221),
        ("mmap", 222),
        ("clone3", 435),
        ("map_shadow_stack", 453),
        ("file_setattr", 469),
    ] {
        assert_eq!(a.nr(name), Some(nr), "aarch64 {name}");
    }
    assert_eq!(a.nr("open"), None, "aarch64 has no open(2)");
    assert_eq!(a.nr("uretprobe"), None);
    // Every __NR_ in the installed x86_64 header agrees.
    let header = Path::new("/usr/include/x86_64-linux-gnu/asm/unistd_64.h");
    match std::fs::read_to_string(header) {
        Ok(text) => {
            let mut n = 0;
            for line in text.lines() {
                let mut it = line.split_whitespace();
                if let (Some("#define"), Some(sym), Some(num)) = (it.next(), it.next(), it.next())
                    && let (Some(name), Ok(num)) = (sym.strip_prefix("__NR_"), num.parse::<u32>())
                {
                    assert_eq!(x.nr(name), Some(num), "header says {name} = {num}");
                    n += 1;
                }
            }
            assert!(n > 350, "parsed {n} header entries");
        }
        Err(_) => eprintln!("SKIP: {} not installed", header.display()),
    }
}

#[test]
fn tables_agree_with_libseccomp_for_every_name_it_knows() {
    if !have_libseccomp() {
        return;
    }
    for (arch, scmp) in [(Arch::X86_64, "X86_64"), (Arch::Aarch64, "AARCH64")] {
        let names: Vec<&str> = arch.table().iter().map(|(_, n)| *n).collect();
        let script = format!(
            "import seccomp,sys\nfor n in sys.argv[1:]:\n  try: print(n, seccomp.resolve_syscall(seccomp.Arch.{scmp}, n))\n  except Exception: print(n, 'none')"
        );
        let out = Command::new(PY)
            .arg("-c")
            .arg(&script)
            .args(&names)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut known = 0;
        for line in text.lines() {
            let (name, nr) = line.split_once(' ').unwrap();
            if let Ok(nr) = nr.parse::<i64>()
                && nr >= 0
            {
                assert_eq!(
                    i64::from(arch.nr(name).unwrap()),
                    nr,
                    "{arch} {name}: libseccomp disagrees"
                );
                known += 1;
            }
        }
        assert!(
            known > 280,
            "{arch}: libseccomp resolved only {known} names"
        );
    }
}

#[test]
fn docker_import_drops_capability_rules_and_keeps_the_unprivileged_ones() {
    let imported = oci::import(DOCKER).unwrap();
    let spec = &imported.spec;
    assert_eq!(spec.default_action, Action::Errno(1));
    let x = Arch::X86_64;
    let d = |name: &str, args: [u64; 6]| {
        decide(spec, x, &SeccompData::new(x, x.nr(name).unwrap(), args))
    };
    assert_eq!(d("read", [0; 6]), Action::Allow);
    assert_eq!(
        d("mount", [0; 6]),
        Action::Errno(1),
        "CAP_SYS_ADMIN rule dropped"
    );
    assert_eq!(d("bpf", [0; 6]), Action::Errno(1), "CAP_BPF rule dropped");
    assert_eq!(
        d("ptrace", [0; 6]),
        Action::Allow,
        "minKernel 4.8 rule kept"
    );
    assert_eq!(
        d("arch_prctl", [0; 6]),
        Action::Allow,
        "amd64 rule kept on x86_64"
    );
    assert_eq!(d("clone", [0x11, 0, 0, 0, 0, 0]), Action::Allow);
    assert_eq!(
        d("clone", [0x1000_0011, 0, 0, 0, 0, 0]),
        Action::Errno(1),
        "CLONE_NEWUSER"
    );
    assert_eq!(
        d("socket", [40, 0, 0, 0, 0, 0]),
        Action::Errno(1),
        "AF_VSOCK"
    );
    assert_eq!(d("socket", [2, 0, 0, 0, 0, 0]), Action::Allow);
    assert_eq!(d("personality", [8, 0, 0, 0, 0, 0]), Action::Allow);
    assert_eq!(d("personality", [0x40000, 0, 0, 0, 0, 0]), Action::Errno(1));
    assert_eq!(d("clone3", [0; 6]), Action::Errno(ENOSYS));
    assert!(
        spec.rules_for(Arch::Aarch64, "arch_prctl").is_empty()
            || Arch::Aarch64.nr("arch_prctl").is_none()
    );
    let notes = imported.notes.join("\n");
    assert!(notes.contains("CAP_SYS_ADMIN"), "{notes}");
    assert!(notes.contains("s390"), "{notes}");
    assert!(notes.contains("chown32"), "32-bit names reported: {notes}");
}

#[test]
fn oci_export_has_the_runtime_spec_shape_and_round_trips() {
    let spec = aegis_default(&Hardening::default());
    let exported = oci::export(&spec, &Arch::ALL);
    let v = &exported.json;
    // runtime-spec config-linux.md: linux.seccomp fields and their types.
    let obj = v.as_object().unwrap();
    for key in obj.keys() {
        assert!(
            [
                "defaultAction",
                "defaultErrnoRet",
                "architectures",
                "flags",
                "listenerPath",
                "listenerMetadata",
                "syscalls"
            ]
            .contains(&key.as_str()),
            "unexpected key {key}"
        );
    }
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["defaultErrnoRet"], 1);
    assert_eq!(
        v["architectures"],
        serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"])
    );
    for e in v["syscalls"].as_array().unwrap() {
        let e = e.as_object().unwrap();
        assert!(e["names"].as_array().unwrap().iter().all(|n| n.is_string()));
        assert!(e["action"].as_str().unwrap().starts_with("SCMP_ACT_"));
        for k in e.keys() {
            assert!(
                ["names", "action", "errnoRet", "args"].contains(&k.as_str()),
                "unexpected {k}"
            );
        }
        for a in e
            .get("args")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            assert!(a["index"].as_u64().unwrap() < 6);
            assert!(a["value"].is_u64());
            assert!(a["op"].as_str().unwrap().starts_with("SCMP_CMP_"));
        }
    }
    // ioctl's TIOCSTI exception cannot be said in OCI: reported, not hidden.
    assert!(
        exported.losses.iter().any(|l| l.what.starts_with("ioctl")),
        "{:?}",
        exported.losses
    );
    let text = serde_json::to_string_pretty(v).unwrap();
    snapshot(
        "oci_export_aegis_default",
        &format!(
            "{}\n--- losses ---\n{}",
            text,
            exported
                .losses
                .iter()
                .map(|l| format!("{:?}: {}", l.effect, l.what))
                .collect::<Vec<_>>()
                .join("\n")
        ),
    );
    // Importing the export gives the same decisions except where losses were reported.
    let back = oci::import(&text).unwrap().spec;
    for arch in Arch::ALL {
        for (nr, name) in arch.table() {
            if exported
                .losses
                .iter()
                .any(|l| l.what.starts_with(&format!("{name}:")))
            {
                continue;
            }
            for args in [
                [0u64; 6],
                [1, 1, 0, 0, 0, 0],
                [2, 1, 0, 0, 0, 0],
                [0x1000_0000, 0, 0, 0, 0, 0],
            ] {
                let d = SeccompData::new(arch, *nr, args);
                assert_eq!(
                    decide(&back, arch, &d),
                    decide(&spec, arch, &d),
                    "{arch} {name} {args:x?}"
                );
            }
        }
    }
}

#[test]
fn oci_export_is_accepted_by_libseccomp() {
    if !have_libseccomp() {
        return;
    }
    // What runc does with linux.seccomp: every syscalls entry becomes seccomp_rule_add.
    let exported = oci::export(&aegis_default(&Hardening::default()), &[Arch::X86_64]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    std::fs::write(&path, serde_json::to_string(&exported.json).unwrap()).unwrap();
    let script = r#"
import json, sys, seccomp as s
p = json.load(open(sys.argv[1]))
act = lambda a, e: {"SCMP_ACT_ALLOW": s.ALLOW, "SCMP_ACT_ERRNO": s.ERRNO(e or 1), "SCMP_ACT_NOTIFY": s.NOTIFY, "SCMP_ACT_LOG": s.LOG}[a]
ops = {"SCMP_CMP_EQ": s.EQ, "SCMP_CMP_NE": s.NE, "SCMP_CMP_LT": s.LT, "SCMP_CMP_LE": s.LE, "SCMP_CMP_GT": s.GT, "SCMP_CMP_GE": s.GE, "SCMP_CMP_MASKED_EQ": s.MASKED_EQ}
f = s.SyscallFilter(act(p["defaultAction"], p.get("defaultErrnoRet")))
n = 0
for e in p["syscalls"]:
    args = [s.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0)) for a in e.get("args", [])]
    for name in e["names"]:
        try:
            f.add_rule(act(e["action"], e.get("errnoRet")), name, *args); n += 1
        except Exception as ex:
            if s.resolve_syscall(s.Arch.X86_64, name) >= 0:
                raise
f.export_bpf(open("/dev/null", "wb"))
print(n)
"#;
    let out = Command::new(PY)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "libseccomp rejected the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n > 250, "{n} rules loaded");
}

/// Build libseccomp's filter for `spec` on x86_64.
pub fn libseccomp_program(spec: &SeccompSpec, optimize: Option<u8>) -> Vec<SockFilter> {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    let out = dir.path().join("filter.bpf");
    std::fs::write(
        &rules,
        cost::libseccomp_rules(spec, Arch::X86_64).to_string(),
    )
    .unwrap();
    let mut cmd = Command::new(PY);
    cmd.arg(LIBSECCOMP_SCRIPT).arg(&rules).arg(&out);
    if let Some(o) = optimize {
        cmd.arg(o.to_string());
    }
    let st = cmd.output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    from_bytes(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn libseccomp_agrees_with_decide_on_the_docker_default_set() {
    if !have_libseccomp() || Arch::native() != Some(Arch::X86_64) {
        return;
    }
    let spec = oci::import(DOCKER).unwrap().spec;
    let ours = compile(&spec, Arch::X86_64, &SyscallWeights::agent_mix()).unwrap();
    for opt in [None, Some(2)] {
        let theirs = libseccomp_program(&spec, opt);
        let mut compared = 0;
        for (nr, name) in Arch::X86_64.table() {
            for args in [
                [0u64; 6],
                [2, 0, 0, 0, 0, 0],
                [40, 0, 0, 0, 0, 0],
                [0x1000_0011, 0, 0, 0, 0, 0],
                [8, 0, 0, 0, 0, 0],
                [u64::MAX; 6],
            ] {
                let d = SeccompData::new(Arch::X86_64, *nr, args);
                let lib = Action::from_ret(run(&theirs, &d).unwrap());
                let want = decide(&spec, Arch::X86_64, &d);
                let mine = Action::from_ret(run(&ours, &d).unwrap());
                assert_eq!(mine, want, "{name} {args:x?}");
                // libseccomp gives the default action to numbers it does not know (newer
                // than 2.5.4): those are the only allowed disagreements.
                if lib != want {
                    let cmd = format!(
                        "import seccomp; print(seccomp.resolve_syscall(seccomp.Arch.X86_64, '{name}'))"
                    );
                    let o = Command::new(PY).args(["-c", &cmd]).output().unwrap();
                    let known = String::from_utf8_lossy(&o.stdout)
                        .trim()
                        .parse::<i64>()
                        .map(|n| n >= 0)
                        .unwrap_or(false);
                    assert!(
                        !known,
                        "libseccomp {opt:?} says {lib} for {name} {args:x?}, decide says {want}"
                    );
                } else {
                    compared += 1;
                }
            }
        }
        assert!(compared > 2000, "{compared}");
    }
}

#[test]
fn disassembly_snapshots() {
    let weights = SyscallWeights::agent_mix();
    let mut minimal = SeccompSpec::new(Action::Errno(1));
    for n in [
        "read",
        "write",
        "close",
        "exit_group",
        "rt_sigreturn",
        "getpid",
    ] {
        minimal.allow(n);
    }
    minimal.push(
        "socket",
        Rule::when(
            vec![aegis_targets::seccomp::hardening::int_eq(0, 1)],
            Action::Allow,
        ),
    );
    let docker = oci::import(DOCKER).unwrap().spec;
    let hardened = aegis_default(&Hardening::default());
    for (label, spec) in [
        ("minimal", &minimal),
        ("docker_default", &docker),
        ("aegis_default", &hardened),
    ] {
        for arch in Arch::ALL {
            let prog = compile(spec, arch, &weights).unwrap();
            let report = cache::check_cacheable(spec, arch, &prog).unwrap();
            let text = format!(
                "# {label} on {arch}: {} instructions, {} always-allowed syscalls, all cached by the kernel\n{}",
                prog.len(),
                report.always_allowed.len(),
                disassemble(&prog, Some(arch))
            );
            snapshot(&format!("{label}.{arch}.asm"), &text);
        }
    }
}

#[test]
fn disassembly_names_syscalls_and_decodes_returns() {
    let mut spec = SeccompSpec::new(Action::Errno(1));
    spec.allow("execve");
    spec.push(
        "dup3",
        Rule::when(vec![ArgCond::new(2, CmpOp::Eq, 0x8_0000_0001)], Action::Log),
    );
    let prog = compile(&spec, Arch::X86_64, &SyscallWeights::default()).unwrap();
    let text = disassemble(&prog, Some(Arch::X86_64));
    assert!(text.starts_with("0000: A = arch\n0001: if (A == 0xc000003e) goto 0003 else goto 0002  # AUDIT_ARCH_X86_64\n0002: return KILL_PROCESS\n0003: A = sys_number\n"), "{text}");
    assert!(
        text.contains("# execve") || text.contains("# dup3"),
        "{text}"
    );
    assert!(
        text.contains("A = args[2] >> 32") && text.contains("A = args[2]\n"),
        "{text}"
    );
    assert!(
        text.contains("return ALLOW")
            && text.contains("return ERRNO(1)")
            && text.contains("return LOG")
            && text.contains("return ERRNO(38)"),
        "{text}"
    );
    assert_eq!(text.lines().count(), prog.len());
}

#[test]
fn artifacts_for_every_arch_are_deterministic_and_traceable() {
    let spec = aegis_default(&Hardening::default());
    let a = build(&spec, &SyscallWeights::agent_mix()).unwrap();
    let b = build(&spec.clone(), &SyscallWeights::agent_mix()).unwrap();
    assert_eq!(a.len(), 2);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.bpf, y.bpf);
        assert_eq!(x.asm, y.asm);
        assert_eq!(from_bytes(&x.bpf).unwrap(), x.program);
        assert_eq!(x.asm.lines().count(), x.program.len() + 1);
    }
    assert_eq!(a[0].bpf_name, "seccomp.x86_64.bpf");
    assert_eq!(a[1].asm_name, "seccomp.aarch64.asm");
    // The executed path, as `aegisc explain-syscall` would print it.
    let x = &a[0];
    let d = SeccompData::new(Arch::X86_64, 16, [0, 0x5412, 0, 0, 0, 0]);
    let (o, trace) = emulator::run_traced(&x.program, &d).unwrap();
    assert_eq!(Action::from_ret(o.ret), Action::Errno(1), "ioctl(TIOCSTI)");
    assert_eq!(trace.len(), o.executed);
    assert_eq!(trace[..4], [0, 1, 3, 4]);
    let lines: Vec<&str> = x.asm.lines().skip(1).collect();
    assert!(lines[*trace.last().unwrap()].ends_with("return ERRNO(1)"));
}

#[test]
fn spec_serializes_to_json_and_back() {
    let spec = aegis_default(&Hardening {
        exec: aegis_targets::seccomp::hardening::ExecGate::Notify,
        ..Hardening::default()
    });
    let text = serde_json::to_string(&spec).unwrap();
    let back: SeccompSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(back, spec);
    assert!(
        text.contains(r#""op":"masked_eq","mask":4294967295"#),
        "{}",
        &text[..text.len().min(400)]
    );
}

/// seccompiler (rust-vmm, used by Firecracker) as the third implementation: same allowed set,
/// same verdicts on every known syscall, and how many instructions it executes.
#[test]
fn seccompiler_agrees_and_executes_more_instructions() {
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;
    let spec = oci::import(DOCKER).unwrap().spec;
    let weights = SyscallWeights::agent_mix();
    for (arch, target) in [
        (Arch::X86_64, TargetArch::x86_64),
        (Arch::Aarch64, TargetArch::aarch64),
    ] {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for name in spec.syscalls.keys() {
            let Some(nr) = arch.nr(name) else { continue };
            let rs = spec.rules_for(arch, name);
            assert!(
                rs.iter()
                    .all(|r| r.action == Action::Allow || name == "clone3"),
                "{name}"
            );
            if name == "clone3" || rs.is_empty() {
                continue;
            }
            let mut out = Vec::new();
            if !rs.iter().any(|r| r.conds.is_empty()) {
                for r in rs {
                    let conds = r
                        .conds
                        .iter()
                        .map(|c| {
                            let op = match c.op {
                                CmpOp::Eq => SeccompCmpOp::Eq,
                                CmpOp::Ne => SeccompCmpOp::Ne,
                                CmpOp::Lt => SeccompCmpOp::Lt,
                                CmpOp::Le => SeccompCmpOp::Le,
                                CmpOp::Gt => SeccompCmpOp::Gt,
                                CmpOp::Ge => SeccompCmpOp::Ge,
                                CmpOp::MaskedEq(m) => SeccompCmpOp::MaskedEq(m),
                            };
                            SeccompCondition::new(c.index, SeccompCmpArgLen::Qword, op, c.value)
                                .unwrap()
                        })
                        .collect();
                    out.push(SeccompRule::new(conds).unwrap());
                }
            }
            rules.insert(i64::from(nr), out);
        }
        let filter =
            SeccompFilter::new(rules, SeccompAction::Errno(1), SeccompAction::Allow, target)
                .unwrap();
        let bpf: seccompiler::BpfProgram = filter.try_into().unwrap();
        let theirs: Vec<SockFilter> = bpf
            .iter()
            .map(|i| SockFilter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let ours = compile(&spec, arch, &weights).unwrap();
        for (nr, name) in arch.table() {
            if *name == "clone3" {
                continue;
            }
            for args in [
                [0u64; 6],
                [2, 0, 0, 0, 0, 0],
                [40, 0, 0, 0, 0, 0],
                [0x1000_0011, 0, 0, 0, 0, 0],
                [8, 0, 0, 0, 0, 0],
            ] {
                let d = SeccompData::new(arch, *nr, args);
                assert_eq!(
                    Action::from_ret(run(&theirs, &d).unwrap()),
                    decide(&spec, arch, &d),
                    "seccompiler {arch} {name} {args:x?}"
                );
            }
        }
        let a = cost::measure(&ours, arch, &weights).unwrap();
        let b = cost::measure(&theirs, arch, &weights).unwrap();
        eprintln!(
            "{arch}: AEGIS mean {:.2} insn, length {}; seccompiler 0.5 mean {:.2} insn, max {}, length {}",
            a.weighted_mean, a.len, b.weighted_mean, b.max_executed, b.len
        );
        assert!(
            a.weighted_mean * 2.0 < b.weighted_mean,
            "AEGIS {a:?} vs seccompiler {b:?}"
        );
    }
}

/// What the export says about a mediated spec: the destination checks of `connect` and
/// addressed `sendto` are allowed (reported WIDER: only AEGIS's supervisor knows the unix
/// socket grants), `AF_UNIX` datagram sockets are refused (stricter), and every socket family
/// the spec grants is one exact rule: a program in a container can open the sockets it is
/// granted and no others. Nothing else is wider than the spec.
#[test]
fn oci_export_of_mediated_connections_grants_each_family_exactly() {
    use aegis_targets::seccomp::hardening::ConnectGate;
    use aegis_targets::seccomp::oci::Effect;
    for inet in [true, false] {
        let spec = aegis_default(&Hardening {
            connect: ConnectGate::Mediate,
            inet_network: inet,
            ..Hardening::default()
        });
        let exported = oci::export(&spec, &Arch::ALL);
        let text = serde_json::to_string_pretty(&exported.json).unwrap();
        assert!(!text.contains("SCMP_ACT_NOTIFY"), "{text}");
        let wider: Vec<&str> = exported
            .losses
            .iter()
            .filter(|l| l.effect == Effect::Wider)
            .map(|l| l.what.as_str())
            .collect();
        assert!(
            wider.iter().any(|l| l.starts_with("connect, sendto: AEGIS's supervisor checks")),
            "{wider:?}"
        );
        let back = oci::import(&text).unwrap().spec;
        let a = Arch::X86_64;
        let d = |s: &aegis_targets::seccomp::SeccompSpec, name: &str, args: [u64; 6]| {
            decide(s, a, &SeccompData::new(a, a.nr(name).unwrap(), args))
        };
        // (family, type, granted)
        let sockets: &[(u64, u64, bool)] = &[
            (1, 1, true),                  // AF_UNIX, SOCK_STREAM
            (1, 5 | 0o2_000_000, true),    // AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC
            (1, 2, false),                 // AF_UNIX, SOCK_DGRAM
            (1, 3, false),                 // AF_UNIX, SOCK_RAW (a datagram socket)
            (2, 1, inet),                  // AF_INET, SOCK_STREAM
            (2, 2 | 0o4000, inet),         // AF_INET, SOCK_DGRAM | SOCK_NONBLOCK
            (10, 1, inet),                 // AF_INET6
            (17, 3, false),                // AF_PACKET
            (38, 5, false),                // AF_ALG
            (40, 1, false),                // AF_VSOCK
            (0x1_0000_0002, 1, false),     // AF_INET with high bits (refused: stricter)
        ];
        for &(family, ty, granted) in sockets {
            let args = [family, ty, 0, 0, 0, 0];
            let want = if granted { Action::Allow } else { spec.default_action };
            assert_eq!(d(&back, "socket", args), want, "inet {inet}: socket({family:#x}, {ty:#x})");
            if granted {
                assert_eq!(d(&spec, "socket", args), Action::Allow, "the spec grants it too");
            }
        }
        // NETLINK_ROUTE always; other netlink protocols only with a network grant.
        assert_eq!(d(&back, "socket", [16, 3, 0, 0, 0, 0]), Action::Allow);
        let other = if inet { Action::Allow } else { spec.default_action };
        assert_eq!(d(&back, "socket", [16, 3, 9, 0, 0, 0]), other, "NETLINK_AUDIT");
        // One exact rule per family: the export names each family with SCMP_CMP_EQ.
        let families: Vec<u64> = exported.json["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["names"] == serde_json::json!(["socket"]))
            .map(|e| {
                let arg0 = &e["args"][0];
                assert_eq!((arg0["index"].as_u64(), arg0["op"].as_str()), (Some(0), Some("SCMP_CMP_EQ")), "{e}");
                arg0["value"].as_u64().unwrap()
            })
            .collect();
        let want: &[u64] = if inet { &[1, 1, 16, 2, 10] } else { &[1, 1, 16] };
        assert_eq!(families, want, "AF_UNIX stream and seqpacket, then the other families");
        assert_eq!(d(&back, "connect", [3, 1, 16, 0, 0, 0]), Action::Allow);
        assert_eq!(d(&back, "sendto", [3, 1, 16, 0, 0x7fff_0000, 16]), Action::Allow);
        assert_eq!(d(&back, "sendto", [3, 1, 16, 0, 0, 0]), Action::Allow, "send()");
        assert_eq!(d(&back, "socketpair", [1, 1, 0, 0x7fff_0000, 0, 0]), Action::Allow);
        assert_eq!(d(&back, "socketpair", [1, 2, 0, 0x7fff_0000, 0, 0]), spec.default_action);
        // Nothing but the destination checks and ioctl's TIOCSTI ordering is wider.
        for arch in [a] {
            for (nr, name) in arch.table() {
                if wider.iter().any(|l| l.split(':').next().unwrap().split(", ").any(|n| n == *name)) {
                    continue;
                }
                for args in [[0u64; 6], [1, 1, 0, 0, 0, 0], [1, 2, 0, 0, 0, 0], [17, 3, 0, 0, 0, 0], [16, 3, 9, 0, 0, 0], [0, 0x5412, 0, 0, 0, 0]] {
                    let (orig, exp) = (decide(&spec, arch, &SeccompData::new(arch, *nr, args)), decide(&back, arch, &SeccompData::new(arch, *nr, args)));
                    let runs = |x: Action| matches!(x, Action::Allow | Action::Log | Action::UserNotif);
                    assert!(!runs(exp) || runs(orig), "inet {inet}: {name} {args:x?}: export {exp}, spec {orig}");
                }
            }
        }
    }
}
