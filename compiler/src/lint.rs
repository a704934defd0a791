//! Lints and the exposure score.
//!
//! Input: a lowered [`Policy`]. Output: warnings with stable codes (never errors: a risky
//! grant may be intended) and an [`Exposure`] score from 0 (nothing granted) to 10, with the
//! reasons that add up to it, in the spirit of `systemd-analyze security`.
//! Invariants: deterministic (same policy, same warnings in the same order, same score);
//! the score is the capped sum of the listed reasons, so a reader can check it by hand.

use std::collections::HashMap;

use crate::diag::{Code, Diagnostic};
use crate::ir::net::Destination;
use crate::ir::path::{PathPattern, Root};
use crate::ir::*;

/// Executables that run arbitrary code given to them: granting one grants everything it
/// can run.
pub const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "fish", "csh", "tcsh", "busybox", "env", "python", "python2", "python3", "perl",
    "ruby", "node", "nodejs", "deno", "bun", "php", "lua", "tclsh", "osascript", "pwsh", "R", "Rscript", "java",
];

/// Secret locations, relative to a home directory (for `/home/*`, `/root`, `${HOME}`).
pub const HOME_SECRETS: &[&str] = &[".ssh", ".aws", ".config/gcloud", ".azure", ".kube", ".docker/config.json", ".netrc", ".git-credentials", ".npmrc", ".pypirc", ".gnupg", ".password-store"];
/// Secret locations at fixed absolute paths.
const SYSTEM_SECRETS: &[&str] = &["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/root", "/var/run/secrets", "/run/secrets"];

/// Unix sockets of daemons that act as root for whoever connects (container engines, the
/// system bus, systemd's private interfaces, the host's init): a grant covering one hands
/// the agent the host.
const ROOT_EQUIVALENT_SOCKETS: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/crio/crio.sock",
    "/run/dbus/system_bus_socket",
    "/var/run/dbus/system_bus_socket",
    "/run/systemd/private",
    "/run/systemd/io.systemd.Manager",
    "/run/snapd.socket",
    "/run/libvirt/libvirt-sock",
];

/// The root-equivalent daemon socket `path` is, if it is one.
pub fn root_equivalent_socket(path: &str) -> Option<&'static str> {
    ROOT_EQUIVALENT_SOCKETS.iter().find(|s| **s == path).copied()
}

/// The root-equivalent daemon sockets a unix grant covers.
fn root_equivalent_sockets(grant: &PathPattern) -> Vec<&'static str> {
    ROOT_EQUIVALENT_SOCKETS
        .iter()
        .filter(|s| PathPattern::parse(s, &|_| false).is_ok_and(|p| grant.covers(&p)))
        .copied()
        .collect()
}

/// Parameter names that conventionally hold source code, where `.env` files live.
const CODE_PARAMS: &[&str] = &["WORKSPACE", "REPO", "REPOSITORY", "PROJECT", "SRC", "SOURCE", "APP", "CODE", "CHECKOUT", "HOME"];

pub use aegis_policy::why::DANGEROUS_SYSCALLS;

#[derive(Clone, Debug, serde::Serialize)]
pub struct ExposureReason {
    pub points: f64,
    pub reason: String,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct Exposure {
    /// 0.0–10.0, one decimal.
    pub score: f64,
    pub level: &'static str,
    pub reasons: Vec<ExposureReason>,
}

/// Whether an exec grant names a shell or interpreter (`python3.11` counts as `python`).
fn is_interpreter(p: &PathPattern) -> bool {
    let name = basename(p);
    let bare = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    INTERPRETERS.contains(&name) || INTERPRETERS.contains(&bare)
}

fn basename(p: &PathPattern) -> &str {
    p.components.last().map(String::as_str).unwrap_or("")
}

fn pat(s: &str) -> Option<PathPattern> {
    PathPattern::parse(s, &|_| false).ok()
}

/// The rules of one access kind, indexed by path, so "which rule covers `p`" and "which rule
/// lies inside `p`" cost one hash lookup per component of `p` instead of a scan of every
/// rule (the scans made linting quadratic: 10,000 rules took 100 ms).
struct PathIndex<'p> {
    /// Rule paths → the rule.
    exact: HashMap<(&'p Root, &'p [String]), &'p FsRule>,
    /// Every prefix of a rule path → the first rule (in IR order) below it.
    below: HashMap<(&'p Root, &'p [String]), &'p FsRule>,
}

