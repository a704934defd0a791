//! `aegisd [--socket PATH] [--audit-log PATH] [--trust-key PUB | --allow-unsigned] [--group NAME|GID]`:
//! the AEGIS decision daemon (see the crate docs and `docs/aegisd.md`). Without `--socket`
//! it serves `$AEGIS_SOCKET`, else `$AEGIS_DIR/aegisd.sock`; without `--audit-log` it
//! audits to `$AEGIS_DIR/audit.log` (see [`aegis_daemon::local`]). Exit 2 when the
//! configuration is at fault (the path is taken, unknown group, bad key, no socket, an
//! unsafe `AEGIS_DIR`), 3 when the system is (cannot bind, cannot open the audit log).

use std::path::PathBuf;
use std::process::ExitCode;

use aegis_daemon::{StartError, local};
use aegis_daemon::registry::Trust;
use aegis_daemon::server::{self, Config, Server};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "aegisd",
    version,
    about = "Answer AEGIS policy questions (fs, exec, net, api) over a Unix socket, auditing every decision",
    after_help = "Environment: AEGIS_SOCKET (the socket when --socket is not given), AEGIS_DIR (default\n${XDG_STATE_HOME:-$HOME/.local/state}/aegis; holds aegisd.sock and audit.log, created mode 0700).\nProtocol, permissions and an example session: docs/aegisd.md"
)]
struct Args {
    /// Unix socket to serve (created mode 0600, or 0660 with --group; a stale socket is
    /// replaced). Default: $AEGIS_SOCKET, else $AEGIS_DIR/aegisd.sock.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Append one hash-chained record per decision to this audit log. Default:
    /// $AEGIS_DIR/audit.log.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// Answer without an audit log (benchmarks, experiments; not for production).
    #[arg(long, conflicts_with_all = ["audit_log", "audit_group_commit"])]
    no_audit_log: bool,
    /// Sync the audit log every 20 ms (group commit) instead of before every answer.
    #[arg(long)]
    audit_group_commit: bool,
    /// Minisign public key that registered bundles must be signed with.
    #[arg(long, conflicts_with = "allow_unsigned")]
    trust_key: Option<PathBuf>,
    /// Accept unsigned bundles (development only).
    #[arg(long)]
    allow_unsigned: bool,
    /// Also admit members of this group (name or gid); they may check and list, not register.
    #[arg(long, value_name = "NAME|GID")]
    group: Option<String>,
}

fn start(args: Args) -> Result<(), StartError> {
    // Before any thread exists, so that only the signal thread receives them.
    let signals = server::block_exit_signals()?;
    let trust = match (&args.trust_key, args.allow_unsigned) {
        (Some(k), _) => Trust::Key(aegis_targets::bundle::load_public_key(k).map_err(|e| StartError::TrustKey(e.to_string()))?),
        (None, true) => Trust::AllowUnsigned,
        (None, false) => Trust::NoBundles,
    };
    let group = match &args.group {
        Some(g) => Some(aegis_daemon::peer::resolve_group(g).ok_or_else(|| StartError::UnknownGroup(g.clone()))?),
        None => None,
    };
    let socket = local::socket(args.socket.as_deref()).map_err(StartError::Location)?;
    let dir = local::dir();
    let (audit_log, audit_in_dir) = match args.audit_log {
        Some(p) => (Some(p), false),
        None if args.no_audit_log => (None, false),
        None => (dir.as_ref().map(|d| d.join(local::AUDIT_FILE)), true),
    };
    // The shared directory is made (or checked) only when something of ours goes in it.
    if let Some(d) = &dir
        && (audit_in_dir || matches!(socket, local::SocketPath::InDir { .. }))
    {
        local::ensure_dir(d, group).map_err(StartError::Location)?;
    }
    if audit_log.is_none() && args.audit_group_commit {
        return Err(StartError::Location("--audit-group-commit needs an audit log: give --audit-log PATH or set AEGIS_DIR".into()));
    }
    if audit_log.is_none() {
        eprintln!(
            "aegisd: warning: not auditing decisions ({})",
            if args.no_audit_log { "--no-audit-log" } else { "no --audit-log, and no AEGIS_DIR, XDG_STATE_HOME or HOME for the default" }
        );
    }
    let server = Server::bind(Config {
        socket: socket.path().to_path_buf(),
        audit_log: audit_log.clone(),
        group_commit: args.audit_group_commit,
        trust,
        group,
    })?;
    server.exit_on_signals(signals)?;
    eprintln!(
        "aegisd: serving {} (mode {}{}){}",
        server.socket().display(),
        if group.is_some() { "0660" } else { "0600" },
        group.map(|g| format!(", group {g}")).unwrap_or_default(),
        audit_log.map(|l| format!(", auditing to {}", l.display())).unwrap_or_default()
    );
    server.serve();
    Ok(())
}

fn main() -> ExitCode {
    // A panic is one line; in a connection's thread it ends that connection only; in the
    // main thread it is exit 3 (the system's fault), never a backtrace.
    aegis_panic::main("aegisd", 3, run)
}

fn run() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(2),
            };
        }
    };
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aegisd: error: {e}");
            ExitCode::from(match e {
                StartError::NotASocket { .. }
                | StartError::InUse { .. }
                | StartError::UnknownGroup(_)
                | StartError::TrustKey(_)
                | StartError::Location(_) => 2,
                _ => 3,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Args::command().debug_assert();
    }
}
