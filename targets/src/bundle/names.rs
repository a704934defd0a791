//! File names allowed inside a bundle, and other identifiers that end up in file names,
//! trusted comments or on-disk keys.
//!
//! Input: a name from the compiler (artifact, agent, architecture) or from a bundle
//! directory / manifest (untrusted). Output: `Ok(())` or the precise reason it is refused.
//! Invariants: an accepted file name is a single path component that cannot be hidden,
//! traverse (`..`), collide with the reserved names, or differ from another only by case
//! (upper case is refused), so the same name means the same file on every filesystem.

use super::error::BundleError;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The detached minisign signature of the manifest.
pub const SIGNATURE_FILE: &str = "manifest.json.minisig";

/// Longest accepted file name: far below every filesystem's limit (255 bytes).
pub const MAX_NAME_LEN: usize = 128;

fn is_name_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
}

/// Why `name` is not a valid bundle file name, if it is not. Reserved names
/// (`manifest.json`, `manifest.json.minisig`) pass this check; see [`check_artifact_name`].
pub fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("longer than 128 characters");
    }
    if name.contains('/') || name.contains('\\') {
        return Some("contains a path separator");
    }
    if name.contains("..") {
        return Some("contains `..`");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some("must start with a lower-case letter or digit (no hidden files)");
    }
    if !name.chars().all(is_name_char) {
        return Some("only lower-case ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    None
}

/// Checks a name the caller wants to store as an artifact (not a reserved name).
pub fn check_artifact_name(name: &str) -> Result<(), BundleError> {
    if let Some(reason) = file_name_problem(name) {
        return Err(BundleError::BadFileName {
            name: name.to_string(),
            reason,
        });
    }
    if name == MANIFEST_FILE || name == SIGNATURE_FILE {
        return Err(BundleError::BadFileName {
            name: name.to_string(),
            reason: "reserved for the bundle's own manifest and signature",
        });
    }
    Ok(())
}

/// An identifier (agent name, architecture, layer, parameter): 1-64 characters of
/// `[A-Za-z0-9._-]`, starting with a letter or digit. These appear in the trusted comment,
/// in file names and as keys of the serial store, so spaces and control characters are out.
pub fn check_identifier(what: &'static str, value: &str) -> Result<(), BundleError> {
    let reason = if value.is_empty() {
        Some("empty")
    } else if value.len() > 64 {
        Some("longer than 64 characters")
    } else if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must start with an ASCII letter or digit")
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("only ASCII letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BundleError::InvalidField {
            what,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_artifact_names_of_the_targets() {
        for n in [
            "seccomp.x86_64.bpf",
            "seccomp.aarch64.asm",
            "landlock.json",
            "policy.sha256",
            "loss-report.txt",
        ] {
            assert_eq!(file_name_problem(n), None, "{n}");
            assert!(check_artifact_name(n).is_ok());
        }
    }

    #[test]
    fn refuses_path_tricks() {
        for n in [
            "", ".", "..", ".hidden", "a/b", "../x", "a\\b", "a..b", "UPPER.json", "a b", "é",
            "x\0", "-flag",
        ] {
            assert!(file_name_problem(n).is_some(), "{n:?} accepted");
        }
        assert!(check_artifact_name("manifest.json").is_err());
        assert!(check_artifact_name("manifest.json.minisig").is_err());
    }
}
