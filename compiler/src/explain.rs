//! Why a policy refuses something, and the smallest change that would allow it.
//!
//! Input: a lowered [`Policy`] and one thing the agent tried: a system call (name, arch,
//! argument registers) or an evaluator [`Query`] (file, network, unix socket, API call).
//! Output: a [`Why`]: the rule that decided (with its source origin, `None` for default
//! deny and built-in hardening), the reason in words, and, where one exists, the smallest
//! [`Change`] to the policy that would allow exactly that, with what the change costs
//! (credential stores it would reach, dangerous system calls). Invariants: the verdict of a
//! query is the reference evaluator's; a syscall's reason is derived from the same
//! hardening tables the seccomp lowering uses (`aegis_targets::seccomp::hardening`), never
//! from a second list; nothing here reads the filesystem, so it is cheap enough for the
//! supervisor to call for each first denial of a target.

use std::path::Path;

use crate::eval::{self, Decision, FsQuery, Params, Query, RuleRef, Verdict};
use crate::ir::{NetworkMode, Policy, Protocol};
pub use aegis_policy::why::{Change, Why, allow_syscall, syscall, toml_list, toml_string};
use crate::secrets;

/// `path` written against a parameter when it lies inside one's value (`${WORKSPACE}/src`),
/// as the policy's own rules are; otherwise as it is.
pub fn in_policy_terms(path: &str, params: &Params) -> String {
    let mut best: Option<(&str, String)> = None;
    for (name, value) in params {
        let v = value.to_string();
        let v = v.trim_end_matches('/');
        let rest = if path == v {
            Some(String::new())
        } else {
            path.strip_prefix(v).filter(|r| r.starts_with('/') && !v.is_empty()).map(str::to_string)
        };
        if let Some(rest) = rest
            && best.as_ref().is_none_or(|(_, r)| rest.len() < r.len())
        {
            best = Some((name, rest));
        }
    }
    match best {
        Some((name, rest)) => format!("${{{name}}}{rest}"),
        None => path.to_string(),
    }
}

/// What a grant of `path` would make readable that is a credential store.
fn secret_warnings(path: &str, home: Option<&str>) -> Vec<String> {
    if let Some(store) = secrets::store_of(path, home) {
        return vec![format!("widens towards secrets: {path} is (inside) the credential store {store}")];
    }
    let under = secrets::stores_under(path, home);
    if under.is_empty() {
        Vec::new()
    } else {
        vec![format!("widens towards secrets: a grant of {path} reaches the credential store(s) {}", under.join(", "))]
    }
}

fn decided(d: &Decision) -> (Option<RuleRef>, String) {
    (d.rule.clone(), d.reason.clone())
}

