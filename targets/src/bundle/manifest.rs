//! `manifest.json`: what a bundle is, what it needs from the host, and the digest of every
//! other file in it.
//!
//! Input: [`ManifestFields`], filled by the compiler (policy semantics are its business; this
//! module only checks that values are well-formed), plus the artifact files; or the bytes of
//! a `manifest.json` read from a bundle. Output: a [`Manifest`] and its canonical bytes
//! (see `canonical`). Invariants: `files` lists every file of the bundle except
//! `manifest.json` and `manifest.json.minisig`, each once; a decoded manifest is exactly the
//! canonical encoding of its value (unknown fields, duplicate keys, other spellings refused);
//! the format identifier and version are checked before anything else is interpreted.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use super::canonical::to_canonical_json;
use super::error::BundleError;
use super::names::{check_identifier, file_name_problem, MANIFEST_FILE, SIGNATURE_FILE};

/// The `format` value of every AEGIS bundle manifest.
pub const FORMAT: &str = "aegis-bundle";
/// The manifest layout this build writes and reads. Any change to fields bumps it.
pub const FORMAT_VERSION: u32 = 1;

/// Which compiler made the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompilerInfo {
    pub name: String,
    pub version: String,
}

/// cgroup hierarchy versions a bundle's cgroup artifact can be applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CgroupVersion {
    #[serde(rename = "v1")]
    V1,
    #[serde(rename = "v2")]
    V2,
}

/// Linux namespaces a launch needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Cgroup,
    Ipc,
    Mount,
    Net,
    Pid,
    Time,
    User,
    Uts,
}

/// Kernel features the host must provide (for layers marked required).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRequirements {
    /// Minimum Landlock ABI version; `None` when the bundle uses no Landlock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landlock_abi: Option<u32>,
    /// cgroup versions the cgroup artifact supports (empty: no cgroup limits).
    pub cgroup_versions: BTreeSet<CgroupVersion>,
    /// Whether nftables (nf_tables) is needed.
    pub nftables: bool,
    /// Namespaces the launch creates.
    pub namespaces: BTreeSet<Namespace>,
    /// Whether a seccomp filter is installed.
    pub seccomp: bool,
}

/// How strictly a layer must be enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Enforcement {
    /// The launch fails if the host cannot enforce this layer.
    Required,
    /// The launch goes on without the layer, and says so (audit log, stderr).
    BestEffort,
}

pub use super::contract::NetworkMode;

/// A value the launch must supply (e.g. `WORKSPACE`, used as `${WORKSPACE}` in artifacts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchParameter {
    pub description: String,
}

/// Digest and size of one bundle file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub size: u64,
}

impl FileEntry {
    /// The entry describing `bytes`.
    pub fn of(bytes: &[u8]) -> FileEntry {
        FileEntry {
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }
}

/// The `files` map. Decoding keeps duplicate names aside (JSON maps allow them, serde would
/// silently keep the last) so the reader can report "listed twice" precisely.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Files {
    entries: BTreeMap<String, FileEntry>,
    duplicates: Vec<String>,
}

impl Files {
    /// Name → digest and size, sorted by name.
    pub fn entries(&self) -> &BTreeMap<String, FileEntry> {
        &self.entries
    }
    pub fn get(&self, name: &str) -> Option<&FileEntry> {
        self.entries.get(name)
    }
}

impl Serialize for Files {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Files {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Files, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Files;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of file name to {sha256, size}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Files, A::Error> {
                let mut files = Files::default();
                while let Some((k, v)) = map.next_entry::<String, FileEntry>()? {
                    match files.entries.entry(k) {
                        std::collections::btree_map::Entry::Occupied(e) => {
                            files.duplicates.push(e.key().clone());
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(v);
                        }
                    }
                }
                Ok(files)
            }
        }
        d.deserialize_map(V)
    }
}

/// What the compiler supplies; the writer adds `format`, `format_version` and `files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestFields {
    /// Agent name: identifier `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
    pub agent: String,
    pub compiler: CompilerInfo,
    /// Lower-case hex SHA-256 of the policy IR (computed by the compiler).
    pub policy_sha256: String,
    /// Target architectures (`x86_64`, `aarch64`, ...), identifiers.
    pub architectures: BTreeSet<String>,
    pub kernel: KernelRequirements,
    /// Layer name (identifier, e.g. `seccomp`, `landlock`) → enforcement level.
    pub enforcement: BTreeMap<String, Enforcement>,
    pub network_mode: NetworkMode,
    /// Parameters the launch must supply, by name (identifier).
    pub parameters: BTreeMap<String, LaunchParameter>,
    /// Command (argv) to run when the launch does not give one.
    pub entrypoint: Option<Vec<String>>,
    /// Issue time, unix seconds (from a flag or `SOURCE_DATE_EPOCH`, never the clock
    /// implicitly: see [`super::source_date_epoch`]).
    pub issued_at: u64,
    /// Expiry, unix seconds; must be after `issued_at`.
    pub expires_at: Option<u64>,
    /// Monotonic serial for rollback protection.
    pub serial: u64,
}

