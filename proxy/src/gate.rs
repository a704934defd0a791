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

use aegis_policy::eval::{self, Decision, Params, Query, Verdict};
use aegis_policy::ir::net::Protocol;
use aegis_policy::ir::{Checked, Policy, SecretSource};

use aegis_policy::ir::net::Destination;

use crate::addr::{Host, special};

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
    policy: Checked,
    params: Params,
    apis: Vec<ApiGate>,
    /// Learn mode (`aegis learn`): what the policy refuses by default is admitted (and
    /// recorded as such); explicit denials and special addresses are still refused.
    learn: Option<Learning>,
}

/// How the proxy behaves for a learning run.
#[derive(Clone, Copy, Debug)]
pub struct Learning {
    /// Terminate TLS to port-443 hosts that no API declares, to see (and learn) each
    /// request's method and path.
    pub inspect: bool,
}

/// The name of the API a learning run inspects a host under (not declared by the policy).
pub const LEARN_API: &str = "(learn mode)";

/// The rule a learning run's admissions name.
fn learned(d: Decision, what: &str) -> Decision {
    Decision {
        verdict: Verdict::Allow,
        reason: format!("learn mode: admitted and recorded ({what}; the policy would refuse it: {})", d.reason),
        rule: Some(eval::RuleRef { kind: "learn mode".into(), text: "admitted".into(), origin: None }),
        notes: d.notes,
    }
}

/// A short text for the rule that decided, for audit records and denial headers.
pub fn rule_text(d: &Decision) -> Option<String> {
    d.rule.as_ref().map(|r| format!("{} '{}'", r.kind, r.text))
}

