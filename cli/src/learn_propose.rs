//! From what a learning run observed to a proposed policy (the text `aegis learn` writes).
//!
//! Input: the [`Observations`] of one learning run and its [`Context`] (the workload's
//! directory and the user's home, which become the parameters `WORKSPACE` and `HOME`; the
//! starting policy, if any; the guard-rail flags). Output: a [`Proposal`]: a normal policy
//! file, with comments saying what was observed, every collapse and every exclusion.
//!
//! Invariants (the guard rails):
//! - every grant was used by the workload, or is a collapse of grants that were, shown as
//!   such; nothing the starting policy already grants is repeated;
//! - a credential store (`aegis_compiler::secrets`) is never granted unless the caller
//!   allowed it explicitly (the learning run could not read it either: it was denied);
//!   neither is a host unix socket;
//! - files are collapsed into their directory only when the directory holds no credential
//!   store and, inside the home directory, no file whose name looks secret (a bounded walk
//!   that gives up, and then does not collapse, past [`SCAN_LIMIT`] entries); an exec grant
//!   is never collapsed into a directory of interpreters or a system `bin` directory;
//! - the network is granted by the names the agent used (a CONNECT host, a URL host), never
//!   by the addresses they resolved to; HTTP requests the proxy saw become
//!   `[api.NAME]` method/path rules;
//! - the result compiles (`aegis learn` checks it before writing it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use aegis_policy::eval::{self, FsQuery, Params, Query, Verdict};
use aegis_compiler::explain::{in_policy_terms, toml_string};
use aegis_policy::ir::{Policy, Protocol};
use aegis_compiler::secrets;
use aegis_runtime::learn::{Observations, Request};
use aegis_runtime::unotify::trace::Op;

/// Entries a walk looks at before it gives up deciding a directory holds nothing sensitive.
pub const SCAN_LIMIT: usize = 20_000;
/// Needs below one directory that make it worth one grant.
const COLLAPSE_AT: usize = 3;
/// Distinct requests to one host past which it is granted as an endpoint, not request by
/// request; and the number of paths per method listed before they are generalised.
const MAX_REQUESTS: usize = 32;
const MAX_PATHS: usize = 8;

/// What the proposal is for.
pub struct Context {
    pub workspace: String,
    /// The agent's home directory (the `HOME` parameter).
    pub home: Option<String>,
    /// Every directory the agent may treat as home (its passwd entry, `--env HOME`,
    /// `--param HOME`): credential stores under any of them are never proposed.
    pub homes: Vec<String>,
    /// The starting policy: its absolute path and its compiled IR.
    pub start: Option<(PathBuf, Policy)>,
    /// Parameter values for asking the starting policy (WORKSPACE, HOME and `--param`s).
    pub params: Params,
    pub agent: String,
    pub command: Vec<String>,
    pub allow_credential_stores: bool,
    pub allow_host_sockets: bool,
    /// The learning run had no cgroup of its own (a user on this kind of host).
    pub cgroup_missing: bool,
    /// The proxy terminated TLS to see requests.
    pub inspected: bool,
    /// The learning run's own policy (to tell a built-in protection from other refusals).
    pub learning: Option<Policy>,
}

/// Sorts what the learning run used into needs, exclusions (credential stores), built-in
/// protections it hit (never lifted by a proposal) and paths its own policy refused.
struct Sorter<'a> {
    ctx: &'a Context,
    params: &'a Params,
    needs: BTreeMap<Kind, BTreeMap<String, u64>>,
    excluded: BTreeMap<String, u64>,
    protected: BTreeMap<String, u64>,
    refused: BTreeSet<String>,
}

impl Sorter<'_> {
    fn add(&mut self, kind: Kind, path: &str, n: u64, allowed: bool) {
        let ctx = self.ctx;
        if built_in(path) || start_grants(ctx, kind, path) {
            return;
        }
        if !ctx.allow_credential_stores && credential_store(ctx, path).is_some() {
            *self.excluded.entry(format!("{} {}", kind_word(kind), in_policy_terms(path, self.params))).or_default() += n;
            return;
        }
        if !allowed {
            if ctx.learning.as_ref().is_some_and(|l| protection_of(l, self.params, path)) {
                *self.protected.entry(in_policy_terms(path, self.params)).or_default() += n;
                return;
            }
            self.refused.insert(path.to_string());
        }
        *self.needs.entry(kind).or_default().entry(path.to_string()).or_default() += n;
    }
}

