//! Signing keys in minisign format: generate, store, load.
//!
//! Input: paths of a minisign secret key (unencrypted, as `minisign -G -W` or
//! [`generate_keypair`] writes it) or public key (`.pub`). Output: [`SecretKey`] /
//! [`PublicKey`]. Invariants: a secret key file is created with mode 0600 by `O_CREAT|O_EXCL`
//! and appears at its final path only complete (hard link or rename of a private temp file);
//! an existing key is never replaced unless asked; a secret key readable by group or others
//! is refused; key bytes are never put in an error, `Debug` output or log: only key ids.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ct_codecs::{Base64, Decoder, Encoder};
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::error::{KeyError, KeyId};

/// Key files are a few hundred bytes; anything much larger is not a key.
const MAX_KEY_FILE: u64 = 4096;
const SECRET_KEY_BYTES: usize = 158;
const PUBLIC_KEY_BYTES: usize = 42;
const SECRET_COMMENT: &str = "aegis unencrypted minisign secret key";

/// An Ed25519 signing key with its minisign key id. Zeroed on drop (by `ed25519-dalek`).
#[derive(Clone)]
pub struct SecretKey {
    keynum: [u8; 8],
    signing: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey {{ id: {}, .. }}", self.key_id())
    }
}

impl SecretKey {
    pub fn key_id(&self) -> KeyId {
        KeyId(self.keynum)
    }
    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            keynum: self.keynum,
            verifying: self.signing.verifying_key(),
        }
    }
    pub(crate) fn keynum(&self) -> [u8; 8] {
        self.keynum
    }
    pub(crate) fn signing(&self) -> &SigningKey {
        &self.signing
    }
}

/// An Ed25519 verification key with its minisign key id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    keynum: [u8; 8],
    verifying: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey {{ id: {} }}", self.key_id())
    }
}

impl PublicKey {
    pub fn key_id(&self) -> KeyId {
        KeyId(self.keynum)
    }
    pub(crate) fn verifying(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// Parses the base64 key line alone (as given to `minisign -P`).
    pub fn from_base64(line: &str) -> Result<PublicKey, &'static str> {
        let raw = Base64::decode_to_vec(line.trim(), None)
            .map_err(|_| "the key line is not valid base64")?;
        if raw.len() != PUBLIC_KEY_BYTES {
            return Err("the key has the wrong length");
        }
        if raw.get(0..2) != Some(b"Ed".as_slice()) {
            return Err("not an Ed25519 minisign key");
        }
        let keynum = array8(raw.get(2..10))?;
        let pk: [u8; 32] = raw
            .get(10..42)
            .and_then(|s| s.try_into().ok())
            .ok_or("the key has the wrong length")?;
        let verifying = VerifyingKey::from_bytes(&pk).map_err(|_| "not a valid Ed25519 point")?;
        Ok(PublicKey { keynum, verifying })
    }

    /// Parses a minisign `.pub` file's contents (comment line, then key line).
    pub fn from_minisign_str(text: &str) -> Result<PublicKey, &'static str> {
        let mut lines = text.lines();
        let comment = lines.next().ok_or("the file is empty")?;
        if !comment.starts_with("untrusted comment:") {
            return Err("the first line is not `untrusted comment: ...`");
        }
        let key = lines.next().ok_or("the key line is missing")?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err("unexpected lines after the key");
        }
        PublicKey::from_base64(key)
    }

    /// The key line (base64), as `minisign -P` takes it.
    pub fn to_base64(&self) -> String {
        let mut raw = Vec::with_capacity(PUBLIC_KEY_BYTES);
        raw.extend_from_slice(b"Ed");
        raw.extend_from_slice(&self.keynum);
        raw.extend_from_slice(self.verifying.as_bytes());
        Base64::encode_to_string(&raw).unwrap_or_default()
    }

    /// The standard minisign `.pub` file contents.
    pub fn to_minisign_string(&self) -> String {
        format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            self.to_base64()
        )
    }
}

fn array8(s: Option<&[u8]>) -> Result<[u8; 8], &'static str> {
    s.and_then(|s| s.try_into().ok()).ok_or("the key has the wrong length")
}

fn read_small(path: &Path, f: &mut File) -> Result<String, KeyError> {
    let mut buf = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| KeyError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::WrongFormat {
            path: path.to_path_buf(),
            expected: "key",
            reason: "the file is far too large to be a key",
        });
    }
    String::from_utf8(buf).map_err(|_| KeyError::WrongFormat {
        path: path.to_path_buf(),
        expected: "key",
        reason: "the file is not text",
    })
}

/// Loads a minisign public key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, KeyError> {
    let mut f = File::open(path).map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let text = read_small(path, &mut f)?;
    PublicKey::from_minisign_str(&text).map_err(|reason| KeyError::WrongFormat {
        path: path.to_path_buf(),
        expected: "public key",
        reason,
    })
}

