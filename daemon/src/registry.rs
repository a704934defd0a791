//! Registered agents and how a question about one is answered.
//!
//! Input: a policy file (compiled exactly as `aegisc` compiles it) or a bundle directory
//! (verified with the daemon's [`Trust`]; its `policy.ir.json` is taken from the verified
//! files and must match the manifest's policy digest), plus launch parameter values.
//! Output: a [`Registered`] agent, and for a query an [`Answer`]: the evaluator's decision and
//! where the deciding rule is written. Invariants: answers come only from
//! [`aegis_policy::eval::evaluate`]; an agent is registered only if every parameter value
//! is valid and declared by its policy (so no later query fails on it); a bundle is used only
//! through [`aegis_targets::bundle::VerifiedBundle`], never by reading its files again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use aegis_policy::eval::{self, Decision, Params, Query};
use aegis_policy::ir::{Checked, Policy};
use aegis_policy::source::{Origin, SourceMap};
use aegis_targets::bundle::{self, PublicKey, TrustPolicy};

use crate::error::RequestError;

/// Which bundles the daemon accepts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Bundles signed by this key.
    Key(PublicKey),
    /// Any bundle, signed or not (development only; digests are still checked).
    AllowUnsigned,
    /// No bundles at all (no key was given).
    NoBundles,
}

/// Where a registered policy came from.
#[derive(Clone, Debug)]
pub enum Provenance {
    Policy { path: PathBuf },
    Bundle { dir: PathBuf, manifest_sha256: String, signed_by: Option<String> },
}

/// One registered agent.
#[derive(Debug)]
pub struct Registered {
    pub policy: Checked,
    /// Source texts, to turn a rule's origin into `file:line:column` (policies only; a
    /// bundle carries the IR but not the text it came from).
    sources: Option<SourceMap>,
    pub params: Params,
    /// The parameter values as given, for `list`.
    pub raw_params: BTreeMap<String, String>,
    pub from: Provenance,
    /// `sha256:...` of the IR's meaning (as in `policy.sha256` of a bundle).
    pub policy_digest: String,
}

/// The evaluator's decision and where its rule is written.
#[derive(Debug)]
pub struct Answer {
    pub decision: Decision,
    /// `file:line:column` for a policy; `file (byte N)` for a bundle; `None` for built-in
    /// rules and default deny.
    pub location: Option<String>,
}

impl Registered {
    pub fn name(&self) -> &str {
        &self.policy.agent.name
    }

    /// Compiles the policy at `path` (absolute) with parameter values `params`.
    pub fn from_policy(path: &str, params: &BTreeMap<String, String>) -> Result<Registered, RequestError> {
        let p = absolute(path)?;
        let compiled = aegis_compiler::compile_file(&p).map_err(|f| RequestError::InvalidPolicy {
            path: p.clone(),
            diagnostics: aegis_compiler::diag::render_human(&f.diagnostics, &f.sources, false),
        })?;
        let values = parse_params(&compiled.policy, params)?;
        let policy_digest = compiled.policy.digest();
        Ok(Registered {
            policy: compiled.policy,
            sources: Some(compiled.sources),
            params: values,
            raw_params: params.clone(),
            from: Provenance::Policy { path: p },
            policy_digest,
        })
    }

