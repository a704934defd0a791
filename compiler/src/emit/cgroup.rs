//! IR `[resources]` → `cgroup.json` ([`aegis_targets::cgroup::CgroupSpec`]).
//!
//! Limits the policy leaves out are written as "unlimited" in the units the kernel accepts
//! (memory: u64::MAX, which the kernel clamps to `max`; pids: PID_MAX_LIMIT), so the text
//! twin shows exactly what the host will get; the lint `no_resource_limits` warns about them.
//! Swap is always 0 and an OOM kill always takes the whole agent (`memory.oom.group`).

use aegis_targets::cgroup::{CgroupSpec, CpuMax, FORMAT_VERSION};

use crate::ir::Checked;

/// The kernel's PID_MAX_LIMIT: `pids.max` accepts nothing larger.
pub const PIDS_UNLIMITED: u64 = 4_194_304;
/// cpu.max period used for `cpu` limits.
pub const CPU_PERIOD_US: u64 = 100_000;

pub fn emit(policy: &Checked) -> CgroupSpec {
    let r = &policy.resources;
    CgroupSpec {
        format: FORMAT_VERSION,
        agent: policy.agent.name.clone(),
        memory_max: r.memory_bytes.map(|l| l.value).unwrap_or(u64::MAX),
        memory_swap_max: 0,
        memory_oom_group: true,
        pids_max: r.pids.map(|l| l.value).unwrap_or(PIDS_UNLIMITED),
        cpu_max: r.cpu_millicores.map(|l| CpuMax {
            // millicores × period / 1000, at least the kernel's 1 ms minimum quota.
            quota_us: (l.value * CPU_PERIOD_US / 1000).max(1000),
            period_us: CPU_PERIOD_US,
        }),
        cpu_weight: r.cpu_weight.map(|l| l.value as u32).unwrap_or(100),
        io_weight: r.io_weight.map(|l| l.value as u32),
        wall_time_ms: r.wall_time_ms.map(|l| l.value),
    }
}
