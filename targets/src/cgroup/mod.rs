//! The `cgroup` target: resource limits for one agent (`cgroup.json`) and the code that puts
//! an agent into a leaf cgroup that enforces them.
//!
//! Input: a [`CgroupSpec`] (built by the compiler from the policy's `[resources]`, or decoded
//! from `cgroup.json` with [`CgroupSpec::from_json`]). Output: deterministic JSON bytes
//! ([`CgroupSpec::to_json`]) and a text twin ([`CgroupSpec::to_text`]); at launch, a [`Leaf`]
//! created by [`Leaf::create`] on the host's [`Layout`] (`v2`, `hybrid` or `v1`) at the
//! [`Placement`] [`Layout::placement`] chose: under each hierarchy root for root, or, for an
//! unprivileged user on cgroup v2, under a subtree delegated to them ([`delegate`]).
//! Invariants: a validated spec always has memory and pids limits and swap 0; the artifact is
//! written for cgroup v2 names and mapped to v1 files on hybrid/v1 hosts
//! (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `pids.max`,
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpu.shares`, `blkio.[bfq.]weight`); a leaf is
//! removed (remaining processes killed first) when [`Leaf::remove`] is called or the `Leaf` is
//! dropped, so every exit path of the supervisor cleans up. On hybrid hosts the leaf is also
//! created in the (controller-less) cgroup2 tree so that nftables can match the agent's
//! sockets by cgroup v2 path ([`Leaf::unified`]).
//!
//! Where the v1 hierarchy cannot express a v2 setting exactly it is reported, not hidden:
//! `memory.oom.group` has no v1 file, so [`ApplyReport::partial`] says the supervisor must
//! kill the whole leaf after an OOM kill (it does: `aegis-exec` watches `oom_kill`).
//!
//! | file          | holds                                                              |
//! |---------------|--------------------------------------------------------------------|
//! | `artifact.rs` | `cgroup.json`: [`CgroupSpec`], validation, text twin, v1 weights   |
//! | `layout.rs`   | the host's cgroup mounts: v2, hybrid or v1 ([`Layout`])            |
//! | `delegate.rs` | where leaves may be made: hierarchy root or a delegated subtree    |
//! | `apply.rs`    | launch: create the leaf in every hierarchy, write the limits       |
//! | `leaf.rs`     | the leaf's life: move pids in, verify, kill, remove; stale sweep   |
//! | `usage.rs`    | the leaf's counters for the exit record                            |

use std::path::{Path, PathBuf};

mod apply;
mod artifact;
pub mod delegate;
mod layout;
mod leaf;
mod usage;

pub use apply::{ApplyReport, Setting};
pub use artifact::{CgroupSpec, CpuMax, blkio_weight, cpu_shares, valid_agent_name};
pub use delegate::{Delegation, NoCgroup, Placement, SUPERVISOR_DIR, systemd_run_line};
pub use layout::Layout;
pub use leaf::{Leaf, sweep_stale};
pub use usage::Usage;

/// File name of this artifact inside a bundle.
pub const FILE_NAME: &str = crate::bundle::contract::CGROUP;

/// Version of the `cgroup.json` format this module reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Directory (below each hierarchy root) that holds every AEGIS leaf.
pub const PARENT_DIR: &str = "aegis";

/// Errors of the cgroup target; each carries the path or value concerned.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup.json: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cgroup.json: unsupported format version {0} (this build reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("cgroup.json: invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("cgroup layout: no cgroup filesystem is mounted (read {0})")]
    NoCgroupFs(PathBuf),
    #[error("cgroup: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup: controller `{0}` is not available on this host")]
    MissingController(&'static str),
    #[error("cgroup: pid {pid} is not in leaf {leaf} (hierarchy {hierarchy}: {found})")]
    NotMember {
        pid: i32,
        leaf: String,
        hierarchy: String,
        found: String,
    },
    #[error("cgroup: leaf {path} still has processes after kill")]
    Busy { path: PathBuf },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(field: &'static str, why: impl Into<String>) -> CgroupError {
    CgroupError::Invalid {
        field,
        why: why.into(),
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io("writing", path))
}
