//! The reference evaluator: the oracle every target is tested against.
//!
//! Input: a [`Policy`], launch parameter values (optional), and a [`Query`].
//! Output: a [`Decision`]: ALLOW or DENY, with the rule that decided it and its source
//! location, or the default-deny reason. Queries that are themselves malformed (a relative
//! path, an unknown API) are a [`QueryError`], not a decision.
//! Unix socket queries are answered from `[network] unix` grants, never from filesystem
//! grants (a filesystem `deny` still beats them).
//! Laws (property-tested): a matching `deny` rule always wins (deny beats allow); with no
//! matching grant the answer is DENY (default deny); the answer never depends on rule order.
//! The evaluator is pure: it never looks at the filesystem or the network. [`host`] is the
//! one exception, kept apart: it resolves paths on the host the agent will run on (what
//! `aegisc check` answers with), then asks the pure evaluator.

pub mod host;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::ir::api::{canonical_request, is_http_method};
use crate::ir::net::{Destination, Protocol, name_matches, parse_host_name};
use crate::ir::path::{PathError, PathPattern};
use crate::ir::*;
use crate::source::Origin;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsQuery {
    Read,
    Write,
    Exec,
}

impl FsQuery {
    pub fn word(self) -> &'static str {
        match self {
            FsQuery::Read => "read",
            FsQuery::Write => "write",
            FsQuery::Exec => "exec",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Fs { access: FsQuery, path: String },
    Net { host: String, port: u16, protocol: Protocol },
    /// `connect`/`sendto` to the pathname unix socket at `path` (as the agent sees it, with
    /// symlinks resolved).
    Unix { path: String },
    ApiScope { api: String, scope: String },
    ApiHttp { api: String, method: String, path: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
        })
    }
}

/// The rule that decided, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleRef {
    /// e.g. "deny pattern", "read grant", "endpoint", "allow rule".
    pub kind: String,
    pub text: String,
    /// `None` for built-in rules.
    pub origin: Option<Origin>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// One sentence: why.
    pub reason: String,
    pub rule: Option<RuleRef>,
    /// Caveats the reader should know (rules that could not be compared, ...).
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryError(pub String);

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Launch parameter values for a query (`--param WORKSPACE=/home/u/repo`).
pub type Params = BTreeMap<String, PathPattern>;

/// Parses `NAME=/abs/path` into a parameter value.
pub fn parse_param(s: &str) -> Result<(String, PathPattern), QueryError> {
    let (name, value) = s.split_once('=').ok_or_else(|| QueryError(format!("`{s}`: expected NAME=/absolute/path")))?;
    let p = PathPattern::parse(value, &|_| false).map_err(|e| QueryError(format!("parameter {name}: {}", path_error_text(value, &e))))?;
    Ok((name.to_string(), p))
}

fn path_error_text(v: &str, e: &PathError) -> String {
    match e {
        PathError::Relative => format!("`{v}` is relative; give an absolute path"),
        PathError::NonNormal { suggestion } => format!("`{v}` is not normalised; write `{suggestion}`"),
        PathError::DotDot => format!("`{v}` contains `..`; give the resolved path"),
        PathError::UnsupportedGlob | PathError::InvalidGlob => format!("`{v}`: a query names one concrete path, not a pattern"),
        PathError::UnknownParameter(n) => format!("`{v}`: parameter `{n}` is not declared by the policy"),
        other => format!("`{v}` is not a valid path ({other:?})"),
    }
}

fn allow(reason: String, rule: RuleRef, notes: Vec<String>) -> Decision {
    Decision { verdict: Verdict::Allow, reason, rule: Some(rule), notes }
}

fn deny(reason: String, rule: Option<RuleRef>, notes: Vec<String>) -> Decision {
    Decision { verdict: Verdict::Deny, reason, rule, notes }
}

pub fn evaluate(policy: &Policy, params: &Params, query: &Query) -> Result<Decision, QueryError> {
    evaluate_for(policy, params, query, None)
}

/// Whether program `exe` is one of `patterns` (parameters resolved): `None` when the grant
/// names no programs (any program may use it).
fn exe_granted(patterns: &[PathPattern], params: &Params, exe: Option<&str>) -> Option<bool> {
    if patterns.is_empty() {
        return None;
    }
    let Some(exe) = exe else { return Some(false) };
    let Ok(q) = PathPattern::parse(exe, &|_| false) else { return Some(false) };
    Some(patterns.iter().any(|p| {
        let rp = resolve(p, params);
        rp.root == q.root && rp.covers(&q)
    }))
}

