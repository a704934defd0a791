//! The shape of the policy format: every section and key, its TOML type and meaning.
//!
//! Input: none (static tables). Output: the key lists the parser checks against (unknown
//! keys are errors, with "did you mean"), and the JSON Schema that `aegisc schema` prints
//! for editors (taplo / Even Better TOML).
//! Invariant: this table is the single list of keys; the parser never accepts a key that is
//! not here, and a test checks that every key here is documented in `docs/policy.md`.

use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
pub enum Ty {
    String,
    Integer,
    Bool,
    /// A string with a unit (`"512MiB"`, `"30m"`) or a plain integer in base units.
    Quantity,
    /// A positive number (integer or float).
    Number,
    StringArray,
    /// Endpoint list: strings (`"host:443/tcp"`) or tables `{ host, ports, protocol }`.
    EndpointArray,
    /// `"default"` or `{ oci = "path.json" }`.
    SyscallBase,
    /// A table of NAME → string.
    StringMap,
    /// A table of NAME → errno (string or integer).
    ErrnoMap,
    /// `"required"` or `"best-effort"`.
    Level,
    Credential,
}

#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    pub name: &'static str,
    pub ty: Ty,
    pub doc: &'static str,
}

const fn key(name: &'static str, ty: Ty, doc: &'static str) -> KeySpec {
    KeySpec { name, ty, doc }
}

pub const ROOT_KEYS: &[KeySpec] = &[
    key("version", Ty::Integer, "Policy language version. Only 1 exists."),
    key("agent", Ty::String, "The agent this policy is for."),
    key("parameters", Ty::StringMap, "Launch parameters: NAME = \"description\"; paths may be rooted at ${NAME}."),
    key("filesystem", Ty::String, "Paths the agent may read, write or never touch."),
    key("exec", Ty::String, "Executables the agent may run."),
    key("network", Ty::String, "Network mode and allowed endpoints."),
    key("api", Ty::String, "HTTP APIs the agent may call, one table per API."),
    key("resources", Ty::String, "Resource limits."),
    key("syscalls", Ty::String, "System call base set and adjustments."),
    key("enforcement", Ty::String, "Which enforcement layers are required."),
];

pub const AGENT_KEYS: &[KeySpec] = &[
    key("name", Ty::String, "Agent name used in audit records, cgroup and nftables names: [a-z0-9][a-z0-9_-]*, at most 48 characters."),
    key("description", Ty::String, "What the agent does, for reviewers."),
    key("extends", Ty::StringArray, "Policy files composed before this one, in order; paths relative to this file."),
    key("command", Ty::StringArray, "Default command (argv) aegis-exec runs when none is given."),
];

pub const FILESYSTEM_KEYS: &[KeySpec] = &[
    key("read", Ty::StringArray, "Paths (subtrees) the agent may read."),
    key("write", Ty::StringArray, "Paths (subtrees) the agent may read and write."),
    key("deny", Ty::StringArray, "Paths (subtrees) the agent may never access; beats every grant."),
    key("tmp_size", Ty::Quantity, "Size of the agent's private /tmp (default 64MiB)."),
    key("protect", Ty::Bool, "Apply the built-in protection list below every write grant (default true): files that run code later on the host (.git/hooks, .git/config, shell rc files, .envrc, editor and agent configs) stay read-only."),
    key("unprotect", Ty::StringArray, "Built-in protections to turn off, by path (e.g. \"${WORKSPACE}/.vscode\"); each must cover a protected path."),
];

pub const EXEC_KEYS: &[KeySpec] = &[key(
    "allow",
    Ty::StringArray,
    "Executable files (or subtrees of them) the agent may run.",
)];

pub const NETWORK_KEYS: &[KeySpec] = &[
    key("mode", Ty::String, "none (loopback only), proxy (through the AEGIS egress proxy) or host (host network filtered by nftables). Default none."),
    key("allow", Ty::EndpointArray, "Endpoints the agent may reach: \"host:port[/tcp|udp]\" or { host, ports, protocol, exe }."),
    key("deny", Ty::EndpointArray, "Endpoints never reachable; beats allow."),
    key("dns", Ty::StringArray, "Resolver IP addresses the agent may query (host mode with host names)."),
    key("unix", Ty::StringArray, "Pathname unix sockets (path patterns) the agent may connect to, in every mode; a read grant never does."),
];