impl<'p> PathIndex<'p> {
    fn new(rules: impl Iterator<Item = &'p FsRule>) -> PathIndex<'p> {
        let mut exact = HashMap::new();
        let mut below = HashMap::new();
        for r in rules {
            let c = r.path.components.as_slice();
            exact.entry((&r.path.root, c)).or_insert(r);
            for k in 0..=c.len() {
                below.entry((&r.path.root, c.get(..k).unwrap_or(c))).or_insert(r);
            }
        }
        PathIndex { exact, below }
    }

    /// The rule covering `p` that comes first in IR order (the shortest one: a prefix sorts
    /// before its extensions), as the scan `rules.find(|r| r.path.covers(p))` would find.
    fn covering(&self, p: &PathPattern) -> Option<&'p FsRule> {
        let c = p.components.as_slice();
        (0..=c.len()).find_map(|k| self.exact.get(&(&p.root, c.get(..k).unwrap_or(c))).copied())
    }

    /// The first rule that covers `p` or lies inside it, as the scan
    /// `rules.find(|r| r.path.covers(p) || p.covers(&r.path))` would find.
    fn overlapping(&self, p: &PathPattern) -> Option<&'p FsRule> {
        self.covering(p).or_else(|| self.below.get(&(&p.root, p.components.as_slice())).copied())
    }
}

/// Concrete secret paths that a grant `g` makes readable (without a covering deny).
fn readable_secrets(denies: &PathIndex<'_>, g: &FsRule) -> Vec<String> {
    // Most grants cannot reach a secret location at all; say so before building candidates.
    let may_reach = match &g.path.root {
        Root::Param(p) => p == "HOME" || (g.path.components.is_empty() && CODE_PARAMS.contains(&p.as_str())),
        Root::Absolute => g.path.components.first().is_none_or(|c| ["etc", "root", "var", "run", "home"].contains(&c.as_str())),
    };
    if !may_reach {
        return Vec::new();
    }
    let mut candidates: Vec<PathPattern> = SYSTEM_SECRETS.iter().filter_map(|s| pat(s)).collect();
    // Home directories: `/root/...`, `/home/<anyone>/...`, `${HOME}/...`.
    let homes: Vec<PathPattern> = match &g.path.root {
        Root::Param(p) if p == "HOME" => vec![PathPattern { root: g.path.root.clone(), components: vec![] }],
        Root::Param(_) => vec![],
        Root::Absolute => {
            let mut h = vec![];
            h.extend(pat("/root"));
            // A grant on `/home` or above reaches every user's home; on `/home/u` just u's.
            match g.path.components.first().map(String::as_str) {
                None => h.extend(pat("/home/*user*")),
                Some("home") if g.path.components.len() <= 2 => {
                    let user = g.path.components.get(1).cloned().unwrap_or_else(|| "*user*".into());
                    h.push(PathPattern { root: Root::Absolute, components: vec!["home".into(), user] });
                }
                _ => {}
            }
            h
        }
    };
    for h in homes {
        for s in HOME_SECRETS {
            let mut c = h.clone();
            c.components.extend(s.split('/').map(str::to_string));
            candidates.push(c);
        }
    }
    // `.env` files at the top of a parameter tree that holds code (a checked-out
    // repository, an application directory): that is where such files live.
    if let Root::Param(p) = &g.path.root
        && g.path.components.is_empty()
        && CODE_PARAMS.contains(&p.as_str())
    {
        let mut env = g.path.clone();
        env.components.push(".env".into());
        candidates.push(env);
    }
    candidates
        .into_iter()
        .filter(|c| g.path.covers(c) && denies.covering(c).is_none())
        .map(|c| c.to_string().replace("*user*", "*"))
        .collect()
}

