//! The proxy's policy questions, answered by the compiler's reference evaluator so the
//! proxy, `aegisc check` and `aegisd` can never disagree.
//!
//! Input: the bundle's typed IR (`policy.ir.json`), the launch parameters, and the
//! credential secrets loaded on the host. Output: [`Gate`], which says whether a
//! destination may be reached, which API (if any) a destination belongs to (those are
//! inspected), whether an HTTP request is allowed, and which resolved addresses may be
//! dialled. Invariants: deny beats allow and default is deny (the evaluator's laws);
//! secrets are never part of a `Debug` output, a reason or an audit record; an address in a
//! special range (loopback, link-local, metadata, this host's own) is dialled only when a
//! CIDR grant names it explicitly.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use aegis_compiler::eval::{self, Decision, Params, Query, Verdict};
use aegis_compiler::ir::net::Protocol;
use aegis_compiler::ir::{Policy, SecretSource};

use crate::addr::{Host, special_range};

/// A secret value that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The credential the proxy adds to allowed requests of one API.
#[derive(Clone, Debug)]
pub struct Injection {
    pub header: String,
    /// `prefix` + secret.
    pub value: Secret,
}

/// An `[api.NAME]` the proxy inspects.
#[derive(Clone, Debug)]
pub struct ApiGate {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub credential: Option<Injection>,
}

/// Where secrets come from: the supervisor's environment and files (injectable in tests).
pub trait SecretStore {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> std::io::Result<String>;
}

/// The real host: `std::env` and the filesystem.
pub struct HostSecrets;

impl SecretStore for HostSecrets {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

pub struct Gate {
    policy: Policy,
    params: Params,
    apis: Vec<ApiGate>,
}

/// A short text for the rule that decided, for audit records and denial headers.
pub fn rule_text(d: &Decision) -> Option<String> {
    d.rule.as_ref().map(|r| format!("{} '{}'", r.kind, r.text))
}

impl Gate {
    /// Builds the gate and loads every credential. A credential that cannot be loaded
    /// stops the launch (the API would otherwise be called without it, or worse, with
    /// whatever the agent supplies).
    pub fn new(policy: Policy, params: Params, secrets: &dyn SecretStore) -> Result<Gate, String> {
        let mut apis = Vec::new();
        for api in policy.apis.values() {
            let credential = match &api.credential {
                None => None,
                Some(c) => {
                    let raw = match &c.source {
                        SecretSource::Env(var) => secrets
                            .env(var)
                            .ok_or_else(|| format!("api '{}': credential variable {var} is not set in aegis-exec's environment", api.name))?,
                        SecretSource::File(path) => secrets
                            .file(path)
                            .map_err(|e| format!("api '{}': cannot read credential file {path}: {e}", api.name))?,
                    };
                    let secret = raw.trim_end_matches(['\n', '\r']).to_string();
                    if secret.is_empty() {
                        return Err(format!("api '{}': the credential is empty", api.name));
                    }
                    if secret.bytes().any(|b| b.is_ascii_control()) || c.prefix.bytes().any(|b| b.is_ascii_control()) {
                        return Err(format!("api '{}': the credential contains control characters (CR/LF would split the header)", api.name));
                    }
                    Some(Injection {
                        header: c.header.clone(),
                        value: Secret(format!("{}{secret}", c.prefix)),
                    })
                }
            };
            apis.push(ApiGate {
                name: api.name.clone(),
                host: api.host.to_ascii_lowercase(),
                port: api.port,
                credential,
            });
        }
        Ok(Gate { policy, params, apis })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Any evaluator query (the decision endpoint uses this).
    pub fn evaluate(&self, q: &Query) -> Result<Decision, String> {
        eval::evaluate(&self.policy, &self.params, q).map_err(|e| e.0)
    }

    /// May the agent reach `host:port` over TCP through the proxy?
    pub fn destination(&self, host: &Host, port: u16) -> Decision {
        match eval::evaluate(
            &self.policy,
            &self.params,
            &Query::Net {
                host: host.text(),
                port,
                protocol: Protocol::Tcp,
            },
        ) {
            Ok(d) => d,
            Err(e) => Decision {
                verdict: Verdict::Deny,
                reason: format!("not a valid destination: {e}"),
                rule: None,
                notes: vec![],
            },
        }
    }

    /// The API whose host and port these are: its traffic is inspected.
    pub fn api_for(&self, host: &Host, port: u16) -> Option<&ApiGate> {
        let Host::Name(n) = host else { return None };
        self.apis.iter().find(|a| a.host == *n && a.port == port)
    }

    /// An HTTP request to an API, with the path already canonical.
    pub fn http(&self, api: &ApiGate, method: &str, canonical_path: &str) -> Decision {
        match eval::evaluate(
            &self.policy,
            &self.params,
            &Query::ApiHttp {
                api: api.name.clone(),
                method: method.to_string(),
                path: canonical_path.to_string(),
            },
        ) {
            Ok(d) => d,
            Err(e) => Decision {
                verdict: Verdict::Deny,
                reason: e.0,
                rule: None,
                notes: vec![],
            },
        }
    }

    /// The addresses of `host` that may be dialled: special ranges and this host's own
    /// addresses only with an explicit CIDR grant; any address an explicit `deny` names is
    /// dropped. `Err` says why nothing is left.
    pub fn vet(&self, host: &Host, port: u16, addrs: &[IpAddr], own: &HashSet<IpAddr>) -> Result<Vec<IpAddr>, String> {
        let mut ok = Vec::new();
        let mut why = BTreeMap::new();
        for ip in addrs {
            let ip = crate::addr::canonical_ip(*ip);
            let d = self.destination(&Host::Ip(ip), port);
            let granted = d.verdict == Verdict::Allow;
            let explicit_deny = d.verdict == Verdict::Deny && d.rule.is_some();
            let special = special_range(ip).or_else(|| own.contains(&ip).then_some("an address of this host"));
            if explicit_deny {
                why.insert(ip, d.reason);
            } else if let Some(s) = special
                && !granted
            {
                why.insert(ip, format!("{s} (no CIDR grant names it)"));
            } else {
                ok.push(ip);
            }
        }
        if ok.is_empty() {
            let list: Vec<String> = why.iter().map(|(ip, w)| format!("{ip}: {w}")).collect();
            return Err(if list.is_empty() {
                format!("{host} has no address")
            } else {
                format!("{host} resolves only to refused addresses: {}", list.join("; "))
            });
        }
        Ok(ok)
    }
}
