//! System call names the policy may mention (`[syscalls]` lists).
//!
//! Input: a name from a policy. Output: whether any architecture AEGIS emits filters for
//! (x86_64, aarch64) knows it, and every known name for "did you mean" suggestions.
//! Invariant: the seccomp target's tables are the only source of names.

use aegis_targets::seccomp::syscalls::{Arch, is_known_name};

pub fn is_known(name: &str) -> bool {
    is_known_name(name)
}

pub fn all() -> impl Iterator<Item = &'static str> {
    Arch::ALL.into_iter().flat_map(|a| a.table().iter().map(|(_, n)| *n))
}