pub fn lint(policy: &Policy) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let fs = &policy.filesystem;
    let denies = PathIndex::new(fs.rules_of(FsAccess::Deny));
    let writes = PathIndex::new(fs.rules_of(FsAccess::Write));
    let user_rules = || fs.rules.iter().filter(|r| r.origin.is_some());
    // A literal grant under /tmp names the sandbox's private /tmp, never the host's: the
    // mount plan does not bind it (on a shared host another user may have made it) and the
    // agent finds an empty directory. A parameter is checked at launch and bound.
    for r in user_rules().filter(|r| r.access != FsAccess::Deny && r.path.root == Root::Absolute && r.path.components.len() > 1) {
        if r.path.components.first().is_some_and(|c| c == "tmp") {
            out.push(
                Diagnostic::warning(Code::LintPrivateTmp, format!("'{}' is inside the sandbox's private /tmp: the agent gets an empty directory of its own there, never the host's", r.path))
                    .at_opt(r.origin)
                    .label("not the host's")
                    .help("to give the agent this host directory, declare a parameter (`[parameters] WORKSPACE = \"...\"`, grant `${WORKSPACE}`) and pass `--param WORKSPACE=<dir>`: it is checked at launch and bound into the private /tmp"),
            );
        }
    }
    for e in user_rules().filter(|r| r.access == FsAccess::Exec) {
        if let Some(w) = writes.overlapping(&e.path) {
            out.push(
                Diagnostic::warning(Code::LintWriteAndExec, format!("'{}' is both writable (via '{}') and executable", e.path, w.path))
                    .at_opt(e.origin)
                    .label("executable here")
                    .help("an agent that can write what it can execute can run any code it downloads; keep executables out of write paths"),
            );
        }
        if is_interpreter(&e.path) {
            out.push(
                Diagnostic::warning(Code::LintInterpreter, format!("'{}' is a shell or interpreter: it runs any code given to it", e.path))
                    .at_opt(e.origin)
                    .label("interpreter")
                    .help("the other layers (filesystem, network, syscalls) are what limit it; prefer granting the specific tools the agent needs"),
            );
        }
        if e.path.components.len() <= 1 && e.path.root == Root::Absolute {
            out.push(
                Diagnostic::warning(Code::LintInterpreter, format!("exec grant '{}' makes a whole top-level tree executable", e.path))
                    .at_opt(e.origin)
                    .help("grant the executables the agent needs one by one"),
            );
        }
    }
    for g in user_rules().filter(|r| r.access != FsAccess::Deny) {
        let secrets = readable_secrets(&denies, g);
        if !secrets.is_empty() {
            out.push(
                Diagnostic::warning(Code::LintReadableSecret, format!("{} grant '{}' makes secrets readable: {}", g.access.word(), g.path, secrets.join(", ")))
                    .at_opt(g.origin)
                    .label("covers secrets")
                    .help(format!("add them to [filesystem] deny, e.g. deny = [\"{}\"]", secrets.first().map(String::as_str).unwrap_or(""))),
            );
        }
        if let Some(d) = denies.covering(&g.path) {
            out.push(
                Diagnostic::warning(Code::LintShadowedGrant, format!("{} grant '{}' has no effect: deny '{}' covers it", g.access.word(), g.path, d.path))
                    .at_opt(g.origin)
                    .label("never effective")
                    .help("deny beats allow; remove the grant or narrow the deny"),
            );
        }
        if g.access == FsAccess::Write && g.path.root == Root::Absolute && g.path.components.len() <= 1 && basename(&g.path) != "tmp" {
            out.push(
                Diagnostic::warning(Code::LintBroadWrite, format!("write grant '{}' covers a whole top-level tree", g.path))
                    .at_opt(g.origin)
                    .help("grant the directories the agent writes, e.g. a ${WORKSPACE} parameter"),
            );
        }
    }
    out.extend(protection_lints(policy));
    for e in &policy.network.allow {
        let any_addr = matches!(&e.destination, Destination::Network(c) if c.is_any());
        let any_port = e.ports.iter().any(|p| p.is_any());
        if any_addr || any_port {
            out.push(
                Diagnostic::warning(
                    Code::LintNetworkAny,
                    format!("endpoint '{e}' allows {}", if any_addr { "any address" } else { "any port" }),
                )
                .at_opt(e.origin)
                .label("wide open")
                .help("list the hosts and ports the agent needs; data can leave through any open endpoint"),
            );
        }
    }
    let fs_rules = &policy.filesystem.rules;
    for g in policy.network.unix.iter().filter(|g| g.origin.is_some()) {
        let daemons = root_equivalent_sockets(&g.path);
        if !daemons.is_empty() {
            out.push(
                Diagnostic::warning(Code::LintBroadUnix, format!("unix grant '{}' lets the agent talk to {}", g.path, daemons.join(", ")))
                    .at_opt(g.origin)
                    .label("root-equivalent daemons")
                    .help("these daemons act as root for whoever connects; grant the one socket the agent needs, e.g. unix = [\"/run/app/app.sock\"]"),
            );
        }
        if let Some(d) = fs_rules.iter().find(|r| r.access == FsAccess::Deny && r.path.covers(&g.path)) {
            out.push(
                Diagnostic::warning(Code::LintShadowedGrant, format!("unix grant '{}' is inside deny pattern '{}'", g.path, d.path))
                    .at_opt(g.origin)
                    .label("never takes effect")
                    .help("deny beats every grant: remove one of the two"),
            );
        } else if !fs_rules.iter().any(|r| r.access != FsAccess::Deny && r.path.covers(&g.path)) {
            out.push(
                Diagnostic::warning(Code::LintUnixNotVisible, format!("unix grant '{}' names a path no filesystem grant makes visible", g.path))
                    .at_opt(g.origin)
                    .label("not in the sandbox")
                    .help("the sandbox's mount namespace holds only granted paths; add the socket's directory to [filesystem] read"),
            );
        }
    }
    for r in &policy.syscalls.rules {
        if matches!(r.action, SyscallAction::Allow | SyscallAction::Log) && DANGEROUS_SYSCALLS.contains(&r.name.as_str()) {
            out.push(
                Diagnostic::warning(Code::LintDangerousSyscall, format!("system call '{}' is explicitly allowed", r.name))
                    .at_opt(r.origin)
                    .label("widens the kernel attack surface")
                    .help("AEGIS denies it by default because it can break isolation; keep it only if the agent cannot work without it"),
            );
        }
    }
    let res = &policy.resources;
    let missing: Vec<&str> = [
        (res.memory_bytes.is_none(), "memory"),
        (res.pids.is_none(), "pids"),
        (res.wall_time_ms.is_none(), "wall_time"),
    ]
    .into_iter()
    .filter(|(m, _)| *m)
    .map(|(_, n)| n)
    .collect();
    if !missing.is_empty() {
        out.push(
            Diagnostic::warning(Code::LintNoLimits, format!("no {} limit: a runaway agent can exhaust the host", missing.join(", ")))
                .at_opt(policy.agent.origin)
                .help("add [resources] memory = \"1GiB\", pids = 256, wall_time = \"1h\""),
        );
    }
    // Settings the network mode makes meaningless: better said than silently dropped.
    let net = &policy.network;
    if net.mode == crate::ir::NetworkMode::Proxy {
        for r in &net.dns {
            out.push(
                Diagnostic::warning(Code::LintIgnoredSetting, format!("dns resolver '{}' has no effect in proxy mode", r.address))
                    .at_opt(r.origin)
                    .label("ignored")
                    .help("the supervisor resolves names for the proxy (and vets the answers); remove it, or pin answers at launch with `aegis-exec --resolve`"),
            );
        }
    }
    if net.mode == crate::ir::NetworkMode::None {
        for d in &net.deny {
            out.push(
                Diagnostic::warning(Code::LintIgnoredSetting, format!("deny endpoint '{d}' has no effect in none mode"))
                    .at_opt(d.origin)
                    .label("ignored")
                    .help("in `none` mode nothing outside the sandbox is reachable at all; the deny is redundant"),
            );
        }
    }
    for (layer, level) in &policy.enforcement.layers {
        if *level == Level::BestEffort {
            out.push(
                Diagnostic::warning(Code::LintBestEffort, format!("enforcement layer '{}' is best-effort: hosts without it run the agent anyway", layer.word()))
                    .at_opt(policy.agent.origin)
                    .help("the launch report and audit log say what was enforced; `required` refuses such hosts instead"),
            );
        }
    }
    // The mount plan needs a mount namespace: best-effort namespaces with required mounts
    // still refuse every host without user namespaces, which is rarely what was meant.
    let level = |l: Layer| policy.enforcement.level(l);
    if level(Layer::Namespaces) == Level::BestEffort && level(Layer::Mounts) == Level::Required {
        out.push(
            Diagnostic::warning(
                Code::LintBestEffort,
                "enforcement layer 'namespaces' is best-effort but 'mounts' is required: hosts without user namespaces still refuse the launch",
            )
            .at_opt(policy.agent.origin)
            .help("the mount plan needs a mount namespace; set `mounts = \"best-effort\"` too for the Landlock + seccomp mode, or make `namespaces` required"),
        );
    }
    out
}

