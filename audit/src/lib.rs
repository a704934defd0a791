//! Tamper-evident audit log of AEGIS: hash-chained JSON-lines records, signed checkpoints over
//! an RFC 6962 Merkle tree, and verification. The byte format is specified in `docs/audit.md`.
//!
//! Input: events from AEGIS components (the runtime, the proxy). Output: a log file in which any
//! edit, deletion, insertion or reordering of records is detected by [`verify_log`], and in which
//! truncation or wholesale replacement is detected against signed checkpoints.
//!
//! # Writing
//!
//! ```
//! use aegis_audit::{AuditContext, AuditWriter, Durability, Event, Verdict, WriterOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("aegis-audit-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("audit.log");
//! let mut log = AuditWriter::open(&path, WriterOptions {
//!     durability: Durability::EveryRecord, // fdatasync before append returns
//!     ..WriterOptions::default()           // host and boot id from the kernel, no checkpoints
//! })?;
//! let ctx = AuditContext { agent: "coder".into(), bundle_digest: "sha256:…".into(), policy_digest: "sha256:…".into() };
//! let info = log.append(&ctx, &Event::Decision {
//!     component: "proxy".into(), subject: "net".into(), target: "example.com:443".into(),
//!     decision: Verdict::Deny, rule: None, reason: "not in allowlist".into(),
//! })?;
//! assert_eq!(info.seq, 0);
//! log.close()?;
//! assert!(aegis_audit::verify_log(&path, &aegis_audit::VerifyOptions::default())?.is_ok());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! Several processes may open the same path and append concurrently; each append takes an
//! exclusive `flock`. Open one writer per process (do not share one across `fork`). With
//! [`CheckpointOptions`] the writer signs a checkpoint every N records or T seconds and on
//! [`AuditWriter::close`], and copies it to a sink file and/or syslog.

mod checkpoint;
mod error;
mod event;
pub mod merkle;
mod record;
pub mod show;
mod sync;
mod tail;
mod time;
mod verify;
mod writer;

pub use checkpoint::{
    KeyId, SigningKey, UNTRUSTED_COMMENT, VerifyingKey, checkpoint_body, signature_file,
};
pub use error::AuditError;
pub use event::{
    Access, AgentIdentity, CheckpointEvent, EnforcementStatus, Event, LayerReport, MAX_FIELD_BYTES, ResourceLimit, Verdict,
    cap_string, cut_marker,
};
pub use record::{
    AuditContext, DOMAIN, Digest, FORMAT_VERSION, GENESIS, MAX_RECORD_BYTES, Record, from_hex,
    record_hash, to_hex,
};
pub use time::{TIMESTAMP_LEN, Timestamp};
pub use verify::{
    ExternalCheckpoint, Failure, OpenRun, Problem, Repair, Report, VerifyOptions, load_checkpoints,
    verify_log, verify_reader,
};
pub use writer::{AuditWriter, CheckpointOptions, Durability, RecordInfo, Reserve, WriterOptions};

/// Record hashes of every complete line of a log, in order (for Merkle proofs). Lines are not
/// verified here; run [`verify_log`] first.
pub fn read_record_hashes(path: &std::path::Path) -> Result<Vec<Digest>, AuditError> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(AuditError::io("opening log", path))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut out = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)
            .map_err(AuditError::io("reading log", path))?
            == 0
        {
            break;
        }
        match line.strip_suffix(b"\n") {
            Some(body) => out.push(record_hash(body)),
            None => break,
        }
    }
    Ok(out)
}
