//! The append-only writer. Input: an [`AuditContext`] and [`Event`]s from any number of processes
//! sharing one log path; output: records appended to the log (and checkpoints to the log and its
//! sinks). Invariants, all held under an exclusive `flock` on the log for the whole append:
//! the chain state (last hash, seq, time) is re-read from the file's end unless the file is
//! exactly as this writer left it; a batch of records goes out in one `write(2)` on an
//! `O_APPEND` descriptor and is cut off again if the write fails part-way; a torn last line left
//! by a crashed writer is cut off and recorded in a `tail_repaired` record (never silently);
//! time never goes backwards within the log; a complete last line that is not a valid record
//! makes the writer refuse to append (fail closed: that is damage, not a crash).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::checkpoint::{SigningKey, checkpoint_body};
use crate::error::AuditError;
use crate::event::{CheckpointEvent, Event, MAX_FIELD_BYTES, cap_value};
use crate::merkle::Frontier;
use crate::record::{
    AuditContext, Digest, FORMAT_VERSION, GENESIS, MAX_RECORD_BYTES, Record, RecordOut, encode,
    from_hex, record_hash, sanitize_token, to_hex,
};
use crate::sync::Syncer;
use crate::tail::{ReadAt, TailError, find_last_line_with, read_tail};
use crate::time::Timestamp;

/// Marker that only a checkpoint record contains outside a JSON string (quotes inside strings
/// are escaped, and the header fields before `event` are fixed).
pub(crate) const CHECKPOINT_MARKER: &[u8] = br#","event":{"kind":"checkpoint","#;

/// When appended records reach the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fdatasync` before `append` returns: a returned record survives power loss.
    EveryRecord,
    /// Group commit: `fdatasync` by the appending call once `max_records` records are unsynced,
    /// and by a background thread once the oldest unsynced record is `max_delay` old; also on
    /// flush, close and drop. A power loss (not a process crash) loses at most that window.
    Group {
        /// Records per sync.
        max_records: u32,
        /// Age of the oldest unsynced record that forces a sync.
        max_delay: Duration,
    },
    /// Never sync explicitly (tests, tmpfs); the page cache still survives a process crash.
    OsDefault,
}

/// How and where checkpoints are written.
#[derive(Debug)]
pub struct CheckpointOptions {
    /// Key that signs checkpoints.
    pub key: SigningKey,
    /// Write a checkpoint once this many records follow the last one (0: never by count).
    pub every_records: u64,
    /// ... or once this long has passed since this writer last saw one (checked at append).
    pub every: Duration,
    /// Also append each checkpoint record line to this file (detects truncation of the log).
    pub sink: Option<PathBuf>,
    /// Also send each checkpoint to syslog (`LOG_AUTHPRIV | LOG_NOTICE`, ident `aegis-audit`).
    pub syslog: bool,
}

impl CheckpointOptions {
    /// Defaults: every 1000 records or 60 s, no sink, no syslog.
    pub fn new(key: SigningKey) -> CheckpointOptions {
        CheckpointOptions {
            key,
            every_records: 1000,
            every: Duration::from_secs(60),
            sink: None,
            syslog: false,
        }
    }
}

/// Options of [`AuditWriter::open`].
#[derive(Debug)]
pub struct WriterOptions {
    /// Host name (`None`: from the kernel).
    pub host: Option<String>,
    /// Boot id (`None`: `/proc/sys/kernel/random/boot_id`).
    pub boot_id: Option<String>,
    /// Sync policy.
    pub durability: Durability,
    /// Signed checkpoints (`None`: none written).
    pub checkpoint: Option<CheckpointOptions>,
    /// Bytes kept allocated beyond the log's end (0: none); see [`Reserve`].
    pub reserve: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            host: None,
            boot_id: None,
            durability: Durability::EveryRecord,
            checkpoint: None,
            reserve: 0,
        }
    }
}

