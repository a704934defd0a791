//! Errors of the bundle format and of signing keys.
//!
//! Input: every failure found while writing, opening, verifying a bundle, loading or making
//! keys, or recording serials. Output: [`BundleError`] / [`KeyError`] values with a stable
//! code (`aegis::bundle::*`, `aegis::key::*`, rendered by miette) and an exit-code class.
//! Invariants: codes are stable API (listed in `docs/bundle.md`); no message ever contains
//! key material, only paths and key ids; every problem with what the user gave us (a bundle,
//! a key, a flag) is "invalid input" (exit 2), failures to write our own output exit 1.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Exit status for "the input (bundle, key, flag) is invalid": tampered, unsigned, expired...
pub const EXIT_INVALID_INPUT: i32 = 2;
/// Exit status for "we could not write our own output" (disk full, permissions on `-o DIR`).
pub const EXIT_INTERNAL: i32 = 1;

/// A minisign key id: the 8 random bytes minisign stores next to every key and signature,
/// read little-endian and shown as 16 upper-case hex digits, exactly as `minisign` prints it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id as minisign shows it (`u64` little-endian).
    pub fn as_u64(self) -> u64 {
        u64::from_le_bytes(self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.as_u64())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Loading, creating or using a signing or verification key failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    #[diagnostic(code(aegis::key::unreadable))]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is not a minisign {expected}: {reason}")]
    #[diagnostic(
        code(aegis::key::wrong_format),
        help("make a key pair with `aegisc keygen` or `minisign -G -W`")
    )]
    WrongFormat {
        path: PathBuf,
        expected: &'static str,
        reason: &'static str,
    },

    #[error("secret key {path} is password-protected; password-protected keys are not supported yet")]
    #[diagnostic(
        code(aegis::key::encrypted),
        help(
            "use an unencrypted key (`aegisc keygen`, or `minisign -G -W`), kept readable only by its owner (mode 0600)"
        )
    )]
    Encrypted { path: PathBuf },

    #[error("secret key {path} is corrupt: {reason}")]
    #[diagnostic(code(aegis::key::corrupt))]
    Corrupt { path: PathBuf, reason: &'static str },

    #[error("secret key {path} is readable or writable by group or others (mode {mode:04o}); refusing to use it")]
    #[diagnostic(
        code(aegis::key::insecure_permissions),
        help("run `chmod 600` on the key file (and consider the key compromised if others could read it)")
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },

    #[error("key file {path} already exists; refusing to overwrite it")]
    #[diagnostic(
        code(aegis::key::exists),
        help("choose another path, or ask explicitly to overwrite (the old key is then lost)")
    )]
    Exists { path: PathBuf },

    #[error("the secret and public key paths are the same file: {path}")]
    #[diagnostic(code(aegis::key::same_path))]
    SamePath { path: PathBuf },

    #[error("cannot write key file {path}: {source}")]
    #[diagnostic(code(aegis::key::write))]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot generate a key pair: {reason}")]
    #[diagnostic(code(aegis::key::generate))]
    Generate { reason: String },
}

impl KeyError {
    /// Exit status class: a bad or unreadable key is invalid input; failing to write one is not.
    pub fn exit_code(&self) -> i32 {
        match self {
            KeyError::Write { .. } | KeyError::Generate { .. } => EXIT_INTERNAL,
            _ => EXIT_INVALID_INPUT,
        }
    }
}

