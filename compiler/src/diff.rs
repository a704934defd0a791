//! Semantic diff of two policies: what the agent may do after a change that it could not
//! before, and the reverse, in words a reviewer reads in a pull request.
//!
//! Input: two IRs (from policy files, or from bundles' `policy.ir.json`). Output: a
//! [`PolicyDiff`]: one [`Change`] per permission statement added, removed or changed, each
//! marked `widens` when the agent gains something, plus both exposure scores.
//! Invariants: a change widens exactly when the new policy allows something the old one
//! refused (a grant already covered by an old grant does not widen; removing a deny widens
//! only if something grants the path); output order is deterministic (category, text).

use std::collections::{BTreeMap, BTreeSet};

use crate::eval::{self, FsQuery, Params, Query, Verdict};
use crate::ir::net::name_matches;
use crate::ir::units::{format_duration_ms, format_size};
use crate::ir::*;
use crate::lint::exposure;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub category: &'static str,
    pub text: String,
    /// The agent gains a permission (a second review is due).
    pub widens: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PolicyDiff {
    pub agent: String,
    pub changes: Vec<Change>,
    pub exposure_old: f64,
    pub exposure_new: f64,
}

impl PolicyDiff {
    pub fn widened(&self) -> bool {
        self.changes.iter().any(|c| c.widens)
    }
}

/// A rule in words; a read rule inside a write grant of `policy` is a read-only carve-out.
fn fs_phrase(policy: &Policy, access: FsAccess, path: &PathPattern, protection: bool) -> String {
    let inside_write = || policy.filesystem.rules_of(FsAccess::Write).any(|w| w.path.covers(path) && w.path != *path);
    match access {
        FsAccess::Read if protection => format!("{path} is read-only (built-in protection)"),
        FsAccess::Read if inside_write() => format!("{path} is read-only (read grant inside a write grant)"),
        FsAccess::Read => format!("may read {path}"),
        FsAccess::Write => format!("may write {path}"),
        FsAccess::Exec => format!("may execute {path}"),
        FsAccess::Deny => format!("may never access {path}"),
    }
}

fn allows(policy: &Policy, q: Query) -> bool {
    eval::evaluate(policy, &Params::new(), &q).is_ok_and(|d| d.verdict == Verdict::Allow)
}

fn fs_query(access: FsAccess, path: &PathPattern) -> Option<Query> {
    let access = match access {
        FsAccess::Read => FsQuery::Read,
        FsAccess::Write => FsQuery::Write,
        FsAccess::Exec => FsQuery::Exec,
        FsAccess::Deny => return None,
    };
    Some(Query::Fs { access, path: path.to_string() })
}

/// Does `outer` admit every connection `inner` admits?
fn endpoint_covers(outer: &Endpoint, inner: &Endpoint) -> bool {
    let dest = match (&outer.destination, &inner.destination) {
        (a, b) if a == b => true,
        (Destination::Network(o), Destination::Network(i)) => o.prefix <= i.prefix && o.contains(i.addr),
        (w @ Destination::Wildcard(_), Destination::Name(n)) => name_matches(w, n),
        (Destination::Wildcard(o), Destination::Wildcard(i)) => i.ends_with(&format!(".{o}")),
        _ => false,
    };
    dest && outer.protocol == inner.protocol
        && inner.ports.iter().all(|ip| outer.ports.iter().any(|op| op.first <= ip.first && ip.last <= op.last))
}

fn mode_rank(m: NetworkMode) -> u8 {
    match m {
        NetworkMode::None => 0,
        NetworkMode::Proxy => 1,
        NetworkMode::Host => 2,
    }
}

fn action_rank(a: SyscallAction) -> u8 {
    match a {
        SyscallAction::Kill => 0,
        SyscallAction::Deny(_) => 1,
        SyscallAction::Log => 2,
        SyscallAction::Allow => 3,
    }
}

fn action_word(a: SyscallAction) -> String {
    match a {
        SyscallAction::Allow => "allowed".into(),
        SyscallAction::Log => "allowed and logged".into(),
        SyscallAction::Deny(e) => format!("denied ({})", crate::lower::errno_name(e).map(str::to_string).unwrap_or_else(|| e.to_string())),
        SyscallAction::Kill => "kills the agent".into(),
    }
}

