//! `aegis-exec`: thin CLI; parsing here, everything else in the library (see its docs).

use std::path::PathBuf;

use aegis_runtime::BundleSource;
use clap::Parser;

/// Run an agent under a verified AEGIS bundle.
#[derive(Debug, Parser)]
#[command(name = "aegis-exec", version, about, after_help = "Also: `aegis-exec doctor [BUNDLE_DIR...]` reports what this host supports.\nExit codes: agent's status (128+signal); 125 refused input; 126 enforcement unavailable; 127 internal error; 123 audit log failed (run stopped); 122 audit budget used up (run stopped).")]
struct Args {
    /// Minisign public key trusted to sign bundles.
    #[arg(long, value_name = "PUB", conflicts_with = "allow_unsigned")]
    trust_key: Option<PathBuf>,
    /// Accept a bundle without a valid signature (audited).
    #[arg(long)]
    allow_unsigned: bool,
    #[command(flatten)]
    launch: aegis_runtime::flags::LaunchFlags,
    /// Bundle directory.
    bundle: PathBuf,
    /// Command to run (default: the bundle's entrypoint).
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() -> std::process::ExitCode {
    // A panic is one line; in a proxy thread it ends that connection only; in the main
    // thread it unwinds (the child, cgroup leaf and nftables table are cleaned up by their
    // guards) and exits 127, never with a backtrace.
    aegis_panic::main("aegis-exec", aegis_runtime::EXIT_INTERNAL as u8, run)
}

fn run() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("doctor") {
        std::process::exit(aegis_runtime::doctor::run(argv.get(2..).unwrap_or_default()));
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { aegis_runtime::EXIT_REFUSED } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let mut opts = match args.launch.into_options(BundleSource::Dir(args.bundle), args.command) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("aegis-exec: {e}");
            std::process::exit(e.exit_code());
        }
    };
    opts.trust_key = args.trust_key;
    opts.allow_unsigned = args.allow_unsigned;
    if let Err(e) = opts.check_audit_log() {
        eprintln!("aegis-exec: {e}");
        std::process::exit(e.exit_code());
    }
    std::process::exit(aegis_runtime::launch::run(&opts));
}
