//! The launch flags that `aegis-exec BUNDLE_DIR` and `aegis run --policy FILE` share, and
//! how they become [`LaunchOptions`].
//!
//! Input: the parsed flags (a `clap::Args` struct both commands flatten into their own),
//! the bundle source and the command. Output: [`LaunchOptions`]. Invariants: one definition
//! of each flag, so both commands take the same flags with the same meaning and help; what
//! is checked here is only the flags' own syntax (`--param NAME=VALUE`, `--audit-budget`);
//! everything that needs the bundle is checked by the verify stage. Trust settings
//! (`--trust-key`, `--allow-unsigned`) belong to bundle directories and stay with
//! `aegis-exec`; where the audit log is when `--audit-log` is not given is the caller's
//! to decide (none for `aegis-exec`, `$AEGIS_DIR/audit.log` for `aegis run`), so a flag
//! that needs a log is checked by [`LaunchOptions::check_audit_log`] once it is known.

use std::path::PathBuf;

use crate::audit::{AuditOptions, DEFAULT_BUDGET, parse_budget};
use crate::exit::RunError;
use crate::stage::verify::{BundleSource, LaunchOptions};
use crate::tty;

/// Flags of a launch besides the bundle, its trust and the command.
#[derive(Debug, Clone, clap::Args)]
pub struct LaunchFlags {
    /// Launch parameter declared by the policy (absolute, existing path).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Hash-chained audit log to append to.
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Most bytes of audit records one run may write (K/M/G suffixes, or `unlimited`); the
    /// agent is stopped when it is used up (exit 122). Default 64M.
    #[arg(long, value_name = "SIZE")]
    pub audit_budget: Option<String>,
    /// Sign audit checkpoints with this unencrypted minisign secret key (`aegisc keygen`),
    /// every 1000 records or 60 s and at the end of the run; verify with
    /// `aegis-audit verify LOG --key KEY.pub`.
    #[arg(long, value_name = "KEY")]
    pub checkpoint_key: Option<PathBuf>,
    /// When the agent's stdin/stdout/stderr is a terminal (it gets a pty the supervisor
    /// relays): `safe` drops OSC (clipboard, titles), DCS/APC, window operations and C1
    /// controls from its output and marks lines that look like aegis-exec's; `off` passes all.
    #[arg(long, value_name = "safe|off", default_value = "safe", value_parser = tty::parse_filter)]
    pub terminal_filter: tty::Filter,
    /// Also append each signed checkpoint to this file (keep it apart from the log).
    #[arg(long, value_name = "FILE", requires = "checkpoint_key")]
    pub checkpoint_sink: Option<PathBuf>,
    /// Pass an environment variable to the agent: NAME (its value here) or NAME=VALUE.
    /// Only PATH, locale and terminal variables pass by default, so host secrets stay out.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Proxy mode: pin the proxy's DNS answer for NAME (like curl --resolve). Answers are
    /// still vetted: loopback, link-local and metadata addresses need a CIDR grant.
    #[arg(long = "resolve", value_name = "NAME=IP[,IP]")]
    pub resolve: Vec<String>,
    /// Proxy mode: extra trust anchors (PEM) for the proxy's upstream TLS, besides the
    /// system roots; also added to the agent's trust bundle.
    #[arg(long = "upstream-ca", value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// Run the agent as this user (root only; default: the sudo invoker, else 65534). An
    /// unprivileged launch always runs the agent as its own user.
    #[arg(long, value_name = "NAME|UID[:GID]")]
    pub user: Option<String>,
    /// Keep this supplementary group (root only; repeatable). Others are dropped.
    #[arg(long = "group", value_name = "NAME|GID")]
    pub groups: Vec<String>,
    /// Start the agent in DIR (default: this working directory when the policy lets the
    /// agent read it, else /).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Print the enforcement report and stage timings to stderr.
    #[arg(long, short)]
    pub verbose: bool,
    /// Also explain filesystem denials: the supervisor looks at each path-taking call
    /// (open, exec, create, remove, stat, ...) and records the ones the policy refuses, with
    /// what the agent gets (EACCES from Landlock, ENOENT for a path the mount plan hides).
    /// Explanations, not enforcement; costs time per call (docs/learn.md).
    #[arg(long)]
    pub explain: bool,
}

impl LaunchFlags {
    /// The options of a launch of `bundle` running `command` (empty: the bundle's
    /// entrypoint). Trust settings are left at "refuse unsigned" for the caller to set.
    pub fn into_options(self, bundle: BundleSource, command: Vec<String>) -> Result<LaunchOptions, RunError> {
        let mut params = Vec::with_capacity(self.params.len());
        for p in &self.params {
            match p.split_once('=') {
                Some((k, v)) if !k.is_empty() => params.push((k.to_string(), v.to_string())),
                _ => return Err(RunError::Refused(format!("--param {p}: expected NAME=VALUE"))),
            }
        }
        let budget = match self.audit_budget.as_deref().map(parse_budget) {
            None => Some(DEFAULT_BUDGET),
            Some(Ok(b)) => b,
            Some(Err(e)) => return Err(RunError::Refused(e)),
        };
        Ok(LaunchOptions {
            bundle,
            trust_key: None,
            allow_unsigned: false,
            params,
            env: self.env,
            audit_log: self.audit_log,
            verbose: self.verbose,
            command,
            resolve: self.resolve,
            upstream_ca: self.upstream_ca,
            user: self.user,
            groups: self.groups,
            audit: AuditOptions { budget, checkpoint_key: self.checkpoint_key, checkpoint_sink: self.checkpoint_sink },
            terminal_filter: self.terminal_filter,
            cwd: self.cwd,
            explain: self.explain,
            learn: None,
        })
    }
}

impl LaunchOptions {
    /// Refuses flags that need an audit log when there is none to write (`--checkpoint-key`
    /// signs the log's checkpoints). Called once the caller has settled `audit_log`.
    pub fn check_audit_log(&self) -> Result<(), RunError> {
        if self.audit_log.is_none() && self.audit.checkpoint_key.is_some() {
            return Err(RunError::Refused("--checkpoint-key signs the audit log's checkpoints: give --audit-log PATH too".into()));
        }
        Ok(())
    }
}
