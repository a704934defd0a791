#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
//! Integration tests of the audit log, one binary:
//! - `tamper`: every tamper case of issue 5 is detected with a precise location;
//! - `concurrency`: several processes append at once, nothing is lost, one chain;
//! - `crash`: writers killed with SIGKILL leave a log that verifies up to the last complete
//!   record, and the next writer marks the torn tail;
//! - `proofs`: Merkle inclusion/consistency proofs against checkpoints of a real log;
//! - `cli`: exit codes, messages, `show` filters, `tail -f`, minisign CLI interoperability;
//! - `limits`: long fields capped with their hash, `repeated` records, the reserve on a full
//!   filesystem (a real small tmpfs), runs that never ended.

mod cli;
mod common;
mod concurrency;
mod crash;
mod limits;
mod proofs;
mod tamper;
