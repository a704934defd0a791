//! Generator of `src/seccomp/table.rs`, the syscall name ↔ number tables.
//!
//! Run: `cargo run -q -p aegis-targets --bin gen_syscall_table > targets/src/seccomp/table.rs`
//! on an x86_64 Debian-like host with `linux-libc-dev` (6.1 or newer) and `cpp`. The test
//! `seccomp_interop::table_rs_is_what_its_generator_makes` checks that the committed file is
//! byte for byte what this prints.
//!
//! Input: the Linux UAPI headers under `/usr/include`: x86_64's `asm/unistd_64.h`, and
//! `asm-generic/unistd.h` run through the C preprocessor as `arch/arm64`'s own
//! `asm/unistd.h` configures it (aarch64 has no table of its own), plus [`ADDED`], the
//! syscalls of the releases after the headers', up to [`LINUX`]. Output (stdout): the Rust
//! file, both tables sorted by number. Invariants: the output does not depend on which
//! headers between 6.1 and [`LINUX`] are installed; headers older than 6.1 (missing
//! syscalls) or newer than [`LINUX`] (a syscall not in [`ADDED`]), or disagreeing with
//! [`ADDED`], are refused with the fix, never turned into a different table.
//! Exit status: 0 written, 1 the headers disagree with this generator, 2 no headers or no
//! `cpp` (the check test prints SKIP then).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};

/// The release the tables are complete for.
const LINUX: &str = "6.18";

/// The last syscall of Linux 6.1 (the same number on both architectures): headers without
/// it are too old to be the base.
const BASE_LAST: (&str, u32) = ("set_mempolicy_home_node", 450);

/// Which table an [`ADDED`] entry belongs to.
#[derive(Clone, Copy, PartialEq)]
enum On {
    X86_64,
    Both,
}

/// Syscalls added after Linux 6.1, with the release that added each: (release, where, number,
/// name). Add a new release's syscalls here and bump [`LINUX`].
const ADDED: &[(&str, On, u32, &str)] = &[
    ("6.5", On::Both, 451, "cachestat"),
    ("6.6", On::Both, 452, "fchmodat2"),
    ("6.6", On::Both, 453, "map_shadow_stack"),
    ("6.7", On::Both, 454, "futex_wake"),
    ("6.7", On::Both, 455, "futex_wait"),
    ("6.7", On::Both, 456, "futex_requeue"),
    ("6.8", On::Both, 457, "statmount"),
    ("6.8", On::Both, 458, "listmount"),
    ("6.8", On::Both, 459, "lsm_get_self_attr"),
    ("6.8", On::Both, 460, "lsm_set_self_attr"),
    ("6.8", On::Both, 461, "lsm_list_modules"),
    ("6.10", On::Both, 462, "mseal"),
    ("6.11", On::X86_64, 335, "uretprobe"),
    ("6.13", On::Both, 463, "setxattrat"),
    ("6.13", On::Both, 464, "getxattrat"),
    ("6.13", On::Both, 465, "listxattrat"),
    ("6.13", On::Both, 466, "removexattrat"),
    ("6.15", On::Both, 467, "open_tree_attr"),
    ("6.16", On::X86_64, 336, "uprobe"),
    ("6.17", On::Both, 468, "file_getattr"),
    ("6.17", On::Both, 469, "file_setattr"),
];

/// What `arch/arm64/include/uapi/asm/unistd.h` defines before it includes the generic table.
const ARM64_WANTS: &[&str] = &[
    "__ARCH_WANT_RENAMEAT",
    "__ARCH_WANT_NEW_STAT",
    "__ARCH_WANT_SET_GET_RLIMIT",
    "__ARCH_WANT_TIME32_SYSCALLS",
    "__ARCH_WANT_SYS_CLONE3",
    "__ARCH_WANT_MEMFD_SECRET",
];

/// Why no table was written; the exit status tells a missing tool from a wrong input.
enum Failure {
    /// Headers or `cpp` not installed (exit 2).
    Missing(String),
    /// The input disagrees with this generator (exit 1).
    Wrong(String),
}

type Table = BTreeMap<u32, String>;

