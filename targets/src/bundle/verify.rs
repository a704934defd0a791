//! Opening and verifying a bundle directory.
//!
//! Input: a bundle directory and a [`TrustPolicy`] (trusted public key, whether unsigned
//! bundles are acceptable, the current time, the minimum serial). Output: a
//! [`VerifiedBundle`], the only way the runtime and compiler get at a bundle's contents.
//! Invariants: every file is read exactly once, with `O_NOFOLLOW`, checked to be a regular
//! file by `fstat` on the opened descriptor, hashed, and kept in memory: the bytes a caller
//! uses are the bytes that were verified (no TOCTOU). The checks run in a fixed order, so
//! the same bundle always gives the same error: names and file types, manifest present,
//! signature, manifest format and fields, unlisted files, missing files, digests, expiry,
//! serial.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{BundleError, KeyId};
use super::keys::PublicKey;
use super::manifest::{FileEntry, Manifest};
use super::names::{file_name_problem, MANIFEST_FILE, SIGNATURE_FILE};
use super::signature::DetachedSignature;

/// Largest file accepted in a bundle (artifacts are kilobytes; this bounds memory).
pub const MAX_FILE_SIZE: u64 = 64 * 1024 * 1024;

/// What the verifier trusts.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    /// The signer's public key. With `None`, only `allow_unsigned` bundles can pass.
    pub key: Option<PublicKey>,
    /// Accept a bundle without a verified signature (development only). A signature that is
    /// present while a key is given is still checked.
    pub allow_unsigned: bool,
    /// Current time, unix seconds (see [`super::now_unix`]), for expiry.
    pub now: u64,
    /// Refuse bundles whose serial is lower (rollback protection).
    pub min_serial: Option<u64>,
}

impl TrustPolicy {
    /// Require a valid signature by `key`; expiry against the clock; no minimum serial.
    pub fn signed_by(key: PublicKey) -> TrustPolicy {
        TrustPolicy {
            key: Some(key),
            allow_unsigned: false,
            now: super::now_unix(),
            min_serial: None,
        }
    }

    /// Accept a bundle without checking any signature (development, or reading a bundle
    /// only to inspect it, as `aegisc diff` does). Digests, expiry and the rest still apply.
    pub fn unsigned_ok() -> TrustPolicy {
        TrustPolicy {
            key: None,
            allow_unsigned: true,
            now: super::now_unix(),
            min_serial: None,
        }
    }
}

/// A bundle directory read into memory, not yet verified: nothing can be taken out of it.
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
}

/// A bundle whose signature (if required), manifest and every file digest were checked.
/// Only [`Bundle::verify`] can make one.
#[derive(Clone, Debug)]
pub struct VerifiedBundle {
    dir: PathBuf,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    manifest_sha256: String,
    files: BTreeMap<String, Vec<u8>>,
    signed_by: Option<KeyId>,
}

impl VerifiedBundle {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The exact bytes of `manifest.json`.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }
    /// Hex SHA-256 of `manifest.json`: identifies the bundle (for the audit log).
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }
    /// The verified bytes of one artifact (`None` if the bundle has no such file).
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }
    /// Every artifact (not the manifest or signature), by name.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }
    /// The key whose signature was verified; `None` for an unsigned bundle accepted by
    /// `allow_unsigned`.
    pub fn signed_by(&self) -> Option<KeyId> {
        self.signed_by
    }
}

fn file_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        "symbolic link"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

