//! The example policies in `policies/`: each one is valid, and its IR (JSON), its `inspect`
//! summary and its warnings are reviewed snapshots (`snapshots/ir/`, `snapshots/inspect/`).
//! The JSON Schema printed by `aegisc schema` is a snapshot too (`snapshots/schema/`), and
//! it must accept every example policy (editors would otherwise flag valid files).

use aegis_compiler::diag::render_human;
use aegis_compiler::syntax::schema::json_schema;
use aegis_compiler::{compile_bytes, compile_file};
use serde_json::{Value, json};

use crate::common::{example_policies, stem, with_snapshots};

#[test]
fn every_example_policy_is_valid() {
    let policies = example_policies();
    assert!(policies.len() >= 4, "expected the four example policies, found {policies:?}");
    for p in policies {
        match compile_file(&p) {
            Ok(c) => assert!(c.warnings.iter().all(|w| !w.is_error()), "{}", p.display()),
            Err(f) => panic!("{} is invalid:\n{}", p.display(), render_human(&f.diagnostics, &f.sources, false)),
        }
    }
}

/// Compiles an example under the name a user would type from the repository root.
fn compile_example(path: &std::path::Path) -> aegis_compiler::Compiled {
    let name = format!("policies/{}", path.file_name().unwrap().to_string_lossy());
    let bytes = std::fs::read(path).unwrap();
    compile_bytes(&name, &bytes).unwrap_or_else(|f| panic!("{name}: {}", render_human(&f.diagnostics, &f.sources, false)))
}

#[test]
fn example_ir_snapshots() {
    for p in example_policies() {
        let c = compile_example(&p);
        let json = serde_json::to_string_pretty(&c.policy.to_json()).unwrap();
        with_snapshots("ir", || insta::assert_snapshot!(stem(&p), json));
    }
}

#[test]
fn example_ir_is_deterministic() {
    for p in example_policies() {
        let a = compile_example(&p).policy;
        let b = compile_example(&p).policy;
        assert_eq!(serde_json::to_vec(&a.to_json()).unwrap(), serde_json::to_vec(&b.to_json()).unwrap());
        assert_eq!(a.digest(), b.digest());
    }
}

#[test]
fn example_inspect_snapshots() {
    for p in example_policies() {
        let c = compile_example(&p);
        let text = aegis_compiler::cli::inspect::render(&c);
        with_snapshots("inspect", || insta::assert_snapshot!(stem(&p), text));
    }
}

#[test]
fn example_warning_snapshots() {
    for p in example_policies() {
        let c = compile_example(&p);
        let text = render_human(&c.warnings, &c.sources, false);
        with_snapshots("inspect", || insta::assert_snapshot!(format!("{}-warnings", stem(&p)), text));
    }
}

#[test]
fn schema_snapshot() {
    let text = serde_json::to_string_pretty(&json_schema()).unwrap();
    with_snapshots("schema", || insta::assert_snapshot!("policy-v1", text));
}

// ---------------------------------------------------------------------------------------
// A small JSON Schema checker for the keywords `json_schema()` uses. (The `jsonschema`
// crate would pull in a regex engine and an HTTP client for a dozen keywords.)

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "boolean" => v.is_boolean(),
        other => panic!("schema uses type `{other}`, which this checker does not know"),
    }
}

/// Errors of `v` against `schema`, each with the JSON pointer where it occurs.
fn check(schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { return };
    for key in s.keys() {
        let known = ["type", "properties", "additionalProperties", "required", "enum", "const", "oneOf", "items", "exclusiveMinimum", "description", "$schema", "$id", "title"];
        assert!(known.contains(&key.as_str()), "schema keyword `{key}` is not understood by this checker");
    }
    if let Some(t) = s.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
            _ => panic!("bad type keyword"),
        };
        if !ok {
            errors.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(Value::Array(options)) = s.get("enum")
        && !options.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {options:?}"));
    }
    if let Some(c) = s.get("const")
        && c != v
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if let (Some(min), Some(x)) = (s.get("exclusiveMinimum").and_then(Value::as_f64), v.as_f64())
        && x <= min
    {
        errors.push(format!("{at}: {x} is not > {min}"));
    }
    if let Some(Value::Array(options)) = s.get("oneOf") {
        let passing = options
            .iter()
            .filter(|o| {
                let mut e = Vec::new();
                check(o, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            errors.push(format!("{at}: {v} matches {passing} of the oneOf alternatives, not exactly one"));
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(items, x, &format!("{at}/{i}"), errors);
        }
    }
    if let Some(obj) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(ps, x, &format!("{at}/{k}"), errors),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{at}: unknown key `{k}`")),
                    Some(extra @ Value::Object(_)) => check(extra, x, &format!("{at}/{k}"), errors),
                    _ => {}
                },
            }
        }
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req {
                if !obj.contains_key(r.as_str().unwrap()) {
                    errors.push(format!("{at}: missing required key {r}"));
                }
            }
        }
    }
}

