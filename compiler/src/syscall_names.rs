//! System call names the policy may mention (`[syscalls]` lists).
//!
//! Input: a name from a policy. Output: whether any architecture AEGIS emits for knows it,
//! and the full list for "did you mean" suggestions.
//! Invariant: PROVISIONAL — until the seccomp target's tables are wired in, a name is
//! accepted when it is spelt like a syscall name; the seccomp lowering rejects unknown ones.

pub fn is_known(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub fn all() -> impl Iterator<Item = &'static str> {
    std::iter::empty()
}
