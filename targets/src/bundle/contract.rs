//! The bundle contract: every name and number that `aegisc` writes into a bundle and that
//! `aegis-exec`, the proxy, `aegisd` and `aegis` read back, defined once.
//!
//! Input: none (constants and one enum). Output: the artifact file names, the egress proxy's
//! port and the network mode. Invariant: no other crate spells one of these names or numbers
//! as a literal; a writer and a reader that disagree would fail only at launch, so they both
//! take them from here.

use serde::{Deserialize, Serialize};

pub use super::names::{MANIFEST_FILE, SIGNATURE_FILE};
pub use crate::seccomp::{asm_file_name as seccomp_asm_file, bpf_file_name as seccomp_bpf_file};

/// The typed policy (`aegis-policy`'s IR), pretty JSON: what the proxy, the supervisor's
/// decision records and `aegisd` answer from.
pub const POLICY_IR: &str = "policy.ir.json";
/// The policy's digest (`sha256:…`), one line.
pub const POLICY_DIGEST: &str = "policy.sha256";
/// Every rule a kernel mechanism cannot express exactly, and what is enforced instead.
pub const LOSS_REPORT: &str = "loss-report.txt";
/// The Landlock ruleset, and its text twin.
pub const LANDLOCK: &str = "landlock.json";
pub const LANDLOCK_TEXT: &str = "landlock.txt";
/// The mount/namespace plan, and its text twin.
pub const MOUNTS: &str = "mounts.json";
pub const MOUNTS_TEXT: &str = "mounts.txt";
/// The cgroup settings, and their text twin.
pub const CGROUP: &str = "cgroup.json";
pub const CGROUP_TEXT: &str = "cgroup.txt";
/// The nftables ruleset, and its text twin.
pub const NFTABLES: &str = "nftables.json";
pub const NFTABLES_TEXT: &str = "nftables.txt";
/// The seccomp profile exported for docker/podman/runc/Kubernetes (not installed by
/// `aegis-exec`, which installs the BPF artifacts).
pub const SECCOMP_OCI: &str = "seccomp.oci.json";

/// The port the egress proxy listens on, on loopback inside the agent's network namespace.
pub const PROXY_PORT: u16 = 3128;

/// How the agent reaches the network: the policy's `[network] mode`, the manifest's
/// `network_mode`, and what the runtime sets up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace with loopback only.
    None,
    /// Own network namespace; loopback to the egress proxy only.
    Proxy,
    /// The host network, egress filtered to the allowed endpoints.
    Host,
}

impl NetworkMode {
    /// The word the policy and the manifest use.
    pub fn word(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Proxy => "proxy",
            NetworkMode::Host => "host",
        }
    }
}
