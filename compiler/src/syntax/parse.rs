//! TOML → syntax tree for one policy file.
//!
//! Input: the text of one file (already known to be UTF-8) and its [`FileId`].
//! Output: a [`PolicyFile`] and diagnostics. Unknown keys, wrong TOML types, duplicate keys
//! and TOML syntax errors are reported here, each with the span of the offending key or value.
//! Invariant: never panics, whatever the input; keeps going after an error so one run shows
//! every structural problem.

use toml_edit::{Item, TableLike, Value};

use super::ast::*;
use super::schema::{self, KeySpec};
use crate::diag::{Code, Diagnostic, Diagnostics, did_you_mean};
use crate::source::{FileId, Origin, Span};

pub fn parse_file(file: FileId, text: &str, diags: &mut Diagnostics) -> Option<PolicyFile> {
    let doc = match toml_edit::Document::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().map(Span::new).unwrap_or_default();
            let msg = e.message().trim().to_string();
            let help = if msg.contains("duplicate key") {
                "each key may appear once per table; merge the two entries"
            } else {
                "see docs/policy.md for the policy syntax; TOML strings need double quotes"
            };
            diags.push(
                Diagnostic::error(Code::TomlSyntax, format!("invalid TOML: {msg}"))
                    .at(Origin { file, span })
                    .label("here")
                    .help(help),
            );
            return None;
        }
    };
    let mut p = Parser { file, diags };
    Some(p.policy(doc.as_table()))
}

struct Parser<'d> {
    file: FileId,
    diags: &'d mut Diagnostics,
}

fn type_word(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "a table",
        },
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

/// How to write a value of the expected type (the help of a wrong-type error).
fn type_help(expected: &str) -> &'static str {
    match expected {
        "a string" => "strings are written in double quotes: \"...\"",
        "an integer" => "write a whole number without quotes, e.g. 1",
        "a table" => "write a [section] heading, or an inline table { key = \"value\" }",
        "an array of strings" => "write a list of quoted strings: [\"/usr\", \"/etc/ssl\"]",
        "a string or a number" => "write a quoted value with a unit (\"512MiB\", \"30m\") or a plain number",
        "an array of endpoints" => "write a list: [\"api.example.com:443\", { host = \"10.0.0.0/8\", ports = [5432] }]",
        "a string or a table" => "write \"host:port\" or { host = \"...\", ports = [443] }",
        "an array of ports" => "write ports = [443, \"8000-8080\"]",
        "a boolean" => "write true or false, without quotes",
        _ => "see docs/policy.md for the type of each key",
    }
}

