//! IR → bundle: the manifest fields (`manifest.json`: what the host must provide and
//! supply), and [`build`], the whole bundle in memory from a compiled policy.
//!
//! [`build`] is the one path from a policy to bundle bytes: `aegisc build` writes its result
//! to a directory, `aegis run` hands it to the runtime without touching the disk. Both get
//! the same files for the same policy and [`Issue`].

use std::collections::{BTreeMap, BTreeSet};

use aegis_targets::bundle::{
    BundleContents, BundleError, BundleWriter, CgroupVersion, CompilerInfo, Enforcement, KernelRequirements,
    LaunchParameter, ManifestFields, Namespace, SecretKey,
};

use super::{EmitError, LossReport};
use crate::ir::{Checked, Level};
use crate::source::SourceMap;

/// When the bundle is issued, its serial and optional expiry (from flags or
/// `SOURCE_DATE_EPOCH`, so builds are reproducible).
#[derive(Clone, Copy, Debug)]
pub struct Issue {
    pub issued_at: u64,
    pub serial: u64,
    pub expires_at: Option<u64>,
}

pub fn manifest_fields(policy: &Checked, digest: &str, landlock_abi: Option<u32>, issue: Issue) -> ManifestFields {
    let mut namespaces: BTreeSet<Namespace> =
        [Namespace::User, Namespace::Mount, Namespace::Pid, Namespace::Ipc, Namespace::Uts, Namespace::Cgroup].into();
    if policy.network.mode != crate::ir::NetworkMode::Host {
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
        network_mode: policy.network.mode,
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

/// A bundle built in memory, with what `aegisc build` reports about it.
#[derive(Debug)]
pub struct Built {
    /// Every file, `manifest.json` (and its signature when a key was given) included.
    pub contents: BundleContents,
    /// Rules no kernel mechanism expresses exactly (also in `loss-report.txt`).
    pub losses: LossReport,
    /// The policy digest, `sha256:<hex>`.
    pub digest: String,
}

/// Why a valid policy did not become a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A target cannot express the policy (invalid input).
    #[error("cannot lower the policy: {0}")]
    Emit(#[from] EmitError),
    /// The bundle format refused an artifact, the manifest or the key.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Lowers `policy` to every target and assembles the bundle in memory, signed with `key`
/// when one is given.
pub fn build(policy: &Checked, sources: &SourceMap, issue: Issue, key: Option<&SecretKey>) -> Result<Built, BuildError> {
    let artifacts = super::emit(policy, sources)?;
    let fields = manifest_fields(policy, &artifacts.digest, artifacts.landlock_abi, issue);
    let mut writer = BundleWriter::new(fields);
    for (name, bytes) in artifacts.files {
        writer.add(name, bytes)?;
    }
    let contents = writer.build(key)?;
    Ok(Built { contents, losses: artifacts.losses, digest: artifacts.digest })
}
