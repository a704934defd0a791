//! The `nftables` target: network egress rules for one agent (`nftables.json`, nft JSON as
//! read by `nft -j -f`) and the code that loads them at launch.
//!
//! Input: a [`NetPolicy`] (mode, endpoints {host name | IP | CIDR, port ranges, tcp/udp},
//! resolvers) lowered by [`lower`] into a [`Ruleset`]. Output: deterministic JSON bytes
//! ([`Ruleset::to_json`]) holding one table `inet aegis_<agent>`; at launch
//! [`Ruleset::fill`] puts the resolved addresses of declared host names into the named sets
//! `h4_<name>` / `h6_<name>` and [`apply`] loads the result with `nft -j -f -` (inside the
//! agent's network namespace when given one), checks the table is present by asking the
//! kernel over netlink ([`table_present`], `NFT_MSG_GETTABLE`), and the returned
//! [`LoadedTable`] deletes it on drop ([`delete_table`], one nf_tables netlink transaction). Invariants: default deny — in `host` mode every packet
//! from the agent's sockets that no rule accepts is logged (prefix `aegis:<agent>:deny `,
//! rate-limited) and dropped; in `none`/`proxy` modes (the agent's own namespace) everything
//! but loopback (proxy mode: only the proxy port on loopback) is logged to the NFLOG group
//! [`NFLOG_GROUP`] (rate-limited) and rejected (TCP reset, otherwise ICMP port unreachable)
//! so the agent fails fast. Own-namespace tables accept output to `lo` only when the
//! destination is a local address (`fib daddr type local`): the runtime routes every other
//! destination to `lo` so that a direct connect creates a packet for this table to log and
//! reject, instead of failing with ENETUNREACH unseen; and they accept `ct state related`,
//! which is the reject's own reset/ICMP answer travelling back to the agent.
//!
//! Matching the agent's sockets in `host` mode: the rule is
//! `socket cgroupv2 level <depth> "<path>" goto agent`, and the cgroup path exists only at
//! launch. The nft 1.0.6 JSON parser (Debian bookworm, this machine) has no `cgroupv2` socket
//! key, so this one dispatch rule cannot be part of the JSON artifact. Decision: the artifact
//! holds the whole table (sets, the `agent` chain with every allow/log/drop rule, and an
//! empty `output` hook chain); [`add_dispatch`] adds the single fixed-shape rule that
//! jumps from `output` to `agent` over netlink (the cgroup's id is its directory's inode
//! number), after the JSON load and once the leaf exists. The table's load does not need
//! the leaf, so it starts before the leaf is made ([`start_host_load`]); the agent is not
//! running until both are in place and verified, so there is no window. Kernel log lines from a non-initial network namespace are only
//! emitted when `net.netfilter.nf_log_all_netns=1`, which is why the own-namespace tables log
//! to NFLOG instead (read by the runtime's `stage::netlog`).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// File name of this artifact inside a bundle.
pub const FILE_NAME: &str = "nftables.json";
/// Table family: `inet` covers IPv4 and IPv6 with one table.
pub const FAMILY: &str = "inet";
/// Chain that holds the agent's rules in `host` mode.
pub const AGENT_CHAIN: &str = "agent";
/// Rate limit of deny log lines (per second); the drop itself is never rate limited.
pub const LOG_RATE_PER_SEC: u64 = 10;
/// NFLOG group the own-namespace tables (`none`, `proxy`) log denied packets to. Fixed: the
/// namespace belongs to one agent, so no other listener can clash with it.
pub const NFLOG_GROUP: u16 = 1;

/// Errors of the nftables target.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nftables.json: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("nftables.json: {0}")]
    Shape(String),
    #[error("nftables policy: invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("nft: {what}: {source}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("nft {what} failed (exit {status}): {stderr}")]
    Nft {
        what: &'static str,
        status: i32,
        stderr: String,
    },
    #[error("nft: table {0} is not present after loading")]
    Missing(String),
    #[error("nft: cgroup2 leaf {0} is not below /sys/fs/cgroup")]
    CgroupPath(PathBuf),
}

/// How the agent reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum NetMode {
    /// Own network namespace with loopback only.
    None,
    /// Host network, egress filtered by the agent's cgroup.
    Host,
    /// Own network namespace; loopback to the egress proxy port only.
    Proxy { port: u16 },
}

impl NetMode {
    pub fn name(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Host => "host",
            NetMode::Proxy { .. } => "proxy",
        }
    }
}

/// Where an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Host {
    /// A DNS name, resolved at launch into named sets.
    Name(String),
    Ip(IpAddr),
    Cidr { addr: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

/// One granted destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: Host,
    pub ports: Vec<PortRange>,
    pub protocols: Vec<Proto>,
}

/// Input of the lowering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    pub mode: NetMode,
    pub endpoints: Vec<Endpoint>,
    /// DNS servers the agent may query (udp/tcp 53); nothing else gets DNS.
    pub resolvers: Vec<IpAddr>,
}

fn invalid(field: &'static str, why: impl Into<String>) -> NftError {
    NftError::Invalid {
        field,
        why: why.into(),
    }
}

/// `aegis_<agent>` with `-` mapped to `_` (nft identifiers).
pub fn table_name(agent: &str) -> String {
    format!("aegis_{}", agent.replace('-', "_"))
}

/// Log prefix of denied packets for `agent`, as compiled into the artifact.
pub fn log_prefix(agent: &str) -> String {
    format!("aegis:{agent}:deny ")
}

/// Log prefix of one running instance (what [`Ruleset::fill`] loads, and what the runtime
/// looks for in the kernel log): the host's kernel log is shared by every launch, so two
/// launches of one agent must not read each other's denials.
pub fn instance_log_prefix(agent: &str, instance: &str) -> String {
    format!("aegis:{agent}:{instance}:deny ")
}

fn valid_host_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 200
        && n
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !n.starts_with('.')
        && !n.starts_with('-')
}

/// The `nftables.json` artifact (nft JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    doc: Value,
}

/// A host name and the two named sets that hold its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSet {
    pub name: String,
    pub set_v4: String,
    pub set_v6: String,
}

struct Builder {
    table: String,
    items: Vec<Value>,
}

/// A JSON object from owned values. `json!` would re-serialise every interpolated `Value`
/// (a deep copy per rule); building the map directly keeps large rulesets linear and cheap.
fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

impl Builder {
    fn push(&mut self, kind: &str, mut body: Value) {
        if let Some(o) = body.as_object_mut() {
            // family/table first so the bytes read naturally; preserve_order keeps it.
            let mut full = serde_json::Map::new();
            full.insert("family".into(), Value::String(FAMILY.into()));
            full.insert(if kind == "table" { "name" } else { "table" }.into(), Value::String(self.table.clone()));
            for (k, v) in std::mem::take(o) {
                full.insert(k, v);
            }
            self.items.push(obj([(kind, Value::Object(full))]));
        }
    }
    fn rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.push("rule", obj([("chain", Value::String(chain.into())), ("expr", Value::Array(expr))]));
    }
}

fn m(left: Value, right: Value) -> Value {
    obj([("match", obj([("op", Value::String("==".into())), ("left", left), ("right", right)]))])
}