/// The credential store `path` is or lies in: under any of the agent's homes, or wherever a
/// store's own name occurs.
fn credential_store(ctx: &Context, path: &str) -> Option<String> {
    ctx.homes.iter().find_map(|h| secrets::store_of(path, Some(h))).or_else(|| secrets::store_of(path, None)).or_else(|| secrets::store_anywhere(path))
}

/// Whether `path` is read-only under `policy` because of a built-in protection.
fn protection_of(policy: &Policy, params: &Params, path: &str) -> bool {
    eval::evaluate(policy, params, &Query::Fs { access: FsQuery::Write, path: path.to_string() })
        .is_ok_and(|d| d.rule.is_some_and(|r| r.kind == "built-in protection"))
}

/// The proposal: the policy text and a few lines for the terminal.
pub struct Proposal {
    pub text: String,
    pub summary: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Read,
    Write,
    Exec,
}

/// One grant of the proposal, with its comment.
#[derive(Clone, Debug)]
struct Grant {
    path: String,
    note: String,
}

fn components(p: &str) -> Vec<&str> {
    p.split('/').filter(|c| !c.is_empty()).collect()
}

fn under(path: &str, dir: &str) -> bool {
    let (p, d) = (components(path), components(dir));
    p.len() >= d.len() && p.iter().zip(&d).all(|(a, b)| a == b)
}

fn parent(path: &str) -> String {
    let mut c = components(path);
    c.pop();
    format!("/{}", c.join("/"))
}

/// Paths every sandbox provides (private /tmp, the minimal /dev, its own /proc): never
/// proposed.
fn built_in(path: &str) -> bool {
    ["/tmp", "/proc", "/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/pts", "/dev/ptmx", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr"]
        .iter()
        .any(|b| under(path, b))
}

/// System trees that hold programs and their data, not a user's files: a collapse inside one
/// is checked against the credential-store list only, not walked.
const SYSTEM_TREES: &[&str] = &["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/opt", "/etc", "/sys", "/snap", "/nix"];

/// Whether `dir` may be granted whole instead of what was used below it (see the module's
/// invariants), and why not when it may not. `direct`: the needs are all its own entries
/// (exec grants collapse only those).
fn collapsible(dir: &str, kind: Kind, direct: bool, ctx: &Context) -> Result<(), String> {
    if components(dir).is_empty() {
        return Err("the whole filesystem".into());
    }
    let mut stores: Vec<String> = ctx.homes.iter().flat_map(|h| secrets::stores_under(dir, Some(h))).collect();
    stores.extend(secrets::stores_under(dir, None));
    stores.sort();
    stores.dedup();
    if !stores.is_empty() {
        return Err(format!("it holds {}", stores.join(", ")));
    }
    if kind == Kind::Exec {
        if !direct {
            return Err("programs in different directories are granted one by one".into());
        }
        if ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"].contains(&dir) {
            return Err("a system bin directory (its interpreters run anything)".into());
        }
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten().take(SCAN_LIMIT) {
                let name = e.file_name().to_string_lossy().into_owned();
                let bare = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
                if aegis_compiler::lint::INTERPRETERS.contains(&name.as_str()) || aegis_compiler::lint::INTERPRETERS.contains(&bare) {
                    return Err(format!("it holds the interpreter {name}"));
                }
            }
        }
    }
    // Above the workspace and the home directory nothing is collapsed: what is next to them
    // is someone else's business.
    let above = |boundary: &str| under(boundary, dir) && boundary.trim_end_matches('/') != dir;
    if above(&ctx.workspace) || ctx.homes.iter().any(|h| above(h)) {
        return Err("it lies above the workspace or the home directory".into());
    }
    if !SYSTEM_TREES.iter().any(|t| under(dir, t)) {
        scan(dir)?;
    }
    Ok(())
}

