//! `aegis-audit checkpoint` (sign a checkpoint now) and the hidden `append` test helper that the
//! concurrency and crash tests run as separate processes.

use std::path::PathBuf;
use std::time::Duration;

use aegis_audit::{
    AuditContext, AuditWriter, CheckpointOptions, Durability, Event, SigningKey, Verdict,
    WriterOptions,
};

use super::CliError;

#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// The log file.
    log: PathBuf,
    /// Unencrypted minisign secret key.
    #[arg(long)]
    secret_key: PathBuf,
    /// Also append the checkpoint to this file.
    #[arg(long)]
    sink: Option<PathBuf>,
    /// Also send it to syslog.
    #[arg(long)]
    syslog: bool,
}

#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The log file.
    log: PathBuf,
    /// Agent name written in each record.
    #[arg(long, default_value = "test-agent")]
    agent: String,
    /// Number of records (0: forever).
    #[arg(long, default_value_t = 1)]
    count: u64,
    /// Records per append batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// every | group | none
    #[arg(long, default_value = "none", value_parser = ["every", "group", "none"])]
    durability: String,
    /// Sign checkpoints with this key.
    #[arg(long)]
    secret_key: Option<PathBuf>,
    /// Checkpoint every N records.
    #[arg(long, default_value_t = 1000)]
    every_records: u64,
    /// Checkpoint sink file.
    #[arg(long)]
    sink: Option<PathBuf>,
    /// Write a final checkpoint and sync at the end.
    #[arg(long)]
    close: bool,
}

pub fn run_checkpoint(a: CheckpointArgs) -> Result<u8, CliError> {
    let key = SigningKey::from_file(&a.secret_key)?;
    let key_id = key.key_id();
    let mut ck = CheckpointOptions::new(key);
    ck.sink = a.sink;
    ck.syslog = a.syslog;
    ck.every_records = 0;
    ck.every = Duration::MAX;
    let mut w = AuditWriter::open(
        &a.log,
        WriterOptions {
            checkpoint: Some(ck),
            ..WriterOptions::default()
        },
    )?;
    match w.checkpoint_now()? {
        Some(info) => println!(
            "checkpoint signed by key {key_id} written as record seq {} at byte offset {}",
            info.seq, info.offset
        ),
        None => println!("no records since the last checkpoint; nothing written"),
    }
    w.flush()?;
    Ok(0)
}

pub fn run_append(a: AppendArgs) -> Result<u8, CliError> {
    let durability = match a.durability.as_str() {
        "every" => Durability::EveryRecord,
        "group" => Durability::Group {
            max_records: 1000,
            max_delay: Duration::from_millis(50),
        },
        _ => Durability::OsDefault,
    };
    let checkpoint = match &a.secret_key {
        Some(k) => {
            let mut ck = CheckpointOptions::new(SigningKey::from_file(k)?);
            ck.every_records = a.every_records;
            ck.every = Duration::MAX;
            ck.sink = a.sink.clone();
            Some(ck)
        }
        None => None,
    };
    let mut w = AuditWriter::open(
        &a.log,
        WriterOptions {
            durability,
            checkpoint,
            ..WriterOptions::default()
        },
    )?;
    let ctx = AuditContext {
        agent: a.agent.clone(),
        bundle_digest: "sha256:test".into(),
        policy_digest: "sha256:test".into(),
    };
    let mut i = 0u64;
    while a.count == 0 || i < a.count {
        let n = (a.batch.max(1) as u64).min(if a.count == 0 { u64::MAX } else { a.count - i });
        let events: Vec<Event> = (i..i + n)
            .map(|k| Event::Decision {
                component: "test".into(),
                subject: "net".into(),
                target: format!("{}:{k}", a.agent),
                decision: if k % 2 == 0 {
                    Verdict::Allow
                } else {
                    Verdict::Deny
                },
                rule: Some(format!("rule-{k}")),
                reason: "synthetic".into(),
            })
            .collect();
        w.append_batch(&ctx, &events)?;
        i += n;
    }
    if a.close {
        w.close()?
    } else {
        w.flush()?
    }
    Ok(0)
}
