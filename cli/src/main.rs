//! `aegis`: one command for the local loop.
//!
//! - `aegis validate|inspect|check|schema|build|explain-syscall|diff|keygen|verify`: the
//!   commands of `aegisc`, parsed by its own definitions and run by its own library code
//!   (`aegis_compiler::cli`), so output, diagnostics and exit codes are the same (0 ok or
//!   allowed, 1 denied or widened, 2 invalid input, 3 internal error).
//! - `aegis run`: compile a local policy in memory and run a command under it ([`run`]);
//!   exit codes as `aegis-exec` (the agent's status; 125, 126, 127).
//! - `aegis register|check-fs|check-exec|check-net|check-api|list`: the client of `aegisd`
//!   ([`client`]); exit codes 0 allowed, 1 denied, 2 invalid input, 3 no answer.
//!
//! This file only parses and dispatches; one module per command group. A new command
//! group (`aegis learn`, `aegis why`) is a new module and one more variant of [`Command`].

mod client;
mod learn;
mod learn_propose;
mod run;
mod shield;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;

use aegis_compiler::cli::{Exit, Format};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "aegis",
    version,
    about = "AEGIS for the local loop: check and explain policies, run agents under them, ask aegisd",
    after_help = "Exit codes: policy commands and aegisd commands: 0 valid/allowed, 1 denied (diff: widened), 2 invalid input, 3 internal error or no answer.\n\
                  `aegis run`: as aegis-exec (see `aegis run --help`): the agent's status, or 125 refused input (an invalid policy too), 126 a required layer is unavailable, 127 internal error.\n\
                  Environment: AEGIS_SOCKET, AEGIS_DIR (default ${XDG_STATE_HOME:-$HOME/.local/state}/aegis: aegisd.sock, audit.log)."
)]
struct Cli {
    /// Output format (policy and aegisd commands; json for aegisd commands is the daemon's response object).
    #[arg(long, global = true, value_enum, default_value = "human")]
    format: Format,
    /// aegisd's socket, for the aegisd commands. Default: $AEGIS_SOCKET, else $AEGIS_DIR/aegisd.sock.
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile a policy in memory and run CMD under it with every layer (an unsigned local
    /// policy, reported and audited as such).
    #[command(after_help = "Without --policy: ./aegis.toml, if you own it and nobody else can write it.\n\
                            Without --audit-log: the launch is recorded in $AEGIS_DIR/audit.log (default ~/.local/state/aegis).\n\
                            Exit codes: the agent's status (128+signal); 125 refused input (an invalid policy too); 126 a required layer is unavailable; 127 internal error; 123 the audit log failed; 122 the audit budget was used up.")]
    Run(run::RunArgs),
    /// Run a workload once with every layer observing, and propose a policy that runs it
    /// with no denial (never granting credential stores or host sockets unless asked).
    Learn(Box<learn::LearnArgs>),
    /// Explain the denials of a run in an audit log: which rule decided, where it is written,
    /// and the smallest policy change that would allow each (checked, with the lints it adds).
    Why(why::WhyArgs),
    #[command(flatten)]
    Policy(aegis_compiler::cli::Command),
    #[command(flatten)]
    Daemon(client::Command),
}

/// The subcommand named on the command line (the first word that is neither a flag nor a
/// global flag's value), so a usage error gets the exit code of the command it was for.
fn subcommand_word(args: &[String]) -> Option<&str> {
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--" => return None,
            "--format" | "--socket" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return Some(w),
        }
    }
    None
}

fn usage_error(why: &str, run: bool) -> ExitCode {
    eprintln!("error: {why}");
    if run { ExitCode::from(aegis_runtime::EXIT_REFUSED as u8) } else { Exit::Invalid.into() }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // `aegis learn` runs a workload too: the same supervisor rules.
    let is_run = matches!(subcommand_word(&argv), Some("run" | "learn"));
    // A panic (dependencies included) is one line and the command's internal-error code,
    // never a backtrace. The policy and aegisd commands are filters (`aegis inspect | head`):
    // a closed pipe ends them quietly; `aegis run` is a supervisor, which must outlive a
    // closed stderr to clean up and audit.
    if is_run {
        aegis_panic::main("aegis run", aegis_runtime::EXIT_INTERNAL as u8, || dispatch(&argv, true))
    } else {
        aegis_panic::die_on_broken_pipe();
        aegis_panic::main("aegis", Exit::Internal as u8, || dispatch(&argv, false))
    }
}

fn dispatch(argv: &[String], is_run: bool) -> ExitCode {
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(argv).and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match matches {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ if is_run => ExitCode::from(aegis_runtime::EXIT_REFUSED as u8),
                _ => Exit::Invalid.into(),
            };
        }
    };
    // Global flags are accepted anywhere by clap; say so when one means nothing for the
    // command instead of ignoring it.
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    match cli.command {
        Command::Run(args) => {
            if given("socket") {
                return usage_error("--socket is for the aegisd commands (register, check-*, list), not `aegis run`", true);
            }
            if given("format") {
                return usage_error("`aegis run` has no --format: its report goes to stderr with --verbose and to the audit log", true);
            }
            ExitCode::from(u8::try_from(run::run(args)).unwrap_or(aegis_runtime::EXIT_INTERNAL as u8))
        }
        Command::Learn(args) => {
            if given("socket") {
                return usage_error("--socket is for the aegisd commands (register, check-*, list), not `aegis learn`", true);
            }
            if given("format") {
                return usage_error("`aegis learn` has no --format: it writes a policy", true);
            }
            ExitCode::from(u8::try_from(learn::run(*args)).unwrap_or(aegis_runtime::EXIT_INTERNAL as u8))
        }
        Command::Why(args) => {
            if given("socket") {
                return usage_error("--socket is for the aegisd commands (register, check-*, list), not `aegis why`", false);
            }
            why::run(args, cli.format).into()
        }
        Command::Policy(command) => {
            if given("socket") {
                return usage_error("--socket is for the aegisd commands (register, check-*, list)", false);
            }
            aegis_compiler::cli::run(aegis_compiler::cli::Cli { format: cli.format, command }).into()
        }
        Command::Daemon(command) => ExitCode::from(client::run(command, cli.socket.as_deref(), cli.format)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn finds_the_subcommand_past_global_flags() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(subcommand_word(&v("aegis --socket run check-fs a read /x")), Some("check-fs"));
        assert_eq!(subcommand_word(&v("aegis --format json run --bogus")), Some("run"));
        assert_eq!(subcommand_word(&v("aegis --socket=s run")), Some("run"));
        assert_eq!(subcommand_word(&v("aegis -- run")), None);
    }
}
