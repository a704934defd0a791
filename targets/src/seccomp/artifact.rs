//! The seccomp artifacts of a bundle: one raw program and its disassembly per architecture.
//!
//! Input: a [`SeccompSpec`] and syscall weights. Output: for each [`Arch`], an
//! [`Artifact`] with the file names (`seccomp.<arch>.bpf`, `seccomp.<arch>.asm`), the raw
//! bytes, the disassembly text and the kernel-cache report. Invariants: building fails
//! (typed) if the spec is invalid, a program exceeds 4096 instructions, or an always-allowed
//! syscall would not be cached by the kernel; the bytes are identical for identical input.

use super::bpf::{SockFilter, to_bytes};
use super::cache::{CacheError, CacheReport, check_cacheable};
use super::codegen::{CodegenError, SyscallWeights, compile};
use super::disasm::disassemble;
use super::spec::SeccompSpec;
use super::syscalls::Arch;

/// One architecture's filter, ready to be written into a bundle.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub arch: Arch,
    pub program: Vec<SockFilter>,
    /// `seccomp.<arch>.bpf`
    pub bpf_name: String,
    /// Raw `struct sock_filter` array.
    pub bpf: Vec<u8>,
    /// `seccomp.<arch>.asm`
    pub asm_name: String,
    /// Header comment line, then one line per instruction.
    pub asm: String,
    pub cache: CacheReport,
}

/// Why the artifacts could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Build the artifact for every supported architecture.
pub fn build(spec: &SeccompSpec, weights: &SyscallWeights) -> Result<Vec<Artifact>, BuildError> {
    Arch::ALL
        .iter()
        .map(|&arch| {
            let program = compile(spec, arch, weights)?;
            let cache = check_cacheable(spec, arch, &program)?;
            let asm = format!(
                "# seccomp filter for {arch}: {} instructions; {} syscalls always allowed, all decided from arch and number (kernel action cache)\n{}",
                program.len(),
                cache.always_allowed.len(),
                disassemble(&program, Some(arch))
            );
            Ok(Artifact {
                arch,
                bpf: to_bytes(&program),
                bpf_name: super::bpf_file_name(arch),
                asm_name: super::asm_file_name(arch),
                asm,
                program,
                cache,
            })
        })
        .collect()
}
