//! Loading policy files and composing `extends` chains.
//!
//! Input: the path of the root policy file (or its text, for tests and the fuzzer).
//! Output: the [`SourceMap`] of every file read and one merged [`PolicyFile`].
//! Semantics: `extends = [A, B]` composes A, then B, then the file itself. Each file's own
//! `extends` is resolved first (depth first), and a file reached twice (a diamond) is
//! composed once, at its first place in that order. Merging: lists are concatenated
//! (duplicates are removed later, in the IR), scalar keys of a later file override earlier
//! ones, `[api.NAME]` tables merge key by key, `[parameters]` merge by name.
//! An entry `aegis:NAME` or `aegis:NAME@VERSION` is a built-in profile ([`crate::profiles`]):
//! its text comes from the compiler, and its name in messages and origins is
//! `aegis:NAME@VERSION` (the version it resolved to). A profile extends only profiles.
//! Invariants: cycles are errors naming the whole cycle; a missing file or an unknown profile
//! is an error at the `extends` entry that names it (with a did-you-mean for a profile); an
//! unpinned profile reference is a warning; at most [`MAX_FILES`] files and [`MAX_DEPTH`]
//! levels.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::profiles::{self, Unknown};
use crate::source::{MAX_POLICY_BYTES, Origin, SourceMap, Span};
use crate::syntax::ast::*;
use crate::syntax::parse_file;

pub const MAX_FILES: usize = 64;
pub const MAX_DEPTH: usize = 16;

/// The result of loading: every source read, and the merged syntax tree when no file
/// failed to parse.
pub struct Loaded {
    pub sources: SourceMap,
    pub merged: Option<PolicyFile>,
}

/// Reads a file as a policy source, with the checks every policy file gets.
fn read_source(path: &Path) -> Result<String, Diagnostic> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Diagnostic::error(Code::Io, format!("cannot read {}: {e}", path.display()))
            .help("check the path and its permissions")
    })?;
    if meta.is_dir() {
        return Err(Diagnostic::error(Code::Io, format!("{} is a directory, not a policy file", path.display()))
            .help("give the path of a .toml policy file"));
    }
    if meta.len() > MAX_POLICY_BYTES {
        return Err(Diagnostic::error(
            Code::TooLarge,
            format!("{} is {} bytes; policies are limited to {} bytes", path.display(), meta.len(), MAX_POLICY_BYTES),
        )
        .help("split the policy with `extends`, or check that this is the right file"));
    }
    // The size above is 0 for a pipe or a device (`/dev/zero`): never read more than the
    // limit, whatever the file claims.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_POLICY_BYTES + 1), &mut bytes))
        .map_err(|e| Diagnostic::error(Code::Io, format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(Diagnostic::error(
            Code::TooLarge,
            format!("{} holds more than {} bytes; policies are limited to that", path.display(), MAX_POLICY_BYTES),
        )
        .help("split the policy with `extends`, or check that this is the right file"));
    }
    decode_utf8(&bytes).map_err(|(offset, d)| {
        d.help(format!("policy files must be UTF-8; the first invalid byte is at offset {offset}"))
    })
}

fn decode_utf8(bytes: &[u8]) -> Result<String, (usize, Diagnostic)> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let off = e.valid_up_to();
            Err((off, Diagnostic::error(Code::NotUtf8, format!("file is not valid UTF-8 (byte {off})"))))
        }
    }
}

/// Lexically joins `rel` onto `base_dir` for display (`policies/base.toml`), without
/// touching the filesystem.
fn display_join(base_dir: &Path, rel: &str) -> PathBuf {
    let rel = Path::new(rel);
    if rel.is_absolute() {
        return rel.to_path_buf();
    }
    let mut out = base_dir.to_path_buf();
    for c in rel.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

struct Composer<'a> {
    sources: SourceMap,
    diags: &'a mut Diagnostics,
    /// Files in composition order (bases first).
    order: Vec<PolicyFile>,
    done: BTreeSet<PathBuf>,
    stack: Vec<(PathBuf, String)>,
    failed: bool,
}

