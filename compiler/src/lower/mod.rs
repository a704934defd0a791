//! Lowering: composed syntax tree → IR.
//!
//! Input: the merged [`PolicyFile`] and the [`SourceMap`] it came from.
//! Output: a [`Policy`] (IR) when no error was found, and diagnostics either way.
//! Every value is checked here against the language definition in `docs/policy.md`:
//! paths, parameters, host names, CIDRs, ports, HTTP rules, units, errno names, levels.
//! Invariants: an error never yields a policy; every IR rule carries the origin of the
//! text it came from; the output is sorted and deduplicated (see `ir` invariants).

use aegis_policy::errno;
pub mod protect;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

pub use errno::{ERRNOS, lookup as errno_lookup, name_of as errno_name};

use crate::diag::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::ir::net::{Cidr, Destination, PortRange, Protocol, parse_host_name};
use crate::ir::path::{PathError, PathPattern};
use crate::ir::units::{parse_duration_ms, parse_size};
use crate::ir::*;
use crate::source::{Origin, SourceMap};
use crate::syntax::ast::{self, EndpointSyntax, PolicyFile, SString, Scalar, Spanned};

/// Default size of the private /tmp.
pub const DEFAULT_TMP_SIZE: u64 = 64 << 20;

/// Why the private /tmp is a built-in unix grant.
pub const PRIVATE_TMP_SOCKETS: &str = "the private /tmp holds only the agent's own sockets";

/// Dynamic loaders of the architectures AEGIS emits (x86_64, aarch64; glibc and musl,
/// merged-/usr and classic layouts), from the Landlock target's list. Paths absent on a
/// host are skipped at launch.
pub fn dynamic_loaders() -> impl Iterator<Item = &'static str> {
    ["x86_64", "aarch64"].into_iter().flat_map(|a| aegis_targets::landlock::loader_paths(a).iter().copied())
}

struct Lower<'a> {
    sources: &'a SourceMap,
    diags: &'a mut Diagnostics,
    params: BTreeSet<String>,
}

/// The one way to a [`Checked`] policy from the language: every value is checked as it is
/// lowered, then the whole IR against its invariants (a violation is a bug here, reported as
/// `aegis::policy::internal`, never handed to a target).
pub fn lower(pf: &PolicyFile, sources: &SourceMap, diags: &mut Diagnostics) -> Option<Checked> {
    let mut l = Lower { sources, diags, params: BTreeSet::new() };
    let policy = l.policy(pf);
    if l.diags.has_errors() {
        return None;
    }
    match Checked::check(policy?) {
        Ok(checked) => Some(checked),
        Err(v) => {
            diags.push(Diagnostic::error(Code::Internal, format!("the lowered policy breaks an IR invariant: {v}")).help("this is a bug in aegisc; please report it with the policy"));
            None
        }
    }
}

fn is_agent_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 48
        && matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn builtin(access: FsAccess, path: &str, note: &'static str) -> Option<FsRule> {
    PathPattern::parse(path, &|_| false).ok().map(|path| FsRule { access, path, origin: None, note: note.into(), protection: false })
}

/// Whether the sandbox replaces this absolute tree with its own (private `/tmp`, minimal
/// `/dev`, fresh `/proc`): nothing of the host is written there, so nothing needs protecting.
fn replaced_by_sandbox(p: &PathPattern) -> bool {
    p.param().is_none() && p.components.first().is_some_and(|c| ["tmp", "dev", "proc"].contains(&c.as_str()))
}

/// The built-in protections below the user's write grants ([`protect::PROTECTED`]), minus
/// what the policy opts out of. Reports `unprotect` entries that cover no protection.
/// Every path the protection list names below the user's write grants (those a deny or the
/// sandbox's private trees make moot left out), with its list entry.
pub fn protection_candidates(rules: &[FsRule]) -> Vec<(PathPattern, &'static protect::Protected)> {
    let denied = |p: &PathPattern| rules.iter().any(|r| r.access == FsAccess::Deny && r.path.covers(p));
    let mut candidates = Vec::new();
    for w in rules.iter().filter(|r| r.access == FsAccess::Write && r.origin.is_some()) {
        if replaced_by_sandbox(&w.path) || denied(&w.path) {
            continue;
        }
        for e in protect::PROTECTED {
            let mut path = w.path.clone();
            path.components.extend(e.path.split('/').map(str::to_string));
            if !denied(&path) {
                candidates.push((path, e));
            }
        }
    }
    candidates
}

fn protections(rules: &[FsRule], unprotect: &[Unprotect], enabled: bool, diags: &mut Diagnostics) -> Vec<FsRule> {
    let candidates = protection_candidates(rules);
    if !enabled {
        return Vec::new();
    }
    for u in unprotect {
        if !candidates.iter().any(|(c, _)| u.path.covers(c)) {
            let mut near: Vec<String> = candidates.iter().filter(|(c, _)| c.root == u.path.root).map(|(c, _)| c.to_string()).collect();
            near.dedup();
            let mut shown = near.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
            if near.len() > 8 {
                shown.push_str(&format!(", ... ({} in all; `aegisc inspect` lists them)", near.len()));
            }
            let help = match did_you_mean(&u.path.to_string(), near.iter().map(String::as_str)) {
                Some(m) => format!("did you mean `{m}`? (`aegisc inspect` lists every protected path)"),
                None if near.is_empty() => "built-in protections lie below write grants; this policy protects nothing there".to_string(),
                None => format!("protected paths of this policy: {shown}"),
            };
            let mut d = Diagnostic::error(Code::UnknownProtection, format!("unprotect `{}` covers no built-in protection", u.path)).help(help);
            if let Some(o) = u.origin {
                d = d.at(o).label("nothing protected here");
            }
            diags.push(d);
        }
    }
    candidates
        .into_iter()
        .filter(|(c, _)| !unprotect.iter().any(|u| u.path.covers(c)))
        .map(|(path, e)| FsRule { access: FsAccess::Read, path, origin: None, note: e.why.into(), protection: true })
        .collect()
}

