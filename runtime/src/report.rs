//! The enforcement report: for each layer, whether it is fully, partially or not enforced,
//! with details; plus per-stage timings. Written to the audit log and printed by
//! `--verbose` (to stderr, so the agent's stdout stays its own).

use std::fmt::Write as _;
use std::time::Duration;

use crate::stage::{STAGES, Stage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    Fully,
    Partially,
    NotEnforced,
}

impl LayerStatus {
    pub fn name(self) -> &'static str {
        match self {
            LayerStatus::Fully => "fully enforced",
            LayerStatus::Partially => "partially enforced",
            LayerStatus::NotEnforced => "not enforced",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub layer: String,
    pub status: LayerStatus,
    pub detail: String,
}

impl Layer {
    pub fn new(layer: &str, status: LayerStatus, detail: impl Into<String>) -> Layer {
        Layer {
            layer: layer.to_string(),
            status,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EnforcementReport {
    /// Who the agent runs as: the report's line and the audit log's form.
    pub identity: Option<(String, aegis_audit::AgentIdentity)>,
    pub layers: Vec<Layer>,
    pub landlock_abi: Option<u32>,
    pub cgroup_mode: String,
}

impl EnforcementReport {
    pub fn push(&mut self, l: Layer) {
        self.layers.push(l);
    }

    pub fn to_text(&self) -> String {
        let mut t = String::from("aegis-exec: enforcement report\n");
        if let Some((line, _)) = &self.identity {
            let _ = writeln!(t, "  {:<13} {line}", "agent");
        }
        for l in &self.layers {
            let _ = writeln!(t, "  {:<13} {:<19} {}", l.layer, l.status.name(), l.detail);
        }
        t
    }

    pub fn to_event(&self) -> aegis_audit::Event {
        use aegis_audit::{EnforcementStatus, LayerReport};
        aegis_audit::Event::EnforcementReport {
            layers: self
                .layers
                .iter()
                .map(|l| LayerReport {
                    layer: l.layer.clone(),
                    status: match l.status {
                        LayerStatus::Fully => EnforcementStatus::Fully,
                        LayerStatus::Partially => EnforcementStatus::Partially,
                        LayerStatus::NotEnforced => EnforcementStatus::NotEnforced,
                    },
                    detail: l.detail.clone(),
                })
                .collect(),
            landlock_abi: self.landlock_abi,
            cgroup_mode: if self.cgroup_mode.is_empty() { "none".into() } else { self.cgroup_mode.clone() },
            identity: self.identity.as_ref().map(|(_, i)| i.clone()),
        }
    }
}

/// Time spent per stage: in the supervisor (before/around clone) and in the child.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub supervisor: Vec<(&'static str, Duration)>,
    pub child_ns: [u64; STAGES],
}

impl Timings {
    pub fn to_text(&self) -> String {
        let mut t = String::from("aegis-exec: stage timings (microseconds)\n");
        for (name, d) in &self.supervisor {
            let _ = writeln!(t, "  supervisor {:<22} {:>8.1}", name, d.as_secs_f64() * 1e6);
        }
        for s in Stage::ALL {
            let ns = self.child_ns.get(s as usize).copied().unwrap_or(0);
            if ns > 0 {
                let _ = writeln!(t, "  child      {:<22} {:>8.1}", s.name(), ns as f64 / 1e3);
            }
        }
        t
    }
}
