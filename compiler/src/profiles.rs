//! Built-in profiles: policy files shipped inside the compiler, which a policy extends by
//! name (`extends = ["aegis:claude-code@1"]`).
//!
//! Input: an `extends` entry. Output: whether it names a built-in profile (`aegis:NAME` or
//! `aegis:NAME@VERSION`), and which one: its text, compiled like any policy file, shown in
//! messages and origins as `aegis:NAME@VERSION`.
//! Invariants: a shipped version never changes (a fix or a change of grants is a new
//! version, so a policy that pins `@1` compiles to the same bundle with every later aegisc;
//! `compiler/tests/all/profiles.rs` pins each version's digest); an unpinned `aegis:NAME`
//! means the newest version this compiler ships (and a warning says to pin it); every
//! profile is self-contained (it extends built-in profiles only) and documented in
//! `docs/profiles.md`.

/// One shipped profile version.
#[derive(Debug)]
pub struct Profile {
    pub name: &'static str,
    pub version: u32,
    /// What it is for: the first line of the file (a `# ` comment).
    pub text: &'static str,
}

impl Profile {
    /// `aegis:NAME@VERSION`, as origins and messages show it.
    pub fn reference(&self) -> String {
        format!("{PREFIX}{}@{}", self.name, self.version)
    }

    /// The file's first line without its `# `: what the profile is for.
    pub fn summary(&self) -> &'static str {
        self.text.lines().next().and_then(|l| l.strip_prefix("# ")).unwrap_or("")
    }
}

macro_rules! profiles {
    ($($name:literal @ $version:literal,)*) => {
        /// Every shipped profile version, sorted by name, then version.
        pub const PROFILES: &[Profile] = &[$(Profile {
            name: $name,
            version: $version,
            text: include_str!(concat!("../profiles/", $name, "@", stringify!($version), ".toml")),
        },)*];
    };
}

profiles! {
    "aider" @ 1,
    "claude-code" @ 1,
    "codex" @ 1,
    "coding-agent" @ 1,
    "credential-stores" @ 1,
    "gemini-cli" @ 1,
    "git-https" @ 1,
    "model-apis" @ 1,
    "node-agent" @ 1,
    "opencode" @ 1,
    "package-registries" @ 1,
    "python-agent" @ 1,
    "shell-configs" @ 1,
    "system-base" @ 1,
}

/// What marks an `extends` entry as a built-in profile rather than a file path.
pub const PREFIX: &str = "aegis:";

/// An `extends` entry that names a built-in profile, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference<'a> {
    pub name: &'a str,
    /// `None`: the newest version.
    pub version: Option<u32>,
}

/// Why a reference names no shipped profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    /// `aegis:` followed by something that is not `NAME` or `NAME@VERSION`: why, and the
    /// profile it probably means (`Claude Code` → `claude-code`).
    Malformed { what: String, suggestion: Option<&'static str> },
    /// No profile of that name; the closest name, if one is close.
    Name { suggestion: Option<&'static str> },
    /// The profile exists, but not in that version.
    Version { versions: Vec<u32> },
}

/// `Some` when `entry` is a profile reference (starts with `aegis:`), parsed.
pub fn parse(entry: &str) -> Option<Result<Reference<'_>, Unknown>> {
    let rest = entry.strip_prefix(PREFIX)?;
    let (name, version) = match rest.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (rest, None),
    };
    let valid_name = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid_name {
        let spelt: String = name.to_lowercase().chars().map(|c| if c == ' ' || c == '_' { '-' } else { c }).collect();
        return Some(Err(Unknown::Malformed {
            what: format!("`{name}` is not a profile name (lower-case letters, digits and `-`)"),
            suggestion: crate::diag::did_you_mean(&spelt, names()),
        }));
    }
    let version = match version {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 && !v.starts_with('0') => Some(n),
            _ => {
                return Some(Err(Unknown::Malformed {
                    what: format!("`@{v}` is not a profile version (a whole number from 1, e.g. `aegis:{name}@1`)"),
                    suggestion: None,
                }));
            }
        },
    };
    Some(Ok(Reference { name, version }))
}

/// The shipped profile a reference names.
pub fn find(r: &Reference<'_>) -> Result<&'static Profile, Unknown> {
    let versions: Vec<&'static Profile> = PROFILES.iter().filter(|p| p.name == r.name).collect();
    if versions.is_empty() {
        let suggestion = crate::diag::did_you_mean(r.name, names());
        return Err(Unknown::Name { suggestion });
    }
    let found = match r.version {
        Some(v) => versions.iter().find(|p| p.version == v).copied(),
        None => versions.iter().max_by_key(|p| p.version).copied(),
    };
    found.ok_or_else(|| Unknown::Version { versions: versions.iter().map(|p| p.version).collect() })
}

/// Profile names, each once, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&'static str> = PROFILES.iter().map(|p| p.name).collect();
    names.dedup();
    names.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_resolve() {
        assert_eq!(parse("base.toml"), None);
        assert_eq!(parse("aegis:claude-code"), Some(Ok(Reference { name: "claude-code", version: None })));
        assert_eq!(parse("aegis:claude-code@1"), Some(Ok(Reference { name: "claude-code", version: Some(1) })));
        for bad in ["aegis:", "aegis:Claude", "aegis:a/b", "aegis:x@", "aegis:x@v1", "aegis:x@01", "aegis:x@0", "aegis:x@1@2"] {
            assert!(matches!(parse(bad), Some(Err(Unknown::Malformed { .. }))), "{bad}");
        }
        assert!(matches!(parse("aegis:Claude Code"), Some(Err(Unknown::Malformed { suggestion: Some("claude-code"), .. }))));
        let newest = find(&Reference { name: "claude-code", version: None }).map(|p| p.version);
        let max = PROFILES.iter().filter(|p| p.name == "claude-code").map(|p| p.version).max();
        assert_eq!(newest.ok(), max);
        assert_eq!(
            find(&Reference { name: "claude-cod", version: None }).err(),
            Some(Unknown::Name { suggestion: Some("claude-code") })
        );
        assert!(matches!(find(&Reference { name: "claude-code", version: Some(999) }), Err(Unknown::Version { .. })));
    }
}