fn payload(proto: &str, field: &str) -> Value {
    json!({"payload": {"protocol": proto, "field": field}})
}

fn ports_value(ports: &[PortRange]) -> Value {
    let items: Vec<Value> = ports
        .iter()
        .map(|p| if p.lo == p.hi { json!(p.lo) } else { json!({"range": [p.lo, p.hi]}) })
        .collect();
    match items.as_slice() {
        [one] => one.clone(),
        _ => json!({"set": items}),
    }
}

fn deny_tail(b: &mut Builder, chain: &str, agent: &str) {
    b.rule(
        chain,
        vec![
            json!({"limit": {"rate": LOG_RATE_PER_SEC, "per": "second", "burst": 2 * LOG_RATE_PER_SEC}}),
            json!({"log": {"prefix": log_prefix(agent), "level": "warn"}}),
        ],
    );
    b.rule(chain, vec![json!({"counter": null}), json!({"drop": null})]);
}

/// The end of an own-namespace chain: log to NFLOG (the kernel log stays silent for
/// non-initial namespaces unless the host sets `nf_log_all_netns`), then reject so the agent
/// gets ECONNREFUSED/EPERM at once instead of retrying for minutes.
fn reject_tail(b: &mut Builder, chain: &str, agent: &str) {
    b.rule(
        chain,
        vec![
            json!({"limit": {"rate": LOG_RATE_PER_SEC, "per": "second", "burst": 2 * LOG_RATE_PER_SEC}}),
            json!({"log": {"prefix": log_prefix(agent), "group": NFLOG_GROUP}}),
        ],
    );
    b.rule(
        chain,
        vec![m(json!({"meta": {"key": "l4proto"}}), json!("tcp")), json!({"counter": null}), json!({"reject": {"type": "tcp reset"}})],
    );
    b.rule(chain, vec![json!({"counter": null}), json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}})]);
}

/// Lowers a network policy into the agent's table. Same input, same bytes.
pub fn lower(agent: &str, policy: &NetPolicy) -> Result<Ruleset, NftError> {
    if !crate::cgroup::valid_agent_name(agent) {
        return Err(invalid("agent", format!("{agent:?} is not [a-z0-9_-]{{1,48}}")));
    }
    let table = table_name(agent);
    let mut b = Builder {
        table: table.clone(),
        items: vec![json!({"metainfo": {"json_schema_version": 1}})],
    };
    b.push("table", json!({}));
    match policy.mode {
        NetMode::None | NetMode::Proxy { .. } => {
            // In proxy mode an endpoint is a transparent TCP forward: the supervisor adds the
            // address to the namespace's loopback and relays what arrives there.
            let forwards_ok = matches!(policy.mode, NetMode::Proxy { .. })
                && policy
                    .endpoints
                    .iter()
                    .all(|e| matches!(e.host, Host::Ip(_)) && e.protocols == [Proto::Tcp] && !e.ports.is_empty());
            if !policy.endpoints.is_empty() && !forwards_ok {
                return Err(invalid(
                    "endpoints",
                    "endpoints need `host` mode (in `proxy` mode only single-address TCP forwards; the proxy enforces the rest)",
                ));
            }
            for (chain, hook) in [("input", "input"), ("output", "output")] {
                b.push(
                    "chain",
                    json!({"name": chain, "type": "filter", "hook": hook, "prio": 0, "policy": "drop"}),
                );
            }
            let lo = |dir: &str| m(json!({"meta": {"key": dir}}), json!("lo"));
            // Output to `lo` is loopback traffic only when the destination is local: the
            // runtime's default routes point at `lo` too.
            let local = || json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}});
            match policy.mode {
                NetMode::Proxy { port } => {
                    if port == 0 {
                        return Err(invalid("mode.port", "proxy port must be non-zero"));
                    }
                    for (chain, dir) in [("input", "iif"), ("output", "oif")] {
                        for field in ["dport", "sport"] {
                            let mut e = vec![lo(dir)];
                            if chain == "output" {
                                e.push(local());
                            }
                            e.extend([m(payload("tcp", field), json!(port)), json!({"accept": null})]);
                            b.rule(chain, e);
                        }
                    }
                    for e in &policy.endpoints {
                        let Host::Ip(a) = &e.host else { continue };
                        let fam = if a.is_ipv4() { "ip" } else { "ip6" };
                        let mut ports = e.ports.clone();
                        ports.sort();
                        ports.dedup();
                        for (chain, dir) in [("input", "iif"), ("output", "oif")] {
                            for (addr_field, port_field) in [("daddr", "dport"), ("saddr", "sport")] {
                                let mut e = vec![lo(dir)];
                                if chain == "output" {
                                    e.push(local());
                                }
                                e.extend([
                                    m(payload(fam, addr_field), json!(a.to_string())),
                                    m(payload("tcp", port_field), ports_value(&ports)),
                                    json!({"accept": null}),
                                ]);
                                b.rule(chain, e);
                            }
                        }
                    }
                }
                _ => {
                    b.rule("input", vec![lo("iif"), json!({"accept": null})]);
                    b.rule("output", vec![lo("oif"), local(), json!({"accept": null})]);
                }
            }
            for chain in ["input", "output"] {
                b.rule(
                    chain,
                    vec![
                        json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["related"]}}),
                        json!({"accept": null}),
                    ],
                );
            }
            reject_tail(&mut b, "output", agent);
        }
        NetMode::Host => lower_host(&mut b, agent, policy)?,
    }
    Ok(Ruleset {
        doc: json!({"nftables": b.items}),
    })
}