    /// Verifies the bundle at `dir` (absolute) against `trust` and loads its IR.
    pub fn from_bundle(dir: &str, params: &BTreeMap<String, String>, trust: &Trust) -> Result<Registered, RequestError> {
        let d = absolute(dir)?;
        let policy = match trust {
            Trust::Key(k) => TrustPolicy::signed_by(k.clone()),
            Trust::AllowUnsigned => TrustPolicy::unsigned_ok(),
            Trust::NoBundles => return Err(RequestError::NoTrustKey { path: d }),
        };
        let verified = bundle::verify(&d, &policy).map_err(|e| {
            use miette::Diagnostic;
            RequestError::BundleRefused {
                path: d.clone(),
                code: e.code_str(),
                message: e.to_string(),
                help: e.help().map(|h| h.to_string()),
            }
        })?;
        let bad = |why: String| RequestError::BadBundleIr { path: d.clone(), why };
        let ir = verified.file(aegis_targets::bundle::contract::POLICY_IR).ok_or_else(|| bad("it has no policy.ir.json".into()))?;
        let policy = Checked::from_json(ir).map_err(|e| bad(format!("policy.ir.json is not an AEGIS policy IR: {e}")))?;
        let policy_digest = policy.digest();
        // The manifest is what the signature covers; the IR must be the one it names.
        if policy_digest.trim_start_matches("sha256:") != verified.manifest().policy_sha256 {
            return Err(bad("policy.ir.json does not match the policy digest in the signed manifest".into()));
        }
        if policy.agent.name != verified.manifest().agent {
            return Err(bad(format!(
                "policy.ir.json is for agent '{}' but the manifest names '{}'",
                policy.agent.name,
                verified.manifest().agent
            )));
        }
        let values = parse_params(&policy, params)?;
        Ok(Registered {
            policy,
            sources: None,
            params: values,
            raw_params: params.clone(),
            from: Provenance::Bundle {
                dir: d,
                manifest_sha256: verified.manifest_sha256().to_string(),
                signed_by: verified.signed_by().map(|k| k.to_string()),
            },
            policy_digest,
        })
    }

    /// Answers `query` from the reference evaluator.
    pub fn check(&self, query: &Query) -> Result<Answer, RequestError> {
        let decision = eval::evaluate(&self.policy, &self.params, query).map_err(|e| RequestError::InvalidQuery(e.0))?;
        let location = decision.rule.as_ref().and_then(|r| r.origin).map(|o| self.locate(o));
        Ok(Answer { decision, location })
    }

    fn locate(&self, o: Origin) -> String {
        match &self.sources {
            Some(s) => s.locate(o).to_string(),
            None => {
                // The IR names its source files; the byte offset is all a bundle can say.
                let file = serde_json::to_value(o.file)
                    .ok()
                    .and_then(|v| v.as_u64())
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| self.policy.sources.get(i))
                    .cloned()
                    .unwrap_or_else(|| "?".into());
                format!("{file} (byte {})", o.span.start)
            }
        }
    }
}

fn absolute(path: &str) -> Result<PathBuf, RequestError> {
    let p = Path::new(path);
    if p.is_absolute() { Ok(p.to_path_buf()) } else { Err(RequestError::RelativePath { path: path.into() }) }
}

fn parse_params(policy: &Policy, raw: &BTreeMap<String, String>) -> Result<Params, RequestError> {
    let mut out = Params::new();
    for (name, value) in raw {
        if !policy.parameters.contains_key(name) {
            let declared: Vec<&str> = policy.parameters.keys().map(String::as_str).collect();
            let why = if declared.is_empty() {
                "the policy declares no parameters".to_string()
            } else {
                format!("the policy declares only {}", declared.join(", "))
            };
            return Err(RequestError::InvalidParameter { name: name.clone(), why });
        }
        let (_, v) = eval::parse_param(&format!("{name}={value}"))
            .map_err(|e| RequestError::InvalidParameter {
                name: name.clone(),
                why: e.0.trim_start_matches(&format!("parameter {name}: ")).to_string(),
            })?;
        out.insert(name.clone(), v);
    }
    Ok(out)
}

/// The agents the daemon knows, by name. Cheap to share between connection threads: a query
/// holds the read lock only long enough to clone an `Arc`.
#[derive(Debug, Default)]
pub struct Registry {
    agents: RwLock<BTreeMap<String, Arc<Registered>>>,
}

impl Registry {
    /// Registers `r` under its agent name; returns the registration it replaced.
    pub fn insert(&self, r: Registered) -> Option<Arc<Registered>> {
        let mut map = self.agents.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(r.name().to_string(), Arc::new(r))
    }

    pub fn get(&self, agent: &str) -> Result<Arc<Registered>, RequestError> {
        let map = self.agents.read().unwrap_or_else(PoisonError::into_inner);
        map.get(agent).cloned().ok_or_else(|| RequestError::UnknownAgent {
            agent: agent.to_string(),
            known: map.keys().cloned().collect(),
        })
    }

    /// Every registration, sorted by agent name.
    pub fn all(&self) -> Vec<Arc<Registered>> {
        let map = self.agents.read().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }
}
