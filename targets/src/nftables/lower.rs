//! Lowering: a [`NetPolicy`] to the agent's table in nft JSON ([`lower`]).
//!
//! Input: the agent's name and its [`NetPolicy`]. Output: a [`Ruleset`] whose bytes depend on
//! nothing but the input (ports and resolvers sorted and deduplicated, host-name sets in
//! name order). Invariants: every chain ends in a logged deny (`host` mode: log and drop;
//! own-namespace modes: NFLOG and reject); an endpoint a mode cannot express (a host name,
//! a CIDR or UDP outside `host` mode) is refused with [`NftError::Invalid`], never dropped.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::names::log_prefix;
use super::{AGENT_CHAIN, FAMILY, Host, LOG_RATE_PER_SEC, NFLOG_GROUP, NetMode, NetPolicy, NftError, PortRange, Proto, Ruleset, table_name};

fn invalid(field: &'static str, why: impl Into<String>) -> NftError {
    NftError::Invalid {
        field,
        why: why.into(),
    }
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

struct Builder {
    table: String,
    items: Vec<Value>,
}

/// A JSON object from owned values. `json!` would re-serialise every interpolated `Value`
/// (a deep copy per rule); building the map directly keeps large rulesets linear and cheap.
pub(super) fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
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
