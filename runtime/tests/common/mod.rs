//! Shared helpers of the runtime tests: build bundles from target types, run `aegis-exec`,
//! read the audit log.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aegis_targets::bundle::{
    BundleWriter, CgroupVersion, CompilerInfo, Enforcement, KernelRequirements, ManifestFields, Namespace, NetworkMode,
};
use aegis_targets::cgroup::{CgroupSpec, FORMAT_VERSION};
use aegis_targets::nftables::{self, NetMode, NetPolicy};

pub const EXE: &str = env!("CARGO_BIN_EXE_aegis-exec");

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a SKIP reason and returns false when not root.
pub fn need_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root (cgroups, nftables, id maps)");
        return false;
    }
    true
}

pub fn have_nft() -> bool {
    Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success())
}

pub fn cgroup_spec(agent: &str) -> CgroupSpec {
    CgroupSpec {
        format: FORMAT_VERSION,
        agent: agent.into(),
        memory_max: 256 << 20,
        memory_swap_max: 0,
        memory_oom_group: true,
        pids_max: 64,
        cpu_max: None,
        cpu_weight: 100,
        io_weight: None,
        wall_time_ms: Some(20_000),
    }
}

/// What goes into a test bundle.
pub struct Spec {
    pub agent: String,
    pub network: NetworkMode,
    pub cgroup: Option<CgroupSpec>,
    pub net: Option<NetPolicy>,
    pub enforcement: BTreeMap<String, Enforcement>,
    pub extra_files: Vec<(String, Vec<u8>)>,
    pub parameters: Vec<String>,
    pub landlock_abi: Option<u32>,
    pub seccomp: bool,
}

impl Spec {
    pub fn new(agent: &str) -> Spec {
        Spec {
            agent: agent.into(),
            network: NetworkMode::None,
            cgroup: Some(cgroup_spec(agent)),
            net: Some(NetPolicy {
                mode: NetMode::None,
                endpoints: vec![],
                resolvers: vec![],
            }),
            enforcement: BTreeMap::new(),
            extra_files: vec![],
            parameters: vec![],
            landlock_abi: None,
            seccomp: false,
        }
    }
}

/// A bundle directory (and key pair) in a temp dir.
pub struct TestBundle {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub public_key: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
}

pub fn build(spec: &Spec, signed: bool) -> TestBundle {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bundle");
    let sk = tmp.path().join("k.key");
    let pk = tmp.path().join("k.pub");
    aegis_targets::bundle::generate_keypair(&sk, &pk, false).unwrap();
    let key = aegis_targets::bundle::load_secret_key(&sk).unwrap();
    let mut ns = BTreeSet::new();
    for n in [Namespace::User, Namespace::Mount, Namespace::Pid, Namespace::Ipc, Namespace::Uts, Namespace::Cgroup] {
        ns.insert(n);
    }
    if spec.network != NetworkMode::Host {
        ns.insert(Namespace::Net);
    }
    let mut cgv = BTreeSet::new();
    if spec.cgroup.is_some() {
        cgv.insert(CgroupVersion::V1);
        cgv.insert(CgroupVersion::V2);
    }
    let fields = ManifestFields {
        agent: spec.agent.clone(),
        compiler: CompilerInfo {
            name: "runtime-tests".into(),
            version: "0".into(),
        },
        policy_sha256: "0".repeat(64),
        architectures: ["x86_64".to_string()].into_iter().collect(),
        kernel: KernelRequirements {
            landlock_abi: spec.landlock_abi,
            cgroup_versions: cgv,
            nftables: spec.net.is_some(),
            namespaces: ns,
            seccomp: spec.seccomp,
        },
        enforcement: spec.enforcement.clone(),
        network_mode: spec.network,
        parameters: spec
            .parameters
            .iter()
            .map(|p| (p.clone(), aegis_targets::bundle::LaunchParameter { description: "test".into() }))
            .collect(),
        entrypoint: None,
        issued_at: 1_700_000_000,
        expires_at: None,
        serial: 1,
    };
    let mut w = BundleWriter::new(fields);
    if let Some(c) = &spec.cgroup {
        w.add("cgroup.json", c.to_json()).unwrap();
    }
    if let Some(n) = &spec.net {
        let r = nftables::lower(&spec.agent, n).unwrap();
        w.add("nftables.json", r.to_json()).unwrap();
    }
    for (name, bytes) in &spec.extra_files {
        w.add(name, bytes.clone()).unwrap();
    }
    w.write(&dir, if signed { Some(&key) } else { None }).unwrap();
    let state = tmp.path().join("state");
    let log = tmp.path().join("audit.log");
    TestBundle {
        dir,
        public_key: pk,
        state,
        log,
        tmp,
    }
}

impl TestBundle {
    /// `aegis-exec --trust-key K --audit-log L [extra] BUNDLE -- cmd...` as a Command.
    pub fn command(&self, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(EXE);
        c.env("AEGIS_STATE_DIR", &self.state)
            .arg("--trust-key")
            .arg(&self.public_key)
            .arg("--audit-log")
            .arg(&self.log)
            .args(extra)
            .arg(&self.dir)
            .arg("--")
            .args(cmd)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, extra: &[&str], cmd: &[&str]) -> Output {
        self.command(extra, cmd).output().unwrap()
    }

    /// Audit records (parsed JSON), after checking the chain verifies.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let report = aegis_audit::verify_log(&self.log, &aegis_audit::VerifyOptions::default()).unwrap();
        assert!(report.is_ok(), "audit log verifies: {report:?}");
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn kinds(&self) -> Vec<String> {
        self.audit()
            .iter()
            .map(|r| r["event"]["kind"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    pub fn events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.audit()
            .into_iter()
            .map(|r| r["event"].clone())
            .filter(|e| e["kind"] == kind)
            .collect()
    }
}

pub fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Leaf directories of `agent` currently present in any hierarchy.
pub fn leaves(agent: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in ["memory", "pids", "cpu", "cpuacct", "blkio", "unified", ""] {
        let p = Path::new("/sys/fs/cgroup").join(h).join("aegis");
        if let Ok(rd) = std::fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&format!("{agent}-")) {
                    out.push(e.path());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

pub fn nft_tables_with(prefix: &str) -> Vec<String> {
    let o = Command::new("nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(prefix))
        .map(str::to_string)
        .collect()
}
