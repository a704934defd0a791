//! Splitting an allowed tree around the paths it must not fully cover, at launch.
//!
//! Input: a grant (a canonical host path and its rights) and its *holes*: denied paths,
//! read-only carve-outs that no read-only mount enforces, and denied paths that do not exist
//! yet. Output: replacement grants (one per entry beside each chain directory) and the
//! details and losses for the report. Used by [`super::apply`] when the mount plan does not
//! already enforce a hole (no mount namespace, or a path absent at launch).
//!
//! Landlock rights are the union of the rules on a path's ancestors and there is no negative
//! rule, so a hole cannot be cut out of a grant on a directory above it. Instead the grant's
//! rule is dropped and every entry beside the *chain* (the directories from the grant's root
//! down to each hole, exclusive) gets the grant's rights, while each chain directory gets
//! only what every hole below it may inherit:
//! - an existing denied path inherits nothing, so its chain gets no rule (it cannot be
//!   listed);
//! - an existing carve-out may be read, so its chain gets the carve-out's rights (read):
//!   the chain directories can be listed, files created in them later are read-only;
//! - a denied path that does not exist yet inherits nothing because it is never created:
//!   its chain directories keep everything except creating, removing and renaming entries
//!   (`make_*`, `remove_*`, `refer`), so they can be listed and the files in them read and
//!   written, while the denied name cannot be made there. The same holds for a directory
//!   created there later by a helper (mediation): it inherits the same rights.
//!
//! Invariants: work is bounded by the chain directories (only they are listed); entries
//! that are symlinks get no rule (their targets are governed where they live); a chain
//! directory's rights never exceed what any hole below it may have.

use super::lower::Loss;
use super::mediate::{Mediation, inode_of};
use super::rights::FsRight;
use super::apply::ApplyError;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// A grant resolved at launch: a canonical path and the rights its rule gives.
#[derive(Clone)]
pub(super) struct Grant {
    pub path: PathBuf,
    pub access: BTreeSet<FsRight>,
    /// Open the path following symlinks (a rule's own path) or not (a split entry).
    pub follow: bool,
    pub origin: String,
}

/// What a hole below a grant may still inherit from the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Hole {
    /// An existing denied path: nothing.
    Denied,
    /// An existing read-only carve-out with these rights (its own rule).
    ReadOnly(BTreeSet<FsRight>),
    /// A name that must stay as it is: a denied path that does not exist yet, or a symlink
    /// or file standing on the way to a protected path. Anything but making, removing or
    /// renaming entries on the way to it (so it can neither appear nor be replaced).
    Absent,
}

/// What stands on the lexical way to a protected or denied path at launch, besides the path
/// itself: each symlink (the link can be replaced, wherever its target is protected) and a
/// non-directory where a directory should be (a `.git` *file*, `gitdir: ...`, which can be
/// rewritten to point elsewhere), and the first component that does not exist. Walks the
/// path from `/`, following each symlink to continue below its target.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Way {
    /// Symlinks met on the way (their own locations).
    pub links: Vec<PathBuf>,
    /// A non-directory with more components below it in the path.
    pub blocker: Option<PathBuf>,
    /// The first component that does not exist (the path is absent from there on).
    pub missing: Option<PathBuf>,
}

pub(super) fn way(lexical: &std::path::Path) -> Way {
    let mut w = Way::default();
    let comps: Vec<_> = lexical.components().skip(1).collect();
    let mut cur = PathBuf::from("/");
    for (i, c) in comps.iter().enumerate() {
        let next = cur.join(c);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(m) => m,
            Err(_) => {
                w.missing = Some(next);
                return w;
            }
        };
        if meta.file_type().is_symlink() {
            w.links.push(next.clone());
            match std::fs::canonicalize(&next) {
                Ok(real) => cur = real,
                Err(_) => {
                    // A dangling link: what it names does not exist.
                    w.missing = Some(next);
                    return w;
                }
            }
            continue;
        }
        if !meta.is_dir() && i + 1 < comps.len() {
            w.blocker = Some(next);
            return w;
        }
        cur = next;
    }
    w
}

/// Rights that create, remove or move a directory's entries.
pub(super) const MUTATE: &[FsRight] = &[
    FsRight::MakeChar,
    FsRight::MakeDir,
    FsRight::MakeReg,
    FsRight::MakeSock,
    FsRight::MakeFifo,
    FsRight::MakeBlock,
    FsRight::MakeSym,
    FsRight::RemoveDir,
    FsRight::RemoveFile,
    FsRight::Refer,
];

impl Hole {
    fn inheritable(&self, grant: &BTreeSet<FsRight>) -> BTreeSet<FsRight> {
        match self {
            Hole::Denied => BTreeSet::new(),
            Hole::ReadOnly(own) => grant.intersection(own).copied().collect(),
            Hole::Absent => grant.iter().copied().filter(|r| !MUTATE.contains(r)).collect(),
        }
    }

