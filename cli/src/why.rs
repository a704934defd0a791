//! `aegis why [SEQ] [--run] [--log LOG] [--policy FILE] [--param N=V]...`: explain the
//! denials of a run recorded in an audit log.
//!
//! Input: an audit log (default `$AEGIS_DIR/audit.log`, where `aegis run` writes), a record
//! number or a run (default: the last run in the log), and the policy (default: the run's own
//! local policy file, or `--policy FILE`). Output, per distinct denial: what was tried and
//! what the agent got, which rule decided and where it is written (`file:line:column`), and
//! the smallest change to the policy that would allow it, checked by compiling the policy
//! with the change and asking again (the evaluator, or the seccomp program for a system
//! call), with the lints the change would add and whether it widens towards credential
//! stores. Invariants: the verdicts are the reference evaluator's (`aegisc check` agrees);
//! a policy whose meaning differs from the run's (its IR digest is not the record's) is used
//! only with a warning; the log is read, never verified (`aegis-audit verify` does that);
//! nothing is changed. Exit codes: 0 explained (also: nothing to explain), 2 invalid input
//! (no log, no such record or run, no policy), 3 internal error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aegis_audit::{Access, Event, Record, Verdict as AuditVerdict};
use aegis_compiler::cli::{Exit, Format, print_json};
use aegis_policy::eval::{FsQuery, Params, Query};
use aegis_compiler::explain::{self, Why};
use aegis_policy::ir::{Policy, Protocol};
use aegis_policy::source::SourceMap;
use aegis_targets::seccomp::Arch;

use crate::shield;

#[derive(Debug, clap::Args)]
pub struct WhyArgs {
    /// A record's number (`SEQ` in `aegis-audit show`): explain that denial; with --run, every
    /// denial of the run it belongs to. Default: every denial of the last run in the log.
    #[arg(value_name = "SEQ")]
    pub seq: Option<u64>,
    /// Explain every denial of the run record SEQ belongs to.
    #[arg(long)]
    pub run: bool,
    /// The audit log [default: $AEGIS_DIR/audit.log].
    #[arg(long, value_name = "LOG")]
    pub log: Option<PathBuf>,
    /// The policy to explain against [default: the run's local policy file].
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// A launch parameter (default: the values the run recorded).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// One run of a log: its records, and what it says about itself.
#[derive(Default)]
struct Run {
    agent: String,
    bundle: String,
    policy_digest: String,
    /// `aegis run`'s local policy file (path, sha256 of the text compiled).
    local_policy: Option<(PathBuf, String)>,
    /// A bundle directory (`aegis-exec`).
    bundle_dir: Option<PathBuf>,
    params: BTreeMap<String, String>,
    uid: Option<u32>,
    records: Vec<Record>,
}

fn starts_run(e: &Event) -> bool {
    matches!(e, Event::BundleVerified { .. } | Event::UnsignedBundleAllowed { .. } | Event::BundleRefused { .. })
}

/// The runs of a log, in order. A record belongs to the latest run of the same agent and
/// bundle (runs of different agents may interleave in one log).
fn runs(records: Vec<Record>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for r in records {
        if starts_run(&r.event) {
            runs.push(Run { agent: r.agent.clone(), bundle: r.bundle.clone(), policy_digest: r.policy.clone(), ..Run::default() });
        }
        let Some(run) = runs.iter_mut().rev().find(|x| x.agent == r.agent && x.bundle == r.bundle) else { continue };
        match &r.event {
            Event::UnsignedBundleAllowed { reason, .. } => {
                if let Some(rest) = reason.strip_prefix("local policy ")
                    && let Some((path, tail)) = rest.rsplit_once(" (sha256 ")
                {
                    let sha = tail.split(')').next().unwrap_or_default();
                    run.local_policy = Some((PathBuf::from(path), sha.to_string()));
                }
            }
            Event::BundleVerified { path, .. } => run.bundle_dir = Some(PathBuf::from(path)),
            Event::Note { message, .. } => {
                if let Some(json) = message.strip_prefix(aegis_runtime::launch::PARAMS_NOTE) {
                    run.params = serde_json::from_str(json).unwrap_or_default();
                }
            }
            Event::AgentStarted { identity: Some(id), .. } => run.uid = Some(id.uid),
            _ => {}
        }
        run.records.push(r);
    }
    runs
}

/// The denial a record stands for, unwrapped from `repeated`, with its count.
fn denial(e: &Event) -> Option<(&Event, u64)> {
    match e {
        Event::Repeated { count, event } => denial(event).map(|(e, n)| (e, n.saturating_mul(*count))),
        Event::Denial { count, .. } | Event::KernelDenial { count, .. } => Some((e, *count)),
        Event::Decision { decision: AuditVerdict::Deny, component, .. } if component == "supervisor" => Some((e, 1)),
        Event::ProxyRequest { decision: AuditVerdict::Deny, mode, .. } if mode != "decision" => Some((e, 1)),
        _ => None,
    }
}

/// What to ask about a denial.
enum Ask {
    Fs(FsQuery, String),
    Net { host: String, port: u16, protocol: Protocol, bypassed_proxy: bool },
    Unix(String),
    Api { api: String, method: String, path: String },
    Syscall { name: String, args: [u64; 6] },
    /// Nothing the policy can change (the reason says why).
    Fixed(String),
}

fn fs_query(op: &str) -> FsQuery {
    match op {
        "write" | "create" | "remove" | "rename" => FsQuery::Write,
        "exec" => FsQuery::Exec,
        _ => FsQuery::Read,
    }
}

/// `ADDR:PORT/PROTO` after `to ` in an nftables denial line.
fn nft_destination(detail: &str) -> Option<(String, u16, Protocol)> {
    let rest = detail.split(" to ").nth(1)?;
    let dest = rest.split_whitespace().next()?;
    let (hp, proto) = dest.rsplit_once('/')?;
    let (host, port) = hp.rsplit_once(':')?;
    let protocol = if proto == "udp" { Protocol::Udp } else { Protocol::Tcp };
    Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?, protocol))
}