impl Bundle {
    /// Reads every file of the bundle directory `dir` (refusing odd names and anything that
    /// is not a regular file).
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let rerr = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| BundleError::Read {
                action,
                path,
                source,
            }
        };
        let meta = fs::metadata(dir).map_err(rerr("open bundle directory", dir))?;
        if !meta.is_dir() {
            return Err(BundleError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(rerr("list bundle directory", dir))? {
            let entry = entry.map_err(rerr("list bundle directory", dir))?;
            let ft = entry.file_type().map_err(rerr("inspect", &entry.path()))?;
            entries.push((entry.file_name(), ft));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut files = BTreeMap::new();
        for (os_name, ft) in entries {
            let Some(name) = os_name.to_str().map(str::to_string) else {
                return Err(BundleError::BadFileName {
                    name: os_name.to_string_lossy().into_owned(),
                    reason: "not UTF-8",
                });
            };
            if let Some(reason) = file_name_problem(&name) {
                return Err(BundleError::BadFileName { name, reason });
            }
            if !ft.is_file() {
                return Err(BundleError::NotRegularFile {
                    kind: file_kind(&ft),
                    name,
                });
            }
            let path = dir.join(&name);
            // O_NOFOLLOW: a symlink swapped in after listing fails to open; O_NONBLOCK: a
            // FIFO swapped in does not hang us. fstat below then checks what we opened.
            let f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path)
                .map_err(rerr("open", &path))?;
            let meta = f.metadata().map_err(rerr("inspect", &path))?;
            if !meta.is_file() {
                return Err(BundleError::NotRegularFile {
                    kind: file_kind(&meta.file_type()),
                    name,
                });
            }
            if meta.len() > MAX_FILE_SIZE {
                return Err(BundleError::FileTooLarge {
                    name,
                    size: meta.len(),
                    limit: MAX_FILE_SIZE,
                });
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            f.take(MAX_FILE_SIZE + 1)
                .read_to_end(&mut bytes)
                .map_err(rerr("read", &path))?;
            if bytes.len() as u64 > MAX_FILE_SIZE {
                return Err(BundleError::FileTooLarge {
                    name,
                    size: bytes.len() as u64,
                    limit: MAX_FILE_SIZE,
                });
            }
            files.insert(name, bytes);
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// Builds a bundle from files already in memory (e.g. [`super::BundleContents::files`]),
    /// to verify it without touching the disk.
    pub fn from_files(dir: &Path, files: BTreeMap<String, Vec<u8>>) -> Result<Bundle, BundleError> {
        for name in files.keys() {
            if let Some(reason) = file_name_problem(name) {
                return Err(BundleError::BadFileName {
                    name: name.clone(),
                    reason,
                });
            }
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            files,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Verifies the bundle against `trust` (see the module docs for the order of checks).
    pub fn verify(self, trust: &TrustPolicy) -> Result<VerifiedBundle, BundleError> {
        let Bundle { dir, mut files } = self;
        let manifest_bytes = files
            .remove(MANIFEST_FILE)
            .ok_or_else(|| BundleError::MissingManifest { dir: dir.clone() })?;
        let signature = files.remove(SIGNATURE_FILE);

        let signed_by = match (signature, &trust.key) {
            (Some(sig), Some(key)) => {
                let sig = DetachedSignature::parse(&sig)?;
                sig.verify(&manifest_bytes, key)?;
                Some(key.key_id())
            }
            (None, Some(_)) if !trust.allow_unsigned => {
                return Err(BundleError::MissingSignature { dir });
            }
            (_, None) if !trust.allow_unsigned => {
                return Err(BundleError::NoTrustedKey { dir });
            }
            _ => None,
        };

        let manifest = Manifest::from_bytes(&manifest_bytes)?;
        let listed = manifest.files.entries();
        if let Some(name) = files.keys().find(|n| !listed.contains_key(*n)) {
            return Err(BundleError::UnlistedFile { name: name.clone() });
        }
        if let Some(name) = listed.keys().find(|n| !files.contains_key(*n)) {
            return Err(BundleError::MissingFile { name: name.clone() });
        }
        for (name, expected) in listed {
            let bytes = files.get(name).map(Vec::as_slice).unwrap_or_default();
            check_file(name, expected, bytes)?;
        }
        if let Some(expires_at) = manifest.expires_at
            && trust.now >= expires_at
        {
            return Err(BundleError::Expired {
                issued_at: manifest.issued_at,
                expires_at,
                now: trust.now,
            });
        }
        if let Some(min_serial) = trust.min_serial
            && manifest.serial < min_serial
        {
            return Err(BundleError::Rollback {
                agent: manifest.agent.clone(),
                serial: manifest.serial,
                min_serial,
            });
        }
        let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
        Ok(VerifiedBundle {
            dir,
            manifest,
            manifest_bytes,
            manifest_sha256,
            files,
            signed_by,
        })
    }
}

fn check_file(name: &str, expected: &FileEntry, bytes: &[u8]) -> Result<(), BundleError> {
    let actual = FileEntry::of(bytes);
    if actual.size != expected.size {
        return Err(BundleError::SizeMismatch {
            name: name.to_string(),
            expected: expected.size,
            actual: actual.size,
        });
    }
    if actual.sha256 != expected.sha256 {
        return Err(BundleError::DigestMismatch {
            name: name.to_string(),
            expected: expected.sha256.clone(),
            actual: actual.sha256,
        });
    }
    Ok(())
}

/// Opens and verifies the bundle at `dir`.
pub fn verify(dir: &Path, trust: &TrustPolicy) -> Result<VerifiedBundle, BundleError> {
    Bundle::open(dir)?.verify(trust)
}
