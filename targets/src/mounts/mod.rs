//! The `mounts` target (under construction).