fn lower_host(b: &mut Builder, agent: &str, policy: &NetPolicy) -> Result<(), NftError> {
    // Host-name sets first (nft needs a set declared before a rule references it).
    let mut names = BTreeSet::new();
    for e in &policy.endpoints {
        if let Host::Name(n) = &e.host {
            if !valid_host_name(n) {
                return Err(invalid("endpoint host", format!("{n:?} is not a lower-case DNS name")));
            }
            names.insert(n.clone());
        }
    }
    for n in &names {
        b.push("set", json!({"name": format!("h4_{n}"), "type": "ipv4_addr"}));
        b.push("set", json!({"name": format!("h6_{n}"), "type": "ipv6_addr"}));
    }
    b.push(
        "chain",
        json!({"name": "output", "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}),
    );
    b.push("chain", json!({"name": AGENT_CHAIN}));
    // Packets of connections already accepted by a rule below (and replies to connections
    // made to the agent) pass; a denied connection never reaches `established`.
    b.rule(
        AGENT_CHAIN,
        vec![
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established"]}}),
            json!({"accept": null}),
        ],
    );
    let mut resolvers: Vec<IpAddr> = policy.resolvers.clone();
    resolvers.sort();
    resolvers.dedup();
    for (fam, want_v4) in [("ip", true), ("ip6", false)] {
        let addrs: Vec<Value> = resolvers
            .iter()
            .filter(|a| a.is_ipv4() == want_v4)
            .map(|a| json!(a.to_string()))
            .collect();
        if addrs.is_empty() {
            continue;
        }
        for proto in ["udp", "tcp"] {
            b.rule(
                AGENT_CHAIN,
                vec![
                    m(payload(fam, "daddr"), json!({"set": addrs})),
                    m(payload(proto, "dport"), json!(53)),
                    json!({"accept": null}),
                ],
            );
        }
    }
    for e in &policy.endpoints {
        if e.protocols.is_empty() {
            return Err(invalid("endpoint protocols", "at least one of tcp/udp"));
        }
        if e.ports.is_empty() {
            return Err(invalid("endpoint ports", "at least one port or range"));
        }
        let mut ports = e.ports.clone();
        for p in &ports {
            if p.lo == 0 || p.lo > p.hi {
                return Err(invalid("endpoint ports", format!("{}-{} is not a valid range", p.lo, p.hi)));
            }
        }
        ports.sort();
        ports.dedup();
        let mut protos = e.protocols.clone();
        protos.sort();
        protos.dedup();
        let dests: Vec<(&str, Value)> = match &e.host {
            Host::Name(n) => vec![("ip", json!(format!("@h4_{n}"))), ("ip6", json!(format!("@h6_{n}")))],
            Host::Ip(a) => vec![(if a.is_ipv4() { "ip" } else { "ip6" }, json!(a.to_string()))],
            Host::Cidr { addr, prefix } => {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if *prefix > max {
                    return Err(invalid("endpoint cidr", format!("{addr}/{prefix}")));
                }
                vec![(
                    if addr.is_ipv4() { "ip" } else { "ip6" },
                    json!({"prefix": {"addr": addr.to_string(), "len": prefix}}),
                )]
            }
        };
        for (fam, dest) in dests {
            for proto in &protos {
                b.rule(
                    AGENT_CHAIN,
                    vec![
                        m(payload(fam, "daddr"), dest.clone()),
                        m(payload(proto.name(), "dport"), ports_value(&ports)),
                        json!({"accept": null}),
                    ],
                );
            }
        }
    }
    deny_tail(b, AGENT_CHAIN, agent);
    Ok(())
}

/// Path of a cgroup2 directory relative to `/sys/fs/cgroup`, as nft expects it.
pub fn nft_cgroup_path(dir: &Path) -> Result<String, NftError> {
    dir.strip_prefix("/sys/fs/cgroup")
        .ok()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .ok_or_else(|| NftError::CgroupPath(dir.to_path_buf()))
}

impl Ruleset {
    /// Deterministic `nftables.json` bytes (trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Decodes `nftables.json` and checks it is one AEGIS table in a shape [`apply`] handles.
    pub fn from_json(bytes: &[u8]) -> Result<Ruleset, NftError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(NftError::Decode)?;
        let r = Ruleset { doc };
        let tables: Vec<&Value> = r.objects("table").collect();
        match tables.as_slice() {
            [t] if t.get("family") == Some(&json!(FAMILY))
                && t.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with("aegis_")) => {}
            _ => return Err(NftError::Shape("expected exactly one `inet aegis_<agent>` table".into())),
        }
        for kind in ["chain", "set", "rule"] {
            for o in r.objects(kind) {
                if o.get("table").and_then(Value::as_str) != Some(r.table().as_str()) {
                    return Err(NftError::Shape(format!("a {kind} is outside the agent's table")));
                }
            }
        }
        if !r.objects("chain").any(|c| c.get("name") == Some(&json!("output"))) {
            return Err(NftError::Shape("no `output` chain".into()));
        }
        Ok(r)
    }

    fn objects<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.doc
            .get("nftables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(move |o| o.get(kind))
    }

    /// The table name (`aegis_<agent>`).
    pub fn table(&self) -> String {
        self.objects("table")
            .next()
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Network mode, read from the shape: an `agent` chain means `host`; an own-namespace
    /// table with a tcp port rule on loopback means `proxy`; otherwise `none`.
    pub fn mode(&self) -> NetMode {
        if self.objects("chain").any(|c| c.get("name") == Some(&json!(AGENT_CHAIN))) {
            return NetMode::Host;
        }
        let port = self
            .objects("rule")
            .flat_map(|r| r.get("expr").and_then(Value::as_array).into_iter().flatten())
            .filter_map(|e| e.get("match"))
            .find(|mt| mt.pointer("/left/payload/field") == Some(&json!("dport")))
            .and_then(|mt| mt.get("right").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok());
        match port {
            Some(port) => NetMode::Proxy { port },
            None => NetMode::None,
        }
    }

    /// Declared host names and their sets (to be resolved at launch).
    pub fn host_sets(&self) -> Vec<HostSet> {
        self.objects("set")
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .filter_map(|n| n.strip_prefix("h4_"))
            .map(|n| HostSet {
                name: n.to_string(),
                set_v4: format!("h4_{n}"),
                set_v6: format!("h6_{n}"),
            })
            .collect()
    }

    /// The nft JSON to load: this ruleset with `table` renamed (one table per running
    /// instance), every log statement's prefix replaced by `log_prefix` (one per running
    /// instance too: see [`instance_log_prefix`]), and each host set given its resolved
    /// addresses (`resolved` is keyed by host name; names missing from it stay empty and so
    /// match nothing).
    pub fn fill(&self, table: &str, log_prefix: &str, resolved: &std::collections::BTreeMap<String, Vec<IpAddr>>) -> Vec<u8> {
        let mut doc = self.doc.clone();
        if let Some(items) = doc.get_mut("nftables").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                let Some(obj) = item.as_object_mut() else { continue };
                for (kind, body) in obj.iter_mut() {
                    let key = if kind == "table" { "name" } else { "table" };
                    if let Some(t) = body.get_mut(key)
                        && kind != "metainfo"
                    {
                        *t = json!(table);
                    }
                    if kind == "rule" {
                        for e in body.get_mut("expr").and_then(Value::as_array_mut).into_iter().flatten() {
                            if let Some(p) = e.get_mut("log").and_then(|l| l.get_mut("prefix")) {
                                *p = json!(log_prefix);
                            }
                        }
                    }
                    if kind != "set" {
                        continue;
                    }
                    let Some(name) = body.get("name").and_then(Value::as_str).map(str::to_string) else {
                        continue;
                    };
                    let (host, v4) = match (name.strip_prefix("h4_"), name.strip_prefix("h6_")) {
                        (Some(h), _) => (h.to_string(), true),
                        (_, Some(h)) => (h.to_string(), false),
                        _ => continue,
                    };
                    let mut addrs: Vec<String> = resolved
                        .get(&host)
                        .into_iter()
                        .flatten()
                        .filter(|a| a.is_ipv4() == v4)
                        .map(IpAddr::to_string)
                        .collect();
                    addrs.sort();
                    addrs.dedup();
                    if !addrs.is_empty()
                        && let Some(o) = body.as_object_mut()
                    {
                        o.insert("elem".into(), json!(addrs));
                    }
                }
            }
        }
        let mut out = serde_json::to_vec(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// The nft JSON of a `host`-mode ruleset for the agent's own network namespace (a
    /// launcher that cannot match the agent's sockets by cgroup in the host's namespace:
    /// not root, or no cgroup2 tree). Like [`Ruleset::fill`], plus: every packet of the
    /// namespace goes through the agent chain (the namespace is the agent's alone: no cgroup
    /// dispatch), and denials are logged to [`NFLOG_GROUP`] (the kernel log is silent for
    /// non-initial namespaces). The supervisor forwards what the chain accepts
    /// ([`Ruleset::forward_targets`]).
    pub fn fill_own_netns(&self, table: &str, log_prefix: &str, resolved: &std::collections::BTreeMap<String, Vec<IpAddr>>) -> Vec<u8> {
        let mut doc: Value = serde_json::from_slice(&self.fill(table, log_prefix, resolved)).unwrap_or(Value::Null);
        if let Some(items) = doc.get_mut("nftables").and_then(Value::as_array_mut) {
            for item in items.iter_mut() {
                let Some(rule) = item.get_mut("rule") else { continue };
                for e in rule.get_mut("expr").and_then(Value::as_array_mut).into_iter().flatten() {
                    if let Some(log) = e.get_mut("log").and_then(Value::as_object_mut) {
                        log.remove("level");
                        log.insert("group".into(), json!(NFLOG_GROUP));
                    }
                }
            }
            items.push(obj([(
                "rule",
                obj([
                    ("family", json!(FAMILY)),
                    ("table", json!(table)),
                    ("chain", json!("output")),
                    ("expr", json!([{"goto": {"target": AGENT_CHAIN}}])),
                ]),
            )]));
        }
        let mut out = serde_json::to_vec(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Every address, port and protocol the `host`-mode agent chain accepts, with names
    /// resolved by `resolved`: what the supervisor forwards when the agent has its own
    /// network namespace. `Err` names a grant that is not a finite, small set of single
    /// addresses and ports (a network wider than one address, or more than
    /// [`MAX_FORWARDS`] in all), which cannot be forwarded one by one.
    pub fn forward_targets(&self, resolved: &std::collections::BTreeMap<String, Vec<IpAddr>>) -> Result<Vec<(std::net::SocketAddr, Proto)>, String> {
        let mut out = std::collections::BTreeSet::new();
        for r in self.objects("rule").filter(|r| r.get("chain").and_then(Value::as_str) == Some(AGENT_CHAIN)) {
            let exprs: Vec<&Value> = r.get("expr").and_then(Value::as_array).into_iter().flatten().collect();
            if !exprs.iter().any(|e| e.get("accept").is_some()) {
                continue;
            }
            let mut addrs: Option<Vec<IpAddr>> = None;
            let mut ports: Option<(Proto, Vec<u16>)> = None;
            for m in exprs.iter().filter_map(|e| e.get("match")) {
                let (Some(proto), Some(field)) = (m.pointer("/left/payload/protocol").and_then(Value::as_str), m.pointer("/left/payload/field").and_then(Value::as_str)) else {
                    continue;
                };
                let right = m.get("right").unwrap_or(&Value::Null);
                match (proto, field) {
                    ("ip" | "ip6", "daddr") => addrs = Some(addresses(right, resolved)?),
                    ("tcp" | "udp", "dport") => ports = Some((if proto == "tcp" { Proto::Tcp } else { Proto::Udp }, port_list(right)?)),
                    _ => {}
                }
            }
            let (Some(addrs), Some((proto, ports))) = (addrs, ports) else { continue };
            for a in addrs {
                for p in &ports {
                    out.insert((std::net::SocketAddr::new(a, *p), proto));
                    if out.len() > MAX_FORWARDS {
                        return Err(format!("the grants add up to more than {MAX_FORWARDS} address:port pairs"));
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Human-readable twin (one line per rule, nft-like).
    pub fn to_text(&self) -> String {
        let mut out = format!("table {FAMILY} {} ({} mode)\n", self.table(), self.mode().name());
        for s in self.objects("set") {
            out.push_str(&format!(
                "  set {} type {} (filled at launch)\n",
                s.get("name").and_then(Value::as_str).unwrap_or("?"),
                s.get("type").and_then(Value::as_str).unwrap_or("?")
            ));
        }
        for c in self.objects("chain") {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
            match c.get("hook").and_then(Value::as_str) {
                Some(h) => out.push_str(&format!(
                    "  chain {name} hook {h} policy {}\n",
                    c.get("policy").and_then(Value::as_str).unwrap_or("accept")
                )),
                None => out.push_str(&format!("  chain {name}\n")),
            }
            if self.mode() == NetMode::Host && name == "output" {
                out.push_str("    socket cgroupv2 level <depth> \"<agent leaf>\" goto agent   (added at launch)\n");
            }
            for r in self.objects("rule").filter(|r| r.get("chain").and_then(Value::as_str) == Some(name)) {
                let exprs: Vec<String> = r
                    .get("expr")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(expr_text)
                    .collect();
                out.push_str(&format!("    {}\n", exprs.join(" ")));
            }
        }
        out
    }
}

/// At most this many address:port pairs are forwarded one by one ([`Ruleset::forward_targets`]).
pub const MAX_FORWARDS: usize = 256;

fn addresses(v: &Value, resolved: &std::collections::BTreeMap<String, Vec<IpAddr>>) -> Result<Vec<IpAddr>, String> {
    match v {
        Value::String(s) => match s.strip_prefix('@') {
            Some(set) => {
                let (name, v4) = match (set.strip_prefix("h4_"), set.strip_prefix("h6_")) {
                    (Some(n), _) => (n, true),
                    (_, Some(n)) => (n, false),
                    _ => return Err(format!("set {set} is not a host set")),
                };
                Ok(resolved.get(name).into_iter().flatten().filter(|a| a.is_ipv4() == v4).copied().collect())
            }
            None => s.parse().map(|a| vec![a]).map_err(|_| format!("{s} is not an address")),
        },
        Value::Object(o) if o.contains_key("prefix") => {
            let addr = o.get("prefix").and_then(|p| p.get("addr")).and_then(Value::as_str).unwrap_or_default();
            let len = o.get("prefix").and_then(|p| p.get("len")).and_then(Value::as_u64).unwrap_or(0);
            match addr.parse::<IpAddr>() {
                Ok(a) if len == if a.is_ipv4() { 32 } else { 128 } => Ok(vec![a]),
                _ => Err(format!("the network {addr}/{len} is wider than one address")),
            }
        }
        Value::Object(o) if o.contains_key("set") => {
            let mut out = Vec::new();
            for x in o.get("set").and_then(Value::as_array).into_iter().flatten() {
                out.extend(addresses(x, resolved)?);
            }
            Ok(out)
        }
        other => Err(format!("destination {other} cannot be forwarded")),
    }
}

fn port_list(v: &Value) -> Result<Vec<u16>, String> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()).map(|p| vec![p]).ok_or_else(|| format!("port {n}")),
        Value::Object(o) if o.contains_key("range") => {
            let r: Vec<u64> = o.get("range").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_u64).collect();
            match r.as_slice() {
                [lo, hi] if hi >= lo && hi - lo < MAX_FORWARDS as u64 => Ok((*lo..=*hi).filter_map(|p| u16::try_from(p).ok()).collect()),
                _ => Err(format!("the port range {v} is too wide to forward port by port")),
            }
        }
        Value::Object(o) if o.contains_key("set") => {
            let mut out = Vec::new();
            for x in o.get("set").and_then(Value::as_array).into_iter().flatten() {
                out.extend(port_list(x)?);
            }
            Ok(out)
        }
        other => Err(format!("ports {other} cannot be forwarded")),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            if let Some(s) = o.get("set") {
                format!("{{ {} }}", value_text(s).replace(',', ", "))
            } else if let Some(r) = o.get("range") {
                value_text(r).replace(',', "-")
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    p.get("addr").map(value_text).unwrap_or_default(),
                    p.get("len").map(value_text).unwrap_or_default()
                )
            } else if let Some(p) = o.get("payload") {
                format!(
                    "{} {}",
                    p.get("protocol").map(value_text).unwrap_or_default(),
                    p.get("field").map(value_text).unwrap_or_default()
                )
            } else if let Some(f) = o.get("fib") {
                format!("fib {} {}", f.get("flags").map(value_text).unwrap_or_default(), f.get("result").map(value_text).unwrap_or_default())
            } else if let Some(k) = o.get("meta").or_else(|| o.get("ct")).and_then(|x| x.get("key")) {
                match (o.contains_key("ct"), k.as_str()) {
                    (true, _) => format!("ct {}", value_text(k)),
                    // `iif lo`/`oif lo` read as nft prints them; other keys need `meta`.
                    (false, Some("iif" | "oif")) => value_text(k),
                    (false, _) => format!("meta {}", value_text(k)),
                }
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn expr_text(e: &Value) -> String {
    let Some(o) = e.as_object() else { return e.to_string() };
    let Some((k, v)) = o.iter().next() else { return String::new() };
    match k.as_str() {
        "match" => format!(
            "{} {}",
            v.get("left").map(value_text).unwrap_or_default(),
            v.get("right").map(value_text).unwrap_or_default()
        ),
        "limit" => format!(
            "limit rate {}/{} burst {}",
            v.get("rate").map(value_text).unwrap_or_default(),
            v.get("per").map(value_text).unwrap_or_default(),
            v.get("burst").map(value_text).unwrap_or_default()
        ),
        "log" => match v.get("group") {
            Some(g) => format!("log group {} prefix \"{}\"", value_text(g), v.get("prefix").map(value_text).unwrap_or_default()),
            None => format!("log prefix \"{}\"", v.get("prefix").map(value_text).unwrap_or_default()),
        },
        "reject" => match (v.get("type"), v.get("expr")) {
            (Some(t), Some(e)) => format!("reject with {} {}", value_text(t), value_text(e)),
            (Some(t), None) => format!("reject with {}", value_text(t)),
            _ => "reject".into(),
        },
        other => other.to_string(),
    }
}

/// A table loaded by [`apply`] into the host's namespace (deleted by
/// [`LoadedTable::remove`] or on drop), or into an agent's own namespace (it dies with the
/// namespace; nothing to delete).
#[derive(Debug)]
pub struct LoadedTable {
    table: String,
    removed: bool,
}

/// Directories searched for `nft`, in order: never the caller's `PATH` (a launcher's PATH
/// may hold anything, and `nft` runs with the supervisor's privileges).
pub const NFT_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/local/bin"];

/// The `nft` binary: the first executable regular file named `nft` in [`NFT_DIRS`].
pub fn nft_binary() -> Result<PathBuf, NftError> {
    use std::os::unix::fs::PermissionsExt as _;
    NFT_DIRS
        .iter()
        .map(|d| Path::new(d).join("nft"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| NftError::Spawn {
            what: "finding nft",
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no nft in {} (install the nftables package)", NFT_DIRS.join(", ")),
            ),
        })
}

/// The namespaces of a running agent that `nft` joins to load its table: its user namespace
/// (joined first: there the helper holds CAP_NET_ADMIN over the agent's network namespace,
/// whoever launched it, and keeps it across exec as an ambient capability) and its network
/// namespace.
#[derive(Debug)]
pub struct AgentNs {
    user: std::fs::File,
    net: std::fs::File,
}

impl AgentNs {
    /// Opens `/proc/<pid>/ns/{user,net}`.
    pub fn of_pid(pid: i32) -> Result<AgentNs, NftError> {
        let open = |ns: &str| {
            std::fs::File::open(format!("/proc/{pid}/ns/{ns}")).map_err(|source| NftError::Spawn {
                what: "opening the agent's namespaces",
                source,
            })
        };
        Ok(AgentNs { user: open("user")?, net: open("net")? })
    }
}

/// Where `nft` runs: the caller's namespaces, or an agent's.
#[derive(Clone, Copy)]
enum NftIn<'a> {
    Here,
    Agent(&'a AgentNs),
}

/// CAP_NET_ADMIN (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// In a forked child before exec: joins the agent's user then network namespace and makes
/// CAP_NET_ADMIN ambient, so that `nft` (not uid 0 in that namespace when the launcher is
/// not root) keeps it. Raw syscalls only.
fn join_agent_ns(user: i32, net: i32) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let err = std::io::Error::last_os_error;
    // SAFETY: setns on namespace fds the parent opened; this process is single-threaded
    // (just forked) and shares no fs struct, as joining a user namespace requires.
    if unsafe { libc::setns(user, libc::CLONE_NEWUSER) } != 0 {
        return Err(err());
    }
    // SAFETY: as above.
    if unsafe { libc::setns(net, libc::CLONE_NEWNET) } != 0 {
        return Err(err());
    }
    let mut hdr = Header { version: V3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a header and two data structs we own.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) != 0 {
            return Err(err());
        }
        data[0].inheritable |= 1 << CAP_NET_ADMIN;
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) != 0 {
            return Err(err());
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, CAP_NET_ADMIN as libc::c_ulong, 0, 0) != 0 {
            return Err(err());
        }
    }
    Ok(())
}

/// Starts `nft` (at its absolute path, with an empty environment) with `args` and `input`
/// on stdin (closed after writing), in the caller's namespaces or an agent's.
fn spawn_nft(args: &[&str], input: &[u8], place: NftIn, what: &'static str) -> Result<std::process::Child, NftError> {
    let mut cmd = Command::new(nft_binary()?);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let NftIn::Agent(ns) = place {
        let (user, net) = (ns.user.as_raw_fd(), ns.net.as_raw_fd());
        // SAFETY: the closure runs in the forked child before exec and makes raw syscalls
        // only (setns, capget, capset, prctl); the fds live until `spawn` has returned.
        unsafe {
            cmd.pre_exec(move || join_agent_ns(user, net));
        }
    }
    let mut child = cmd.spawn().map_err(|source| NftError::Spawn { what, source })?;
    if let Some(mut stdin) = child.stdin.take() {
        // nft reads all of stdin before it answers, and our inputs are far below the pipe
        // buffer, so writing before reading cannot deadlock.
        stdin.write_all(input).map_err(|source| NftError::Spawn { what, source })?;
    }
    Ok(child)
}

fn finish_nft(child: std::process::Child, what: &'static str) -> Result<Vec<u8>, NftError> {
    let out = child.wait_with_output().map_err(|source| NftError::Spawn { what, source })?;
    if !out.status.success() {
        return Err(NftError::Nft {
            what,
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Runs `nft` with `args` and `input` on stdin in the caller's namespaces. Returns stdout.
pub fn run_nft(args: &[&str], input: &[u8], what: &'static str) -> Result<Vec<u8>, NftError> {
    finish_nft(spawn_nft(args, input, NftIn::Here, what)?, what)
}

/// Loads `json` (from [`Ruleset::fill`], whose table is `table`) into the host's namespace
/// and, in `host` mode, the `dispatch` rule ([`add_dispatch`]); then checks the table is
/// there. On any failure the table is deleted again. ([`start_host_load`] is the same in
/// two steps, so the load can start before the agent's leaf exists.)
pub fn apply(json: &[u8], table: &str, dispatch: Option<Dispatch>) -> Result<LoadedTable, NftError> {
    let load = start_host_load(json, table)?;
    match dispatch {
        Some(d) => load.finish(d),
        None => load.finish_plain(),
    }
}

/// The rule that sends the agent's packets to its chain, for [`add_dispatch`]: sockets
/// whose cgroup2 ancestor at `level` is the cgroup with id `cgroup_id` (the inode number of
/// its directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub cgroup_id: u64,
    pub level: u32,
}

impl Dispatch {
    /// The dispatch of the cgroup2 directory `dir` at `level`.
    pub fn of_dir(dir: &Path, level: u32) -> Result<Dispatch, NftError> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(dir).map_err(|source| NftError::Spawn { what: "reading the agent's cgroup2 leaf", source })?;
        Ok(Dispatch { cgroup_id: m.ino(), level })
    }
}

/// A host-namespace table load running in the background (`nft` started before the
/// agent's cgroup leaf exists: the table does not depend on it); [`HostLoad::finish`] adds
/// the dispatch rule once the leaf exists. The agent must not run before it finished.
pub struct HostLoad {
    child: Option<std::process::Child>,
    table: String,
}

impl Drop for HostLoad {
    /// An abandoned load: stop `nft` and delete whatever it committed.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = delete_table(&self.table, None);
        }
    }
}

/// Starts `nft -j -f -` with `json` in the caller's (the host's) namespace.
pub fn start_host_load(json: &[u8], table: &str) -> Result<HostLoad, NftError> {
    let child = spawn_nft(&["-j", "-f", "-"], json, NftIn::Here, "loading the ruleset")?;
    Ok(HostLoad { child: Some(child), table: table.to_string() })
}

impl HostLoad {
    /// Waits for `nft`, adds the dispatch rule over netlink (no second `nft`), and checks
    /// the table is there. On failure the table is deleted.
    pub fn finish(self, dispatch: Dispatch) -> Result<LoadedTable, NftError> {
        self.finish_with(Some(dispatch))
    }

    /// [`HostLoad::finish`] without a dispatch rule (a table that hooks itself).
    pub fn finish_plain(self) -> Result<LoadedTable, NftError> {
        self.finish_with(None)
    }

    fn finish_with(mut self, dispatch: Option<Dispatch>) -> Result<LoadedTable, NftError> {
        // From here the table is deleted on every failure (LoadedTable's Drop).
        let loaded = LoadedTable { table: self.table.clone(), removed: false };
        if let Some(c) = self.child.take() {
            finish_nft(c, "loading the ruleset")?;
        }
        if let Some(d) = dispatch {
            add_dispatch(&self.table, d)?;
        }
        // The check asks the kernel directly over netlink (no further `nft` process).
        if !table_present(&self.table, None)? {
            return Err(NftError::Missing(format!("{FAMILY} {}", self.table)));
        }
        Ok(loaded)
    }
}

/// Appends `socket cgroupv2 level L <id> goto agent` to the `output` chain of `inet table`
/// in the caller's namespace: one nf_tables batch over netlink, committed when the kernel
/// acknowledges it.
pub fn add_dispatch(table: &str, d: Dispatch) -> Result<(), NftError> {
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_NEWRULE: u16 = 6;
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_CHAIN: u16 = 2;
    const NFTA_RULE_EXPRESSIONS: u16 = 4;
    const NFTA_LIST_ELEM: u16 = 1;
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
    const NFTA_SOCKET_KEY: u16 = 1;
    const NFTA_SOCKET_DREG: u16 = 2;
    const NFTA_SOCKET_LEVEL: u16 = 3;
    const NFT_SOCKET_CGROUPV2: u32 = 3;
    const NFTA_CMP_SREG: u16 = 1;
    const NFTA_CMP_OP: u16 = 2;
    const NFTA_CMP_DATA: u16 = 3;
    const NFT_CMP_EQ: u32 = 0;
    const NFTA_DATA_VALUE: u16 = 1;
    const NFTA_DATA_VERDICT: u16 = 2;
    const NFTA_VERDICT_CODE: u16 = 1;
    const NFTA_VERDICT_CHAIN: u16 = 2;
    const NFTA_IMMEDIATE_DREG: u16 = 1;
    const NFTA_IMMEDIATE_DATA: u16 = 2;
    const NFT_REG_VERDICT: u32 = 0;
    const NFT_REG_1: u32 = 1;
    const NFT_GOTO: i32 = -4;
    let be = |v: u32| v.to_be_bytes().to_vec();
    let cstr = |t: &str| {
        let mut b = t.as_bytes().to_vec();
        b.push(0);
        b
    };
    let expr = |name: &str, data: Vec<u8>| nested(NFTA_LIST_ELEM, &[attr(NFTA_EXPR_NAME, &cstr(name)), nested(NFTA_EXPR_DATA, &[data])]);
    let socket = expr("socket", [attr(NFTA_SOCKET_KEY, &be(NFT_SOCKET_CGROUPV2)), attr(NFTA_SOCKET_DREG, &be(NFT_REG_1)), attr(NFTA_SOCKET_LEVEL, &be(d.level))].concat());
    let cmp = expr(
        "cmp",
        [attr(NFTA_CMP_SREG, &be(NFT_REG_1)), attr(NFTA_CMP_OP, &be(NFT_CMP_EQ)), nested(NFTA_CMP_DATA, &[attr(NFTA_DATA_VALUE, &d.cgroup_id.to_ne_bytes())])].concat(),
    );
    let verdict = nested(NFTA_DATA_VERDICT, &[attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes()), attr(NFTA_VERDICT_CHAIN, &cstr(AGENT_CHAIN))]);
    let goto = expr("immediate", [attr(NFTA_IMMEDIATE_DREG, &be(NFT_REG_VERDICT)), nested(NFTA_IMMEDIATE_DATA, &[verdict])].concat());
    let exprs = [socket, cmp, goto].concat();
    let (tbl, chain) = (cstr(table), cstr("output"));
    let req = libc::NLM_F_REQUEST as u16;
    let mut batch = nl_msg(NFNL_MSG_BATCH_BEGIN, req, 1, NFNL_SUBSYS_NFTABLES, &[]);
    batch.extend(nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        req | (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16,
        2,
        0,
        &[(NFTA_RULE_TABLE, &tbl), (NFTA_RULE_CHAIN, &chain), (NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &exprs)],
    ));
    batch.extend(nl_msg(NFNL_MSG_BATCH_END, req, 3, NFNL_SUBSYS_NFTABLES, &[]));
    let sock = netfilter_socket(None)?;
    nl_send(&sock, &batch)?;
    match nl_ack(&sock)? {
        Ack::Done(_) => Ok(()),
        Ack::NotFound => Err(NftError::Missing(format!("{FAMILY} {table} (adding the dispatch rule)"))),
    }
}

/// NLA_F_NESTED: the attribute holds attributes.
const NLA_F_NESTED: u16 = 0x8000;

/// One attribute (length, type, payload, padding to 4 bytes).
fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(crate::netlink::align4(4 + payload.len()));
    a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(crate::netlink::align4(a.len()), 0);
    a
}

/// A nested attribute of the (already encoded) `inner` attributes.
fn nested(ty: u16, inner: &[Vec<u8>]) -> Vec<u8> {
    attr(ty | NLA_F_NESTED, &inner.concat())
}

/// Loads `json` into a running agent's network namespace ([`AgentNs`]), running `during`
/// while `nft` works (`during` always runs). Verify with [`verify_on`] afterwards: the
/// caller may not be able to enter that namespace itself.
pub fn load_into<R>(json: &[u8], ns: &AgentNs, during: impl FnOnce() -> R) -> (Result<(), NftError>, R) {
    let what = "loading the ruleset into the agent's network namespace";
    let child = spawn_nft(&["-j", "-f", "-"], json, NftIn::Agent(ns), what);
    let r = during();
    (child.and_then(|c| finish_nft(c, what)).map(|_| ()), r)
}

/// Checks over `sock` (a NETLINK_NETFILTER socket of the agent's namespace, opened by a
/// process with CAP_NET_ADMIN there) that `table` exists. The table lives and dies with
/// that namespace.
pub fn verify_on(sock: &std::os::fd::OwnedFd, table: &str) -> Result<LoadedTable, NftError> {
    if !table_present_on(sock, table)? {
        return Err(NftError::Missing(format!("{FAMILY} {table}")));
    }
    Ok(LoadedTable { table: table.to_string(), removed: true })
}

/// Which step of [`loopback_up`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopbackStep {
    /// Opening the socket the ioctls go through.
    Socket,
    /// SIOCGIFFLAGS / SIOCSIFFLAGS on `lo`.
    Flags,
}

