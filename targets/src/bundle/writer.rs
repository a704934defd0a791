//! Writing a bundle directory.
//!
//! Input: [`ManifestFields`] from the compiler, artifact files (name → bytes), an optional
//! [`SecretKey`], and the output directory. Output: the directory holding every artifact,
//! `manifest.json` (canonical) and, when signed, `manifest.json.minisig`.
//! Invariants: the same input gives the same bytes in every file (no clock, no randomness,
//! sorted names); the output directory appears complete or not at all: files are written to
//! a sibling temp directory, then renamed into place (an existing bundle is swapped out
//! atomically with `RENAME_EXCHANGE`); a directory that is not a bundle is never replaced.
//! Files are not fsynced: a torn write after a crash fails verification (digests), so it
//! can never be launched, and skipping fsync keeps `aegisc build` fast.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{BundleError, KeyId};
use super::keys::SecretKey;
use super::manifest::{Manifest, ManifestFields};
use super::names::{check_artifact_name, file_name_problem, MANIFEST_FILE, SIGNATURE_FILE};
use super::signature::sign_detached;

/// Collects artifacts, then builds (in memory) or writes a bundle.
#[derive(Clone, Debug)]
pub struct BundleWriter {
    fields: ManifestFields,
    artifacts: BTreeMap<String, Vec<u8>>,
}

impl BundleWriter {
    pub fn new(fields: ManifestFields) -> BundleWriter {
        BundleWriter {
            fields,
            artifacts: BTreeMap::new(),
        }
    }

    /// Adds one artifact file. The name must be a valid bundle file name, not reserved, and
    /// not added before.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<&mut BundleWriter, BundleError> {
        let name = name.into();
        check_artifact_name(&name)?;
        if self.artifacts.contains_key(&name) {
            return Err(BundleError::DuplicateFile { name });
        }
        self.artifacts.insert(name, bytes.into());
        Ok(self)
    }

    /// Builds every file of the bundle in memory (manifest, digests, signature).
    pub fn build(self, key: Option<&SecretKey>) -> Result<BundleContents, BundleError> {
        let manifest = Manifest::new(self.fields, &self.artifacts)?;
        let manifest_bytes = manifest.to_canonical_bytes()?;
        let manifest_sha256 = hex::encode(Sha256::digest(&manifest_bytes));
        let mut files = self.artifacts;
        if let Some(key) = key {
            let sig = sign_detached(&manifest_bytes, key, &manifest.trusted_comment())?;
            files.insert(SIGNATURE_FILE.to_string(), sig.into_bytes());
        }
        files.insert(MANIFEST_FILE.to_string(), manifest_bytes);
        Ok(BundleContents {
            manifest,
            files,
            manifest_sha256,
            signed_by: key.map(SecretKey::key_id),
        })
    }

    /// Builds the bundle and writes it to `dir` (see [`BundleContents::write_to`]).
    pub fn write(self, dir: &Path, key: Option<&SecretKey>) -> Result<BundleContents, BundleError> {
        let contents = self.build(key)?;
        contents.write_to(dir)?;
        Ok(contents)
    }
}

/// Every file of a built bundle, in memory.
#[derive(Clone, Debug)]
pub struct BundleContents {
    manifest: Manifest,
    files: BTreeMap<String, Vec<u8>>,
    manifest_sha256: String,
    signed_by: Option<KeyId>,
}

impl BundleContents {
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// All files, including `manifest.json` and `manifest.json.minisig`, by name.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }
    /// Hex SHA-256 of `manifest.json`: identifies the whole bundle.
    pub fn manifest_sha256(&self) -> &str {
        &self.manifest_sha256
    }
    /// The key that signed it, if signed.
    pub fn signed_by(&self) -> Option<KeyId> {
        self.signed_by
    }

