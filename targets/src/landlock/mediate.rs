//! What the sandbox's file helper needs to mediate the creation, removal and renaming of
//! entries in directories where the agent may not do it itself.
//!
//! Input: built at launch by [`super::apply()`] while it splits write trees around names that
//! must not appear or change (a protected or denied path absent at launch, a symlink on the
//! way to a protected path). Output: a [`Mediation`] table: the directories (by device and
//! inode) whose entries the agent's Landlock domain may not create, remove or rename, the
//! names protected directly in each (with the rule that protects them), the inodes whose own
//! rule gives the agent full write rights (a walk up from a directory stops there), and the
//! existing protected inodes (never linked or moved by the helper).
//!
//! Invariants: a directory is in `dirs` only if the agent's ruleset gives it (and anything
//! created in it later) no right to make, remove or rename entries; no inode of `full` lies
//! below a directory of `dirs` on the same path unless it is an entry that existed at launch
//! (its own rule); names are single path components.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity: device and inode number.
pub type Inode = (u64, u64);

/// The identity of `path` itself (a symlink's own, not its target's).
pub fn inode_of(path: &Path) -> Option<Inode> {
    std::fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A directory whose entries the agent cannot create, remove or rename itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediatedDir {
    /// Where it was at launch (for messages and records).
    pub path: PathBuf,
    /// Names that must never be created, removed or renamed in it, with the rule that says
    /// so (the next component on the way to a protected or denied path).
    pub names: BTreeMap<OsString, String>,
    /// The directory looks names up case-insensitively (ext4/f2fs `casefold`): `.ENVRC` is
    /// `.envrc` there, so names are compared folded.
    pub casefold: bool,
}

impl MediatedDir {
    /// The rule protecting `name` in this directory, if it is protected (folded comparison
    /// in a casefolding directory).
    pub fn protects(&self, name: &[u8]) -> Option<&String> {
        use std::os::unix::ffi::OsStrExt;
        if let Some(why) = self.names.get(std::ffi::OsStr::from_bytes(name)) {
            return Some(why);
        }
        if !self.casefold {
            return None;
        }
        let folded = fold(name)?;
        self.names.iter().find(|(n, _)| fold(n.as_bytes()).is_some_and(|f| f == folded)).map(|(_, why)| why)
    }
}

/// Case folding as a casefolding directory compares names, for names that fold to ASCII:
/// ASCII letters, and the two other characters whose folding is an ASCII letter (KELVIN SIGN
/// to `k`, LATIN SMALL LETTER LONG S to `s`). `None`: the name folds to something else (it can
/// equal no protected name, which are ASCII).
fn fold(name: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(name).ok()?;
    s.chars()
        .map(|c| match c {
            '\u{212A}' => Some('k'),
            '\u{017F}' => Some('s'),
            c if c.is_ascii() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether `dir` has the casefold attribute (`FS_CASEFOLD_FL`).
fn casefolds(dir: &Path) -> bool {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_CASEFOLD_FL: libc::c_long = 0x4000_0000;
    let Ok(f) = std::fs::File::open(dir) else { return false };
    let mut flags: libc::c_long = 0;
    use std::os::fd::AsRawFd;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which lives for the call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags as *mut libc::c_long) };
    r == 0 && flags & FS_CASEFOLD_FL != 0
}

/// The helper's table (module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mediation {
    pub dirs: BTreeMap<Inode, MediatedDir>,
    pub full: BTreeSet<Inode>,
    pub protected: BTreeSet<Inode>,
}

impl Mediation {
    /// True when nothing needs mediating (no helper is started).
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// Records that `dir` (existing) is on the way to `hole`: the next component of `hole`
    /// below `dir` is protected in it, for `why`.
    pub fn protect_on_the_way(&mut self, dir: &Path, hole: &Path, why: &str) {
        let Some(inode) = inode_of(dir) else { return };
        let Some(name) = hole.strip_prefix(dir).ok().and_then(|rest| rest.components().next()) else { return };
        let entry = self.dirs.entry(inode).or_insert_with(|| MediatedDir { path: dir.to_path_buf(), names: BTreeMap::new(), casefold: casefolds(dir) });
        entry.names.entry(name.as_os_str().to_owned()).or_insert_with(|| why.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_component_is_protected_in_each_directory_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        std::fs::create_dir_all(w.join(".git")).unwrap();
        let mut m = Mediation::default();
        let hole = w.join(".git/hooks/pre-commit");
        m.protect_on_the_way(&w, &hole, "protect hooks");
        m.protect_on_the_way(&w.join(".git"), &hole, "protect hooks");
        m.protect_on_the_way(&w.join("missing"), &hole, "x");
        let names = |p: &Path| m.dirs.get(&inode_of(p).unwrap()).map(|d| d.names.keys().cloned().collect::<Vec<_>>());
        assert_eq!(names(&w), Some(vec![OsString::from(".git")]));
        assert_eq!(names(&w.join(".git")), Some(vec![OsString::from("hooks")]));
        assert_eq!(m.dirs.len(), 2, "a directory that does not exist is not in the table");
    }

    #[test]
    fn a_casefolding_directory_compares_folded_names() {
        let mut d = MediatedDir { path: PathBuf::from("/w"), names: BTreeMap::from([(OsString::from(".husky"), "hooks".to_string())]), casefold: false };
        assert!(d.protects(b".husky").is_some());
        assert!(d.protects(b".HUSKY").is_none(), "an ordinary directory tells them apart");
        d.casefold = true;
        for same in [".HUSKY", ".Husky", ".hus\u{212A}y", ".hu\u{017F}ky"] {
            assert!(d.protects(same.as_bytes()).is_some(), "{same}");
        }
        assert!(d.protects(".hüsky".as_bytes()).is_none());
    }
}
