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
        self.files.push(SourceFile { name, path, text: text.into() });
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
        let text = self.text(origin.file);
        let offset = (origin.span.start as usize).min(text.len());
        let before = text.get(..offset).unwrap_or(text);
        let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before.get(line_start..).map(|s| s.chars().count()).unwrap_or(0) + 1;
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