impl Lower<'_> {
    fn err(&mut self, code: Code, origin: Origin, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::error(code, msg).at(origin).help(help));
    }

    fn policy(&mut self, pf: &PolicyFile) -> Option<Policy> {
        let root_file = pf.file?;
        let agent = self.agent(pf, root_file);
        let parameters = self.parameters(&pf.parameters);
        let filesystem = self.filesystem(pf);
        let mut network = self.network(&pf.network);
        let apis = self.apis(&pf.apis, network.as_ref().map(|n| n.mode));
        if let Some(n) = network.as_mut() {
            for api in apis.values() {
                n.allow.push(Endpoint {
                    destination: Destination::Name(api.host.clone()),
                    ports: vec![PortRange { first: api.port, last: api.port }],
                    protocol: Protocol::Tcp,
                    source: EndpointSource::Api(api.name.clone()),
                    exe: api.exe.clone(),
                    origin: api.origin,
                });
            }
            n.allow.sort();
            n.allow.dedup_by(|a, b| a.destination == b.destination && a.ports == b.ports && a.protocol == b.protocol && a.exe == b.exe);
        }
        let resources = self.resources(&pf.resources);
        let syscalls = self.syscalls(&pf.syscalls);
        let enforcement = self.enforcement(&pf.enforcement);
        Some(Policy {
            sources: self.sources.files().map(|(_, f)| f.name.clone()).collect(),
            agent: agent?,
            parameters,
            filesystem: filesystem?,
            network: network?,
            apis,
            resources: resources?,
            syscalls: syscalls?,
            enforcement: enforcement?,
        })
    }

    fn agent(&mut self, pf: &PolicyFile, root_file: crate::source::FileId) -> Option<Agent> {
        let Some(name) = &pf.agent.name else {
            self.diags.push(
                Diagnostic::error(Code::MissingKey, "the policy has no agent name")
                    .at(Origin { file: root_file, span: Default::default() })
                    .help("add\n[agent]\nname = \"my-agent\""),
            );
            return None;
        };
        if name.value.is_empty() {
            self.err(Code::EmptyValue, name.origin, "agent.name is empty", "agent names look like `inbox-manager`");
            return None;
        }
        if !is_agent_name(&name.value) {
            let suggestion: String = name
                .value
                .to_ascii_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
                .take(48)
                .collect();
            self.err(
                Code::InvalidName,
                name.origin,
                format!("agent name `{}` is not allowed", name.value),
                format!("names are used in cgroup, nftables and audit records: lower-case letters, digits, `-` and `_`, at most 48 characters (e.g. `{suggestion}`)"),
            );
            return None;
        }
        let command = match &pf.agent.command {
            Some(c) if c.value.is_empty() => {
                self.err(Code::EmptyValue, c.origin, "agent.command is empty", "give the argv, e.g. [\"/usr/bin/python3\", \"agent.py\"]");
                None
            }
            Some(c) => Some(c.value.iter().map(|s| s.value.clone()).collect()),
            None => None,
        };
        Some(Agent {
            name: name.value.clone(),
            description: pf.agent.description.as_ref().map(|d| d.value.clone()),
            command,
            origin: Some(name.origin),
        })
    }

    fn parameters(&mut self, params: &[ast::Parameter]) -> BTreeMap<String, Parameter> {
        let mut out = BTreeMap::new();
        for p in params {
            let n = &p.name.value;
            let valid = n.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && n.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                self.err(
                    Code::InvalidName,
                    p.name.origin,
                    format!("parameter name `{n}` is not allowed"),
                    format!("parameter names are upper case: `{}`", n.to_ascii_uppercase().replace('-', "_")),
                );
                continue;
            }
            self.params.insert(n.clone());
            out.insert(n.clone(), Parameter { description: p.description.value.clone(), origin: Some(p.name.origin) });
        }
        out
    }

    fn path(&mut self, s: &SString, what: &str) -> Option<PathPattern> {
        let params = &self.params;
        match PathPattern::parse(&s.value, &|n| params.contains(n)) {
            Ok(p) => Some(p),
            Err(e) => {
                // Control characters (a NUL from `\u0000`) are shown escaped, never raw.
                let shown: String = s.value.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect();
                let v = &shown;
                let (code, msg, help) = match e {
                    PathError::Empty => (Code::EmptyValue, format!("empty {what} path"), "write an absolute path such as `/usr`".to_string()),
                    PathError::Relative => (
                        Code::RelativePath,
                        format!("{what} path `{v}` is relative"),
                        format!("paths are absolute (`/{v}`) or start with a parameter (`${{WORKSPACE}}/{v}`)"),
                    ),
                    PathError::Home => (
                        Code::HomePath,
                        format!("{what} path `{v}` uses `~`"),
                        format!("declare a parameter and write `${{HOME}}{}`", v.trim_start_matches('~')),
                    ),
                    PathError::NonNormal { suggestion } => (
                        Code::NonNormalPath,
                        format!("{what} path `{v}` is not normalised"),
                        format!("write `{suggestion}`"),
                    ),
                    PathError::DotDot => (
                        Code::DotDotPath,
                        format!("{what} path `{v}` contains `..`"),
                        "write the path without `..`: rules must name the subtree they grant".to_string(),
                    ),
                    PathError::UnsupportedGlob => (
                        Code::UnsupportedGlob,
                        format!("{what} path `{v}` uses a glob the kernel cannot enforce"),
                        "patterns are subtrees (`/usr` or `/usr/**` covers everything below /usr); list the concrete paths instead of `*`, `?`, `[...]` or a `**` in the middle".to_string(),
                    ),
                    PathError::InvalidGlob => (
                        Code::InvalidGlob,
                        format!("{what} path `{v}` is not a valid pattern"),
                        "only a trailing `/**` is allowed; see docs/policy.md#paths".to_string(),
                    ),
                    PathError::BadParameter => (
                        Code::InvalidPath,
                        format!("{what} path `{v}`: a parameter must be written `${{NAME}}` at the start"),
                        "e.g. `${WORKSPACE}/src`".to_string(),
                    ),
                    PathError::UnknownParameter(n) => {
                        let help = match did_you_mean(&n, self.params.iter().map(String::as_str)) {
                            Some(m) => format!("did you mean `${{{m}}}`? Otherwise declare it: [parameters] {n} = \"...\""),
                            None => format!("declare it: [parameters]\n{n} = \"what it is\""),
                        };
                        (Code::UnknownParameter, format!("unknown parameter `${{{n}}}` in `{v}`"), help)
                    }
                    PathError::Invalid(why) => (Code::InvalidPath, format!("{what} path `{v}` {why}"), "fix the path".to_string()),
                };
                self.diags.push(Diagnostic::error(code, msg).at(s.origin).label("this path").help(help));
                None
            }
        }
    }

    fn filesystem(&mut self, pf: &PolicyFile) -> Option<Filesystem> {
        let mut rules = Vec::new();
        let lists: [(&[SString], FsAccess, &str); 4] = [
            (&pf.filesystem.read, FsAccess::Read, "read"),
            (&pf.filesystem.write, FsAccess::Write, "write"),
            (&pf.filesystem.deny, FsAccess::Deny, "deny"),
            (&pf.exec.allow, FsAccess::Exec, "exec"),
        ];
        for (list, access, what) in lists {
            for s in list {
                if let Some(path) = self.path(s, what) {
                    rules.push(FsRule { access, path, origin: Some(s.origin), note: "".into(), protection: false });
                }
            }
        }
        let mut unprotect = Vec::new();
        for s in &pf.filesystem.unprotect {
            if let Some(path) = self.path(s, "unprotect") {
                unprotect.push(Unprotect { path, origin: Some(s.origin) });
            }
        }
        unprotect.sort();
        unprotect.dedup_by(|a, b| a.path == b.path);
        let protection = Protection {
            enabled: pf.filesystem.protect.as_ref().is_none_or(|p| p.value),
            origin: pf.filesystem.protect.as_ref().map(|p| p.origin),
            unprotect,
        };
        let protected = protections(&rules, &protection.unprotect, protection.enabled, self.diags);
        rules.extend(protected);
        let has_exec = rules.iter().any(|r| r.access == FsAccess::Exec);
        // What every sandbox provides: a private /tmp, and the minimal /dev and own /proc
        // that the mount plan builds (the targets' list, so the two cannot drift apart).
        rules.extend(builtin(FsAccess::Write, "/tmp", "private tmpfs of tmp_size, discarded at exit"));
        for r in aegis_targets::landlock::runtime_rules() {
            let access = match r.access {
                aegis_targets::landlock::FsAccess::Write => FsAccess::Write,
                aegis_targets::landlock::FsAccess::Exec => FsAccess::Exec,
                aegis_targets::landlock::FsAccess::Deny => FsAccess::Deny,
                aegis_targets::landlock::FsAccess::Read => FsAccess::Read,
            };
            let note = if r.path.to_string() == "/proc" {
                "the agent's own procfs (its pid namespace only)"
            } else {
                "minimal /dev of the sandbox"
            };
            rules.extend(builtin(access, &r.path.to_string(), note));
        }
        if has_exec {
            for l in dynamic_loaders() {
                rules.extend(builtin(FsAccess::Exec, l, "dynamic loader: needed to start any dynamic executable"));
            }
        }
        rules.sort_by(|a, b| (a.access, &a.path, a.origin.is_none()).cmp(&(b.access, &b.path, b.origin.is_none())));
        rules.dedup_by(|later, first| later.access == first.access && later.path == first.path);
        let tmp_size = match &pf.filesystem.tmp_size {
            None => DEFAULT_TMP_SIZE,
            Some(s) => self.size(s, "filesystem.tmp_size", 1 << 20)?,
        };
        Some(Filesystem { rules, tmp_size, protection })
    }

    fn network(&mut self, n: &ast::NetworkSection) -> Option<Network> {
        let mode = match &n.mode {
            None => NetworkMode::None,
            Some(m) => match m.value.as_str() {
                "none" => NetworkMode::None,
                "proxy" => NetworkMode::Proxy,
                "host" => NetworkMode::Host,
                other => {
                    let help = match did_you_mean(other, ["none", "proxy", "host"]) {
                        Some(s) => format!("did you mean `{s}`? Modes: none, proxy, host"),
                        None => "modes: none (loopback only), proxy (through the AEGIS proxy), host (host network, filtered)".into(),
                    };
                    self.err(Code::InvalidMode, m.origin, format!("unknown network mode `{other}`"), help);
                    return None;
                }
            },
        };
        let mut ok = true;
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        for (list, out) in [(&n.allow, &mut allow), (&n.deny, &mut deny)] {
            for e in list {
                match self.endpoint(e) {
                    Some(ep) => out.push(ep),
                    None => ok = false,
                }
            }
        }
        let mut dns = Vec::new();
        for d in &n.dns {
            match d.value.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(a) => dns.push(Resolver { address: a, origin: Some(d.origin) }),
                Err(_) => {
                    ok = false;
                    self.err(Code::InvalidAddress, d.origin, format!("`{}` is not an IP address", d.value), "resolvers are IP addresses such as `1.1.1.1` or `2606:4700::1111`");
                }
            }
        }
        if mode == NetworkMode::None {
            for o in n.allow.iter().map(EndpointSyntax::origin).chain(n.dns.iter().map(|d| d.origin)) {
                ok = false;
                self.err(
                    Code::EndpointInNoneMode,
                    o,
                    "network mode is `none`, so this endpoint can never be reached",
                    "set [network] mode = \"proxy\" (names through the AEGIS proxy) or \"host\" (host network filtered by nftables)",
                );
            }
        }
        if mode != NetworkMode::Proxy {
            let named: Vec<(Option<Origin>, String)> = allow.iter().chain(&deny).filter(|e| !e.exe.is_empty()).map(|e| (e.origin, e.to_string())).collect();
            for (o, e) in named {
                ok = false;
                if let Some(o) = o {
                    self.err(
                        Code::ExeNeedsProxy,
                        o,
                        format!("`{e}` names programs, but in mode `{}` nothing can tell which program connects", mode.word()),
                        "set [network] mode = \"proxy\": the proxy identifies the program behind each connection",
                    );
                }
            }
        }
        if mode == NetworkMode::Host {
            for e in &allow {
                if let Destination::Wildcard(_) = e.destination
                    && let Some(o) = e.origin
                {
                    ok = false;
                    self.err(
                        Code::WildcardInHostMode,
                        o,
                        format!("`{}`: wildcard names cannot be resolved to addresses at launch", e.destination),
                        "use mode = \"proxy\", which checks names per connection, or list the exact host names",
                    );
                }
            }
            if dns.is_empty()
                && let Some(o) = allow.iter().find(|e| e.destination.is_name()).and_then(|e| e.origin)
            {
                ok = false;
                self.err(
                    Code::MissingResolver,
                    o,
                    "host names in host mode need a resolver the agent may query",
                    "add [network] dns = [\"<resolver IP>\"] (DNS is allowed only to these addresses)",
                );
            }
        }
        let mut unix = Vec::new();
        for s in &n.unix {
            match self.path(s, "unix") {
                Some(path) => unix.push(UnixGrant { path, origin: Some(s.origin), note: "".into() }),
                None => ok = false,
            }
        }
        allow.sort();
        allow.dedup();
        deny.sort();
        deny.dedup();
        // The private /tmp holds only sockets the agent (or its children) made: talking to
        // them is the agent talking to itself (Python's multiprocessing, a test server).
        // The runtime applies this only where /tmp is that private filesystem.
        if let Ok(tmp) = PathPattern::parse("/tmp", &|_| false) {
            unix.push(UnixGrant { path: tmp, origin: None, note: PRIVATE_TMP_SOCKETS.into() });
        }
        unix.sort_by(|a, b| (&a.path, a.origin.is_none()).cmp(&(&b.path, b.origin.is_none())));
        unix.dedup_by(|later, first| later.path == first.path);
        ok.then_some(Network { mode, mode_origin: n.mode.as_ref().map(|m| m.origin), allow, deny, dns, unix })
    }

    fn endpoint(&mut self, e: &EndpointSyntax) -> Option<Endpoint> {
        let (origin, host, ports, protocol, exe) = match e {
            EndpointSyntax::Short(s) => {
                let (host, ports, proto) = match split_endpoint(&s.value) {
                    Ok(parts) => parts,
                    Err(why) => {
                        self.err(
                            Code::InvalidEndpoint,
                            s.origin,
                            format!("endpoint `{}`: {why}", s.value),
                            "write HOST:PORT[/tcp|udp], e.g. \"api.github.com:443\", \"10.0.0.0/8:5432/tcp\", \"[2001:db8::1]:53/udp\", \"host:8000-8080\"",
                        );
                        return None;
                    }
                };
                (s.origin, host, ports.into_iter().map(|p| (p, s.origin)).collect::<Vec<_>>(), proto.map(|p| (p, s.origin)), &[][..])
            }
            EndpointSyntax::Table { origin, host, ports, protocol, exe } => {
                let host_s = host.as_ref()?;
                // `{ host = "github.com:443", exe = [...] }`: the string form in a table.
                if ports.is_empty()
                    && protocol.is_none()
                    && let Ok((h, ps, proto)) = split_endpoint(&host_s.value)
                {
                    let o = host_s.origin;
                    let short = (o, h, ps.into_iter().map(|p| (p, o)).collect::<Vec<_>>(), proto.map(|p| (p, o)), &exe[..]);
                    return self.endpoint_parts(short);
                }
                let host = host_s.value.clone();
                let mut ps = Vec::new();
                for p in ports {
                    match &p.value {
                        Scalar::Int(i) => ps.push((i.to_string(), p.origin)),
                        Scalar::Str(s) => ps.push((s.clone(), p.origin)),
                        Scalar::Float(_) => {
                            self.err(Code::InvalidPort, p.origin, "a port is an integer", "e.g. 443 or \"8000-8080\"");
                            return None;
                        }
                    }
                }
                if ps.is_empty() {
                    self.err(Code::InvalidPort, *origin, "endpoint has no ports", "add ports = [443] (or [\"*\"] for any port)");
                    return None;
                }
                (*origin, host, ps, protocol.as_ref().map(|p| (p.value.clone(), p.origin)), &exe[..])
            }
        };
        self.endpoint_parts((origin, host, ports, protocol, exe))
    }

    #[allow(clippy::type_complexity, reason = "the parts of one endpoint entry as the syntax tree holds them, taken apart once here")]
    fn endpoint_parts(&mut self, parts: (Origin, String, Vec<(String, Origin)>, Option<(String, Origin)>, &[SString])) -> Option<Endpoint> {
        let (origin, host, ports, protocol, exe_syntax) = parts;
        let destination = match parse_destination(&host) {
            Ok(d) => d,
            Err((code, why)) => {
                let help = if code == Code::InvalidCidr {
                    "networks are written a.b.c.d/len or, in an endpoint, [v6::/len] with no host bits set"
                } else {
                    "host names are letters, digits and `-`, separated by dots; `*.` only as the first label"
                };
                self.err(code, origin, format!("`{host}`: {why}"), help);
                return None;
            }
        };
        let mut ranges = Vec::new();
        for (p, po) in ports {
            match parse_ports(&p) {
                Ok(r) => ranges.push(r),
                Err(why) => {
                    self.err(Code::InvalidPort, po, format!("port `{p}`: {why}"), "ports are 1-65535, a range `8000-8080`, or `*` for any");
                    return None;
                }
            }
        }
        ranges.sort();
        ranges = merge_ranges(ranges);
        let protocol = match protocol {
            None => Protocol::Tcp,
            Some((p, po)) => match p.as_str() {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => {
                    self.err(Code::InvalidProtocol, po, format!("unknown protocol `{other}`"), "protocols are `tcp` (default) and `udp`");
                    return None;
                }
            },
        };
        let exe = self.exe_list(exe_syntax)?;
        Some(Endpoint { destination, ports: ranges, protocol, source: EndpointSource::Network, exe, origin: Some(origin) })
    }

    /// Program paths of an `exe` list: absolute (or rooted at a parameter), normalised.
    fn exe_list(&mut self, list: &[SString]) -> Option<Vec<PathPattern>> {
        let mut out = Vec::new();
        let mut ok = true;
        for s in list {
            match self.path(s, "exe") {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        out.sort();
        out.dedup();
        ok.then_some(out)
    }

    fn apis(&mut self, apis: &[ast::ApiSection], mode: Option<NetworkMode>) -> BTreeMap<String, Api> {
        let mut out = BTreeMap::new();
        for a in apis {
            let n = &a.name.value;
            let valid = n.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid {
                self.err(Code::InvalidName, a.name.origin, format!("API name `{n}` is not allowed"), "API names are lower case: letters, digits, `-`, `_`");
                continue;
            }
            if let Some(m) = mode
                && m != NetworkMode::Proxy
            {
                self.err(
                    Code::ApiWithoutProxy,
                    a.name.origin,
                    format!("[api.{n}] needs network mode `proxy`; in mode `{}` nothing can check HTTP requests", m.word()),
                    "set [network] mode = \"proxy\": the AEGIS proxy enforces API rules and injects credentials",
                );
            }
            let Some(host_s) = &a.host else { continue };
            let host = match parse_host_name(&host_s.value) {
                Ok(Destination::Name(h)) => h,
                Ok(_) => {
                    self.err(Code::InvalidHost, host_s.origin, "an API host is one exact name", "e.g. host = \"gmail.googleapis.com\"");
                    continue;
                }
                Err(why) => {
                    self.err(Code::InvalidHost, host_s.origin, format!("`{}`: {why}", host_s.value), "e.g. host = \"gmail.googleapis.com\"");
                    continue;
                }
            };
            let port = match &a.port {
                None => 443,
                Some(p) => match u16::try_from(p.value) {
                    Ok(v) if v > 0 => v,
                    _ => {
                        self.err(Code::InvalidPort, p.origin, format!("port {} is out of range", p.value), "ports are 1-65535");
                        continue;
                    }
                },
            };
            let mut scopes: Vec<Scope> = Vec::new();
            for s in &a.scopes {
                if s.value.trim().is_empty() || s.value.contains(char::is_whitespace) {
                    self.err(Code::EmptyValue, s.origin, "a scope is one non-empty word", "e.g. \"https://www.googleapis.com/auth/gmail.modify\"");
                } else {
                    scopes.push(Scope { name: s.value.clone(), origin: Some(s.origin) });
                }
            }
            scopes.sort();
            scopes.dedup_by(|x, y| x.name == y.name);
            let allow = self.http_rules(&a.allow);
            let deny = self.http_rules(&a.deny);
            let credential = a.credential.as_ref().and_then(|c| self.credential(c));
            let Some(exe) = self.exe_list(&a.exe) else { continue };
            // One host:port, one API: the proxy must know which rules and which credential
            // apply to a connection (two would let one API's allow undo the other's deny).
            if let Some(other) = out.values().find(|o: &&Api| o.host == host && o.port == port) {
                self.err(
                    Code::DuplicateApiHost,
                    host_s.origin,
                    format!("[api.{n}] and [api.{}] both describe {host}:{port}", other.name),
                    "put all rules of one host in one [api.NAME] table (one credential per host)",
                );
                continue;
            }
            out.insert(
                n.clone(),
                Api { name: n.clone(), host, port, scopes, allow, deny, credential, exe, origin: Some(a.name.origin) },
            );
        }
        out
    }

    fn http_rules(&mut self, list: &[SString]) -> Vec<HttpRuleEntry> {
        let mut out = Vec::new();
        for s in list {
            match HttpRule::parse(&s.value) {
                Ok(rule) => out.push(HttpRuleEntry { rule, origin: Some(s.origin) }),
                Err(why) => self.err(
                    Code::InvalidHttpRule,
                    s.origin,
                    format!("HTTP rule `{}`: {why}", s.value),
                    "rules are `METHOD /path`, where a segment may be `*` (one segment) or `**` (any number)",
                ),
            }
        }
        out.sort();
        out.dedup_by(|x, y| x.rule == y.rule);
        out
    }

    fn credential(&mut self, c: &ast::CredentialSection) -> Option<Credential> {
        let Some(header) = &c.header else {
            self.err(Code::InvalidCredential, c.origin, "a credential needs a `header`", "e.g. header = \"Authorization\"");
            return None;
        };
        if header.value.is_empty() || !header.value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            self.err(Code::InvalidCredential, header.origin, format!("`{}` is not an HTTP header name", header.value), "e.g. \"Authorization\" or \"X-Api-Key\"");
            return None;
        }
        let source = match (&c.from_env, &c.from_file) {
            (Some(e), None) => {
                if e.value.is_empty() || !e.value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    self.err(Code::InvalidCredential, e.origin, format!("`{}` is not an environment variable name", e.value), "e.g. from_env = \"GMAIL_TOKEN\"");
                    return None;
                }
                SecretSource::Env(e.value.clone())
            }
            (None, Some(f)) => {
                if !f.value.starts_with('/') || f.value.contains("/../") || f.value.ends_with("/..") {
                    self.err(Code::InvalidCredential, f.origin, format!("`{}` must be an absolute, normalised path", f.value), "e.g. from_file = \"/etc/aegis/secrets/gmail-token\"");
                    return None;
                }
                SecretSource::File(f.value.clone())
            }
            _ => {
                self.err(Code::InvalidCredential, c.origin, "a credential needs exactly one of `from_env` and `from_file`", "the secret stays on the host: name where the supervisor reads it");
                return None;
            }
        };
        Some(Credential {
            header: header.value.clone(),
            prefix: c.prefix.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
            source,
            origin: Some(c.origin),
        })
    }

    fn size(&mut self, s: &Spanned<Scalar>, what: &str, min: u64) -> Option<u64> {
        let v = match &s.value {
            Scalar::Int(i) if *i < 0 => {
                self.err(Code::NegativeLimit, s.origin, format!("{what} is negative"), "limits are positive sizes such as \"512MiB\"");
                return None;
            }
            Scalar::Int(i) => u64::try_from(*i).unwrap_or(0),
            Scalar::Str(t) => match parse_size(t) {
                Ok(v) => v,
                Err(why) => {
                    let code = if why.contains("negative") { Code::NegativeLimit } else { Code::InvalidSize };
                    self.err(code, s.origin, format!("{what} `{t}`: {why}"), "sizes look like \"512MiB\", \"2GiB\", \"1.5GB\" or a number of bytes");
                    return None;
                }
            },
            Scalar::Float(_) => {
                self.err(Code::InvalidSize, s.origin, format!("{what} must be a size string or whole bytes"), "e.g. \"512MiB\"");
                return None;
            }
        };
        if v < min {
            self.err(Code::OutOfRange, s.origin, format!("{what} is {v} bytes; the minimum is {}", crate::ir::units::format_size(min)), "a limit this small would stop the agent from starting");
            return None;
        }
        Some(v)
    }

    fn count(&mut self, s: &Spanned<Scalar>, what: &str, min: u64, max: u64) -> Option<u64> {
        match &s.value {
            Scalar::Int(i) if *i < 0 => {
                self.err(Code::NegativeLimit, s.origin, format!("{what} is negative"), format!("use a value from {min} to {max}"));
                None
            }
            Scalar::Int(i) => {
                let v = u64::try_from(*i).unwrap_or(0);
                if v < min || v > max {
                    self.err(Code::OutOfRange, s.origin, format!("{what} = {v} is out of range"), format!("use a value from {min} to {max}"));
                    return None;
                }
                Some(v)
            }
            _ => {
                self.err(Code::WrongType, s.origin, format!("{what} must be an integer"), format!("use a value from {min} to {max}"));
                None
            }
        }
    }

    fn resources(&mut self, r: &ast::ResourcesSection) -> Option<Resources> {
        let mut out = Resources::default();
        let mut ok = true;
        let lim = |v: Option<u64>, o: Origin| v.map(|value| Limit { value, origin: Some(o) });
        if let Some(s) = &r.memory {
            out.memory_bytes = lim(self.size(s, "resources.memory", 4 << 20), s.origin);
            ok &= out.memory_bytes.is_some();
        }
        if let Some(s) = &r.pids {
            out.pids = lim(self.count(s, "resources.pids", 1, 4_194_304), s.origin);
            ok &= out.pids.is_some();
        }
        if let Some(s) = &r.cpu {
            let cores = match s.value {
                Scalar::Int(i) => Some(i as f64),
                Scalar::Float(f) => Some(f),
                Scalar::Str(_) => None,
            };
            match cores {
                Some(c) if c < 0.0 => {
                    ok = false;
                    self.err(Code::NegativeLimit, s.origin, "resources.cpu is negative", "cpu is a number of cores, e.g. 1.5");
                }
                Some(c) if c.is_finite() && (0.001..=1024.0).contains(&c) => {
                    out.cpu_millicores = Some(Limit { value: (c * 1000.0).round() as u64, origin: Some(s.origin) });
                }
                Some(_) => {
                    ok = false;
                    self.err(Code::OutOfRange, s.origin, "resources.cpu is out of range", "cpu is a number of cores from 0.001 to 1024, e.g. 1.5");
                }
                None => {
                    ok = false;
                    self.err(Code::WrongType, s.origin, "resources.cpu must be a number of cores", "write cpu = 1.5 (not a string)");
                }
            }
        }
        if let Some(s) = &r.cpu_weight {
            out.cpu_weight = lim(self.count(s, "resources.cpu_weight", 1, 10_000), s.origin);
            ok &= out.cpu_weight.is_some();
        }
        if let Some(s) = &r.io_weight {
            out.io_weight = lim(self.count(s, "resources.io_weight", 1, 10_000), s.origin);
            ok &= out.io_weight.is_some();
        }
        if let Some(s) = &r.wall_time {
            let ms = match &s.value {
                Scalar::Int(i) if *i < 0 => Err((Code::NegativeLimit, "negative duration".to_string())),
                Scalar::Int(i) => u64::try_from(*i).ok().and_then(|v| v.checked_mul(1000)).ok_or((Code::OutOfRange, "too large".into())),
                Scalar::Str(t) => parse_duration_ms(t).map_err(|e| {
                    (if e.contains("negative") { Code::NegativeLimit } else { Code::InvalidDuration }, e)
                }),
                Scalar::Float(_) => Err((Code::InvalidDuration, "use a duration string".into())),
            };
            match ms {
                Ok(0) => {
                    ok = false;
                    self.err(Code::OutOfRange, s.origin, "resources.wall_time is zero", "e.g. wall_time = \"30m\"");
                }
                Ok(v) => out.wall_time_ms = Some(Limit { value: v, origin: Some(s.origin) }),
                Err((code, why)) => {
                    ok = false;
                    self.err(code, s.origin, format!("resources.wall_time: {why}"), "durations look like \"30m\", \"1h30m\", \"90s\" or a number of seconds");
                }
            }
        }
        ok.then_some(out)
    }

    fn errno(&mut self, s: &Spanned<Scalar>, what: &str) -> Option<u16> {
        match &s.value {
            Scalar::Str(name) => match errno::lookup(name) {
                Some(v) => Some(v),
                None => {
                    let help = match did_you_mean(name, errno::ERRNOS.iter().map(|(n, _)| *n)) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => "use a name such as EPERM, EACCES, ENOSYS, or a number 1-4095".into(),
                    };
                    self.err(Code::InvalidErrno, s.origin, format!("{what}: unknown errno `{name}`"), help);
                    None
                }
            },
            Scalar::Int(i) if (1..=4095).contains(i) => u16::try_from(*i).ok(),
            _ => {
                self.err(Code::InvalidErrno, s.origin, format!("{what}: errno must be a name or 1-4095"), "e.g. \"EPERM\"");
                None
            }
        }
    }

    fn syscalls(&mut self, s: &ast::SyscallsSection) -> Option<Syscalls> {
        let mut ok = true;
        let base = match &s.base {
            None => SyscallBase::Default,
            Some(ast::SyscallBase::Named(n)) if n.value == "default" => SyscallBase::Default,
            Some(ast::SyscallBase::Named(n)) => {
                self.err(Code::InvalidProfile, n.origin, format!("unknown syscall base `{}`", n.value), "use base = \"default\" or base = { oci = \"path/to/profile.json\" }");
                return None;
            }
            Some(ast::SyscallBase::Oci(p)) => {
                let dir = Path::new(self.sources.name(p.origin.file)).parent().map(Path::to_path_buf).unwrap_or_default();
                let resolved = dir.join(&p.value);
                if !resolved.is_file() {
                    self.err(Code::InvalidProfile, p.origin, format!("seccomp profile {} does not exist", resolved.display()), "the path is relative to the policy file that names it");
                    return None;
                }
                SyscallBase::Oci { path: p.value.clone(), resolved: resolved.to_string_lossy().into_owned() }
            }
        };
        let default_errno = match &s.default_errno {
            Some(e) => self.errno(e, "syscalls.default_errno")?,
            None => 1,
        };
        let mut rules: BTreeMap<String, SyscallRule> = BTreeMap::new();
        let mut errno_of = BTreeMap::new();
        for (name, v) in &s.errno {
            if let Some(e) = self.errno(v, &format!("syscalls.errno.{}", name.value)) {
                errno_of.insert(name.value.clone(), (e, name.origin));
            } else {
                ok = false;
            }
        }
        let deny_errno = |n: &str| errno_of.get(n).map(|(e, _)| *e).unwrap_or(default_errno);
        let lists: [(&[SString], &str); 4] = [(&s.allow, "allow"), (&s.deny, "deny"), (&s.log, "log"), (&s.kill, "kill")];
        let mut entries: Vec<(&SString, SyscallAction, &str)> = Vec::new();
        for (list, which) in lists {
            for n in list {
                let action = match which {
                    "allow" => SyscallAction::Allow,
                    "deny" => SyscallAction::Deny(deny_errno(&n.value)),
                    "log" => SyscallAction::Log,
                    _ => SyscallAction::Kill,
                };
                entries.push((n, action, which));
            }
        }
        let errno_only: Vec<SString> = errno_of
            .iter()
            .filter(|(n, _)| !s.deny.iter().any(|d| &d.value == *n))
            .map(|(n, (_, o))| Spanned::new(n.clone(), *o))
            .collect();
        for n in &errno_only {
            entries.push((n, SyscallAction::Deny(deny_errno(&n.value)), "errno"));
        }
        let mut list_of: BTreeMap<String, &str> = BTreeMap::new();
        for (n, action, which) in entries {
            if !crate::syscall_names::is_known(&n.value) {
                ok = false;
                let help = match did_you_mean(&n.value, crate::syscall_names::all()) {
                    Some(m) => format!("did you mean `{m}`?"),
                    None => "use the kernel's name, e.g. `ptrace`, `mount`, `personality`".into(),
                };
                self.err(Code::UnknownSyscall, n.origin, format!("unknown system call `{}`", n.value), help);
                continue;
            }
            if let Some(prev) = list_of.get(&n.value) {
                if *prev != which {
                    ok = false;
                    self.err(
                        Code::ConflictingSyscall,
                        n.origin,
                        format!("`{}` is in both `{prev}` and `{which}`", n.value),
                        "a system call may appear in one list only",
                    );
                }
                continue;
            }
            if n.value.starts_with("io_uring_") && matches!(action, SyscallAction::Allow | SyscallAction::Log) {
                // io_uring runs connect, sendmsg and openat without passing through seccomp:
                // the supervisor's checks (unix sockets, `docs/mediation.md`) would not see
                // them, so the policy could not be enforced as written.
                ok = false;
                self.err(
                    Code::IoUringUnmediated,
                    n.origin,
                    format!("`{}` would let the agent bypass the supervisor's checks", n.value),
                    "io_uring's connect and open operations never pass through seccomp, so [network] unix (and every mediated call) could not be enforced; remove it",
                );
                continue;
            }
            list_of.insert(n.value.clone(), which);
            rules.insert(n.value.clone(), SyscallRule { name: n.value.clone(), action, origin: Some(n.origin) });
        }
        ok.then(|| Syscalls { base, rules: rules.into_values().collect(), default_errno })
    }

    fn enforcement(&mut self, e: &ast::EnforcementSection) -> Option<Enforcement> {
        let mut layers: BTreeMap<Layer, Level> = Layer::ALL.iter().map(|l| (*l, Level::Required)).collect();
        let mut ok = true;
        for (k, v) in &e.levels {
            let Some(layer) = Layer::from_word(&k.value) else { continue };
            let level = match v.value.as_str() {
                "required" => Level::Required,
                "best-effort" => Level::BestEffort,
                other => {
                    ok = false;
                    let help = match did_you_mean(other, ["required", "best-effort"]) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => "levels are `required` (refuse hosts that lack the layer) and `best-effort` (run and report)".into(),
                    };
                    self.err(Code::InvalidEnforcement, v.origin, format!("unknown enforcement level `{other}`"), help);
                    continue;
                }
            };
            layers.insert(layer, level);
        }
        let min_landlock_abi = match &e.min_landlock_abi {
            None => None,
            Some(a) if (1..=7).contains(&a.value) => u8::try_from(a.value).ok(),
            Some(a) => {
                self.err(Code::OutOfRange, a.origin, format!("Landlock ABI {} does not exist", a.value), "Landlock ABIs are 1 (Linux 5.13) to 7 (Linux 6.15)");
                return None;
            }
        };
        ok.then_some(Enforcement { layers, min_landlock_abi })
    }
}

