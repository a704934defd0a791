//! Stage 1, verify: the bundle, the launch parameters and the command.
//!
//! Input: [`LaunchOptions`] (a [`BundleSource`]: a bundle directory with a trusted key or
//! `--allow-unsigned`, or a bundle `aegis run` compiled in memory from a local policy file;
//! `--param NAME=VALUE`s, the command). Output: a [`Verified`] launch: the manifest and the
//! verified bytes of every artifact (the only source of artifact bytes for later stages),
//! parameters checked against the manifest (every declared one supplied, nothing
//! undeclared, each an absolute path that exists, canonicalised), and the command (the
//! given one or the manifest's entrypoint). Invariants: signature, digests, file set and
//! expiry are checked by `aegis_targets::bundle::verify`; a signed bundle's serial must not
//! be lower than the highest one launched for the agent on this host (recorded in
//! `serials.json` in [`state_dir`]); an unsigned bundle directory is only accepted with
//! `--allow-unsigned`, and that choice is audited; a local policy is unsigned by nature,
//! checked like an unsigned bundle (file set, digests, expiry) and audited with its path and
//! SHA-256 ([`Provenance`]); every refusal is exit 125.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aegis_targets::bundle::{self, Bundle, Enforcement, Manifest, SerialStore, TrustPolicy};

use crate::exit::RunError;

/// Where the bundle of a launch comes from.
#[derive(Debug, Clone)]
pub enum BundleSource {
    /// A bundle directory (`aegis-exec BUNDLE_DIR`): signed by `--trust-key`, or accepted
    /// unsigned with `--allow-unsigned`.
    Dir(PathBuf),
    /// A bundle compiled in memory from a local policy file (`aegis run`).
    Local(LocalPolicy),
}

impl Default for BundleSource {
    fn default() -> BundleSource {
        BundleSource::Dir(PathBuf::new())
    }
}

impl BundleSource {
    /// The path as the user gave it: the bundle directory or the policy file.
    pub fn path(&self) -> &Path {
        match self {
            BundleSource::Dir(p) => p,
            BundleSource::Local(l) => &l.path,
        }
    }
}

/// A policy file compiled in memory by `aegis run`: never signed, allowed as an unsigned
/// local policy and audited as one.
#[derive(Debug, Clone)]
pub struct LocalPolicy {
    /// The policy file, as given.
    pub path: PathBuf,
    /// Hex SHA-256 of the policy text that was compiled (what `sha256sum FILE` prints
    /// while the file is unchanged).
    pub sha256: String,
    /// Every file of the bundle built from it (`manifest.json` included), by name.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Why the launch trusts its bundle: what the report and the audit log say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provenance {
    /// Signed by the key with this hex id, verified with `--trust-key`.
    Signed { key_id: String },
    /// An unsigned bundle directory accepted because of `--allow-unsigned`.
    UnsignedAllowed,
    /// Compiled in memory from a local policy file by `aegis run`.
    LocalPolicy { path: PathBuf, sha256: String },
}

impl Provenance {
    /// `local policy FILE (sha256 HEX), unsigned`: how a local policy is named in the
    /// report and the audit log.
    pub fn local_description(path: &Path, sha256: &str) -> String {
        format!("local policy {} (sha256 {sha256}), unsigned", path.display())
    }
}

/// Validated command-line options of a launch.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    pub bundle: BundleSource,
    pub trust_key: Option<PathBuf>,
    pub allow_unsigned: bool,
    pub params: Vec<(String, String)>,
    /// `--env NAME` / `NAME=VALUE`: variables passed to the agent besides the default set.
    pub env: Vec<String>,
    pub audit_log: Option<PathBuf>,
    pub verbose: bool,
    pub command: Vec<String>,
    /// `--resolve NAME=IP`: pinned answers for the proxy's name resolution.
    pub resolve: Vec<String>,
    /// `--upstream-ca PEM`: extra trust anchors for the proxy's upstream TLS.
    pub upstream_ca: Vec<PathBuf>,
    /// `--user NAME|UID[:GID]`: who the agent runs as (root launcher only; see
    /// [`crate::identity`]).
    pub user: Option<String>,
    /// `--group NAME|GID`: supplementary groups the agent keeps (root launcher only).
    pub groups: Vec<String>,
    /// `--audit-budget` and the other options of the audit log ([`crate::audit`]).
    pub audit: crate::audit::AuditOptions,
    /// `--terminal-filter`: what of the agent's output reaches the user's terminal ([`crate::tty`]).
    pub terminal_filter: crate::tty::Filter,
    /// `--cwd DIR`: where the agent starts (default: `aegis-exec`'s working directory when
    /// the policy lets the agent read it, else `/`).
    pub cwd: Option<PathBuf>,
    /// `--explain`: trace the agent's path-taking calls and record the filesystem accesses
    /// the policy refuses, as explanations ([`crate::unotify::trace`]).
    pub explain: bool,
    /// Learn mode (`aegis learn`): every access and refusal goes to this observer, and the
    /// proxy admits destinations the policy does not grant, recording them ([`crate::learn`]).
    pub learn: Option<std::sync::Arc<crate::learn::Learn>>,
}