/// Room for closing records, held beyond the log's end. With [`WriterOptions::reserve`] the
/// writer keeps that many bytes allocated past the last record (`fallocate` with
/// `FALLOC_FL_KEEP_SIZE`: the file's size does not change, the filesystem has handed out the
/// blocks) and refuses an append that would leave less: when the filesystem fills up, the
/// append fails *before* anything is written, and the caller still has the reserve for its
/// last records (the failure, the agent's exit, a checkpoint) once it calls
/// [`AuditWriter::spend_reserve`]. Up to `reserve` bytes stay allocated past the end after the
/// writer closes (the next writer reuses them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// No reserve was asked for.
    Off,
    /// This many bytes past the end are allocated.
    Held(u64),
    /// Appends write into the reserve now (after [`AuditWriter::spend_reserve`]).
    Spending,
    /// The filesystem cannot preallocate (`fallocate` unsupported): appends fail only when a
    /// write does. The string says why.
    Unsupported(String),
}

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// Its sequence number.
    pub seq: u64,
    /// Byte offset of its first byte.
    pub offset: u64,
    /// Length in bytes including the newline.
    pub len: u64,
    /// Its record hash.
    pub hash: Digest,
    /// Its timestamp.
    pub ts: Timestamp,
}

/// Chain state after the last complete record.
#[derive(Clone, Copy, Debug)]
struct ChainState {
    end: u64,
    next_seq: u64,
    last_hash: Digest,
    last_ts: Timestamp,
}

struct TreeState {
    frontier: Frontier,
    /// The frontier covers every line before this offset.
    end: u64,
    last_checkpoint_seq: Option<u64>,
}

struct CheckpointState {
    opts: CheckpointOptions,
    tree: Option<TreeState>,
    last_seen: Instant,
}

/// Appends records to one log file; see the module docs for the guarantees.
pub struct AuditWriter {
    path: PathBuf,
    file: File,
    host: String,
    boot: String,
    durability: Durability,
    checkpoint: Option<CheckpointState>,
    cache: Option<ChainState>,
    unsynced: u32,
    syncer: Option<Syncer>,
    buf: Vec<u8>,
    line: Vec<u8>,
    reserve: Reserve,
}

/// Holds the exclusive lock on the log's open file description until dropped. It keeps the raw
/// descriptor (not a borrow) so the writer can be used mutably while locked; every guard lives
/// inside one writer method, so the descriptor outlives it.
struct LockGuard(RawFd);

impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: flock on the writer's descriptor, which is open for the guard's lifetime;
        // failure to unlock is harmless (closing the descriptor releases the lock too).
        unsafe {
            libc::flock(self.0, libc::LOCK_UN);
        }
    }
}

fn lock(file: &File, path: &Path) -> Result<LockGuard, AuditError> {
    let fd = file.as_raw_fd();
    loop {
        // SAFETY: flock on a valid descriptor owned by `file`.
        let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
        if rc == 0 {
            return Ok(LockGuard(fd));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(AuditError::Io {
                what: "locking log",
                path: path.to_path_buf(),
                source: err,
            });
        }
    }
}

fn fdatasync(file: &File, path: &Path, what: &'static str) -> Result<(), AuditError> {
    file.sync_data().map_err(AuditError::io(what, path))
}

fn default_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
}

fn default_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default()
}

