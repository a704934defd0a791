//! Host shapes in the compiled bundle: the `[enforcement] mounts` level that makes the
//! Landlock + seccomp mode for hosts without user namespaces reachable, and what each older
//! Landlock ABI costs (the fallbacks `landlock.json` records and the ABI the manifest asks
//! for).

use aegis_compiler::compile_bytes;
use aegis_compiler::diag::Code;
use aegis_compiler::emit::{self, bundle::Issue};
use aegis_targets::bundle::Enforcement;
use aegis_targets::landlock::{Abi, Fallback, FsRight, InForce, LandlockArtifact, NetRight, Scope};

fn policy(mode: &str, enforcement: &str) -> String {
    format!(
        r#"
version = 1
[agent]
name = "hosts"
[parameters]
WS = "workspace"
[filesystem]
read = ["/usr"]
write = ["${{WS}}"]
deny = ["${{WS}}/.env"]
[exec]
allow = ["/usr/bin/python3"]
[network]
mode = "{mode}"
{allow}
[resources]
memory = "256MiB"
pids = 32
wall_time = "1m"
[enforcement]
{enforcement}
"#,
        allow = if mode == "host" { "allow = [\"127.0.0.1:443/tcp\"]" } else { "" }
    )
}

struct Built {
    landlock: LandlockArtifact,
    manifest_abi: Option<u32>,
    enforcement: std::collections::BTreeMap<String, Enforcement>,
    warnings: Vec<String>,
    losses: String,
}

fn build(text: &str) -> Built {
    let c = match compile_bytes("hosts.toml", text.as_bytes()) {
        Ok(c) => c,
        Err(f) => panic!("{:?}", f.diagnostics.iter().map(|d| d.message.clone()).collect::<Vec<_>>()),
    };
    let a = emit::emit(&c.policy, &c.sources).unwrap();
    let fields = emit::bundle::manifest_fields(
        &c.policy,
        &a.digest,
        a.landlock_abi,
        Issue { issued_at: 1, serial: 1, expires_at: None },
    );
    let text = String::from_utf8(a.files["landlock.json"].clone()).unwrap();
    Built {
        landlock: LandlockArtifact::from_json(&text).unwrap(),
        manifest_abi: fields.kernel.landlock_abi,
        enforcement: fields.enforcement,
        warnings: c.warnings.iter().map(|w| format!("{}: {}", w.code, w.message)).collect(),
        losses: String::from_utf8(a.files["loss-report.txt"].clone()).unwrap(),
    }
}

#[test]
fn the_mounts_level_reaches_the_manifest_and_the_lint_says_when_it_is_missing() {
    let default = build(&policy("none", ""));
    assert_eq!(default.enforcement.get("mounts"), Some(&Enforcement::Required), "every layer defaults to required");

    // Best-effort namespaces alone cannot run without user namespaces: the lint says so.
    let half = build(&policy("none", "namespaces = \"best-effort\"\nnftables = \"best-effort\""));
    assert!(
        half.warnings.iter().any(|w| w.contains("'namespaces' is best-effort but 'mounts' is required")),
        "{:?}",
        half.warnings
    );
    let whole = build(&policy(
        "none",
        "namespaces = \"best-effort\"\nmounts = \"best-effort\"\nnftables = \"best-effort\"",
    ));
    assert_eq!(whole.enforcement.get("mounts"), Some(&Enforcement::BestEffort));
    assert_eq!(whole.enforcement.get("namespaces"), Some(&Enforcement::BestEffort));
    assert!(!whole.warnings.iter().any(|w| w.contains("but 'mounts' is required")), "{:?}", whole.warnings);

    // A misspelt level is an error with a suggestion, like the other layers.
    let Err(f) = compile_bytes("hosts.toml", policy("none", "mounts = \"best_effort\"").as_bytes()) else {
        panic!("an unknown level must be refused")
    };
    assert!(
        f.diagnostics.iter().any(|d| d.code == Code::InvalidEnforcement && d.help.as_deref() == Some("did you mean `best-effort`?")),
        "{:?}",
        f.diagnostics.iter().map(|d| (&d.message, &d.help)).collect::<Vec<_>>()
    );
}

#[test]
fn older_abis_run_where_the_mount_plan_and_namespaces_make_up_for_them() {
    // none/proxy with required namespaces: refer is stricter below V2, truncate is the mount
    // plan's read-only binds; any Landlock kernel can run it with a mount namespace.
    for mode in ["none", "proxy"] {
        let b = build(&policy(mode, ""));
        let l = &b.landlock;
        assert_eq!(l.min_abi, Abi(3), "{mode}: Landlock alone");
        assert_eq!(l.fallbacks.fs.get(&FsRight::Refer), Some(&Fallback::Stricter));
        assert_eq!(l.fallbacks.fs.get(&FsRight::Truncate), Some(&Fallback::MountPlan));
        assert_eq!(l.floor_abi(), Abi(1));
        assert_eq!(l.needed_abi(InForce::NOTHING), Abi(3), "{mode}: without a mount plan truncate needs V3");
        assert_eq!(b.manifest_abi, Some(1), "{mode}: the manifest asks for the floor");
        assert!(b.losses.contains("Landlock `truncate` (ABI 3, Linux 6.2) on older kernels"), "{}", b.losses);
    }
    // The Landlock + seccomp mode adds TCP rules and scopes for the launch without
    // namespaces; with namespaces they are made up for, without them Landlock needs V6.
    let b = build(&policy("none", "namespaces = \"best-effort\"\nmounts = \"best-effort\"\nnftables = \"best-effort\""));
    let l = &b.landlock;
    assert_eq!(l.min_abi, Abi(6));
    assert_eq!(l.fallbacks.net.get(&NetRight::ConnectTcp), Some(&Fallback::NetworkNamespace));
    assert_eq!(l.fallbacks.scopes.get(&Scope::AbstractUnixSocket), Some(&Fallback::NetworkNamespace));
    assert_eq!(l.fallbacks.scopes.get(&Scope::Signal), Some(&Fallback::PidNamespace));
    assert_eq!(l.floor_abi(), Abi(1));
    assert_eq!(l.needed_abi(InForce::NOTHING), Abi(6));
    // Host mode: where the agent shares the host's network namespace (root's host mode)
    // only Landlock's scope keeps it from the host's abstract UNIX sockets, so the kernel
    // needs ABI 6; in a namespace of its own (a user's host mode) any ABI will do.
    let b = build(&policy("host", ""));
    assert_eq!(b.landlock.fallbacks.scopes.get(&Scope::AbstractUnixSocket), Some(&Fallback::NetworkNamespace));
    let shared = InForce { mount_plan: true, pid_namespace: true, network_namespace: false };
    assert_eq!(b.landlock.needed_abi(shared), Abi(6));
    assert_eq!(b.landlock.floor_abi(), Abi(1));
    assert_eq!(b.manifest_abi, Some(1));
    assert!(b.losses.contains("root's host mode shares the host's namespace and needs the ABI"), "{}", b.losses);
    // min_landlock_abi raises what the manifest asks for, never lowers it.
    let b = build(&policy("proxy", "min_landlock_abi = 4"));
    assert_eq!(b.manifest_abi, Some(4));
}