/// A verified launch.
#[derive(Debug, Clone)]
pub struct Verified {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub files: BTreeMap<String, Vec<u8>>,
    pub bundle_sha256: String,
    /// Why the bundle is trusted (signer, `--allow-unsigned`, or a local policy).
    pub provenance: Provenance,
    pub params: BTreeMap<String, PathBuf>,
    pub command: Vec<String>,
}

impl Verified {
    /// Whether the bundle requires `layer` (absent from the manifest's `enforcement` map
    /// means required: fail closed).
    pub fn required(&self, layer: &str) -> bool {
        self.manifest.enforcement.get(layer) != Some(&Enforcement::BestEffort)
    }

    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// The bundle's typed policy (`policy.ir.json`), which the supervisor's own decisions
    /// (the proxy, the seccomp notification handlers) come from; `who` says who needs it.
    /// Checked against the IR's invariants before anything trusts it.
    pub fn policy_ir(&self, who: &str) -> Result<aegis_policy::ir::Checked, RunError> {
        let ir = self.file(aegis_targets::bundle::contract::POLICY_IR).ok_or_else(|| RunError::Refused(format!("{who} needs policy.ir.json in the bundle")))?;
        aegis_policy::ir::Checked::from_json(ir).map_err(|e| RunError::Refused(format!("policy.ir.json: {e}")))
    }

    /// The launch parameters as the reference evaluator takes them.
    pub fn eval_params(&self) -> Result<aegis_policy::eval::Params, RunError> {
        let mut params = aegis_policy::eval::Params::new();
        for (k, p) in &self.params {
            let (name, pat) = aegis_policy::eval::parse_param(&format!("{k}={}", p.display())).map_err(|e| RunError::Refused(e.0))?;
            params.insert(name, pat);
        }
        Ok(params)
    }
}

/// Where per-host state (the serial store) lives: `$AEGIS_STATE_DIR`, else `/var/lib/aegis`
/// for root, else the user's own `${XDG_STATE_HOME:-$HOME/.local/state}/aegis` (a user
/// cannot write `/var/lib`; their rollback protection is their own).
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("AEGIS_STATE_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/aegis");
    }
    let xdg = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    let home = || std::env::var_os("HOME").map(PathBuf::from).filter(|p| p.is_absolute()).map(|h| h.join(".local/state"));
    match xdg.or_else(home) {
        Some(d) => d.join("aegis"),
        None => PathBuf::from("/var/lib/aegis"),
    }
}

pub fn run(opts: &LaunchOptions) -> Result<Verified, RunError> {
    let (vb, provenance) = match &opts.bundle {
        BundleSource::Dir(dir) => verify_dir(dir, opts)?,
        BundleSource::Local(local) => {
            // Built by this process a moment ago: verified the same way as an unsigned
            // bundle (names, manifest, file set, digests, expiry), so both paths hand the
            // later stages bytes that passed one verifier.
            let vb = Bundle::from_files(&local.path, local.files.clone())
                .and_then(|b| b.verify(&TrustPolicy::unsigned_ok()))
                .map_err(|e| RunError::Refused(e.to_string()))?;
            (vb, Provenance::LocalPolicy { path: local.path.clone(), sha256: local.sha256.clone() })
        }
    };
    let m = vb.manifest().clone();
    let params = check_params(&m, &opts.params)?;
    let command = if opts.command.is_empty() {
        m.entrypoint.clone().unwrap_or_default()
    } else {
        opts.command.clone()
    };
    if command.is_empty() {
        return Err(RunError::Refused("no command given and the bundle declares no entrypoint".into()));
    }
    Ok(Verified {
        dir: vb.dir().to_path_buf(),
        files: vb.files().clone(),
        bundle_sha256: vb.manifest_sha256().to_string(),
        provenance,
        manifest: m,
        params,
        command,
    })
}

