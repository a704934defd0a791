//! Launch-time forms of a [`Ruleset`]: the JSON one running instance loads ([`Ruleset::fill`],
//! [`Ruleset::fill_own_netns`]) and the destinations a supervisor forwards for a `host`-mode
//! agent in its own namespace ([`Ruleset::forward_targets`]).
//!
//! Input: a decoded ruleset, the instance's table name and log prefix, and the addresses the
//! supervisor resolved for each declared host name. Output: nft JSON bytes, or the list of
//! address:port pairs. Invariants: the artifact itself is never changed (each call works on
//! a copy); a name left unresolved leaves its sets empty, so it matches nothing; the
//! forwards are exactly what the agent chain accepts, and a grant that cannot be forwarded
//! one address at a time (a network, a wide range, more than [`MAX_FORWARDS`]) is an error.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::lower::obj;
use super::{AGENT_CHAIN, FAMILY, NFLOG_GROUP, Proto, Ruleset};

impl Ruleset {
    /// The nft JSON to load: this ruleset with `table` renamed (one table per running
    /// instance), every log statement's prefix replaced by `log_prefix` (one per running
    /// instance too: see [`instance_log_prefix`](super::instance_log_prefix)), and each host
    /// set given its resolved addresses (`resolved` is keyed by host name; names missing
    /// from it stay empty and so match nothing).
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