/// Writing, opening or verifying a bundle failed, or a rollback was detected.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum BundleError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Key(#[from] KeyError),

    #[error("cannot {action} {path}: {source}")]
    #[diagnostic(code(aegis::bundle::unreadable))]
    Read {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot {action} {path}: {source}")]
    #[diagnostic(code(aegis::bundle::write))]
    Write {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is not a directory")]
    #[diagnostic(code(aegis::bundle::not_a_directory))]
    NotADirectory { path: PathBuf },

    #[error("bundle entry `{name}` is a {kind}, not a regular file; bundles hold only regular files")]
    #[diagnostic(code(aegis::bundle::not_regular_file))]
    NotRegularFile { name: String, kind: &'static str },

    #[error("bundle file name {name:?} is not allowed: {reason}")]
    #[diagnostic(
        code(aegis::bundle::bad_file_name),
        help("names are 1-128 characters of [a-z0-9._-], starting with a letter or digit, without `..`")
    )]
    BadFileName { name: String, reason: &'static str },

    #[error("bundle file `{name}` is {size} bytes, more than the limit of {limit} bytes")]
    #[diagnostic(code(aegis::bundle::file_too_large))]
    FileTooLarge { name: String, size: u64, limit: u64 },

    #[error("{dir} has no manifest.json: not a bundle")]
    #[diagnostic(code(aegis::bundle::missing_manifest))]
    MissingManifest { dir: PathBuf },

    #[error("bundle {dir} is not signed (no manifest.json.minisig) and unsigned bundles are not allowed")]
    #[diagnostic(
        code(aegis::bundle::missing_signature),
        help("build it with a signing key, or allow unsigned bundles explicitly")
    )]
    MissingSignature { dir: PathBuf },

    #[error("no public key to verify bundle {dir} with, and unsigned bundles are not allowed")]
    #[diagnostic(code(aegis::bundle::no_trusted_key), help("pass the signer's public key (minisign .pub file)"))]
    NoTrustedKey { dir: PathBuf },

    #[error("manifest.json.minisig is corrupt or truncated: {reason}")]
    #[diagnostic(code(aegis::bundle::corrupt_signature))]
    CorruptSignature { reason: &'static str },

    #[error("manifest.json.minisig was made by key {signed_by}, but the trusted public key is {trusted}")]
    #[diagnostic(
        code(aegis::bundle::wrong_key),
        help("verify with the public key of the key that signed this bundle, or re-sign it")
    )]
    WrongKey { signed_by: KeyId, trusted: KeyId },

    #[error("signature check failed: {what}")]
    #[diagnostic(
        code(aegis::bundle::bad_signature),
        help("the manifest or its signature was modified after signing; rebuild the bundle")
    )]
    BadSignature { what: &'static str },

    #[error("manifest.json is invalid: {reason}")]
    #[diagnostic(code(aegis::bundle::manifest_invalid))]
    ManifestInvalid { reason: String },

    #[error("manifest.json is not in canonical form (sorted keys, no whitespace, one final newline)")]
    #[diagnostic(code(aegis::bundle::manifest_not_canonical))]
    ManifestNotCanonical,

    #[error("unsupported bundle format {found:?} version {found_version} (this build reads {expected:?} version {expected_version})")]
    #[diagnostic(code(aegis::bundle::unsupported_format))]
    UnsupportedFormat {
        found: String,
        found_version: u64,
        expected: &'static str,
        expected_version: u32,
    },

    #[error("manifest.json lists file `{name}` more than once")]
    #[diagnostic(code(aegis::bundle::duplicate_file))]
    DuplicateFile { name: String },

    #[error("bundle file `{name}` is listed in manifest.json but missing from the bundle")]
    #[diagnostic(code(aegis::bundle::missing_file))]
    MissingFile { name: String },

    #[error("bundle file `{name}` is not listed in manifest.json")]
    #[diagnostic(
        code(aegis::bundle::unlisted_file),
        help("a bundle holds exactly the files its manifest lists; remove the extra file or rebuild")
    )]
    UnlistedFile { name: String },

    #[error("bundle file `{name}` does not match manifest.json: sha256 {actual}, expected {expected}")]
    #[diagnostic(code(aegis::bundle::digest_mismatch), help("the file was modified after the bundle was built"))]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    #[error("bundle file `{name}` is {actual} bytes, manifest.json says {expected}")]
    #[diagnostic(code(aegis::bundle::size_mismatch), help("the file was modified after the bundle was built"))]
    SizeMismatch { name: String, expected: u64, actual: u64 },

    #[error("bundle expired: issued at {issued_at}, expired at {expires_at}, now {now} (unix seconds)")]
    #[diagnostic(code(aegis::bundle::expired), help("rebuild and re-sign the bundle"))]
    Expired { issued_at: u64, expires_at: u64, now: u64 },

    #[error("bundle expiry {expires_at} is not after its issue time {issued_at}")]
    #[diagnostic(code(aegis::bundle::invalid_expiry))]
    InvalidExpiry { issued_at: u64, expires_at: u64 },

    #[error("rollback refused: bundle for agent `{agent}` has serial {serial}, older than the minimum {min_serial}")]
    #[diagnostic(
        code(aegis::bundle::rollback),
        help("an older bundle cannot replace a newer one; build with a higher serial")
    )]
    Rollback { agent: String, serial: u64, min_serial: u64 },

    #[error("invalid {what} {value:?}: {reason}")]
    #[diagnostic(code(aegis::bundle::invalid_field))]
    InvalidField {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("refusing to replace {path}: {reason}")]
    #[diagnostic(
        code(aegis::bundle::output_not_a_bundle),
        help("write the bundle to a new or empty directory, or to an existing bundle directory")
    )]
    OutputNotABundle { path: PathBuf, reason: String },

    #[error("SOURCE_DATE_EPOCH={value:?} is not a non-negative integer number of seconds")]
    #[diagnostic(code(aegis::bundle::invalid_source_date_epoch))]
    InvalidSourceDateEpoch { value: String },

    #[error("serial store {path} is corrupt: {reason}")]
    #[diagnostic(code(aegis::bundle::serial_store_corrupt))]
    SerialStoreCorrupt { path: PathBuf, reason: String },
}

impl BundleError {
    /// Exit status class (see [`EXIT_INVALID_INPUT`], [`EXIT_INTERNAL`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            BundleError::Key(k) => k.exit_code(),
            BundleError::Write { .. } | BundleError::SerialStoreCorrupt { .. } => EXIT_INTERNAL,
            _ => EXIT_INVALID_INPUT,
        }
    }

    /// The stable code (`aegis::bundle::…` / `aegis::key::…`), as miette shows it.
    pub fn code_str(&self) -> String {
        use miette::Diagnostic;
        self.code().map(|c| c.to_string()).unwrap_or_default()
    }
}
