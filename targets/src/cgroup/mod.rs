//! The `cgroup` target (under construction).
