//! Benchmark: AEGIS's seccomp codegen against libseccomp for Docker's default allowed set.
//!
//! Run: `cargo run --release -p aegis-targets --bin seccomp_bench` (x86_64; libseccomp via
//! `/usr/bin/python3` + python3-seccomp). Prints, for each filter, the weighted mean of BPF
//! instructions executed per syscall under the recorded agent mix
//! (`bench-data/syscall-mix.txt`), the most executed for any syscall, the longest path, the
//! program length and how many always-allowed syscalls the kernel's action cache takes;
//! then nanoseconds per syscall measured in a forked child with each filter installed.

use std::process::Command;
use std::time::Instant;

use aegis_targets::seccomp::cache::is_const_allow;
use aegis_targets::seccomp::cost::{self, CostProfile};
use aegis_targets::seccomp::hardening::{Hardening, aegis_default};
use aegis_targets::seccomp::*;

const DOCKER: &str = include_str!("../../bench-data/docker-default-seccomp.json");
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/bench-data/libseccomp_filter.py"
);

type Error = Box<dyn std::error::Error>;

fn libseccomp(spec: &SeccompSpec, optimize: Option<u8>) -> Result<Vec<SockFilter>, Error> {
    let dir = std::env::temp_dir().join(format!("aegis-seccomp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = dir.join("rules.json");
    let out = dir.join(format!("libseccomp-{}.bpf", optimize.unwrap_or(0)));
    std::fs::write(
        &rules,
        cost::libseccomp_rules(spec, Arch::X86_64).to_string(),
    )?;
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(SCRIPT).arg(&rules).arg(&out);
    if let Some(o) = optimize {
        cmd.arg(o.to_string());
    }
    let st = cmd.output()?;
    if !st.status.success() {
        return Err(format!(
            "libseccomp script failed: {}",
            String::from_utf8_lossy(&st.stderr)
        )
        .into());
    }
    let prog = from_bytes(&std::fs::read(&out)?)?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(prog)
}

fn cached(spec: &SeccompSpec, prog: &[SockFilter]) -> (usize, usize) {
    let allowed = spec.always_allowed(Arch::X86_64);
    let ok = allowed
        .iter()
        .filter(|nr| is_const_allow(prog, Arch::X86_64.audit_arch(), **nr))
        .count();
    (ok, allowed.len())
}

/// Nanoseconds per call of `f`, measured in a forked child with `prog` installed (None: no
/// filter). Minimum over 5 rounds of `n` calls.
fn time_in_child(
    prog: Option<&[SockFilter]>,
    calls: &[(i64, [u64; 6])],
    n: u32,
) -> Result<Vec<f64>, Error> {
    let mut fds = [0i32; 2];
    // SAFETY: creating a pipe into a local array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err("pipe".into());
    }
    // SAFETY: the bench is single-threaded; the child writes to the pipe and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        if let Some(p) = prog
            && apply(p, ApplyOptions::default()).is_err()
        {
            // SAFETY: leaving the child.
            unsafe { libc::_exit(2) };
        }
        let mut line = String::new();
        for (nr, a) in calls {
            let mut rounds = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                for _ in 0..n {
                    // SAFETY: raw syscalls with integer arguments in the disposable child.
                    unsafe { libc::syscall(*nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
                }
                rounds.push(t.elapsed().as_nanos() as f64 / f64::from(n));
            }
            // The minimum of the rounds: scheduling noise only ever adds time.
            rounds.sort_by(f64::total_cmp);
            line.push_str(&format!("{} ", rounds.first().copied().unwrap_or(f64::NAN)));
        }
        // SAFETY: writing our buffer to the pipe, then leaving the child.
        unsafe {
            libc::write(fds[1], line.as_ptr().cast(), line.len());
            libc::_exit(0);
        }
    }
    // SAFETY: parent closes its write end and reads the child's report.
    unsafe { libc::close(fds[1]) };
    let mut buf = vec![0u8; 4096];
    // SAFETY: reading into our buffer.
    let len = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
    let mut status = 0;
    // SAFETY: reaping our child; closing our read end.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
    }
    let text = String::from_utf8_lossy(buf.get(..len.max(0) as usize).unwrap_or(&[])).to_string();
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() != calls.len() {
        return Err(format!("child failed (status {status})").into());
    }
    Ok(v)
}