fn programs(patterns: &[PathPattern]) -> String {
    patterns.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// [`evaluate`] for a request made by program `exe` (the path of its executable; `None`:
/// not known). Grants that name programs (`exe = [...]` on an endpoint or an API) apply
/// only to those programs, so with `exe` unknown they never allow (a note says so), while
/// a deny that names programs applies whenever the program is not known to be outside it.
pub fn evaluate_for(policy: &Policy, params: &Params, query: &Query, exe: Option<&str>) -> Result<Decision, QueryError> {
    for name in params.keys() {
        if !policy.parameters.contains_key(name) {
            return Err(QueryError(format!("the policy declares no parameter `{name}`")));
        }
    }
    match query {
        Query::Fs { access, path } => eval_fs(policy, params, *access, path),
        Query::Net { host, port, protocol } => eval_net(policy, params, host, *port, *protocol, exe),
        Query::Unix { path } => eval_unix(policy, params, path),
        Query::ApiScope { api, scope } => {
            let a = find_api(policy, api)?;
            if let Some(d) = api_program_denial(a, params, exe) {
                return Ok(d);
            }
            Ok(match a.scopes.iter().find(|s| s.name == *scope) {
                Some(s) => allow(
                    format!("api '{api}' grants scope '{scope}'"),
                    RuleRef { kind: "scope".into(), text: s.name.clone(), origin: s.origin },
                    vec![],
                ),
                None => deny(format!("api '{api}' does not grant scope '{scope}' (default deny)"), None, vec![]),
            })
        }
        Query::ApiHttp { api, method, path } => {
            let a = find_api(policy, api)?;
            if let Some(d) = api_program_denial(a, params, exe) {
                return Ok(d);
            }
            if !is_http_method(method) {
                return Err(QueryError(format!("`{method}` is not an HTTP method (upper case, e.g. GET)")));
            }
            let request = match canonical_request(method, path) {
                Ok(r) => r,
                Err(why) => return Ok(deny(format!("{method} {path} is refused: {why}"), None, vec![])),
            };
            let segments = &request.segments;
            let entry = |kind: &str, e: &HttpRuleEntry| RuleRef { kind: kind.into(), text: e.rule.to_string(), origin: e.origin };
            if let Some(d) = a.deny.iter().find(|e| e.rule.denies(method, segments)) {
                return Ok(deny(format!("{method} {path} matches deny rule '{}' of api '{api}'", d.rule), Some(entry("deny rule", d)), vec![]));
            }
            if let Some(g) = a.allow.iter().find(|e| e.rule.matches(method, segments)) {
                return Ok(allow(format!("{method} {path} matches allow rule '{}' of api '{api}'", g.rule), entry("allow rule", g), vec![]));
            }
            Ok(deny(format!("no allow rule of api '{api}' matches {method} {path} (default deny)"), None, vec![]))
        }
    }
}

/// DENY when the API names programs and `exe` is not one of them.
fn api_program_denial(a: &Api, params: &Params, exe: Option<&str>) -> Option<Decision> {
    match (exe_granted(&a.exe, params, exe), exe) {
        (Some(false), Some(e)) => Some(deny(format!("api '{}' is for {} only, not {e}", a.name, programs(&a.exe)), None, vec![])),
        (Some(false), None) => Some(deny(
            format!("api '{}' is for {} only, and the requesting program is not known", a.name, programs(&a.exe)),
            None,
            vec!["pass --exe PATH to ask for one program".into()],
        )),
        _ => None,
    }
}

fn find_api<'p>(policy: &'p Policy, name: &str) -> Result<&'p Api, QueryError> {
    policy.apis.get(name).ok_or_else(|| {
        let known: Vec<&str> = policy.apis.keys().map(String::as_str).collect();
        QueryError(if known.is_empty() {
            format!("the policy declares no APIs (asked for '{name}')")
        } else {
            format!("no api '{name}' in the policy; declared: {}", known.join(", "))
        })
    })
}

/// Brings a pattern to the root a comparison needs: parameters with values become absolute.
fn resolve(p: &PathPattern, params: &Params) -> PathPattern {
    p.instantiate(&|n| params.get(n).cloned()).unwrap_or_else(|| p.clone())
}

