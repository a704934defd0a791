//! Errors of the writer and of loading inputs. Verification findings are not errors: they are
//! reported in [`crate::Report`]. Every error says what was being done and on which path.

use std::io;
use std::path::PathBuf;

/// Anything that can go wrong while writing a log or loading a key or log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An I/O operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("opening log", "fsync of log", ...).
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An event could not be serialised.
    #[error("serialising a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// An event is too large for one record.
    #[error("record of {len} bytes exceeds the {max}-byte limit (shorten the event details)")]
    RecordTooLarge {
        /// Encoded length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Callers may not append events that only the log itself writes.
    #[error("event kind `{0}` is written by the log itself; append refuses it")]
    ReservedEvent(&'static str),
    /// An event of a kind callers may append, but not in this shape.
    #[error("invalid event: {0}")]
    InvalidEvent(&'static str),
    /// A key file could not be used.
    #[error("key {}: {msg}", path.display())]
    Key {
        /// Key file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A checkpoint file line is not a checkpoint record.
    #[error("checkpoint file {}: {msg}", path.display())]
    CheckpointFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line number.
        msg: String,
    },
    /// Signing a checkpoint failed.
    #[error("signing checkpoint: {0}")]
    Sign(String),
    /// The log's end is not a valid record and not a torn tail that may be cut off.
    #[error("log {} is damaged at byte offset {offset}: {msg}; refusing to append (run `aegis-audit verify`)", path.display())]
    CorruptTail {
        /// Log file.
        path: PathBuf,
        /// Where the problem starts.
        offset: u64,
        /// What is wrong.
        msg: String,
    },
}

impl AuditError {
    pub(crate) fn io<'p>(
        what: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(io::Error) -> AuditError + 'p {
        move |source| AuditError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
