//! Diagnostics: every problem the compiler reports about a policy.
//!
//! Input: problems found by the parser, composer, lowering, validator and lints.
//! Output: [`Diagnostic`] values with a stable [`Code`], a severity, a message, the source
//! location that caused them and a help text; rendered by miette for people or as JSON.
//! Invariants: codes are stable API (documented in `docs/policy.md`, checked by a test);
//! an error always makes the policy invalid (exit 2); warnings never do.

use std::fmt;

use crate::source::{Origin, SourceMap};

macro_rules! codes {
    ($($variant:ident => $text:literal,)*) => {
        /// Stable diagnostic codes. Never renumber or rename one: tools match on them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($variant,)* }
        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $text,)* }
            }
        }
    };
}

codes! {
    // A bug in aegisc, never the policy's fault
    Internal => "aegis::policy::internal",
    // Reading files
    Io => "aegis::policy::io",
    NotUtf8 => "aegis::policy::not_utf8",
    TooLarge => "aegis::policy::too_large",
    TomlSyntax => "aegis::policy::toml_syntax",
    // Structure
    UnknownKey => "aegis::policy::unknown_key",
    WrongType => "aegis::policy::wrong_type",
    MissingKey => "aegis::policy::missing_key",
    UnsupportedVersion => "aegis::policy::unsupported_version",
    EmptyValue => "aegis::policy::empty_value",
    InvalidName => "aegis::policy::invalid_name",
    // Composition
    ExtendsCycle => "aegis::policy::extends_cycle",
    ExtendsMissing => "aegis::policy::extends_missing",
    ExtendsTooDeep => "aegis::policy::extends_too_deep",
    UnknownProfile => "aegis::policy::unknown_profile",
    // Paths
    RelativePath => "aegis::policy::relative_path",
    HomePath => "aegis::policy::home_path",
    NonNormalPath => "aegis::policy::non_normalised_path",
    DotDotPath => "aegis::policy::dotdot_path",
    UnsupportedGlob => "aegis::policy::unsupported_glob",
    InvalidGlob => "aegis::policy::invalid_glob",
    UnknownParameter => "aegis::policy::unknown_parameter",
    InvalidPath => "aegis::policy::invalid_path",
    UnknownProtection => "aegis::policy::unknown_protection",
    // Network
    InvalidMode => "aegis::policy::invalid_network_mode",
    InvalidEndpoint => "aegis::policy::invalid_endpoint",
    InvalidHost => "aegis::policy::invalid_host",
    InvalidCidr => "aegis::policy::invalid_cidr",
    InvalidPort => "aegis::policy::invalid_port",
    InvalidProtocol => "aegis::policy::invalid_protocol",
    EndpointInNoneMode => "aegis::policy::endpoint_in_none_mode",
    WildcardInHostMode => "aegis::policy::wildcard_in_host_mode",
    MissingResolver => "aegis::policy::missing_resolver",
    InvalidAddress => "aegis::policy::invalid_address",
    // APIs
    InvalidHttpRule => "aegis::policy::invalid_http_rule",
    InvalidCredential => "aegis::policy::invalid_credential",
    ApiWithoutProxy => "aegis::policy::api_without_proxy",
    DuplicateApiHost => "aegis::policy::duplicate_api_host",
    ExeNeedsProxy => "aegis::policy::exe_needs_proxy",
    // Resources
    InvalidSize => "aegis::policy::invalid_size",
    InvalidDuration => "aegis::policy::invalid_duration",
    NegativeLimit => "aegis::policy::negative_limit",
    OutOfRange => "aegis::policy::out_of_range",
    // Syscalls and enforcement
    UnknownSyscall => "aegis::policy::unknown_syscall",
    InvalidErrno => "aegis::policy::invalid_errno",
    ConflictingSyscall => "aegis::policy::conflicting_syscall",
    InvalidProfile => "aegis::policy::invalid_seccomp_profile",
    IoUringUnmediated => "aegis::policy::io_uring_unmediated",
    InvalidEnforcement => "aegis::policy::invalid_enforcement",
    // Lints (warnings)
    LintWriteAndExec => "aegis::lint::write_and_exec",
    LintInterpreter => "aegis::lint::interpreter_exec",
    LintNetworkAny => "aegis::lint::network_any",
    LintReadableSecret => "aegis::lint::readable_secret",
    LintDangerousSyscall => "aegis::lint::dangerous_syscall",
    LintShadowedGrant => "aegis::lint::shadowed_grant",
    LintNoLimits => "aegis::lint::no_resource_limits",
    LintBestEffort => "aegis::lint::best_effort_layer",
    LintBroadWrite => "aegis::lint::broad_write",
    LintIgnoredSetting => "aegis::lint::ignored_setting",
    LintBroadUnix => "aegis::lint::broad_unix_grant",
    LintUnixNotVisible => "aegis::lint::unix_socket_not_visible",
    LintUnprotected => "aegis::lint::unprotected",
    LintUnpinnedProfile => "aegis::lint::unpinned_profile",
    LintPrivateTmp => "aegis::lint::private_tmp_grant",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, tied to the source that caused it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub origin: Option<Origin>,
    /// Short text shown under the underlined span.
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            origin: None,
            label: None,
            help: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    pub fn at(mut self, origin: Origin) -> Diagnostic {
        self.origin = Some(origin);
        self
    }

    pub fn at_opt(mut self, origin: Option<Origin>) -> Diagnostic {
        self.origin = origin;
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Collects diagnostics while a pass keeps going, so one run reports every problem.
#[derive(Debug, Default)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

/// Past this many errors the rest are almost always consequences of the first ones.
const MAX_ERRORS: usize = 200;

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        if d.is_error() && self.error_count() >= MAX_ERRORS {
            return;
        }
        self.items.push(d);
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        for d in ds {
            self.push(d);
        }
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }
}

