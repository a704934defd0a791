//! IR → bundle manifest fields (`manifest.json`), what the host must provide and supply.

use std::collections::{BTreeMap, BTreeSet};

use aegis_targets::bundle::{
    CgroupVersion, CompilerInfo, Enforcement, KernelRequirements, LaunchParameter, ManifestFields, Namespace,
    NetworkMode,
};

use crate::ir::{Level, NetworkMode as IrMode, Policy};

/// When the bundle is issued, its serial and optional expiry (from flags or
/// `SOURCE_DATE_EPOCH`, so builds are reproducible).
#[derive(Clone, Copy, Debug)]
pub struct Issue {
    pub issued_at: u64,
    pub serial: u64,
    pub expires_at: Option<u64>,
}

pub fn manifest_fields(policy: &Policy, digest: &str, landlock_abi: Option<u32>, issue: Issue) -> ManifestFields {
    let mut namespaces: BTreeSet<Namespace> =
        [Namespace::User, Namespace::Mount, Namespace::Pid, Namespace::Ipc, Namespace::Uts, Namespace::Cgroup].into();
    if policy.network.mode != IrMode::Host {
        namespaces.insert(Namespace::Net);
    }
    let enforcement: BTreeMap<String, Enforcement> = policy
        .enforcement
        .layers
        .iter()
        .map(|(l, v)| {
            (l.word().to_string(), if *v == Level::Required { Enforcement::Required } else { Enforcement::BestEffort })
        })
        .collect();
    ManifestFields {
        agent: policy.agent.name.clone(),
        compiler: CompilerInfo { name: "aegisc".into(), version: env!("CARGO_PKG_VERSION").into() },
        policy_sha256: digest.trim_start_matches("sha256:").to_string(),
        architectures: ["x86_64".to_string(), "aarch64".to_string()].into(),
        kernel: KernelRequirements {
            landlock_abi: landlock_abi.map(|a| a.max(u32::from(policy.enforcement.min_landlock_abi.unwrap_or(0)))),
            cgroup_versions: [CgroupVersion::V1, CgroupVersion::V2].into(),
            nftables: true,
            namespaces,
            seccomp: true,
        },
        enforcement,
        network_mode: match policy.network.mode {
            IrMode::None => NetworkMode::None,
            IrMode::Proxy => NetworkMode::Proxy,
            IrMode::Host => NetworkMode::Host,
        },
        parameters: policy
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), LaunchParameter { description: v.description.clone() }))
            .collect(),
        entrypoint: policy.agent.command.clone(),
        issued_at: issue.issued_at,
        expires_at: issue.expires_at,
        serial: issue.serial,
    }
}
