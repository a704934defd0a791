//! Shared helpers: key pairs, small logs written through the library.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aegis_audit::{
    AuditContext, AuditWriter, CheckpointOptions, Durability, EnforcementStatus, Event,
    LayerReport, ResourceLimit, SigningKey, Verdict, VerifyOptions, VerifyingKey, WriterOptions,
};

pub struct Keys {
    pub secret: PathBuf,
    pub public: PathBuf,
}

/// A fresh unencrypted minisign key pair written as standard key files.
pub fn keys(dir: &Path, name: &str) -> Keys {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let secret = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    std::fs::write(&secret, kp.sk.to_box(None).unwrap().to_string()).unwrap();
    std::fs::write(&public, kp.pk.to_box().unwrap().to_string()).unwrap();
    Keys { secret, public }
}

pub fn ctx(agent: &str) -> AuditContext {
    AuditContext {
        agent: agent.into(),
        bundle_digest: "sha256:b".into(),
        policy_digest: "sha256:p".into(),
    }
}

pub fn options(keys: Option<&Keys>, every: u64, sink: Option<&Path>) -> WriterOptions {
    WriterOptions {
        host: Some("testhost".into()),
        boot_id: Some("boot-1".into()),
        durability: Durability::OsDefault,
        checkpoint: keys.map(|k| CheckpointOptions {
            key: SigningKey::from_file(&k.secret).unwrap(),
            every_records: every,
            every: Duration::MAX,
            sink: sink.map(Path::to_path_buf),
            syslog: false,
        }),
        reserve: 0,
    }
}

/// One event of every caller-visible kind, cycling.
pub fn event(i: usize) -> Event {
    match i % 8 {
        0 => Event::BundleVerified {
            path: "/b".into(),
            key_id: "ab12".into(),
        },
        1 => Event::EnforcementReport {
            layers: vec![LayerReport {
                layer: "landlock".into(),
                status: EnforcementStatus::Partially,
                detail: "abi 7".into(),
            }],
            landlock_abi: Some(7),
            cgroup_mode: "hybrid".into(),
            identity: None,
        },
        2 => Event::AgentStarted {
            command: vec!["/bin/agent".into(), "--x".into()],
            pid: 4242,
            identity: None,
        },
        3 => Event::Decision {
            component: "proxy".into(),
            subject: "net".into(),
            target: format!("host{i}.example:443"),
            decision: if i.is_multiple_of(3) {
                Verdict::Deny
            } else {
                Verdict::Allow
            },
            rule: Some("net.allow[0]".into()),
            reason: "ok \"quoted\" ünï".into(),
        },
        4 => Event::KernelDenial {
            layer: "seccomp".into(),
            detail: "ptrace".into(),
            count: 3,
        },
        5 => Event::Resource {
            limit: ResourceLimit::PidsLimit,
            detail: "pids.max=64".into(),
        },
        6 => Event::AgentExited {
            pid: 4242,
            status: Some(0),
            signal: None,
            cpu_user_us: 10,
            cpu_sys_us: 5,
            peak_memory_bytes: Some(1 << 20),
        },
        _ => Event::Note {
            component: "supervisor".into(),
            message: format!("note {i}"),
        },
    }
}

/// Write `n` records (checkpoint every `every` if keys given), then close (final checkpoint).
pub fn write_log(path: &Path, n: usize, keys: Option<&Keys>, every: u64, sink: Option<&Path>) {
    let mut w = AuditWriter::open(path, options(keys, every, sink)).unwrap();
    for i in 0..n {
        w.append(&ctx(if i % 2 == 0 { "alice" } else { "bob" }), &event(i))
            .unwrap();
    }
    w.close().unwrap();
}

pub fn vopts(keys: Option<&Keys>, sinks: &[&Path]) -> VerifyOptions {
    VerifyOptions {
        key: keys.map(|k| VerifyingKey::from_file(&k.public).unwrap()),
        checkpoints: sinks
            .iter()
            .flat_map(|s| aegis_audit::load_checkpoints(s).unwrap())
            .collect(),
    }
}

/// Start offsets of every line (and the total length at the end).
pub fn line_starts(bytes: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            v.push(i + 1);
        }
    }
    v
}

pub fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}