pub const API_KEYS: &[KeySpec] = &[
    key("host", Ty::String, "Host name of the API."),
    key("port", Ty::Integer, "TCP port (default 443)."),
    key("scopes", Ty::StringArray, "OAuth-style scopes the agent may use."),
    key("allow", Ty::StringArray, "HTTP rules \"METHOD /path/*/**\" the agent may call."),
    key("deny", Ty::StringArray, "HTTP rules never allowed; beat allow."),
    key("credential", Ty::Credential, "Secret the proxy injects into allowed requests."),
    key("exe", Ty::StringArray, "Programs (absolute paths or subtrees) that may use this API; empty: any program of the agent."),
];

pub const CREDENTIAL_KEYS: &[KeySpec] = &[
    key("header", Ty::String, "Header the secret goes into (e.g. Authorization)."),
    key("prefix", Ty::String, "Text put before the secret (e.g. \"Bearer \")."),
    key("from_env", Ty::String, "Environment variable of aegis-exec holding the secret."),
    key("from_file", Ty::String, "Absolute path of a file readable only by the supervisor holding the secret."),
];

pub const RESOURCES_KEYS: &[KeySpec] = &[
    key("memory", Ty::Quantity, "Memory limit (\"512MiB\", \"2GB\" or bytes). Swap is always 0."),
    key("pids", Ty::Quantity, "Maximum number of processes and threads."),
    key("cpu", Ty::Number, "CPU limit in cores (1.5 = one and a half cores)."),
    key("cpu_weight", Ty::Quantity, "cgroup cpu.weight, 1-10000."),
    key("io_weight", Ty::Quantity, "cgroup io.weight, 1-10000."),
    key("wall_time", Ty::Quantity, "Wall-clock limit (\"30m\", \"1h30m\", or seconds)."),
];

pub const SYSCALLS_KEYS: &[KeySpec] = &[
    key("base", Ty::SyscallBase, "\"default\" (AEGIS' default set) or { oci = \"profile.json\" }."),
    key("allow", Ty::StringArray, "System calls added to the base set."),
    key("deny", Ty::StringArray, "System calls refused (with default_errno or the errno table)."),
    key("log", Ty::StringArray, "System calls allowed but logged by the kernel."),
    key("kill", Ty::StringArray, "System calls that kill the agent."),
    key("default_errno", Ty::Quantity, "Errno for denied calls (default EPERM)."),
    key("errno", Ty::ErrnoMap, "Per-syscall errno for denied calls: name = \"EACCES\"."),
];

pub const ENFORCEMENT_KEYS: &[KeySpec] = &[
    key("landlock", Ty::Level, "required (default) or best-effort."),
    key("seccomp", Ty::Level, "required (default) or best-effort."),
    key("namespaces", Ty::Level, "required (default) or best-effort: user, mount, pid, net, ipc, uts namespaces."),
    key("mounts", Ty::Level, "required (default) or best-effort: the mount plan (needs a mount namespace)."),
    key("cgroup", Ty::Level, "required (default) or best-effort."),
    key("nftables", Ty::Level, "required (default) or best-effort."),
    key("min_landlock_abi", Ty::Integer, "Refuse hosts with an older Landlock ABI (1-7)."),
];

/// Enforcement layer names, in launch order.
pub const LAYERS: &[&str] = &["namespaces", "mounts", "cgroup", "nftables", "landlock", "seccomp"];

/// Every (section, keys) pair, for documentation checks.
pub const SECTIONS: &[(&str, &[KeySpec])] = &[
    ("", ROOT_KEYS),
    ("agent", AGENT_KEYS),
    ("filesystem", FILESYSTEM_KEYS),
    ("exec", EXEC_KEYS),
    ("network", NETWORK_KEYS),
    ("api.<name>", API_KEYS),
    ("api.<name>.credential", CREDENTIAL_KEYS),
    ("resources", RESOURCES_KEYS),
    ("syscalls", SYSCALLS_KEYS),
    ("enforcement", ENFORCEMENT_KEYS),
];

