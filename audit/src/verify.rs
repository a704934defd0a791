//! Log verification. Input: the bytes of a log (streamed), optionally a public key and
//! checkpoints from a second place; output: a [`Report`] with the number of records that
//! verified and the first problem, located by sequence number, line and byte offset.
//! Invariants: every line is hashed exactly as stored; each record must parse as a typed
//! record, carry `seq` = its index, `prev` = the previous record's hash, a time not before the
//! previous one; each checkpoint must match the Merkle tree the verifier computed itself and,
//! with a key, carry a valid signature; external checkpoints must be found in the log with the
//! same bytes at the same place. Reading stops at the first problem.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::checkpoint::{VerifyingKey, checkpoint_body};
use crate::error::AuditError;
use crate::event::Event;
use crate::merkle::Frontier;
use crate::record::{
    Digest, FORMAT_VERSION, GENESIS, MAX_RECORD_BYTES, Record, from_hex, is_token, record_hash,
    to_hex,
};
use crate::time::Timestamp;

/// What to check beyond the chain.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// Verify checkpoint signatures with this key, and require at least one signed checkpoint.
    pub key: Option<VerifyingKey>,
    /// Checkpoints kept elsewhere (see [`load_checkpoints`]); each must be found in the log.
    pub checkpoints: Vec<ExternalCheckpoint>,
}

/// A checkpoint record line taken from a checkpoint sink file.
#[derive(Clone, Debug)]
pub struct ExternalCheckpoint {
    /// Where it came from (`file:line`), for messages.
    pub source: String,
    /// The record line without newline.
    pub line: Vec<u8>,
    /// Records it covers.
    pub records: u64,
    /// Bytes it covers.
    pub bytes: u64,
}

/// A record that was cut off by a writer after a crash (`tail_repaired`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// Seq of the `tail_repaired` record.
    pub seq: u64,
    /// Where the torn bytes were.
    pub offset: u64,
    /// How many bytes were dropped.
    pub bytes: u64,
}

/// What is wrong with a record (or with the log as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Not a valid record (JSON syntax, missing/unknown field, wrong type, unknown event kind).
    InvalidRecord(String),
    /// Line longer than the record limit.
    LineTooLong,
    /// Unsupported format version.
    BadVersion(u32),
    /// `seq` is not the record's index.
    SeqMismatch {
        /// Index of the record.
        expected: u64,
        /// Its `seq`.
        found: u64,
    },
    /// `prev` is not the hash of the previous record.
    PrevMismatch {
        /// Hash of the previous line as stored.
        expected: String,
        /// `prev` as stored.
        found: String,
    },
    /// `prev` is not 64 lower-case hex digits.
    BadPrev(String),
    /// `ts` is not the fixed-width RFC 3339 form.
    BadTimestamp(String),
    /// Time went backwards.
    TimeWentBackwards {
        /// Previous record's time.
        previous: String,
        /// This record's time.
        this: String,
    },
    /// A checkpoint does not match the log before it.
    CheckpointMismatch(String),
    /// A checkpoint signature is invalid.
    BadSignature(String),
    /// A `tail_repaired` record is inconsistent with its position.
    BadRepair(String),
    /// The log ends inside a record (writer crash or truncation); the next writer marks it.
    TornTail {
        /// Bytes after the last complete record.
        bytes: u64,
    },
    /// The log is shorter than a checkpoint says it was.
    Truncated(String),
    /// An external checkpoint's record differs from the log's record at the same place.
    ExternalMismatch(String),
    /// A key was given but no checkpoint signed by it covers the log.
    NoSignedCheckpoint(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::InvalidRecord(m) => write!(f, "not a valid record: {m}"),
            Problem::LineTooLong => write!(f, "line longer than {MAX_RECORD_BYTES} bytes"),
            Problem::BadVersion(v) => write!(
                f,
                "unsupported format version {v} (expected {FORMAT_VERSION})"
            ),
            Problem::SeqMismatch { expected, found } => {
                write!(
                    f,
                    "seq is {found}, expected {expected} (a record was deleted, inserted or reordered before this one)"
                )
            }
            Problem::PrevMismatch { expected, found } => write!(
                f,
                "prev is {found} but the previous record hashes to {expected} (the previous record was modified, or records were deleted, inserted or swapped here)"
            ),
            Problem::BadPrev(p) => write!(f, "prev {p:?} is not 64 lower-case hex digits"),
            Problem::BadTimestamp(t) => write!(
                f,
                "timestamp {t:?} is not of the form YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ"
            ),
            Problem::TimeWentBackwards { previous, this } => {
                write!(
                    f,
                    "time went backwards: {this} is before the previous record's {previous}"
                )
            }
            Problem::CheckpointMismatch(m) => write!(f, "checkpoint does not match the log: {m}"),
            Problem::BadSignature(m) => write!(f, "checkpoint signature invalid: {m}"),
            Problem::BadRepair(m) => write!(f, "tail_repaired record inconsistent: {m}"),
            Problem::TornTail { bytes } => write!(
                f,
                "log ends with {bytes} bytes of an incomplete record (writer crash or truncation; the next writer cuts it off and records a tail_repaired event)"
            ),
            Problem::Truncated(m) => write!(f, "log truncated: {m}"),
            Problem::ExternalMismatch(m) => write!(f, "log differs from external checkpoint: {m}"),
            Problem::NoSignedCheckpoint(m) => write!(f, "no signed checkpoint: {m}"),
        }
    }
}

