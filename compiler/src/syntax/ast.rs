//! The syntax tree of one policy file: what the user wrote, with a source span on every
//! value, before any meaning is given to it.
//!
//! Input: built by `syntax::parse` from one TOML document.
//! Output: consumed by `compose` (which merges `extends` chains) and `lower` (which checks
//! and normalises values into the IR).
//! Invariants: only structure and TOML types are checked here (known keys, right TOML
//! types); every string is kept verbatim for `lower` to judge, with its origin.

use crate::source::{FileId, Origin};

#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Spanned<T> {
    pub fn new(value: T, origin: Origin) -> Spanned<T> {
        Spanned { value, origin }
    }
}

pub type SString = Spanned<String>;

#[derive(Clone, Debug, Default)]
pub struct PolicyFile {
    pub file: Option<FileId>,
    pub version: Option<Spanned<i64>>,
    pub agent: AgentSection,
    pub parameters: Vec<Parameter>,
    pub filesystem: FilesystemSection,
    pub exec: ExecSection,
    pub network: NetworkSection,
    pub apis: Vec<ApiSection>,
    pub resources: ResourcesSection,
    pub syscalls: SyscallsSection,
    pub enforcement: EnforcementSection,
}

#[derive(Clone, Debug, Default)]
pub struct AgentSection {
    pub name: Option<SString>,
    pub description: Option<SString>,
    pub extends: Vec<SString>,
    pub command: Option<Spanned<Vec<SString>>>,
}

#[derive(Clone, Debug)]
pub struct Parameter {
    pub name: SString,
    pub description: SString,
}

#[derive(Clone, Debug, Default)]
pub struct FilesystemSection {
    pub read: Vec<SString>,
    pub write: Vec<SString>,
    pub deny: Vec<SString>,
    pub tmp_size: Option<Spanned<Scalar>>,
    /// `protect = false` turns the built-in protection list off.
    pub protect: Option<Spanned<bool>>,
    /// Built-in protections the policy opts out of, by path.
    pub unprotect: Vec<SString>,
}

#[derive(Clone, Debug, Default)]
pub struct ExecSection {
    pub allow: Vec<SString>,
}

#[derive(Clone, Debug, Default)]
pub struct NetworkSection {
    pub mode: Option<SString>,
    pub allow: Vec<EndpointSyntax>,
    pub deny: Vec<EndpointSyntax>,
    pub dns: Vec<SString>,
    /// Pathname unix sockets the agent may connect to (path patterns).
    pub unix: Vec<SString>,
}

/// An endpoint as written: either the string shorthand `host:ports[/proto]` or a table.
#[derive(Clone, Debug)]
pub enum EndpointSyntax {
    Short(SString),
    Table {
        origin: Origin,
        host: Option<SString>,
        ports: Vec<Spanned<Scalar>>,
        protocol: Option<SString>,
        /// Programs that may use the endpoint (empty: any).
        exe: Vec<SString>,
    },
}

impl EndpointSyntax {
    pub fn origin(&self) -> Origin {
        match self {
            EndpointSyntax::Short(s) => s.origin,
            EndpointSyntax::Table { origin, .. } => *origin,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ApiSection {
    pub name: SString,
    pub host: Option<SString>,
    pub port: Option<Spanned<i64>>,
    pub scopes: Vec<SString>,
    pub allow: Vec<SString>,
    pub deny: Vec<SString>,
    pub credential: Option<CredentialSection>,
    /// Programs that may use the API (empty: any).
    pub exe: Vec<SString>,
}

#[derive(Clone, Debug)]
pub struct CredentialSection {
    pub origin: Origin,
    pub header: Option<SString>,
    pub prefix: Option<SString>,
    pub from_env: Option<SString>,
    pub from_file: Option<SString>,
}

/// A TOML scalar kept as written, for keys that accept several types (sizes may be
/// `"512MiB"` or a plain integer of bytes).
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
}

#[derive(Clone, Debug, Default)]
pub struct ResourcesSection {
    pub memory: Option<Spanned<Scalar>>,
    pub pids: Option<Spanned<Scalar>>,
    pub cpu: Option<Spanned<Scalar>>,
    pub cpu_weight: Option<Spanned<Scalar>>,
    pub io_weight: Option<Spanned<Scalar>>,
    pub wall_time: Option<Spanned<Scalar>>,
}

#[derive(Clone, Debug)]
pub enum SyscallBase {
    Named(SString),
    Oci(SString),
}

#[derive(Clone, Debug, Default)]
pub struct SyscallsSection {
    pub base: Option<SyscallBase>,
    pub allow: Vec<SString>,
    pub deny: Vec<SString>,
    pub log: Vec<SString>,
    pub kill: Vec<SString>,
    pub default_errno: Option<Spanned<Scalar>>,
    pub errno: Vec<(SString, Spanned<Scalar>)>,
}

#[derive(Clone, Debug, Default)]
pub struct EnforcementSection {
    pub levels: Vec<(SString, SString)>,
    pub min_landlock_abi: Option<Spanned<i64>>,
}