fn ty_schema(ty: Ty) -> Value {
    let string_array = json!({"type": "array", "items": {"type": "string"}});
    match ty {
        Ty::String => json!({"type": "string"}),
        Ty::Integer => json!({"type": "integer"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Quantity => json!({"type": ["string", "integer"]}),
        Ty::Number => json!({"type": "number", "exclusiveMinimum": 0}),
        Ty::StringArray => string_array,
        Ty::EndpointArray => json!({"type": "array", "items": {"oneOf": [
            {"type": "string"},
            {"type": "object", "additionalProperties": false, "required": ["host"], "properties": {
                "host": {"type": "string"},
                "ports": {"type": "array", "items": {"type": ["integer", "string"]}},
                "protocol": {"enum": ["tcp", "udp"]},
                "exe": {"type": "array", "items": {"type": "string"}}
            }}
        ]}}),
        Ty::SyscallBase => json!({"oneOf": [
            {"enum": ["default"]},
            {"type": "object", "additionalProperties": false, "required": ["oci"],
             "properties": {"oci": {"type": "string"}}}
        ]}),
        Ty::StringMap => json!({"type": "object", "additionalProperties": {"type": "string"}}),
        Ty::ErrnoMap => json!({"type": "object", "additionalProperties": {"type": ["string", "integer"]}}),
        Ty::Level => json!({"enum": ["required", "best-effort"]}),
        Ty::Credential => section_schema(CREDENTIAL_KEYS, &[]),
    }
}

fn section_schema(keys: &[KeySpec], required: &[&str]) -> Value {
    let mut props = serde_json::Map::new();
    for k in keys {
        let mut s = ty_schema(k.ty);
        if let Value::Object(m) = &mut s {
            m.insert("description".into(), Value::String(k.doc.into()));
        }
        props.insert(k.name.into(), s);
    }
    json!({"type": "object", "additionalProperties": false, "properties": props, "required": required})
}

/// JSON Schema (draft 2020-12) of the policy format.
pub fn json_schema() -> Value {
    let mut root = section_schema(ROOT_KEYS, &[]);
    let sections: [(&str, Value); 8] = [
        ("agent", section_schema(AGENT_KEYS, &[])),
        ("parameters", ty_schema(Ty::StringMap)),
        ("filesystem", section_schema(FILESYSTEM_KEYS, &[])),
        ("exec", section_schema(EXEC_KEYS, &[])),
        ("network", section_schema(NETWORK_KEYS, &[])),
        ("api", json!({"type": "object", "additionalProperties": section_schema(API_KEYS, &["host"])})),
        ("resources", section_schema(RESOURCES_KEYS, &[])),
        ("syscalls", section_schema(SYSCALLS_KEYS, &[])),
    ];
    if let Some(Value::Object(props)) = root.get_mut("properties") {
        for (name, schema) in sections {
            let doc = ROOT_KEYS.iter().find(|k| k.name == name).map(|k| k.doc).unwrap_or("");
            let mut schema = schema;
            if let Value::Object(m) = &mut schema {
                m.insert("description".into(), Value::String(doc.into()));
            }
            props.insert(name.into(), schema);
        }
        let mut enforcement = section_schema(ENFORCEMENT_KEYS, &[]);
        if let Value::Object(m) = &mut enforcement {
            m.insert("description".into(), Value::String("Which enforcement layers are required.".into()));
        }
        props.insert("enforcement".into(), enforcement);
        if let Some(Value::Object(v)) = props.get_mut("version") {
            v.insert("const".into(), json!(1));
        }
    }
    if let Value::Object(m) = &mut root {
        m.insert("$schema".into(), json!("https://json-schema.org/draft/2020-12/schema"));
        m.insert("$id".into(), json!("https://aegis.dev/schema/policy-v1.json"));
        m.insert("title".into(), json!("AEGIS agent policy, version 1"));
    }
    root
}
