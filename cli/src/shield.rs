//! What `aegis run` keeps from the agent of its own launch, on top of the policy.
//!
//! The local loop keeps the policy next to the agent's code, usually inside the checkout the
//! agent may write, and records the run in the user's own state directory. An agent that
//! may write its policy widens its *next* run (the user reruns `aegis run` and gets the
//! agent's policy), and one that may read or write the audit state reads other runs'
//! records, rewrites the log or signs it with the checkpoint key. So before the bundle is
//! built:
//!
//! - every file the policy was compiled from that the policy lets the agent write gets a
//!   read-only carve-out (the agent still reads it: `git add -A` and `git status` see the
//!   file as it is);
//! - every piece of audit state the policy lets the agent read (the default `$AEGIS_DIR`,
//!   the audit log, the checkpoint key and sink) gets a deny.
//!
//! Input: the compiled policy, the launch's `--param` values and those paths (absolute,
//! symlinks resolved where they exist). Output: the policy with the added rules (built-in:
//! no origin, with a note saying why, enforced like the built-in protections: a read-only
//! bind or a mask, pinned), and one line per rule for the report. Invariants: only rules
//! that narrow are added (a carve-out below a write grant, a deny), and only where the
//! evaluator says the agent could otherwise reach the path, so a policy that keeps these
//! paths out of reach compiles to the same bundle as with `aegisc build`; afterwards the
//! evaluator is asked again, and a policy that still lets the agent write its own policy
//! (a `write` grant naming the file itself beats a carve-out at the same depth) is refused.

use std::path::{Path, PathBuf};

use aegis_policy::eval::{self, Decision, FsQuery, Params, Query, Verdict};
use aegis_policy::ir::{FsAccess, FsRule, PathPattern, Policy};

const POLICY_NOTE: &str = "a file `aegis run` compiled this policy from: an agent that rewrites it widens its next run";
const AUDIT_NOTE: &str = "audit state of `aegis run` (log, checkpoint key or sink, aegisd's directory): the agent must not read or rewrite its own record";

/// The paths to keep from the agent.
pub struct Guarded<'a> {
    /// The files the policy was compiled from (the root file and what it `extends`).
    pub sources: Vec<PathBuf>,
    /// Audit state: `$AEGIS_DIR`, the audit log, the checkpoint key and sink.
    pub audit: Vec<&'a Path>,
}

/// Adds the rules; returns one line per added rule, or why the policy cannot be run safely.
pub fn apply(policy: &mut Policy, params: &Params, guarded: &Guarded<'_>) -> Result<Vec<String>, String> {
    // Each rule is added as soon as it is decided (the evaluator does not depend on rule
    // order), so a path inside one already hidden gets no rule of its own.
    let before = policy.filesystem.rules.len();
    let mut said = Vec::new();
    for src in &guarded.sources {
        if allows(policy, params, FsQuery::Write, src)? {
            policy.filesystem.rules.push(rule(FsAccess::Read, src, POLICY_NOTE, true)?);
            said.push(format!("{} is read-only to the agent (it may not rewrite its own policy)", src.display()));
        }
    }
    for path in &guarded.audit {
        if allows(policy, params, FsQuery::Read, path)? {
            policy.filesystem.rules.push(rule(FsAccess::Deny, path, AUDIT_NOTE, false)?);
            said.push(format!("{} is hidden from the agent (audit state)", path.display()));
        }
    }
    if policy.filesystem.rules.len() == before {
        return Ok(said);
    }
    let rules = &mut policy.filesystem.rules;
    // The IR's invariant: sorted by (access, path), no two rules with the same access and
    // path (a policy rule that is already there keeps its origin).
    rules.sort_by(|a, b| (a.access, &a.path, a.origin.is_none()).cmp(&(b.access, &b.path, b.origin.is_none())));
    rules.dedup_by(|later, kept| later.access == kept.access && later.path == kept.path);
    for src in &guarded.sources {
        if allows(policy, params, FsQuery::Write, src)? {
            return Err(format!(
                "the policy lets the agent write {}, a file it was compiled from, and a read-only carve-out cannot lift a write grant that names the file itself: remove that grant, or keep the policy outside what the agent may write",
                src.display()
            ));
        }
    }
    Ok(said)
}

fn allows(policy: &Policy, params: &Params, access: FsQuery, path: &Path) -> Result<bool, String> {
    let query = Query::Fs { access, path: path.display().to_string() };
    match eval::evaluate(policy, params, &query) {
        Ok(Decision { verdict, .. }) => Ok(verdict == Verdict::Allow),
        Err(e) => Err(format!("cannot tell whether the agent may {} {}: {e}", access.word(), path.display())),
    }
}

fn rule(access: FsAccess, path: &Path, note: &'static str, protection: bool) -> Result<FsRule, String> {
    let text = path.display().to_string();
    let path = PathPattern::parse(&text, &|_| false)
        .map_err(|e| format!("cannot keep {text} from the agent: a rule cannot name it ({e:?}); move or rename it"))?;
    Ok(FsRule { access, path, origin: None, note: note.into(), protection })
}

