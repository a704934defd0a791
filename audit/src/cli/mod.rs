//! Command-line surface of `aegis-audit`: argument types and dispatch. Input: parsed arguments;
//! output: an exit code. Each command lives in its own file.

mod append;
mod prove;
mod show;
mod verify;

use aegis_audit::AuditError;
use clap::{Parser, Subcommand, ValueEnum};

/// Verify, show and follow AEGIS tamper-evident audit logs.
#[derive(Debug, Parser)]
#[command(name = "aegis-audit", version)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Verify the hash chain, checkpoints and (with --key) their signatures.
    /// Exit 0: verified; 1: tampered, truncated or torn; 2: invalid input; 3: internal error;
    /// 4: verified, but a run started and never ended (supervisor killed, log cut, still running).
    Verify(verify::Args),
    /// Print records (not verified: run `verify` for that), filtered, as a table or JSON lines.
    Show(show::ShowArgs),
    /// Print the last records and, with -f, follow the log as it grows.
    Tail(show::TailArgs),
    /// Write a signed checkpoint now.
    Checkpoint(append::CheckpointArgs),
    /// Print a Merkle inclusion or consistency proof (RFC 6962) as JSON.
    Prove(prove::Args),
    /// Test helper: append synthetic records.
    #[command(hide = true)]
    Append(append::AppendArgs),
}

/// Output format of `show` and `tail`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Fixed columns.
    Table,
    /// The stored record lines, byte for byte.
    Json,
}

/// A command failure (not a verification result).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input: unreadable file, bad key, bad argument value.
    #[error("{0}")]
    Input(String),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input(_) => 2,
            CliError::Internal(_) => 3,
        }
    }
}

impl From<AuditError> for CliError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Io { .. }
            | AuditError::Key { .. }
            | AuditError::CheckpointFile { .. }
            | AuditError::CorruptTail { .. } => CliError::Input(e.to_string()),
            _ => CliError::Internal(e.to_string()),
        }
    }
}

pub fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.cmd {
        Cmd::Verify(a) => verify::run(a),
        Cmd::Show(a) => show::run_show(a),
        Cmd::Tail(a) => show::run_tail(a),
        Cmd::Checkpoint(a) => append::run_checkpoint(a),
        Cmd::Prove(a) => prove::run(a),
        Cmd::Append(a) => append::run_append(a),
    }
}