struct Acc(Vec<Change>);

impl Acc {
    fn push(&mut self, kind: ChangeKind, category: &'static str, text: String, widens: bool) {
        self.0.push(Change { kind, category, text, widens });
    }
}

fn limit_change<T: PartialOrd + Copy>(
    acc: &mut Acc,
    what: &str,
    old: Option<Limit<T>>,
    new: Option<Limit<T>>,
    show: &dyn Fn(T) -> String,
) {
    let (o, n) = (old.map(|l| l.value), new.map(|l| l.value));
    if o == n {
        return;
    }
    let fmt = |v: Option<T>| v.map(show).unwrap_or_else(|| "unlimited".into());
    // A limit widens when it is lifted or raised.
    let widens = match (o, n) {
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => b > a,
        (None, None) => false,
    };
    acc.push(ChangeKind::Changed, "resources", format!("{what} {} → {}", fmt(o), fmt(n)), widens);
}

pub fn diff(old: &Policy, new: &Policy) -> PolicyDiff {
    let mut acc = Acc(Vec::new());
    // Filesystem: user rules and built-in protections (the policy turns those off); the
    // sandbox's own built-ins are the same in every policy.
    let rules = |p: &Policy| -> BTreeMap<(FsAccess, PathPattern), bool> {
        p.filesystem.rules.iter().filter(|r| r.origin.is_some() || r.protection).map(|r| ((r.access, r.path.clone()), r.protection)).collect()
    };
    let (mut ro, mut rn) = (rules(old), rules(new));
    // Protections come and go with their write grant, whose own line says enough; the ones
    // under a grant both policies have are news (an `unprotect`, `protect = false`).
    let under_write = |p: &Policy, path: &PathPattern| p.filesystem.rules_of(FsAccess::Write).any(|w| w.origin.is_some() && w.path.covers(path) && w.path != *path);
    let kept = |(_, path): &(FsAccess, PathPattern), protection: &mut bool| !*protection || (under_write(old, path) && under_write(new, path));
    ro.retain(kept);
    rn.retain(kept);
    // What changed at a path, in the agent's terms: anything allowed now that was not.
    let gained = |path: &PathPattern| {
        [FsAccess::Read, FsAccess::Write, FsAccess::Exec]
            .iter()
            .filter_map(|a| fs_query(*a, path))
            .any(|q| allows(new, q.clone()) && !allows(old, q))
    };
    for ((access, path), protection) in rn.iter().filter(|(k, _)| !ro.contains_key(*k)) {
        let widens = match fs_query(*access, path) {
            Some(q) => !allows(old, q.clone()) && allows(new, q),
            None => false,
        };
        acc.push(ChangeKind::Added, "filesystem", fs_phrase(new, *access, path, *protection), widens);
    }
    for ((access, path), protection) in ro.iter().filter(|(k, _)| !rn.contains_key(*k)) {
        acc.push(ChangeKind::Removed, "filesystem", fs_phrase(old, *access, path, *protection), gained(path));
    }
    if old.filesystem.protection.enabled != new.filesystem.protection.enabled {
        let on = |p: &Policy| if p.filesystem.protection.enabled { "on" } else { "off" };
        acc.push(ChangeKind::Changed, "filesystem", format!("built-in protection list {} → {}", on(old), on(new)), !new.filesystem.protection.enabled);
    }
    if old.filesystem.tmp_size != new.filesystem.tmp_size {
        acc.push(
            ChangeKind::Changed,
            "filesystem",
            format!("private /tmp {} → {}", format_size(old.filesystem.tmp_size), format_size(new.filesystem.tmp_size)),
            new.filesystem.tmp_size > old.filesystem.tmp_size,
        );
    }
    // Network.
    let (no, nn) = (&old.network, &new.network);
    if no.mode != nn.mode {
        acc.push(
            ChangeKind::Changed,
            "network",
            format!("network mode {} → {}", no.mode.word(), nn.mode.word()),
            mode_rank(nn.mode) > mode_rank(no.mode),
        );
    }
    let ep = |e: &Endpoint| format!("may connect to {e}");
    // Same endpoint, wherever it is written.
    let same = |a: &Endpoint, b: &Endpoint| a.destination == b.destination && a.ports == b.ports && a.protocol == b.protocol;
    let within = |e: &Endpoint, list: &[Endpoint]| list.iter().any(|x| same(x, e));
    for e in nn.allow.iter().filter(|e| !within(e, &no.allow)) {
        let covered = no.mode != NetworkMode::None && no.allow.iter().any(|o| endpoint_covers(o, e));
        acc.push(ChangeKind::Added, "network", ep(e), !covered && nn.mode != NetworkMode::None);
    }
    for e in no.allow.iter().filter(|e| !within(e, &nn.allow)) {
        acc.push(ChangeKind::Removed, "network", ep(e), false);
    }
    for e in nn.deny.iter().filter(|e| !within(e, &no.deny)) {
        acc.push(ChangeKind::Added, "network", format!("may never connect to {e}"), false);
    }
    for e in no.deny.iter().filter(|e| !within(e, &nn.deny)) {
        let widens = nn.allow.iter().any(|a| endpoint_covers(a, e) || endpoint_covers(e, a));
        acc.push(ChangeKind::Removed, "network", format!("may never connect to {e}"), widens);
    }
    let dns = |n: &Network| -> BTreeSet<String> { n.dns.iter().map(|d| d.address.to_string()).collect() };
    let (dno, dnn) = (dns(no), dns(nn));
    for d in dnn.difference(&dno) {
        acc.push(ChangeKind::Added, "network", format!("may query DNS at {d}"), true);
    }
    for d in dno.difference(&dnn) {
        acc.push(ChangeKind::Removed, "network", format!("may query DNS at {d}"), false);
    }
    let unix_old: Vec<&PathPattern> = no.unix.iter().map(|g| &g.path).collect();
    for g in nn.unix.iter().filter(|g| !unix_old.contains(&&g.path)) {
        let covered = unix_old.iter().any(|o| o.covers(&g.path));
        acc.push(ChangeKind::Added, "network", format!("may connect to unix sockets at {}", g.path), !covered);
    }
    for g in no.unix.iter().filter(|g| !nn.unix.iter().any(|n| n.path == g.path)) {
        acc.push(ChangeKind::Removed, "network", format!("may connect to unix sockets at {}", g.path), false);
    }
    // APIs.
    for (name, a) in &new.apis {
        let Some(o) = old.apis.get(name) else {
            acc.push(ChangeKind::Added, "api", format!("may call api {name} ({}:{})", a.host, a.port), true);
            for s in &a.scopes {
                acc.push(ChangeKind::Added, "api", format!("api {name}: scope {}", s.name), true);
            }
            for r in &a.allow {
                acc.push(ChangeKind::Added, "api", format!("api {name}: may {}", r.rule), true);
            }
            continue;
        };
        if o.host != a.host || o.port != a.port {
            acc.push(ChangeKind::Changed, "api", format!("api {name}: host {}:{} → {}:{}", o.host, o.port, a.host, a.port), true);
        }
        let names = |v: &[Scope]| -> BTreeSet<String> { v.iter().map(|s| s.name.clone()).collect() };
        for s in names(&a.scopes).difference(&names(&o.scopes)) {
            acc.push(ChangeKind::Added, "api", format!("api {name}: scope {s}"), true);
        }
        for s in names(&o.scopes).difference(&names(&a.scopes)) {
            acc.push(ChangeKind::Removed, "api", format!("api {name}: scope {s}"), false);
        }
        let rules = |v: &[HttpRuleEntry]| -> BTreeSet<String> { v.iter().map(|r| r.rule.to_string()).collect() };
        for r in rules(&a.allow).difference(&rules(&o.allow)) {
            acc.push(ChangeKind::Added, "api", format!("api {name}: may {r}"), true);
        }
        for r in rules(&o.allow).difference(&rules(&a.allow)) {
            acc.push(ChangeKind::Removed, "api", format!("api {name}: may {r}"), false);
        }
        for r in rules(&a.deny).difference(&rules(&o.deny)) {
            acc.push(ChangeKind::Added, "api", format!("api {name}: never {r}"), false);
        }
        for r in rules(&o.deny).difference(&rules(&a.deny)) {
            acc.push(ChangeKind::Removed, "api", format!("api {name}: never {r}"), true);
        }
        let cred = |c: &Option<Credential>| c.as_ref().map(|c| format!("{} from {:?}", c.header, c.source));
        if cred(&o.credential) != cred(&a.credential) {
            acc.push(
                ChangeKind::Changed,
                "api",
                format!("api {name}: credential {} → {}", cred(&o.credential).unwrap_or_else(|| "none".into()), cred(&a.credential).unwrap_or_else(|| "none".into())),
                a.credential.is_some(),
            );
        }
    }
    for (name, o) in &old.apis {
        if !new.apis.contains_key(name) {
            acc.push(ChangeKind::Removed, "api", format!("may call api {name} ({}:{})", o.host, o.port), false);
        }
    }
    // Resources.
    let (r0, r1) = (&old.resources, &new.resources);
    limit_change(&mut acc, "memory limit", r0.memory_bytes, r1.memory_bytes, &format_size);
    limit_change(&mut acc, "process limit", r0.pids, r1.pids, &|v| v.to_string());
    limit_change(&mut acc, "cpu limit", r0.cpu_millicores, r1.cpu_millicores, &|v| format!("{:.3} cores", v as f64 / 1000.0));
    limit_change(&mut acc, "wall-time limit", r0.wall_time_ms, r1.wall_time_ms, &format_duration_ms);
    // Syscalls.
    if old.syscalls.base != new.syscalls.base {
        let show = |b: &SyscallBase| match b {
            SyscallBase::Default => "default".to_string(),
            SyscallBase::Oci { path, .. } => format!("OCI profile {path}"),
        };
        acc.push(ChangeKind::Changed, "syscalls", format!("syscall base {} → {}", show(&old.syscalls.base), show(&new.syscalls.base)), true);
    }
    for r in &new.syscalls.rules {
        match old.syscalls.rules.iter().find(|o| o.name == r.name) {
            None => acc.push(
                ChangeKind::Added,
                "syscalls",
                format!("syscall {}: {}", r.name, action_word(r.action)),
                action_rank(r.action) >= action_rank(SyscallAction::Log),
            ),
            Some(o) if o.action != r.action => acc.push(
                ChangeKind::Changed,
                "syscalls",
                format!("syscall {}: {} → {}", r.name, action_word(o.action), action_word(r.action)),
                action_rank(r.action) > action_rank(o.action),
            ),
            Some(_) => {}
        }
    }
    for o in &old.syscalls.rules {
        if !new.syscalls.rules.iter().any(|r| r.name == o.name) {
            acc.push(
                ChangeKind::Removed,
                "syscalls",
                format!("syscall {}: {}", o.name, action_word(o.action)),
                action_rank(o.action) < action_rank(SyscallAction::Log),
            );
        }
    }
    // Enforcement.
    for layer in Layer::ALL {
        let (a, b) = (old.enforcement.level(layer), new.enforcement.level(layer));
        if a != b {
            let w = |l: Level| if l == Level::Required { "required" } else { "best-effort" };
            acc.push(ChangeKind::Changed, "enforcement", format!("{} {} → {}", layer.word(), w(a), w(b)), b == Level::BestEffort);
        }
    }
    if old.enforcement.min_landlock_abi != new.enforcement.min_landlock_abi {
        let show = |v: Option<u8>| v.map(|v| v.to_string()).unwrap_or_else(|| "any".into());
        acc.push(
            ChangeKind::Changed,
            "enforcement",
            format!("minimum Landlock ABI {} → {}", show(old.enforcement.min_landlock_abi), show(new.enforcement.min_landlock_abi)),
            new.enforcement.min_landlock_abi.unwrap_or(0) < old.enforcement.min_landlock_abi.unwrap_or(0),
        );
    }
    if old.agent.command != new.agent.command {
        let show = |c: &Option<Vec<String>>| c.as_ref().map(|c| c.join(" ")).unwrap_or_else(|| "none".into());
        acc.push(ChangeKind::Changed, "agent", format!("default command {} → {}", show(&old.agent.command), show(&new.agent.command)), false);
    }
    let mut changes = acc.0;
    changes.sort_by(|a, b| (a.category, &a.text, a.kind).cmp(&(b.category, &b.text, b.kind)));
    PolicyDiff {
        agent: new.agent.name.clone(),
        changes,
        exposure_old: exposure(old).score,
        exposure_new: exposure(new).score,
    }
}