fn rule_ref(r: &FsRule) -> RuleRef {
    let kind = match r.access {
        FsAccess::Deny => "deny pattern".to_string(),
        a => format!("{} grant", a.word()),
    };
    let text = match (r.origin, r.protection) {
        (Some(_), _) => r.path.to_string(),
        (None, true) => format!("{} (built-in protection: {})", r.path, r.note),
        (None, false) => format!("{} (built-in: {})", r.path, r.note),
    };
    RuleRef { kind, text, origin: r.origin }
}

/// Which rules grant a query of this access.
fn grants(access: FsQuery, rule: FsAccess) -> bool {
    matches!(
        (access, rule),
        (FsQuery::Read, FsAccess::Read | FsAccess::Write | FsAccess::Exec)
            | (FsQuery::Write, FsAccess::Write)
            | (FsQuery::Exec, FsAccess::Exec)
    )
}

/// The rules that match a filesystem query, gathered in one pass over the policy.
struct FsMatches<'p> {
    /// The most specific matching deny, grant of the asked access, and (for writes) read rule,
    /// each with the depth of its resolved path.
    deny: Option<(&'p FsRule, usize)>,
    grant: Option<(&'p FsRule, usize)>,
    read: Option<(&'p FsRule, usize)>,
    /// Parameters of rules whose root could not be compared with the query's.
    unresolved_denies: std::collections::BTreeSet<String>,
    unresolved_grants: std::collections::BTreeSet<String>,
    /// The query lies inside a parameter bound under the host's /tmp.
    in_param_under_tmp: bool,
}

fn eval_fs(policy: &Policy, params: &Params, access: FsQuery, raw: &str) -> Result<Decision, QueryError> {
    let query = PathPattern::parse(raw, &|n| policy.parameters.contains_key(n)).map_err(|e| QueryError(path_error_text(raw, &e)))?;
    let q = resolve(&query, params);
    let m = fs_matches(policy, params, access, &q);
    let in_param_under_tmp = m.in_param_under_tmp;
    let mut d = m.decide(access, raw);
    d.notes.extend(sandbox_tree_notes(policy, params, &q, in_param_under_tmp));
    Ok(d)
}

fn fs_matches<'p>(policy: &'p Policy, params: &Params, access: FsQuery, q: &PathPattern) -> FsMatches<'p> {
    let mut m = FsMatches {
        deny: None,
        grant: None,
        read: None,
        unresolved_denies: Default::default(),
        unresolved_grants: Default::default(),
        // The sandbox's /tmp is a private tmpfs, but a parameter whose value lies under the
        // host's /tmp is bound over it at launch with the parameter's own access: inside
        // such a parameter its rules decide, and the built-in /tmp grant does not apply.
        in_param_under_tmp: policy.filesystem.rules.iter().any(|r| {
            r.path.param().is_some() && {
                let rp = resolve(&r.path, params);
                rp.param().is_none() && rp.components.first().is_some_and(|c| c == "tmp") && rp.covers(q)
            }
        }),
    };
    for r in &policy.filesystem.rules {
        let is_deny = r.access == FsAccess::Deny;
        // For writes, read rules count too: one deeper than the deciding write grant makes
        // the path read-only (a carve-out).
        let carve_out = access == FsQuery::Write && r.access == FsAccess::Read;
        if !is_deny && !carve_out && !grants(access, r.access) {
            continue;
        }
        if m.in_param_under_tmp && r.origin.is_none() && r.path.components.len() == 1 && r.path.components.first().is_some_and(|c| c == "tmp") && r.path.param().is_none() {
            continue;
        }
        let rp = resolve(&r.path, params);
        if rp.root != q.root {
            // An absolute read rule cannot be deeper than a parameter-rooted write grant
            // unless the parameter is `/` or above it: not worth a note on every answer.
            if carve_out && rp.param().is_none() {
                continue;
            }
            let missing = if is_deny || carve_out { &mut m.unresolved_denies } else { &mut m.unresolved_grants };
            missing.extend(rp.param().into_iter().chain(q.param()).map(str::to_string));
            continue;
        }
        if !rp.covers(q) {
            continue;
        }
        // Specificity is measured on the resolved pattern: with WORKSPACE=/home/u/repo,
        // `${WORKSPACE}` is more specific than `/home`. Ties go to the first in IR order.
        let slot = if is_deny {
            &mut m.deny
        } else if carve_out {
            &mut m.read
        } else {
            &mut m.grant
        };
        let depth = rp.components.len();
        if slot.is_none_or(|(_, d)| depth > d) {
            *slot = Some((r, depth));
        }
    }
    m
}

