//! The `mounts.json` artifact: the sandbox's root filesystem layout.
//!
//! Input: entries (a target path template and what to mount there), built by
//! [`super::plan_from_rules`]. Output: canonical JSON and a text twin. Invariants checked by
//! [`MountPlan::validate`]: the format tag matches, entries are sorted by target with one
//! entry per target. Every bind mounts the host path of the same name (the sandbox sees
//! host paths at their host locations, so Landlock rules and mounts agree on paths).

use crate::landlock::PathTemplate;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Format tag stored in every `mounts.json`.
pub const FORMAT: &str = "aegis.mounts/1";

/// The new root's layout. Entries apply parent before child after parameters are filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountPlan {
    pub format: String,
    /// Sorted by target, one per target.
    pub entries: Vec<MountEntry>,
    /// Set `vm.memfd_noexec = 2` in the sandbox's pid namespace (after `/proc` is mounted):
    /// memfds can then never be executed, which Landlock and `noexec` cannot stop.
    pub memfd_noexec: bool,
}

/// One mount of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountEntry {
    pub target: PathTemplate,
    pub kind: MountKind,
    /// Policy rules this entry serves, sorted.
    pub origin: BTreeSet<String>,
}

/// What is mounted at a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum MountKind {
    /// Recursive bind of the host path of the same name; always `nosuid,nodev`, read-only
    /// unless `writable`, `noexec` unless `exec`.
    Bind { writable: bool, exec: bool },
    /// A denied path: an empty, mode-000, read-only directory or file bound over it.
    Mask,
    /// A private tmpfs (`nosuid,nodev`, `noexec` unless `exec`), mode 1777, bounded size.
    Tmpfs { size_bytes: u64, exec: bool },
    /// A fresh procfs of the sandbox's pid namespace (`nosuid,nodev,noexec`).
    Proc,
    /// A minimal `/dev` tmpfs: null zero full random urandom tty bound from the host,
    /// fd/stdin/stdout/stderr symlinks, a private devpts (`pts`, `ptmx`) and an `shm` tmpfs.
    Dev { shm_size_bytes: u64 },
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("mounts.json is not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("mounts.json has format `{0}`, expected `{FORMAT}`")]
    Format(String),
    #[error("mounts.json entries are not sorted with unique targets (at `{0}`)")]
    NotCanonical(String),
}

impl Default for MountPlan {
    fn default() -> Self {
        Self {
            format: FORMAT.to_owned(),
            entries: Vec::new(),
            memfd_noexec: true,
        }
    }
}

impl MountPlan {
    /// Sorts entries by target and merges entries with the same target: a mask wins; two
    /// binds give the union of writability and exec; otherwise the later kind in `MountKind`
    /// order wins (deterministic).
    pub fn normalize(&mut self) {
        let mut by: BTreeMap<PathTemplate, MountEntry> = BTreeMap::new();
        for e in self.entries.drain(..) {
            match by.get_mut(&e.target) {
                None => {
                    by.insert(e.target.clone(), e);
                }
                Some(cur) => {
                    cur.kind = merge(cur.kind, e.kind);
                    cur.origin.extend(e.origin);
                }
            }
        }
        self.entries = by.into_values().collect();
    }

    /// Launch parameters the plan needs (for the bundle manifest).
    pub fn params(&self) -> BTreeSet<String> {
        crate::landlock::template::required_params(self.entries.iter().map(|e| &e.target))
    }

    /// Checks the invariants listed in the module docs.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.format != FORMAT {
            return Err(PlanError::Format(self.format.clone()));
        }
        for w in self.entries.windows(2) {
            if let [a, b] = w
                && a.target >= b.target
            {
                return Err(PlanError::NotCanonical(b.target.to_string()));
            }
        }
        Ok(())
    }

    /// Parses and validates `mounts.json`.
    pub fn from_json(text: &str) -> Result<Self, PlanError> {
        let p: Self = serde_json::from_str(text)?;
        p.validate()?;
        Ok(p)
    }

    /// Canonical JSON (pretty, sorted, final newline); refuses a plan that does not validate.
    pub fn to_json(&self) -> Result<String, PlanError> {
        self.validate()?;
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// The human-readable twin of `mounts.json`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Mount plan ({}): new root, parent before child",
            self.format
        );
        for e in &self.entries {
            let what = match e.kind {
                MountKind::Bind { writable, exec } => format!(
                    "bind  {} nosuid nodev{}",
                    if writable { "rw" } else { "ro" },
                    if exec { "" } else { " noexec" }
                ),
                MountKind::Mask => "mask  empty, mode 000, ro (denied)".to_owned(),
                MountKind::Tmpfs { size_bytes, exec } => format!(
                    "tmpfs size={size_bytes} mode=1777 nosuid nodev{}",
                    if exec { "" } else { " noexec" }
                ),
                MountKind::Proc => "proc  fresh, nosuid nodev noexec".to_owned(),
                MountKind::Dev { shm_size_bytes } => format!(
                    "dev   minimal: null zero full random urandom tty, pts, shm size={shm_size_bytes}"
                ),
            };
            let origin: Vec<&str> = e.origin.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "{:<40} {what}\n{:<40}   from: {}",
                e.target.to_string(),
                "",
                origin.join(", ")
            );
        }
        let _ = writeln!(
            out,
            "memfd exec: {}",
            if self.memfd_noexec {
                "refused (vm.memfd_noexec=2 in the sandbox pid namespace)"
            } else {
                "not restricted here"
            }
        );
        out
    }
}

fn merge(a: MountKind, b: MountKind) -> MountKind {
    match (a, b) {
        (MountKind::Mask, _) | (_, MountKind::Mask) => MountKind::Mask,
        (
            MountKind::Bind {
                writable: w1,
                exec: e1,
            },
            MountKind::Bind {
                writable: w2,
                exec: e2,
            },
        ) => MountKind::Bind {
            writable: w1 || w2,
            exec: e1 || e2,
        },
        (a, b) => a.max(b),
    }
}
