//! `aegis register|check-fs|check-exec|check-net|check-api|list`: the client of `aegisd`.
//!
//! Input: the subcommand's arguments and the socket (`--socket`, else `AEGIS_SOCKET`, else
//! `$AEGIS_DIR/aegisd.sock`). Output: the daemon's answer printed as `aegisc check` prints
//! its own (`ALLOW: reason (file:line:col)` / `DENY: ...`), or its JSON response object with
//! `--format json`. Exit codes as `aegisc`: 0 allowed (or done), 1 denied, 2 invalid input
//! (arguments, unknown agent, invalid policy or bundle), 3 no answer (daemon unreachable,
//! refused us, cannot audit). Sending and rendering live in `aegis_daemon::client`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aegis_compiler::cli::Format;
use aegis_daemon::client;
use aegis_daemon::local;
use aegis_daemon::protocol::Request;
use clap::Subcommand;

/// The questions and registrations `aegisd` answers.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Register a policy file or a bundle directory with aegisd under its agent name (replaces).
    Register {
        target: PathBuf,
        /// Launch parameter value, NAME=/absolute/path (repeatable).
        #[arg(long = "param", value_name = "NAME=PATH")]
        params: Vec<String>,
    },
    /// Ask aegisd: may AGENT read|write|exec PATH?
    CheckFs { agent: String, access: String, path: String },
    /// Ask aegisd: may AGENT execute PATH?
    CheckExec { agent: String, path: String },
    /// Ask aegisd: may AGENT connect to HOST PORT (tcp, or --udp)?
    CheckNet {
        agent: String,
        host: String,
        port: String,
        #[arg(long)]
        udp: bool,
    },
    /// Ask aegisd: may AGENT use API with --scope S, or call METHOD PATH on it?
    CheckApi {
        agent: String,
        api: String,
        #[arg(long, conflicts_with = "request")]
        scope: Option<String>,
        /// METHOD PATH, e.g. POST /gmail/v1/users/me/messages/send
        #[arg(num_args = 2, value_names = ["METHOD", "PATH"], required_unless_present = "scope", allow_hyphen_values = true)]
        request: Vec<String>,
    },
    /// List the agents registered with aegisd.
    List,
}

fn request(cmd: Command) -> Result<Request, String> {
    Ok(match cmd {
        Command::Register { target, params } => {
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
        Command::CheckFs { agent, access, path } => Request::CheckFs { agent, access, path },
        Command::CheckExec { agent, path } => Request::CheckExec { agent, path },
        Command::CheckNet { agent, host, port, udp } => {
            let port = port.parse::<u64>().map_err(|_| format!("`{port}` is not a port (1-65535)"))?;
            Request::CheckNet { agent, host, port, protocol: udp.then(|| "udp".to_string()) }
        }
        Command::CheckApi { agent, api, scope, request } => match (scope, request.as_slice()) {
            (Some(s), []) => Request::CheckApi { agent, api, scope: Some(s), method: None, path: None },
            (None, [m, p]) => Request::CheckApi { agent, api, scope: None, method: Some(m.clone()), path: Some(p.clone()) },
            _ => return Err("check-api takes --scope S, or METHOD PATH".into()),
        },
        Command::List => Request::List {},
    })
}

/// Sends the command to the daemon and prints its answer; returns the exit code.
pub fn run(cmd: Command, socket: Option<&Path>, format: Format) -> u8 {
    let socket = match local::socket(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return aegis_daemon::error::EXIT_INVALID;
        }
    };
    let req = match request(cmd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return aegis_daemon::error::EXIT_INVALID;
        }
    };
    let resp = match client::send(socket.path(), &req) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return aegis_daemon::error::EXIT_INTERNAL;
        }
    };
    let (out, err, code) = client::render(&resp);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&resp).unwrap_or_default()),
        Format::Human => {
            print!("{out}");
            eprint!("{err}");
        }
    }
    code
}