impl FsMatches<'_> {
    fn decide(self, access: FsQuery, raw: &str) -> Decision {
        let note = |set: std::collections::BTreeSet<String>, what: &str| -> Vec<String> {
            if set.is_empty() {
                return vec![];
            }
            let names: Vec<String> = set.iter().map(|p| format!("${{{p}}}")).collect();
            let flags: Vec<String> = set.iter().map(|p| format!("--param {p}=/path")).collect();
            vec![format!("{what} involving {} could not be compared with '{raw}'; pass {} to include them", names.join(", "), flags.join(" "))]
        };
        if let Some((d, _)) = self.deny {
            let reason = format!("path '{raw}' matches deny pattern '{}'", d.path);
            return deny(reason, Some(rule_ref(d)), vec![]);
        }
        if let Some((g, grant_depth)) = self.grant {
            // A read rule deeper than the deciding write grant: the path is read-only.
            if let Some((r, _)) = self.read.filter(|(_, d)| *d > grant_depth) {
                let reason = if r.protection {
                    format!(
                        "path '{raw}' is read-only: built-in protection '{}' inside write grant '{}' ({}); to let the agent write it: [filesystem] unprotect = [\"{}\"]",
                        r.path, g.path, r.note, r.path
                    )
                } else {
                    format!("path '{raw}' is read-only: read grant '{}' inside write grant '{}' (the most specific rule decides)", r.path, g.path)
                };
                let kind = if r.protection { "built-in protection" } else { "read-only carve-out" };
                return deny(reason, Some(RuleRef { kind: kind.into(), ..rule_ref(r) }), vec![]);
            }
            let what = if access == FsQuery::Write { "deny and read-only rules" } else { "deny rules" };
            let reason = format!("path '{raw}' is covered by {} grant '{}'", g.access.word(), g.path);
            return allow(reason, rule_ref(g), note(self.unresolved_denies, what));
        }
        let mut notes = note(self.unresolved_grants, &format!("{} grants", access.word()));
        if self.in_param_under_tmp {
            notes.push("the built-in /tmp grant does not reach inside a parameter whose value lies under /tmp: the parameter is bound over the private /tmp with its own access".into());
        }
        deny(format!("no {} grant covers '{raw}' (default deny)", access.word()), None, notes)
    }
}

/// The sandbox replaces `/tmp`, `/dev` and `/proc` with its own: an answer about a path
/// there is about the sandbox's, which the note says (the kernel's view, not the host's).
fn sandbox_tree_notes(policy: &Policy, params: &Params, q: &PathPattern, in_param_under_tmp: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if q.param().is_some() {
        return notes;
    }
    match (q.components.first().map(String::as_str), q.components.get(1).map(String::as_str)) {
        (Some("tmp"), _) if !in_param_under_tmp => {
            notes.push(format!(
                "in the sandbox /tmp is a private tmpfs of {} discarded at exit, not the host's /tmp",
                crate::ir::units::format_size(policy.filesystem.tmp_size)
            ));
            // Directories the runtime creates on the way to a parameter bound under /tmp.
            for r in policy.filesystem.rules.iter().filter(|r| r.path.param().is_some()) {
                let p = resolve(&r.path, params);
                if p.param().is_some() || p.components.first().is_none_or(|c| c != "tmp") || p.covers(q) {
                    continue;
                }
                let on_the_way = (2..p.components.len())
                    .map(|n| PathPattern { root: p.root.clone(), components: p.components.iter().take(n).cloned().collect() })
                    .find(|a| a.covers(q));
                if let Some(a) = on_the_way {
                    notes.push(format!(
                        "the runtime creates '{a}' to bind '{}' ('{p}') there: when aegis-exec runs as root it belongs to root (mode 0755), and the agent cannot create entries in it",
                        r.path
                    ));
                    break;
                }
            }
        }
        (Some("dev"), Some(node @ ("shm" | "pts" | "ptmx"))) => notes.push(format!(
            "/dev/{node} is the sandbox's own ({}), not the host's",
            if node == "shm" { "a private tmpfs: nothing is shared with host processes" } else { "a private pseudo-terminal instance" }
        )),
        (Some("dev"), Some("null" | "zero" | "full" | "random" | "urandom" | "tty" | "fd" | "stdin" | "stdout" | "stderr") | None) => {}
        (Some("dev"), Some(other)) => notes.push(format!(
            "the sandbox's /dev holds only null, zero, full, random, urandom, tty, pts, ptmx, shm and fd: /dev/{other} does not exist there"
        )),
        (Some("proc"), _) => notes.push("/proc in the sandbox is the agent's own procfs: it shows only the sandbox's processes".into()),
        _ => {}
    }
    notes
}

