//! Names as nft and the kernel log spell them: table names (one per agent in the artifact,
//! one per running instance at launch), deny log prefixes, and the cgroup2 path of a leaf.
//!
//! Input: an agent name (already checked by [`crate::cgroup::valid_agent_name`] where it
//! comes from a policy), a supervisor pid and nonce, a cgroup2 directory. Output: strings.
//! Invariant: [`table_pid`] reads back the pid [`instance_table`] wrote (also from the older
//! `aegis_<agent>_<pid>` form), which is what lets a later run sweep a killed supervisor's
//! tables.

use std::path::Path;

use super::NftError;

/// `aegis_<agent>` with `-` mapped to `_` (nft identifiers).
pub fn table_name(agent: &str) -> String {
    format!("aegis_{}", agent.replace('-', "_"))
}

/// Log prefix of denied packets for `agent`, as compiled into the artifact.
pub fn log_prefix(agent: &str) -> String {
    format!("aegis:{agent}:deny ")
}

/// Log prefix of one running instance (what [`Ruleset::fill`](super::Ruleset::fill) loads,
/// and what the runtime looks for in the kernel log): the host's kernel log is shared by
/// every launch, so two launches of one agent must not read each other's denials.
pub fn instance_log_prefix(agent: &str, instance: &str) -> String {
    format!("aegis:{agent}:{instance}:deny ")
}

/// The name of one running instance's table: `aegis_<agent>_<supervisor pid>_<nonce>`
/// (`agent` already made an nft identifier, `nonce` 8 hex digits). The pid lets a later run
/// sweep what a killed supervisor left ([`sweep_stale`](super::sweep_stale)); the nonce
/// keeps two supervisors with one pid apart (pid namespaces share the host's network
/// namespace).
pub fn instance_table(agent: &str, pid: u32, nonce: u32) -> String {
    format!("aegis_{agent}_{pid}_{nonce:08x}")
}

/// The supervisor pid in a table name of [`instance_table`] (or of the older
/// `aegis_<agent>_<pid>` form).
pub fn table_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("aegis_")?;
    let mut parts = rest.rsplit('_');
    let last = parts.next()?;
    if last.len() == 8 && last.bytes().all(|b| b.is_ascii_hexdigit())
        && let Some(pid) = parts.next().and_then(|p| p.parse::<i32>().ok())
        && parts.next().is_some()
    {
        return Some(pid);
    }
    last.parse().ok()
}

/// Path of a cgroup2 directory relative to `/sys/fs/cgroup`, as nft expects it.
pub fn nft_cgroup_path(dir: &Path) -> Result<String, NftError> {
    dir.strip_prefix("/sys/fs/cgroup")
        .ok()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| NftError::CgroupPath(dir.to_path_buf()))
}
