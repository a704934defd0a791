//! The `nftables.json` artifact: a [`Ruleset`] (one nft JSON document), its decoding with a
//! shape check, what a launch reads from it, and its text twin.
//!
//! Input: bytes from a bundle ([`Ruleset::from_json`]) or a fresh lowering. Output: the
//! canonical bytes ([`Ruleset::to_json`]), the table name, the network mode, the host sets
//! to resolve, and `nftables.txt` ([`Ruleset::to_text`]). Invariant: a decoded ruleset holds
//! exactly one `inet aegis_<agent>` table, every chain, set and rule is in it, and it has an
//! `output` chain: what [`super::apply()`] can load and delete as one unit.

use serde_json::{Value, json};

use super::{AGENT_CHAIN, FAMILY, NetMode, NftError};

/// The `nftables.json` artifact (nft JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Ruleset {
    pub(super) doc: Value,
}

/// A host name and the two named sets that hold its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSet {
    pub name: String,
    pub set_v4: String,
    pub set_v6: String,
}

impl Ruleset {
    /// Deterministic `nftables.json` bytes (trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(&self.doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Decodes `nftables.json` and checks it is one AEGIS table in a shape [`apply`](super::apply()) handles.
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

    pub(super) fn objects<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
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