impl AuditWriter {
    /// Open (or create, mode 0600) the log at `path` for appending. Repairs a torn tail left by
    /// a crashed writer right away (see module docs) and fails on a damaged tail.
    pub fn open(path: &Path, options: WriterOptions) -> Result<AuditWriter, AuditError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(AuditError::io("opening log", path))?;
        if !existed {
            // The new directory entry must survive a crash as well as the records.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Ok(d) = File::open(dir) {
                d.sync_all()
                    .map_err(AuditError::io("fsync of log directory", dir))?;
            }
        }
        let host = sanitize_token(&options.host.unwrap_or_else(default_host));
        let boot = sanitize_token(&options.boot_id.unwrap_or_else(default_boot_id));
        let checkpoint = options.checkpoint.map(|opts| CheckpointState {
            opts,
            tree: None,
            last_seen: Instant::now(),
        });
        let syncer = match options.durability {
            Durability::Group { max_delay, .. } => {
                let dup = file
                    .try_clone()
                    .map_err(AuditError::io("duplicating log descriptor", path))?;
                Some(
                    Syncer::start(dup, max_delay)
                        .map_err(AuditError::io("starting group commit thread for", path))?,
                )
            }
            _ => None,
        };
        let mut w = AuditWriter {
            path: path.to_path_buf(),
            file,
            host,
            boot,
            durability: options.durability,
            checkpoint,
            cache: None,
            unsynced: 0,
            syncer,
            buf: Vec::with_capacity(4096),
            line: Vec::with_capacity(1024),
            reserve: if options.reserve > 0 { Reserve::Held(options.reserve) } else { Reserve::Off },
        };
        {
            let guard = lock(&w.file, path)?;
            let st = w.load_state()?;
            w.ensure_room(st.end, 0)?;
            w.cache = Some(st);
            drop(guard);
        }
        w.sync_if_due(true)?;
        Ok(w)
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The state of the room kept for closing records.
    pub fn reserve(&self) -> &Reserve {
        &self.reserve
    }

    /// From now on appends write into the reserve instead of keeping it: call this once the
    /// caller is writing its last records after an append failed (see [`Reserve`]).
    pub fn spend_reserve(&mut self) {
        if matches!(self.reserve, Reserve::Held(_)) {
            self.reserve = Reserve::Spending;
        }
    }

    /// Makes sure `len` bytes at `at` (the end) plus the reserve are allocated, before they are
    /// written. Caller holds the lock.
    fn ensure_room(&mut self, at: u64, len: u64) -> Result<(), AuditError> {
        let Reserve::Held(reserve) = self.reserve else {
            return Ok(());
        };
        let (Ok(off), Ok(n)) = (i64::try_from(at), i64::try_from(len.saturating_add(reserve))) else {
            return Err(AuditError::Io {
                what: "reserving room at the end of log",
                path: self.path.clone(),
                source: std::io::Error::from_raw_os_error(libc::EFBIG),
            });
        };
        // SAFETY: fallocate on the writer's open descriptor with integer arguments.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, off, n) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::ENOSYS) => {
                self.reserve = Reserve::Unsupported(format!("fallocate: {err}"));
                Ok(())
            }
            _ => Err(AuditError::Io {
                what: "reserving room at the end of log",
                path: self.path.clone(),
                source: err,
            }),
        }
    }

    /// Append one event. The record is written (and, per [`Durability`], synced) before this
    /// returns.
    pub fn append(&mut self, ctx: &AuditContext, event: &Event) -> Result<RecordInfo, AuditError> {
        let infos = self.append_batch(ctx, std::slice::from_ref(event))?;
        infos
            .into_iter()
            .next()
            .ok_or(AuditError::Sign("empty batch".into()))
    }

    /// Append several events atomically: one lock, one `write(2)`, consecutive sequence numbers.
    pub fn append_batch(
        &mut self,
        ctx: &AuditContext,
        events: &[Event],
    ) -> Result<Vec<RecordInfo>, AuditError> {
        self.append_batch_within(ctx, events, u64::MAX)
    }

    /// Like [`AuditWriter::append_batch`], but writes only the longest prefix of `events` whose
    /// records (newlines included) add up to at most `max_bytes`; returns one [`RecordInfo`] per
    /// record written (fewer than `events` when the next one did not fit). For budgets: the
    /// writer knows each record's exact length only once it has encoded it.
    pub fn append_batch_within(
        &mut self,
        ctx: &AuditContext,
        events: &[Event],
        max_bytes: u64,
    ) -> Result<Vec<RecordInfo>, AuditError> {
        for e in events {
            if e.is_log_internal() {
                return Err(AuditError::ReservedEvent(e.kind()));
            }
            if let Some(why) = e.shape_error() {
                return Err(AuditError::InvalidEvent(why));
            }
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = lock(&self.file, &self.path)?;
        let mut st = self.load_state()?;
        let infos = self.write_records(&mut st, ctx, events, max_bytes)?;
        self.cache = Some(st);
        self.sync_if_due(false)?;
        self.maybe_checkpoint(&mut st, false)?;
        self.cache = Some(st);
        Ok(infos)
    }

    /// Write a checkpoint now (if checkpoints are configured and records followed the last one).
    /// Returns the checkpoint record, if one was written.
    pub fn checkpoint_now(&mut self) -> Result<Option<RecordInfo>, AuditError> {
        let _guard = lock(&self.file, &self.path)?;
        let mut st = self.load_state()?;
        let info = self.maybe_checkpoint(&mut st, true)?;
        self.cache = Some(st);
        Ok(info)
    }

    /// Sync everything appended so far.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.sync_if_due(true)
    }

    /// Final checkpoint (if configured) and sync. Prefer this over dropping the writer.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.checkpoint_now()?;
        self.flush()
    }

    /// Chain state at the end of the file, repairing a torn tail. Caller holds the lock.
    fn load_state(&mut self) -> Result<ChainState, AuditError> {
        let len = self
            .file
            .metadata()
            .map_err(AuditError::io("stat of log", &self.path))?
            .len();
        if let Some(c) = self.cache.filter(|c| c.end == len) {
            return Ok(c);
        }
        let tail = read_tail(&self.file, len).map_err(|e| tail_error(&self.path, e, "reading log tail"))?;
        let mut st = match &tail.last_line {
            None => ChainState {
                end: 0,
                next_seq: 0,
                last_hash: GENESIS,
                last_ts: Timestamp(0),
            },
            Some((off, line)) => {
                let damaged = |msg: String| AuditError::CorruptTail {
                    path: self.path.clone(),
                    offset: *off,
                    msg,
                };
                let rec = Record::parse(line)
                    .map_err(|e| damaged(format!("last record is not valid: {e}")))?;
                let ts = Timestamp::parse_exact(&rec.ts)
                    .ok_or_else(|| damaged("bad timestamp".into()))?;
                if rec.v != FORMAT_VERSION {
                    return Err(damaged(format!(
                        "format version {} is not {FORMAT_VERSION}",
                        rec.v
                    )));
                }
                let next_seq = rec
                    .seq
                    .checked_add(1)
                    .ok_or_else(|| damaged("seq overflow".into()))?;
                ChainState {
                    end: tail.complete_end,
                    next_seq,
                    last_hash: record_hash(line),
                    last_ts: ts,
                }
            }
        };
        if !tail.torn.is_empty() {
            self.repair(&mut st, &tail.torn)?;
        }
        Ok(st)
    }

    /// Cut off a torn last line and record that we did.
    fn repair(&mut self, st: &mut ChainState, torn: &[u8]) -> Result<(), AuditError> {
        self.file
            .set_len(st.end)
            .map_err(AuditError::io("truncating torn tail of log", &self.path))?;
        if let Some(cs) = self.checkpoint.as_mut()
            && cs.tree.as_ref().is_some_and(|t| t.end > st.end)
        {
            cs.tree = None;
        }
        let ev = Event::TailRepaired {
            offset: st.end,
            bytes: torn.len() as u64,
            sha256: hex::encode(Sha256::digest(torn)),
        };
        self.write_records(st, &AuditContext::default(), std::slice::from_ref(&ev), u64::MAX)?;
        fdatasync(&self.file, &self.path, "fsync of log after tail repair")?;
        Ok(())
    }

    /// Encode and write records at the end of the chain `st` (advanced on success), as many
    /// of `events` as fit in `max_bytes`.
    fn write_records(
        &mut self,
        st: &mut ChainState,
        ctx: &AuditContext,
        events: &[Event],
        max_bytes: u64,
    ) -> Result<Vec<RecordInfo>, AuditError> {
        let mut next = *st;
        let mut infos = Vec::with_capacity(events.len());
        self.buf.clear();
        let now = Timestamp::now();
        for event in events {
            let ts = now.max(next.last_ts);
            let ts_s = ts.to_string();
            let prev = to_hex(&next.last_hash);
            let rec = RecordOut {
                v: FORMAT_VERSION,
                seq: next.next_seq,
                ts: &ts_s,
                host: &self.host,
                boot: &self.boot,
                agent: &ctx.agent,
                bundle: &ctx.bundle_digest,
                policy: &ctx.policy_digest,
                event,
                prev: &prev,
            };
            encode(&mut self.line, &rec)?;
            // No string of an event is stored longer than MAX_FIELD_BYTES (only a record
            // longer than that can hold one): the capped copy replaces it.
            if self.line.len() > MAX_FIELD_BYTES {
                let mut v = serde_json::to_value(event)?;
                if cap_value(&mut v) {
                    let capped = RecordOut {
                        v: rec.v,
                        seq: rec.seq,
                        ts: rec.ts,
                        host: rec.host,
                        boot: rec.boot,
                        agent: rec.agent,
                        bundle: rec.bundle,
                        policy: rec.policy,
                        event: &v,
                        prev: rec.prev,
                    };
                    encode(&mut self.line, &capped)?;
                }
            }
            if self.line.len() > MAX_RECORD_BYTES {
                return Err(AuditError::RecordTooLarge {
                    len: self.line.len(),
                    max: MAX_RECORD_BYTES,
                });
            }
            if (self.buf.len() + self.line.len()) as u64 > max_bytes {
                break;
            }
            let body = self.line.get(..self.line.len() - 1).unwrap_or_default();
            let hash = record_hash(body);
            let offset = next.end + self.buf.len() as u64;
            infos.push(RecordInfo {
                seq: next.next_seq,
                offset,
                len: self.line.len() as u64,
                hash,
                ts,
            });
            self.buf.extend_from_slice(&self.line);
            next.next_seq += 1;
            next.last_hash = hash;
            next.last_ts = ts;
        }
        next.end += self.buf.len() as u64;
        self.ensure_room(st.end, self.buf.len() as u64)?;
        if let Err(e) = (&self.file).write_all(&self.buf) {
            // Never leave a partial record behind: cut back to where this batch started.
            let _ = self.file.set_len(st.end);
            return Err(AuditError::Io {
                what: "appending to log",
                path: self.path.clone(),
                source: e,
            });
        }
        *st = next;
        self.note_written(u32::try_from(infos.len()).unwrap_or(u32::MAX));
        Ok(infos)
    }

    fn note_written(&mut self, n: u32) {
        self.unsynced = match &self.syncer {
            Some(s) => s.wrote(n),
            None => self.unsynced.saturating_add(n),
        };
    }

    fn sync_if_due(&mut self, force: bool) -> Result<(), AuditError> {
        if let Some(s) = &self.syncer {
            if let Some(e) = s.take_error() {
                return Err(AuditError::Io {
                    what: "background fsync of log",
                    path: self.path.clone(),
                    source: e,
                });
            }
            self.unsynced = s.unsynced();
        }
        if self.unsynced == 0 {
            return Ok(());
        }
        let due = force
            || match self.durability {
                Durability::EveryRecord => true,
                Durability::Group { max_records, .. } => self.unsynced >= max_records,
                Durability::OsDefault => false,
            };
        if due {
            fdatasync(&self.file, &self.path, "fsync of log")?;
            self.unsynced = 0;
            if let Some(s) = &self.syncer {
                s.synced();
            }
        }
        Ok(())
    }

    /// Bring the Merkle frontier up to `end` (a line boundary). Caller holds the lock.
    fn extend_tree(&mut self, end: u64) -> Result<(), AuditError> {
        let Some(cs) = self.checkpoint.as_mut() else {
            return Ok(());
        };
        let tree = match cs.tree.take() {
            Some(t) if t.end <= end => t,
            _ => {
                // Start from the last checkpoint's stored frontier instead of the whole log.
                let found = find_last_line_with(&self.file, end, CHECKPOINT_MARKER)
                    .map_err(|e| tail_error(&self.path, e, "searching log for checkpoint"))?;
                found
                    .and_then(|(off, line)| tree_from_checkpoint(off, &line))
                    .unwrap_or(TreeState {
                        frontier: Frontier::new(),
                        end: 0,
                        last_checkpoint_seq: None,
                    })
            }
        };
        let mut tree = tree;
        let mut reader = BufReader::with_capacity(
            1 << 20,
            ReadAt {
                file: &self.file,
                pos: tree.end,
                end,
            },
        );
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(AuditError::io("reading log", &self.path))?;
            if n == 0 {
                break;
            }
            let Some(body) = line.strip_suffix(b"\n") else {
                return Err(AuditError::CorruptTail {
                    path: self.path.clone(),
                    offset: tree.end,
                    msg: "line without end".into(),
                });
            };
            if memchr::memmem::find(body, CHECKPOINT_MARKER).is_some()
                && let Ok(rec) = Record::parse(body)
            {
                tree.last_checkpoint_seq = Some(rec.seq);
                cs.last_seen = Instant::now();
            }
            tree.frontier.push(&record_hash(body));
            tree.end += n as u64;
        }
        cs.tree = Some(tree);
        Ok(())
    }

    /// Write a checkpoint if one is due (or `force` and records followed the last one).
    fn maybe_checkpoint(
        &mut self,
        st: &mut ChainState,
        force: bool,
    ) -> Result<Option<RecordInfo>, AuditError> {
        let Some(cs) = self.checkpoint.as_ref() else {
            return Ok(None);
        };
        // Records appended after the last checkpoint record.
        let since =
            |cs: &CheckpointState| match cs.tree.as_ref().and_then(|t| t.last_checkpoint_seq) {
                Some(s) => st.next_seq.saturating_sub(s + 1),
                None => st.next_seq,
            };
        let due = |cs: &CheckpointState, n: u64| {
            n > 0
                && (force
                    || (cs.opts.every_records > 0 && n >= cs.opts.every_records)
                    || cs.last_seen.elapsed() >= cs.opts.every)
        };
        // Cheap pre-check on possibly stale knowledge; then refresh from the file and decide.
        if cs.tree.is_some() && !due(cs, since(cs)) {
            return Ok(None);
        }
        self.extend_tree(st.end)?;
        let Some(cs) = self.checkpoint.as_ref() else {
            return Ok(None);
        };
        if !due(cs, since(cs)) {
            return Ok(None);
        }
        let Some(tree) = cs.tree.as_ref() else {
            return Ok(None);
        };
        let root = to_hex(&tree.frontier.root());
        let ts = Timestamp::now().max(st.last_ts);
        let ts_s = ts.to_string();
        let body = checkpoint_body(st.next_seq, st.end, &root, &ts_s, &self.host, &self.boot);
        let (sig, global_sig) = cs.opts.key.sign_body(&body)?;
        let event = Event::Checkpoint(CheckpointEvent {
            records: st.next_seq,
            bytes: st.end,
            root,
            frontier: tree.frontier.nodes().iter().map(to_hex).collect(),
            sig,
            global_sig,
        });
        let prev = to_hex(&st.last_hash);
        let rec = RecordOut {
            v: FORMAT_VERSION,
            seq: st.next_seq,
            ts: &ts_s,
            host: &self.host,
            boot: &self.boot,
            agent: "",
            bundle: "",
            policy: "",
            event: &event,
            prev: &prev,
        };
        let mut line = Vec::new();
        encode(&mut line, &rec)?;
        let body_bytes = line.get(..line.len() - 1).unwrap_or_default();
        let hash = record_hash(body_bytes);
        self.ensure_room(st.end, line.len() as u64)?;
        if let Err(e) = (&self.file).write_all(&line) {
            let _ = self.file.set_len(st.end);
            return Err(AuditError::Io {
                what: "appending checkpoint to log",
                path: self.path.clone(),
                source: e,
            });
        }
        let info = RecordInfo {
            seq: st.next_seq,
            offset: st.end,
            len: line.len() as u64,
            hash,
            ts,
        };
        // The log must hold the checkpoint before any sink does.
        self.note_written(1);
        self.sync_if_due(true)?;
        *st = ChainState {
            end: st.end + line.len() as u64,
            next_seq: st.next_seq + 1,
            last_hash: hash,
            last_ts: ts,
        };
        if let Some(cs) = self.checkpoint.as_mut() {
            if let Some(tree) = cs.tree.as_mut() {
                tree.frontier.push(&hash);
                tree.end = st.end;
                tree.last_checkpoint_seq = Some(info.seq);
            }
            cs.last_seen = Instant::now();
            if let Some(sink) = &cs.opts.sink {
                write_sink(sink, &line)?;
            }
            if cs.opts.syslog {
                send_syslog(&body, &line);
            }
        }
        Ok(Some(info))
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        let _ = self.sync_if_due(true);
    }
}

