//! Kernels people run: which Landlock rights a launch can do without on an older ABI
//! because another layer enforces them, and the ABI a launch needs.
//!
//! Input: a [`super::LandlockArtifact`]'s handled items (fs rights, TCP rights, scopes) with
//! the [`Fallbacks`] the compiler recorded, the kernel's ABI, and which other layers are in
//! force at launch ([`InForce`]). Output: the ABI the launch needs
//! ([`super::LandlockArtifact::needed_abi`]) and, per item the kernel lacks, what enforces it
//! instead ([`Missing`]), in words for the enforcement report and refusals.
//! Invariants: a fallback counts only when its layer is in force at this launch
//! (`Stricter` always is); an item without one needs Landlock itself, so a required layer
//! refuses a kernel that lacks it (never a silent downgrade); which item may name which
//! fallback is fixed here ([`allowed`]) and checked when an artifact is decoded.
//!
//! Why each fallback holds:
//! - `refer` (V2) → [`Fallback::Stricter`]: a ruleset of ABI 1 cannot handle `refer`, and
//!   the kernel then denies every rename or link into another directory (`EXDEV`). Tools
//!   fall back to copy + delete; nothing the policy denies becomes reachable.
//! - `truncate` (V3) → [`Fallback::MountPlan`]: without the right, `truncate(2)` and
//!   `O_TRUNC` are checked by DAC and the mount only. The compiler records this fallback only
//!   when every writable mount of the plan lies inside a Landlock grant that includes
//!   `truncate` (a `write` grant); everything else in the sandbox's root is a read-only bind,
//!   a mask, the read-only root itself, or `/proc` and `/dev` (no truncatable regular files),
//!   so truncation outside the write grants fails with `EROFS`/`EINVAL` as it would with the
//!   right handled.
//! - TCP rights (V4) and the abstract-UNIX-socket scope (V6) →
//!   [`Fallback::NetworkNamespace`]: in the agent's own network namespace (modes
//!   `none`/`proxy`, and `host` when the launch forwards the granted endpoints into one)
//!   only loopback, the proxy or the forwards exist, with nftables there, and abstract
//!   sockets belong to the namespace. Root's `host` mode shares the host's namespace: this
//!   fallback is then not in force and the kernel must have the items.
//! - The signal scope (V6) → [`Fallback::PidNamespace`]: in its own pid namespace the agent
//!   sees no process outside to signal.

use super::rights::{Abi, FsRight, NetRight, Scope};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What enforces a Landlock item on a kernel whose ABI lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// The kernel itself enforces a stricter reading without the right.
    Stricter,
    /// The mount plan (read-only binds outside the write grants); needs a mount namespace.
    MountPlan,
    /// The agent's own pid namespace.
    PidNamespace,
    /// The agent's own network namespace.
    NetworkNamespace,
}

impl Fallback {
    pub fn name(self) -> &'static str {
        match self {
            Fallback::Stricter => "stricter",
            Fallback::MountPlan => "mount_plan",
            Fallback::PidNamespace => "pid_namespace",
            Fallback::NetworkNamespace => "network_namespace",
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per handled item, the layer that enforces it when the kernel lacks it (only items of
/// ABI 2 and later; absent: nothing but Landlock enforces it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallbacks {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fs: BTreeMap<FsRight, Fallback>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub net: BTreeMap<NetRight, Fallback>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scopes: BTreeMap<Scope, Fallback>,
}

impl Fallbacks {
    pub fn is_empty(&self) -> bool {
        self.fs.is_empty() && self.net.is_empty() && self.scopes.is_empty()
    }
}

/// One thing a ruleset may handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    Fs(FsRight),
    Net(NetRight),
    Scope(Scope),
}

impl Item {
    pub fn since(self) -> Abi {
        match self {
            Item::Fs(r) => r.since(),
            Item::Net(r) => r.since(),
            Item::Scope(s) => s.since(),
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Fs(r) => write!(f, "{r}"),
            Item::Net(r) => write!(f, "{r}"),
            Item::Scope(s) => write!(f, "scope {s}"),
        }
    }
}

/// The fallback an item may have (the reasoning is in the module docs).
pub fn allowed(item: Item) -> Option<Fallback> {
    match item {
        Item::Fs(FsRight::Refer) => Some(Fallback::Stricter),
        Item::Fs(FsRight::Truncate) => Some(Fallback::MountPlan),
        Item::Fs(_) => None,
        Item::Net(_) | Item::Scope(Scope::AbstractUnixSocket) => Some(Fallback::NetworkNamespace),
        Item::Scope(Scope::Signal) => Some(Fallback::PidNamespace),
    }
}

/// Layers besides Landlock that are in force at a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// The bundle's mount plan was applied (the agent's root is the plan's new root).
    pub mount_plan: bool,
    /// The agent has its own pid namespace.
    pub pid_namespace: bool,
    /// The agent has its own network namespace.
    pub network_namespace: bool,
}

