//! The `aegisc` command line: argument definitions and dispatch, one file per command.
//!
//! Exit codes (stable, documented in README and `aegisc --help`):
//! 0 valid / allowed / no widening, 1 denied (or, for `diff`, permissions widened),
//! 2 invalid input (policy, bundle, key or arguments), 3 internal error.

mod build;
pub mod check;
pub mod diff;
mod explain;
pub mod inspect;
mod keys;
mod profiles;
mod schema;
mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::diag::{self, Diagnostic};
use crate::source::SourceMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "aegisc",
    version,
    about = "Compile, explain and check AEGIS agent policies",
    after_help = "Exit codes: 0 valid/allowed, 1 denied (diff: permissions widened), 2 invalid input, 3 internal error."
)]
pub struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check that policies are valid; print errors and warnings.
    Validate {
        #[arg(required = true)]
        policies: Vec<PathBuf>,
    },
    /// Summarise a policy's effective permissions, risky grants and exposure score.
    Inspect { policy: PathBuf },
    /// Ask whether the policy allows one action:
    /// `fs read|write|exec PATH`, `exec PATH`, `net HOST PORT [tcp|udp]`,
    /// `api NAME SCOPE`, `api NAME METHOD PATH`.
    Check {
        policy: PathBuf,
        /// Launch parameter value, NAME=/absolute/path (repeatable).
        #[arg(long = "param", value_name = "NAME=PATH")]
        params: Vec<String>,
        /// The program asking (`net` and `api` queries): grants that name programs
        /// (`exe = [...]`) apply only to them.
        #[arg(long = "exe", value_name = "PATH")]
        exe: Option<String>,
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true, value_name = "QUERY")]
        query: Vec<String>,
    },
    /// Print the JSON Schema of the policy format (for editors).
    Schema,
    /// List the built-in profiles a policy can extend (`extends = ["aegis:NAME@VERSION"]`),
    /// or print one.
    Profiles {
        /// A profile, `NAME` or `NAME@VERSION` (the `aegis:` prefix is optional).
        #[arg(value_name = "NAME[@VERSION]")]
        profile: Option<String>,
    },
    /// Compile a policy into a deterministic bundle directory, signed with --sign-key.
    Build {
        policy: PathBuf,
        /// Output directory (created; an existing bundle there is replaced).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Minisign secret key (from `aegisc keygen` or `minisign -G -W`).
        #[arg(long)]
        sign_key: Option<PathBuf>,
        /// Serial number for rollback protection (default: the issue time).
        #[arg(long)]
        serial: Option<u64>,
        /// Issue time, unix seconds (default: SOURCE_DATE_EPOCH, else now).
        #[arg(long)]
        issued_at: Option<u64>,
        /// Expire the bundle this long after its issue time (e.g. 30d, 12h).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Run the policy's (or a bundle's) seccomp filter on one syscall in the emulator.
    ExplainSyscall {
        /// A policy file, or a bundle directory.
        target: PathBuf,
        /// Syscall name or number.
        syscall: String,
        /// Argument values (decimal or 0x hex), up to six.
        args: Vec<String>,
        #[arg(long, default_value = "x86_64")]
        arch: aegis_targets::seccomp::syscalls::Arch,
    },
    /// Explain what changed in the agent's permissions between two policies or bundles.
    /// Exit 1 when permissions widened.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Markdown for a pull-request comment.
        #[arg(long)]
        markdown: bool,
    },
    /// Generate a minisign key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        #[arg(short = 'o', long = "out", default_value = "aegis")]
        prefix: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Verify a bundle as aegis-exec does: signature, manifest, every digest, expiry.
    Verify {
        bundle: PathBuf,
        /// Minisign public key of the signer.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Accept an unsigned bundle (development only).
        #[arg(long)]
        allow_unsigned: bool,
    },
}

/// The process exit status of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Denied = 1,
    Invalid = 2,
    Internal = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Prints diagnostics to stderr (human) or as JSON lines on stdout is the caller's job;
/// this renders human diagnostics, in colour when stderr is a terminal.
pub fn eprint_diagnostics(diags: &[Diagnostic], sources: &SourceMap) {
    if diags.is_empty() {
        return;
    }
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    eprint!("{}", diag::render_human(diags, sources, color));
}

pub fn diagnostics_json(diags: &[Diagnostic], sources: &SourceMap) -> serde_json::Value {
    serde_json::Value::Array(diags.iter().map(|d| diag::to_json(d, sources)).collect())
}

/// Compiles `path`, or prints its diagnostics and says the input is invalid (exit 2):
/// the first step of every command that takes a policy.
pub fn compile_or_report(path: &std::path::Path) -> Result<crate::Compiled, Exit> {
    crate::compile_file(path).map_err(|f| {
        eprint_diagnostics(&f.diagnostics, &f.sources);
        eprintln!("error: {} is invalid", path.display());
        Exit::Invalid
    })
}

/// Renders an error that carries a miette diagnostic (bundle and key errors) to stderr.
pub fn eprint_error(e: &dyn miette::Diagnostic) {
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
    let mut out = String::new();
    if miette::GraphicalReportHandler::new_themed(theme).render_report(&mut out, e).is_err() {
        out = format!("error: {e}\n");
    }
    eprint!("{out}");
}

pub fn print_json(v: &serde_json::Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot encode JSON: {e}"),
    }
}

pub fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Validate { policies } => validate::run(&policies, cli.format),
        Command::Inspect { policy } => inspect::run(&policy, cli.format),
        Command::Check { policy, params, exe, query } => check::run(&policy, &params, exe.as_deref(), &query, cli.format),
        Command::Schema => schema::run(),
        Command::Profiles { profile } => profiles::run(profile.as_deref(), cli.format),
        Command::Build { policy, out, sign_key, serial, issued_at, expires_in } => {
            build::run(&build::BuildArgs { policy, out, sign_key, serial, issued_at, expires_in }, cli.format)
        }
        Command::ExplainSyscall { target, syscall, args, arch } => explain::run(&target, &syscall, &args, arch, cli.format),
        Command::Diff { old, new, markdown } => diff::run(&old, &new, markdown, cli.format),
        Command::Keygen { prefix, force } => keys::keygen(&prefix, force, cli.format),
        Command::Verify { bundle, key, allow_unsigned } => keys::verify(&bundle, key.as_deref(), allow_unsigned, cli.format),
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => Exit::Invalid.into(),
            };
        }
    };
    run(cli).into()
}
