//! The typed intermediate representation of a policy: the single source of truth that the
//! reference evaluator answers from and every kernel target is lowered from.
//!
//! Input: built by the compiler's `lower` from a composed syntax tree, after every value was
//! checked, or read back from a bundle's `policy.ir.json`. Either way it reaches a consumer
//! only as a [`Checked`] policy ([`checked`] verifies the invariants below). Output: consumed
//! by the evaluator (`eval`), lints, `inspect`, `diff`, the target lowerings (`emit`), the
//! proxy and the supervisor. Serialised as `policy.ir.json` in bundles.
//!
//! # Semantics
//! * **Default deny.** Anything not granted is refused: no file, executable, endpoint, API
//!   call or system call outside the grants below.
//! * **Filesystem.** Every rule names a subtree ([`path::PathPattern`]). `Read` grants
//!   reading files and listing directories; `Write` grants `Read` plus creating, changing,
//!   renaming and removing entries; `Exec` grants executing files (and reading them, since
//!   the kernel reads what it executes); `Deny` refuses all access and **beats every grant**,
//!   wherever the two subtrees overlap. A few **built-in** rules (origin `None`) are part of
//!   every policy because every sandbox provides them: a private `/tmp` (write), `/dev/null`
//!   (write), the random and zero devices (read), the agent's own `/proc` (read), and, when
//!   anything is executable, the dynamic loader (exec), without which no dynamic binary
//!   starts. A `Read` rule strictly inside a `Write` rule is a **read-only carve-out**:
//!   whether a path may be written is decided by the most specific `Read` or `Write` rule
//!   covering it (at equal depth `Write` wins). **Built-in protections** (`protection`
//!   set, origin `None`) are such carve-outs below every user write grant, one per entry of
//!   the protection list (`lower::protect`), unless the policy turns them off
//!   ([`Protection`]).
//! * **Network.** Mode `None`: loopback only. `Proxy`: the agent reaches only the AEGIS proxy,
//!   which admits the allowed endpoints and API hosts. `Host`: the host network, filtered to
//!   the allowed endpoints (names resolved at launch) and DNS to `dns` resolvers. `deny`
//!   endpoints beat `allow`. API hosts are implicitly allowed endpoints (TCP, their port).
//!   Pathname **unix sockets** are a network grant of their own (`unix`), in every mode: a
//!   filesystem grant makes a socket file visible, never connectable; a filesystem `deny`
//!   beats a `unix` grant. Built in: the private `/tmp`, where only the agent's own sockets
//!   can be. Abstract unix sockets are not paths (Landlock scopes them).
//! * **APIs.** A call is allowed if an `allow` rule matches the canonical request and no `deny`
//!   rule does; a scope is allowed if listed.
//! * **Resources.** Absent limits are not enforced (a lint says so). Swap is always 0.
//! * **Syscalls.** The base set, then `allow`, `deny`, `log`, `kill` adjustments (a name may be
//!   in one list only). Hardening that follows from the rest of the policy (no network → no
//!   INET sockets, ...) is added by the seccomp lowering, not here.
//!
//! # Invariants
//! Collections are sorted and free of duplicates (same input, same IR, same bytes); every
//! user rule keeps the [`Origin`] of the text that produced it; paths are normalised; units
//! are resolved to bytes, milliseconds and millicores.