impl Gate {
    /// Builds the gate and loads every credential. A credential that cannot be loaded
    /// stops the launch (the API would otherwise be called without it, or worse, with
    /// whatever the agent supplies).
    pub fn new(policy: Checked, params: Params, secrets: &dyn SecretStore) -> Result<Gate, String> {
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
            if let Some(other) = apis.iter().find(|a: &&ApiGate| a.host.eq_ignore_ascii_case(&api.host) && a.port == api.port) {
                // The compiler refuses this; a bundle that has it anyway is not run.
                return Err(format!("api '{}' and api '{}' both describe {}:{}", other.name, api.name, api.host, api.port));
            }
            apis.push(ApiGate {
                name: api.name.clone(),
                host: api.host.to_ascii_lowercase(),
                port: api.port,
                credential,
            });
        }
        Ok(Gate { policy, params, apis, learn: None })
    }

    /// This gate in learn mode: destinations and API calls the policy refuses by default are
    /// admitted (the records say so); explicit `deny` rules and special addresses still refuse.
    pub fn learning(mut self, learning: Learning) -> Gate {
        self.learn = Some(learning);
        self
    }

    /// Whether this is a learning run's gate.
    pub fn is_learning(&self) -> bool {
        self.learn.is_some()
    }

    /// The APIs the proxy inspects.
    pub fn apis(&self) -> &[ApiGate] {
        &self.apis
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Any evaluator query (the decision endpoint uses this).
    pub fn evaluate(&self, q: &Query) -> Result<Decision, String> {
        eval::evaluate(&self.policy, &self.params, q).map_err(|e| e.0)
    }

    /// Whether any grant of the policy names programs: then the proxy must know which
    /// program connected before it decides.
    pub fn needs_program(&self) -> bool {
        self.policy.apis.values().any(|a| !a.exe.is_empty()) || self.policy.network.allow.iter().chain(&self.policy.network.deny).any(|e| !e.exe.is_empty())
    }

    /// Any evaluator query, asked by program `exe`.
    pub fn evaluate_for(&self, q: &Query, exe: Option<&str>) -> Result<Decision, String> {
        eval::evaluate_for(&self.policy, &self.params, q, exe).map_err(|e| e.0)
    }

    /// May program `exe` of the agent reach `host:port` over TCP through the proxy?
    pub fn destination(&self, host: &Host, port: u16, exe: Option<&str>) -> Decision {
        let d = self.policy_destination(host, port, exe);
        match self.learn {
            Some(_) if d.verdict == Verdict::Deny && d.rule.is_none() => learned(d, "destination"),
            _ => d,
        }
    }

    fn policy_destination(&self, host: &Host, port: u16, exe: Option<&str>) -> Decision {
        match eval::evaluate_for(
            &self.policy,
            &self.params,
            &Query::Net {
                host: host.text(),
                port,
                protocol: Protocol::Tcp,
            },
            exe,
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

    /// [`Gate::api_for`], or, in learn mode with inspection, a stand-in API for any other
    /// name on port 443 (no credential), so that its requests are seen and recorded.
    pub fn api_or_learn(&self, host: &Host, port: u16) -> Option<ApiGate> {
        if let Some(a) = self.api_for(host, port) {
            return Some(a.clone());
        }
        match (self.learn, host) {
            (Some(Learning { inspect: true }), Host::Name(n)) if port == 443 => {
                Some(ApiGate { name: LEARN_API.into(), host: n.clone(), port, credential: None })
            }
            _ => None,
        }
    }

    /// An HTTP request of program `exe` to an API, with the path already canonical.
    pub fn http(&self, api: &ApiGate, method: &str, canonical_path: &str, exe: Option<&str>) -> Decision {
        if self.learn.is_some() && api.name == LEARN_API {
            let d = Decision { verdict: Verdict::Deny, reason: format!("no API of the policy describes {}:{}", api.host, api.port), rule: None, notes: vec![] };
            return learned(d, "request");
        }
        let d = self.policy_http(api, method, canonical_path, exe);
        match self.learn {
            Some(_) if d.verdict == Verdict::Deny && d.rule.is_none() => learned(d, "request"),
            _ => d,
        }
    }

    fn policy_http(&self, api: &ApiGate, method: &str, canonical_path: &str, exe: Option<&str>) -> Decision {
        match eval::evaluate_for(
            &self.policy,
            &self.params,
            &Query::ApiHttp {
                api: api.name.clone(),
                method: method.to_string(),
                path: canonical_path.to_string(),
            },
            exe,
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

    /// The addresses of `host` that may be dialled: an address in a special range
    /// (loopback, link-local, metadata, ...) only when a CIDR grant lies inside that range,
    /// and one of this host's own addresses only when a grant names exactly that address
    /// (a catch-all such as `0.0.0.0/0` opens neither); any address an explicit `deny`
    /// names is dropped. `Err` says why nothing is left.
    pub fn vet(&self, host: &Host, port: u16, addrs: &[IpAddr], own: &HashSet<IpAddr>) -> Result<Vec<IpAddr>, String> {
        let mut ok = Vec::new();
        let mut why = BTreeMap::new();
        for ip in addrs {
            let ip = crate::addr::canonical_ip(*ip);
            // Addresses are vetted for any program: a per-program deny must not open them.
            let d = self.destination(&Host::Ip(ip), port, None);
            let explicit_deny = d.verdict == Verdict::Deny && d.rule.is_some();
            let special = match special(ip) {
                Some((w, prefix)) => Some((w, prefix)),
                None if own.contains(&ip) => Some(("an address of this host", if ip.is_ipv4() { 32 } else { 128 })),
                None => None,
            };
            if explicit_deny {
                why.insert(ip, d.reason);
            } else if let Some((w, min_prefix)) = special
                && !self.narrow_grant(ip, port, min_prefix)
            {
                why.insert(ip, format!("{w} (only a CIDR grant inside that range opens it)"));
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

    /// Whether a TCP allow endpoint covering `ip:port` has a network at least as narrow as
    /// `/min_prefix`.
    fn narrow_grant(&self, ip: IpAddr, port: u16, min_prefix: u8) -> bool {
        self.policy.network.allow.iter().any(|e| {
            e.protocol == Protocol::Tcp
                && e.ports.iter().any(|r| r.contains(port))
                && match &e.destination {
                    Destination::Network(c) => c.contains(ip) && c.prefix >= min_prefix,
                    _ => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    struct NoSecrets;
    impl SecretStore for NoSecrets {
        fn env(&self, _: &str) -> Option<String> {
            None
        }
        fn file(&self, p: &str) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, p.to_string()))
        }
    }

    fn gate(allow: &str) -> Gate {
        let toml = format!("version = 1\n[agent]\nname = \"t\"\n[network]\nmode = \"proxy\"\nallow = [{allow}]\n");
        let c = match aegis_compiler::compile_bytes("t.toml", toml.as_bytes()) {
            Ok(c) => c,
            Err(_) => panic!("test policy does not compile: {toml}"),
        };
        Gate::new(c.policy, Params::new(), &NoSecrets).unwrap()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_catch_all_grant_opens_neither_metadata_nor_loopback_nor_this_host() {
        let g = gate(r#""0.0.0.0/0:443", "[::/0]:443""#);
        let own: HashSet<IpAddr> = ips(&["10.9.9.9"]).into_iter().collect();
        let h = Host::Name("x.example".into());
        for bad in ["169.254.169.254", "127.0.0.1", "::1", "fd00:ec2::254", "64:ff9b::a9fe:a9fe", "10.9.9.9", "0.0.0.0", "224.0.0.1"] {
            assert!(g.vet(&h, 443, &ips(&[bad]), &own).is_err(), "{bad}");
        }
        assert_eq!(g.vet(&h, 443, &ips(&["127.0.0.1", "93.184.216.34"]), &own).unwrap(), ips(&["93.184.216.34"]));
    }

    #[test]
    fn a_grant_inside_the_special_range_opens_it() {
        let g = gate(r#""127.0.0.0/8:8080", "169.254.169.254:80", "10.9.9.9:22""#);
        let own: HashSet<IpAddr> = ips(&["10.9.9.9"]).into_iter().collect();
        let h = Host::Name("x.example".into());
        assert!(g.vet(&h, 8080, &ips(&["127.0.0.2"]), &own).is_ok());
        assert!(g.vet(&h, 8081, &ips(&["127.0.0.2"]), &own).is_err(), "other port");
        assert!(g.vet(&h, 80, &ips(&["169.254.169.254"]), &own).is_ok());
        assert!(g.vet(&h, 22, &ips(&["10.9.9.9"]), &own).is_ok());
        assert!(g.vet(&h, 22, &ips(&["::ffff:127.0.0.1"]), &own).is_err());
    }
}
