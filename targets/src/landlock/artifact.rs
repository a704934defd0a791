//! The `landlock.json` artifact: a Landlock ruleset with path templates, ready to apply.
//!
//! Input: the fields below, filled by the fs lowering ([`super::lower_fs`]) and by the
//! compiler (network ports, scopes, audit flags). Output: canonical JSON (`to_json`, same
//! value → same bytes) and a text twin (`render_text`) for review. Invariants checked by
//! [`LandlockArtifact::validate`] (and so by `from_json` and `to_json`): the format tag
//! matches, every granted right is handled, rules are sorted with unique keys,
//! `min_abi` equals the ABI computed from the handled rights, scopes and flags, and every
//! recorded fallback is for a handled item that the fallback can enforce
//! ([`super::compat::allowed`]).

use super::compat::{Fallback, Fallbacks, InForce, Item, Missing, allowed};
use super::rights::{Abi, FsRight, NetRight, RestrictFlag, Scope, min_abi};
use super::template::PathTemplate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Format tag stored in every `landlock.json`.
pub const FORMAT: &str = "aegis.landlock/1";

/// A Landlock ruleset as stored in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockArtifact {
    /// Always [`FORMAT`].
    pub format: String,
    /// Lowest kernel ABI that can enforce everything below.
    pub min_abi: Abi,
    /// Filesystem rights the ruleset handles: denied unless a path rule grants them.
    pub handled_fs: BTreeSet<FsRight>,
    /// TCP rights the ruleset handles: denied unless a port rule grants them.
    pub handled_net: BTreeSet<NetRight>,
    /// IPC scopes (abstract UNIX sockets, signals) confined to the sandbox.
    pub scopes: BTreeSet<Scope>,
    /// `landlock_restrict_self` flags (audit logging).
    pub restrict_flags: BTreeSet<RestrictFlag>,
    /// Path-beneath rules, sorted by path, one per path.
    pub path_rules: Vec<PathRule>,
    /// Denied paths (and everything beneath). Outside every allowed tree they are denied by
    /// default; inside one they are masked by the mount plan or split at launch.
    pub denies: Vec<DenyRule>,
    /// Read-only carve-outs inside write trees (a read grant or built-in protection deeper
    /// than the write grant around it), sorted by path. Each also has a path rule (reading);
    /// writing is kept out by the mount plan (a read-only bind, its ancestors pinned) or by
    /// splitting the write tree at launch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_only: Vec<ReadOnlyRule>,
    /// TCP port rules, sorted by port, one per port.
    pub net_rules: Vec<NetRule>,
    /// Handled items another layer enforces on a kernel whose ABI lacks them (set by the
    /// compiler; see [`super::compat`]). `min_abi` still says what Landlock alone needs.
    #[serde(default, skip_serializing_if = "Fallbacks::is_empty")]
    pub fallbacks: Fallbacks,
}

/// Keeps writing out of `path` (and everything beneath) inside a write tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyRule {
    pub path: PathTemplate,
    pub origin: BTreeSet<String>,
}

/// Grants `access` on `path` and everything beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathRule {
    pub path: PathTemplate,
    pub access: BTreeSet<FsRight>,
    /// Policy rules this came from (for reports), sorted.
    pub origin: BTreeSet<String>,
}

/// Denies all access to `path` and everything beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    pub path: PathTemplate,
    pub origin: BTreeSet<String>,
}

/// Grants `access` (bind and/or connect) on one TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetRule {
    pub port: u16,
    pub access: BTreeSet<NetRight>,
}

/// Why an artifact was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("landlock.json is not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("landlock.json has format `{0}`, expected `{FORMAT}`")]
    Format(String),
    #[error("landlock.json declares minimum ABI {declared} but its contents need {computed}")]
    AbiMismatch { declared: Abi, computed: Abi },
    #[error("landlock.json rule for `{path}` grants `{right}`, which the ruleset does not handle")]
    UnhandledRight { path: String, right: String },
    #[error("landlock.json rules are not sorted with unique keys (at `{0}`)")]
    NotCanonical(String),
    #[error("landlock.json names fallback `{fallback}` for `{item}`, which {why}")]
    BadFallback {
        item: String,
        fallback: Fallback,
        why: &'static str,
    },
}

impl Default for LandlockArtifact {
    fn default() -> Self {
        Self {
            format: FORMAT.to_owned(),
            min_abi: Abi(1),
            handled_fs: BTreeSet::new(),
            handled_net: BTreeSet::new(),
            scopes: BTreeSet::new(),
            restrict_flags: BTreeSet::new(),
            path_rules: Vec::new(),
            denies: Vec::new(),
            read_only: Vec::new(),
            net_rules: Vec::new(),
            fallbacks: Fallbacks::default(),
        }
    }
}