impl Composer<'_> {
    /// Loads `display` (canonical path `canon`) and everything it extends.
    fn visit(&mut self, display: PathBuf, canon: PathBuf, text: String, via: Option<Origin>) {
        if self.sources.files().count() >= MAX_FILES {
            self.diags.push(
                Diagnostic::error(Code::ExtendsTooDeep, format!("more than {MAX_FILES} policy files in one composition"))
                    .at_opt(via)
                    .help("flatten the extends chain"),
            );
            self.failed = true;
            return;
        }
        let name = display.to_string_lossy().into_owned();
        let file = self.sources.add(name.clone(), canon.clone(), text);
        let text = self.sources.text(file).to_string();
        let Some(pf) = parse_file(file, &text, self.diags) else {
            self.failed = true;
            return;
        };
        if let Some(v) = &pf.version
            && v.value != 1
        {
            self.diags.push(
                Diagnostic::error(Code::UnsupportedVersion, format!("policy language version {} is not supported", v.value))
                    .at(v.origin)
                    .label("unsupported version")
                    .help("this aegisc understands version = 1"),
            );
            self.failed = true;
        }
        let builtin = name.starts_with(profiles::PREFIX);
        self.stack.push((canon.clone(), name));
        let base_dir = display.parent().map(Path::to_path_buf).unwrap_or_default();
        for ext in &pf.agent.extends {
            match profiles::parse(&ext.value) {
                Some(reference) => self.extend_profile(reference, ext),
                None if builtin => {
                    // Only a profile's own author can get here: a shipped profile that
                    // extends a file would depend on the directory it is used from.
                    self.diags.push(
                        Diagnostic::error(Code::ExtendsMissing, format!("built-in profile extends `{}`, which is not a profile", ext.value))
                            .at(ext.origin)
                            .help("a built-in profile extends only `aegis:` profiles"),
                    );
                    self.failed = true;
                }
                None => self.extend(&base_dir, ext),
            }
        }
        self.stack.pop();
        self.done.insert(canon);
        self.order.push(pf);
    }

    /// Resolves an `aegis:` entry to a built-in profile and composes it.
    fn extend_profile(&mut self, reference: Result<profiles::Reference<'_>, Unknown>, ext: &SString) {
        let found = reference.and_then(|r| profiles::find(&r).map(|p| (p, r.version.is_none())));
        let (profile, unpinned) = match found {
            Ok(f) => f,
            Err(why) => {
                self.diags.push(unknown_profile(&ext.value, why).at(ext.origin));
                self.failed = true;
                return;
            }
        };
        let reference = profile.reference();
        if unpinned {
            self.diags.push(
                Diagnostic::warning(
                    Code::LintUnpinnedProfile,
                    format!("`{}` is not pinned: it means `{reference}` with this aegis, and may mean a newer version with the next", ext.value),
                )
                .at(ext.origin)
                .label("unpinned profile")
                .help(format!("write `{reference}` so that upgrading aegis never changes this policy's permissions")),
            );
        }
        let key = PathBuf::from(&reference);
        if self.too_deep(ext) || !self.enter(&key, ext) {
            return;
        }
        self.visit(key.clone(), key, profile.text.to_string(), Some(ext.origin));
    }

    /// An error when `ext` would make the chain deeper than [`MAX_DEPTH`].
    fn too_deep(&mut self, ext: &SString) -> bool {
        if self.stack.len() < MAX_DEPTH {
            return false;
        }
        self.diags.push(
            Diagnostic::error(Code::ExtendsTooDeep, format!("extends chain deeper than {MAX_DEPTH} files"))
                .at(ext.origin)
                .help("flatten the extends chain"),
        );
        self.failed = true;
        true
    }

    /// Whether the file `canon`, named by `ext`, is still to be composed: not closing a
    /// cycle (an error), not composed already (a diamond: composed at its first position).
    fn enter(&mut self, canon: &Path, ext: &SString) -> bool {
        if let Some(pos) = self.stack.iter().position(|(p, _)| p == canon) {
            let mut names: Vec<&str> = self.stack.iter().skip(pos).map(|(_, n)| n.as_str()).collect();
            let first = names.first().copied().unwrap_or("");
            names.push(first);
            self.diags.push(
                Diagnostic::error(Code::ExtendsCycle, format!("extends cycle: {}", names.join(" → ")))
                    .at(ext.origin)
                    .label("this entry closes the cycle")
                    .help("remove one of the extends entries in the cycle"),
            );
            self.failed = true;
            return false;
        }
        !self.done.contains(canon)
    }

    fn extend(&mut self, base_dir: &Path, ext: &SString) {
        if self.too_deep(ext) {
            return;
        }
        let display = display_join(base_dir, &ext.value);
        let canon = match std::fs::canonicalize(&display) {
            Ok(c) => c,
            Err(e) => {
                self.diags.push(
                    Diagnostic::error(Code::ExtendsMissing, format!("cannot read extended policy {}: {e}", display.display()))
                        .at(ext.origin)
                        .label("extended here")
                        .help("paths in `extends` are relative to the file that contains them"),
                );
                self.failed = true;
                return;
            }
        };
        if !self.enter(&canon, ext) {
            return;
        }
        match read_source(&display) {
            Ok(text) => self.visit(display, canon, text, Some(ext.origin)),
            Err(d) => {
                self.diags.push(d.at(ext.origin));
                self.failed = true;
            }
        }
    }
}