/// Where verification failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Index (= expected seq) of the record where the problem was found.
    pub seq: u64,
    /// 1-based line number.
    pub line: u64,
    /// Byte offset of that record's first byte.
    pub offset: u64,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record seq {} (line {}, byte offset {}): {}",
            self.seq, self.line, self.offset, self.problem
        )
    }
}

/// Result of verifying a log.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Records that verified (all of them if `failure` is `None`).
    pub records: u64,
    /// Bytes that verified.
    pub bytes: u64,
    /// Hash of the last verified record ([`GENESIS`] if none).
    pub head: Digest,
    /// Merkle tree head over the verified records.
    pub root: Digest,
    /// Checkpoint records found in the log (and consistent with it).
    pub checkpoints: u64,
    /// Of those, how many had their signature checked.
    pub signed_checkpoints: u64,
    /// External checkpoints matched against the log.
    pub external_checkpoints: u64,
    /// Records covered by the last checkpoint whose signature was checked.
    pub signed_records: u64,
    /// Torn tails that writers cut off.
    pub repairs: Vec<Repair>,
    /// Things that are not failures but limit what was proven.
    pub warnings: Vec<String>,
    /// Runs that started (`agent_started`) and have no `agent_exited` record, in log order.
    pub open_runs: Vec<OpenRun>,
    /// The first problem, if any.
    pub failure: Option<Failure>,
}

/// A run that started and never ended in the log: its supervisor was killed (`kill -9`, a
/// crash, a power loss), the log was cut after it, or it is still running. The records that
/// are there verify; what happened after them is not in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRun {
    /// Seq of its `agent_started` record.
    pub seq: u64,
    /// When it started.
    pub ts: String,
    /// Host it ran on.
    pub host: String,
    /// Agent name.
    pub agent: String,
    /// The agent's pid (in the supervisor's pid namespace).
    pub pid: u32,
}

impl fmt::Display for OpenRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run of agent {:?} (pid {} on {}) started at record seq {} ({}) and has no agent_exited record: its supervisor was killed, the log was cut, or it is still running",
            self.agent, self.pid, self.host, self.seq, self.ts
        )
    }
}

impl Report {
    /// True if the whole log verified.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }

    /// True if the log verified and every run in it ended.
    pub fn is_complete(&self) -> bool {
        self.is_ok() && self.open_runs.is_empty()
    }
}

