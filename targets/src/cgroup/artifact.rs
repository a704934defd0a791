//! The `cgroup.json` artifact: a [`CgroupSpec`] (one agent's limits in cgroup v2 terms), its
//! validation, canonical bytes and text twin, and the v2 → v1 weight mappings.
//!
//! Input: a spec the compiler built, or `cgroup.json` bytes ([`CgroupSpec::from_json`]).
//! Output: the canonical bytes ([`CgroupSpec::to_json`]) and `cgroup.txt`
//! ([`CgroupSpec::to_text`]). Invariants: a spec the runtime holds passed
//! [`CgroupSpec::validate`] (known format, a usable agent name, memory of at least 1 MiB,
//! at least one pid, weights and CPU bandwidth in the kernel's ranges); unknown fields are
//! refused, not ignored.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{CgroupError, FORMAT_VERSION, invalid};

/// CPU bandwidth limit: `quota_us` of CPU time per `period_us` (v2 `cpu.max`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuMax {
    pub quota_us: u64,
    pub period_us: u64,
}

/// The `cgroup.json` artifact: resource limits for one agent, in cgroup v2 terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSpec {
    pub format: u32,
    /// Agent name: `[a-z0-9_-]{1,48}`, used in leaf directory names.
    pub agent: String,
    /// `memory.max` in bytes.
    pub memory_max: u64,
    /// `memory.swap.max` in bytes (the compiler always writes 0: no swap).
    pub memory_swap_max: u64,
    /// `memory.oom.group`: an OOM kill kills the whole agent, not one process.
    pub memory_oom_group: bool,
    /// `pids.max`.
    pub pids_max: u64,
    /// `cpu.max`; `None` means no bandwidth limit.
    pub cpu_max: Option<CpuMax>,
    /// `cpu.weight`, 1..=10000 (100 is the kernel default).
    pub cpu_weight: u32,
    /// `io.weight`, 1..=10000; `None` leaves the host default.
    pub io_weight: Option<u32>,
    /// Wall-clock limit enforced by the supervisor (kills the leaf at the deadline).
    pub wall_time_ms: Option<u64>,
}

/// Whether `name` is usable as an agent name in paths and nftables identifiers.
pub fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl CgroupSpec {
    /// Checks every field's range; the only way the runtime obtains a spec is through this.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if self.format != FORMAT_VERSION {
            return Err(CgroupError::Version(self.format));
        }
        if !valid_agent_name(&self.agent) {
            return Err(invalid("agent", format!("{:?} is not [a-z0-9_-]{{1,48}}", self.agent)));
        }
        if self.memory_max < 1 << 20 {
            return Err(invalid("memory_max", "must be at least 1 MiB"));
        }
        if self.pids_max == 0 {
            return Err(invalid("pids_max", "must be at least 1"));
        }
        if let Some(c) = &self.cpu_max {
            if !(1000..=1_000_000).contains(&c.period_us) {
                return Err(invalid("cpu_max.period_us", "must be in 1000..=1000000"));
            }
            if c.quota_us < 1000 {
                return Err(invalid("cpu_max.quota_us", "must be at least 1000"));
            }
        }
        if !(1..=10_000).contains(&self.cpu_weight) {
            return Err(invalid("cpu_weight", "must be in 1..=10000"));
        }
        if let Some(w) = self.io_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(invalid("io_weight", "must be in 1..=10000"));
        }
        if self.wall_time_ms == Some(0) {
            return Err(invalid("wall_time_ms", "must be positive when present"));
        }
        Ok(())
    }

    /// Decodes and validates `cgroup.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CgroupError> {
        let spec: CgroupSpec = serde_json::from_slice(bytes).map_err(CgroupError::Decode)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Deterministic `cgroup.json` bytes (fields in declaration order, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of integers, strings and options cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Human-readable twin: the v2 files and the v1 files this spec writes.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "# cgroup limits for agent {}", self.agent);
        let _ = writeln!(t, "memory.max        {}  (v1 memory.limit_in_bytes)", self.memory_max);
        let _ = writeln!(
            t,
            "memory.swap.max   {}  (v1 memory.memsw.limit_in_bytes = {})",
            self.memory_swap_max,
            self.memory_max.saturating_add(self.memory_swap_max)
        );
        let _ = writeln!(
            t,
            "memory.oom.group  {}  (v1: supervisor kills the leaf on oom_kill)",
            u8::from(self.memory_oom_group)
        );
        let _ = writeln!(t, "pids.max          {}  (v1 pids.max)", self.pids_max);
        match &self.cpu_max {
            Some(c) => {
                let _ = writeln!(
                    t,
                    "cpu.max           {} {}  (v1 cpu.cfs_quota_us, cpu.cfs_period_us)",
                    c.quota_us, c.period_us
                );
            }
            None => {
                let _ = writeln!(t, "cpu.max           max 100000");
            }
        }
        let _ = writeln!(
            t,
            "cpu.weight        {}  (v1 cpu.shares = {})",
            self.cpu_weight,
            cpu_shares(self.cpu_weight)
        );
        match self.io_weight {
            Some(w) => {
                let _ = writeln!(t, "io.weight         {w}  (v1 blkio weight = {})", blkio_weight(w));
            }
            None => {
                let _ = writeln!(t, "io.weight         (host default)");
            }
        }
        match self.wall_time_ms {
            Some(ms) => {
                let _ = writeln!(t, "wall time         {ms} ms  (supervisor kills the leaf)");
            }
            None => {
                let _ = writeln!(t, "wall time         unlimited");
            }
        }
        t
    }
}

/// v2 `cpu.weight` (default 100) to v1 `cpu.shares` (default 1024).
pub fn cpu_shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

/// v2 `io.weight` (1..=10000, default 100) to v1 blkio weight (10..=1000, default 100).
pub fn blkio_weight(weight: u32) -> u64 {
    u64::from(weight / 10).clamp(10, 1000)
}
