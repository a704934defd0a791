//! The signed, reproducible bundle: a directory of artifacts plus `manifest.json` (what the
//! bundle is, what it needs from the host, and the SHA-256 of every other file) and its
//! minisign signature `manifest.json.minisig`. Format: `docs/bundle.md`.
//!
//! Input: artifacts and [`ManifestFields`] from the compiler ([`BundleWriter`]), a signing
//! key ([`load_secret_key`], [`generate_keypair`]); on a host, a bundle directory and a
//! [`TrustPolicy`] ([`verify`]). Output: a bundle directory; a [`VerifiedBundle`], the only
//! handle through which the runtime gets artifact bytes. Invariants: the same inputs give
//! byte-identical files, signature included (no clock, no randomness: issue time and serial
//! come from the caller, see [`source_date_epoch`]); the manifest is canonical JSON; a
//! bundle verifies only if its signature (unless explicitly allowed unsigned), manifest,
//! file set and every digest match; every error has a stable `aegis::bundle::*` or
//! `aegis::key::*` code and exit code 2 when the input is at fault.
//!
//! ```text
//! keygen:   generate_keypair(&secret_path, &public_path, force)?
//! build:    let key = load_secret_key(&key_path)?;
//!           let mut w = BundleWriter::new(fields);   // issued_at from source_date_epoch()
//!           w.add("landlock.json", bytes)?; ...
//!           w.write(&out_dir, Some(&key))?;
//! verify:   verify(&dir, &TrustPolicy::signed_by(load_public_key(&pub_path)?))?
//! runtime:  let b = verify(&dir, &TrustPolicy::signed_by(pk))?;
//!           SerialStore::new("/var/lib/aegis/serials.json")
//!               .check_and_record(&b.manifest().agent, b.manifest().serial)?;
//!           b.file("landlock.json")
//! errors:   miette::Report::new(e) to render; std::process::exit(e.exit_code())
//! ```

mod canonical;
pub mod contract;
mod error;
mod keys;
mod manifest;
mod names;
mod serial;
mod signature;
mod verify;
mod writer;

pub use canonical::to_canonical_json;
pub use error::{BundleError, EXIT_INTERNAL, EXIT_INVALID_INPUT, KeyError, KeyId};
pub use keys::{PublicKey, SecretKey, generate_keypair, load_public_key, load_secret_key};
pub use manifest::{
    CgroupVersion, CompilerInfo, Enforcement, FORMAT, FORMAT_VERSION, FileEntry, Files,
    KernelRequirements, LaunchParameter, Manifest, ManifestFields, Namespace, NetworkMode,
};
pub use names::{MANIFEST_FILE, SIGNATURE_FILE, check_artifact_name, check_identifier};
pub use serial::SerialStore;
pub use signature::{DetachedSignature, UNTRUSTED_COMMENT, sign_detached};
pub use verify::{Bundle, MAX_FILE_SIZE, TrustPolicy, VerifiedBundle, verify};
pub use writer::{BundleContents, BundleWriter};

/// The environment variable reproducible builds set to fix timestamps.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// Reads `SOURCE_DATE_EPOCH` (unix seconds) for the issue time: `Ok(None)` when unset or
/// empty, an error when set to anything but a non-negative integer.
pub fn source_date_epoch() -> Result<Option<u64>, BundleError> {
    match std::env::var_os(SOURCE_DATE_EPOCH) {
        None => Ok(None),
        Some(v) => parse_source_date_epoch(&v.to_string_lossy()),
    }
}

/// Parses a `SOURCE_DATE_EPOCH` value (see [`source_date_epoch`]).
pub fn parse_source_date_epoch(value: &str) -> Result<Option<u64>, BundleError> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BundleError::InvalidSourceDateEpoch {
            value: value.to_string(),
        });
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| BundleError::InvalidSourceDateEpoch {
            value: value.to_string(),
        })
}

/// The current time in unix seconds (0 if the clock is before 1970), for
/// [`TrustPolicy::now`] on a host, never for anything written into a bundle.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
