//! One audit record = one line of the log. Input: header fields and an [`Event`]; output: the
//! exact bytes written (compact JSON, fixed field order, `\n`-terminated) and the record hash.
//! Invariants: the hash is taken over the bytes as written (never over a re-serialisation):
//! `SHA-256("aegis-audit-v1\0" || line without its final newline)`; the first record's `prev`
//! is [`GENESIS`]; a line never exceeds [`MAX_RECORD_BYTES`].

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::event::Event;

/// Version written in every record's `v` field.
pub const FORMAT_VERSION: u32 = 1;
/// Domain-separation prefix hashed before each line.
pub const DOMAIN: &[u8] = b"aegis-audit-v1\0";
/// `prev` of the first record: 64 zero hex digits.
pub const GENESIS: Digest = [0u8; 32];
/// Longest record line accepted, newline included (writers refuse longer events).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// A SHA-256 value.
pub type Digest = [u8; 32];

/// Hash of one record line (`line` without its trailing newline).
pub fn record_hash(line: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(line);
    h.finalize().into()
}

/// Lower-case hex of a digest.
pub fn to_hex(d: &Digest) -> String {
    // Table lookup: this runs for every appended record (the `prev` field).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    let digit = |n: u8| char::from(HEX.get(usize::from(n)).copied().unwrap_or(b'?'));
    for b in d {
        out.push(digit(b >> 4));
        out.push(digit(b & 15));
    }
    out
}

/// Parse 64 lower-case hex digits.
pub fn from_hex(s: &str) -> Option<Digest> {
    if s.len() != 64 || s.bytes().any(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let mut d = [0u8; 32];
    hex::decode_to_slice(s, &mut d).ok()?;
    Some(d)
}

/// Who and under which policy: the context fields of a record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditContext {
    /// Agent name from the policy.
    pub agent: String,
    /// Digest of the bundle (as printed by `aegisc`), empty if none.
    pub bundle_digest: String,
    /// Digest of the policy IR, empty if none.
    pub policy_digest: String,
}

/// The header and event of a record, as serialised (field order is the byte format).
#[derive(Serialize)]
pub(crate) struct RecordOut<'a, E: Serialize = Event> {
    pub v: u32,
    pub seq: u64,
    pub ts: &'a str,
    pub host: &'a str,
    pub boot: &'a str,
    pub agent: &'a str,
    pub bundle: &'a str,
    pub policy: &'a str,
    pub event: &'a E,
    pub prev: &'a str,
}

/// A parsed record (typed), as read back by verifiers and `show`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Format version ([`FORMAT_VERSION`]).
    pub v: u32,
    /// Sequence number, 0 for the first record, +1 per record.
    pub seq: u64,
    /// Fixed-width RFC 3339 UTC timestamp.
    pub ts: String,
    /// Host name of the writer.
    pub host: String,
    /// Kernel boot id of the writer.
    pub boot: String,
    /// Agent name.
    pub agent: String,
    /// Bundle digest.
    pub bundle: String,
    /// Policy digest.
    pub policy: String,
    /// The event.
    pub event: Event,
    /// Hex hash of the previous record ([`GENESIS`] for the first).
    pub prev: String,
}

impl Record {
    /// Parse one line (without newline).
    pub fn parse(line: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// Serialise a record into `out` (cleared first), newline included.
pub(crate) fn encode<E: Serialize>(out: &mut Vec<u8>, rec: &RecordOut<'_, E>) -> Result<(), serde_json::Error> {
    out.clear();
    serde_json::to_writer(&mut *out, rec)?;
    out.push(b'\n');
    Ok(())
}

/// Restrict host and boot id to characters that need no JSON escaping and no quoting in a
/// checkpoint body: `[A-Za-z0-9._:-]`, others become `_`.
pub(crate) fn sanitize_token(s: &str) -> String {
    let t: String = s
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "unknown".to_string()
    } else {
        t
    }
}

/// True if `s` is a valid host/boot token (see [`sanitize_token`]).
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'))
}