impl InForce {
    /// Only Landlock (no mount namespace, no namespaces): every item needs the kernel.
    pub const NOTHING: InForce = InForce {
        mount_plan: false,
        pid_namespace: false,
        network_namespace: false,
    };
    /// Every compensating layer: the lowest ABI any host can run a ruleset on.
    pub const EVERYTHING: InForce = InForce {
        mount_plan: true,
        pid_namespace: true,
        network_namespace: true,
    };

    pub fn provides(self, f: Fallback) -> bool {
        match f {
            Fallback::Stricter => true,
            Fallback::MountPlan => self.mount_plan,
            Fallback::PidNamespace => self.pid_namespace,
            Fallback::NetworkNamespace => self.network_namespace,
        }
    }
}

/// An item the kernel's ABI lacks, and what enforces it at this launch (`None`: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    pub item: Item,
    pub by: Option<Fallback>,
}

impl Missing {
    /// One phrase for reports: what is lost or who enforces it instead.
    pub fn describe(&self) -> String {
        let what = format!("`{}` ({})", self.item, self.item.since());
        match self.by {
            Some(Fallback::Stricter) => format!(
                "{what}: every rename or link into another directory fails (EXDEV), a stricter reading"
            ),
            Some(Fallback::MountPlan) => format!(
                "{what}: enforced by the mount plan (outside the write grants everything is read-only: EROFS)"
            ),
            Some(Fallback::PidNamespace) => {
                format!("{what}: enforced by the agent's own pid namespace")
            }
            Some(Fallback::NetworkNamespace) => {
                format!("{what}: enforced by the agent's own network namespace")
            }
            None => format!("{what}: NOT enforced"),
        }
    }
}

/// The first Linux release of each Landlock ABI (for messages that name a fix).
pub fn linux_release(abi: Abi) -> &'static str {
    match abi.0 {
        0 | 1 => "5.13",
        2 => "5.19",
        3 => "6.2",
        4 => "6.7",
        5 => "6.10",
        6 => "6.12",
        _ => "6.15",
    }
}

/// Why a launch cannot run on this kernel, naming what is missing and the fixes.
pub fn refusal(kernel: Abi, needed: Abi, missing: &[Missing], in_force: InForce) -> String {
    let names: Vec<String> = missing
        .iter()
        .filter(|m| m.by.is_none())
        .map(|m| format!("`{}` ({})", m.item, m.item.since()))
        .collect();
    let mut fixes = vec![format!(
        "a kernel with Landlock ABI {} (Linux {}+)",
        needed.0,
        linux_release(needed)
    )];
    // Name another layer only when it would make up for every item missing here.
    let other_layers_would_do = missing
        .iter()
        .filter(|m| m.by.is_none())
        .all(|m| allowed(m.item).is_some_and(|f| !in_force.provides(f)));
    if other_layers_would_do && !names.is_empty() {
        if in_force.pid_namespace {
            // Namespaces exist but the network namespace is shared (root's host mode).
            fixes.push("a network mode that gives the agent a network namespace of its own (none, proxy)".into());
        } else {
            fixes.push(
                "a host where user namespaces are allowed (the mount plan and namespaces then enforce it)".into(),
            );
        }
    }
    format!(
        "this kernel's Landlock ABI is {} and nothing else enforces {} at this launch; run it on {}",
        kernel.0,
        if names.is_empty() { "the bundle's minimum".to_owned() } else { names.join(", ") },
        fixes.join(", or on ")
    )
}

/// What a kernel of ABI `kernel` costs a launch, one phrase per missing ABI level (for
/// `aegis-exec doctor`).
pub fn costs(kernel: Abi) -> Vec<String> {
    let all: [(u32, &str); 6] = [
        (2, "`refer` (ABI 2): renames and links into another directory fail (EXDEV), a stricter reading"),
        (3, "`truncate` (ABI 3): enforced by the mount plan where the launch has a mount namespace; without one such bundles are refused"),
        (4, "TCP rules (ABI 4): enforced by the agent's own network namespace where it has one; root's host mode (the host's namespace) is refused"),
        (5, "`ioctl_dev` (ABI 5): not used by AEGIS"),
        (6, "scopes (ABI 6): enforced by the agent's own network and pid namespaces where it has them; root's host mode (the host's abstract UNIX sockets) and the mode without namespaces are refused"),
        (7, "audit flags (ABI 7): the kernel does not log the agent's Landlock denials"),
    ];
    all.iter()
        .filter(|(abi, _)| kernel.0 < *abi)
        .map(|(_, s)| (*s).to_string())
        .collect()
}