/// A bounded walk of `dir`: `Err` names the first secret-looking file, or says the walk gave
/// up.
fn scan(dir: &str) -> Result<(), String> {
    let mut stack = vec![PathBuf::from(dir)];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            seen += 1;
            if seen > SCAN_LIMIT {
                return Err(format!("more than {SCAN_LIMIT} entries: not checked whole"));
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if secrets::sensitive_name(&name) {
                return Err(format!("it holds {}", e.path().display()));
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) && name != ".git" {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// Collapses needs into directories bottom-up (module invariants); returns the grants and
/// the collapses made (directory, how many needs it stands for).
fn collapse(needs: &BTreeMap<String, u64>, kind: Kind, ctx: &Context, notes: &mut Vec<String>) -> Vec<Grant> {
    // path → (uses, paths it stands for, made by a collapse)
    let mut current: BTreeMap<String, (u64, usize, bool)> = BTreeMap::new();
    // A need below another (a directory the workload itself needed) is covered by it.
    for (p, n) in needs {
        match current.iter_mut().find(|(c, _)| under(p, c)) {
            Some((_, (uses, files, _))) => {
                *uses += n;
                *files += 1;
            }
            None => {
                let (mut uses, mut files) = (*n, 1);
                current.retain(|c, (u, f, _)| {
                    let inside = under(c, p);
                    if inside {
                        uses += *u;
                        files += *f;
                    }
                    !inside
                });
                current.insert(p.clone(), (uses, files, false));
            }
        }
    }
    let mut refused: BTreeSet<String> = BTreeSet::new();
    loop {
        // The deepest directory with enough needs below it.
        let mut by_dir: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in current.keys() {
            let mut d = parent(p);
            while d != "/" {
                by_dir.entry(d.clone()).or_default().push(p.clone());
                d = parent(&d);
            }
        }
        let pick = by_dir
            .iter()
            .filter(|(d, inside)| inside.len() >= COLLAPSE_AT && !refused.contains(*d) && !current.contains_key(*d))
            .max_by_key(|(d, _)| components(d).len())
            .map(|(d, inside)| (d.clone(), inside.clone()));
        let Some((dir, inside)) = pick else { break };
        let direct = inside.iter().all(|p| parent(p) == dir);
        match collapsible(&dir, kind, direct, ctx) {
            Ok(()) => {
                let (mut uses, mut files) = (0u64, 0usize);
                for p in &inside {
                    if let Some((n, f, _)) = current.remove(p) {
                        uses += n;
                        files += f;
                    }
                }
                current.insert(dir, (uses, files, true));
            }
            Err(why) => {
                if inside.len() >= COLLAPSE_AT * 3 {
                    notes.push(format!("not collapsed: {} {} paths below {dir}: {why}", inside.len(), kind_word(kind)));
                }
                refused.insert(dir);
            }
        }
    }
    current
        .into_iter()
        .map(|(path, (uses, files, collapsed))| {
            let note = match (collapsed, files) {
                (true, _) => format!("collapsed: {files} paths {} below it ({uses} uses); nothing sensitive below", kind_past(kind)),
                (false, 1) => format!("{} {uses} time(s)", kind_past(kind)),
                (false, _) => format!("{} itself, and {} paths below it ({uses} uses)", kind_past(kind), files - 1),
            };
            Grant { path, note }
        })
        .collect()
}

fn kind_word(k: Kind) -> &'static str {
    match k {
        Kind::Read => "read",
        Kind::Write => "written",
        Kind::Exec => "executed",
    }
}

fn kind_past(k: Kind) -> &'static str {
    match k {
        Kind::Read => "read",
        Kind::Write => "written",
        Kind::Exec => "run",
    }
}

/// Whether the starting policy already grants `kind` on `path`.
fn start_grants(ctx: &Context, kind: Kind, path: &str) -> bool {
    let Some((_, p)) = &ctx.start else { return false };
    let access = match kind {
        Kind::Read => FsQuery::Read,
        Kind::Write => FsQuery::Write,
        Kind::Exec => FsQuery::Exec,
    };
    eval::evaluate(p, &ctx.params, &Query::Fs { access, path: path.to_string() }).is_ok_and(|d| d.verdict == Verdict::Allow)
}

/// An API's name from its host: `api.github.com` → `api-github-com`.
fn api_name(host: &str, port: u16, taken: &BTreeSet<String>) -> String {
    let mut n: String = host.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    if !n.starts_with(|c: char| c.is_ascii_lowercase()) {
        n = format!("h-{n}");
    }
    if port != 443 && port != 80 {
        n = format!("{n}-{port}");
    }
    let mut name = n.clone();
    let mut i = 2;
    while taken.contains(&name) {
        name = format!("{n}-{i}");
        i += 1;
    }
    name
}

/// Whether a path segment is an identifier (a hash, a number, a UUID): such segments
/// change from run to run, so a rule names them `*`.
fn id_like(seg: &str) -> bool {
    let hex = seg.len() >= 7 && seg.chars().all(|c| c.is_ascii_hexdigit());
    let digits = !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit());
    let uuid = seg.len() == 36 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-') && seg.matches('-').count() == 4;
    let short_hex = seg.len() == 2 && seg.chars().all(|c| c.is_ascii_hexdigit()) && seg.chars().any(|c| c.is_ascii_digit());
    hex || digits || uuid || short_hex
}