/// Sets `lo` up in the calling thread's network namespace (idempotent). Raw syscalls only
/// (socket, ioctl, close): callable between fork and exec. `Err` is the step and errno.
pub fn loopback_up() -> Result<(), (LoopbackStep, i32)> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err((LoopbackStep::Socket, errno()));
    }
    // SAFETY: an all-zero ifreq is valid; we fill the name and flags.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let ok = unsafe {
        libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0
        }
    };
    let e = errno();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(s) };
    if ok { Ok(()) } else { Err((LoopbackStep::Flags, e)) }
}

/// A network namespace made for an agent that does not exist yet: `nft` runs in it
/// (loading the table) while the supervisor prepares and clones the agent into it. The
/// namespace belongs to the supervisor's (initial) user namespace, so the agent holds no
/// capability over it, not even to take `lo` down.
pub struct PendingNetns {
    /// The namespace (an open `/proc/<nft>/ns/net`): setns into it before clone.
    pub ns: std::fs::File,
    /// `None` once finished.
    child: Option<std::process::Child>,
    table: String,
}

impl Drop for PendingNetns {
    /// An abandoned load (the launch failed first): stop and reap `nft`.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `nft -j -f -` in a new network namespace (unshared, loopback up, before exec)
/// with `json` on stdin. Returns as soon as the namespace exists; the load goes on.
pub fn load_in_new_netns(json: &[u8], table: &str) -> Result<PendingNetns, NftError> {
    let what = "loading the ruleset into a new network namespace";
    let mut cmd = Command::new(nft_binary()?);
    cmd.args(["-j", "-f", "-"]).env_clear().stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and makes raw syscalls only
    // (unshare, then socket, ioctl, close in `loopback_up`), which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            loopback_up().map_err(|(_, e)| std::io::Error::from_raw_os_error(e))
        });
    }
    // `spawn` returns once exec succeeded, so the namespace exists now; nft cannot finish
    // before it has read stdin, which is written after the namespace is opened.
    let mut child = cmd.spawn().map_err(|source| NftError::Spawn { what, source })?;
    let ns = match std::fs::File::open(format!("/proc/{}/ns/net", child.id())) {
        Ok(f) => f,
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(NftError::Spawn { what: "opening the new network namespace", source });
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(json).map_err(|source| NftError::Spawn { what, source })?;
    }
    Ok(PendingNetns {
        ns,
        child: Some(child),
        table: table.to_string(),
    })
}