/// Loads an unencrypted minisign secret key, refusing one that group or others can access.
pub fn load_secret_key(path: &Path) -> Result<SecretKey, KeyError> {
    let mut f = File::open(path).map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    // fstat the opened file, so the mode checked is the mode of the bytes read.
    let meta = f.metadata().map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(KeyError::WrongFormat {
            path: path.to_path_buf(),
            expected: "secret key",
            reason: "not a regular file",
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = read_small(path, &mut f)?;
    parse_secret_key(&text).map_err(|e| e.at(path))
}

/// Why a secret key text was refused (before the path is known).
enum SecretKeyProblem {
    Format(&'static str),
    Encrypted,
    Corrupt(&'static str),
}

impl SecretKeyProblem {
    fn at(self, path: &Path) -> KeyError {
        let path = path.to_path_buf();
        match self {
            SecretKeyProblem::Format(reason) => KeyError::WrongFormat {
                path,
                expected: "secret key",
                reason,
            },
            SecretKeyProblem::Encrypted => KeyError::Encrypted { path },
            SecretKeyProblem::Corrupt(reason) => KeyError::Corrupt { path, reason },
        }
    }
}

fn parse_secret_key(text: &str) -> Result<SecretKey, SecretKeyProblem> {
    use SecretKeyProblem::*;
    let mut lines = text.lines();
    let comment = lines.next().ok_or(Format("the file is empty"))?;
    if !comment.starts_with("untrusted comment:") {
        return Err(Format("the first line is not `untrusted comment: ...`"));
    }
    let line = lines.next().ok_or(Format("the key line is missing"))?;
    let raw = Base64::decode_to_vec(line.trim(), None)
        .map_err(|_| Format("the key line is not valid base64"))?;
    if raw.len() == PUBLIC_KEY_BYTES {
        return Err(Format("this is a public key; a secret key is needed to sign"));
    }
    if raw.len() != SECRET_KEY_BYTES {
        return Err(Format("the key has the wrong length"));
    }
    // Layout: sig_alg[2] kdf_alg[2] chk_alg[2] salt[32] opslimit[8] memlimit[8]
    //         keynum[8] sk[64] (seed || public) chk[32]
    let sig_alg = raw.get(0..2).unwrap_or_default();
    let kdf_alg = raw.get(2..4).unwrap_or_default();
    if sig_alg != b"Ed" {
        return Err(Format("not an Ed25519 minisign key"));
    }
    if kdf_alg == b"Sc" {
        return Err(Encrypted);
    }
    if kdf_alg != [0, 0] {
        return Err(Format("unknown key encryption algorithm"));
    }
    let keynum: [u8; 8] = raw
        .get(54..62)
        .and_then(|s| s.try_into().ok())
        .ok_or(Format("the key has the wrong length"))?;
    let seed: [u8; 32] = raw
        .get(62..94)
        .and_then(|s| s.try_into().ok())
        .ok_or(Format("the key has the wrong length"))?;
    let public = raw.get(94..126).unwrap_or_default();
    let chk = raw.get(126..158).unwrap_or_default();
    // minisign -G -W leaves the checksum zero; keys made by the minisign crate fill it in.
    if chk.iter().any(|&b| b != 0) {
        let mut h = Blake2b::<U32>::new();
        h.update(sig_alg);
        h.update(keynum);
        h.update(raw.get(62..126).unwrap_or_default());
        if h.finalize().as_slice() != chk {
            return Err(Corrupt("its checksum does not match"));
        }
    }
    let signing = SigningKey::from_bytes(&seed);
    if signing.verifying_key().as_bytes().as_slice() != public {
        return Err(Corrupt("its public half does not match its secret half"));
    }
    Ok(SecretKey { keynum, signing })
}

fn tmp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    target.with_file_name(format!(".{name}.tmp.{}.{nanos}", std::process::id()))
}

/// Writes `bytes` to `target` with `mode`: first to a private temp file created with that
/// mode (never wider, not even briefly), then linked (no overwrite) or renamed into place.
fn write_key_file(target: &Path, bytes: &[u8], mode: u32, overwrite: bool) -> Result<(), KeyError> {
    let werr = |source| KeyError::Write {
        path: target.to_path_buf(),
        source,
    };
    let tmp = tmp_path(target);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(bytes).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        if overwrite {
            fs::rename(&tmp, target).map_err(werr)
        } else {
            fs::hard_link(&tmp, target).map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::Exists {
                        path: target.to_path_buf(),
                    }
                } else {
                    werr(source)
                }
            })
        }
    })();
    // After a rename the temp path is gone already; after a link it is a second name.
    let _ = fs::remove_file(&tmp);
    result
}

/// Generates a new key pair: an unencrypted minisign secret key (mode 0600) at
/// `secret_path` and the standard minisign public key at `public_path` (mode 0644).
/// Refuses to replace existing files unless `overwrite`. Returns the public key.
pub fn generate_keypair(
    secret_path: &Path,
    public_path: &Path,
    overwrite: bool,
) -> Result<PublicKey, KeyError> {
    if secret_path == public_path {
        return Err(KeyError::SamePath {
            path: secret_path.to_path_buf(),
        });
    }
    if !overwrite {
        for p in [secret_path, public_path] {
            if fs::symlink_metadata(p).is_ok() {
                return Err(KeyError::Exists {
                    path: p.to_path_buf(),
                });
            }
        }
    }
    let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| KeyError::Generate {
        reason: e.to_string(),
    })?;
    let sk_box = kp
        .sk
        .to_box(Some(SECRET_COMMENT))
        .map_err(|e| KeyError::Generate {
            reason: e.to_string(),
        })?
        .into_string();
    // Round-trip through our own parser: what we write is exactly what we can load.
    let secret = parse_secret_key(&sk_box).map_err(|_| KeyError::Generate {
        reason: "the generated key does not parse".to_string(),
    })?;
    let public = secret.public_key();
    write_key_file(secret_path, sk_box.as_bytes(), 0o600, overwrite)?;
    write_key_file(public_path, public.to_minisign_string().as_bytes(), 0o644, overwrite)?;
    Ok(public)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minisign_crate_public_box_parses_the_same() {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let text = kp.pk.to_box().unwrap().into_string();
        let pk = PublicKey::from_minisign_str(&text).unwrap();
        assert_eq!(pk.key_id().0.as_slice(), kp.pk.keynum());
        // Same key line; the comment follows the minisign tool (no colon), not the crate.
        assert_eq!(pk.to_base64(), kp.pk.to_base64());
        assert_eq!(pk.to_minisign_string().lines().nth(1), text.lines().nth(1));
    }
}