/// The value of `key=` in a kernel audit line (quotes removed).
fn audit_field(detail: &str, key: &str) -> Option<String> {
    let at = detail.find(&format!("{key}="))? + key.len() + 1;
    let v = detail.get(at..)?.split(' ').next()?;
    Some(v.trim_matches('"').to_string())
}

fn ask(policy: &Policy, e: &Event) -> Option<Ask> {
    Some(match e {
        Event::Denial { access, .. } => match access {
            Access::Syscall { name, args, .. } => {
                let mut a = [0u64; 6];
                for (slot, v) in a.iter_mut().zip(args) {
                    *slot = *v;
                }
                Ask::Syscall { name: name.clone(), args: a }
            }
            Access::File { op, path } => Ask::Fs(fs_query(op), path.clone()),
            Access::Connect { address, port, protocol } => {
                Ask::Net { host: address.clone(), port: *port, protocol: if protocol == "udp" { Protocol::Udp } else { Protocol::Tcp }, bypassed_proxy: false }
            }
            Access::Unix { path } => Ask::Unix(path.clone()),
        },
        Event::Decision { subject, target, reason, .. } => match subject.as_str() {
            "unix" if target.starts_with('/') => Ask::Unix(target.clone()),
            "exec" if target.starts_with('/') => Ask::Fs(FsQuery::Exec, target.clone()),
            _ => Ask::Fixed(reason.clone()),
        },
        Event::ProxyRequest { host, port, method, path, .. } => {
            let api = policy.apis.values().find(|a| a.host.eq_ignore_ascii_case(host) && a.port == *port);
            match (api, method, path) {
                (Some(a), Some(m), Some(p)) => Ask::Api { api: a.name.clone(), method: m.clone(), path: p.clone() },
                _ => Ask::Net { host: host.clone(), port: *port, protocol: Protocol::Tcp, bypassed_proxy: false },
            }
        }
        Event::KernelDenial { layer, detail, .. } => match layer.as_str() {
            "nftables" => {
                let (host, port, protocol) = nft_destination(detail)?;
                Ask::Net { host, port, protocol, bypassed_proxy: detail.contains("outside the proxy") }
            }
            "landlock" => {
                let path = audit_field(detail, "path")?;
                let blockers = audit_field(detail, "blockers").unwrap_or_default();
                let op = if blockers.contains("execute") {
                    "exec"
                } else if blockers.contains("read") {
                    "read"
                } else {
                    "write"
                };
                Ask::Fs(fs_query(op), path)
            }
            "seccomp" => {
                let nr: u32 = audit_field(detail, "syscall")?.parse().ok()?;
                let name = Arch::native()?.syscall_name(nr)?;
                Ask::Syscall { name: name.to_string(), args: [0; 6] }
            }
            _ => return None,
        },
        _ => return None,
    })
}

/// One explained denial.
struct Explained {
    seqs: Vec<u64>,
    what: String,
    count: u64,
    why: Result<Why, String>,
    /// With the change applied: does it run now? And the lints it adds.
    checked: Option<Result<(bool, Vec<String>), String>>,
}