pub use aegis_policy::did_you_mean;

// ---------------------------------------------------------------------------------------
// Rendering

/// A diagnostic joined with its source text, in the shape miette renders.
#[derive(Debug)]
struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: Option<Shown>,
    /// The label's byte range in the file, cut to what is shown.
    label: Option<(usize, usize)>,
}

/// What miette gets to show of a file: the whole text, or for a long line one window of it.
#[derive(Debug)]
enum Shown {
    Whole(miette::NamedSource<String>),
    Window(Window),
}

/// One line of a file, cut around the label (long lines of a generated or minified policy:
/// miette's snippet renderer pads with Rust format widths, which are 16-bit, and would show
/// the whole line). `text` starts with `…` when the line starts earlier and ends with `…`
/// when it goes on; `offset` is the file offset of `text`'s first byte as miette counts it
/// (the line's real offset minus the marker), so the label's own offsets stay valid.
#[derive(Debug)]
struct Window {
    name: String,
    text: String,
    offset: usize,
    /// 0-based line of the window, and the 0-based column (in characters) of the label.
    line: usize,
    column: usize,
}

impl miette::SourceCode for Window {
    fn read_span<'a>(
        &'a self,
        _span: &miette::SourceSpan,
        _before: usize,
        _after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            self.text.as_bytes(),
            miette::SourceSpan::new(self.offset.into(), self.text.len()),
            self.line,
            self.column,
            1,
        )))
    }
}

impl miette::SourceCode for Shown {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        match self {
            Shown::Whole(s) => s.read_span(span, before, after),
            Shown::Window(w) => w.read_span(span, before, after),
        }
    }
}

/// Lines up to this many bytes (and labels up to [`MAX_LABEL`]) are shown whole, with a
/// line of context around them; anything longer is shown as a window of one line.
const MAX_SHOWN_LINE: usize = 240;
const MAX_LABEL: usize = 120;
/// Bytes of a long line shown before and after the label.
const WINDOW_CONTEXT: usize = 60;

/// Byte range of the line holding `at` (without its newline).
fn line_around(text: &str, at: usize) -> (usize, usize) {
    let start = text.get(..at).and_then(|t| t.rfind('\n')).map_or(0, |i| i + 1);
    let end = text.get(at..).and_then(|t| t.find('\n')).map_or(text.len(), |i| at + i);
    (start, end)
}

