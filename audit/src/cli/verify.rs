//! `aegis-audit verify LOG [--key PUB] [--checkpoint FILE]...`: runs the library verifier and
//! prints the first broken record precisely (seq, line, byte offset, what is wrong), and the
//! runs that started and never ended (exit 4 when the chain is intact but one did not end).

use std::path::PathBuf;

use aegis_audit::{Report, VerifyOptions, VerifyingKey, load_checkpoints, to_hex, verify_log};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The log file.
    log: PathBuf,
    /// Minisign public key that signs checkpoints; requires at least one signed checkpoint.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Checkpoint sink file(s) kept elsewhere; detects truncation and replacement of the log.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<u8, CliError> {
    let key = a.key.as_deref().map(VerifyingKey::from_file).transpose()?;
    let mut checkpoints = Vec::new();
    for c in &a.checkpoints {
        checkpoints.extend(load_checkpoints(c)?);
    }
    let key_id = key.as_ref().map(|k| k.key_id().to_string());
    let report = verify_log(&a.log, &VerifyOptions { key, checkpoints })?;
    if a.json {
        println!("{}", to_json(&report, key_id.as_deref()));
    } else {
        print_text(&a.log, &report, key_id.as_deref());
    }
    Ok(if !report.is_ok() {
        1
    } else if !report.open_runs.is_empty() {
        EXIT_OPEN_RUNS
    } else {
        0
    })
}

/// The chain verified, but a run in the log started and never ended (see [`aegis_audit::OpenRun`]).
pub const EXIT_OPEN_RUNS: u8 = 4;

fn print_text(log: &std::path::Path, r: &Report, key_id: Option<&str>) {
    match &r.failure {
        None if !r.open_runs.is_empty() => println!(
            "INCOMPLETE {}: {} records, {} bytes verified, but {} run(s) never ended\n  head {}\n  root {}",
            log.display(),
            r.records,
            r.bytes,
            r.open_runs.len(),
            to_hex(&r.head),
            to_hex(&r.root)
        ),
        None => println!(
            "OK {}: {} records, {} bytes verified\n  head {}\n  root {}",
            log.display(),
            r.records,
            r.bytes,
            to_hex(&r.head),
            to_hex(&r.root)
        ),
        Some(f) => {
            println!("FAILED {}: {f}", log.display());
            println!(
                "  the {} records ({} bytes) before it verified",
                r.records, r.bytes
            );
        }
    }
    println!(
        "  checkpoints: {} in log ({} signature-checked{}), {} external matched",
        r.checkpoints,
        r.signed_checkpoints,
        key_id.map(|k| format!(" with key {k}")).unwrap_or_default(),
        r.external_checkpoints
    );
    for rep in &r.repairs {
        println!(
            "  repair: record seq {} cut {} torn bytes at offset {}",
            rep.seq, rep.bytes, rep.offset
        );
    }
    for o in &r.open_runs {
        println!("  open: {o}");
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
}

fn to_json(r: &Report, key_id: Option<&str>) -> String {
    let failure = r.failure.as_ref().map(|f| {
        serde_json::json!({"seq": f.seq, "line": f.line, "offset": f.offset, "problem": f.problem.to_string()})
    });
    let repairs: Vec<_> = r
        .repairs
        .iter()
        .map(|x| serde_json::json!({"seq": x.seq, "offset": x.offset, "bytes": x.bytes}))
        .collect();
    let open: Vec<_> = r
        .open_runs
        .iter()
        .map(|o| serde_json::json!({"seq": o.seq, "ts": o.ts, "host": o.host, "agent": o.agent, "pid": o.pid}))
        .collect();
    serde_json::json!({
        "ok": r.is_ok(),
        "complete": r.is_complete(),
        "open_runs": open,
        "records": r.records,
        "bytes": r.bytes,
        "head": to_hex(&r.head),
        "root": to_hex(&r.root),
        "checkpoints": r.checkpoints,
        "signed_checkpoints": r.signed_checkpoints,
        "key_id": key_id,
        "external_checkpoints": r.external_checkpoints,
        "repairs": repairs,
        "warnings": r.warnings,
        "failure": failure,
    })
    .to_string()
}