fn main() -> ExitCode {
    match run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Wrong(e)) => {
            eprintln!("gen_syscall_table: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Missing(e)) => {
            eprintln!("gen_syscall_table: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<String, Failure> {
    let include = Path::new("/usr/include");
    let x86_header = ["x86_64-linux-gnu/asm/unistd_64.h", "asm/unistd_64.h"]
        .iter()
        .map(|p| include.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| Failure::Missing("no x86_64 asm/unistd_64.h under /usr/include (install linux-libc-dev)".into()))?;
    let x86_text = std::fs::read_to_string(&x86_header)
        .map_err(|e| Failure::Missing(format!("{}: {e}", x86_header.display())))?;
    let generic = include.join("asm-generic/unistd.h");
    if !generic.is_file() {
        return Err(Failure::Missing(format!("{} is missing (install linux-libc-dev)", generic.display())));
    }
    let mut cpp = Command::new("cpp");
    cpp.args(["-dM", "-P", "-D__BITS_PER_LONG=64"]);
    for want in ARM64_WANTS {
        cpp.arg(format!("-D{want}"));
    }
    let out = cpp
        .arg(&generic)
        .output()
        .map_err(|e| Failure::Missing(format!("cannot run cpp (install cpp): {e}")))?;
    if !out.status.success() {
        return Err(Failure::Wrong(format!("cpp {}: {}", generic.display(), String::from_utf8_lossy(&out.stderr).trim())));
    }
    let x86 = complete("x86_64", defines(&x86_text)?, On::X86_64)?;
    let aarch64 = complete("aarch64", defines(&String::from_utf8_lossy(&out.stdout))?, On::Both)?;
    Ok(render(&x86, &aarch64))
}

/// The `__NR_name N` of a header (aliases such as `__NR_fcntl __NR3264_fcntl` resolved), as
/// number → name. `__NR_syscalls` (a count) and `__NR_arch_specific_syscall` (where an
/// architecture's own numbers would start; arm64 has none) are not syscalls.
fn defines(text: &str) -> Result<Table, Failure> {
    let mut raw = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#define"), Some(sym), Some(value), None) = (words.next(), words.next(), words.next(), words.next())
            && sym.starts_with("__NR")
        {
            raw.insert(sym, value);
        }
    }
    let mut table = Table::new();
    for (sym, value) in &raw {
        let Some(name) = sym.strip_prefix("__NR_") else { continue };
        if matches!(name, "syscalls" | "arch_specific_syscall") {
            continue;
        }
        let mut value = *value;
        // An alias chain is short (one step in the generic header); a cycle would be a bug.
        for _ in 0..4 {
            match raw.get(value) {
                Some(next) => value = next,
                None => break,
            }
        }
        let nr: u32 = value
            .parse()
            .map_err(|_| Failure::Wrong(format!("__NR_{name} is `{value}`, not a number")))?;
        if let Some(other) = table.insert(nr, name.to_string()) {
            return Err(Failure::Wrong(format!("syscall number {nr} is both {other} and {name}")));
        }
    }
    Ok(table)
}

/// `headers` plus [`ADDED`], checked: the base release is there, every added syscall the
/// headers know agrees, and the headers know nothing newer than [`LINUX`].
fn complete(arch: &str, mut table: Table, on: On) -> Result<Table, Failure> {
    if table.get(&BASE_LAST.1).map(String::as_str) != Some(BASE_LAST.0) {
        return Err(Failure::Wrong(format!(
            "{arch}: the headers lack {} ({}): they are older than Linux 6.1; install linux-libc-dev 6.1 or newer",
            BASE_LAST.0, BASE_LAST.1
        )));
    }
    let added: Vec<_> = ADDED.iter().filter(|(_, o, _, _)| *o == on || *o == On::Both).collect();
    for (release, _, nr, name) in &added {
        match table.get(nr) {
            Some(known) if known != name => {
                return Err(Failure::Wrong(format!(
                    "{arch}: the headers say {nr} is {known}, ADDED says {name} (Linux {release})"
                )));
            }
            _ => {
                table.insert(*nr, (*name).to_string());
            }
        }
    }
    let newest = added.iter().map(|(_, _, nr, _)| *nr).max().unwrap_or(BASE_LAST.1);
    if let Some((nr, name)) = table.range(newest + 1..).next() {
        return Err(Failure::Wrong(format!(
            "{arch}: the headers know {name} ({nr}), newer than Linux {LINUX}: add it to ADDED with its release and bump LINUX"
        )));
    }
    let mut names = std::collections::BTreeSet::new();
    for name in table.values() {
        if !names.insert(name) {
            return Err(Failure::Wrong(format!("{arch}: {name} has two numbers")));
        }
    }
    Ok(table)
}

fn render(x86: &Table, aarch64: &Table) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "// @generated by `cargo run -q -p aegis-targets --bin gen_syscall_table` (src/bin/gen_syscall_table.rs);\n\
         // do not edit: change the generator and run it again.\n\
         //! The syscall tables of [`super::Arch::table`]: `(number, name)` for each architecture,\n\
         //! sorted by number, complete as of Linux {LINUX}.\n\
         //!\n\
         //! Made from the Linux UAPI headers of linux-libc-dev (x86_64: `asm/unistd_64.h`; aarch64:\n\
         //! `asm-generic/unistd.h` as `arch/arm64` configures it) and the generator's list of the\n\
         //! syscalls added since Linux 6.1 (x86_64's `uretprobe` 335 and `uprobe` 336; 451..=469 on\n\
         //! both). `tests/all/seccomp_interop.rs` checks the file against the generator, the installed\n\
         //! headers and libseccomp.\n\n"
    );
    for (name, table) in [("X86_64_TABLE", x86), ("AARCH64_TABLE", aarch64)] {
        if name != "X86_64_TABLE" {
            s.push('\n');
        }
        let _ = writeln!(s, "pub(crate) const {name}: &[(u32, &str)] = &[");
        for (nr, sys) in table {
            let _ = writeln!(s, "    ({nr}, \"{sys}\"),");
        }
        s.push_str("];\n");
    }
    s
}