/// Write grants at or inside a built-in protection: the most specific rule decides, so the
/// grant lifts the protection there.
fn lifting_writes(fs: &Filesystem) -> Vec<(&FsRule, &FsRule)> {
    let protections: Vec<&FsRule> = fs.rules.iter().filter(|r| r.protection).collect();
    fs.rules_of(FsAccess::Write)
        .filter(|w| w.origin.is_some())
        .filter_map(|w| protections.iter().find(|p| p.path.covers(&w.path)).map(|p| (w, *p)))
        .collect()
}

/// Opt-outs of the built-in protection list: each lets the agent plant code that the user's
/// tools run on the host after the session.
fn protection_lints(policy: &Policy) -> Vec<Diagnostic> {
    let fs = &policy.filesystem;
    let mut out = Vec::new();
    if !fs.protection.enabled {
        out.push(
            Diagnostic::warning(Code::LintUnprotected, "the built-in protection list is off (`protect = false`)")
                .at_opt(fs.protection.origin)
                .label("no built-in protection")
                .help("below every write grant the agent can now write .git/hooks, .git/config, shell startup files, .envrc and editor and agent configs, which your own tools run on the host after the session; turn off only the protections you need with `unprotect = [...]`"),
        );
        for u in &fs.protection.unprotect {
            out.push(
                Diagnostic::warning(Code::LintIgnoredSetting, format!("unprotect '{}' has no effect with `protect = false`", u.path))
                    .at_opt(u.origin)
                    .label("ignored")
                    .help("the whole protection list is already off"),
            );
        }
        return out;
    }
    let candidates = crate::lower::protection_candidates(&fs.rules);
    for u in &fs.protection.unprotect {
        let mut covered: Vec<&str> = candidates.iter().filter(|(c, _)| u.path.covers(c)).map(|(_, e)| e.path).collect();
        covered.sort_unstable();
        covered.dedup();
        out.push(
            Diagnostic::warning(Code::LintUnprotected, format!("unprotect '{}' turns off a built-in protection", u.path))
                .at_opt(u.origin)
                .label("agent may write here")
                .help(format!(
                    "the agent can now write what this covers ({}), which your own tools run on the host after the session; review it before you use them",
                    if covered.is_empty() { "protected files".to_string() } else { covered.join(", ") }
                )),
        );
    }
    for (w, p) in lifting_writes(fs) {
        out.push(
            Diagnostic::warning(Code::LintUnprotected, format!("write grant '{}' lifts the built-in protection '{}'", w.path, p.path))
                .at_opt(w.origin)
                .label("most specific rule: writable")
                .help(format!("{}: {}; if that is intended, say so with unprotect = [\"{}\"]", p.path, p.note, p.path)),
        );
    }
    out
}