/// The error for an `aegis:` entry that names no shipped profile.
pub fn unknown_profile(entry: &str, why: Unknown) -> Diagnostic {
    let list = || profiles::names().collect::<Vec<_>>().join(", ");
    match why {
        Unknown::Malformed { what, suggestion } => {
            let help = match suggestion {
                Some(s) => format!("did you mean `aegis:{s}`? (`aegis profiles` lists them)"),
                None => format!("write `aegis:NAME` or `aegis:NAME@VERSION`; `aegis profiles` lists them: {}", list()),
            };
            Diagnostic::error(Code::UnknownProfile, format!("`{entry}`: {what}")).label("not a profile reference").help(help)
        }
        Unknown::Name { suggestion } => {
            let help = match suggestion {
                Some(s) => format!("did you mean `aegis:{s}`? (`aegis profiles` lists them)"),
                None => format!("the built-in profiles are: {} (`aegis profiles` describes them)", list()),
            };
            Diagnostic::error(Code::UnknownProfile, format!("`{entry}` is not a built-in profile"))
                .label("unknown profile")
                .help(help)
        }
        Unknown::Version { versions } => {
            let v: Vec<String> = versions.iter().map(|v| format!("@{v}")).collect();
            Diagnostic::error(Code::UnknownProfile, format!("`{entry}`: this aegis ships that profile in version {} only", v.join(", ")))
                .label("unknown version")
                .help("a newer aegis may ship this version; pin one this aegis has, or upgrade aegis")
        }
    }
}

/// Loads `path` and everything it extends, and merges them.
pub fn load(path: &Path, diags: &mut Diagnostics) -> Loaded {
    let text = match read_source(path) {
        Ok(t) => t,
        // Not UTF-8: load the valid prefix so the diagnostic can point at the first bad byte.
        Err(d) if d.code == Code::NotUtf8 => match std::fs::read(path) {
            Ok(bytes) => return load_bytes(&path.display().to_string(), &bytes, diags),
            Err(_) => {
                diags.push(d);
                return Loaded { sources: SourceMap::default(), merged: None };
            }
        },
        Err(d) => {
            diags.push(d);
            return Loaded { sources: SourceMap::default(), merged: None };
        }
    };
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    compose(path.to_path_buf(), canon, text, diags)
}

/// Loads a policy given as bytes (tests, fuzzing, stdin). `extends` entries resolve
/// relative to the current directory.
pub fn load_bytes(name: &str, bytes: &[u8], diags: &mut Diagnostics) -> Loaded {
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        diags.push(
            Diagnostic::error(
                Code::TooLarge,
                format!("{name} is {} bytes; policies are limited to {MAX_POLICY_BYTES} bytes", bytes.len()),
            )
            .help("split the policy with `extends`, or check that this is the right file"),
        );
        return Loaded { sources: SourceMap::default(), merged: None };
    }
    match decode_utf8(bytes) {
        Ok(text) => compose(PathBuf::from(name), PathBuf::from(name), text, diags),
        Err((offset, d)) => {
            let mut sources = SourceMap::default();
            let valid = String::from_utf8_lossy(bytes.get(..offset).unwrap_or(&[])).into_owned();
            let file = sources.add(name.to_string(), PathBuf::from(name), valid);
            let o = u32::try_from(offset).unwrap_or(u32::MAX);
            diags.push(
                d.at(Origin { file, span: Span { start: o, end: o } })
                    .help("policy files must be UTF-8"),
            );
            Loaded { sources, merged: None }
        }
    }
}

