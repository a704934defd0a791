//! The `seccomp` target: a policy's syscall decisions as classic BPF, per architecture.
//!
//! Input: a [`SeccompSpec`] (default action + ordered, argument-guarded rules per syscall
//! name), built by the compiler's lowering, by [`hardening`] (the AEGIS base set and the
//! restrictions that follow from a policy), or imported from an OCI profile ([`oci`]).
//! Output: per [`Arch`], a program (`Vec<SockFilter>`, raw bytes via [`to_bytes`] in
//! `seccomp.<arch>.bpf`) with a text twin ([`disassemble`], `seccomp.<arch>.asm`).
//! Invariants: the program's verdict equals [`decide`] for every input (the differential
//! tests check it through [`emulator::run`]); foreign architectures are killed; unknown,
//! x32 and future syscall numbers and `clone3` return ENOSYS; every always-allowed syscall is
//! decided from arch and number alone ([`cache::check_cacheable`]); same spec, same bytes.
//! [`apply()`] installs a program on the calling process (the runtime's last step before exec).

pub mod apply;
pub mod artifact;
pub mod bpf;
pub mod cache;
pub mod codegen;
pub mod cost;
pub mod disasm;
pub mod emulator;
pub mod hardening;
pub mod oci;
pub mod spec;
pub mod syscalls;

pub use apply::{ApplyError, ApplyOptions, apply, apply_with_listener, current_mode};
pub use artifact::{Artifact, BuildError, build};
pub use bpf::{SockFilter, from_bytes, to_bytes};
pub use cache::{CacheReport, check_cacheable};
pub use codegen::{CodegenError, SyscallWeights, compile, compile_all};
pub use disasm::disassemble;
pub use emulator::run;
pub use hardening::{ExecGate, Hardening, aegis_default, base_spec};
pub use spec::{Action, ArgCond, CmpOp, Rule, SeccompData, SeccompSpec, decide};
pub use syscalls::Arch;

/// File name of the raw program for `arch` in a bundle.
pub fn bpf_file_name(arch: Arch) -> String {
    format!("seccomp.{}.bpf", arch.name())
}

/// File name of the disassembly for `arch` in a bundle.
pub fn asm_file_name(arch: Arch) -> String {
    format!("seccomp.{}.asm", arch.name())
}