pub fn exposure(policy: &Policy) -> Exposure {
    let mut reasons: Vec<ExposureReason> = Vec::new();
    let mut add = |points: f64, reason: String| reasons.push(ExposureReason { points, reason });
    let fs = &policy.filesystem;
    let user = |a: FsAccess| fs.rules_of(a).filter(|r| r.origin.is_some());
    for w in user(FsAccess::Write) {
        let top = w.path.root == Root::Absolute && w.path.components.len() <= 1 && basename(&w.path) != "tmp";
        if top {
            add(2.5, format!("writes a top-level tree: {}", w.path));
        } else if w.path.root == Root::Absolute {
            add(0.8, format!("writes outside launch parameters: {}", w.path));
        } else {
            add(0.3, format!("writes {}", w.path));
        }
    }
    if user(FsAccess::Read).any(|r| r.path.is_root()) {
        add(1.5, "reads the whole filesystem".into());
    }
    let denies = PathIndex::new(fs.rules_of(FsAccess::Deny));
    let writes = PathIndex::new(fs.rules_of(FsAccess::Write));
    let secrets: usize = user(FsAccess::Read).chain(user(FsAccess::Write)).map(|g| readable_secrets(&denies, g).len()).sum();
    if secrets > 0 {
        add((secrets as f64 * 0.5).min(2.5), format!("{secrets} secret location(s) readable"));
    }
    let has_write = user(FsAccess::Write).next().is_some();
    if !fs.protection.enabled && has_write {
        add(2.0, "built-in protection list off: files your tools run on the host are writable".into());
    } else {
        let opt_outs = fs.protection.unprotect.len() + lifting_writes(fs).len();
        if opt_outs > 0 {
            add((opt_outs as f64 * 0.5).min(2.0), format!("{opt_outs} built-in protection(s) turned off"));
        }
    }
    let interp = user(FsAccess::Exec).filter(|e| is_interpreter(&e.path)).count();
    if interp > 0 {
        add((interp as f64 * 0.7).min(2.0), format!("{interp} shell/interpreter(s) executable"));
    }
    let execs = user(FsAccess::Exec).count();
    if execs > interp {
        add(((execs - interp) as f64 * 0.1).min(0.8), format!("{} other executable(s)", execs - interp));
    }
    let wx = user(FsAccess::Exec).filter(|e| writes.covering(&e.path).is_some()).count();
    if wx > 0 {
        add(2.0, format!("{wx} executable path(s) also writable"));
    }
    let net = &policy.network;
    match net.mode {
        NetworkMode::None => {}
        NetworkMode::Proxy => add((0.5 + 0.1 * net.allow.len() as f64).min(1.5), format!("network through the proxy to {} endpoint(s)", net.allow.len())),
        NetworkMode::Host => add((1.0 + 0.2 * net.allow.len() as f64).min(2.5), format!("host network to {} endpoint(s)", net.allow.len())),
    }
    let any = net.allow.iter().filter(|e| matches!(&e.destination, Destination::Network(c) if c.is_any())).count();
    if any > 0 {
        add(3.0, "network to any address".into());
    }
    let unix = net.unix.iter().filter(|g| g.origin.is_some()).count();
    if unix > 0 {
        add((0.3 * unix as f64).min(1.0), format!("{unix} unix socket grant(s)"));
    }
    let daemons: std::collections::BTreeSet<&str> = net.unix.iter().flat_map(|g| root_equivalent_sockets(&g.path)).collect();
    if !daemons.is_empty() {
        add(3.0, format!("root-equivalent daemon socket(s) reachable: {}", daemons.into_iter().collect::<Vec<_>>().join(", ")));
    }
    let creds = policy.apis.values().filter(|a| a.credential.is_some()).count();
    if creds > 0 {
        add(0.3 * creds as f64, format!("{creds} API credential(s) injected"));
    }
    let broad_api = policy.apis.values().flat_map(|a| &a.allow).filter(|r| r.rule.method.is_none() && r.rule.segments.first() == Some(&crate::ir::api::Segment::Any)).count();
    if broad_api > 0 {
        add(1.0, format!("{broad_api} API rule(s) allow every request"));
    }
    let dangerous = policy
        .syscalls
        .rules
        .iter()
        .filter(|r| matches!(r.action, SyscallAction::Allow | SyscallAction::Log) && DANGEROUS_SYSCALLS.contains(&r.name.as_str()))
        .count();
    if dangerous > 0 {
        add((dangerous as f64 * 1.5).min(3.0), format!("{dangerous} dangerous system call(s) allowed"));
    }
    if let SyscallBase::Oci { path, .. } = &policy.syscalls.base {
        add(0.5, format!("syscall base from an external profile ({path})"));
    }
    let r = &policy.resources;
    if r.memory_bytes.is_none() {
        add(0.5, "no memory limit".into());
    }
    if r.pids.is_none() {
        add(0.5, "no process limit".into());
    }
    if r.wall_time_ms.is_none() {
        add(0.2, "no wall-time limit".into());
    }
    let best_effort = policy.enforcement.layers.values().filter(|l| **l == Level::BestEffort).count();
    if best_effort > 0 {
        add(0.7 * best_effort as f64, format!("{best_effort} enforcement layer(s) best-effort"));
    }
    for r in reasons.iter_mut() {
        r.points = (r.points * 10.0).round() / 10.0;
    }
    let total: f64 = reasons.iter().map(|r| r.points).sum();
    let score = (total.min(10.0) * 10.0).round() / 10.0;
    let level = match score {
        s if s < 2.0 => "low",
        s if s < 5.0 => "medium",
        s if s < 7.5 => "high",
        _ => "critical",
    };
    Exposure { score, level, reasons }
}
