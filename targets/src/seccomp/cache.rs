//! Proof that always-allowed syscalls hit the kernel's constant-action cache.
//!
//! Input: a program, its [`Arch`] and the spec it was compiled from. Output: a
//! [`CacheReport`] listing every syscall the spec allows whatever the arguments and whether
//! the kernel (Linux 5.11+, `seccomp_cache_prepare_bitmap`) will cache it, i.e. skip the
//! filter entirely. Invariant: [`is_const_allow`] is a transcription of the kernel's
//! `seccomp_is_const_allow()`: it runs the program knowing only `arch` and `nr`; any load of
//! another field, or any instruction outside the handful it understands, means "not
//! constant". (The kernel additionally lets `uretprobe`/`uprobe` through before any filter;
//! this check does not rely on that.)

use super::bpf::*;
use super::spec::{RET_ALLOW, SeccompSpec};
use super::syscalls::Arch;

/// The kernel's emulation: does `program` return ALLOW for (`arch`, `nr`) without looking
/// at anything else?
pub fn is_const_allow(program: &[SockFilter], arch: u32, nr: u32) -> bool {
    let mut reg: u32 = 0;
    let mut pc: usize = 0;
    while let Some(ins) = program.get(pc) {
        let k = ins.k;
        match ins.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => match k {
                OFF_NR => reg = nr,
                OFF_ARCH => reg = arch,
                _ => return false,
            },
            c if c == BPF_RET | BPF_K => return k == RET_ALLOW,
            c if c == BPF_JMP | BPF_JA => pc = pc.saturating_add(k as usize),
            c if c == BPF_JMP | BPF_JEQ | BPF_K
                || c == BPF_JMP | BPF_JGE | BPF_K
                || c == BPF_JMP | BPF_JGT | BPF_K
                || c == BPF_JMP | BPF_JSET | BPF_K =>
            {
                let taken = match c & 0xf0 {
                    BPF_JEQ => reg == k,
                    BPF_JGE => reg >= k,
                    BPF_JGT => reg > k,
                    _ => reg & k != 0,
                };
                pc += usize::from(if taken { ins.jt } else { ins.jf });
            }
            c if c == BPF_ALU | BPF_AND | BPF_K => reg &= k,
            _ => return false,
        }
        pc += 1;
    }
    false
}

/// One always-allowed syscall and whether the kernel caches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub nr: u32,
    pub name: &'static str,
    pub cacheable: bool,
}

/// Per-artifact cache report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheReport {
    pub arch: Arch,
    pub always_allowed: Vec<CacheEntry>,
}

impl CacheReport {
    /// Always-allowed syscalls the kernel would still run the filter for.
    pub fn uncached(&self) -> impl Iterator<Item = &CacheEntry> {
        self.always_allowed.iter().filter(|e| !e.cacheable)
    }
}

/// An always-allowed syscall that the kernel cannot cache.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "seccomp filter for {arch}: always-allowed syscalls not decidable from arch and number \
     (the kernel would run the filter for them): {names}"
)]
pub struct CacheError {
    pub arch: Arch,
    pub names: String,
}

/// Build the report for `program`, compiled from `spec` for `arch`.
pub fn cache_report(spec: &SeccompSpec, arch: Arch, program: &[SockFilter]) -> CacheReport {
    let always_allowed = spec
        .always_allowed(arch)
        .into_iter()
        .map(|nr| CacheEntry {
            nr,
            name: arch.syscall_name(nr).unwrap_or("?"),
            cacheable: is_const_allow(program, arch.audit_arch(), nr),
        })
        .collect();
    CacheReport {
        arch,
        always_allowed,
    }
}

/// Error unless every always-allowed syscall of `spec` is cached by the kernel.
pub fn check_cacheable(
    spec: &SeccompSpec,
    arch: Arch,
    program: &[SockFilter],
) -> Result<CacheReport, CacheError> {
    let report = cache_report(spec, arch, program);
    let bad: Vec<&str> = report.uncached().map(|e| e.name).collect();
    if bad.is_empty() {
        Ok(report)
    } else {
        Err(CacheError {
            arch,
            names: bad.join(", "),
        })
    }
}