/// Rules for one method's paths: each path with its identifier segments as `*`, or, past
/// [`MAX_PATHS`], their longest common prefix with `/**`.
fn path_rules(method: &str, paths: &BTreeSet<String>, notes: &mut Vec<String>) -> Vec<(String, String)> {
    let generic: BTreeSet<String> = paths
        .iter()
        .map(|p| format!("/{}", components(p).iter().map(|c| if id_like(c) { "*" } else { c }).collect::<Vec<_>>().join("/")))
        .collect();
    if generic.len() < paths.len() {
        notes.push(format!("generalised: identifier segments (hashes, numbers) of {} {method} paths written as `*`", paths.len()));
    }
    let paths = &generic;
    if paths.len() <= MAX_PATHS {
        return paths.iter().map(|p| (format!("{method} {p}"), "seen".to_string())).collect();
    }
    let split: Vec<Vec<&str>> = paths.iter().map(|p| components(p)).collect();
    let mut prefix: Vec<&str> = split.first().cloned().unwrap_or_default();
    for s in &split {
        let common = prefix.iter().zip(s).take_while(|(a, b)| a == b).count();
        prefix.truncate(common);
    }
    let rule = if prefix.is_empty() { format!("{method} /**") } else { format!("{method} /{}/**", prefix.join("/")) };
    notes.push(format!("generalised: {} distinct {method} paths into `{rule}`", paths.len()));
    vec![(rule, format!("generalised from {} paths", paths.len()))]
}

fn list(key: &str, items: &[(String, String)]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut out = format!("{key} = [\n");
    for (v, note) in items {
        out.push_str(&format!("  {},", toml_string(v)));
        if !note.is_empty() {
            out.push_str(&format!("  # {note}"));
        }
        out.push('\n');
    }
    out.push_str("]\n");
    out
}