fn main() -> Result<(), Error> {
    if Arch::native() != Some(Arch::X86_64) {
        return Err("this benchmark runs on x86_64".into());
    }
    let weights = SyscallWeights::agent_mix();
    let total: u64 = weights.counts.values().sum();
    let spec = oci::import(DOCKER)?.spec;
    let ours = compile(&spec, Arch::X86_64, &weights)?;
    let ours_unweighted = compile(&spec, Arch::X86_64, &SyscallWeights::default())?;
    let lib_default = libseccomp(&spec, None)?;
    let lib_tree = libseccomp(&spec, Some(2))?;
    let hardened_spec = aegis_default(&Hardening::default());
    let hardened = compile(&hardened_spec, Arch::X86_64, &weights)?;

    println!(
        "Docker default allowed set on x86_64 ({} always-allowed syscalls); agent mix: {} calls of {} syscalls",
        spec.always_allowed(Arch::X86_64).len(),
        total,
        weights.counts.len()
    );
    println!();
    println!(
        "{:<40} {:>10} {:>9} {:>9} {:>7} {:>9}",
        "filter", "mean insn", "max run", "max path", "length", "cached"
    );
    let rows: [(&str, &SeccompSpec, &[SockFilter]); 5] = [
        ("AEGIS (weighted tree)", &spec, &ours),
        ("AEGIS (unweighted tree)", &spec, &ours_unweighted),
        ("libseccomp 2.5 default", &spec, &lib_default),
        ("libseccomp 2.5 CTL_OPTIMIZE=2", &spec, &lib_tree),
        ("AEGIS default base + hardening", &hardened_spec, &hardened),
    ];
    for (name, s, prog) in rows {
        let CostProfile {
            weighted_mean,
            max_executed,
            longest_path,
            len,
        } = cost::measure(prog, Arch::X86_64, &weights)?;
        let (c, all) = cached(s, prog);
        println!(
            "{name:<40} {weighted_mean:>10.2} {max_executed:>9} {longest_path:>9} {len:>7} {c:>5}/{all}"
        );
    }
    let uncached: Vec<&str> = spec
        .always_allowed(Arch::X86_64)
        .into_iter()
        .filter(|nr| !is_const_allow(&lib_tree, Arch::X86_64.audit_arch(), *nr))
        .filter_map(|nr| Arch::X86_64.syscall_name(nr))
        .collect();
    println!(
        "always allowed but not cached with libseccomp CTL_OPTIMIZE=2: {}",
        uncached.join(", ")
    );

    println!();
    let n = 200_000;
    let getppid = (libc::SYS_getppid, [0u64; 6]);
    let denied = (libc::SYS_keyctl, [0u64; 6]); // EPERM from every filter here
    let personality = (libc::SYS_personality, [0xffff_ffffu64, 0, 0, 0, 0, 0]); // allowed after an argument check
    let calls = [getppid, denied, personality];
    println!("ns per syscall in a child (best of 4 interleaved passes x 5 rounds x {n} calls):");
    println!(
        "{:<40} {:>10} {:>12} {:>16}",
        "filter", "getppid", "keyctl (EPERM)", "personality(-1)"
    );
    let filters: [(&str, Option<&[SockFilter]>); 4] = [
        ("no filter", None),
        ("AEGIS", Some(&ours)),
        ("libseccomp default", Some(&lib_default)),
        ("libseccomp CTL_OPTIMIZE=2", Some(&lib_tree)),
    ];
    // Interleave the filters over several passes and keep each one's best: noise on a
    // shared VM comes and goes, and only ever adds time.
    let mut best = vec![vec![f64::INFINITY; calls.len()]; filters.len()];
    for _ in 0..4 {
        for ((_, prog), row) in filters.iter().zip(best.iter_mut()) {
            let t = time_in_child(*prog, &calls, n)?;
            for (b, v) in row.iter_mut().zip(t) {
                *b = b.min(v);
            }
        }
    }
    for ((name, _), t) in filters.iter().zip(&best) {
        if let [a, b, c, ..] = t.as_slice() {
            println!("{name:<40} {a:>10.1} {b:>12.1} {c:>16.1}");
        }
    }
    println!(
        "(getppid is in the kernel's action cache under every filter above: the filter does not run.)"
    );
    Ok(())
}
