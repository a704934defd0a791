//! Protected paths inside write trees with Landlock alone (no mount namespace: the mode of
//! hosts without user namespaces): read-only carve-outs split the write tree and stay
//! readable, their ancestors cannot be renamed away, and a denied path that does not exist
//! yet no longer locks its parent. Real rulesets in forked children.


use aegis_targets::landlock::{self, Abi, FsAccess, Mode};
use std::path::Path;
use crate::landlock_support::*;

fn skip_without_landlock() -> bool {
    if landlock::kernel_abi() < Abi(3) {
        eprintln!("SKIP: kernel Landlock ABI {} < V3", landlock::kernel_abi());
        return true;
    }
    false
}

/// `repo/` (writable in the tests) holds a small repository: `.git/{config,index,hooks/,
/// objects/}` and `src/`.
fn repo(base: &Path) {
    for d in ["repo/.git/hooks", "repo/.git/objects", "repo/src"] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::write(base.join("repo/.git/config"), "[core]\n").unwrap();
    std::fs::write(base.join("repo/.git/index"), "index").unwrap();
    std::fs::write(base.join("repo/src/main.rs"), "fn main() {}").unwrap();
}

#[test]
fn read_only_carve_outs_stay_readable_and_unwritable_and_cannot_be_moved() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    repo(&base);
    let mut rules = policy();
    rules.push(rule("${BASE}/repo", FsAccess::Write, "write repo"));
    rules.push(rule("${BASE}/repo/.git/config", FsAccess::Read, "protect config"));
    rules.push(rule("${BASE}/repo/.git/hooks", FsAccess::Read, "protect hooks"));
    let lowered = landlock::lower_fs(&rules);
    assert_eq!(lowered.artifact.read_only.len(), 2, "both are carve-outs: {:?}", lowered.artifact.read_only);
    let rw = base.join("repo");
    in_child(|c| {
        let st = landlock::apply(&lowered.artifact, &params(&base), Mode::Required, landlock::InForce::NOTHING).unwrap();
        c.expect(st.losses.iter().any(|l| l.stricter_reading && l.what.contains("read-only paths below it")), format!("split loss: {:?}", st.losses));
        c.expect(can_read(&rw.join(".git/config")), "git must still read .git/config");
        c.expect(open_errno(&rw.join(".git/config"), libc::O_WRONLY) == libc::EACCES, "writing .git/config must fail");
        c.expect(!can_write(&rw.join(".git/hooks/pre-commit")), "planting a hook must fail");
        c.expect(std::fs::read_dir(rw.join(".git/hooks")).is_ok(), "hooks can be listed");
        c.expect(can_write(&rw.join(".git/index")), "the rest of .git stays writable");
        c.expect(can_write(&rw.join(".git/objects/ab")), "objects can be created");
        c.expect(can_write(&rw.join("src/new.rs")), "the workspace stays writable");
        c.expect(std::fs::read_dir(&rw).is_ok(), "the workspace root can be listed");
        c.expect(std::fs::rename(rw.join(".git"), rw.join("moved")).is_err(), "renaming .git away must fail");
        c.expect(std::fs::rename(rw.join(".git/hooks"), rw.join(".git/h")).is_err(), "renaming hooks away must fail");
        c.expect(std::fs::remove_file(rw.join(".git/config")).is_err(), "unlinking the config must fail");
        c.expect(std::fs::rename(rw.join("src/main.rs"), rw.join(".git/config")).is_err(), "replacing the config by rename must fail");
        c.expect(std::fs::remove_dir_all(rw.join(".git")).is_err(), "rm -rf .git must fail");
        c.expect(can_read(&rw.join(".git/config")), "the config is still there");
    });
}

#[test]
fn a_deny_on_a_missing_directory_does_not_lock_its_parent() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    std::fs::create_dir_all(base.join("fresh/sub")).unwrap();
    std::fs::write(base.join("fresh/notes.txt"), "notes").unwrap();
    let mut rules = policy();
    rules.push(rule("${BASE}/fresh", FsAccess::Write, "write fresh"));
    rules.push(rule("${BASE}/fresh/.git", FsAccess::Deny, "deny .git"));
    let lowered = landlock::lower_fs(&rules);
    let fresh = base.join("fresh");
    in_child(|c| {
        landlock::apply(&lowered.artifact, &params(&base), Mode::Required, landlock::InForce::NOTHING).unwrap();
        c.expect(std::fs::read_dir(&fresh).is_ok(), "`ls .` must work");
        c.expect(can_read(&fresh.join("notes.txt")), "existing files stay readable");
        c.expect(open_errno(&fresh.join("notes.txt"), libc::O_WRONLY | libc::O_TRUNC) == 0, "and writable");
        c.expect(can_write(&fresh.join("sub/x")), "subdirectories stay writable");
        c.expect(std::fs::create_dir(fresh.join(".git")).is_err(), "creating .git must fail");
        c.expect(!can_write(&fresh.join(".git")), "creating a .git file must fail");
        c.expect(std::fs::create_dir(fresh.join("sub/.git")).is_ok(), "only the denied path is refused (deeper names are not it)");
    });
}

#[test]
fn a_symlink_or_a_file_on_the_way_to_a_protected_path_stays_in_place() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let home = base.join("home");
    for d in ["dotfiles", "src", "wt"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    std::fs::write(home.join("dotfiles/bashrc"), "alias ll='ls -l'\n").unwrap();
    std::os::unix::fs::symlink("dotfiles/bashrc", home.join(".bashrc")).unwrap();
    // A linked worktree: `.git` is a file naming the repository's admin directory.
    std::fs::write(home.join("wt/.git"), "gitdir: /somewhere/.git/worktrees/wt\n").unwrap();
    let mut rules = policy();
    rules.push(rule("${BASE}/home", FsAccess::Write, "write home"));
    rules.push(rule("${BASE}/home/.bashrc", FsAccess::Read, "protect .bashrc"));
    rules.push(rule("${BASE}/home/wt/.git/config", FsAccess::Read, "protect wt/.git/config"));
    let lowered = landlock::lower_fs(&rules);
    in_child(|c| {
        landlock::apply(&lowered.artifact, &params(&base), Mode::Required, landlock::InForce::NOTHING).unwrap();
        c.expect(can_read(&home.join(".bashrc")), "the protected file reads through its link");
        c.expect(open_errno(&home.join(".bashrc"), libc::O_WRONLY) != 0, "writing through the link must fail");
        c.expect(std::fs::remove_file(home.join(".bashrc")).is_err(), "the link cannot be removed");
        c.expect(std::fs::rename(home.join("src"), home.join(".bashrc")).is_err(), "nor replaced");
        c.expect(can_read(&home.join("wt/.git")), "the gitdir file stays readable");
        c.expect(open_errno(&home.join("wt/.git"), libc::O_WRONLY | libc::O_TRUNC) != 0, "rewriting the gitdir file must fail");
        c.expect(std::fs::remove_file(home.join("wt/.git")).is_err(), "and removing it");
        c.expect(can_write(&home.join("src/x")), "the rest of the tree stays writable");
    });
}