/// Why the policy refuses file access `access` to `path` (absolute, the agent's view), and
/// the smallest change that would allow it. `home` is the agent's home directory, for the
/// credential-store warnings.
pub fn fs(policy: &Policy, params: &Params, access: FsQuery, path: &str, home: Option<&str>) -> Result<(Decision, Why), String> {
    let d = eval::evaluate(policy, params, &Query::Fs { access, path: path.to_string() }).map_err(|e| e.0)?;
    let (rule, reason) = decided(&d);
    if d.verdict == Verdict::Allow {
        let why = Why { rule, reason: format!("the policy allows it now: {reason}"), change: None };
        return Ok((d, why));
    }
    let written = in_policy_terms(path, params);
    let kind = d.rule.as_ref().map(|r| r.kind.as_str());
    let change = match kind {
        Some("deny pattern") => {
            let denied = d.rule.as_ref().map(|r| r.text.clone()).unwrap_or_default();
            let mut warnings = secret_warnings(path, home);
            if secrets::store_of(path, home).is_some() || secrets::store_of(&denied, home).is_some() || !secrets::stores_under(&denied, home).is_empty() {
                warnings.push(format!("the deny rule '{denied}' protects a credential store"));
            }
            Some(Change {
                words: format!("the deny rule '{denied}' refuses it and beats every grant: narrow it so that it no longer covers {written}, or remove it"),
                toml: String::new(),
                warnings,
            })
        }
        Some("built-in protection") => {
            let protected = d.rule.as_ref().map(|r| r.text.split(" (").next().unwrap_or_default().to_string()).unwrap_or_default();
            Some(Change {
                words: format!("turn off the built-in protection of {protected}"),
                toml: toml_list("filesystem", "unprotect", &protected),
                warnings: vec![format!(
                    "aegis::lint::unprotected: the agent could then write {protected}, which your own tools run or read after the session"
                )],
            })
        }
        _ => {
            let (table, key, what) = match access {
                FsQuery::Read => ("filesystem", "read", "read grant"),
                FsQuery::Write => ("filesystem", "write", "write grant"),
                FsQuery::Exec => ("exec", "allow", "exec grant"),
            };
            let mut warnings = if access == FsQuery::Exec { Vec::new() } else { secret_warnings(path, home) };
            if access == FsQuery::Exec
                && let Ok(p) = crate::ir::PathPattern::parse(path, &|_| false)
                && crate::lint::INTERPRETERS.contains(&p.components.last().map(String::as_str).unwrap_or_default().trim_end_matches(|c: char| c.is_ascii_digit() || c == '.'))
            {
                warnings.push(format!("aegis::lint::interpreter_exec: {path} runs any code it is given"));
            }
            Some(Change { words: format!("add a {what} for {written}"), toml: toml_list(table, key, &written), warnings })
        }
    };
    Ok((d, Why { rule, reason, change }))
}

/// Why the policy refuses a connection to `host:port` (a name or an address), and the
/// smallest change that would allow it. `bypassed_proxy`: the agent connected directly in
/// proxy mode (the network namespace's table dropped it), not through the proxy.
pub fn net(policy: &Policy, params: &Params, host: &str, port: u16, protocol: Protocol, bypassed_proxy: bool) -> Result<(Decision, Why), String> {
    let d = eval::evaluate(policy, params, &Query::Net { host: host.to_string(), port, protocol }).map_err(|e| e.0)?;
    let (rule, reason) = decided(&d);
    let shown = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let endpoint = if protocol == Protocol::Udp { format!("{shown}/udp") } else { shown.clone() };
    if bypassed_proxy {
        let change = Change {
            words: format!("the agent connected to {shown} directly; in proxy mode only the proxy leads out: have it use the proxy (HTTPS_PROXY/HTTP_PROXY are set for it), and grant the destination by name"),
            toml: toml_list("network", "allow", &format!("HOST:{port}")),
            warnings: Vec::new(),
        };
        return Ok((d, Why { rule, reason, change: Some(change) }));
    }
    if d.verdict == Verdict::Allow {
        return Ok((d.clone(), Why { rule, reason: format!("the policy allows it now: {reason}"), change: None }));
    }
    let mut warnings = Vec::new();
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>()
        && (ip.is_loopback() || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_link_local() || v4.octets() == [169, 254, 169, 254]))
    {
        warnings.push(format!("{ip} is a special address (this host's own services or cloud metadata)"));
    }
    let change = if d.rule.is_some() {
        Change {
            words: format!("the deny endpoint '{}' refuses it and beats every grant: narrow or remove it", d.rule.as_ref().map(|r| r.text.as_str()).unwrap_or_default()),
            toml: String::new(),
            warnings,
        }
    } else if policy.network.mode == NetworkMode::None {
        Change {
            words: format!("give the agent a network: proxy mode and the endpoint {endpoint}"),
            toml: format!("[network]\nmode = \"proxy\"\nallow = [{}]", toml_string(&endpoint)),
            warnings,
        }
    } else {
        Change { words: format!("allow the endpoint {endpoint}"), toml: toml_list("network", "allow", &endpoint), warnings }
    };
    Ok((d, Why { rule, reason, change: Some(change) }))
}

