//! What a leaf used, read from its counters for the exit record: memory, pids, CPU time,
//! OOM kills and limit hits.
//!
//! Input: a [`Leaf`]. Output: a [`Usage`]. Invariant: reading never fails: hosts differ in
//! which counter files exist (v1 or v2, `memory.peak` only on newer kernels), so a missing
//! file reads as `None` or 0.

use std::path::Path;

use serde::Serialize;

use super::leaf::Hier;
use super::Leaf;

/// Resource usage read from a leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    /// Processes killed by the OOM killer in this leaf.
    pub oom_kills: u64,
    /// Times an allocation hit the memory limit (v1 `memory.failcnt`, v2 `memory.events max`).
    pub memory_limit_hits: u64,
    /// Times a fork failed because of `pids.max`.
    pub pids_limit_hits: u64,
    pub pids_peak: Option<u64>,
    /// CPU time used by the leaf in nanoseconds.
    pub cpu_ns: Option<u64>,
}

impl Leaf {
    /// Reads usage counters (missing files read as `None`/0: hosts differ).
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for (h, d) in &self.dirs {
            let num = |f: &str| read_u64(&d.join(f));
            let kv = |f: &str, k: &str| read_key(&d.join(f), k);
            match (self.layout, h) {
                ("v2", Hier::Unified) => {
                    u.memory_current = num("memory.current");
                    u.memory_peak = num("memory.peak");
                    u.oom_kills = kv("memory.events", "oom_kill").unwrap_or(0);
                    u.memory_limit_hits = kv("memory.events", "max").unwrap_or(0);
                    u.pids_limit_hits = kv("pids.events", "max").unwrap_or(0);
                    u.pids_peak = num("pids.peak");
                    u.cpu_ns = kv("cpu.stat", "usage_usec").map(|us| us.saturating_mul(1000));
                }
                (_, Hier::Memory) => {
                    u.memory_current = num("memory.usage_in_bytes");
                    u.memory_peak = num("memory.max_usage_in_bytes");
                    u.oom_kills = kv("memory.oom_control", "oom_kill").unwrap_or(0);
                    u.memory_limit_hits = num("memory.failcnt").unwrap_or(0);
                }
                (_, Hier::Pids) => {
                    u.pids_limit_hits = kv("pids.events", "max").unwrap_or(0);
                    u.pids_peak = num("pids.peak");
                }
                (_, Hier::Cpuacct) => u.cpu_ns = num("cpuacct.usage"),
                (_, Hier::Cpu) if u.cpu_ns.is_none() => u.cpu_ns = num("cpuacct.usage"),
                _ => {}
            }
        }
        u
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn read_key(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}
