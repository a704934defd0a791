//! `aegis run [--policy FILE] [LAUNCH FLAGS] -- CMD...`: compile a local policy in memory
//! and run a command under it with every layer, through the runtime library.
//!
//! Input: the policy file (`--policy`, else `./aegis.toml`), the launch flags `aegis-exec`
//! takes (`aegis_runtime::flags::LaunchFlags`: `--param`, `--env`, `--audit-log`, ...) and
//! the command. Output: the agent's exit status, or `aegis-exec`'s codes (125 refused input,
//! an invalid policy included; 126 a required layer is unavailable; 127 internal error).
//! Invariants: the bundle is built by the same library code as `aegisc build`
//! (`emit::bundle::build`) and launched by the same code as `aegis-exec`
//! (`aegis_runtime::launch::run`), so there is no second implementation of either; the
//! policy is never signed and the launch says so: the enforcement report and the audit log
//! name it "local policy FILE (sha256 HEX), unsigned", where HEX is the SHA-256 of the text
//! that was compiled; `./aegis.toml` is used implicitly only when it is a regular file owned
//! by the caller (or root) that nobody else can write, so a policy planted in a shared
//! directory is never picked up; without `--audit-log` the launch is recorded in
//! `$AEGIS_DIR/audit.log` (see `aegis_daemon::local`); the agent can neither rewrite the
//! policy's files nor reach the audit state, whatever the policy grants ([`shield`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aegis_compiler::cli::{compile_or_report, eprint_diagnostics};
use aegis_compiler::emit::bundle::{self, BuildError, Issue};
use aegis_daemon::local;
use aegis_runtime::flags::LaunchFlags;
use aegis_runtime::{BundleSource, EXIT_INTERNAL, EXIT_REFUSED, LaunchOptions, LocalPolicy};
use sha2::{Digest, Sha256};

use crate::shield;

/// The policy `aegis run` uses when `--policy` is not given, in the current directory.
pub const DEFAULT_POLICY: &str = "aegis.toml";

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The policy file [default: ./aegis.toml, if you own it].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[command(flatten)]
    pub launch: LaunchFlags,
    /// The command to run, after `--` (default: the policy's `[agent] command`).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs the launch; returns the process exit code.
pub fn run(args: RunArgs) -> i32 {
    let path = match args.policy {
        Some(p) => p,
        None => match default_policy(Path::new(DEFAULT_POLICY)) {
            Ok(p) => p,
            Err(e) => return refuse(&e),
        },
    };
    match local_launch(&path, args.launch, args.command) {
        Ok(opts) => aegis_runtime::launch::run(&opts),
        Err(code) => code,
    }
}

