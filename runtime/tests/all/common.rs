//! Shared helpers of the runtime tests: build bundles from target types, run `aegis-exec`,
//! read the audit log.
#![allow(dead_code, reason = "also compiled into the `sweep` binary, which uses a few of these helpers only")]

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
    /// A bundle spec for agent `<agent>-<this test process's pid>`: unique per test run, so
    /// that concurrent suites on one machine never see each other's cgroup leaves or
    /// nftables tables (which are named after the agent).
    pub fn new(agent: &str) -> Spec {
        let agent = &format!("{agent}-{}", std::process::id());
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
    /// The agent's name (unique per test process, see [`Spec::new`]).
    pub agent: String,
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
        agent: spec.agent.clone(),
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
        // The agent's default identity under root depends on sudo's variables: tests say
        // who they want.
        c.env_remove("SUDO_UID").env_remove("SUDO_GID");
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

impl TestBundle {
    /// This bundle's cgroup leaves currently present.
    pub fn leaves(&self) -> Vec<PathBuf> {
        leaves(&self.agent)
    }

    /// This bundle's host-mode nftables tables currently loaded (`aegis_<agent>_...`).
    pub fn tables(&self) -> Vec<String> {
        nft_tables_with(&format!("aegis_{}_", self.agent.replace('-', "_")))
    }

    /// Waits until the agent is in its cgroup leaf (pids or unified hierarchy) and
    /// returns the leaves.
    pub fn wait_for_leaf(&self) -> Vec<PathBuf> {
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_secs(5) {
            let l = self.leaves();
            let pids = l.iter().find(|p| p.starts_with("/sys/fs/cgroup/pids") || p.starts_with("/sys/fs/cgroup/unified"));
            if let Some(p) = pids
                && !std::fs::read_to_string(p.join("cgroup.procs")).unwrap_or_default().trim().is_empty()
            {
                return l;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("agent {} never appeared in its cgroup", self.agent);
    }
}

pub fn nft_tables_with(prefix: &str) -> Vec<String> {
    let o = Command::new("nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains(prefix))
        .map(str::to_string)
        .collect()
}

/// The typed policy (`policy.ir.json`) of a policy given as TOML, compiled in memory.
pub fn policy_ir(toml: &str) -> Vec<u8> {
    let compiled = aegis_compiler::compile_bytes("test.toml", toml.as_bytes()).unwrap_or_else(|f| panic!("test policy does not compile: {:?}", f.diagnostics));
    let mut out = serde_json::to_vec_pretty(&compiled.policy.to_json()).unwrap();
    out.push(b'\n');
    out
}

/// The unprivileged user the rootless tests run as (uid 1000, `cloudsdk` on the development
/// machine), if it exists and `setpriv` is installed. Prints SKIP otherwise.
pub fn unprivileged_user(test: &str) -> Option<u32> {
    const UID: u32 = 1000;
    // SAFETY: getpwuid returns a pointer to static storage or null; we only test for null.
    let exists = unsafe { !libc::getpwuid(UID).is_null() };
    if !exists {
        eprintln!("SKIP {test}: no user with uid {UID}");
        return None;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("SKIP {test}: setpriv (util-linux) is not installed");
        return None;
    }
    Some(UID)
}

impl TestBundle {
    /// Hands the bundle's scratch directory (bundle, keys, state, log) to `uid`, so that
    /// `aegis-exec` run as that user can read the bundle and write its log and state.
    pub fn give_to(&self, uid: u32) {
        use std::os::unix::fs::PermissionsExt as _;
        fn walk(p: &Path, uid: u32) {
            std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
            if p.is_dir() && !p.is_symlink() {
                for e in std::fs::read_dir(p).unwrap().flatten() {
                    walk(&e.path(), uid);
                }
            }
        }
        walk(self.tmp.path(), uid);
        std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Like [`TestBundle::command`], run as `uid` (its own gid and groups) through `setpriv`.
    pub fn command_as(&self, uid: u32, extra: &[&str], cmd: &[&str]) -> Command {
        let inner = self.command(extra, cmd);
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--init-groups")
            .arg(inner.get_program())
            .args(inner.get_args())
            .env("AEGIS_STATE_DIR", &self.state)
            .stdin(Stdio::null());
        c
    }
}