    fn word(&self) -> &'static str {
        match self {
            Hole::Denied => "denied",
            Hole::ReadOnly(_) => "read-only",
            Hole::Absent => "denied (absent at launch)",
        }
    }
}

/// Replaces grant `g` by grants on the entries beside its chain directories (module docs).
/// `holes` are the paths below `g.path` (strictly) it must not fully cover, with the rule
/// behind each; `skip` are paths that get no rule of their own here (denied paths and the
/// holes' own rules). With `mediation`, chain directories that lead to no denied path (their
/// rights keep reading, and writing for absent names) are recorded for the file helper,
/// which makes, removes and renames their entries for the agent except the names on the way
/// to the holes.
pub(super) fn split(
    g: Grant,
    holes: &BTreeMap<PathBuf, (Hole, String)>,
    skip: &BTreeSet<PathBuf>,
    grants: &mut Vec<Grant>,
    details: &mut Vec<String>,
    losses: &mut Vec<Loss>,
    mut mediation: Option<&mut Mediation>,
) -> Result<(), ApplyError> {
    // Each chain directory and the rights every hole below it may inherit.
    let mut chain: BTreeMap<PathBuf, BTreeSet<FsRight>> = BTreeMap::new();
    for (hole, (kind, _)) in holes {
        let allowed = kind.inheritable(&g.access);
        let mut p = hole.parent();
        while let Some(dir) = p {
            if !dir.starts_with(&g.path) {
                break;
            }
            chain
                .entry(dir.to_path_buf())
                .and_modify(|r| *r = r.intersection(&allowed).copied().collect())
                .or_insert_with(|| allowed.clone());
            p = dir.parent();
        }
    }
    for (dir, rights) in &chain {
        // A chain directory inside another hole is that hole's business (its own rule).
        if holes.keys().any(|h| dir.starts_with(h)) || !dir.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(dir).map_err(|source| ApplyError::Path {
            what: "listing a directory to split an allowed tree",
            path: dir.clone(),
            source,
        })?;
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            if chain.contains_key(&p) || holes.contains_key(&p) || skip.contains(&p) {
                continue;
            }
            if p.symlink_metadata().map(|m| m.file_type().is_symlink()).unwrap_or(true) {
                details.push(format!("split: symlink `{}` gets no rule", p.display()));
                continue;
            }
            if let Some(m) = mediation.as_deref_mut()
                && g.access.contains(&FsRight::MakeReg)
                && let Some(i) = inode_of(&p)
            {
                m.full.insert(i);
            }
            grants.push(Grant { path: p, access: g.access.clone(), follow: false, origin: g.origin.clone() });
        }
        let below_holes: Vec<(&PathBuf, &(Hole, String))> = holes.iter().filter(|(h, _)| h.starts_with(dir)).collect();
        let below: Vec<&str> = below_holes.iter().map(|(_, (k, _))| k.word()).collect::<BTreeSet<_>>().into_iter().collect();
        // Mediated: a chain directory whose files the agent keeps (no denied path below it,
        // which would leave it no right at all): the helper makes its entries, never the
        // protected names.
        if let Some(m) = mediation.as_deref_mut()
            && !rights.is_empty()
            && below_holes.iter().all(|(_, (k, _))| *k != Hole::Denied)
        {
            for (h, (_, why)) in &below_holes {
                m.protect_on_the_way(dir, h, why);
            }
        }
        let what = if rights.is_empty() {
            "it cannot be listed or changed, and entries created in it later get no access".to_owned()
        } else if rights.iter().all(|r| matches!(r, FsRight::ReadFile | FsRight::ReadDir | FsRight::Execute)) {
            "it can be listed and read, but the agent's own calls cannot create, remove or rename its entries (aegis-exec's file helper makes them, except the protected names), and files created in it later are read-only".to_owned()
        } else {
            "its files can be read and written, but the agent's own calls cannot create, remove or rename its entries (aegis-exec's file helper makes them, except the protected names)".to_owned()
        };
        losses.push(Loss {
            rule: g.origin.clone(),
            what: format!("`{}` split around {} paths below it: {what}", dir.display(), below.join(" and ")),
            stricter_reading: true,
        });
        if !rights.is_empty() {
            grants.push(Grant { path: dir.clone(), access: rights.clone(), follow: false, origin: g.origin.clone() });
        }
    }
    details.push(format!("split allow `{}` around {} path(s) (no mount enforces them)", g.path.display(), holes.len()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::landlock::rights::{GrantKind, rights_for};

    #[test]
    fn chain_rights_are_what_every_hole_below_may_inherit() {
        let w = rights_for(GrantKind::Write);
        let read = rights_for(GrantKind::Read);
        assert!(Hole::Denied.inheritable(&w).is_empty());
        assert_eq!(Hole::ReadOnly(read.clone()).inheritable(&w), read);
        let absent = Hole::Absent.inheritable(&w);
        assert!(absent.contains(&FsRight::WriteFile) && absent.contains(&FsRight::ReadDir));
        assert!(!absent.iter().any(|r| MUTATE.contains(r)));
    }
}