/// The options of a launch of the local policy at `path` (compiled in memory, its
/// warnings reported, its audit log settled): what `aegis run` and `aegis learn` launch.
/// `Err` is the exit code, after the reason was printed.
pub fn local_launch(path: &Path, flags: LaunchFlags, command: Vec<String>) -> Result<LaunchOptions, i32> {
    let compiled = compile_or_report(path).map_err(|_| EXIT_REFUSED)?;
    if !compiled.warnings.is_empty() {
        if flags.verbose {
            eprint_diagnostics(&compiled.warnings, &compiled.sources);
        } else {
            eprintln!(
                "aegis run: {} warning(s) in {}; `aegis validate {}` shows them",
                compiled.warnings.len(),
                path.display(),
                path.display()
            );
        }
    }
    // What was compiled is what is hashed: the root file's text as the compiler read it.
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let Some(root) = compiled.sources.find_path(&canonical) else {
        eprintln!("aegis run: internal error: {} is not among the compiled sources", canonical.display());
        return Err(EXIT_INTERNAL);
    };
    let sha256 = hex::encode(Sha256::digest(compiled.sources.text(root).as_bytes()));
    let mut launch = flags;
    // Without --audit-log, the launch is recorded in $AEGIS_DIR/audit.log.
    let mut state_dir = None;
    if launch.audit_log.is_none() {
        if let Some(dir) = local::dir() {
            if let Err(e) = local::ensure_dir(&dir, None) {
                return Err(refuse(&format!("{e} (or give --audit-log PATH)")));
            }
            launch.audit_log = Some(dir.join(local::AUDIT_FILE));
            state_dir = Some(shield::real(&dir));
        } else {
            eprintln!("aegis run: warning: not auditing this launch (no --audit-log, and no AEGIS_DIR, XDG_STATE_HOME or HOME for the default)");
        }
    }
    // The agent may not rewrite its policy nor touch its own record.
    let audit_files: Vec<PathBuf> = [&launch.audit_log, &launch.checkpoint_key, &launch.checkpoint_sink].into_iter().flatten().map(|p| shield::real(p)).collect();
    let guarded = shield::Guarded {
        sources: compiled.sources.files().map(|(_, f)| f.path.clone()).filter(|p| p.is_absolute()).collect(),
        audit: state_dir.iter().chain(&audit_files).map(PathBuf::as_path).collect(),
    };
    let mut policy = compiled.policy.into_inner();
    let shielded = shield::params(&policy, &launch.params).and_then(|params| shield::apply(&mut policy, &params, &guarded));
    match shielded {
        Ok(lines) if launch.verbose => lines.iter().for_each(|l| eprintln!("aegis run: {l}")),
        Ok(_) => {}
        Err(e) => return Err(refuse(&e)),
    }
    // The shield added rules: the policy is checked again before a target sees it.
    let policy = match aegis_policy::ir::Checked::check(policy) {
        Ok(p) => p,
        Err(v) => {
            eprintln!("aegis run: internal error: the shielded policy breaks an IR invariant: {v}");
            return Err(EXIT_INTERNAL);
        }
    };
    // A local policy is built for this launch only: issued now, never expiring, no serial
    // history (rollback protection is about signed bundles).
    let now = aegis_targets::bundle::now_unix();
    let issue = Issue { issued_at: now, serial: now, expires_at: None };
    let built = match bundle::build(&policy, &compiled.sources, issue, None) {
        Ok(b) => b,
        Err(BuildError::Emit(e)) => return Err(refuse(&format!("cannot lower the policy: {e}"))),
        Err(BuildError::Bundle(e)) => {
            eprintln!("aegis run: internal error: building the bundle in memory: {e}");
            return Err(EXIT_INTERNAL);
        }
    };
    let source = BundleSource::Local(LocalPolicy { path: canonical, sha256, files: built.contents.files().clone() });
    let opts = match launch.into_options(source, command) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("aegis run: {e}");
            return Err(e.exit_code());
        }
    };
    if let Err(e) = opts.check_audit_log() {
        eprintln!("aegis run: {e}");
        return Err(e.exit_code());
    }
    Ok(opts)
}

pub fn refuse(why: &str) -> i32 {
    eprintln!("aegis run: refused: {why}");
    EXIT_REFUSED
}

/// `./aegis.toml` when it is safe to use without being named: a regular file (not a
/// symlink) owned by the caller or root and writable by nobody else.
fn default_policy(path: &Path) -> Result<PathBuf, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no --policy given and there is no ./{DEFAULT_POLICY}: write one (start from an example: `cp policies/coding-agent.toml {DEFAULT_POLICY}`) or give --policy FILE"
            ));
        }
        Err(e) => return Err(format!("cannot inspect ./{DEFAULT_POLICY}: {e}")),
    };
    if !meta.file_type().is_file() {
        return Err(format!("./{DEFAULT_POLICY} is not a regular file (a symlink or a directory): name the policy with --policy FILE"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(format!(
            "./{DEFAULT_POLICY} belongs to uid {}, not to you (uid {me}): it is not used unless named; give --policy {DEFAULT_POLICY} if you trust it",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "./{DEFAULT_POLICY} is writable by others (mode {:o}): it is not used unless named; run `chmod go-w {DEFAULT_POLICY}` or give --policy {DEFAULT_POLICY}",
            meta.mode() & 0o7777
        ));
    }
    Ok(path.to_path_buf())
}