fn what_of(e: &Event) -> String {
    match e {
        Event::Denial { layer, target, result, source, .. } => {
            let how = if source == "explanation" { " (explanation)" } else { "" };
            format!("{layer}: {target} = {result}{how}")
        }
        Event::KernelDenial { layer, detail, .. } => format!("{layer}: {detail}"),
        Event::Decision { subject, target, .. } => format!("{subject}: {target}"),
        Event::ProxyRequest { mode, host, port, method, path, reason, .. } => match (method, path) {
            (Some(m), Some(p)) => format!("proxy {mode}: {m} {host}:{port}{p} ({reason})"),
            _ => format!("proxy {mode}: {host}:{port} ({reason})"),
        },
        other => other.kind().to_string(),
    }
}

/// The policy of the run: compiled from a file (with its sources, so rules have a
/// location), or the bundle's typed IR; and a warning when it is not the one that ran.
struct Loaded {
    policy: Policy,
    sources: Option<SourceMap>,
    path: Option<PathBuf>,
    warning: Option<String>,
}

fn load_policy(args: &WhyArgs, run: &Run, log: &Path) -> Result<Loaded, String> {
    let file = args.policy.clone().or_else(|| run.local_policy.as_ref().map(|(p, _)| p.clone()));
    if let Some(path) = file {
        let c = aegis_compiler::compile_file(&path).map_err(|f| {
            let first = f.diagnostics.iter().find(|d| d.is_error()).map(|d| d.message.clone()).unwrap_or_default();
            format!("{} does not compile ({first}); `aegis validate {}` says why", path.display(), path.display())
        })?;
        let bare = |d: &str| d.trim_start_matches("sha256:").to_string();
        let used = |p: &Policy| run.policy_digest.is_empty() || bare(&p.digest()) == bare(&run.policy_digest);
        let mut policy = c.policy.into_inner();
        if !used(&policy) {
            // `aegis run` adds rules that keep the policy's files and the audit state from
            // the agent (crate::shield): the run's policy is the file's with them.
            let mut shielded = policy.clone();
            let flags: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let state = aegis_daemon::local::dir().map(|d| shield::real(&d));
            let log = shield::real(log);
            let guarded = shield::Guarded {
                sources: c.sources.files().map(|(_, f)| f.path.clone()).filter(|p| p.is_absolute()).collect(),
                audit: state.iter().chain([&log]).map(PathBuf::as_path).collect(),
            };
            if shield::params(&shielded, &flags).and_then(|p| shield::apply(&mut shielded, &p, &guarded)).is_ok() && used(&shielded) {
                policy = shielded;
            }
        }
        let warning = (!used(&policy)).then(|| {
            format!("{} is not the policy this run used (its meaning changed since): the answers are about the file as it is now", path.display())
        });
        return Ok(Loaded { policy, sources: Some(c.sources), path: Some(path), warning });
    }
    if let Some(dir) = &run.bundle_dir {
        let ir = dir.join(aegis_targets::bundle::contract::POLICY_IR);
        let text = std::fs::read_to_string(&ir).map_err(|e| format!("cannot read {}: {e} (give --policy FILE)", ir.display()))?;
        let policy = aegis_policy::ir::Checked::from_json(text.as_bytes()).map_err(|e| format!("{}: {e}", ir.display()))?.into_inner();
        return Ok(Loaded {
            policy,
            sources: None,
            path: None,
            warning: Some(format!("explained from the bundle's {} (no source text: rules have no line numbers; give --policy FILE for them)", ir.display())),
        });
    }
    Err("the run names no policy file or bundle: give --policy FILE".into())
}

fn location(l: &Loaded, origin: Option<aegis_policy::source::Origin>) -> Option<String> {
    let o = origin?;
    match &l.sources {
        Some(s) => Some(s.locate(o).to_string()),
        None => l.policy.sources.first().map(|f| format!("{f} (no line: bundle IR)")),
    }
}

/// A change's check: whether it allows the request, and the lints it adds.
type Checked = Result<(bool, Vec<String>), String>;

