//! The `seccomp` target (under construction).
