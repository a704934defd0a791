//! `aegisc inspect POLICY`: the effective permissions in words, the risky grants, and the
//! exposure score with its reasons.

use std::fmt::Write as _;
use std::path::Path;

use super::{Exit, Format, compile_or_report, diagnostics_json, print_json};
use crate::ir::units::{format_duration_ms, format_size};
use crate::ir::*;
use crate::lint::exposure;
use crate::lower::errno_name;
use crate::source::{Origin, SourceMap};
use crate::Compiled;

fn loc(sources: &SourceMap, o: Option<Origin>) -> String {
    o.map(|o| sources.locate(o).to_string()).unwrap_or_else(|| "built-in".into())
}

/// The built-in protections, grouped by the write grant they lie below, and the opt-outs.
fn render_protections(o: &mut String, p: &Policy, s: &SourceMap) {
    let fs = &p.filesystem;
    let candidates = crate::lower::protection_candidates(&fs.rules);
    if candidates.is_empty() {
        return;
    }
    if !fs.protection.enabled {
        let _ = writeln!(o, "  protected: none, the built-in protection list is off ({})", loc(s, fs.protection.origin));
        return;
    }
    let _ = writeln!(o, "  protected (read-only below each write grant: files your tools run later on the host):");
    let mut by_root: Vec<(String, Vec<&str>)> = Vec::new();
    for (path, entry) in &candidates {
        if !fs.rules.iter().any(|r| r.protection && r.path == *path) {
            continue;
        }
        let mut root = path.clone();
        root.components.truncate(root.components.len().saturating_sub(entry.path.split('/').count()));
        let root = root.to_string();
        match by_root.iter_mut().find(|(r, _)| *r == root) {
            Some((_, v)) => v.push(entry.path),
            None => by_root.push((root, vec![entry.path])),
        }
    }
    for (root, entries) in by_root {
        // Wrapped at ~100 columns, continuation lines aligned under the first entry.
        let lead = format!("    {root}/ ");
        let mut line = lead.clone();
        for e in entries {
            if line.len() > lead.len() && line.len() + e.len() > 100 {
                let _ = writeln!(o, "{}", line.trim_end());
                line = " ".repeat(lead.len());
            }
            line.push_str(e);
            line.push(' ');
        }
        let _ = writeln!(o, "{}", line.trim_end());
    }
    for u in &fs.protection.unprotect {
        let _ = writeln!(o, "  unprotected {:<39} {}", u.path.to_string(), loc(s, u.origin));
    }
}