fn explain_one(l: &Loaded, params: &Params, home: Option<&str>, a: &Ask) -> (Result<Why, String>, Option<Checked>) {
    let p = &l.policy;
    let why = match a {
        Ask::Fs(q, path) => explain::fs(p, params, *q, path, home).map(|x| x.1),
        Ask::Net { host, port, protocol, bypassed_proxy } => explain::net(p, params, host, *port, *protocol, *bypassed_proxy).map(|x| x.1),
        Ask::Unix(path) => explain::unix(p, params, path).map(|x| x.1),
        Ask::Api { api, method, path } => explain::api(p, params, api, method, path).map(|x| x.1),
        Ask::Syscall { name, args } => Ok(explain::syscall(p, name, args)),
        Ask::Fixed(reason) => Ok(Why { rule: None, reason: reason.clone(), change: None }),
    };
    let checked = match (&why, &l.path) {
        (Ok(Why { change: Some(c), .. }), Some(path)) if !c.toml.is_empty() && !c.toml.contains("HOST:") => Some(match a {
            Ask::Syscall { name, args } => match Arch::native() {
                Some(arch) => explain::try_syscall_change(path, &c.toml, arch, name, *args),
                None => Err("this architecture has no seccomp tables".into()),
            },
            other => match query_of(other) {
                Some(q) => explain::try_change(path, &c.toml, params, &q).map(|(v, lints)| (v == aegis_policy::eval::Verdict::Allow, lints)),
                None => return (why, None),
            },
        }),
        _ => None,
    };
    (why, checked)
}

fn query_of(a: &Ask) -> Option<Query> {
    Some(match a {
        Ask::Fs(q, path) => Query::Fs { access: *q, path: path.clone() },
        Ask::Net { host, port, protocol, .. } => Query::Net { host: host.clone(), port: *port, protocol: *protocol },
        Ask::Unix(path) => Query::Unix { path: path.clone() },
        Ask::Api { api, method, path } => Query::ApiHttp { api: api.clone(), method: method.clone(), path: path.clone() },
        Ask::Syscall { .. } | Ask::Fixed(_) => return None,
    })
}

fn read_log(path: &Path) -> Result<(Vec<Record>, usize), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut bad = 0;
    let mut records = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match Record::parse(line) {
            Ok(r) => records.push(r),
            Err(_) => bad += 1,
        }
    }
    Ok((records, bad))
}

pub fn run(args: WhyArgs, format: Format) -> Exit {
    let invalid = |why: String| {
        eprintln!("aegis why: {why}");
        Exit::Invalid
    };
    let log = match args.log.clone().or_else(|| aegis_daemon::local::dir().map(|d| d.join(aegis_daemon::local::AUDIT_FILE))) {
        Some(l) => l,
        None => return invalid("no --log given and no AEGIS_DIR, XDG_STATE_HOME or HOME for the default".into()),
    };
    let (records, bad) = match read_log(&log) {
        Ok(r) => r,
        Err(e) => return invalid(e),
    };
    if bad > 0 {
        eprintln!("aegis why: {bad} line(s) of {} are not records and were skipped (`aegis-audit verify` checks the log)", log.display());
    }
    let runs = runs(records);
    let Some(run) = (match args.seq {
        Some(seq) => runs.iter().find(|r| r.records.iter().any(|x| x.seq == seq)),
        None => runs.last(),
    }) else {
        return invalid(match args.seq {
            Some(seq) => format!("no record {seq} in {} belongs to a run", log.display()),
            None => format!("{} holds no run", log.display()),
        });
    };
    // The records to explain, grouped by what was tried (repeats add up).
    let chosen: Vec<&Record> = match (args.seq, args.run) {
        (Some(seq), false) => run.records.iter().filter(|r| r.seq == seq).collect(),
        _ => run.records.iter().collect(),
    };
    let mut groups: Vec<(String, &Event, Vec<u64>, u64)> = Vec::new();
    for r in chosen {
        let Some((e, n)) = denial(&r.event) else { continue };
        let what = what_of(e);
        match groups.iter_mut().find(|g| g.0 == what) {
            Some(g) => {
                g.2.push(r.seq);
                g.3 += n;
            }
            None => groups.push((what, e, vec![r.seq], n)),
        }
    }
    if let (Some(seq), false, true) = (args.seq, args.run, groups.is_empty()) {
        return invalid(format!("record {seq} is not a denial (try --run to explain the run it belongs to)"));
    }
    let loaded = match load_policy(&args, run, &log) {
        Ok(l) => l,
        Err(e) => return invalid(e),
    };
    let mut params = Params::new();
    for (k, v) in &run.params {
        if let Ok((name, value)) = aegis_policy::eval::parse_param(&format!("{k}={v}")) {
            params.insert(name, value);
        }
    }
    for p in &args.params {
        match aegis_policy::eval::parse_param(p) {
            Ok((k, v)) => {
                params.insert(k, v);
            }
            Err(e) => return invalid(e.to_string()),
        }
    }
    // Parameters the policy does not declare (an older policy) would make every query fail.
    params.retain(|k, _| loaded.policy.parameters.contains_key(k));
    let home = params
        .get("HOME")
        .map(ToString::to_string)
        .or_else(|| run.uid.and_then(aegis_runtime::identity::home_of).map(|h| h.display().to_string()));
    let explained: Vec<Explained> = groups
        .into_iter()
        .map(|(what, e, seqs, count)| {
            let (why, checked) = match ask(&loaded.policy, e) {
                Some(a) => explain_one(&loaded, &params, home.as_deref(), &a),
                None => (Err("this record names nothing the policy could be asked about".to_string()), None),
            };
            Explained { seqs, what, count, why, checked }
        })
        .collect();
    match format {
        Format::Human => print_human(run, &loaded, &explained),
        Format::Json => print_json(&to_json(run, &loaded, &explained)),
    }
    Exit::Ok
}