/// Read a checkpoint sink file (one checkpoint record line per line).
pub fn load_checkpoints(path: &Path) -> Result<Vec<ExternalCheckpoint>, AuditError> {
    let text = std::fs::read(path).map_err(AuditError::io("reading checkpoint file", path))?;
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let source = format!("{}:{}", path.display(), i + 1);
        let bad = |msg: String| AuditError::CheckpointFile {
            path: path.to_path_buf(),
            msg: format!("line {}: {msg}", i + 1),
        };
        let rec = Record::parse(line).map_err(|e| bad(format!("not a checkpoint record: {e}")))?;
        let Event::Checkpoint(c) = rec.event else {
            return Err(bad(format!(
                "record kind {} is not checkpoint",
                rec.event.kind()
            )));
        };
        out.push(ExternalCheckpoint {
            source,
            line: line.to_vec(),
            records: c.records,
            bytes: c.bytes,
        });
    }
    Ok(out)
}

/// Verify the log at `path`. `Err` only if the file cannot be opened or read.
///
/// The log may be live: the length to verify is taken under a shared `flock`, which waits for
/// an append in progress, so a record being written is never mistaken for a torn tail; records
/// appended after that moment are not looked at.
pub fn verify_log(path: &Path, options: &VerifyOptions) -> Result<Report, AuditError> {
    let file = File::open(path).map_err(AuditError::io("opening log", path))?;
    let len = stable_len(&file).map_err(AuditError::io("reading length of log", path))?;
    verify_reader(file.take(len), options).map_err(AuditError::io("reading log", path))
}

/// File length read while holding a shared lock (writers hold an exclusive one per append).
fn stable_len(file: &File) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor owned by `file`, released below (or on close).
    let locked = unsafe { libc::flock(fd, libc::LOCK_SH) } == 0;
    let len = file.metadata().map(|m| m.len());
    if locked {
        // SAFETY: as above.
        unsafe {
            libc::flock(fd, libc::LOCK_UN);
        }
    }
    len
}

struct State<'o> {
    opts: &'o VerifyOptions,
    report: Report,
    frontier: Frontier,
    last_hash: Digest,
    last_ts: String,
    external: Vec<&'o ExternalCheckpoint>,
    /// Started runs without an exit record yet, by (host, boot, agent, bundle, pid).
    runs: std::collections::BTreeMap<(String, String, String, String, u32), OpenRun>,
}

/// Verify a log read from `reader`. `Err` only for read errors.
pub fn verify_reader<R: Read>(mut reader: R, options: &VerifyOptions) -> io::Result<Report> {
    let mut ext: Vec<&ExternalCheckpoint> = options.checkpoints.iter().collect();
    // Latest first, so that `pop` yields them in log order.
    ext.sort_by_key(|c| std::cmp::Reverse(c.records));
    let mut st = State {
        opts: options,
        report: Report {
            head: GENESIS,
            root: Frontier::new().root(),
            ..Report::default()
        },
        frontier: Frontier::new(),
        last_hash: GENESIS,
        last_ts: String::new(),
        external: ext,
        runs: Default::default(),
    };
    // Start small (short logs, many verifications in tests) and grow to 8 MiB when reads fill
    // the buffer, so that large logs are read in few system calls.
    let max_cap = 8 << 20;
    let mut buf = vec![0u8; 64 << 10];
    let (mut start, mut filled) = (0usize, 0usize);
    loop {
        if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        if filled == buf.len() || (buf.len() < max_cap && filled > buf.len() / 2) {
            buf.resize((buf.len() * 2).min(max_cap).max(filled + 1), 0);
        }
        let n = loop {
            match reader.read(buf.get_mut(filled..).unwrap_or_default()) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            break;
        }
        if filled + n == buf.len() && buf.len() < max_cap {
            buf.resize((buf.len() * 2).min(max_cap), 0);
        }
        filled += n;
        let window = buf.get(..filled).unwrap_or_default();
        while let Some(rel) = memchr::memchr(b'\n', window.get(start..).unwrap_or_default()) {
            let line = window.get(start..start + rel).unwrap_or_default();
            if let Err(p) = st.check_line(line) {
                return Ok(st.fail(p));
            }
            start += rel + 1;
        }
        if filled - start > MAX_RECORD_BYTES {
            return Ok(st.fail(Problem::LineTooLong));
        }
    }
    if filled > start {
        return Ok(st.fail(Problem::TornTail {
            bytes: (filled - start) as u64,
        }));
    }
    Ok(st.finish())
}

