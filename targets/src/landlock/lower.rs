//! Lowering of the policy's filesystem rules into a [`LandlockArtifact`].
//!
//! Input: [`FsRule`]s (a path template, an access kind, the policy rule it came from).
//! Output: the artifact (grants merged per path, denies kept as templates) and the
//! compile-time [`Loss`]es. Invariants: deny beats allow — a grant lexically inside a denied
//! tree is dropped (and reported); a deny inside an allowed tree is kept in `denies`, and
//! enforced at launch by the mount plan's mask (with a mount namespace) or by splitting the
//! allowed tree ([`super::apply()`] when [`super::InForce::mount_plan`] is false); both are exact
//! for the paths that exist at launch, and their residual gaps are listed as losses here.

use super::artifact::{DenyRule, LandlockArtifact, PathRule, ReadOnlyRule};
use super::rights::{GrantKind, handled_fs_default, rights_for};
use super::template::PathTemplate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The access a policy rule gives to a path and everything beneath it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsAccess {
    Read,
    /// Implies read.
    Write,
    /// Execute files; implies read of them.
    Exec,
    /// No access at all; beats any allow, also above it.
    Deny,
}

/// One filesystem rule of the policy, as the compiler hands it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsRule {
    pub path: PathTemplate,
    pub access: FsAccess,
    /// Where the rule came from (`fs.write[0]`, `policy.toml:12`, `implicit: dynamic loader`).
    pub origin: String,
}

/// Something the kernel mechanisms cannot enforce exactly as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Loss {
    /// The policy rule concerned (its origin).
    pub rule: String,
    /// What is enforced differently, in words.
    pub what: String,
    /// True when the enforced reading is stricter than the policy (a possible false denial);
    /// false when it is weaker (a gap an attacker could use).
    pub stricter_reading: bool,
}

/// The artifact and the compile-time losses of the fs lowering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsLowering {
    pub artifact: LandlockArtifact,
    pub losses: Vec<Loss>,
}

fn kind(access: FsAccess) -> Option<GrantKind> {
    match access {
        FsAccess::Read => Some(GrantKind::Read),
        FsAccess::Write => Some(GrantKind::Write),
        FsAccess::Exec => Some(GrantKind::Exec),
        FsAccess::Deny => None,
    }
}

/// Which paths the rules make writable. A read rule strictly inside a write rule is a
/// read-only carve-out: the most specific read or write rule covering a path decides, and at
/// equal depth write wins (exec and deny rules do not count here; denies beat everything and
/// are handled on their own). Lookups walk a path's ancestors in a map: linear in the rules.
pub struct Writability<'r> {
    by_path: std::collections::BTreeMap<&'r PathTemplate, (bool, bool)>,
}

impl<'r> Writability<'r> {
    pub fn new(rules: &'r [FsRule]) -> Self {
        let mut by_path: std::collections::BTreeMap<&PathTemplate, (bool, bool)> = std::collections::BTreeMap::new();
        for r in rules {
            let slot = by_path.entry(&r.path).or_default();
            match r.access {
                FsAccess::Read => slot.0 = true,
                FsAccess::Write => slot.1 = true,
                FsAccess::Exec | FsAccess::Deny => {}
            }
        }
        by_path.retain(|_, (read, write)| *read || *write);
        Self { by_path }
    }

    /// The most specific read or write rule path covering `path`, and whether it writes.
    fn deciding(&self, path: &PathTemplate) -> Option<(PathTemplate, bool)> {
        path.ancestors().find_map(|a| self.by_path.get(&a).map(|(_, w)| (a.clone(), *w)))
    }

    /// Whether `path` may be written (a write rule decides it).
    pub fn writable(&self, path: &PathTemplate) -> bool {
        self.deciding(path).is_some_and(|(_, w)| w)
    }

    /// For a read rule at `path`: the write rule it is carved out of, if it is a carve-out
    /// (the most specific rule strictly above it is a write and none at `path` writes).
    pub fn carved_from(&self, path: &PathTemplate) -> Option<PathTemplate> {
        if self.writable(path) {
            return None;
        }
        path.ancestors().skip(1).find_map(|a| self.by_path.get(&a).map(|(_, w)| (a.clone(), *w))).filter(|(_, w)| *w).map(|(a, _)| a)
    }
}