fn toml_value(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => json!(s.value()),
        T::Integer(i) => json!(i.value()),
        T::Float(f) => json!(f.value()),
        T::Boolean(b) => json!(b.value()),
        T::Datetime(d) => json!(d.value().to_string()),
        T::Array(a) => Value::Array(a.iter().map(toml_value).collect()),
        T::InlineTable(t) => Value::Object(t.iter().map(|(k, v)| (k.to_string(), toml_value(v))).collect()),
    }
}

fn toml_item(i: &toml_edit::Item) -> Value {
    match i {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(v) => toml_value(v),
        toml_edit::Item::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.to_string(), toml_item(v))).collect()),
        toml_edit::Item::ArrayOfTables(a) => Value::Array(a.iter().map(|t| toml_item(&toml_edit::Item::Table(t.clone()))).collect()),
    }
}

fn policy_as_json(text: &str) -> Value {
    let doc = toml_edit::Document::parse(text).unwrap();
    Value::Object(doc.as_table().iter().map(|(k, v)| (k.to_string(), toml_item(v))).collect())
}

fn schema_errors(text: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(&json_schema(), &policy_as_json(text), "", &mut errors);
    errors
}

#[test]
fn schema_accepts_every_example_policy() {
    for p in example_policies() {
        let errors = schema_errors(&std::fs::read_to_string(&p).unwrap());
        assert!(errors.is_empty(), "{} does not match the schema: {errors:#?}", p.display());
    }
}