enum NetTarget {
    Ip(IpAddr),
    Name(String),
}

fn endpoint_ref(e: &Endpoint) -> RuleRef {
    let kind = match &e.source {
        EndpointSource::Network => "endpoint".to_string(),
        EndpointSource::Api(a) => format!("endpoint of api '{a}'"),
    };
    RuleRef { kind, text: e.to_string(), origin: e.origin }
}

fn eval_net(policy: &Policy, params: &Params, host: &str, port: u16, protocol: Protocol, exe: Option<&str>) -> Result<Decision, QueryError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let target = match bare.parse::<IpAddr>() {
        // `::ffff:a.b.c.d` reaches the IPv4 host a.b.c.d: judge it as that address.
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            NetTarget::Ip(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
        }
        Ok(ip) => NetTarget::Ip(ip),
        Err(_) => match parse_host_name(bare) {
            Ok(Destination::Name(n)) => NetTarget::Name(n),
            Ok(_) => return Err(QueryError(format!("`{host}`: a query names one host, not a wildcard"))),
            Err(why) => return Err(QueryError(format!("`{host}` is neither an IP address nor a host name: {why}"))),
        },
    };
    if port == 0 {
        return Err(QueryError("port 0 is not a destination port".into()));
    }
    let net = &policy.network;
    if net.mode == NetworkMode::None {
        return Ok(deny(
            "network mode is 'none': the agent has only its own loopback interface".into(),
            None,
            vec![],
        ));
    }
    let mut notes = Vec::new();
    let mut skipped = false;
    let matches = |e: &Endpoint, skipped: &mut bool| -> bool {
        if e.protocol != protocol || !e.ports.iter().any(|r| r.contains(port)) {
            return false;
        }
        match (&target, &e.destination) {
            (NetTarget::Ip(ip), Destination::Network(c)) => c.contains(*ip),
            (NetTarget::Name(n), d @ (Destination::Name(_) | Destination::Wildcard(_))) => name_matches(d, n),
            _ => {
                *skipped = true;
                false
            }
        }
    };
    // A deny for some programs applies unless the program is known to be another one.
    let deny_applies = |e: &Endpoint| exe_granted(&e.exe, params, exe) != Some(false) || exe.is_none();
    if let Some(d) = net.deny.iter().find(|e| matches(e, &mut skipped) && deny_applies(e)) {
        return Ok(deny(format!("{host}:{port}/{protocol} matches denied endpoint '{d}'"), Some(endpoint_ref(d)), notes));
    }
    // In host mode the agent may query the declared resolvers on port 53 (UDP and TCP),
    // as the nftables target allows; they are grants like endpoints (a deny still wins).
    if net.mode == NetworkMode::Host
        && port == 53
        && let NetTarget::Ip(ip) = &target
        && let Some(r) = net.dns.iter().find(|r| r.address == *ip)
    {
        return Ok(allow(
            format!("{host}:{port}/{protocol} is the DNS resolver '{}'", r.address),
            RuleRef { kind: "dns resolver".into(), text: r.address.to_string(), origin: r.origin },
            notes,
        ));
    }
    // A grant for some programs applies only to them.
    let mut other_programs: Vec<&Endpoint> = Vec::new();
    let found = net.allow.iter().find(|e| {
        if !matches(e, &mut skipped) {
            return false;
        }
        if exe_granted(&e.exe, params, exe) == Some(false) {
            other_programs.push(e);
            return false;
        }
        true
    });
    if skipped {
        notes.push(match target {
            NetTarget::Ip(_) => "endpoints given by host name are resolved at launch and were not compared with an IP address".into(),
            NetTarget::Name(_) => "endpoints given as IP networks were not compared with a host name (its addresses are known only at launch)".into(),
        });
    }
    if let Some(a) = found {
        let how = match net.mode {
            NetworkMode::Proxy => " (through the AEGIS proxy)",
            _ => "",
        };
        return Ok(allow(format!("{host}:{port}/{protocol} matches allowed endpoint '{a}'{how}"), endpoint_ref(a), notes));
    }
    if !other_programs.is_empty() {
        let list: Vec<String> = other_programs.iter().map(ToString::to_string).collect();
        let who = match exe {
            Some(e) => format!("not {e}"),
            None => "and the requesting program is not known".into(),
        };
        if exe.is_none() {
            notes.push("pass --exe PATH to ask for one program".into());
        }
        return Ok(deny(format!("{host}:{port}/{protocol} is allowed only to other programs ({}), {who}", list.join("; ")), None, notes));
    }
    Ok(deny(format!("no allowed endpoint matches {host}:{port}/{protocol} (default deny)"), None, notes))
}