/// Lowers fs rules; network ports, scopes and flags are set on the result by the caller
/// (then call [`LandlockArtifact::normalize`]).
pub fn lower_fs(rules: &[FsRule]) -> FsLowering {
    let mut artifact = LandlockArtifact {
        handled_fs: handled_fs_default(),
        ..Default::default()
    };
    let mut losses = BTreeSet::new();
    let denies: Vec<&FsRule> = rules
        .iter()
        .filter(|r| r.access == FsAccess::Deny)
        .collect();
    for d in &denies {
        artifact.denies.push(DenyRule {
            path: d.path.clone(),
            origin: BTreeSet::from([d.origin.clone()]),
        });
        losses.insert(Loss {
            rule: d.origin.clone(),
            what: format!(
                "`{}` is denied by path: a hard link to a denied file that already exists \
                 elsewhere in an allowed tree reaches the same file (Landlock checks paths and \
                 masks hide paths); new hard links cannot be made (masked or no rights, and \
                 writable trees are separate mounts: EXDEV). The launch reports denied files \
                 with more than one link",
                d.path
            ),
            stricter_reading: false,
        });
    }
    // Denies by path (with their position, so the first one in rule order is reported):
    // "r inside a deny" is a lookup of r's ancestors, "a deny inside r" a range scan from r
    // (templates sort parent before children, so r's subtree is one contiguous range).
    // Linear in the rules, where a scan of every deny per rule made 10,000-rule policies slow.
    let mut deny_index: std::collections::BTreeMap<&PathTemplate, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, d) in denies.iter().enumerate() {
        deny_index.entry(&d.path).or_default().push(i);
    }
    let writability = Writability::new(rules);
    let mut carved: std::collections::BTreeMap<PathTemplate, Vec<String>> = std::collections::BTreeMap::new();
    for r in rules {
        let Some(k) = kind(r.access) else { continue };
        let enclosing = r
            .path
            .ancestors()
            .filter_map(|a| deny_index.get(&a).and_then(|v| v.first().copied()))
            .min()
            .and_then(|i| denies.get(i));
        if let Some(d) = enclosing {
            losses.insert(Loss {
                rule: r.origin.clone(),
                what: format!(
                    "`{}` lies inside denied `{}` ({}): deny beats allow, the grant is void",
                    r.path, d.path, d.origin
                ),
                stricter_reading: true,
            });
            continue;
        }
        let mut inside: Vec<usize> = deny_index
            .range::<&PathTemplate, _>((std::ops::Bound::Included(&r.path), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| r.path.contains(p))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        inside.sort_unstable();
        for d in inside.into_iter().filter_map(|i| denies.get(i)) {
            losses.insert(Loss {
                rule: r.origin.clone(),
                what: format!(
                    "without a mount namespace (best-effort hosts) `{}` is split around denied \
                     `{}`: the directories between them cannot be listed and entries created \
                     in them later get no access",
                    r.path, d.path
                ),
                stricter_reading: true,
            });
        }
        artifact.path_rules.push(PathRule {
            path: r.path.clone(),
            access: rights_for(k),
            origin: BTreeSet::from([r.origin.clone()]),
        });
        if r.access == FsAccess::Read
            && let Some(tree) = writability.carved_from(&r.path)
        {
            artifact.read_only.push(ReadOnlyRule { path: r.path.clone(), origin: BTreeSet::from([r.origin.clone()]) });
            carved.entry(tree).or_default().push(r.path.to_string());
        }
    }
    // One loss per write tree (the protection list alone puts dozens of carve-outs in each).
    for (tree, paths) in carved {
        let origin = rules
            .iter()
            .find(|r| r.access == FsAccess::Write && r.path == tree)
            .map(|r| r.origin.clone())
            .unwrap_or_else(|| tree.to_string());
        let below: Vec<&str> = paths.iter().map(|p| p.strip_prefix(&tree.to_string()).unwrap_or(p).trim_start_matches('/')).collect();
        losses.insert(Loss {
            rule: origin.clone(),
            what: format!(
                "without a mount namespace (best-effort hosts) `{tree}` is split around its read-only paths \
                 ({}): the directories between them can be listed and read, their entries are made by \
                 aegis-exec's file helper (except the protected names), and files created in them later \
                 are read-only",
                below.join(" ")
            ),
            stricter_reading: true,
        });
        losses.insert(Loss {
            rule: origin,
            what: format!(
                "a read-only path below `{tree}` that does not exist at launch has nothing to mount on: the \
                 directory that would hold its first missing component refuses new entries to the agent, \
                 which aegis-exec's file helper makes for it (seccomp user notification, each such call \
                 costs a round trip to the supervisor) except that name; without the filter nothing new \
                 can be made there, and a name the host itself creates during the run is not protected"
            ),
            stricter_reading: true,
        });
    }
    artifact.normalize();
    FsLowering {
        artifact,
        losses: losses.into_iter().collect(),
    }
}

/// Rules every sandboxed process needs for the runtime's minimal `/dev` and fresh `/proc`
/// (origin `implicit: sandbox runtime`); the compiler adds them like the loader rules.
/// `/dev/ptmx` and `/dev/fd` are symlinks into `pts/` and `/proc`, covered by these.
pub fn runtime_rules() -> Vec<FsRule> {
    let rules: [(&str, FsAccess); 9] = [
        ("/dev/null", FsAccess::Write),
        ("/dev/full", FsAccess::Write),
        ("/dev/tty", FsAccess::Write),
        ("/dev/pts", FsAccess::Write),
        ("/dev/shm", FsAccess::Write),
        ("/dev/zero", FsAccess::Read),
        ("/dev/random", FsAccess::Read),
        ("/dev/urandom", FsAccess::Read),
        ("/proc", FsAccess::Read),
    ];
    rules
        .into_iter()
        .filter_map(|(p, access)| {
            PathTemplate::parse(p).ok().map(|path| FsRule {
                path,
                access,
                origin: "implicit: sandbox runtime".to_owned(),
            })
        })
        .collect()
}