impl LandlockArtifact {
    /// The ABI needed by the handled rights, scopes and flags (what `min_abi` must say).
    pub fn required_abi(&self) -> Abi {
        min_abi(
            self.handled_fs
                .iter()
                .map(|r| r.since())
                .chain(self.handled_net.iter().map(|r| r.since()))
                .chain(self.scopes.iter().map(|s| s.since()))
                .chain(self.restrict_flags.iter().map(|f| f.since())),
        )
    }

    /// Every handled item (fs rights, TCP rights, scopes).
    pub fn items(&self) -> impl Iterator<Item = Item> + '_ {
        self.handled_fs
            .iter()
            .map(|r| Item::Fs(*r))
            .chain(self.handled_net.iter().map(|r| Item::Net(*r)))
            .chain(self.scopes.iter().map(|s| Item::Scope(*s)))
    }

    /// The recorded fallback of a handled item.
    pub fn fallback(&self, item: Item) -> Option<Fallback> {
        match item {
            Item::Fs(r) => self.fallbacks.fs.get(&r).copied(),
            Item::Net(r) => self.fallbacks.net.get(&r).copied(),
            Item::Scope(s) => self.fallbacks.scopes.get(&s).copied(),
        }
    }

    /// The ABI a launch needs when the layers `in_force` are in force: items whose
    /// fallback they provide do not count; restrict flags always do.
    pub fn needed_abi(&self, in_force: InForce) -> Abi {
        min_abi(
            self.items()
                .filter(|i| !self.fallback(*i).is_some_and(|f| in_force.provides(f)))
                .map(Item::since)
                .chain(self.restrict_flags.iter().map(|f| f.since())),
        )
    }

    /// Makes TCP to `port` the only TCP the ruleset allows, and binds none: how the proxy on
    /// a host loopback port stays the agent's only way out without a network namespace.
    /// Needs ABI 4 (TCP rights; `min_abi` says so). Landlock tells TCP destinations apart by
    /// port, not address: that port number on another host is reachable too.
    pub fn only_tcp_to(&mut self, port: u16) {
        self.handled_net = [NetRight::BindTcp, NetRight::ConnectTcp].into_iter().collect();
        self.net_rules = vec![NetRule { port, access: [NetRight::ConnectTcp].into_iter().collect() }];
        self.min_abi = self.min_abi.max(NetRight::ConnectTcp.since());
    }

    /// The lowest ABI any host can run this ruleset on (every fallback in force).
    pub fn floor_abi(&self) -> Abi {
        self.needed_abi(InForce::EVERYTHING)
    }

    /// The handled items `kernel` lacks, each with the fallback in force (if any).
    pub fn missing(&self, kernel: Abi, in_force: InForce) -> Vec<Missing> {
        self.items()
            .filter(|i| i.since() > kernel)
            .map(|item| Missing {
                item,
                by: self.fallback(item).filter(|f| in_force.provides(*f)),
            })
            .collect()
    }

    /// Launch parameters the artifact needs (for the bundle manifest).
    pub fn params(&self) -> BTreeSet<String> {
        super::template::required_params(
            self.path_rules
                .iter()
                .map(|r| &r.path)
                .chain(self.denies.iter().map(|d| &d.path)),
        )
    }

    /// Merges rules with the same key, sorts them, and recomputes `min_abi`. Call after
    /// editing the fields by hand.
    pub fn normalize(&mut self) {
        let mut paths: BTreeMap<PathTemplate, PathRule> = BTreeMap::new();
        for r in self.path_rules.drain(..) {
            let e = paths.entry(r.path.clone()).or_insert_with(|| PathRule {
                path: r.path.clone(),
                access: BTreeSet::new(),
                origin: BTreeSet::new(),
            });
            e.access.extend(r.access);
            e.origin.extend(r.origin);
        }
        self.path_rules = paths.into_values().collect();
        let mut denies: BTreeMap<PathTemplate, DenyRule> = BTreeMap::new();
        for d in self.denies.drain(..) {
            denies
                .entry(d.path.clone())
                .or_insert_with(|| DenyRule {
                    path: d.path.clone(),
                    origin: BTreeSet::new(),
                })
                .origin
                .extend(d.origin);
        }
        self.denies = denies.into_values().collect();
        let mut read_only: BTreeMap<PathTemplate, BTreeSet<String>> = BTreeMap::new();
        for r in self.read_only.drain(..) {
            read_only.entry(r.path).or_default().extend(r.origin);
        }
        self.read_only = read_only.into_iter().map(|(path, origin)| ReadOnlyRule { path, origin }).collect();
        let mut ports: BTreeMap<u16, BTreeSet<NetRight>> = BTreeMap::new();
        for n in self.net_rules.drain(..) {
            ports.entry(n.port).or_default().extend(n.access);
        }
        self.net_rules = ports
            .into_iter()
            .map(|(port, access)| NetRule { port, access })
            .collect();
        self.min_abi = self.required_abi();
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        if self.format != FORMAT {
            return Err(ArtifactError::Format(self.format.clone()));
        }
        let computed = self.required_abi();
        if computed != self.min_abi {
            return Err(ArtifactError::AbiMismatch {
                declared: self.min_abi,
                computed,
            });
        }
        for w in self.path_rules.windows(2) {
            if let [a, b] = w
                && a.path >= b.path
            {
                return Err(ArtifactError::NotCanonical(b.path.to_string()));
            }
        }
        for w in self.denies.windows(2) {
            if let [a, b] = w
                && a.path >= b.path
            {
                return Err(ArtifactError::NotCanonical(b.path.to_string()));
            }
        }
        for w in self.read_only.windows(2) {
            if let [a, b] = w
                && a.path >= b.path
            {
                return Err(ArtifactError::NotCanonical(b.path.to_string()));
            }
        }
        for w in self.net_rules.windows(2) {
            if let [a, b] = w
                && a.port >= b.port
            {
                return Err(ArtifactError::NotCanonical(format!("port {}", b.port)));
            }
        }
        for r in &self.path_rules {
            if let Some(right) = r.access.iter().find(|a| !self.handled_fs.contains(a)) {
                return Err(ArtifactError::UnhandledRight {
                    path: r.path.to_string(),
                    right: right.to_string(),
                });
            }
        }
        for n in &self.net_rules {
            if let Some(right) = n.access.iter().find(|a| !self.handled_net.contains(a)) {
                return Err(ArtifactError::UnhandledRight {
                    path: format!("tcp port {}", n.port),
                    right: right.to_string(),
                });
            }
        }
        let recorded = (self.fallbacks.fs.iter().map(|(r, f)| (Item::Fs(*r), *f)))
            .chain(self.fallbacks.net.iter().map(|(r, f)| (Item::Net(*r), *f)))
            .chain(self.fallbacks.scopes.iter().map(|(s, f)| (Item::Scope(*s), *f)));
        for (item, fallback) in recorded {
            let bad = |why| ArtifactError::BadFallback {
                item: item.to_string(),
                fallback,
                why,
            };
            if !self.items().any(|i| i == item) {
                return Err(bad("the ruleset does not handle"));
            }
            if allowed(item) != Some(fallback) {
                return Err(bad("cannot enforce it"));
            }
        }
        Ok(())
    }

    /// Parses and validates `landlock.json`.
    pub fn from_json(text: &str) -> Result<Self, ArtifactError> {
        let a: Self = serde_json::from_str(text)?;
        a.validate()?;
        Ok(a)
    }

    /// Canonical JSON: pretty-printed, fields in declaration order, sets sorted, final
    /// newline. Refuses an artifact that does not validate.
    pub fn to_json(&self) -> Result<String, ArtifactError> {
        self.validate()?;
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// The human-readable twin of `landlock.json`.
    pub fn render_text(&self) -> String {
        fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
            let v: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
            if v.is_empty() {
                "(none)".to_owned()
            } else {
                v.join(" ")
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Landlock ruleset ({}), minimum ABI {}",
            self.format, self.min_abi
        );
        let _ = writeln!(out, "handled fs:     {}", list(&self.handled_fs));
        let _ = writeln!(out, "handled net:    {}", list(&self.handled_net));
        let _ = writeln!(out, "scopes:         {}", list(&self.scopes));
        let _ = writeln!(out, "restrict flags: {}", list(&self.restrict_flags));
        let _ = writeln!(out, "\nallow (path and everything beneath):");
        for r in &self.path_rules {
            let _ = writeln!(
                out,
                "  {}\n      {}\n      from: {}",
                r.path,
                list(&r.access),
                list(&r.origin)
            );
        }
        if self.path_rules.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        let _ = writeln!(
            out,
            "\ndeny (masked by the mount plan, or split at launch without one):"
        );
        for d in &self.denies {
            let _ = writeln!(out, "  {}\n      from: {}", d.path, list(&d.origin));
        }
        if self.denies.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        if !self.read_only.is_empty() {
            let _ = writeln!(
                out,
                "\nread-only inside write trees (read-only binds with pinned ancestors, or split at launch without them):"
            );
            for r in &self.read_only {
                let _ = writeln!(out, "  {}\n      from: {}", r.path, list(&r.origin));
            }
        }
        let _ = writeln!(out, "\ntcp ports:");
        for n in &self.net_rules {
            let _ = writeln!(out, "  {:>5}  {}", n.port, list(&n.access));
        }
        if self.net_rules.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        let _ = writeln!(
            out,
            "\nolder kernels: Landlock alone needs {}; with every fallback in force {}",
            self.min_abi,
            self.floor_abi()
        );
        for item in self.items() {
            if let Some(f) = self.fallback(item) {
                let _ = writeln!(out, "  {:<28} {}  fallback: {f}", item.to_string(), item.since());
            }
        }
        out
    }
}