/// The proposal for `obs`.
pub fn propose(obs: &Observations, ctx: &Context) -> Proposal {
    let home = ctx.home.as_deref();
    let mut params = Params::new();
    if let Ok((k, v)) = eval::parse_param(&format!("WORKSPACE={}", ctx.workspace)) {
        params.insert(k, v);
    }
    if let Some(h) = home
        && let Ok((k, v)) = eval::parse_param(&format!("HOME={h}"))
    {
        params.insert(k, v);
    }
    let mut notes: Vec<String> = Vec::new();
    let mut sort = Sorter { ctx, params: &params, needs: BTreeMap::new(), excluded: BTreeMap::new(), protected: BTreeMap::new(), refused: BTreeSet::new() };
    let exists = |p: &str| std::fs::symlink_metadata(p).is_ok();
    // Paths only looked at (stat, access, readlink): the ancestors of grants are visible in
    // the sandbox anyway; the rest are handled once the grants are known.
    let mut looked: BTreeMap<String, u64> = BTreeMap::new();
    for f in &obs.files {
        let mut paths = vec![f.path.clone()];
        paths.extend(f.resolved.clone());
        for p in paths {
            match f.op {
                // A probe of a path that is nowhere needs no grant (ENOENT either way).
                Op::Read if exists(&p) => sort.add(Kind::Read, &p, f.count, f.allowed),
                Op::Stat if exists(&p) && !built_in(&p) => *looked.entry(p).or_default() += f.count,
                Op::Exec if exists(&p) => sort.add(Kind::Exec, &p, f.count, f.allowed),
                Op::Write if exists(&p) => sort.add(Kind::Write, &p, f.count, f.allowed),
                // A new or removed entry (or a file gone since): its directory.
                Op::Write | Op::Create | Op::Remove => {
                    let d = parent(&p);
                    if exists(&d) {
                        sort.add(Kind::Write, &d, f.count, f.allowed);
                    }
                }
                Op::Read | Op::Stat | Op::Exec => {}
            }
        }
    }
    // Refusals of the learning run that were not file accesses the tracer saw: sockets, and
    // system calls (let through in learn mode when a plain allow would grant them without a
    // warning: proposed; refused even then: listed).
    let mut sockets: BTreeMap<String, u64> = BTreeMap::new();
    let mut syscalls: BTreeMap<String, (u64, bool, String)> = BTreeMap::new();
    for r in &obs.refused {
        match (r.layer.as_str(), &r.access) {
            ("unix", _) if r.target.starts_with('/') => *sockets.entry(r.target.clone()).or_default() += r.count,
            ("seccomp", Some(aegis_audit::Access::Syscall { name, .. })) => {
                let let_through = r.result.as_deref().is_some_and(|x| x.starts_with("allowed in learn mode"));
                let e = syscalls.entry(name.clone()).or_insert((0, let_through, r.reason.clone()));
                e.0 += r.count;
                e.1 &= let_through;
            }
            _ => {}
        }
    }

    // Grants: writes first (they cover reads), then execs, then reads not covered; then the
    // files only looked at that no grant makes visible are read grants too (a directory only
    // looked at is noted, not granted: a grant would cover everything below it).
    let mut grants: BTreeMap<Kind, Vec<Grant>> = BTreeMap::new();
    let mut looked_dirs: Vec<String> = Vec::new();
    for pass in 0..2 {
        grants.clear();
        let mut scratch = Vec::new();
        for kind in [Kind::Write, Kind::Exec, Kind::Read] {
            let mut n = sort.needs.get(&kind).cloned().unwrap_or_default();
            if kind == Kind::Read {
                let covering: Vec<String> = grants.values().flatten().map(|g| g.path.clone()).collect();
                n.retain(|p, _| !covering.iter().any(|c| under(p, c)));
            }
            grants.insert(kind, collapse(&n, kind, ctx, if pass == 1 { &mut notes } else { &mut scratch }));
        }
        if pass == 1 {
            break;
        }
        let visible = |p: &str| grants.values().flatten().any(|g| under(p, &g.path) || under(&g.path, p));
        for (p, n) in std::mem::take(&mut looked) {
            if visible(&p) {
                continue;
            }
            if std::fs::metadata(&p).is_ok_and(|m| m.is_dir()) {
                looked_dirs.push(p);
            } else {
                sort.add(Kind::Read, &p, n, true);
            }
        }
    }
    let Sorter { excluded, protected, refused: refused_paths, .. } = sort;
    let refused_note = |g: &Grant| refused_paths.iter().any(|r| under(r, &g.path));
    for g in grants.values_mut().flatten() {
        if refused_note(g) {
            g.note.push_str("; REFUSED during learning (outside the learning grants): the workload may do more with it than it did");
        }
    }

    // Network.
    let mut hosts: BTreeMap<(String, u16), Vec<(&Request, u64)>> = BTreeMap::new();
    for (r, n) in &obs.requests {
        if r.mode == "decision" {
            continue;
        }
        hosts.entry((r.host.clone(), r.port)).or_default().push((r, *n));
    }
    let mut endpoints: Vec<(String, String)> = Vec::new();
    let mut apis: Vec<String> = Vec::new();
    let mut taken: BTreeSet<String> = ctx.start.as_ref().map(|(_, p)| p.apis.keys().cloned().collect()).unwrap_or_default();
    let mut net_refused: Vec<String> = Vec::new();
    for ((host, port), reqs) in &hosts {
        let total: u64 = reqs.iter().map(|(_, n)| n).sum();
        if reqs.iter().all(|(r, _)| !r.allowed) {
            net_refused.push(format!("{host}:{port} ({total} time(s)): {}", reqs.first().map(|(r, _)| r.reason.as_str()).unwrap_or_default()));
            continue;
        }
        let programs: BTreeSet<&str> = reqs.iter().filter_map(|(r, _)| r.exe.as_deref()).collect();
        let by = if programs.is_empty() { String::new() } else { format!(", by {}", programs.into_iter().collect::<Vec<_>>().join(", ")) };
        let mut methods: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (r, _) in reqs.iter().filter(|(r, _)| r.allowed) {
            if let (Some(m), Some(p)) = (&r.method, &r.path)
                && aegis_policy::ir::api::canonical_request(m, p).is_ok()
            {
                methods.entry(m.clone()).or_default().insert(p.clone());
            }
        }
        let distinct: usize = methods.values().map(BTreeSet::len).sum();
        let start_allows = ctx.start.as_ref().is_some_and(|(_, p)| {
            eval::evaluate(p, &ctx.params, &Query::Net { host: host.clone(), port: *port, protocol: Protocol::Tcp }).is_ok_and(|d| d.verdict == Verdict::Allow)
        });
        let start_api = ctx.start.as_ref().and_then(|(_, p)| p.apis.values().find(|a| a.host.eq_ignore_ascii_case(host) && a.port == *port).map(|a| a.name.clone()));
        if host.parse::<std::net::IpAddr>().is_ok() {
            notes.push(format!("{host}:{port} was reached by address, not by name: prefer the name the service has"));
        }
        if methods.is_empty() || distinct > MAX_REQUESTS {
            if start_allows {
                continue;
            }
            let why = if methods.is_empty() {
                if ctx.inspected { "not HTTP, or not inspected".to_string() } else { "TLS not inspected (aegis learn --no-inspect)".to_string() }
            } else {
                format!("{distinct} distinct requests: granted as an endpoint")
            };
            let ep = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            endpoints.push((ep, format!("{total} connection(s)/request(s){by}; {why}")));
            continue;
        }
        let mut rules: Vec<(String, String)> = Vec::new();
        for (m, paths) in &methods {
            let need: BTreeSet<String> = paths
                .iter()
                .filter(|p| {
                    // Already allowed by the starting policy's API of this host?
                    !ctx.start.as_ref().zip(start_api.as_ref()).is_some_and(|((_, sp), name)| {
                        eval::evaluate(sp, &ctx.params, &Query::ApiHttp { api: name.clone(), method: m.clone(), path: (*p).clone() }).is_ok_and(|d| d.verdict == Verdict::Allow)
                    })
                })
                .cloned()
                .collect();
            rules.extend(path_rules(m, &need, &mut notes));
        }
        if rules.is_empty() {
            continue;
        }
        // A host the starting policy declares an API for gets more rules in that table.
        let name = start_api.unwrap_or_else(|| api_name(host, *port, &taken));
        taken.insert(name.clone());
        let mut t = format!("\n# {total} request(s) to {host}:{port}{by}\n[api.{name}]\n");
        if ctx.start.as_ref().is_none_or(|(_, p)| !p.apis.contains_key(&name)) {
            t.push_str(&format!("host = {}\n", toml_string(host)));
            if *port != 443 {
                t.push_str(&format!("port = {port}\n"));
            }
        }
        t.push_str(&list("allow", &rules));
        apis.push(t);
    }

    // The text.
    let mut out = String::new();
    out.push_str(&format!("# Proposed by `aegis learn` from one run of: {}\n", ctx.command.join(" ")));
    out.push_str("# Every grant below was used by that run (or collapses grants that were, as noted).\n");
    out.push_str("# Review it like code: `aegis inspect` shows what it grants, `aegis diff` what changed.\n");
    if obs.dropped > 0 {
        out.push_str(&format!("# INCOMPLETE: {} distinct observations were over the learning run's bound and are missing.\n", obs.dropped));
    }
    out.push_str("version = 1\n\n[agent]\n");
    match &ctx.start {
        Some((path, _)) => out.push_str(&format!("extends = [{}]\n", toml_string(&path.to_string_lossy()))),
        None => out.push_str(&format!("name = {}\n", toml_string(&ctx.agent))),
    }
    // A grant is written against the most specific parameter it lies in (WORKSPACE, which
    // may be inside HOME, first); each parameter is declared when a grant uses it.
    let ws_used = grants.values().flatten().any(|g| under(&g.path, &ctx.workspace));
    let home_used = home.is_some_and(|h| grants.values().flatten().any(|g| under(&g.path, h) && !under(&g.path, &ctx.workspace)));
    if ws_used || home_used {
        out.push_str("\n[parameters]\n");
        if ws_used {
            out.push_str(&format!("WORKSPACE = {}\n", toml_string(&format!("the directory the workload works in (learned in {})", ctx.workspace))));
        }
        if home_used {
            out.push_str(&format!("HOME = {}\n", toml_string(&format!("the home directory of the user the agent runs as (learned with {})", home.unwrap_or_default()))));
        }
    }
    let mut p2 = Params::new();
    if ws_used && let Some(v) = params.get("WORKSPACE") {
        p2.insert("WORKSPACE".into(), v.clone());
    }
    if home_used && let Some(v) = params.get("HOME") {
        p2.insert("HOME".into(), v.clone());
    }
    let render = |gs: &[Grant]| -> Vec<(String, String)> { gs.iter().map(|g| (in_policy_terms(&g.path, &p2), g.note.clone())).collect() };
    let reads = render(grants.get(&Kind::Read).map(Vec::as_slice).unwrap_or_default());
    let writes = render(grants.get(&Kind::Write).map(Vec::as_slice).unwrap_or_default());
    let execs = render(grants.get(&Kind::Exec).map(Vec::as_slice).unwrap_or_default());
    if !reads.is_empty() || !writes.is_empty() || !excluded.is_empty() || !protected.is_empty() || !looked_dirs.is_empty() {
        out.push_str("\n[filesystem]\n");
        out.push_str(&list("read", &reads));
        out.push_str(&list("write", &writes));
        for (p, n) in &protected {
            out.push_str(&format!(
                "# NOT PROPOSED (built-in protection; read-only during learning too): write {p} ({n} time(s)); `unprotect` it only if the agent must change what your tools run\n"
            ));
        }
        for d in &looked_dirs {
            out.push_str(&format!("# looked at, not granted (a directory: a grant would cover all of it): {}\n", in_policy_terms(d, &p2)));
        }
        for (what, n) in &excluded {
            out.push_str(&format!("# NOT PROPOSED (credential store; the learning run was denied it): {what} ({n} time(s)); `aegis learn --allow-credential-stores` proposes it\n"));
        }
    }
    if !execs.is_empty() {
        out.push_str("\n[exec]\n");
        out.push_str(&list("allow", &execs));
    }
    let net_used = !endpoints.is_empty() || !apis.is_empty();
    if net_used || !sockets.is_empty() || !net_refused.is_empty() {
        out.push_str("\n[network]\n");
        if net_used && ctx.start.as_ref().is_none_or(|(_, p)| p.network.mode != aegis_policy::ir::NetworkMode::Proxy) {
            out.push_str("mode = \"proxy\"  # the workload used the network; the proxy admits it by name\n");
        }
        out.push_str(&list("allow", &endpoints));
        let socks: Vec<(String, String)> = sockets.iter().map(|(s, n)| (in_policy_terms(s, &p2), format!("{n} connect(s)"))).collect();
        if ctx.allow_host_sockets {
            out.push_str(&list("unix", &socks));
        } else {
            for (s, n) in &socks {
                out.push_str(&format!("# NOT PROPOSED (host socket; refused during learning): unix {s} ({n}); `aegis learn --allow-host-sockets` proposes it\n"));
            }
        }
        for r in &net_refused {
            out.push_str(&format!("# refused during learning (an explicit deny or a special address): {r}\n"));
        }
    }
    for a in &apis {
        out.push_str(a);
    }
    let allowed: Vec<(String, String)> = syscalls.iter().filter(|(_, (_, ok, _))| *ok).map(|(n, (c, _, _))| (n.clone(), format!("{c} call(s)"))).collect();
    let kept: Vec<(&String, &(u64, bool, String))> = syscalls.iter().filter(|(_, (_, ok, _))| !*ok).collect();
    if !allowed.is_empty() || !kept.is_empty() {
        out.push_str("\n[syscalls]\n");
        out.push_str(&list("allow", &allowed));
        for (n, (c, _, why)) in kept {
            out.push_str(&format!("# NOT PROPOSED (refused during learning too): {n} ({c} call(s)): {why}\n"));
        }
    }
    if ctx.cgroup_missing && ctx.start.as_ref().is_none_or(|(_, p)| p.enforcement.level(aegis_policy::ir::Layer::Cgroup) == aegis_policy::ir::Level::Required) {
        out.push_str("\n[enforcement]\ncgroup = \"best-effort\"  # this host gave the learning run no cgroup of its own; drop this line where [resources] limits must hold\n");
    }
    if !notes.is_empty() {
        out.push('\n');
        for n in &notes {
            out.push_str(&format!("# {n}\n"));
        }
    }
    let count = |k: Kind| grants.get(&k).map_or(0, Vec::len);
    let summary = vec![
        format!(
            "learned: {} read, {} write, {} exec grant(s); {} endpoint(s), {} API(s); {} syscall(s) allowed",
            count(Kind::Read),
            count(Kind::Write),
            count(Kind::Exec),
            endpoints.len(),
            apis.len(),
            allowed.len()
        ),
        format!("not proposed: {} credential-store access(es), {} host socket(s)", excluded.len(), if ctx.allow_host_sockets { 0 } else { sockets.len() }),
    ];
    Proposal { text: out, summary }
}
