//! `aegis --socket PATH <register|check-fs|check-exec|check-net|check-api|list> ... [--format json]`:
//! the client of `aegisd`. Prints `ALLOW: reason` / `DENY: reason` like `aegisc check`.
//! Exit codes as `aegisc`: 0 allowed (or done), 1 denied, 2 invalid input (arguments,
//! unknown agent, invalid policy or bundle), 3 no answer (daemon unreachable, refused us,
//! cannot audit).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use aegis_compiler::cli::Format;
use aegis_daemon::client;
use aegis_daemon::protocol::Request;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "aegis",
    version,
    about = "Ask aegisd whether a registered agent may do something",
    after_help = "Exit codes: 0 allowed/done, 1 denied, 2 invalid input, 3 no answer (daemon unreachable or refused).\nProtocol: docs/aegisd.md"
)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Output format (json: the daemon's response object).
    #[arg(long, global = true, value_enum, default_value = "human")]
    format: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Register a policy file or a bundle directory under its agent name (replaces).
    Register {
        target: PathBuf,
        /// Launch parameter value, NAME=/absolute/path (repeatable).
        #[arg(long = "param", value_name = "NAME=PATH")]
        params: Vec<String>,
    },
    /// May AGENT read|write|exec PATH?
    CheckFs { agent: String, access: String, path: String },
    /// May AGENT execute PATH?
    CheckExec { agent: String, path: String },
    /// May AGENT connect to HOST PORT (tcp, or --udp)?
    CheckNet {
        agent: String,
        host: String,
        port: String,
        #[arg(long)]
        udp: bool,
    },
    /// May AGENT use API with --scope S, or call METHOD PATH on it?
    CheckApi {
        agent: String,
        api: String,
        #[arg(long, conflicts_with = "request")]
        scope: Option<String>,
        /// METHOD PATH, e.g. POST /gmail/v1/users/me/messages/send
        #[arg(num_args = 2, value_names = ["METHOD", "PATH"], required_unless_present = "scope", allow_hyphen_values = true)]
        request: Vec<String>,
    },
    /// List the registered agents.
    List,
}

fn request(cmd: Cmd) -> Result<Request, String> {
    Ok(match cmd {
        Cmd::Register { target, params } => {
            let mut map = BTreeMap::new();
            for p in params {
                let (k, v) = p.split_once('=').ok_or_else(|| format!("--param `{p}`: expected NAME=/absolute/path"))?;
                map.insert(k.to_string(), v.to_string());
            }
            // The daemon has its own working directory: send an absolute path, resolved so
            // that locations in answers read naturally (a missing file is the daemon's to report).
            let abs = std::fs::canonicalize(&target)
                .or_else(|_| std::path::absolute(&target))
                .map_err(|e| format!("{}: {e}", target.display()))?;
            let s = abs.to_str().ok_or_else(|| format!("{}: not UTF-8", abs.display()))?.to_string();
            if abs.is_dir() {
                Request::Register { policy: None, bundle: Some(s), params: map }
            } else {
                Request::Register { policy: Some(s), bundle: None, params: map }
            }
        }
        Cmd::CheckFs { agent, access, path } => Request::CheckFs { agent, access, path },
        Cmd::CheckExec { agent, path } => Request::CheckExec { agent, path },
        Cmd::CheckNet { agent, host, port, udp } => {
            let port = port.parse::<u64>().map_err(|_| format!("`{port}` is not a port (1-65535)"))?;
            Request::CheckNet { agent, host, port, protocol: udp.then(|| "udp".to_string()) }
        }
        Cmd::CheckApi { agent, api, scope, request } => match (scope, request.as_slice()) {
            (Some(s), []) => Request::CheckApi { agent, api, scope: Some(s), method: None, path: None },
            (None, [m, p]) => Request::CheckApi { agent, api, scope: None, method: Some(m.clone()), path: Some(p.clone()) },
            _ => return Err("check-api takes --scope S, or METHOD PATH".into()),
        },
        Cmd::List => Request::List {},
    })
}

fn main() -> ExitCode {
    aegis_panic::die_on_broken_pipe();
    // A panic (dependencies included) is one line and exit 3 ("no answer"), never a backtrace.
    aegis_panic::main("aegis", 3, run)
}

fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(2),
            };
        }
    };
    let Some(socket) = cli.socket else {
        eprintln!("error: --socket PATH is required");
        return ExitCode::from(2);
    };
    let req = match request(cli.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let resp = match client::send(&socket, &req) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(3);
        }
    };
    let (out, err, code) = client::render(&resp);
    match cli.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&resp).unwrap_or_default()),
        Format::Human => {
            print!("{out}");
            eprint!("{err}");
        }
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