/// Why the policy refuses a connection to the unix socket at `path`.
pub fn unix(policy: &Policy, params: &Params, path: &str) -> Result<(Decision, Why), String> {
    let d = eval::evaluate(policy, params, &Query::Unix { path: path.to_string() }).map_err(|e| e.0)?;
    let (rule, reason) = decided(&d);
    if d.verdict == Verdict::Allow {
        return Ok((d.clone(), Why { rule, reason: format!("the policy allows it now: {reason}"), change: None }));
    }
    let written = in_policy_terms(path, params);
    let mut warnings: Vec<String> = crate::lint::root_equivalent_socket(path).map(|s| format!("{s} acts as root for whoever connects: this grant hands the agent the host")).into_iter().collect();
    if d.rule.is_some() {
        warnings.push("a filesystem deny covers the socket; remove or narrow it first".into());
    }
    let change = Change { words: format!("grant the socket {written} in [network] unix"), toml: toml_list("network", "unix", &written), warnings };
    Ok((d, Why { rule, reason, change: Some(change) }))
}

/// Why the policy refuses `method path` on API `api`.
pub fn api(policy: &Policy, params: &Params, api: &str, method: &str, path: &str) -> Result<(Decision, Why), String> {
    let d = eval::evaluate(policy, params, &Query::ApiHttp { api: api.to_string(), method: method.to_string(), path: path.to_string() }).map_err(|e| e.0)?;
    let (rule, reason) = decided(&d);
    if d.verdict == Verdict::Allow {
        return Ok((d.clone(), Why { rule, reason: format!("the policy allows it now: {reason}"), change: None }));
    }
    let change = if d.rule.is_some() {
        Change { words: "a deny rule of the API refuses it and beats every allow rule: narrow or remove it".into(), toml: String::new(), warnings: Vec::new() }
    } else {
        Change { words: format!("allow {method} {path} on api '{api}'"), toml: toml_list(&format!("api.{api}"), "allow", &format!("{method} {path}")), warnings: Vec::new() }
    };
    Ok((d, Why { rule, reason, change: Some(change) }))
}

/// The policy file at `policy` with a [`Change`]'s TOML composed on top (`extends`), and
/// the lints the change adds. `Err`: the change does not compile (a bug, or a key the
/// policy already sets that TOML cannot repeat).
pub fn with_change(policy: &Path, toml: &str) -> Result<(crate::ir::Checked, Vec<String>), String> {
    let before = crate::compile_file(policy).map_err(|_| format!("{} does not compile", policy.display()))?;
    let abs = std::fs::canonicalize(policy).map_err(|e| format!("{}: {e}", policy.display()))?;
    let text = format!("version = 1\n[agent]\nextends = [{}]\n{toml}\n", toml_string(&abs.to_string_lossy()));
    let after = crate::compile_bytes("proposed-change.toml", text.as_bytes()).map_err(|f| {
        let msgs: Vec<String> = f.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.message.clone()).collect();
        format!("the change does not compile: {}", msgs.join("; "))
    })?;
    let old: std::collections::BTreeSet<(String, String)> = before.warnings.iter().map(|d| (d.code.to_string(), d.message.clone())).collect();
    let new = after
        .warnings
        .iter()
        .filter(|d| d.code.as_str().starts_with("aegis::lint::"))
        .filter(|d| !old.contains(&(d.code.to_string(), d.message.clone())))
        .map(|d| format!("{}: {}", d.code, d.message))
        .collect();
    Ok((after.policy, new))
}

/// [`with_change`], then the evaluator's answer to `query` under the changed policy.
pub fn try_change(policy: &Path, toml: &str, params: &Params, query: &Query) -> Result<(Verdict, Vec<String>), String> {
    let (after, lints) = with_change(policy, toml)?;
    Ok((eval::evaluate(&after, params, query).map_err(|e| e.0)?.verdict, lints))
}