impl Parser<'_> {
    fn origin(&self, range: Option<std::ops::Range<usize>>) -> Origin {
        Origin { file: self.file, span: range.map(Span::new).unwrap_or_default() }
    }

    fn item_origin(&self, table: &dyn TableLike, key: &str) -> Origin {
        let span = table
            .get(key)
            .and_then(Item::span)
            .or_else(|| table.key(key).and_then(|k| k.span()));
        self.origin(span)
    }

    fn key_origin(&self, table: &dyn TableLike, key: &str) -> Origin {
        self.origin(table.key(key).and_then(|k| k.span()))
    }

    fn wrong_type(&mut self, origin: Origin, what: &str, expected: &str, item: &Item) {
        self.diags.push(
            Diagnostic::error(
                Code::WrongType,
                // `what` is a key (`agent.name`) or a phrase that already quotes one.
                if what.contains('`') {
                    format!("{what} must be {expected}, found {}", type_word(item))
                } else {
                    format!("`{what}` must be {expected}, found {}", type_word(item))
                },
            )
            .at(origin)
            .label(format!("expected {expected}"))
            .help(type_help(expected)),
        );
    }

    /// Reports keys of `table` not in `known`. `section` names the table in messages.
    fn check_keys(&mut self, table: &dyn TableLike, section: &str, known: &[KeySpec]) {
        for (k, _) in table.iter() {
            if known.iter().any(|s| s.name == k) {
                continue;
            }
            let names = known.iter().map(|s| s.name);
            let mut d = Diagnostic::error(
                Code::UnknownKey,
                if section.is_empty() {
                    format!("unknown key `{k}` at the top level")
                } else {
                    format!("unknown key `{k}` in [{section}]")
                },
            )
            .at(self.key_origin(table, k))
            .label("unknown key");
            let list = known.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
            d = match did_you_mean(k, names) {
                Some(m) => d.help(format!("did you mean `{m}`? Known keys: {list}")),
                None => d.help(format!("known keys: {list}")),
            };
            self.diags.push(d);
        }
    }

    fn table<'t>(&mut self, parent: &'t dyn TableLike, key: &str) -> Option<&'t dyn TableLike> {
        let item = parent.get(key)?;
        match item.as_table_like() {
            Some(t) => Some(t),
            None => {
                let o = self.item_origin(parent, key);
                self.wrong_type(o, key, "a table", item);
                None
            }
        }
    }

    fn string(&mut self, t: &dyn TableLike, key: &str, what: &str) -> Option<SString> {
        let item = t.get(key)?;
        let origin = self.item_origin(t, key);
        match item.as_str() {
            Some(s) => Some(Spanned::new(s.to_string(), origin)),
            None => {
                self.wrong_type(origin, what, "a string", item);
                None
            }
        }
    }

    fn integer(&mut self, t: &dyn TableLike, key: &str, what: &str) -> Option<Spanned<i64>> {
        let item = t.get(key)?;
        let origin = self.item_origin(t, key);
        match item.as_integer() {
            Some(i) => Some(Spanned::new(i, origin)),
            None => {
                self.wrong_type(origin, what, "an integer", item);
                None
            }
        }
    }

    fn boolean(&mut self, t: &dyn TableLike, key: &str, what: &str) -> Option<Spanned<bool>> {
        let item = t.get(key)?;
        let origin = self.item_origin(t, key);
        match item.as_bool() {
            Some(b) => Some(Spanned::new(b, origin)),
            None => {
                self.wrong_type(origin, what, "a boolean", item);
                None
            }
        }
    }

    fn scalar(&mut self, t: &dyn TableLike, key: &str, what: &str) -> Option<Spanned<Scalar>> {
        let item = t.get(key)?;
        let origin = self.item_origin(t, key);
        self.scalar_item(item, origin, what)
    }

    fn scalar_item(&mut self, item: &Item, origin: Origin, what: &str) -> Option<Spanned<Scalar>> {
        let v = match item {
            Item::Value(Value::String(s)) => Scalar::Str(s.value().clone()),
            Item::Value(Value::Integer(i)) => Scalar::Int(*i.value()),
            Item::Value(Value::Float(f)) => Scalar::Float(*f.value()),
            other => {
                self.wrong_type(origin, what, "a string or a number", other);
                return None;
            }
        };
        Some(Spanned::new(v, origin))
    }

    fn string_array(&mut self, t: &dyn TableLike, key: &str, what: &str) -> Vec<SString> {
        let Some(item) = t.get(key) else { return Vec::new() };
        let origin = self.item_origin(t, key);
        let Some(arr) = item.as_array() else {
            self.wrong_type(origin, what, "an array of strings", item);
            return Vec::new();
        };
        let mut out = Vec::with_capacity(arr.len());
        for v in arr.iter() {
            let o = self.origin(v.span());
            match v.as_str() {
                Some(s) => out.push(Spanned::new(s.to_string(), o)),
                None => {
                    let it = Item::Value(v.clone());
                    self.wrong_type(o, &format!("each entry of `{what}`"), "a string", &it);
                }
            }
        }
        out
    }

    fn policy(&mut self, root: &dyn TableLike) -> PolicyFile {
        self.check_keys(root, "", schema::ROOT_KEYS);
        let mut pf = PolicyFile { file: Some(self.file), ..PolicyFile::default() };
        pf.version = self.integer(root, "version", "version");
        if let Some(t) = self.table(root, "agent") {
            self.check_keys(t, "agent", schema::AGENT_KEYS);
            pf.agent.name = self.string(t, "name", "agent.name");
            pf.agent.description = self.string(t, "description", "agent.description");
            pf.agent.extends = self.string_array(t, "extends", "agent.extends");
            if t.get("command").is_some() {
                let origin = self.item_origin(t, "command");
                let argv = self.string_array(t, "command", "agent.command");
                pf.agent.command = Some(Spanned::new(argv, origin));
            }
        }
        if let Some(t) = self.table(root, "parameters") {
            for (k, _) in t.iter() {
                let name = Spanned::new(k.to_string(), self.key_origin(t, k));
                if let Some(description) = self.string(t, k, &format!("parameters.{k}")) {
                    pf.parameters.push(Parameter { name, description });
                }
            }
        }
        if let Some(t) = self.table(root, "filesystem") {
            self.check_keys(t, "filesystem", schema::FILESYSTEM_KEYS);
            pf.filesystem.read = self.string_array(t, "read", "filesystem.read");
            pf.filesystem.write = self.string_array(t, "write", "filesystem.write");
            pf.filesystem.deny = self.string_array(t, "deny", "filesystem.deny");
            pf.filesystem.tmp_size = self.scalar(t, "tmp_size", "filesystem.tmp_size");
            pf.filesystem.protect = self.boolean(t, "protect", "filesystem.protect");
            pf.filesystem.unprotect = self.string_array(t, "unprotect", "filesystem.unprotect");
        }
        if let Some(t) = self.table(root, "exec") {
            self.check_keys(t, "exec", schema::EXEC_KEYS);
            pf.exec.allow = self.string_array(t, "allow", "exec.allow");
        }
        if let Some(t) = self.table(root, "network") {
            self.check_keys(t, "network", schema::NETWORK_KEYS);
            pf.network.mode = self.string(t, "mode", "network.mode");
            pf.network.allow = self.endpoints(t, "allow");
            pf.network.deny = self.endpoints(t, "deny");
            pf.network.dns = self.string_array(t, "dns", "network.dns");
            pf.network.unix = self.string_array(t, "unix", "network.unix");
        }
        if let Some(t) = self.table(root, "api") {
            for (name, item) in t.iter() {
                let name_origin = self.key_origin(t, name);
                let Some(api) = item.as_table_like() else {
                    let o = self.item_origin(t, name);
                    self.wrong_type(o, &format!("api.{name}"), "a table", item);
                    continue;
                };
                pf.apis.push(self.api(Spanned::new(name.to_string(), name_origin), api));
            }
        }
        if let Some(t) = self.table(root, "resources") {
            self.check_keys(t, "resources", schema::RESOURCES_KEYS);
            let r = &mut pf.resources;
            r.memory = self.scalar(t, "memory", "resources.memory");
            r.pids = self.scalar(t, "pids", "resources.pids");
            r.cpu = self.scalar(t, "cpu", "resources.cpu");
            r.cpu_weight = self.scalar(t, "cpu_weight", "resources.cpu_weight");
            r.io_weight = self.scalar(t, "io_weight", "resources.io_weight");
            r.wall_time = self.scalar(t, "wall_time", "resources.wall_time");
        }
        if let Some(t) = self.table(root, "syscalls") {
            self.check_keys(t, "syscalls", schema::SYSCALLS_KEYS);
            pf.syscalls = self.syscalls(t);
        }
        if let Some(t) = self.table(root, "enforcement") {
            self.check_keys(t, "enforcement", schema::ENFORCEMENT_KEYS);
            for layer in schema::LAYERS {
                if let Some(level) = self.string(t, layer, &format!("enforcement.{layer}")) {
                    let key = Spanned::new(layer.to_string(), self.key_origin(t, layer));
                    pf.enforcement.levels.push((key, level));
                }
            }
            pf.enforcement.min_landlock_abi =
                self.integer(t, "min_landlock_abi", "enforcement.min_landlock_abi");
        }
        pf
    }

    fn endpoints(&mut self, t: &dyn TableLike, key: &str) -> Vec<EndpointSyntax> {
        let what = format!("network.{key}");
        let Some(item) = t.get(key) else { return Vec::new() };
        let origin = self.item_origin(t, key);
        let Some(arr) = item.as_array() else {
            self.wrong_type(origin, &what, "an array of endpoints", item);
            return Vec::new();
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            let o = self.origin(v.span());
            match v {
                Value::String(s) => out.push(EndpointSyntax::Short(Spanned::new(s.value().clone(), o))),
                Value::InlineTable(it) => {
                    let it: &dyn TableLike = it;
                    self.check_keys(it, &what, ENDPOINT_KEYS);
                    let host = self.string(it, "host", "endpoint host");
                    let protocol = self.string(it, "protocol", "endpoint protocol");
                    let exe = self.string_array(it, "exe", "endpoint exe");
                    let mut ports = Vec::new();
                    if let Some(p) = it.get("ports") {
                        let po = self.item_origin(it, "ports");
                        match p.as_array() {
                            Some(a) => {
                                for pv in a.iter() {
                                    let pvo = self.origin(pv.span());
                                    if let Some(s) = self.scalar_item(&Item::Value(pv.clone()), pvo, "a port") {
                                        ports.push(s);
                                    }
                                }
                            }
                            None => self.wrong_type(po, "endpoint ports", "an array of ports", p),
                        }
                    }
                    if host.is_none() {
                        self.diags.push(
                            Diagnostic::error(Code::MissingKey, "endpoint table needs a `host`")
                                .at(o)
                                .help("write { host = \"api.example.com\", ports = [443] }"),
                        );
                    }
                    out.push(EndpointSyntax::Table { origin: o, host, ports, protocol, exe });
                }
                other => {
                    let it = Item::Value(other.clone());
                    self.wrong_type(o, &format!("each entry of `{what}`"), "a string or a table", &it);
                }
            }
        }
        out
    }

    fn api(&mut self, name: SString, t: &dyn TableLike) -> ApiSection {
        let section = format!("api.{}", name.value);
        self.check_keys(t, &section, schema::API_KEYS);
        let host = self.string(t, "host", &format!("{section}.host"));
        let port = self.integer(t, "port", &format!("{section}.port"));
        let scopes = self.string_array(t, "scopes", &format!("{section}.scopes"));
        let allow = self.string_array(t, "allow", &format!("{section}.allow"));
        let deny = self.string_array(t, "deny", &format!("{section}.deny"));
        let exe = self.string_array(t, "exe", &format!("{section}.exe"));
        let credential = match self.table(t, "credential") {
            Some(c) => {
                let cs = format!("{section}.credential");
                self.check_keys(c, &cs, schema::CREDENTIAL_KEYS);
                Some(CredentialSection {
                    origin: self.item_origin(t, "credential"),
                    header: self.string(c, "header", &format!("{cs}.header")),
                    prefix: self.string(c, "prefix", &format!("{cs}.prefix")),
                    from_env: self.string(c, "from_env", &format!("{cs}.from_env")),
                    from_file: self.string(c, "from_file", &format!("{cs}.from_file")),
                })
            }
            None => None,
        };
        if host.is_none() {
            self.diags.push(
                Diagnostic::error(Code::MissingKey, format!("[{section}] needs a `host`"))
                    .at(name.origin)
                    .help("add host = \"api.example.com\""),
            );
        }
        ApiSection { name, host, port, scopes, allow, deny, credential, exe }
    }

    fn syscalls(&mut self, t: &dyn TableLike) -> SyscallsSection {
        let mut s = SyscallsSection::default();
        if let Some(item) = t.get("base") {
            let origin = self.item_origin(t, "base");
            if let Some(name) = item.as_str() {
                s.base = Some(SyscallBase::Named(Spanned::new(name.to_string(), origin)));
            } else if let Some(bt) = item.as_table_like() {
                self.check_keys(bt, "syscalls.base", OCI_BASE_KEYS);
                match self.string(bt, "oci", "syscalls.base.oci") {
                    Some(p) => s.base = Some(SyscallBase::Oci(p)),
                    None => self.diags.push(
                        Diagnostic::error(Code::MissingKey, "`syscalls.base` table needs `oci`")
                            .at(origin)
                            .help("write base = { oci = \"profiles/docker-default.json\" }"),
                    ),
                }
            } else {
                self.wrong_type(origin, "syscalls.base", "\"default\" or { oci = \"path\" }", item);
            }
        }
        s.allow = self.string_array(t, "allow", "syscalls.allow");
        s.deny = self.string_array(t, "deny", "syscalls.deny");
        s.log = self.string_array(t, "log", "syscalls.log");
        s.kill = self.string_array(t, "kill", "syscalls.kill");
        s.default_errno = self.scalar(t, "default_errno", "syscalls.default_errno");
        if let Some(et) = self.table(t, "errno") {
            for (k, _) in et.iter() {
                let ko = self.key_origin(et, k);
                if let Some(v) = self.scalar(et, k, &format!("syscalls.errno.{k}")) {
                    s.errno.push((Spanned::new(k.to_string(), ko), v));
                }
            }
        }
        s
    }
}

const ENDPOINT_KEYS: &[KeySpec] = &[
    KeySpec { name: "host", ty: schema::Ty::String, doc: "" },
    KeySpec { name: "ports", ty: schema::Ty::StringArray, doc: "" },
    KeySpec { name: "protocol", ty: schema::Ty::String, doc: "" },
    KeySpec { name: "exe", ty: schema::Ty::StringArray, doc: "" },
];

const OCI_BASE_KEYS: &[KeySpec] = &[KeySpec { name: "oci", ty: schema::Ty::String, doc: "" }];