    /// Writes the bundle to `dir`: new, empty, or an existing bundle (replaced atomically).
    pub fn write_to(&self, dir: &Path) -> Result<(), BundleError> {
        let existing = check_output_dir(dir)?;
        let tmp = sibling(dir, "tmp")?;
        let result = self.write_files(&tmp).and_then(|()| install(&tmp, dir, existing));
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn write_files(&self, tmp: &Path) -> Result<(), BundleError> {
        fs::create_dir(tmp).map_err(|source| BundleError::Write {
            action: "create directory",
            path: tmp.to_path_buf(),
            source,
        })?;
        for (name, bytes) in &self.files {
            let path = tmp.join(name);
            let werr = |source| BundleError::Write {
                action: "write",
                path: path.clone(),
                source,
            };
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .map_err(werr)?;
            f.write_all(bytes).map_err(werr)?;
        }
        Ok(())
    }
}

/// What is at the output path now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Existing {
    Nothing,
    EmptyDir,
    Bundle,
}

fn refuse(dir: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::OutputNotABundle {
        path: dir.to_path_buf(),
        reason: reason.into(),
    }
}

/// Only a missing path, an empty directory or a directory that looks like a bundle (regular
/// files with bundle names, including `manifest.json`) may be replaced.
fn check_output_dir(dir: &Path) -> Result<Existing, BundleError> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(source) => {
            return Err(BundleError::Write {
                action: "inspect",
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(dir, "it is a symbolic link"));
    }
    if !meta.is_dir() {
        return Err(refuse(dir, "it exists and is not a directory"));
    }
    let rerr = |source| BundleError::Write {
        action: "list directory",
        path: dir.to_path_buf(),
        source,
    };
    let mut has_manifest = false;
    let mut count = 0usize;
    for entry in fs::read_dir(dir).map_err(rerr)? {
        let entry = entry.map_err(rerr)?;
        count += 1;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ft = entry.file_type().map_err(rerr)?;
        if !ft.is_file() || file_name_problem(&name).is_some() {
            return Err(refuse(
                dir,
                format!("it contains `{name}`, which no bundle holds"),
            ));
        }
        has_manifest |= name == MANIFEST_FILE;
    }
    match (count, has_manifest) {
        (0, _) => Ok(Existing::EmptyDir),
        (_, true) => Ok(Existing::Bundle),
        (_, false) => Err(refuse(dir, "it is a non-empty directory without manifest.json")),
    }
}

/// A fresh hidden path next to `dir` (same filesystem, so renames are atomic).
fn sibling(dir: &Path, what: &str) -> Result<PathBuf, BundleError> {
    let name = dir
        .file_name()
        .ok_or_else(|| refuse(dir, "the path has no final component"))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Ok(dir.with_file_name(format!(
        ".{}.{what}-{}-{nanos}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn install(tmp: &Path, dir: &Path, existing: Existing) -> Result<(), BundleError> {
    let werr = |action, source| BundleError::Write {
        action,
        path: dir.to_path_buf(),
        source,
    };
    match existing {
        // rename(2) replaces an empty directory atomically.
        Existing::Nothing | Existing::EmptyDir => {
            fs::rename(tmp, dir).map_err(|e| werr("move the new bundle to", e))
        }
        Existing::Bundle => match exchange(tmp, dir) {
            Ok(()) => fs::remove_dir_all(tmp).map_err(|e| werr("remove the old bundle replaced at", e)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                // Filesystem without RENAME_EXCHANGE: move the old one aside first. There is
                // a moment with no bundle at `dir`, never a mixed one.
                let old = sibling(dir, "old")?;
                fs::rename(dir, &old).map_err(|e| werr("move aside the old bundle", e))?;
                fs::rename(tmp, dir).map_err(|e| werr("move the new bundle to", e))?;
                fs::remove_dir_all(&old).map_err(|e| werr("remove the old bundle replaced at", e))
            }
            Err(e) => Err(werr("swap the new bundle into", e)),
        },
    }
}

/// Atomically swaps two paths (renameat2 RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; AT_FDCWD
    // makes relative paths relative to the working directory, as std's rename does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
