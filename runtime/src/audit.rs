//! The supervisor's connection to the audit log (`--audit-log PATH`): a thin wrapper over
//! `aegis_audit::AuditWriter` that batches the launch records (bundle verification,
//! enforcement report, agent started) into one durable append, and writes resource and
//! exit events as they happen. Without `--audit-log` nothing is written (the report is
//! still printed with `--verbose`). An audit log that cannot be opened or appended to stops
//! the launch: the log is part of the promise (exit 127).

use std::path::Path;

use aegis_audit::{AuditContext, AuditWriter, Durability, Event, WriterOptions};

use crate::exit::RunError;

pub struct Audit {
    writer: Option<AuditWriter>,
    ctx: AuditContext,
    pending: Vec<Event>,
}

impl Audit {
    pub fn open(path: Option<&Path>, agent: &str) -> Result<Audit, RunError> {
        let writer = match path {
            Some(p) => Some(
                AuditWriter::open(
                    p,
                    WriterOptions {
                        durability: Durability::EveryRecord,
                        ..WriterOptions::default()
                    },
                )
                .map_err(|e| RunError::internal("opening the audit log", e))?,
            ),
            None => None,
        };
        Ok(Audit {
            writer,
            ctx: AuditContext {
                agent: agent.to_string(),
                bundle_digest: String::new(),
                policy_digest: String::new(),
            },
            pending: Vec::new(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.writer.is_some()
    }

    /// Sets the agent and digests once the bundle is verified.
    pub fn set_context(&mut self, agent: &str, bundle_sha256: &str, policy_sha256: &str) {
        self.ctx = AuditContext {
            agent: agent.to_string(),
            bundle_digest: format!("sha256:{bundle_sha256}"),
            policy_digest: format!("sha256:{policy_sha256}"),
        };
    }

    /// Queues an event for the next [`Audit::flush`].
    pub fn queue(&mut self, e: Event) {
        if self.writer.is_some() {
            self.pending.push(e);
        }
    }

    /// Appends every queued event in one batch (one sync).
    pub fn flush(&mut self) -> Result<(), RunError> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        w.append_batch(&self.ctx, &events)
            .map(|_| ())
            .map_err(|e| RunError::internal("appending to the audit log", e))
    }

    /// Queues and flushes one event.
    pub fn record(&mut self, e: Event) -> Result<(), RunError> {
        self.queue(e);
        self.flush()
    }

    pub fn close(mut self) -> Result<(), RunError> {
        self.flush()?;
        if let Some(w) = self.writer.take() {
            w.close().map_err(|e| RunError::internal("closing the audit log", e))?;
        }
        Ok(())
    }
}