/// A bundle manifest (`manifest.json`). Field order here is irrelevant: the encoding sorts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub agent: String,
    pub compiler: CompilerInfo,
    pub policy_sha256: String,
    pub architectures: BTreeSet<String>,
    pub kernel: KernelRequirements,
    pub enforcement: BTreeMap<String, Enforcement>,
    pub network_mode: NetworkMode,
    pub parameters: BTreeMap<String, LaunchParameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    pub issued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    pub serial: u64,
    pub files: Files,
}

fn check_sha256_hex(what: &'static str, s: &str) -> Result<(), BundleError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(BundleError::InvalidField {
            what,
            value: s.chars().take(80).collect(),
            reason: "not 64 lower-case hex digits",
        })
    }
}

impl Manifest {
    /// The manifest for `fields` and the artifact files `files` (name → bytes).
    pub fn new(
        fields: ManifestFields,
        files: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Manifest, BundleError> {
        let m = Manifest {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            agent: fields.agent,
            compiler: fields.compiler,
            policy_sha256: fields.policy_sha256,
            architectures: fields.architectures,
            kernel: fields.kernel,
            enforcement: fields.enforcement,
            network_mode: fields.network_mode,
            parameters: fields.parameters,
            entrypoint: fields.entrypoint,
            issued_at: fields.issued_at,
            expires_at: fields.expires_at,
            serial: fields.serial,
            files: Files {
                entries: files
                    .iter()
                    .map(|(n, b)| (n.clone(), FileEntry::of(b)))
                    .collect(),
                duplicates: Vec::new(),
            },
        };
        m.check_fields()?;
        Ok(m)
    }

    /// Checks that every field is well-formed (not what it means: that is policy).
    fn check_fields(&self) -> Result<(), BundleError> {
        check_identifier("agent name", &self.agent)?;
        check_sha256_hex("policy digest", &self.policy_sha256)?;
        for a in &self.architectures {
            check_identifier("architecture", a)?;
        }
        for l in self.enforcement.keys() {
            check_identifier("layer name", l)?;
        }
        for p in self.parameters.keys() {
            check_identifier("parameter name", p)?;
        }
        if let Some(exp) = self.expires_at
            && exp <= self.issued_at
        {
            return Err(BundleError::InvalidExpiry {
                issued_at: self.issued_at,
                expires_at: exp,
            });
        }
        if let Some(name) = self.files.duplicates.first() {
            return Err(BundleError::DuplicateFile { name: name.clone() });
        }
        for (name, entry) in &self.files.entries {
            if let Some(reason) = file_name_problem(name) {
                return Err(BundleError::BadFileName {
                    name: name.clone(),
                    reason,
                });
            }
            if name == MANIFEST_FILE || name == SIGNATURE_FILE {
                return Err(BundleError::BadFileName {
                    name: name.clone(),
                    reason: "the manifest cannot list itself or its signature",
                });
            }
            check_sha256_hex("file digest", &entry.sha256)?;
        }
        Ok(())
    }

    /// The canonical bytes of `manifest.json`.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, BundleError> {
        to_canonical_json(self).map_err(|reason| BundleError::ManifestInvalid { reason })
    }

    /// Decodes `manifest.json` bytes: format and version first, then the strict typed form,
    /// then field checks, then that the bytes are canonical.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, BundleError> {
        let invalid = |e: serde_json::Error| BundleError::ManifestInvalid {
            reason: e.to_string(),
        };
        // A newer format may have other fields; say "unsupported version", not "unknown field".
        #[derive(Deserialize)]
        struct Head {
            format: Option<serde_json::Value>,
            format_version: Option<serde_json::Value>,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(invalid)?;
        let found = head
            .format
            .as_ref()
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let found_version = head
            .format_version
            .as_ref()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if found != FORMAT || found_version != u64::from(FORMAT_VERSION) {
            return Err(BundleError::UnsupportedFormat {
                found,
                found_version,
                expected: FORMAT,
                expected_version: FORMAT_VERSION,
            });
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(invalid)?;
        m.check_fields()?;
        if m.to_canonical_bytes()? != bytes {
            return Err(BundleError::ManifestNotCanonical);
        }
        Ok(m)
    }

    /// The fields the compiler supplied (without `format`, `format_version`, `files`).
    pub fn fields(&self) -> ManifestFields {
        ManifestFields {
            agent: self.agent.clone(),
            compiler: self.compiler.clone(),
            policy_sha256: self.policy_sha256.clone(),
            architectures: self.architectures.clone(),
            kernel: self.kernel.clone(),
            enforcement: self.enforcement.clone(),
            network_mode: self.network_mode,
            parameters: self.parameters.clone(),
            entrypoint: self.entrypoint.clone(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            serial: self.serial,
        }
    }

    /// The deterministic minisign trusted comment for this manifest.
    pub fn trusted_comment(&self) -> String {
        format!("aegis-bundle agent={} serial={}", self.agent, self.serial)
    }
}
