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
    LintUnprotected => "aegis::lint::unprotected",
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

/// "did you mean `x`?" for a misspelt word among known candidates.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}

// ---------------------------------------------------------------------------------------
// Rendering

/// A diagnostic joined with its source text, in the shape miette renders.
#[derive(Debug)]
struct Rendered<'a> {
    diag: &'a Diagnostic,
    source: Option<miette::NamedSource<String>>,
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diag.message)
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
        self.diag.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let origin = self.diag.origin?;
        self.source.as_ref()?;
        let span = origin.span;
        let label = miette::LabeledSpan::new(
            self.diag.label.clone(),
            span.start as usize,
            (span.end - span.start) as usize,
        );
        Some(Box::new(std::iter::once(label)))
    }
}

/// Renders diagnostics for a terminal (or, with `color = false`, for snapshots and logs).
pub fn render_human(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    for d in diags {
        let source = d.origin.map(|o| {
            miette::NamedSource::new(sources.name(o.file), sources.text(o.file).to_string())
        });
        let r = Rendered { diag: d, source };
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