/// Splits `HOST:PORTS[/PROTO]` (IPv6 in brackets; a CIDR's `/len` stays with the host).
fn split_endpoint(s: &str) -> Result<(String, Vec<String>, Option<String>), String> {
    let (host, rest) = if let Some(inner) = s.strip_prefix('[') {
        let Some((h, rest)) = inner.split_once(']') else { return Err("missing `]` after an IPv6 address".into()) };
        let Some(rest) = rest.strip_prefix(':') else { return Err("missing `:PORT` after `]`".into()) };
        (h.to_string(), rest)
    } else {
        let Some((h, rest)) = s.rsplit_once(':') else { return Err("missing `:PORT`".into()) };
        if h.contains(':') {
            return Err("IPv6 addresses need brackets: `[2001:db8::1]:443`".into());
        }
        (h.to_string(), rest)
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let (ports, proto) = match rest.split_once('/') {
        Some((p, proto)) => (p, Some(proto.to_string())),
        None => (rest, None),
    };
    if ports.is_empty() {
        return Err("missing port".into());
    }
    Ok((host, ports.split(',').map(str::to_string).collect(), proto))
}

fn parse_destination(host: &str) -> Result<Destination, (Code, String)> {
    let first = host.chars().next().unwrap_or(' ');
    let looks_ip = host.contains(':') || host.contains('/') || (first.is_ascii_digit() && host.chars().all(|c| c.is_ascii_digit() || c == '.'));
    if looks_ip {
        return Cidr::parse(host).map(Destination::Network).map_err(|e| (Code::InvalidCidr, e));
    }
    parse_host_name(host).map_err(|e| (Code::InvalidHost, e))
}

fn parse_ports(p: &str) -> Result<PortRange, String> {
    let p = p.trim();
    if p == "*" {
        return Ok(PortRange::ANY);
    }
    let num = |s: &str| -> Result<u16, String> {
        let v: i64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
        u16::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| format!("{v} is outside 1-65535"))
    };
    match p.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if a > b {
                return Err(format!("range {a}-{b} is empty"));
            }
            Ok(PortRange { first: a, last: b })
        }
        None => num(p).map(|v| PortRange { first: v, last: v }),
    }
}

fn merge_ranges(sorted: Vec<PortRange>) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = Vec::new();
    for r in sorted {
        match out.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => last.last = last.last.max(r.last),
            _ => out.push(r),
        }
    }
    out
}