pub mod api;
pub mod checked;
pub mod forward;
pub mod net;
pub mod path;
pub mod units;

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::source::Origin;
pub use api::HttpRule;
pub use checked::{Checked, Violation};
pub use net::{Cidr, Destination, PortRange, Protocol};
pub use path::PathPattern;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Policy {
    /// Names of the files the policy was composed from; `Origin::file` indexes this list.
    pub sources: Vec<String>,
    pub agent: Agent,
    pub parameters: BTreeMap<String, Parameter>,
    pub filesystem: Filesystem,
    pub network: Network,
    pub apis: BTreeMap<String, Api>,
    pub resources: Resources,
    pub syscalls: Syscalls,
    pub enforcement: Enforcement,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    pub description: Option<String>,
    pub command: Option<Vec<String>>,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Parameter {
    pub description: String,
    pub origin: Option<Origin>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsAccess {
    Read,
    Write,
    Exec,
    Deny,
}

impl FsAccess {
    pub fn word(self) -> &'static str {
        match self {
            FsAccess::Read => "read",
            FsAccess::Write => "write",
            FsAccess::Exec => "exec",
            FsAccess::Deny => "deny",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FsRule {
    pub access: FsAccess,
    pub path: PathPattern,
    /// `None` for built-in rules.
    pub origin: Option<Origin>,
    /// Why a built-in rule exists (empty for user rules).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub note: std::borrow::Cow<'static, str>,
    /// A built-in protection (a read-only carve-out from the protection list below a write
    /// grant; origin `None`), as opposed to the sandbox's own built-ins.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protection: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Filesystem {
    /// Sorted by (access, path); no two rules have the same access and path.
    pub rules: Vec<FsRule>,
    /// Size of the private /tmp, bytes.
    pub tmp_size: u64,
    /// The built-in protection list's settings (its rules are in `rules`).
    #[serde(default)]
    pub protection: Protection,
}

/// `[filesystem] protect` and `unprotect`: how the policy opts out of built-in protections.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Protection {
    /// False when the policy says `protect = false` (no built-in protection at all).
    pub enabled: bool,
    /// Where `protect` is written (`None`: the default, on).
    pub origin: Option<Origin>,
    /// Protections turned off one by one: every built-in protection these cover.
    pub unprotect: Vec<Unprotect>,
}

impl Default for Protection {
    fn default() -> Self {
        Protection { enabled: true, origin: None, unprotect: Vec::new() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unprotect {
    pub path: PathPattern,
    pub origin: Option<Origin>,
}

impl Filesystem {
    pub fn rules_of(&self, access: FsAccess) -> impl Iterator<Item = &FsRule> {
        self.rules.iter().filter(move |r| r.access == access)
    }
}

/// One enum for the policy, the manifest and the runtime: the bundle contract's.
pub use aegis_targets::bundle::contract::NetworkMode;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointSource {
    Network,
    /// Implied by `[api.NAME]`.
    Api(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    pub destination: Destination,
    /// Sorted, non-overlapping.
    pub ports: Vec<PortRange>,
    pub protocol: Protocol,
    pub source: EndpointSource,
    /// The programs that may use this endpoint (empty: every program of the agent); only the
    /// proxy can tell, so only `proxy` mode has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exe: Vec<PathPattern>,
    pub origin: Option<Origin>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = match &self.destination {
            Destination::Network(c) if c.addr.is_ipv6() => format!("[{c}]"),
            d => d.to_string(),
        };
        let ports: Vec<String> = self.ports.iter().map(ToString::to_string).collect();
        let ports = if ports.len() == 1 { ports.concat() } else { format!("{{{}}}", ports.join(",")) };
        write!(f, "{host}:{ports}/{}", self.protocol)?;
        if !self.exe.is_empty() {
            let exe: Vec<String> = self.exe.iter().map(ToString::to_string).collect();
            write!(f, " for {}", exe.join(", "))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Resolver {
    pub address: IpAddr,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub mode: NetworkMode,
    pub mode_origin: Option<Origin>,
    /// Sorted; includes endpoints implied by APIs.
    pub allow: Vec<Endpoint>,
    pub deny: Vec<Endpoint>,
    pub dns: Vec<Resolver>,
    /// Pathname unix sockets the agent may connect to (`[network] unix`), in every mode;
    /// sorted by path, one entry per path; includes the built-in private `/tmp` (origin
    /// `None`), which a user grant of the same path replaces.
    #[serde(default)]
    pub unix: Vec<UnixGrant>,
}

/// A grant to `connect` (or `sendto`) to pathname unix sockets: the socket file at `path`
/// or anywhere below it, as the agent sees the path (symlinks resolved).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnixGrant {
    pub path: PathPattern,
    /// `None` for the built-in grant.
    pub origin: Option<Origin>,
    /// Why a built-in grant exists (empty for user grants).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub note: std::borrow::Cow<'static, str>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Scope {
    pub name: String,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HttpRuleEntry {
    pub rule: HttpRule,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    Env(String),
    File(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credential {
    pub header: String,
    pub prefix: String,
    pub source: SecretSource,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Api {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub scopes: Vec<Scope>,
    pub allow: Vec<HttpRuleEntry>,
    pub deny: Vec<HttpRuleEntry>,
    pub credential: Option<Credential>,
    /// The programs that may use this API (empty: every program of the agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exe: Vec<PathPattern>,
    pub origin: Option<Origin>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit<T> {
    pub value: T,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: Option<Limit<u64>>,
    pub pids: Option<Limit<u64>>,
    /// Thousandths of a CPU core.
    pub cpu_millicores: Option<Limit<u64>>,
    pub cpu_weight: Option<Limit<u64>>,
    pub io_weight: Option<Limit<u64>>,
    pub wall_time_ms: Option<Limit<u64>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SyscallBase {
    /// AEGIS' default set (Docker's default profile minus what AEGIS hardens).
    Default,
    /// An OCI/Docker seccomp profile; `path` as written, `resolved` relative to the policy.
    Oci { path: String, resolved: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "errno")]
pub enum SyscallAction {
    Allow,
    /// Refused with this errno.
    Deny(u16),
    /// Allowed and logged by the kernel.
    Log,
    /// Kills the agent.
    Kill,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SyscallRule {
    pub name: String,
    pub action: SyscallAction,
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Syscalls {
    pub base: SyscallBase,
    /// Sorted by name; one rule per name.
    pub rules: Vec<SyscallRule>,
    pub default_errno: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    Namespaces,
    /// The mount plan (`mounts.json`): read-only binds, masks, private `/tmp`, minimal
    /// `/dev`, fresh `/proc`. Needs a mount namespace, so a host without user namespaces can
    /// run the agent only when both `namespaces` and `mounts` are best-effort.
    Mounts,
    Cgroup,
    Nftables,
    Landlock,
    Seccomp,
}

impl Layer {
    pub const ALL: [Layer; 6] =
        [Layer::Namespaces, Layer::Mounts, Layer::Cgroup, Layer::Nftables, Layer::Landlock, Layer::Seccomp];
    pub fn word(self) -> &'static str {
        match self {
            Layer::Namespaces => "namespaces",
            Layer::Mounts => "mounts",
            Layer::Cgroup => "cgroup",
            Layer::Nftables => "nftables",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
        }
    }
    pub fn from_word(w: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.word() == w)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Required,
    BestEffort,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Enforcement {
    /// Every layer has an entry (default `Required`).
    pub layers: BTreeMap<Layer, Level>,
    pub min_landlock_abi: Option<u8>,
}

impl Enforcement {
    pub fn level(&self, layer: Layer) -> Level {
        self.layers.get(&layer).copied().unwrap_or(Level::Required)
    }
}

impl Policy {
    /// The IR as canonical JSON, with source locations (for `policy.ir.json` and snapshots).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// SHA-256 of the IR's meaning: the canonical JSON without source locations, so
    /// reformatting or moving lines in a policy does not change it.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        let mut v = self.to_json();
        strip_locations(&mut v);
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    }
}

fn strip_locations(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("origin");
            m.remove("mode_origin");
            m.remove("sources");
            for x in m.values_mut() {
                strip_locations(x);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_locations),
        _ => {}
    }
}
