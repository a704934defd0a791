//! The detached minisign signature of `manifest.json` (`manifest.json.minisig`).
//!
//! Input: the manifest bytes and a [`SecretKey`] (signing), or the signature file bytes and
//! a [`PublicKey`] (verifying). Output: the four-line minisign signature file, or a precise
//! error. Invariants: signatures are the prehashed minisign kind (`ED`: Ed25519 over
//! BLAKE2b-512 of the file) with a global signature over signature || trusted comment, the
//! format `minisign -Vm` checks; they are deterministic (RFC 8032 Ed25519, as the minisign
//! tool makes them), so the same manifest and key give the same bytes; legacy (`Ed`)
//! signatures are refused; a signature file is accepted only in the exact bytes this module
//! writes (so `minisign -S` can make one with `-c 'aegis bundle manifest signature'`).

use blake2::{Blake2b512, Digest};
use ct_codecs::{Base64, Decoder, Encoder};
use ed25519_dalek::{Signature, Signer};

use super::error::{BundleError, KeyId};
use super::keys::{PublicKey, SecretKey};

/// The untrusted comment of every bundle signature (fixed, so signatures are reproducible).
pub const UNTRUSTED_COMMENT: &str = "aegis bundle manifest signature";
const MAX_SIGNATURE_FILE: usize = 4096;

/// The contents of a minisign signature file for `data`. The trusted comment must be one
/// line without control characters or surrounding spaces (minisign trims them).
pub fn sign_detached(
    data: &[u8],
    key: &SecretKey,
    trusted_comment: &str,
) -> Result<String, BundleError> {
    if trusted_comment.chars().any(char::is_control) || trusted_comment.trim() != trusted_comment {
        return Err(BundleError::InvalidField {
            what: "trusted comment",
            value: trusted_comment.to_string(),
            reason: "must be one line without control characters or surrounding spaces",
        });
    }
    let prehash = Blake2b512::digest(data);
    let signature = key.signing().sign(&prehash).to_bytes();
    let mut sig_and_comment = signature.to_vec();
    sig_and_comment.extend_from_slice(trusted_comment.as_bytes());
    let global = key.signing().sign(&sig_and_comment).to_bytes();
    Ok(DetachedSignature {
        keynum: key.keynum(),
        signature,
        trusted_comment: trusted_comment.to_string(),
        global,
    }
    .encode())
}

/// A parsed (not yet verified) signature file.
#[derive(Clone, Debug)]
pub struct DetachedSignature {
    keynum: [u8; 8],
    signature: [u8; 64],
    trusted_comment: String,
    global: [u8; 64],
}

fn corrupt(reason: &'static str) -> BundleError {
    BundleError::CorruptSignature { reason }
}

impl DetachedSignature {
    /// Parses a minisign signature file.
    pub fn parse(bytes: &[u8]) -> Result<DetachedSignature, BundleError> {
        if bytes.len() > MAX_SIGNATURE_FILE {
            return Err(corrupt("the file is far too large to be a signature"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("the file is not text"))?;
        let mut lines = text.lines();
        let l1 = lines.next().ok_or(corrupt("the file is empty"))?;
        if !l1.starts_with("untrusted comment:") {
            return Err(corrupt("the first line is not `untrusted comment: ...`"));
        }
        let l2 = lines.next().ok_or(corrupt("the signature line is missing"))?;
        let l3 = lines
            .next()
            .ok_or(corrupt("the trusted comment line is missing"))?;
        let l4 = lines
            .next()
            .ok_or(corrupt("the global signature line is missing"))?;
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(corrupt("unexpected lines after the signature"));
        }
        let raw = Base64::decode_to_vec(l2.trim(), None)
            .map_err(|_| corrupt("the signature line is not valid base64"))?;
        if raw.len() != 74 {
            return Err(corrupt("the signature line has the wrong length"));
        }
        match raw.get(0..2) {
            Some(b"ED") => {}
            Some(b"Ed") => {
                return Err(corrupt(
                    "legacy (non-prehashed) minisign signature; only `ED` signatures are accepted",
                ));
            }
            _ => return Err(corrupt("unknown signature algorithm")),
        }
        let keynum = raw
            .get(2..10)
            .and_then(|s| s.try_into().ok())
            .ok_or(corrupt("the signature line has the wrong length"))?;
        let signature = raw
            .get(10..74)
            .and_then(|s| s.try_into().ok())
            .ok_or(corrupt("the signature line has the wrong length"))?;
        let trusted_comment = l3
            .strip_prefix("trusted comment: ")
            .ok_or(corrupt("the third line is not `trusted comment: ...`"))?
            .trim()
            .to_string();
        let g = Base64::decode_to_vec(l4.trim(), None)
            .map_err(|_| corrupt("the global signature line is not valid base64"))?;
        let global = g
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("the global signature has the wrong length"))?;
        let parsed = DetachedSignature {
            keynum,
            signature,
            trusted_comment,
            global,
        };
        // Only the exact bytes aegis writes are accepted, so that no byte of the file (not
        // even the unsigned untrusted comment, base64 padding bits or line endings) can be
        // changed unnoticed.
        if parsed.encode() != text {
            return Err(corrupt(
                "not in the exact form aegis writes (untrusted comment `aegis bundle manifest signature`, LF line endings, canonical base64)",
            ));
        }
        Ok(parsed)
    }

    fn encode(&self) -> String {
        let mut line2 = Vec::with_capacity(74);
        line2.extend_from_slice(b"ED");
        line2.extend_from_slice(&self.keynum);
        line2.extend_from_slice(&self.signature);
        format!(
            "untrusted comment: {UNTRUSTED_COMMENT}\n{}\ntrusted comment: {}\n{}\n",
            Base64::encode_to_string(&line2).unwrap_or_default(),
            self.trusted_comment,
            Base64::encode_to_string(self.global).unwrap_or_default()
        )
    }

    /// The id of the key that made this signature (as claimed by the file).
    pub fn key_id(&self) -> KeyId {
        KeyId(self.keynum)
    }

    /// The trusted comment (authentic only after [`DetachedSignature::verify`]).
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// Checks that `key` signed `data` and the trusted comment.
    pub fn verify(&self, data: &[u8], key: &PublicKey) -> Result<(), BundleError> {
        if self.keynum != key.key_id().0 {
            return Err(BundleError::WrongKey {
                signed_by: self.key_id(),
                trusted: key.key_id(),
            });
        }
        let prehash = Blake2b512::digest(data);
        key.verifying()
            .verify_strict(&prehash, &Signature::from_bytes(&self.signature))
            .map_err(|_| BundleError::BadSignature {
                what: "manifest.json does not match manifest.json.minisig",
            })?;
        let mut sig_and_comment = self.signature.to_vec();
        sig_and_comment.extend_from_slice(self.trusted_comment.as_bytes());
        key.verifying()
            .verify_strict(&sig_and_comment, &Signature::from_bytes(&self.global))
            .map_err(|_| BundleError::BadSignature {
                what: "the trusted comment of manifest.json.minisig was modified",
            })
    }
}
