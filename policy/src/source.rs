//! Source files and locations.
//!
//! Input: policy files read from disk (or given as text by tests and the fuzzer).
//! Output: a [`SourceMap`] that owns every loaded text and turns an [`Origin`] (file id +
//! byte span) into `path:line:column` for messages.
//! Invariants: a [`FileId`] is only created by [`SourceMap::add`], so it always indexes a
//! loaded file; spans are byte offsets into that file's text (clamped when resolved, so a bad
//! span can never panic a renderer).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest policy file accepted. A 10,000-rule policy is about 500 KiB; anything past this
/// limit is almost certainly not a policy and would only cost memory.
pub const MAX_POLICY_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileId(u32);

impl FileId {
    /// The file's position in the list of loaded files (`Policy::sources` in the IR).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(range: std::ops::Range<usize>) -> Span {
        let start = u32::try_from(range.start).unwrap_or(u32::MAX);
        let end = u32::try_from(range.end).unwrap_or(u32::MAX).max(start);
        Span { start, end }
    }
}

/// Where something in the IR came from: a span in one loaded file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub file: FileId,
    pub span: Span,
}

#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user spelled it (or as derived from an `extends` entry): used in
    /// messages, so it must read naturally, e.g. `policies/inbox-manager.toml`.
    pub name: String,
    pub path: PathBuf,
    pub text: Arc<str>,
    /// Byte offset where each line starts, so `locate` is a binary search, not a scan
    /// (a 10,000-rule policy locates every rule when it is compiled).
    line_starts: Vec<usize>,
}

#[derive(Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

/// A resolved location: 1-based line and column (column counted in characters).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl SourceMap {
    pub fn add(&mut self, name: String, path: PathBuf, text: impl Into<Arc<str>>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        let text: Arc<str> = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1))
            .collect();
        self.files.push(SourceFile { name, path, text, line_starts });
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }

    pub fn find_path(&self, path: &Path) -> Option<FileId> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| FileId(i as u32))
    }

    pub fn name(&self, id: FileId) -> &str {
        self.get(id).map(|f| f.name.as_str()).unwrap_or("<unknown>")
    }

    pub fn text(&self, id: FileId) -> &str {
        self.get(id).map(|f| &*f.text).unwrap_or("")
    }

    pub fn locate(&self, origin: Origin) -> Location {
        let file = self.get(origin.file);
        let text = file.map(|f| &*f.text).unwrap_or("");
        let offset = (origin.span.start as usize).min(text.len());
        let (line, line_start) = match file {
            Some(f) => {
                // The last line start at or before `offset`.
                let i = f.line_starts.partition_point(|s| *s <= offset).saturating_sub(1);
                (i + 1, f.line_starts.get(i).copied().unwrap_or(0))
            }
            None => (1, 0),
        };
        let column = text.get(line_start..offset).map(|s| s.chars().count()).unwrap_or(0) + 1;
        Location {
            file: self.name(origin.file).to_string(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// The source text an origin covers (for messages quoting the offending token).
    pub fn snippet(&self, origin: Origin) -> &str {
        let text = self.text(origin.file);
        let start = (origin.span.start as usize).min(text.len());
        let end = (origin.span.end as usize).clamp(start, text.len());
        text.get(start..end).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_counts_lines_and_characters() {
        let mut m = SourceMap::default();
        let f = m.add("p.toml".into(), PathBuf::from("p.toml"), "a = 1\nbé = \"x\"\n\nz");
        let at = |start: u32| m.locate(Origin { file: f, span: Span { start, end: start } });
        assert_eq!((at(0).line, at(0).column), (1, 1));
        assert_eq!((at(4).line, at(4).column), (1, 5));
        assert_eq!((at(6).line, at(6).column), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!((at(11).line, at(11).column), (2, 5));
        assert_eq!((at(17).line, at(17).column), (4, 1));
        assert_eq!(at(999).line, 4, "offsets past the end clamp to the last line");
    }
}
