//! Signed checkpoints. Input: a log position (records, bytes), its Merkle tree head and the
//! checkpoint record's own time, host and boot id; output: a one-line body and its minisign
//! signature (two base64 lines), and the check of both. Invariants: the body is
//! `aegis-audit-checkpoint-v1 records=N bytes=B root=HEX ts=TS host=H boot=I` with H and I
//! restricted to `[A-Za-z0-9._:-]`; the signed data and the trusted comment are both the body,
//! so `minisign -V` verifies a checkpoint with the standard tool; only the canonical base64 of
//! the signature is accepted, so no byte of a checkpoint record can change unnoticed.

use std::io::Cursor;
use std::path::Path;

pub use aegis_targets::bundle::KeyId;
use minisign::{PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use crate::error::AuditError;

/// Untrusted comment of the minisign signature of a checkpoint (fixed, so it carries no data).
pub const UNTRUSTED_COMMENT: &str = "aegis-audit checkpoint";

/// A secret key that signs checkpoints (unencrypted minisign secret key).
pub struct SigningKey {
    sk: SecretKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Load an unencrypted minisign secret key file (`minisign -G -W`, `aegisc keygen`).
    pub fn from_file(path: &Path) -> Result<SigningKey, AuditError> {
        let text =
            std::fs::read_to_string(path).map_err(AuditError::io("reading secret key", path))?;
        SigningKey::from_box_str(&text).map_err(|msg| AuditError::Key {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parse the text of an unencrypted minisign secret key file.
    pub fn from_box_str(text: &str) -> Result<SigningKey, String> {
        match SecretKeyBox::from_string(text).and_then(SecretKeyBox::into_unencrypted_secret_key) {
            Ok(sk) => Ok(SigningKey { sk }),
            Err(e) => zero_checksum_key(text)
                .ok_or_else(|| format!("not an unencrypted minisign secret key: {e}")),
        }
    }

    /// Wrap a minisign secret key (must be unencrypted).
    pub fn from_secret_key(sk: SecretKey) -> SigningKey {
        SigningKey { sk }
    }

    /// The key id, printed as every AEGIS tool and `minisign` print it.
    pub fn key_id(&self) -> KeyId {
        key_id(self.sk.keynum())
    }

    /// Sign a checkpoint body: returns (signature line, global signature line), both base64.
    pub(crate) fn sign_body(&self, body: &str) -> Result<(String, String), AuditError> {
        let sb = minisign::sign(
            None,
            &self.sk,
            Cursor::new(body.as_bytes()),
            Some(body),
            Some(UNTRUSTED_COMMENT),
        )
        .map_err(|e| AuditError::Sign(e.to_string()))?;
        let text = sb.into_string();
        let mut lines = text.lines();
        match (lines.next(), lines.next(), lines.next(), lines.next()) {
            (Some(_), Some(sig), Some(_), Some(global)) => {
                Ok((sig.to_string(), global.to_string()))
            }
            _ => Err(AuditError::Sign(
                "minisign produced an incomplete signature".into(),
            )),
        }
    }
}

/// A minisign key number (8 bytes as stored in key files and signatures) as the one
/// [`KeyId`] type, whose `Display` is the single formatting of key ids across AEGIS.
fn key_id(keynum: &[u8]) -> KeyId {
    let mut id = [0u8; 8];
    for (d, s) in id.iter_mut().zip(keynum) {
        *d = *s;
    }
    KeyId(id)
}

/// The C `minisign -G -W` (0.11) writes unencrypted secret keys with an all-zero checksum,
/// which the Rust crate rejects as corrupted. Accept exactly that form: algorithm `Ed`, no KDF,
/// checksum algorithm `B2`, zero checksum.
fn zero_checksum_key(text: &str) -> Option<SigningKey> {
    use ct_codecs::{Base64, Decoder};
    let line = text.lines().nth(1)?.trim();
    let raw = Base64::decode_to_vec(line, None).ok()?;
    let (head, chk) = (raw.get(..6)?, raw.get(126..)?);
    if raw.len() != 158 || head != b"Ed\0\0B2" || chk.iter().any(|&b| b != 0) {
        return None;
    }
    let sk = SecretKey::from_bytes(&raw).ok()?;
    (!sk.is_encrypted()).then_some(SigningKey { sk })
}

/// A public key that verifies checkpoints (standard minisign public key file).
#[derive(Clone)]
pub struct VerifyingKey {
    pk: PublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.key_id())
    }
}

impl VerifyingKey {
    /// Load a minisign public key file.
    pub fn from_file(path: &Path) -> Result<VerifyingKey, AuditError> {
        let text =
            std::fs::read_to_string(path).map_err(AuditError::io("reading public key", path))?;
        VerifyingKey::from_box_str(&text).map_err(|msg| AuditError::Key {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parse the text of a minisign public key file.
    pub fn from_box_str(text: &str) -> Result<VerifyingKey, String> {
        let pk = PublicKeyBox::from_string(text)
            .and_then(PublicKeyBox::into_public_key)
            .map_err(|e| format!("not a minisign public key: {e}"))?;
        Ok(VerifyingKey { pk })
    }

    /// Wrap a minisign public key.
    pub fn from_public_key(pk: PublicKey) -> VerifyingKey {
        VerifyingKey { pk }
    }

    /// The key id, printed as every AEGIS tool and `minisign` print it.
    pub fn key_id(&self) -> KeyId {
        key_id(self.pk.keynum())
    }

    /// Check a body against its signature lines; `Err` says why not.
    pub fn verify_body(&self, body: &str, sig: &str, global_sig: &str) -> Result<(), String> {
        let text = signature_file(body, sig, global_sig);
        let sb =
            SignatureBox::from_string(&text).map_err(|e| format!("malformed signature: {e}"))?;
        if sb.to_string() != text {
            return Err("signature is not in canonical minisign encoding".into());
        }
        minisign::verify(
            &self.pk,
            &sb,
            Cursor::new(body.as_bytes()),
            true,
            false,
            false,
        )
        .map_err(|e| format!("signature does not verify with key {}: {e}", self.key_id()))
    }
}

/// The body a checkpoint signs (one line, no newline).
pub fn checkpoint_body(
    records: u64,
    bytes: u64,
    root_hex: &str,
    ts: &str,
    host: &str,
    boot: &str,
) -> String {
    format!(
        "aegis-audit-checkpoint-v1 records={records} bytes={bytes} root={root_hex} ts={ts} host={host} boot={boot}"
    )
}

/// The `.minisig` file text of a checkpoint (what `minisign -V -x` reads).
pub fn signature_file(body: &str, sig: &str, global_sig: &str) -> String {
    format!(
        "untrusted comment: {UNTRUSTED_COMMENT}\n{sig}\ntrusted comment: {body}\n{global_sig}\n"
    )
}