fn compose(display: PathBuf, canon: PathBuf, text: String, diags: &mut Diagnostics) -> Loaded {
    let mut c = Composer {
        sources: SourceMap::default(),
        diags,
        order: Vec::new(),
        done: BTreeSet::new(),
        stack: Vec::new(),
        failed: false,
    };
    c.visit(display, canon, text, None);
    let merged = if c.failed {
        None
    } else {
        let mut it = c.order.into_iter();
        it.next().map(|first| it.fold(first, merge))
    };
    Loaded { sources: c.sources, merged }
}

fn over<T>(base: Option<T>, next: Option<T>) -> Option<T> {
    next.or(base)
}

/// Composes `next` on top of `base` (see the module docs for the rules).
fn merge(mut base: PolicyFile, next: PolicyFile) -> PolicyFile {
    base.file = next.file;
    base.version = next.version.or(base.version);
    base.agent.name = over(base.agent.name, next.agent.name);
    base.agent.description = over(base.agent.description, next.agent.description);
    base.agent.command = over(base.agent.command, next.agent.command);
    base.agent.extends = next.agent.extends;
    for p in next.parameters {
        base.parameters.retain(|q| q.name.value != p.name.value);
        base.parameters.push(p);
    }
    let fs = next.filesystem;
    base.filesystem.read.extend(fs.read);
    base.filesystem.write.extend(fs.write);
    base.filesystem.deny.extend(fs.deny);
    base.filesystem.tmp_size = over(base.filesystem.tmp_size, fs.tmp_size);
    base.filesystem.protect = over(base.filesystem.protect, fs.protect);
    base.filesystem.unprotect.extend(fs.unprotect);
    base.exec.allow.extend(next.exec.allow);
    let n = next.network;
    base.network.mode = over(base.network.mode, n.mode);
    base.network.allow.extend(n.allow);
    base.network.deny.extend(n.deny);
    base.network.dns.extend(n.dns);
    base.network.unix.extend(n.unix);
    for api in next.apis {
        match base.apis.iter_mut().find(|a| a.name.value == api.name.value) {
            Some(a) => {
                a.host = over(a.host.take(), api.host);
                a.port = over(a.port.take(), api.port);
                a.scopes.extend(api.scopes);
                a.allow.extend(api.allow);
                a.deny.extend(api.deny);
                a.credential = over(a.credential.take(), api.credential);
            }
            None => base.apis.push(api),
        }
    }
    let r = next.resources;
    let b = &mut base.resources;
    b.memory = over(b.memory.take(), r.memory);
    b.pids = over(b.pids.take(), r.pids);
    b.cpu = over(b.cpu.take(), r.cpu);
    b.cpu_weight = over(b.cpu_weight.take(), r.cpu_weight);
    b.io_weight = over(b.io_weight.take(), r.io_weight);
    b.wall_time = over(b.wall_time.take(), r.wall_time);
    let s = next.syscalls;
    base.syscalls.base = over(base.syscalls.base, s.base);
    base.syscalls.allow.extend(s.allow);
    base.syscalls.deny.extend(s.deny);
    base.syscalls.log.extend(s.log);
    base.syscalls.kill.extend(s.kill);
    base.syscalls.default_errno = over(base.syscalls.default_errno, s.default_errno);
    for (k, v) in s.errno {
        base.syscalls.errno.retain(|(bk, _)| bk.value != k.value);
        base.syscalls.errno.push((k, v));
    }
    for (k, v) in next.enforcement.levels {
        base.enforcement.levels.retain(|(bk, _)| bk.value != k.value);
        base.enforcement.levels.push((k, v));
    }
    base.enforcement.min_landlock_abi =
        over(base.enforcement.min_landlock_abi, next.enforcement.min_landlock_abi);
    base
}