/// The most specific pattern of `patterns` that covers `q` (ties: the first), after
/// parameters are resolved; parameters that leave a pattern incomparable with `q` are
/// added to `unresolved`.
fn most_specific<'r, T>(
    items: impl Iterator<Item = &'r T>,
    path_of: impl Fn(&T) -> &PathPattern,
    q: &PathPattern,
    params: &Params,
    unresolved: &mut std::collections::BTreeSet<String>,
) -> Option<&'r T> {
    let mut best: Option<(&T, usize)> = None;
    for item in items {
        let rp = resolve(path_of(item), params);
        if rp.root != q.root {
            unresolved.extend(rp.param().into_iter().chain(q.param()).map(str::to_string));
            continue;
        }
        if rp.covers(q) && best.is_none_or(|(_, d)| rp.components.len() > d) {
            best = Some((item, rp.components.len()));
        }
    }
    best.map(|(item, _)| item)
}

/// A note naming the parameters whose rules could not be compared with the query.
fn unresolved_note(set: &std::collections::BTreeSet<String>, what: &str, raw: &str) -> Vec<String> {
    if set.is_empty() {
        return vec![];
    }
    let names: Vec<String> = set.iter().map(|p| format!("${{{p}}}")).collect();
    let flags: Vec<String> = set.iter().map(|p| format!("--param {p}=/path")).collect();
    vec![format!("{what} involving {} could not be compared with '{raw}'; pass {} to include them", names.join(", "), flags.join(" "))]
}

fn eval_unix(policy: &Policy, params: &Params, raw: &str) -> Result<Decision, QueryError> {
    let query = PathPattern::parse(raw, &|n| policy.parameters.contains_key(n)).map_err(|e| QueryError(path_error_text(raw, &e)))?;
    let q = resolve(&query, params);
    let fs = &policy.filesystem.rules;
    let (mut unresolved_denies, mut unresolved_grants) = Default::default();
    let denied = most_specific(fs.iter().filter(|r| r.access == FsAccess::Deny), |r| &r.path, &q, params, &mut unresolved_denies);
    if let Some(d) = denied {
        return Ok(deny(format!("socket path '{raw}' matches deny pattern '{}'", d.path), Some(rule_ref(d)), vec![]));
    }
    let grant = most_specific(policy.network.unix.iter(), |g| &g.path, &q, params, &mut unresolved_grants);
    let mut ignored = Default::default();
    let visible = most_specific(fs.iter().filter(|r| r.access != FsAccess::Deny), |r| &r.path, &q, params, &mut ignored);
    if let Some(g) = grant {
        let mut notes = unresolved_note(&unresolved_denies, "deny rules", raw);
        if visible.is_none() {
            notes.push(format!(
                "no filesystem grant covers '{raw}': in the sandbox's own mount namespace there is no socket there to connect to; add its directory to [filesystem] read"
            ));
        }
        let text = if g.origin.is_none() { format!("{} (built-in: {})", g.path, g.note) } else { g.path.to_string() };
        if g.origin.is_none() {
            notes.push("the private /tmp is a tmpfs of the sandbox; where it cannot be (no mount namespace), /tmp is not a unix grant".into());
        }
        let rule = RuleRef { kind: "unix socket grant".into(), text, origin: g.origin };
        let reason = if g.origin.is_none() {
            format!("socket path '{raw}' is covered by built-in unix grant '{}' ({})", g.path, g.note)
        } else {
            format!("socket path '{raw}' is covered by unix grant '{}'", g.path)
        };
        return Ok(allow(reason, rule, notes));
    }
    let mut notes = unresolved_note(&unresolved_grants, "unix grants", raw);
    if let Some(v) = visible {
        notes.push(format!(
            "{} grant '{}' makes the path visible, but a filesystem grant never allows connecting to a socket; add it to [network] unix",
            v.access.word(),
            v.path
        ));
    }
    Ok(deny(format!("no [network] unix grant covers socket path '{raw}' (default deny)"), None, notes))
}