/// The human summary, also used by snapshot tests.
pub fn render(c: &Compiled) -> String {
    let p = &c.policy;
    let s = &c.sources;
    let mut o = String::new();
    let _ = writeln!(o, "Agent        {}", p.agent.name);
    if let Some(d) = &p.agent.description {
        let _ = writeln!(o, "Description  {d}");
    }
    let _ = writeln!(o, "Digest       {}", p.digest());
    let _ = writeln!(o, "Sources      {}", p.sources.join(", "));
    if let Some(cmd) = &p.agent.command {
        let _ = writeln!(o, "Command      {}", cmd.join(" "));
    }
    if !p.parameters.is_empty() {
        let _ = writeln!(o, "\nParameters (supplied at launch)");
        for (n, par) in &p.parameters {
            let _ = writeln!(o, "  ${{{n}}}  {}", par.description);
        }
    }
    let _ = writeln!(o, "\nFilesystem (deny beats every grant; each path covers its subtree)");
    for access in [FsAccess::Deny, FsAccess::Write, FsAccess::Read, FsAccess::Exec] {
        for r in p.filesystem.rules_of(access).filter(|r| r.origin.is_some()) {
            let _ = writeln!(o, "  {:<6} {:<44} {}", access.word(), r.path.to_string(), loc(s, r.origin));
        }
    }
    render_protections(&mut o, p, s);
    let builtins: Vec<String> = p
        .filesystem
        .rules
        .iter()
        .filter(|r| r.origin.is_none() && !r.protection && r.access != FsAccess::Exec)
        .map(|r| format!("{} {}", r.access.word(), r.path))
        .collect();
    let _ = writeln!(o, "  built-in: {} (private /tmp of {})", builtins.join(", "), format_size(p.filesystem.tmp_size));
    if p.filesystem.rules.iter().any(|r| r.origin.is_none() && r.access == FsAccess::Exec) {
        let _ = writeln!(o, "  built-in: exec of the dynamic loader (needed by every dynamic executable)");
    }
    let net = &p.network;
    let _ = writeln!(o, "\nNetwork      mode {}", net.mode.word());
    match net.mode {
        NetworkMode::None => {
            let _ = writeln!(o, "  loopback only: no route out of the sandbox");
        }
        NetworkMode::Proxy => {
            let _ = writeln!(o, "  only the AEGIS proxy is reachable; it admits:");
        }
        NetworkMode::Host => {
            let _ = writeln!(o, "  host network, nftables admits only:");
        }
    }
    for e in &net.allow {
        let via = match &e.source {
            EndpointSource::Api(a) => format!("api {a}"),
            EndpointSource::Network => loc(s, e.origin),
        };
        let _ = writeln!(o, "  allow  {:<44} {via}", e.to_string());
    }
    for e in &net.deny {
        let _ = writeln!(o, "  deny   {:<44} {}", e.to_string(), loc(s, e.origin));
    }
    for d in &net.dns {
        let _ = writeln!(o, "  dns    {:<44} {}", d.address.to_string(), loc(s, d.origin));
    }
    for g in &net.unix {
        let path = if g.origin.is_none() { format!("{} ({})", g.path, g.note) } else { g.path.to_string() };
        let _ = writeln!(o, "  unix   {path:<44} {}", loc(s, g.origin));
    }
    if !p.apis.is_empty() {
        let _ = writeln!(o, "\nAPIs (checked per request by the proxy; deny beats allow)");
        for a in p.apis.values() {
            let _ = writeln!(o, "  {}  {}:{}", a.name, a.host, a.port);
            if !a.scopes.is_empty() {
                let names: Vec<&str> = a.scopes.iter().map(|x| x.name.as_str()).collect();
                let _ = writeln!(o, "    scopes  {}", names.join(", "));
            }
            for r in &a.allow {
                let _ = writeln!(o, "    allow   {:<46} {}", r.rule.to_string(), loc(s, r.origin));
            }
            for r in &a.deny {
                let _ = writeln!(o, "    deny    {:<46} {}", r.rule.to_string(), loc(s, r.origin));
            }
            if let Some(c) = &a.credential {
                let from = match &c.source {
                    SecretSource::Env(v) => format!("environment variable {v}"),
                    SecretSource::File(f) => format!("file {f}"),
                };
                let _ = writeln!(o, "    credential  header {} from {from} (injected by the proxy, never visible to the agent)", c.header);
            }
        }
    }
    let r = &p.resources;
    let mut limits = Vec::new();
    limits.push(format!("memory {}", r.memory_bytes.map(|l| format_size(l.value)).unwrap_or_else(|| "unlimited".into())));
    limits.push(format!("pids {}", r.pids.map(|l| l.value.to_string()).unwrap_or_else(|| "unlimited".into())));
    limits.push(format!("cpu {}", r.cpu_millicores.map(|l| format!("{:.3} cores", l.value as f64 / 1000.0)).unwrap_or_else(|| "unlimited".into())));
    limits.push(format!("wall time {}", r.wall_time_ms.map(|l| format_duration_ms(l.value)).unwrap_or_else(|| "unlimited".into())));
    if let Some(w) = r.cpu_weight {
        limits.push(format!("cpu weight {}", w.value));
    }
    if let Some(w) = r.io_weight {
        limits.push(format!("io weight {}", w.value));
    }
    let _ = writeln!(o, "\nResources    {} (swap 0)", limits.join(", "));
    let sc = &p.syscalls;
    let base = match &sc.base {
        SyscallBase::Default => "default".to_string(),
        SyscallBase::Oci { path, .. } => format!("OCI profile {path}"),
    };
    let errno = |e: u16| errno_name(e).map(str::to_string).unwrap_or_else(|| e.to_string());
    let _ = writeln!(o, "\nSyscalls     base {base}, denied calls fail with {}", errno(sc.default_errno));
    for rule in &sc.rules {
        let what = match rule.action {
            SyscallAction::Allow => "allow".to_string(),
            SyscallAction::Deny(e) => format!("deny ({})", errno(e)),
            SyscallAction::Log => "log".to_string(),
            SyscallAction::Kill => "kill".to_string(),
        };
        let _ = writeln!(o, "  {:<12} {:<30} {}", what, rule.name, loc(s, rule.origin));
    }
    let layers: Vec<String> = p
        .enforcement
        .layers
        .iter()
        .map(|(l, v)| format!("{} {}", l.word(), if *v == Level::Required { "required" } else { "best-effort" }))
        .collect();
    let _ = writeln!(o, "\nEnforcement  {}", layers.join(", "));
    if let Some(abi) = p.enforcement.min_landlock_abi {
        let _ = writeln!(o, "  minimum Landlock ABI {abi}");
    }
    if !c.warnings.is_empty() {
        let _ = writeln!(o, "\nWarnings ({})", c.warnings.len());
        for w in &c.warnings {
            let _ = writeln!(o, "  {}  {} ({})", w.code, w.message, loc(s, w.origin));
        }
    }
    let e = exposure(p);
    let _ = writeln!(o, "\nExposure     {:.1}/10 ({})", e.score, e.level);
    for r in &e.reasons {
        let _ = writeln!(o, "  +{:.1}  {}", r.points, r.reason);
    }
    o
}

pub fn run(path: &Path, format: Format) -> Exit {
    let c = match compile_or_report(path) {
        Ok(c) => c,
        Err(exit) => return exit,
    };
    match format {
        Format::Human => print!("{}", render(&c)),
        Format::Json => print_json(&serde_json::json!({
            "agent": c.policy.agent.name,
            "digest": c.policy.digest(),
            "policy": c.policy.to_json(),
            "warnings": diagnostics_json(&c.warnings, &c.sources),
            "exposure": exposure(&c.policy),
        })),
    }
    Exit::Ok
}