fn floor_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// What to show of `text` for a label at `start..end`: the whole file when its lines there
/// are short, else a window of the label's line (and the label cut to fit).
fn shown(name: &str, text: &str, start: usize, end: usize) -> (Shown, (usize, usize)) {
    let start = floor_char(text, start);
    let end = ceil_char(text, end.max(start));
    let (ls, le) = line_around(text, start);
    let prev = ls.checked_sub(1).map(|p| line_around(text, p));
    let next = (le < text.len()).then(|| line_around(text, le + 1));
    let long = |r: Option<(usize, usize)>| r.is_some_and(|(a, b)| b - a > MAX_SHOWN_LINE);
    if !long(Some((ls, le))) && !long(prev) && !long(next) && end - start <= MAX_LABEL {
        return (Shown::Whole(miette::NamedSource::new(name, text.to_string())), (start, end));
    }
    let label_end = ceil_char(text, end.min(le).min(start + MAX_LABEL)).max(start);
    let from = floor_char(text, start.saturating_sub(WINDOW_CONTEXT).max(ls));
    let to = ceil_char(text, (label_end + WINDOW_CONTEXT).min(le));
    let (lead, tail) = (if from > ls { "…" } else { "" }, if to < le { "…" } else { "" });
    let line = text.get(..ls).map_or(0, |t| t.matches('\n').count());
    let column = text.get(ls..start).map_or(0, |t| t.chars().count());
    let window = Window {
        name: name.to_string(),
        text: format!("{lead}{}{tail}", text.get(from..to).unwrap_or_default()),
        offset: from - lead.len(),
        line,
        column,
    };
    (Shown::Window(window), (start, label_end))
}

/// Quoted values in a message longer than this are shown shortened (JSON output keeps them).
const MAX_SHOWN_VALUE: usize = 160;

/// `text` with every `` `value` `` longer than [`MAX_SHOWN_VALUE`] bytes shortened to its
/// start and end around `…(N bytes)…`: a message quotes what the policy said, and a 200 KB
/// value would otherwise be printed whole, wrapped over thousands of lines.
fn shorten_values(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_SHOWN_VALUE {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(MAX_SHOWN_VALUE * 2);
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts are inside backticks.
        if i % 2 == 1 && part.len() > MAX_SHOWN_VALUE {
            let head = floor_char(part, MAX_SHOWN_VALUE - 40);
            let tail = ceil_char(part, part.len() - 20);
            out.push_str(part.get(..head).unwrap_or_default());
            out.push_str(&format!("…({} bytes)…", part.len()));
            out.push_str(part.get(tail..).unwrap_or_default());
        } else {
            out.push_str(part);
        }
    }
    std::borrow::Cow::Owned(out)
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shorten_values(&self.diag.message))
    }
}

impl std::error::Error for Rendered<'_> {}

impl miette::Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code.as_str()))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.as_ref().map(|h| Box::new(shorten_values(h).into_owned()) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let (start, end) = self.label?;
        self.source.as_ref()?;
        let text = self.diag.label.as_deref().map(|l| shorten_values(l).into_owned());
        let label = miette::LabeledSpan::new(text, start, end - start);
        Some(Box::new(std::iter::once(label)))
    }
}

/// Renders diagnostics for a terminal (or, with `color = false`, for snapshots and logs).
/// Long source lines are shown as a window around the problem (see `Window`).
pub fn render_human(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        let (source, label) = match d.origin {
            Some(o) => {
                let (s, l) = shown(sources.name(o.file), sources.text(o.file), o.span.start as usize, o.span.end as usize);
                (Some(s), Some(l))
            }
            None => (None, None),
        };
        let r = Rendered { diag: d, source, label };
        if handler.render_report(&mut out, &r).is_err() {
            out.push_str(&format!("{}: {}\n", d.code, d.message));
        }
    }
    out
}

/// The JSON shape of a diagnostic (`--format json`).
pub fn to_json(d: &Diagnostic, sources: &SourceMap) -> serde_json::Value {
    let loc = d.origin.map(|o| sources.locate(o));
    serde_json::json!({
        "code": d.code.as_str(),
        "severity": d.severity,
        "message": d.message,
        "file": loc.as_ref().map(|l| l.file.clone()),
        "line": loc.as_ref().map(|l| l.line),
        "column": loc.as_ref().map(|l| l.column),
        "span": d.origin.map(|o| [o.span.start, o.span.end]),
        "label": d.label,
        "help": d.help,
    })
}