#[test]
fn schema_accepts_every_form_the_compiler_accepts() {
    // Forms the examples do not use: endpoint tables, OCI base, errno numbers, enforcement.
    let text = r#"
version = 1
[agent]
name = "all-forms"
command = ["/usr/bin/true"]
[parameters]
WORKSPACE = "checkout"
[filesystem]
read = ["/usr/**"]
tmp_size = 1048576
[network]
mode = "proxy"
allow = ["a.example.com:443", { host = "b.example.com", ports = [443, "8000-8080"], protocol = "tcp" }]
deny = [{ host = "10.0.0.0/8", ports = ["*"] }]
[api.github]
host = "api.github.com"
port = 443
credential = { header = "Authorization", prefix = "Bearer ", from_file = "/etc/aegis/gh" }
[resources]
cpu = 2
pids = 64
[syscalls]
base = "default"
deny = ["ptrace"]
default_errno = 1
[syscalls.errno]
ptrace = "EACCES"
[enforcement]
landlock = "best-effort"
min_landlock_abi = 3
"#;
    assert!(compile_bytes("all-forms.toml", text.as_bytes()).is_ok(), "the sample must be a valid policy");
    let errors = schema_errors(text);
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn schema_rejects_unknown_keys_and_bad_enums() {
    // The checker must be able to fail, or the acceptance tests above prove nothing.
    let errors = schema_errors("version = 1\n[agent]\nname = \"x\"\n[filesytem]\nread = []\n");
    assert!(errors.iter().any(|e| e.contains("unknown key `filesytem`")), "{errors:?}");
    let errors = schema_errors("version = 2\n[enforcement]\nlandlock = \"optional\"\n");
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn overlap_lints_name_the_rule_they_found() {
    // The lints look rules up in a path index; these pin which rule each warning names.
    let text = r#"
version = 1
[agent]
name = "lints"
[filesystem]
write = ["/srv/a", "/srv/p/q/r", "/srv/p/q/s"]
read = ["/srv/x/y", "/srv/x/y/z"]
deny = ["/srv/x", "/srv/x/y"]
[exec]
allow = ["/srv/a/b/c", "/srv/p", "/usr/bin/git"]
[resources]
memory = "1GiB"
pids = 64
wall_time = "1h"
"#;
    let Ok(c) = compile_bytes("lints.toml", text.as_bytes()) else { panic!("policy must compile") };
    let msgs: Vec<String> = c.warnings.iter().map(|w| format!("{}: {}", w.code, w.message)).collect();
    let want = [
        "aegis::lint::write_and_exec: '/srv/a/b/c' is both writable (via '/srv/a') and executable",
        "aegis::lint::write_and_exec: '/srv/p' is both writable (via '/srv/p/q/r') and executable",
        "aegis::lint::shadowed_grant: read grant '/srv/x/y' has no effect: deny '/srv/x' covers it",
        "aegis::lint::shadowed_grant: read grant '/srv/x/y/z' has no effect: deny '/srv/x' covers it",
    ];
    for w in want {
        assert!(msgs.iter().any(|m| m == w), "missing `{w}` in {msgs:#?}");
    }
    assert!(!msgs.iter().any(|m| m.contains("/usr/bin/git")), "{msgs:#?}");
    let e = aegis_compiler::lint::exposure(&c.policy);
    assert!(e.reasons.iter().any(|r| r.reason == "1 executable path(s) also writable"), "{:?}", e.reasons);
}

#[test]
fn settings_the_network_mode_ignores_are_warned_about() {
    let lints = |text: &str| -> Vec<String> {
        let Ok(c) = compile_bytes("net.toml", text.as_bytes()) else { panic!("policy must compile: {text}") };
        c.warnings.iter().filter(|w| w.code.as_str() == "aegis::lint::ignored_setting").map(|w| w.message.clone()).collect()
    };
    let proxy = "version = 1\n[agent]\nname = \"p\"\n[network]\nmode = \"proxy\"\nallow = [\"example.com:443\"]\ndns = [\"1.1.1.1\"]\n";
    assert_eq!(lints(proxy), ["dns resolver '1.1.1.1' has no effect in proxy mode"]);
    let none = "version = 1\n[agent]\nname = \"n\"\n[network]\nmode = \"none\"\ndeny = [\"10.0.0.0/8:443\"]\n";
    assert_eq!(lints(none), ["deny endpoint '10.0.0.0/8:443/tcp' has no effect in none mode"]);
    let host = "version = 1\n[agent]\nname = \"h\"\n[network]\nmode = \"host\"\nallow = [\"10.0.0.1:443\"]\ndns = [\"1.1.1.1\"]\n";
    assert!(lints(host).is_empty(), "dns matters in host mode");
}

#[test]
fn a_parameter_under_tmp_keeps_its_own_access_inside_the_private_tmp() {
    use aegis_compiler::eval::{FsQuery, Query, Verdict, evaluate, parse_param};
    let text = "version = 1\n[agent]\nname = \"t\"\n[parameters]\nDATA = \"input\"\n[filesystem]\nread = [\"${DATA}\"]\n";
    let Ok(c) = compile_bytes("t.toml", text.as_bytes()) else { panic!("policy must compile") };
    let params: aegis_compiler::eval::Params = [parse_param("DATA=/tmp/job/data").unwrap()].into_iter().collect();
    let ask = |access, path: &str| evaluate(&c.policy, &params, &Query::Fs { access, path: path.into() }).unwrap();
    let w = ask(FsQuery::Write, "/tmp/job/data/x.csv");
    assert_eq!(w.verdict, Verdict::Deny, "{w:?}");
    assert!(w.notes.iter().any(|n| n.contains("built-in /tmp")), "{w:?}");
    assert_eq!(ask(FsQuery::Read, "/tmp/job/data/x.csv").verdict, Verdict::Allow);
    // Elsewhere in /tmp the private tmpfs is writable as always.
    assert_eq!(ask(FsQuery::Write, "/tmp/job/other.txt").verdict, Verdict::Allow);
}