fn tree_from_checkpoint(offset: u64, line: &[u8]) -> Option<TreeState> {
    let rec = Record::parse(line).ok()?;
    let Event::Checkpoint(c) = rec.event else {
        return None;
    };
    let nodes = c
        .frontier
        .iter()
        .map(|h| from_hex(h))
        .collect::<Option<Vec<_>>>()?;
    let frontier = Frontier::from_parts(c.records, nodes)?;
    // Trust the stored frontier only if it is self-consistent and describes this position.
    (c.records == rec.seq && c.bytes == offset && Some(frontier.root()) == from_hex(&c.root))
        .then_some(TreeState {
            frontier,
            end: offset,
            last_checkpoint_seq: None,
        })
}

fn write_sink(path: &Path, line: &[u8]) -> Result<(), AuditError> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(AuditError::io("opening checkpoint sink", path))?;
    f.write_all(line)
        .map_err(AuditError::io("writing checkpoint sink", path))?;
    f.sync_data()
        .map_err(AuditError::io("fsync of checkpoint sink", path))
}

fn send_syslog(body: &str, line: &[u8]) {
    let sig = Record::parse(line.strip_suffix(b"\n").unwrap_or(line))
        .ok()
        .and_then(|r| match r.event {
            Event::Checkpoint(c) => Some(format!("sig={} global_sig={}", c.sig, c.global_sig)),
            _ => None,
        });
    let msg = format!("{body} {}", sig.unwrap_or_default());
    let Ok(c) = std::ffi::CString::new(msg) else {
        return;
    };
    // SAFETY: openlog keeps the static ident pointer; syslog gets a "%s" format with one valid
    // NUL-terminated argument.
    unsafe {
        libc::openlog(c"aegis-audit".as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV);
        libc::syslog(
            libc::LOG_NOTICE | libc::LOG_AUTHPRIV,
            c"%s".as_ptr(),
            c.as_ptr(),
        );
    }
}

/// A tail read or search failure as the writer reports it (`what` was being done).
fn tail_error(path: &Path, e: TailError, what: &'static str) -> AuditError {
    match e {
        TailError::Io(source) => AuditError::Io { what, path: path.to_path_buf(), source },
        TailError::Damaged(offset, msg) => AuditError::CorruptTail { path: path.to_path_buf(), offset, msg },
    }
}