fn print_human(run: &Run, l: &Loaded, items: &[Explained]) {
    let policy = l.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the bundle's policy".into());
    let first = run.records.first().map(|r| r.seq).unwrap_or(0);
    println!("run of agent {} (records from #{first}), policy {policy}", run.agent);
    if let Some(w) = &l.warning {
        println!("  warning: {w}");
    }
    if items.is_empty() {
        println!("  no denials recorded in this run");
        return;
    }
    for it in items {
        let seqs: Vec<String> = it.seqs.iter().take(5).map(|s| format!("#{s}")).collect();
        let more = if it.seqs.len() > 5 { ", ..." } else { "" };
        let times = if it.count > 1 { format!(" (x{})", it.count) } else { String::new() };
        println!("\n{}{more} {}{times}", seqs.join(", "), it.what);
        match &it.why {
            Err(e) => println!("  cannot explain: {e}"),
            Ok(w) => {
                match &w.rule {
                    Some(r) => {
                        let at = location(l, r.origin).map(|x| format!(" at {x}")).unwrap_or_else(|| " (built in)".into());
                        println!("  decided by: {} '{}'{at}", r.kind, r.text);
                    }
                    None => println!("  decided by: no rule grants it (default deny) or built-in hardening"),
                }
                println!("  why: {}", w.reason);
                match &w.change {
                    None => println!("  no policy change can allow it"),
                    Some(c) => {
                        println!("  smallest change: {}", c.words);
                        for line in c.toml.lines() {
                            println!("      {line}");
                        }
                        for warning in &c.warnings {
                            println!("  WARNING: {warning}");
                        }
                        match &it.checked {
                            Some(Ok((true, lints))) => {
                                println!("  checked: with this change the policy allows it");
                                for lint in lints {
                                    println!("  lint: {lint}");
                                }
                            }
                            Some(Ok((false, _))) => println!("  checked: with this change it is still refused (another rule decides)"),
                            Some(Err(e)) => println!("  not checked: {e}"),
                            None => {}
                        }
                    }
                }
            }
        }
    }
}

#[allow(
    clippy::indexing_slicing,
    reason = "`v[key] = ...` on the JSON objects made just above inserts; it cannot panic"
)]
fn to_json(run: &Run, l: &Loaded, items: &[Explained]) -> serde_json::Value {
    let denials: Vec<serde_json::Value> = items
        .iter()
        .map(|it| {
            let mut v = serde_json::json!({ "records": it.seqs, "what": it.what, "count": it.count });
            match &it.why {
                Err(e) => v["error"] = e.clone().into(),
                Ok(w) => {
                    v["rule"] = match &w.rule {
                        Some(r) => serde_json::json!({ "kind": r.kind, "text": r.text, "location": location(l, r.origin) }),
                        None => serde_json::Value::Null,
                    };
                    v["reason"] = w.reason.clone().into();
                    v["change"] = match &w.change {
                        Some(c) => {
                            let mut cj = serde_json::json!({ "words": c.words, "toml": c.toml, "warnings": c.warnings });
                            if let Some(checked) = &it.checked {
                                cj["checked"] = match checked {
                                    Ok((allows, lints)) => serde_json::json!({ "allows": allows, "lints": lints }),
                                    Err(e) => serde_json::json!({ "error": e }),
                                };
                            }
                            cj
                        }
                        None => serde_json::Value::Null,
                    };
                }
            }
            v
        })
        .collect();
    serde_json::json!({
        "agent": run.agent,
        "policy": l.path.as_ref().map(|p| p.display().to_string()),
        "warning": l.warning,
        "denials": denials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nftables_lines_name_their_destination() {
        assert_eq!(
            nft_destination("connect to 192.0.2.9:443/tcp in network mode none (dropped and rejected)"),
            Some(("192.0.2.9".into(), 443, Protocol::Tcp))
        );
        assert_eq!(nft_destination("datagram to [2001:db8::7]:53/udp outside the proxy"), Some(("2001:db8::7".into(), 53, Protocol::Udp)));
        assert_eq!(nft_destination("no destination here"), None);
    }
}