/// The launch's `--param NAME=VALUE` values in the evaluator's form, as the runtime will
/// see them (symlinks resolved). Values that are not `NAME=VALUE` and names the policy does
/// not declare are left out: the launch refuses them (with a did-you-mean) anyway.
pub fn params(policy: &Policy, flags: &[String]) -> Result<Params, String> {
    let mut params = Params::new();
    for p in flags {
        let Some((name, value)) = p.split_once('=') else { continue };
        if !policy.parameters.contains_key(name) {
            continue;
        }
        let real = std::fs::canonicalize(value).map_or_else(|_| value.to_string(), |r| r.display().to_string());
        let (name, pattern) = eval::parse_param(&format!("{name}={real}")).map_err(|e| format!("--param {p}: {e}"))?;
        params.insert(name, pattern);
    }
    Ok(params)
}

/// `path` with its directory's symlinks resolved (the file itself need not exist yet):
/// rules name real paths, as the kernel sees them.
pub fn real(path: &Path) -> PathBuf {
    if let Ok(r) = std::fs::canonicalize(path) {
        return r;
    }
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf()) };
    match (abs.parent().and_then(|d| std::fs::canonicalize(d).ok()), abs.file_name()) {
        (Some(dir), Some(name)) => dir.join(name),
        _ => abs,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn policy(fs: &str) -> Policy {
        let text = format!("version = 1\n[agent]\nname = \"t\"\n[parameters]\nWS = \"checkout\"\n[filesystem]\n{fs}\n");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.toml");
        std::fs::write(&p, text).unwrap();
        match aegis_compiler::compile_file(&p) {
            Ok(c) => c.policy.into_inner(),
            Err(f) => panic!("{:?}", f.diagnostics),
        }
    }

    fn ws() -> Params {
        let (n, p) = eval::parse_param("WS=/home/u/repo").unwrap();
        Params::from([(n, p)])
    }

    fn may(p: &Policy, access: FsQuery, path: &str) -> bool {
        allows(p, &ws(), access, Path::new(path)).unwrap()
    }

    #[test]
    fn a_policy_in_the_writable_checkout_becomes_read_only_and_stays_readable() {
        let mut p = policy("read = [\"/usr\"]\nwrite = [\"${WS}\"]");
        let before = p.filesystem.rules.len();
        let g = Guarded { sources: vec![PathBuf::from("/home/u/repo/my-agent.toml"), PathBuf::from("/home/u/base.toml")], audit: vec![] };
        let said = apply(&mut p, &ws(), &g).unwrap();
        assert_eq!(said, ["/home/u/repo/my-agent.toml is read-only to the agent (it may not rewrite its own policy)"]);
        assert_eq!(p.filesystem.rules.len(), before + 1);
        assert!(!may(&p, FsQuery::Write, "/home/u/repo/my-agent.toml"));
        assert!(may(&p, FsQuery::Read, "/home/u/repo/my-agent.toml"));
        assert!(may(&p, FsQuery::Write, "/home/u/repo/agent.py"));
        // Outside every grant: nothing added, the agent does not even get to read it.
        assert!(!may(&p, FsQuery::Read, "/home/u/base.toml"));
        let mut sorted = p.filesystem.rules.clone();
        sorted.sort_by(|a, b| (a.access, &a.path).cmp(&(b.access, &b.path)));
        assert_eq!(sorted, p.filesystem.rules);
    }

    #[test]
    fn audit_state_the_agent_could_read_is_denied() {
        let mut p = policy("write = [\"/home/u\"]");
        let dir = Path::new("/home/u/.local/state/aegis");
        let log = Path::new("/home/u/.local/state/aegis/audit.log");
        let key = Path::new("/etc/aegis/host.key");
        let g = Guarded { sources: vec![], audit: vec![dir, log, key] };
        let said = apply(&mut p, &ws(), &g).unwrap();
        assert_eq!(said, ["/home/u/.local/state/aegis is hidden from the agent (audit state)"]);
        assert!(!may(&p, FsQuery::Read, "/home/u/.local/state/aegis/audit.log"));
        assert!(!may(&p, FsQuery::Write, "/home/u/.local/state/aegis"));
        assert!(may(&p, FsQuery::Write, "/home/u/.local/state/other"));
    }

    #[test]
    fn nothing_is_added_when_the_policy_keeps_them_out_of_reach() {
        let mut p = policy("read = [\"${WS}\"]\nwrite = [\"${WS}/out\"]");
        let rules = p.filesystem.rules.clone();
        let g = Guarded { sources: vec![PathBuf::from("/home/u/repo/aegis.toml")], audit: vec![Path::new("/home/u/.local/state/aegis")] };
        assert!(apply(&mut p, &ws(), &g).unwrap().is_empty());
        assert_eq!(p.filesystem.rules, rules);
    }

    #[test]
    fn a_write_grant_naming_the_policy_file_itself_is_refused() {
        let mut p = policy("write = [\"${WS}\", \"${WS}/aegis.toml\"]");
        let g = Guarded { sources: vec![PathBuf::from("/home/u/repo/aegis.toml")], audit: vec![] };
        let e = apply(&mut p, &ws(), &g).unwrap_err();
        assert!(e.contains("lets the agent write /home/u/repo/aegis.toml") && e.contains("remove that grant"), "{e}");
    }
}
