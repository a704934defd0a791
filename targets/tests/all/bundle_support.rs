//! Shared fixtures of the bundle tests: manifest fields, artifact sets, keys, the minisign tool.
#![allow(dead_code, reason = "also compiled into `benches/bundle.rs`, which uses a few of these fixtures only")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_targets::bundle::*;

pub fn fields(agent: &str, serial: u64) -> ManifestFields {
    ManifestFields {
        agent: agent.to_string(),
        compiler: CompilerInfo {
            name: "aegisc".into(),
            version: "0.1.0".into(),
        },
        policy_sha256: "ab".repeat(32),
        architectures: BTreeSet::from(["x86_64".to_string(), "aarch64".to_string()]),
        kernel: KernelRequirements {
            landlock_abi: Some(4),
            cgroup_versions: BTreeSet::from([CgroupVersion::V1, CgroupVersion::V2]),
            nftables: true,
            namespaces: BTreeSet::from([Namespace::Mount, Namespace::Net, Namespace::User]),
            seccomp: true,
        },
        enforcement: BTreeMap::from([
            ("seccomp".to_string(), Enforcement::Required),
            ("landlock".to_string(), Enforcement::Required),
            ("cgroup".to_string(), Enforcement::BestEffort),
        ]),
        network_mode: NetworkMode::Proxy,
        parameters: BTreeMap::from([(
            "WORKSPACE".to_string(),
            LaunchParameter {
                description: "the repository the agent works on".into(),
            },
        )]),
        entrypoint: Some(vec!["/usr/bin/agent".into(), "--serve".into()]),
        issued_at: 1_700_000_000,
        expires_at: Some(1_800_000_000),
        serial,
    }
}

/// Deterministic pseudo-random bytes (xorshift), so "realistic" artifacts are reproducible.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x & 0xff) as u8
        })
        .collect()
}

/// A realistic set: ~10 files, ~50 KB, names the targets produce.
pub fn realistic_artifacts() -> Vec<(String, Vec<u8>)> {
    let text = |seed: u64, len: usize| -> Vec<u8> {
        bytes(seed, len).iter().map(|b| b"abcdefghij {}\":,\n"[(*b % 17) as usize]).collect()
    };
    vec![
        ("seccomp.x86_64.bpf".into(), bytes(1, 4096)),
        ("seccomp.x86_64.asm".into(), text(2, 12_000)),
        ("seccomp.aarch64.bpf".into(), bytes(3, 4096)),
        ("seccomp.aarch64.asm".into(), text(4, 12_000)),
        ("landlock.json".into(), text(5, 6000)),
        ("mounts.json".into(), text(6, 3000)),
        ("cgroup.json".into(), text(7, 800)),
        ("nftables.json".into(), text(8, 5000)),
        ("policy.ir.json".into(), text(9, 4000)),
        ("policy.sha256".into(), format!("{}\n", "ab".repeat(32)).into_bytes()),
        ("loss-report.txt".into(), b"no losses\n".to_vec()),
    ]
}

/// A tiny set for exhaustive tampering.
pub fn small_artifacts() -> Vec<(String, Vec<u8>)> {
    vec![
        ("landlock.json".into(), b"{\"rules\":[]}\n".to_vec()),
        ("seccomp.x86_64.bpf".into(), bytes(11, 16)),
    ]
}

pub fn writer(fields: ManifestFields, artifacts: &[(String, Vec<u8>)]) -> BundleWriter {
    let mut w = BundleWriter::new(fields);
    for (n, b) in artifacts {
        w.add(n.clone(), b.clone()).unwrap();
    }
    w
}

/// A fresh key pair in `dir` (`key`, `key.pub`).
pub fn keypair(dir: &Path) -> (SecretKey, PublicKey, PathBuf, PathBuf) {
    let sec = dir.join("key");
    let pubp = dir.join("key.pub");
    let pk = generate_keypair(&sec, &pubp, false).unwrap();
    let sk = load_secret_key(&sec).unwrap();
    assert_eq!(sk.public_key(), pk);
    (sk, pk, sec, pubp)
}

pub fn trust(key: Option<PublicKey>) -> TrustPolicy {
    TrustPolicy {
        key,
        allow_unsigned: false,
        now: 1_750_000_000,
        min_serial: None,
    }
}

/// The minisign tool, if installed (tests that need it print SKIP otherwise).
pub fn minisign_tool() -> Option<&'static str> {
    let ok = Command::new("minisign")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok { Some("minisign") } else { None }
}

pub fn read_dir_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
