//! `aegisc build POLICY -o DIR [--sign-key KEY]`: compile a policy into a deterministic,
//! optionally signed bundle directory.

use std::path::{Path, PathBuf};

use aegis_targets::bundle;

use super::{Exit, Format, compile_or_report, eprint_diagnostics, eprint_error, print_json};
use crate::emit::{self, bundle::BuildError, bundle::Issue};
use crate::ir::units::parse_duration_ms;

pub struct BuildArgs {
    pub policy: PathBuf,
    pub out: PathBuf,
    pub sign_key: Option<PathBuf>,
    pub serial: Option<u64>,
    pub issued_at: Option<u64>,
    pub expires_in: Option<String>,
}

fn issue(args: &BuildArgs) -> Result<Issue, String> {
    let issued_at = match args.issued_at {
        Some(t) => t,
        None => match bundle::source_date_epoch() {
            Ok(Some(t)) => t,
            Ok(None) => bundle::now_unix(),
            Err(e) => return Err(e.to_string()),
        },
    };
    let expires_at = match &args.expires_in {
        None => None,
        Some(d) => {
            let ms = parse_duration_ms(d).map_err(|e| format!("--expires-in {d}: {e}"))?;
            Some(issued_at.saturating_add(ms.div_ceil(1000)))
        }
    };
    // The serial defaults to the issue time: later builds get higher serials, which is
    // what rollback protection on hosts compares.
    Ok(Issue { issued_at, serial: args.serial.unwrap_or(issued_at), expires_at })
}

pub fn run(args: &BuildArgs, format: Format) -> Exit {
    let compiled = match compile_or_report(&args.policy) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    if format == Format::Human {
        eprint_diagnostics(&compiled.warnings, &compiled.sources);
    }
    let issue = match issue(args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Invalid;
        }
    };
    let key = match &args.sign_key {
        Some(p) => match bundle::load_secret_key(p) {
            Ok(k) => Some(k),
            Err(e) => {
                eprint_error(&e);
                return Exit::Invalid;
            }
        },
        None => None,
    };
    let built = match emit::bundle::build(&compiled.policy, &compiled.sources, issue, key.as_ref()) {
        Ok(b) => b,
        Err(BuildError::Emit(e)) => {
            eprintln!("error: cannot lower the policy: {e}");
            return Exit::Invalid;
        }
        Err(BuildError::Bundle(e)) => return bundle_error(&e),
    };
    let contents = &built.contents;
    if let Err(e) = contents.write_to(&args.out) {
        return bundle_error(&e);
    }
    let signed = contents.signed_by().map(|k| format!("{k}"));
    let n = artifacts_count(contents.files().keys());
    match format {
        Format::Human => {
            println!(
                "wrote {} for agent '{}': {n} artifacts, {}, {}",
                display(&args.out),
                compiled.policy.agent.name,
                signed.as_deref().map(|k| format!("signed by key {k}")).unwrap_or_else(|| "UNSIGNED (aegis-exec refuses it without --allow-unsigned)".into()),
                built.digest
            );
            if !built.losses.is_empty() {
                println!("{} loss(es): see {}/loss-report.txt", built.losses.len(), display(&args.out));
            }
        }
        Format::Json => print_json(&serde_json::json!({
            "bundle": display(&args.out),
            "agent": compiled.policy.agent.name,
            "files": contents.files().keys().collect::<Vec<_>>(),
            "signed_by": signed,
            "policy_digest": built.digest,
            "manifest_sha256": contents.manifest_sha256(),
            "losses": built.losses,
        })),
    }
    Exit::Ok
}

fn bundle_error(e: &bundle::BundleError) -> Exit {
    eprint_error(e);
    if e.exit_code() == bundle::EXIT_INVALID_INPUT { Exit::Invalid } else { Exit::Internal }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Artifacts in a bundle: every file but the manifest and its signature.
fn artifacts_count<'a>(names: impl Iterator<Item = &'a String>) -> usize {
    names.filter(|n| *n != bundle::MANIFEST_FILE && *n != bundle::SIGNATURE_FILE).count()
}