impl State<'_> {
    fn fail(mut self, problem: Problem) -> Report {
        let r = &mut self.report;
        r.root = self.frontier.root();
        r.failure = Some(Failure {
            seq: r.records,
            line: r.records + 1,
            offset: r.bytes,
            problem,
        });
        self.report
    }

    fn finish(mut self) -> Report {
        let r = &mut self.report;
        r.root = self.frontier.root();
        r.open_runs.extend(std::mem::take(&mut self.runs).into_values());
        r.open_runs.sort_by_key(|o| o.seq);
        if let Some(c) = self.external.pop() {
            let m = format!(
                "checkpoint {} covers {} records ({} bytes) and its own record at seq {}, but the log has only {} complete records ({} bytes)",
                c.source, c.records, c.bytes, c.records, r.records, r.bytes
            );
            return self.fail(Problem::Truncated(m));
        }
        if let Some(key) = &self.opts.key {
            if r.signed_checkpoints == 0 && r.external_checkpoints == 0 {
                let m = format!(
                    "the log has {} records but no checkpoint signed by key {}, so it cannot be told apart from a forgery",
                    r.records,
                    key.key_id()
                );
                return self.fail(Problem::NoSignedCheckpoint(m));
            }
            let unsigned = r.records.saturating_sub(r.signed_records);
            if unsigned > 0 {
                r.warnings.push(format!(
                    "the last {unsigned} record(s) (seq {}..) follow the last signed checkpoint: they are chained but not yet signed",
                    r.signed_records
                ));
            }
        } else if r.checkpoints > 0 || r.external_checkpoints > 0 {
            r.warnings.push("checkpoint signatures not checked (no --key): a forged log with forged checkpoints would pass".into());
        } else {
            r.warnings.push("no key given: only the hash chain was checked; a whole-log forgery is not detectable without a signed checkpoint".into());
        }
        self.report
    }

    fn check_line(&mut self, line: &[u8]) -> Result<(), Problem> {
        let offset = self.report.bytes;
        let index = self.report.records;
        let hash = record_hash(line);
        let rec = Record::parse(line).map_err(|e| Problem::InvalidRecord(e.to_string()))?;
        if let Some(why) = rec.event.shape_error() {
            return Err(Problem::InvalidRecord(why.into()));
        }
        if rec.v != FORMAT_VERSION {
            return Err(Problem::BadVersion(rec.v));
        }
        if rec.seq != index {
            return Err(Problem::SeqMismatch {
                expected: index,
                found: rec.seq,
            });
        }
        let prev = from_hex(&rec.prev).ok_or_else(|| Problem::BadPrev(rec.prev.clone()))?;
        if prev != self.last_hash {
            return Err(Problem::PrevMismatch {
                expected: to_hex(&self.last_hash),
                found: rec.prev.clone(),
            });
        }
        if Timestamp::parse_exact(&rec.ts).is_none() {
            return Err(Problem::BadTimestamp(rec.ts.clone()));
        }
        if rec.ts < self.last_ts {
            return Err(Problem::TimeWentBackwards {
                previous: self.last_ts.clone(),
                this: rec.ts.clone(),
            });
        }
        while self.external.last().is_some_and(|c| c.records <= index) {
            if let Some(c) = self.external.pop() {
                self.check_external(c, line, index, offset)?;
            }
        }
        match &rec.event {
            Event::Checkpoint(c) => self.check_checkpoint(&rec, c, offset)?,
            Event::TailRepaired {
                offset: o, bytes, ..
            } => {
                if *o != offset {
                    return Err(Problem::BadRepair(format!(
                        "says offset {o}, but the record is at {offset}"
                    )));
                }
                self.report.repairs.push(Repair {
                    seq: index,
                    offset,
                    bytes: *bytes,
                });
            }
            Event::AgentStarted { pid, .. } => {
                let key = (rec.host.clone(), rec.boot.clone(), rec.agent.clone(), rec.bundle.clone(), *pid);
                let run = OpenRun {
                    seq: index,
                    ts: rec.ts.clone(),
                    host: rec.host.clone(),
                    agent: rec.agent.clone(),
                    pid: *pid,
                };
                // Same pid again without an exit in between: the earlier run never ended.
                if let Some(earlier) = self.runs.insert(key, run) {
                    self.report.open_runs.push(earlier);
                }
            }
            Event::AgentExited { pid, .. } => {
                self.runs.remove(&(rec.host.clone(), rec.boot.clone(), rec.agent.clone(), rec.bundle.clone(), *pid));
            }
            _ => {}
        }
        self.frontier.push(&hash);
        self.last_hash = hash;
        self.last_ts = rec.ts;
        let r = &mut self.report;
        r.records += 1;
        r.bytes += line.len() as u64 + 1;
        r.head = hash;
        Ok(())
    }

    fn check_external(
        &mut self,
        c: &ExternalCheckpoint,
        line: &[u8],
        index: u64,
        offset: u64,
    ) -> Result<(), Problem> {
        if c.records != index || c.bytes != offset {
            return Err(Problem::ExternalMismatch(format!(
                "checkpoint {} is for seq {} at byte {}, but that position is seq {index} at byte {offset}",
                c.source, c.records, c.bytes
            )));
        }
        if c.line != line {
            return Err(Problem::ExternalMismatch(format!(
                "checkpoint {} is not the record stored here (the log before or at this record was rewritten)",
                c.source
            )));
        }
        self.report.external_checkpoints += 1;
        Ok(())
    }

    fn check_checkpoint(
        &mut self,
        rec: &Record,
        c: &crate::event::CheckpointEvent,
        offset: u64,
    ) -> Result<(), Problem> {
        let mismatch = |m: String| Err(Problem::CheckpointMismatch(m));
        if c.records != rec.seq {
            return mismatch(format!(
                "covers {} records but is record {}",
                c.records, rec.seq
            ));
        }
        if c.bytes != offset {
            return mismatch(format!(
                "covers {} bytes but starts at byte {offset}",
                c.bytes
            ));
        }
        if !rec.agent.is_empty() || !rec.bundle.is_empty() || !rec.policy.is_empty() {
            return mismatch(
                "agent, bundle and policy must be empty in a checkpoint record".into(),
            );
        }
        if !is_token(&rec.host) || !is_token(&rec.boot) {
            return mismatch("host or boot id contains characters outside [A-Za-z0-9._:-]".into());
        }
        let root = to_hex(&self.frontier.root());
        if c.root != root {
            return mismatch(format!(
                "root {} but the records before it give {root}",
                c.root
            ));
        }
        let ours: Vec<String> = self.frontier.nodes().iter().map(to_hex).collect();
        if c.frontier != ours {
            return mismatch(
                "stored frontier differs from the tree of the records before it".into(),
            );
        }
        self.report.checkpoints += 1;
        if let Some(key) = &self.opts.key {
            let body = checkpoint_body(c.records, c.bytes, &c.root, &rec.ts, &rec.host, &rec.boot);
            key.verify_body(&body, &c.sig, &c.global_sig)
                .map_err(Problem::BadSignature)?;
            self.report.signed_checkpoints += 1;
            // The checkpoint record itself is bound too: its own fields are in the signed body
            // and its `prev` is fixed by the signed root.
            self.report.signed_records = c.records + 1;
        }
        Ok(())
    }
}
