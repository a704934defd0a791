//! `aegis-exec`: thin CLI; parsing here, everything else in the library (see its docs).

use std::path::PathBuf;

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
    /// Launch parameter declared by the bundle (absolute, existing path).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Hash-chained audit log to append to.
    #[arg(long, value_name = "PATH")]
    audit_log: Option<PathBuf>,
    /// Most bytes of audit records one run may write (K/M/G suffixes, or `unlimited`); the
    /// agent is stopped when it is used up (exit 122). Default 64M.
    #[arg(long, value_name = "SIZE")]
    audit_budget: Option<String>,
    /// Sign audit checkpoints with this unencrypted minisign secret key (`aegisc keygen`),
    /// every 1000 records or 60 s and at the end of the run; verify with
    /// `aegis-audit verify LOG --key KEY.pub`.
    #[arg(long, value_name = "KEY", requires = "audit_log")]
    checkpoint_key: Option<PathBuf>,
    /// When the agent's stdin/stdout/stderr is a terminal (it gets a pty the supervisor
    /// relays): `safe` drops OSC (clipboard, titles), DCS/APC, window operations and C1
    /// controls from its output and marks lines that look like aegis-exec's; `off` passes all.
    #[arg(long, value_name = "safe|off", default_value = "safe", value_parser = aegis_runtime::tty::parse_filter)]
    terminal_filter: aegis_runtime::tty::Filter,
    /// Also append each signed checkpoint to this file (keep it apart from the log).
    #[arg(long, value_name = "FILE", requires = "checkpoint_key")]
    checkpoint_sink: Option<PathBuf>,
    /// Pass an environment variable to the agent: NAME (its value here) or NAME=VALUE.
    /// Only PATH, locale and terminal variables pass by default, so host secrets stay out.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Proxy mode: pin the proxy's DNS answer for NAME (like curl --resolve). Answers are
    /// still vetted: loopback, link-local and metadata addresses need a CIDR grant.
    #[arg(long = "resolve", value_name = "NAME=IP[,IP]")]
    resolve: Vec<String>,
    /// Proxy mode: extra trust anchors (PEM) for the proxy's upstream TLS, besides the
    /// system roots; also added to the agent's trust bundle.
    #[arg(long = "upstream-ca", value_name = "PEM")]
    upstream_ca: Vec<PathBuf>,
    /// Run the agent as this user (root only; default: the sudo invoker, else 65534). An
    /// unprivileged launch always runs the agent as its own user.
    #[arg(long, value_name = "NAME|UID[:GID]")]
    user: Option<String>,
    /// Keep this supplementary group (root only; repeatable). Others are dropped.
    #[arg(long = "group", value_name = "NAME|GID")]
    groups: Vec<String>,
    /// Start the agent in DIR (default: this working directory when the policy lets the
    /// agent read it, else /).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Print the enforcement report and stage timings to stderr.
    #[arg(long, short)]
    verbose: bool,
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
    let mut params = Vec::new();
    for p in &args.params {
        match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => params.push((k.to_string(), v.to_string())),
            _ => {
                eprintln!("aegis-exec: refused: --param {p}: expected NAME=VALUE");
                std::process::exit(aegis_runtime::EXIT_REFUSED);
            }
        }
    }
    let budget = match args.audit_budget.as_deref().map(aegis_runtime::audit::parse_budget) {
        None => Some(aegis_runtime::audit::DEFAULT_BUDGET),
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            eprintln!("aegis-exec: refused: {e}");
            std::process::exit(aegis_runtime::EXIT_REFUSED);
        }
    };
    let opts = aegis_runtime::LaunchOptions {
        bundle: args.bundle,
        trust_key: args.trust_key,
        allow_unsigned: args.allow_unsigned,
        params,
        env: args.env,
        audit_log: args.audit_log,
        verbose: args.verbose,
        command: args.command,
        resolve: args.resolve,
        upstream_ca: args.upstream_ca,
        user: args.user,
        groups: args.groups,
        audit: aegis_runtime::audit::AuditOptions {
            budget,
            checkpoint_key: args.checkpoint_key,
            checkpoint_sink: args.checkpoint_sink,
        },
        terminal_filter: args.terminal_filter,
        cwd: args.cwd,
    };
    std::process::exit(aegis_runtime::launch::run(&opts));
}