/// A bundle directory: signature (or `--allow-unsigned`), then rollback protection.
fn verify_dir(dir: &Path, opts: &LaunchOptions) -> Result<(bundle::VerifiedBundle, Provenance), RunError> {
    let key = match &opts.trust_key {
        Some(p) => Some(bundle::load_public_key(p).map_err(|e| RunError::Refused(e.to_string()))?),
        None if opts.allow_unsigned => None,
        None => {
            return Err(RunError::Refused(
                "no --trust-key given; unsigned bundles need --allow-unsigned".into(),
            ));
        }
    };
    let policy = TrustPolicy {
        key,
        allow_unsigned: opts.allow_unsigned,
        now: bundle::now_unix(),
        min_serial: None,
    };
    let vb = bundle::verify(dir, &policy).map_err(|e| RunError::Refused(e.to_string()))?;
    let Some(key_id) = vb.signed_by().map(|k| k.to_string()) else {
        return Ok((vb, Provenance::UnsignedAllowed));
    };
    // Rollback protection only means something for bundles whose serial is signed.
    let m = vb.manifest();
    let store = SerialStore::new(state_dir().join("serials.json"));
    if let Some(parent) = store.path().parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RunError::Refused(format!("cannot create state dir {}: {e}", parent.display())))?;
    }
    store
        .check_and_record(&m.agent, m.serial)
        .map_err(|e| RunError::Refused(e.to_string()))?;
    Ok((vb, Provenance::Signed { key_id }))
}

fn check_params(m: &Manifest, given: &[(String, String)]) -> Result<BTreeMap<String, PathBuf>, RunError> {
    let mut out = BTreeMap::new();
    for (k, v) in given {
        if !m.parameters.contains_key(k) {
            let hint = match aegis_policy::did_you_mean(k, m.parameters.keys().map(String::as_str)) {
                Some(c) => format!("; did you mean {c}?"),
                None if m.parameters.is_empty() => "; it declares none".to_string(),
                None => format!("; it declares {}", m.parameters.keys().cloned().collect::<Vec<_>>().join(", ")),
            };
            return Err(RunError::Refused(format!("--param {k}: the bundle declares no such parameter{hint}")));
        }
        let c = no_symlinks(k, v)?;
        if out.insert(k.clone(), c).is_some() {
            return Err(RunError::Refused(format!("--param {k} given twice")));
        }
    }
    for k in m.parameters.keys() {
        if !out.contains_key(k) {
            return Err(RunError::Refused(format!("missing --param {k}=<absolute path> (declared by the bundle)")));
        }
    }
    Ok(out)
}

/// A parameter's path, refused unless it is absolute, exists and has no symbolic link in any
/// component: a parameter is the path it names, never where a link points (an earlier agent
/// may have planted `task -> /etc` in a tree it could write). The refusal names the link and
/// the real path to pass instead; passing that path is the explicit choice. No flag accepts
/// links: the real path says the same thing, visibly, in the command, report and log.
fn no_symlinks(k: &str, v: &str) -> Result<PathBuf, RunError> {
    use std::path::Component;
    let p = Path::new(v);
    if !p.is_absolute() {
        return Err(RunError::Refused(format!("--param {k}={v}: must be an absolute path")));
    }
    let mut walked = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir => {
                let real = std::fs::canonicalize(p).map(|r| format!("; pass the resolved path: --param {k}={}", r.display())).unwrap_or_default();
                return Err(RunError::Refused(format!("--param {k}={v}: `..` is not allowed in a parameter{real}")));
            }
            Component::Normal(part) => walked.push(part),
            Component::Prefix(_) => {}
        }
        let meta = std::fs::symlink_metadata(&walked).map_err(|e| RunError::Refused(format!("--param {k}={v}: {}: {e}", walked.display())))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&walked).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
            let real = match std::fs::canonicalize(p) {
                Ok(r) => format!("if that is what you mean, pass the real path: --param {k}={}", r.display()),
                Err(e) => format!("and it does not resolve ({e})"),
            };
            return Err(RunError::Refused(format!(
                "--param {k}={v}: {} is a symbolic link (-> {target}); a parameter must name its directory, not a link to it (a link in a writable tree may have been planted); {real}",
                walked.display()
            )));
        }
    }
    Ok(walked)
}
