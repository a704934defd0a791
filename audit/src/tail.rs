//! Positional reads of a log for writers: the last complete line and the torn bytes after it
//! (read backwards, so the cost does not grow with the log), the last checkpoint line, and a
//! forward line reader from an offset. Input: an open log file and its length; output: byte
//! ranges and line contents. Invariant: a "complete line" ends with `\n`; bytes after the last
//! `\n` are a torn tail. Nothing here interprets records beyond finding line boundaries.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use crate::record::MAX_RECORD_BYTES;

/// Backward read step; larger than any record so that one step always holds a line boundary.
const CHUNK: u64 = 2 * MAX_RECORD_BYTES as u64 + 2;

/// The end of a log as found by [`read_tail`].
#[derive(Debug)]
pub(crate) struct Tail {
    /// Offset just after the last `\n` (0 if there is none).
    pub complete_end: u64,
    /// Bytes after `complete_end` (a torn line), at most `MAX_RECORD_BYTES`.
    pub torn: Vec<u8>,
    /// Start offset and bytes (without `\n`) of the last complete line.
    pub last_line: Option<(u64, Vec<u8>)>,
}

/// Why the tail cannot be read as lines.
#[derive(Debug)]
pub(crate) enum TailError {
    Io(io::Error),
    /// Offset and what is wrong.
    Damaged(u64, String),
}

fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    file.read_exact_at(buf, at)
}

/// Find the torn tail and the last complete line of a file of length `len`. Reads 64 KiB from
/// the end and widens (x4) only if the lines there are longer, up to two records' worth.
pub(crate) fn read_tail(file: &File, len: u64) -> Result<Tail, TailError> {
    let limit = len.min(2 * MAX_RECORD_BYTES as u64 + 2);
    let mut want = len.min(64 << 10);
    loop {
        match tail_within(file, len, want)? {
            Some(t) => return Ok(t),
            None if want < limit => want = (want * 4).min(limit),
            None => {
                return Err(TailError::Damaged(
                    len - want,
                    format!("no complete record in the last {want} bytes"),
                ));
            }
        }
    }
}

/// [`read_tail`] on the last `want` bytes; `None` if they do not hold the needed line ends.
fn tail_within(file: &File, len: u64, want: u64) -> Result<Option<Tail>, TailError> {
    let max = MAX_RECORD_BYTES as u64;
    let start = len - want;
    let mut buf = vec![
        0u8;
        usize::try_from(want)
            .map_err(|_| TailError::Damaged(start, "tail too large".into()))?
    ];
    read_exact_at(file, &mut buf, start).map_err(TailError::Io)?;
    let Some(last_nl) = memchr::memrchr(b'\n', &buf) else {
        if start > 0 {
            return Ok(None);
        }
        if want > max {
            return Err(TailError::Damaged(
                0,
                format!("no line end in {want} bytes"),
            ));
        }
        return Ok(Some(Tail {
            complete_end: 0,
            torn: buf,
            last_line: None,
        }));
    };
    let complete_end = start + last_nl as u64 + 1;
    let torn = buf.get(last_nl + 1..).unwrap_or_default().to_vec();
    if torn.len() as u64 > max {
        return Err(TailError::Damaged(
            complete_end,
            format!("{} bytes after the last complete line", torn.len()),
        ));
    }
    let head = buf.get(..last_nl).unwrap_or_default();
    let line_start = match memchr::memrchr(b'\n', head) {
        Some(p) => p + 1,
        None if start == 0 => 0,
        None => return Ok(None),
    };
    let line = head.get(line_start..).unwrap_or_default().to_vec();
    Ok(Some(Tail {
        complete_end,
        torn,
        last_line: Some((start + line_start as u64, line)),
    }))
}

/// Find the last line before `end` (a line boundary) that contains `needle`; returns its start
/// offset and bytes. Reads backwards in large chunks.
pub(crate) fn find_last_line_with(
    file: &File,
    end: u64,
    needle: &[u8],
) -> Result<Option<(u64, Vec<u8>)>, TailError> {
    let finder = memchr::memmem::FinderRev::new(needle);
    let mut hi = end;
    while hi > 0 {
        let lo = hi.saturating_sub(CHUNK);
        let mut buf = vec![0u8; usize::try_from(hi - lo).unwrap_or(0)];
        read_exact_at(file, &mut buf, lo).map_err(TailError::Io)?;
        // Only whole lines: skip the partial first line unless the chunk starts the file.
        let region_start = if lo == 0 {
            0
        } else {
            match memchr::memchr(b'\n', &buf) {
                Some(p) if p + 1 < buf.len() => p + 1,
                _ => {
                    return Err(TailError::Damaged(
                        lo,
                        "line longer than the record limit".into(),
                    ));
                }
            }
        };
        let region = buf.get(region_start..).unwrap_or_default();
        if let Some(p) = finder.rfind(region) {
            let before = region.get(..p).unwrap_or_default();
            let s = memchr::memrchr(b'\n', before).map_or(0, |q| q + 1);
            let after = region.get(p..).unwrap_or_default();
            let e = memchr::memchr(b'\n', after).map_or(region.len(), |q| p + q);
            let line = region.get(s..e).unwrap_or_default().to_vec();
            return Ok(Some((lo + (region_start + s) as u64, line)));
        }
        hi = lo + region_start as u64;
    }
    Ok(None)
}

/// Reads a file forward from an offset with `pread`, leaving the shared file offset alone.
pub(crate) struct ReadAt<'a> {
    pub file: &'a File,
    pub pos: u64,
    pub end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        let Some(dst) = buf.get_mut(..n) else {
            return Ok(0);
        };
        let got = self.file.read_at(dst, self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}