impl PendingNetns {
    /// Waits for `nft` and verifies the table over netlink. The returned table lives and
    /// dies with the namespace (it is not deleted on drop).
    pub fn finish(mut self) -> Result<LoadedTable, NftError> {
        let path = PathBuf::from(format!("/proc/self/fd/{}", self.ns.as_raw_fd()));
        if let Some(c) = self.child.take() {
            finish_nft(c, "loading the ruleset")?;
        }
        if !table_present(&self.table, Some(&path))? {
            return Err(NftError::Missing(format!("{FAMILY} {}", self.table)));
        }
        Ok(LoadedTable {
            table: self.table.clone(),
            removed: true,
        })
    }
}

impl LoadedTable {
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Deletes the table. Idempotent.
    pub fn remove(&mut self) -> Result<(), NftError> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        delete_table(&self.table, None).map(|_| ())
    }

    /// Forgets the table without deleting it (used when its namespace is gone).
    pub fn disarm(&mut self) {
        self.removed = true;
    }
}

impl Drop for LoadedTable {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Whether a `table inet <table>` exists in the current (host) network namespace.
pub fn table_exists(table: &str) -> bool {
    run_nft(&["list", "table", FAMILY, table], b"", "listing").is_ok()
}

/// The name of one running instance's table: `aegis_<agent>_<supervisor pid>_<nonce>`
/// (`agent` already made an nft identifier, `nonce` 8 hex digits). The pid lets a later run
/// sweep what a killed supervisor left ([`sweep_stale`]); the nonce keeps two supervisors
/// with one pid apart (pid namespaces share the host's network namespace).
pub fn instance_table(agent: &str, pid: u32, nonce: u32) -> String {
    format!("aegis_{agent}_{pid}_{nonce:08x}")
}

/// The supervisor pid in a table name of [`instance_table`] (or of the older
/// `aegis_<agent>_<pid>` form).
pub fn table_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("aegis_")?;
    let mut parts = rest.rsplit('_');
    let last = parts.next()?;
    if last.len() == 8 && last.bytes().all(|b| b.is_ascii_hexdigit())
        && let Some(pid) = parts.next().and_then(|p| p.parse::<i32>().ok())
        && parts.next().is_some()
    {
        return Some(pid);
    }
    last.parse().ok()
}

