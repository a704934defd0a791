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
//!
//! # Flow
//! ```text
//! compiler lowering ─┐
//! hardening::aegis_default(&Hardening) ─┼─▶ SeccompSpec ─▶ artifact::build ─▶ per arch:
//! oci::import(docker.json) ─┘            (decide = oracle)   seccomp.<arch>.bpf (to_bytes)
//!                                                            seccomp.<arch>.asm (disassemble)
//!                                                            CacheReport (check_cacheable)
//! runtime: from_bytes(bpf) ─▶ apply(&program, ApplyOptions) ─▶ current_mode() to verify
//!          (a program that notifies: split::split ─▶ notify filter with a listener, then
//!           the policy filter with LOG; the kernel combines them back into the program)
//! ```
//!
//! # Why our own code generator
//! Measured with `cargo run --release -p aegis-targets --bin seccomp_bench` (Docker's default
//! allowed set on x86_64, recorded agent syscall mix): libseccomp 2.5 executes ~101
//! instructions per syscall by default and ~14 with `CTL_OPTIMIZE=2` (a balanced tree that
//! ignores call frequency, 414 instructions long, with its own x32 and arch prologue);
//! seccompiler emits one `jeq` per listed syscall in number order (a linear chain, so an
//! allow list of ~300 syscalls costs on the order of a hundred instructions for a typical
//! call). Here: ranges of equal outcome (one range covers x32, -1 and every future number),
//! an optimal alphabetic tree weighted by how often syscalls are made, and shared return
//! instructions: ~6.2 instructions per syscall, 111 instructions in all, and no dependency
//! whose syscall table lags the kernel (libseccomp 2.5.4 does not know `mseal`, `statmount`,
//! …, so it cannot allow them at all).
//!
//! # Exec after the initial exec
//! The filter is installed before the runtime's own `execve` of the agent, so that call must
//! pass. [`ExecGate::Allow`] lets `execve`/`execveat` through and leaves the choice of
//! binaries to Landlock's `EXECUTE` right (seccomp cannot see paths). [`ExecGate::Notify`]
//! sends them to the supervisor ([`apply_with_listener`]), which answers CONTINUE once for
//! the initial exec and EPERM afterwards (tested live in `tests/all/seccomp_live.rs`).

pub mod apply;
pub mod artifact;
pub mod bpf;
pub mod cache;
pub mod codegen;
pub mod cost;
pub mod describe;
pub mod disasm;
pub mod emulator;
pub mod hardening;
pub mod oci;
pub mod spec;
pub mod split;
pub mod syscalls;

pub use apply::{ApplyError, ApplyOptions, apply, apply_with_listener, current_mode};
pub use artifact::{Artifact, BuildError, build};
pub use bpf::{SockFilter, from_bytes, to_bytes};
pub use cache::{CacheReport, check_cacheable};
pub use codegen::{CodegenError, SyscallWeights, compile, compile_all};
pub use disasm::disassemble;
pub use emulator::run;
pub use hardening::{ConnectGate, ExecGate, Hardening, aegis_default, base_spec};
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
