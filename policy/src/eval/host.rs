//! The evaluator's view of one host: paths resolved as the kernel resolves them there.
//!
//! Input: a [`Policy`], launch parameter values and a filesystem [`Query`]. Output: the same
//! question with every path the host can resolve replaced by its real location — the query
//! and the rules, parameters filled in and symlinks followed — and notes that say what was
//! resolved, for [`evaluate_on_host`]. Why: the kernel never sees `/bin/sh`; it sees
//! `/usr/bin/dash`, which is what a Landlock rule and a bind mount are attached to at launch
//! (the runtime canonicalises every rule path). So `exec /bin/sh` under a policy granting
//! `/usr/bin/dash` runs, and the pure evaluator, which compares paths as written, would say
//! DENY. This module is the only part of evaluation that reads the filesystem; it assumes
//! the agent will run on this host, with these parameter values, and says so.
//!
//! Invariants: a path that does not exist is resolved as far as it exists (the rest kept
//! as written, as the runtime does for denied paths); a denied path that is a symlink stays
//! denied at both its own location and its target (the runtime denies both); rules whose
//! parameter has no value are left as written (the evaluator's notes cover them).

use std::path::{Path, PathBuf};

use super::{Decision, Params, Query, QueryError, evaluate_for};
use crate::ir::path::{PathPattern, Root};
use crate::ir::{FsAccess, Policy};

/// `p` resolved on this host: the longest existing prefix canonicalised, the rest appended.
/// `None` when nothing could be resolved or the result is not a valid policy path.
fn resolve_lenient(p: &PathPattern) -> Option<PathPattern> {
    if p.root != Root::Absolute {
        return None;
    }
    let lexical: PathBuf = std::iter::once("/".to_string()).chain(p.components.iter().cloned()).collect();
    let mut tail: Vec<std::ffi::OsString> = Vec::new();
    let mut cur: Option<&Path> = Some(&lexical);
    while let Some(dir) = cur {
        if let Ok(mut real) = std::fs::canonicalize(dir) {
            for t in tail.iter().rev() {
                real.push(t);
            }
            return PathPattern::parse(real.to_str()?, &|_| false).ok();
        }
        tail.push(dir.file_name()?.to_owned());
        cur = dir.parent();
    }
    None
}

/// A rule path with its parameter filled in (when a value is given).
fn instantiate(p: &PathPattern, params: &Params) -> PathPattern {
    p.instantiate(&|n| params.get(n).cloned()).unwrap_or_else(|| p.clone())
}

/// Evaluates `query` as the kernel of this host will: see the module docs. The decision's
/// notes say which paths resolved to somewhere else and that the answer is this host's.
pub fn evaluate_on_host(policy: &Policy, params: &Params, query: &Query, exe: Option<&str>) -> Result<Decision, QueryError> {
    let Query::Fs { access, path } = query else {
        return evaluate_for(policy, params, query, exe);
    };
    // Check the query as written first: malformed queries are errors, whatever the host.
    evaluate_for(policy, params, query, exe)?;
    let written = PathPattern::parse(path, &|n| policy.parameters.contains_key(n)).map_err(|_| QueryError(format!("`{path}` is not a valid path")))?;
    let mut notes = Vec::new();
    let q = instantiate(&written, params);
    let q_real = match resolve_lenient(&q) {
        Some(r) if r != q => {
            notes.push(format!("on this host '{path}' resolves to '{r}' (symlinks followed, as the kernel does when the agent opens it)"));
            r
        }
        Some(r) => r,
        None => q.clone(),
    };
    let mut host = policy.clone();
    let mut extra = Vec::new();
    for r in &mut host.filesystem.rules {
        let inst = instantiate(&r.path, params);
        let Some(real) = resolve_lenient(&inst) else { continue };
        if real == inst {
            continue;
        }
        // A deny through a symlink covers the link's own location too.
        if r.access == FsAccess::Deny {
            let mut own = r.clone();
            own.path = inst.clone();
            extra.push(own);
        }
        if real.covers(&q_real) || (r.access == FsAccess::Deny && inst.covers(&q_real)) {
            notes.push(format!("{} rule '{}' is '{real}' on this host", r.access.word(), r.path));
        }
        r.path = real;
    }
    host.filesystem.rules.extend(extra);
    let mut d = evaluate_for(&host, params, &Query::Fs { access: *access, path: q_real.to_string() }, exe)?;
    notes.append(&mut d.notes);
    d.notes = notes;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_existing_prefix_and_keeps_the_rest() {
        let p = |s: &str| PathPattern::parse(s, &|_| false).unwrap();
        let root = std::fs::canonicalize("/").unwrap();
        assert_eq!(resolve_lenient(&p("/")).map(|r| r.to_string()), root.to_str().map(str::to_string));
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let via_link = p(&format!("{}/link/missing/x", base.display()));
        assert_eq!(resolve_lenient(&via_link).unwrap().to_string(), format!("{}/real/missing/x", base.display()));
        let param = PathPattern::parse("${W}/x", &|_| true).unwrap();
        assert_eq!(resolve_lenient(&param), None, "parameter-rooted paths need a value first");
    }
}