/// Deletes `inet aegis_*` tables of the host namespace whose supervisor pid
/// ([`table_pid`]) is not alive (left by a supervisor killed with SIGKILL). Netlink only (a
/// dump and one delete per stale table, no `nft` process), so the runtime can afford it
/// after every host-mode launch. Returns the deleted table names; nothing when the caller
/// may not list tables (not root).
pub fn sweep_stale(alive: &dyn Fn(i32) -> bool) -> Vec<String> {
    let Ok(tables) = list_tables(None) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for name in tables {
        if !name.starts_with("aegis_") {
            continue;
        }
        let Some(pid) = table_pid(&name) else { continue };
        if alive(pid) {
            continue;
        }
        if let Ok(true) = delete_table(&name, None) {
            removed.push(name);
        }
    }
    removed
}

/// Names of the `inet` tables in the network namespace at `netns` (or the current one):
/// one NFT_MSG_GETTABLE dump over netlink.
pub fn list_tables(netns: Option<&Path>) -> Result<Vec<String>, NftError> {
    let sock = netfilter_socket(netns)?;
    let msg = nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        1,
        0,
        &[],
    );
    nl_send(&sock, &msg)?;
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err(nl_err("netlink receive"));
        }
        let data = buf.get(..n as usize).unwrap_or_default();
        let mut off = 0usize;
        while let Some(hdr) = data.get(off..off + 16) {
            let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
            if len < 16 || off + len > data.len() {
                return Err(NftError::Shape("malformed netlink reply".into()));
            }
            let body = data.get(off + 16..off + len).unwrap_or_default();
            match ty {
                NLMSG_DONE => return Ok(names),
                NLMSG_ERROR => {
                    let e = body.get(..4).map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]])).unwrap_or(-libc::EINVAL);
                    return Err(NftError::Spawn {
                        what: "listing tables",
                        source: std::io::Error::from_raw_os_error(e.wrapping_neg()),
                    });
                }
                t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE && body.first() == Some(&NFPROTO_INET) => {
                    if let Some(name) = table_name_attr(body.get(4..).unwrap_or_default()) {
                        names.push(name);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// NFTA_TABLE_NAME among the attributes of a table message (after its nfgenmsg).
fn table_name_attr(mut attrs: &[u8]) -> Option<String> {
    while let Some(h) = attrs.get(..4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let ty = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff;
        if len < 4 {
            return None;
        }
        let payload = attrs.get(4..len)?;
        if ty == NFTA_TABLE_NAME {
            let end = payload.iter().position(|b| *b == 0).unwrap_or(payload.len());
            return String::from_utf8(payload.get(..end)?.to_vec()).ok();
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn nl_err(what: &'static str) -> NftError {
    NftError::Spawn {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// A netlink socket in the network namespace at `netns` (or the current one): the
/// supervisor enters the namespace just long enough to create the socket, which stays bound
/// to it.
fn netfilter_socket(netns: Option<&Path>) -> Result<std::os::fd::OwnedFd, NftError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let open = || {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(nl_err("netlink socket"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let Some(ns) = netns else { return open() };
    let own = std::fs::File::open("/proc/self/ns/net").map_err(|source| NftError::Spawn {
        what: "opening our network namespace",
        source,
    })?;
    let target = std::fs::File::open(ns).map_err(|source| NftError::Spawn {
        what: "opening the agent's network namespace",
        source,
    })?;
    // SAFETY: setns with fds we own; the supervisor is single-threaded, and we switch back
    // below whatever happens.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(nl_err("entering the agent's network namespace"));
    }
    let sock = open();
    // SAFETY: as above, back to our own namespace.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(nl_err("returning to the supervisor's network namespace"));
    }
    sock
}

fn nl_msg(ty: u16, flags: u16, seq: u32, res_id: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    // struct nfgenmsg { family, version, res_id (big endian) }
    let family = if res_id == 0 { NFPROTO_INET } else { 0 };
    let r = res_id.to_be_bytes();
    crate::netlink::message(ty, flags, seq, &[family, 0, r[0], r[1]], attrs)
}

fn nl_send(sock: &std::os::fd::OwnedFd, msg: &[u8]) -> Result<(), NftError> {
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sending our buffer to the kernel's netlink address.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent != msg.len() as isize {
        return Err(nl_err("netlink send"));
    }
    Ok(())
}

/// Deletes `inet <table>` in the network namespace at `netns` (or the current one) with one
/// nf_tables netlink transaction (no `nft` process). `Ok(false)` when it did not exist.
pub fn delete_table(table: &str, netns: Option<&Path>) -> Result<bool, NftError> {
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_DELTABLE: u16 = 2;
    let sock = netfilter_socket(netns)?;
    let mut name = table.as_bytes().to_vec();
    name.push(0);
    let req = libc::NLM_F_REQUEST as u16;
    let mut batch = nl_msg(NFNL_MSG_BATCH_BEGIN, req, 1, NFNL_SUBSYS_NFTABLES, &[]);
    batch.extend(nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        req | libc::NLM_F_ACK as u16,
        2,
        0,
        &[(NFTA_TABLE_NAME, &name)],
    ));
    batch.extend(nl_msg(NFNL_MSG_BATCH_END, req, 3, NFNL_SUBSYS_NFTABLES, &[]));
    nl_send(&sock, &batch)?;
    match nl_ack(&sock)? {
        Ack::Done(_) => Ok(true),
        Ack::NotFound => Ok(false),
    }
}

enum Ack {
    Done(bool),
    NotFound,
}

/// Reads replies until the ACK (or error); `Done(true)` when a NEWTABLE reply came first.
fn nl_ack(sock: &std::os::fd::OwnedFd) -> Result<Ack, NftError> {
    let mut found = false;
    let mut buf = vec![0u8; 16384];
    loop {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err(nl_err("netlink receive"));
        }
        let mut off = 0usize;
        let data = buf.get(..n as usize).unwrap_or_default();
        while let Some(hdr) = data.get(off..off + 16) {
            let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
            let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
            if len < 16 {
                return Err(NftError::Shape("malformed netlink reply".into()));
            }
            if ty == NLMSG_ERROR {
                let err = data
                    .get(off + 16..off + 20)
                    .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                    .unwrap_or(-libc::EINVAL);
                return match err {
                    0 => Ok(Ack::Done(found)),
                    e if -e == libc::ENOENT => Ok(Ack::NotFound),
                    e => Err(NftError::Spawn {
                        what: "netlink request",
                        source: std::io::Error::from_raw_os_error(-e),
                    }),
                };
            }
            if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
                found = true;
            }
            off += (len + 3) & !3;
        }
    }
}

/// Asks the kernel (NFT_MSG_GETTABLE over netlink) whether `inet <table>` exists in the
/// network namespace at `netns` (or the current one).
pub fn table_present(table: &str, netns: Option<&Path>) -> Result<bool, NftError> {
    table_present_on(&netfilter_socket(netns)?, table)
}

/// [`table_present`] over a NETLINK_NETFILTER socket of the namespace to ask.
pub fn table_present_on(sock: &std::os::fd::OwnedFd, table: &str) -> Result<bool, NftError> {
    let mut name = table.as_bytes().to_vec();
    name.push(0);
    let msg = nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        1,
        0,
        &[(NFTA_TABLE_NAME, &name)],
    );
    nl_send(sock, &msg)?;
    match nl_ack(sock)? {
        Ack::Done(found) => Ok(found),
        Ack::NotFound => Ok(false),
    }
}
