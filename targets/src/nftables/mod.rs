//! The `nftables` target: network egress rules for one agent (`nftables.json`, nft JSON as
//! read by `nft -j -f`) and the code that loads them at launch.
//!
//! Input: a [`NetPolicy`] (mode, endpoints {host name | IP | CIDR, port ranges, tcp/udp},
//! resolvers) lowered by [`lower()`] into a [`Ruleset`]. Output: deterministic JSON bytes
//! ([`Ruleset::to_json`]) holding one table `inet aegis_<agent>`; at launch
//! [`Ruleset::fill`] puts the resolved addresses of declared host names into the named sets
//! `h4_<name>` / `h6_<name>` and [`apply()`] loads the result with `nft -j -f -` (inside the
//! agent's network namespace when given one), checks the table is present by asking the
//! kernel over netlink ([`table_present`], `NFT_MSG_GETTABLE`), and the returned
//! [`LoadedTable`] deletes it on drop ([`delete_table`], one nf_tables netlink transaction).
//! Invariants: default deny — in `host` mode every packet from the agent's sockets that no
//! rule accepts is logged (prefix `aegis:<agent>:deny `, rate-limited) and dropped; in
//! `none`/`proxy` modes (the agent's own namespace) everything but loopback (proxy mode: only
//! the proxy port on loopback) is logged to the NFLOG group [`NFLOG_GROUP`] (rate-limited)
//! and rejected (TCP reset, otherwise ICMP port unreachable) so the agent fails fast.
//! Own-namespace tables accept output to `lo` only when the destination is a local address
//! (`fib daddr type local`): the runtime routes every other destination to `lo` so that a
//! direct connect creates a packet for this table to log and reject, instead of failing with
//! ENETUNREACH unseen; and they accept `ct state related`, which is the reject's own
//! reset/ICMP answer travelling back to the agent.
//!
//! Matching the agent's sockets in `host` mode: the rule is
//! `socket cgroupv2 level <depth> "<path>" goto agent`, and the cgroup path exists only at
//! launch. The nft 1.0.6 JSON parser (Debian bookworm, this machine) has no `cgroupv2` socket
//! key, so this one dispatch rule cannot be part of the JSON artifact. Decision: the artifact
//! holds the whole table (sets, the `agent` chain with every allow/log/drop rule, and an
//! empty `output` hook chain); [`add_dispatch`] adds the single fixed-shape rule that
//! jumps from `output` to `agent` over netlink (the cgroup's id is its directory's inode
//! number), after the JSON load and once the leaf exists. The table's load does not need
//! the leaf, so it starts before the leaf is made ([`start_host_load`]); the agent is not
//! running until both are in place and verified, so there is no window. Kernel log lines
//! from a non-initial network namespace are only emitted when
//! `net.netfilter.nf_log_all_netns=1`, which is why the own-namespace tables log to NFLOG
//! instead (read by the runtime's `stage::netlog`).
//!
//! | file          | holds                                                              |
//! |---------------|--------------------------------------------------------------------|
//! | `policy.rs`   | the lowering's input: [`NetPolicy`], [`NetMode`], endpoints        |
//! | `names.rs`    | table names, log prefixes, the cgroup path as nft spells them      |
//! | `lower.rs`    | policy → `nftables.json` (the nft JSON builder)                    |
//! | `artifact.rs` | `nftables.json`: [`Ruleset`], decode and shape check, text twin    |
//! | `fill.rs`     | launch: one instance's JSON (resolved sets), the forward targets   |
//! | `nft.rs`      | running the `nft` binary, here or in an agent's namespaces         |
//! | `apply.rs`    | launch: load, verify, delete on drop; stale tables; new netns      |
//! | `kernel.rs`   | nf_tables over netlink: dispatch rule, list, present, delete       |

use std::path::PathBuf;

mod apply;
mod artifact;
mod fill;
mod kernel;
mod lower;
mod names;
mod nft;
mod policy;

pub use apply::{
    HostLoad, LoadedTable, LoopbackStep, PendingNetns, apply, load_in_new_netns, load_into, loopback_up, start_host_load,
    sweep_stale, table_exists, verify_on,
};
pub use artifact::{HostSet, Ruleset};
pub use fill::MAX_FORWARDS;
pub use kernel::{Dispatch, add_dispatch, delete_table, list_tables, table_present, table_present_on};
pub use lower::lower;
pub use names::{instance_log_prefix, instance_table, log_prefix, nft_cgroup_path, table_name, table_pid};
pub use nft::{AgentNs, NFT_DIRS, nft_binary, run_nft};
pub use policy::{Endpoint, Host, NetMode, NetPolicy, PortRange, Proto};

/// File name of this artifact inside a bundle.
pub const FILE_NAME: &str = crate::bundle::contract::NFTABLES;

/// Table family: `inet` covers IPv4 and IPv6 with one table.
pub const FAMILY: &str = "inet";

/// Chain that holds the agent's rules in `host` mode.
pub const AGENT_CHAIN: &str = "agent";

/// Rate limit of deny log lines (per second); the drop itself is never rate limited.
pub const LOG_RATE_PER_SEC: u64 = 10;

/// NFLOG group the own-namespace tables (`none`, `proxy`) log denied packets to. Fixed: the
/// namespace belongs to one agent, so no other listener can clash with it.
pub const NFLOG_GROUP: u16 = 1;

/// Errors of the nftables target.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables.json: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("nftables.json: {0}")]
    Shape(String),
    #[error("nftables policy: invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("nft: {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nft {what} failed (exit {status}): {stderr}")]
    Nft {
        what: &'static str,
        status: i32,
        stderr: String,
    },
    #[error("nft: table {0} is not present after loading")]
    Missing(String),
    #[error("nft: cgroup2 leaf {0} is not below /sys/fs/cgroup")]
    CgroupPath(PathBuf),
}