/// [`with_change`], then what the changed policy's seccomp program does with `name(args)`
/// on `arch`: whether it lets the call run.
pub fn try_syscall_change(policy: &Path, toml: &str, arch: aegis_targets::seccomp::Arch, name: &str, args: [u64; 6]) -> Result<(bool, Vec<String>), String> {
    use aegis_targets::seccomp::{Action, SeccompData, decide};
    let (after, lints) = with_change(policy, toml)?;
    let spec = crate::emit::seccomp::spec(&after, &mut Vec::new()).map_err(|e| e.to_string())?;
    let nr = arch.nr(name).ok_or_else(|| format!("`{name}` is not a {arch} system call"))?;
    let runs = matches!(decide(&spec, arch, &SeccompData::new(arch, nr, args)), Action::Allow | Action::Log | Action::UserNotif);
    Ok((runs, lints))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;
    use aegis_targets::seccomp::hardening::{AF_INET6, TIOCSTI};

    fn policy(extra: &str) -> Policy {
        let text = format!("version = 1\n[agent]\nname = \"t\"\n{extra}");
        match crate::compile_bytes("t.toml", text.as_bytes()) {
            Ok(c) => c.policy.into_inner(),
            Err(_) => panic!("test policy does not compile: {text}"),
        }
    }

    #[test]
    fn each_denial_names_the_part_of_the_policy_that_made_it() {
        let p = policy("[syscalls]\ndeny = [\"mkdir\"]\n");
        let w = syscall(&p, "mkdir", &[0; 6]);
        assert_eq!(w.rule.as_ref().map(|r| r.kind.as_str()), Some("[syscalls] deny rule"));
        assert!(w.rule.unwrap().origin.is_some(), "a user rule has a location");
        let w = syscall(&p, "ptrace", &[16, 1, 0, 0, 0, 0]);
        assert!(w.reason.starts_with("AEGIS hardening: tracing"), "{}", w.reason);
        let c = w.change.unwrap();
        assert_eq!(c.toml, "[syscalls]\nallow = [\"ptrace\"]");
        assert!(c.warnings.iter().any(|x| x.contains("dangerous")), "{c:?}");
        let w = syscall(&p, "socket", &[u64::from(AF_INET6), 1, 0, 0, 0, 0]);
        assert!(w.reason.contains("network mode is `none`"), "{}", w.reason);
        let w = syscall(&p, "unshare", &[0x1000_0000, 0, 0, 0, 0, 0]);
        assert!(w.reason.contains("making namespaces"), "{}", w.reason);
        let w = syscall(&p, "reboot", &[0; 6]);
        assert!(w.change.is_none(), "no policy can allow reboot");
        let w = syscall(&p, "ioctl", &[0, u64::from(TIOCSTI), 0, 0, 0, 0]);
        assert!(w.reason.contains("TIOCSTI") && w.change.is_none());
        let w = syscall(&p, "socket", &[17, 3, 0, 0, 0, 0]);
        assert!(w.reason.contains("family 17"), "{}", w.reason);
    }

    #[test]
    fn the_smallest_change_is_the_path_itself_and_it_is_checked() {
        let text = "version = 1\n[agent]\nname = \"t\"\n[parameters]\nHOME = \"home\"\nWORKSPACE = \"ws\"\n[filesystem]\nread = [\"/usr\"]\nwrite = [\"${WORKSPACE}\"]\ndeny = [\"${HOME}/.aws\"]\n";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, text).unwrap();
        let p = crate::compile_file(&file).ok().unwrap().policy;
        let mut params = Params::new();
        params.insert("HOME".into(), crate::ir::PathPattern::parse("/home/u", &|_| false).unwrap());
        params.insert("WORKSPACE".into(), crate::ir::PathPattern::parse("/home/u/src/app", &|_| false).unwrap());
        let home = Some("/home/u");

        // Default deny: grant exactly that path, in the policy's own terms.
        let (d, w) = fs(&p, &params, FsQuery::Read, "/etc/hosts", home).unwrap();
        assert_eq!(d.verdict, Verdict::Deny);
        let c = w.change.unwrap();
        assert_eq!(c.toml, "[filesystem]\nread = [\"/etc/hosts\"]");
        assert!(c.warnings.is_empty(), "{c:?}");
        let q = Query::Fs { access: FsQuery::Read, path: "/etc/hosts".into() };
        let (v, lints) = try_change(&file, &c.toml, &params, &q).unwrap();
        assert_eq!(v, Verdict::Allow, "the change allows it");
        assert!(lints.is_empty(), "{lints:?}");

        // Inside a parameter: written against it.
        let (_, w) = fs(&p, &params, FsQuery::Exec, "/home/u/src/app/run.sh", home).unwrap();
        assert_eq!(w.change.unwrap().toml, "[exec]\nallow = [\"${WORKSPACE}/run.sh\"]");

        // Towards secrets: flagged.
        let (_, w) = fs(&p, &params, FsQuery::Read, "/home/u/.ssh/id_ed25519", home).unwrap();
        let c = w.change.unwrap();
        assert!(c.warnings.iter().any(|x| x.contains("credential store /home/u/.ssh")), "{c:?}");
        let (_, w) = fs(&p, &params, FsQuery::Read, "/home/u", home).unwrap();
        assert!(w.change.unwrap().warnings.iter().any(|x| x.contains("/home/u/.ssh")), "a grant of the home directory reaches its stores");

        // A deny rule decides: say so, with its location; no grant would help.
        let (_, w) = fs(&p, &params, FsQuery::Read, "/home/u/.aws/credentials", home).unwrap();
        assert_eq!(w.rule.as_ref().map(|r| r.kind.as_str()), Some("deny pattern"));
        assert!(w.rule.as_ref().unwrap().origin.is_some());
        let c = w.change.unwrap();
        assert!(c.toml.is_empty() && c.words.contains("narrow"), "{c:?}");
        assert!(c.warnings.iter().any(|x| x.contains("protects a credential store")), "{c:?}");

        // A built-in protection: unprotect it, flagged by the lint.
        let (_, w) = fs(&p, &params, FsQuery::Write, "/home/u/src/app/.git/hooks/pre-commit", home).unwrap();
        let c = w.change.unwrap();
        assert_eq!(c.toml, "[filesystem]\nunprotect = [\"${WORKSPACE}/.git/hooks\"]", "{c:?}");
        let q = Query::Fs { access: FsQuery::Write, path: "/home/u/src/app/.git/hooks/pre-commit".into() };
        let (v, lints) = try_change(&file, &c.toml, &params, &q).unwrap();
        assert_eq!(v, Verdict::Allow);
        assert!(lints.iter().any(|l| l.starts_with("aegis::lint::unprotected")), "{lints:?}");

        // A syscall change is checked on the changed policy's seccomp program.
        let ptrace = syscall(&p, "ptrace", &[16, 1, 0, 0, 0, 0]).change.unwrap();
        let arch = aegis_targets::seccomp::Arch::X86_64;
        let (runs, lints) = try_syscall_change(&file, &ptrace.toml, arch, "ptrace", [16, 1, 0, 0, 0, 0]).unwrap();
        assert!(runs, "allowing ptrace lets it run");
        assert!(lints.iter().any(|l| l.starts_with("aegis::lint::dangerous_syscall")), "{lints:?}");

        // Network: mode none needs a network first.
        let (_, w) = net(&p, &params, "pypi.org", 443, Protocol::Tcp, false).unwrap();
        assert!(w.change.unwrap().toml.contains("mode = \"proxy\""));
        // A root-equivalent socket is flagged.
        let (_, w) = unix(&p, &params, "/run/docker.sock").unwrap();
        assert!(w.change.unwrap().warnings.iter().any(|x| x.contains("hands the agent the host")));
    }
}
