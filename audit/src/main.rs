//! `aegis-audit`: verify, show and follow an AEGIS audit log. `main` only parses arguments and
//! dispatches to one module per command; exit codes: 0 ok, 1 verification failed (tampered,
//! truncated, torn), 2 invalid input (unreadable file, bad key, bad arguments), 3 internal error,
//! 4 (`verify`) the log verifies but a run in it started and never ended.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    aegis_panic::die_on_broken_pipe();
    // A panic (dependencies included) is one line and exit 3, never a backtrace.
    aegis_panic::main("aegis-audit", 3, run)
}

fn run() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("aegis-audit: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
