//! The `cgroup` target: resource limits for one agent (`cgroup.json`) and the code that puts
//! an agent into a leaf cgroup that enforces them.
//!
//! Input: a [`CgroupSpec`] (built by the compiler from the policy's `[resources]`, or decoded
//! from `cgroup.json` with [`CgroupSpec::from_json`]). Output: deterministic JSON bytes
//! ([`CgroupSpec::to_json`]) and a text twin ([`CgroupSpec::to_text`]); at launch, a [`Leaf`]
//! created by [`Leaf::create`] on the host's [`Layout`] (`v2`, `hybrid` or `v1`) at the
//! [`Placement`] [`Layout::placement`] chose: under each hierarchy root for root, or, for an
//! unprivileged user on cgroup v2, under a subtree delegated to them ([`delegate`]).
//! Invariants: a validated spec always has memory and pids limits and swap 0; the artifact is
//! written for cgroup v2 names and mapped to v1 files on hybrid/v1 hosts
//! (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `pids.max`,
//! `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `cpu.shares`, `blkio.[bfq.]weight`); a leaf is
//! removed (remaining processes killed first) when [`Leaf::remove`] is called or the `Leaf` is
//! dropped, so every exit path of the supervisor cleans up. On hybrid hosts the leaf is also
//! created in the (controller-less) cgroup2 tree so that nftables can match the agent's
//! sockets by cgroup v2 path ([`Leaf::unified`]).
//!
//! Where the v1 hierarchy cannot express a v2 setting exactly it is reported, not hidden:
//! `memory.oom.group` has no v1 file, so [`ApplyReport::partial`] says the supervisor must
//! kill the whole leaf after an OOM kill (it does: `aegis-exec` watches `oom_kill`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod delegate;
pub use delegate::{Delegation, NoCgroup, Placement, SUPERVISOR_DIR, systemd_run_line};

/// File name of this artifact inside a bundle.
pub const FILE_NAME: &str = "cgroup.json";
/// Version of the `cgroup.json` format this module reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Directory (below each hierarchy root) that holds every AEGIS leaf.
pub const PARENT_DIR: &str = "aegis";

/// Errors of the cgroup target; each carries the path or value concerned.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup.json: {0}")]
    Decode(#[source] serde_json::Error),
    #[error("cgroup.json: unsupported format version {0} (this build reads {FORMAT_VERSION})")]
    Version(u32),
    #[error("cgroup.json: invalid {field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("cgroup layout: no cgroup filesystem is mounted (read {0})")]
    NoCgroupFs(PathBuf),
    #[error("cgroup: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup: controller `{0}` is not available on this host")]
    MissingController(&'static str),
    #[error("cgroup: pid {pid} is not in leaf {leaf} (hierarchy {hierarchy}: {found})")]
    NotMember {
        pid: i32,
        leaf: String,
        hierarchy: String,
        found: String,
    },
    #[error("cgroup: leaf {path} still has processes after kill")]
    Busy { path: PathBuf },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// CPU bandwidth limit: `quota_us` of CPU time per `period_us` (v2 `cpu.max`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuMax {
    pub quota_us: u64,
    pub period_us: u64,
}

/// The `cgroup.json` artifact: resource limits for one agent, in cgroup v2 terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSpec {
    pub format: u32,
    /// Agent name: `[a-z0-9_-]{1,48}`, used in leaf directory names.
    pub agent: String,
    /// `memory.max` in bytes.
    pub memory_max: u64,
    /// `memory.swap.max` in bytes (the compiler always writes 0: no swap).
    pub memory_swap_max: u64,
    /// `memory.oom.group`: an OOM kill kills the whole agent, not one process.
    pub memory_oom_group: bool,
    /// `pids.max`.
    pub pids_max: u64,
    /// `cpu.max`; `None` means no bandwidth limit.
    pub cpu_max: Option<CpuMax>,
    /// `cpu.weight`, 1..=10000 (100 is the kernel default).
    pub cpu_weight: u32,
    /// `io.weight`, 1..=10000; `None` leaves the host default.
    pub io_weight: Option<u32>,
    /// Wall-clock limit enforced by the supervisor (kills the leaf at the deadline).
    pub wall_time_ms: Option<u64>,
}

fn invalid(field: &'static str, why: impl Into<String>) -> CgroupError {
    CgroupError::Invalid {
        field,
        why: why.into(),
    }
}

/// Whether `name` is usable as an agent name in paths and nftables identifiers.
pub fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl CgroupSpec {
    /// Checks every field's range; the only way the runtime obtains a spec is through this.
    pub fn validate(&self) -> Result<(), CgroupError> {
        if self.format != FORMAT_VERSION {
            return Err(CgroupError::Version(self.format));
        }
        if !valid_agent_name(&self.agent) {
            return Err(invalid("agent", format!("{:?} is not [a-z0-9_-]{{1,48}}", self.agent)));
        }
        if self.memory_max < 1 << 20 {
            return Err(invalid("memory_max", "must be at least 1 MiB"));
        }
        if self.pids_max == 0 {
            return Err(invalid("pids_max", "must be at least 1"));
        }
        if let Some(c) = &self.cpu_max {
            if !(1000..=1_000_000).contains(&c.period_us) {
                return Err(invalid("cpu_max.period_us", "must be in 1000..=1000000"));
            }
            if c.quota_us < 1000 {
                return Err(invalid("cpu_max.quota_us", "must be at least 1000"));
            }
        }
        if !(1..=10_000).contains(&self.cpu_weight) {
            return Err(invalid("cpu_weight", "must be in 1..=10000"));
        }
        if let Some(w) = self.io_weight
            && !(1..=10_000).contains(&w)
        {
            return Err(invalid("io_weight", "must be in 1..=10000"));
        }
        if self.wall_time_ms == Some(0) {
            return Err(invalid("wall_time_ms", "must be positive when present"));
        }
        Ok(())
    }

    /// Decodes and validates `cgroup.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CgroupError> {
        let spec: CgroupSpec = serde_json::from_slice(bytes).map_err(CgroupError::Decode)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Deterministic `cgroup.json` bytes (fields in declaration order, trailing newline).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of integers, strings and options cannot fail.
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Human-readable twin: the v2 files and the v1 files this spec writes.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "# cgroup limits for agent {}", self.agent);
        let _ = writeln!(t, "memory.max        {}  (v1 memory.limit_in_bytes)", self.memory_max);
        let _ = writeln!(
            t,
            "memory.swap.max   {}  (v1 memory.memsw.limit_in_bytes = {})",
            self.memory_swap_max,
            self.memory_max.saturating_add(self.memory_swap_max)
        );
        let _ = writeln!(
            t,
            "memory.oom.group  {}  (v1: supervisor kills the leaf on oom_kill)",
            u8::from(self.memory_oom_group)
        );
        let _ = writeln!(t, "pids.max          {}  (v1 pids.max)", self.pids_max);
        match &self.cpu_max {
            Some(c) => {
                let _ = writeln!(
                    t,
                    "cpu.max           {} {}  (v1 cpu.cfs_quota_us, cpu.cfs_period_us)",
                    c.quota_us, c.period_us
                );
            }
            None => {
                let _ = writeln!(t, "cpu.max           max 100000");
            }
        }
        let _ = writeln!(
            t,
            "cpu.weight        {}  (v1 cpu.shares = {})",
            self.cpu_weight,
            cpu_shares(self.cpu_weight)
        );
        match self.io_weight {
            Some(w) => {
                let _ = writeln!(t, "io.weight         {w}  (v1 blkio weight = {})", blkio_weight(w));
            }
            None => {
                let _ = writeln!(t, "io.weight         (host default)");
            }
        }
        match self.wall_time_ms {
            Some(ms) => {
                let _ = writeln!(t, "wall time         {ms} ms  (supervisor kills the leaf)");
            }
            None => {
                let _ = writeln!(t, "wall time         unlimited");
            }
        }
        t
    }
}

/// v2 `cpu.weight` (default 100) to v1 `cpu.shares` (default 1024).
pub fn cpu_shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).clamp(2, 262_144)
}

/// v2 `io.weight` (1..=10000, default 100) to v1 blkio weight (10..=1000, default 100).
pub fn blkio_weight(weight: u32) -> u64 {
    u64::from(weight / 10).clamp(10, 1000)
}

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2 (unified hierarchy at `root`).
    V2 { root: PathBuf },
    /// v1 controllers (name → mount point) plus a cgroup2 tree at `unified` (usually with no
    /// controllers; used for membership and socket matching only).
    Hybrid {
        v1: BTreeMap<String, PathBuf>,
        unified: PathBuf,
    },
    /// v1 controllers only: nftables cannot match sockets by cgroup v2 path.
    V1 { v1: BTreeMap<String, PathBuf> },
}

impl Layout {
    /// Detects the layout from `/proc/self/mounts`.
    pub fn detect() -> Result<Layout, CgroupError> {
        let p = Path::new("/proc/self/mounts");
        let text = std::fs::read_to_string(p).map_err(io("reading", p))?;
        Layout::from_mounts(&text).ok_or_else(|| CgroupError::NoCgroupFs(p.to_path_buf()))
    }

    /// Parses `/proc/mounts` text; `None` when no cgroup filesystem is mounted.
    pub fn from_mounts(text: &str) -> Option<Layout> {
        let mut v1 = BTreeMap::new();
        let mut unified = None;
        for line in text.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(_src), Some(dir), Some(fstype), Some(opts)) = (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let dir = PathBuf::from(unescape_mount(dir));
            match fstype {
                "cgroup2" => {
                    // The first cgroup2 mount is the host's; later ones are bind copies.
                    unified.get_or_insert(dir);
                }
                "cgroup" => {
                    for o in opts.split(',') {
                        if matches!(
                            o,
                            "memory" | "pids" | "cpu" | "cpuacct" | "blkio" | "freezer" | "cpuset" | "devices"
                        ) {
                            v1.entry(o.to_string()).or_insert_with(|| dir.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        match (v1.is_empty(), unified) {
            (true, Some(root)) => Some(Layout::V2 { root }),
            (false, Some(unified)) => Some(Layout::Hybrid { v1, unified }),
            (false, None) => Some(Layout::V1 { v1 }),
            (true, None) => None,
        }
    }

    /// `v2`, `hybrid` or `v1`, as reported in the enforcement report and by `doctor`.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V2 { .. } => "v2",
            Layout::Hybrid { .. } => "hybrid",
            Layout::V1 { .. } => "v1",
        }
    }

    /// The cgroup2 mount point, if any.
    pub fn unified_root(&self) -> Option<&Path> {
        match self {
            Layout::V2 { root } => Some(root),
            Layout::Hybrid { unified, .. } => Some(unified),
            Layout::V1 { .. } => None,
        }
    }

    /// Controllers available to a leaf (v2: from `cgroup.controllers` of the root).
    pub fn controllers(&self) -> Vec<String> {
        match self {
            Layout::V2 { root } => std::fs::read_to_string(root.join("cgroup.controllers"))
                .unwrap_or_default()
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect(),
            Layout::Hybrid { v1, .. } | Layout::V1 { v1 } => v1.keys().cloned().collect(),
        }
    }
}

/// `/proc/mounts` escapes spaces etc. as `\040`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'\\')
            && let Some(oct) = b.get(i + 1..i + 4)
            && let Ok(txt) = std::str::from_utf8(oct)
            && let Ok(v) = u8::from_str_radix(txt, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        if let Some(&c) = b.get(i) {
            out.push(c);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What one hierarchy directory of a leaf is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Hier {
    /// The cgroup2 leaf (all controllers on v2; membership only on hybrid).
    Unified,
    Memory,
    Pids,
    Cpu,
    Cpuacct,
    Blkio,
}

impl Hier {
    fn v1_name(self) -> &'static str {
        match self {
            Hier::Unified => "",
            Hier::Memory => "memory",
            Hier::Pids => "pids",
            Hier::Cpu => "cpu",
            Hier::Cpuacct => "cpuacct",
            Hier::Blkio => "blkio",
        }
    }
}

/// One setting written (or not) when the leaf was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub file: String,
    pub value: String,
}

/// What [`Leaf::create`] did: for the enforcement report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub layout: String,
    /// Where the leaf was made ([`Placement::describe`]).
    pub placement: String,
    /// Leaf directories (one per hierarchy).
    pub paths: Vec<String>,
    pub settings: Vec<Setting>,
    /// Settings that could not be expressed exactly on this host, with why.
    pub partial: Vec<String>,
}

/// Resource usage read from a leaf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    /// Processes killed by the OOM killer in this leaf.
    pub oom_kills: u64,
    /// Times an allocation hit the memory limit (v1 `memory.failcnt`, v2 `memory.events max`).
    pub memory_limit_hits: u64,
    /// Times a fork failed because of `pids.max`.
    pub pids_limit_hits: u64,
    pub pids_peak: Option<u64>,
    /// CPU time used by the leaf in nanoseconds.
    pub cpu_ns: Option<u64>,
}

/// A leaf cgroup created for one agent run. Removed on [`Leaf::remove`] or drop.
#[derive(Debug)]
pub struct Leaf {
    name: String,
    layout: &'static str,
    dirs: Vec<(Hier, PathBuf)>,
    /// Path of the cgroup2 leaf relative to the cgroup2 mount, and its depth.
    unified: Option<(String, u32)>,
    report: ApplyReport,
    removed: bool,
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io("writing", path))
}

impl Leaf {
    /// Creates `<base>/aegis/<agent>-<instance>` in every hierarchy AEGIS uses and writes
    /// the limits; `base` is each hierarchy root ([`Placement::Root`]) or the delegated
    /// cgroup (into whose `aegis-supervisor` child the supervisor first moves itself and its
    /// children when the base is its own cgroup). `instance` must be unique among running
    /// agents (the runtime uses the supervisor pid and a nonce). On any error the partly
    /// created leaf is removed.
    pub fn create(spec: &CgroupSpec, layout: &Layout, placement: &Placement, instance: &str) -> Result<Leaf, CgroupError> {
        spec.validate()?;
        if instance.is_empty() || instance.contains('/') || instance.contains("..") {
            return Err(invalid("instance", format!("{instance:?} is not a single path component")));
        }
        let name = format!("{}-{}", spec.agent, instance);
        let mut leaf = Leaf {
            name: name.clone(),
            layout: layout.name(),
            dirs: Vec::new(),
            unified: None,
            report: ApplyReport {
                layout: layout.name().to_string(),
                placement: placement.describe(),
                ..ApplyReport::default()
            },
            removed: false,
        };
        // A failure half way drops `leaf`, whose Drop removes what was made so far.
        match (layout, placement) {
            (Layout::V2 { root }, Placement::Root) => leaf.create_v2(spec, root, root)?,
            (Layout::V2 { root }, Placement::Delegated(d)) => {
                if d.move_supervisor {
                    move_supervisor(&d.base)?;
                }
                leaf.create_v2(spec, root, &d.base)?;
            }
            (Layout::Hybrid { .. } | Layout::V1 { .. }, Placement::Delegated(_)) => {
                return Err(invalid("placement", "a delegated subtree exists on cgroup v2 only"));
            }
            (Layout::Hybrid { v1, unified }, Placement::Root) => {
                leaf.create_v1(spec, v1)?;
                leaf.mkdir(Hier::Unified, unified)?;
                leaf.unified = Some((format!("{PARENT_DIR}/{name}"), 2));
            }
            (Layout::V1 { v1 }, Placement::Root) => leaf.create_v1(spec, v1)?,
        }
        Ok(leaf)
    }

    fn mkdir(&mut self, h: Hier, root: &Path) -> Result<PathBuf, CgroupError> {
        let parent = root.join(PARENT_DIR);
        let dir = parent.join(&self.name);
        // Another supervisor removes the shared parent when its own leaf was the last one
        // (`Leaf::remove`); if that happens between our two mkdirs, create it again.
        let mut attempts = 0;
        loop {
            match std::fs::create_dir(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("creating", &parent)(e)),
            }
            match std::fs::create_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound && attempts < 10 => attempts += 1,
                Err(e) => return Err(io("creating", &dir)(e)),
            }
        }
        self.dirs.push((h, dir.clone()));
        self.report.paths.push(dir.display().to_string());
        Ok(dir)
    }

    fn set(&mut self, dir: &Path, file: &str, value: String) -> Result<(), CgroupError> {
        write_file(&dir.join(file), &value)?;
        self.report.settings.push(Setting {
            file: file.to_string(),
            value,
        });
        Ok(())
    }

    /// The v2 leaf below `base` (the hierarchy root `root`, or a delegated cgroup in it).
    fn create_v2(&mut self, spec: &CgroupSpec, root: &Path, base: &Path) -> Result<(), CgroupError> {
        let available: Vec<String> = Layout::V2 { root: base.to_path_buf() }.controllers();
        for needed in ["memory", "pids"] {
            if !available.iter().any(|c| c == needed) {
                return Err(CgroupError::MissingController(needed));
            }
        }
        // Controllers must be enabled in every ancestor's subtree_control for the leaf to
        // get the interface files; `base` and our `aegis` parent are the ancestors we own
        // (above a delegated base, whoever delegated it enabled them: `available`).
        let wanted: Vec<&str> = ["memory", "pids", "cpu", "io"]
            .into_iter()
            .filter(|c| available.iter().any(|a| a == c))
            .collect();
        let enable = wanted.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(" ");
        write_file(&base.join("cgroup.subtree_control"), &enable)?;
        let parent = base.join(PARENT_DIR);
        match std::fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", &parent)(e)),
        }
        write_file(&parent.join("cgroup.subtree_control"), &enable)?;
        let dir = self.mkdir(Hier::Unified, base)?;
        let rel = dir.strip_prefix(root).unwrap_or(&dir);
        let depth = rel.components().count() as u32;
        self.unified = Some((rel.display().to_string(), depth));
        self.set(&dir, "memory.max", spec.memory_max.to_string())?;
        self.set(&dir, "memory.swap.max", spec.memory_swap_max.to_string())
            .or_else(|e| {
                // Hosts booted without swap accounting lack the file; with no swap there is
                // nothing to limit, which we record.
                if dir.join("memory.swap.max").exists() {
                    Err(e)
                } else {
                    self.report.partial.push("memory.swap.max: no swap accounting on this host".into());
                    Ok(())
                }
            })?;
        self.set(&dir, "memory.oom.group", u8::from(spec.memory_oom_group).to_string())?;
        self.set(&dir, "pids.max", spec.pids_max.to_string())?;
        if wanted.contains(&"cpu") {
            if let Some(c) = &spec.cpu_max {
                self.set(&dir, "cpu.max", format!("{} {}", c.quota_us, c.period_us))?;
            }
            self.set(&dir, "cpu.weight", spec.cpu_weight.to_string())?;
        } else {
            self.report.partial.push("cpu: controller not available; cpu.max/cpu.weight not set".into());
        }
        if let Some(w) = spec.io_weight {
            if wanted.contains(&"io") && dir.join("io.weight").exists() {
                self.set(&dir, "io.weight", format!("default {w}"))?;
            } else {
                self.report.partial.push("io.weight: io controller or weight file not available".into());
            }
        }
        Ok(())
    }

    fn create_v1(&mut self, spec: &CgroupSpec, v1: &BTreeMap<String, PathBuf>) -> Result<(), CgroupError> {
        let root_of = |name: &'static str| v1.get(name).cloned().ok_or(CgroupError::MissingController(name));
        let mem_root = root_of("memory")?;
        let pids_root = root_of("pids")?;

        let mem = self.mkdir(Hier::Memory, &mem_root)?;
        self.set(&mem, "memory.limit_in_bytes", spec.memory_max.to_string())?;
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            // memsw is memory+swap, so "swap 0" is memsw == memory limit; it must be written
            // after memory.limit_in_bytes (the kernel requires memsw >= limit).
            self.set(
                &mem,
                "memory.memsw.limit_in_bytes",
                spec.memory_max.saturating_add(spec.memory_swap_max).to_string(),
            )?;
        } else {
            self.set(&mem, "memory.swappiness", "0".to_string())?;
            self.report
                .partial
                .push("memory.swap.max: no memsw accounting; swappiness 0 only discourages swap".into());
        }
        if spec.memory_oom_group {
            self.report
                .partial
                .push("memory.oom.group: no v1 file; the supervisor kills the leaf after an OOM kill".into());
        }

        let pids = self.mkdir(Hier::Pids, &pids_root)?;
        self.set(&pids, "pids.max", spec.pids_max.to_string())?;

        match v1.get("cpu") {
            Some(cpu_root) => {
                let cpu = self.mkdir(Hier::Cpu, cpu_root)?;
                if let Some(c) = &spec.cpu_max {
                    self.set(&cpu, "cpu.cfs_period_us", c.period_us.to_string())?;
                    self.set(&cpu, "cpu.cfs_quota_us", c.quota_us.to_string())?;
                }
                self.set(&cpu, "cpu.shares", cpu_shares(spec.cpu_weight).to_string())?;
            }
            None => self
                .report
                .partial
                .push("cpu: v1 cpu controller not mounted; cpu limits not set".into()),
        }
        // cpuacct only gives accounting (CPU time for the exit record); when it is
        // co-mounted with cpu the cpu leaf already covers it.
        if let Some(acct_root) = v1.get("cpuacct")
            && Some(acct_root) != v1.get("cpu")
        {
            self.mkdir(Hier::Cpuacct, acct_root)?;
        }
        if let Some(w) = spec.io_weight {
            match v1.get("blkio") {
                Some(root) => {
                    let b = self.mkdir(Hier::Blkio, root)?;
                    let file = ["blkio.weight", "blkio.bfq.weight"]
                        .into_iter()
                        .find(|f| b.join(f).exists());
                    match file {
                        Some(f) => self.set(&b, f, blkio_weight(w).to_string())?,
                        None => self.report.partial.push("io.weight: no blkio weight file (no CFQ/BFQ)".into()),
                    }
                }
                None => self.report.partial.push("io.weight: blkio controller not mounted".into()),
            }
        }
        Ok(())
    }

    /// Leaf name `<agent>-<instance>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `v2`, `hybrid` or `v1`.
    pub fn layout(&self) -> &'static str {
        self.layout
    }

    /// What was written, for the enforcement report.
    pub fn report(&self) -> &ApplyReport {
        &self.report
    }

    /// The cgroup2 leaf as (path relative to the cgroup2 mount, depth), for nftables'
    /// `socket cgroupv2 level <depth> "<path>"`; `None` on pure v1 hosts.
    pub fn unified(&self) -> Option<(&str, u32)> {
        self.unified.as_ref().map(|(p, l)| (p.as_str(), *l))
    }

    /// Absolute path of the cgroup2 leaf directory, if any.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(h, _)| *h == Hier::Unified)
            .map(|(_, p)| p.as_path())
    }

    /// `cgroup.procs` files of every hierarchy, in the order a pid must be written to them.
    /// The runtime opens these before forking so that moving the child is a plain `write`.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    /// Moves `pid` into the leaf in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        for f in self.procs_files() {
            write_file(&f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves `pid` into the leaf in every hierarchy but the cgroup2 one (for a process that
    /// was created there with `CLONE_INTO_CGROUP`: a second write would only cost another
    /// migration lock round).
    pub fn add_pid_except_unified(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, d) in self.dirs.iter().filter(|(h, _)| *h != Hier::Unified) {
            write_file(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Checks `/proc/<pid>/cgroup` lists this leaf in every hierarchy it was created in.
    pub fn verify_member(&self, pid: i32) -> Result<(), CgroupError> {
        let p = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let text = std::fs::read_to_string(&p).map_err(io("reading", &p))?;
        let want = format!("/{PARENT_DIR}/{}", self.name);
        for (h, _) in &self.dirs {
            let found = text.lines().find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
                let hit = match h {
                    Hier::Unified => ctrls.is_empty(),
                    other => ctrls.split(',').any(|c| c == other.v1_name()),
                };
                hit.then(|| path.to_string())
            });
            let found = found.unwrap_or_else(|| "(hierarchy not listed)".into());
            // Inside a cgroup namespace rooted elsewhere the path has a prefix; from the
            // supervisor (initial cgroup namespace) it ends with our leaf exactly.
            if !found.ends_with(&want) {
                return Err(CgroupError::NotMember {
                    pid,
                    leaf: self.name.clone(),
                    hierarchy: if *h == Hier::Unified { "cgroup2".into() } else { h.v1_name().into() },
                    found,
                });
            }
        }
        Ok(())
    }

    /// Pids currently in the leaf (union over hierarchies, sorted).
    pub fn procs(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .dirs
            .iter()
            .filter_map(|(_, d)| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect::<Vec<i32>>())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SIGKILLs every process in the leaf: `cgroup.kill` when the cgroup2 leaf has it
    /// (race-free even against forks), else repeated kills until the leaf is empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(u) = self.unified_dir() {
            let k = u.join("cgroup.kill");
            if k.exists() {
                write_file(&k, "1")?;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let pids = self.procs();
            if pids.is_empty() {
                return Ok(());
            }
            for pid in pids {
                // SAFETY: kill(2) with a pid read from our own leaf and a constant signal
                // has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if Instant::now() > deadline {
                let path = self.dirs.first().map(|(_, p)| p.clone()).unwrap_or_default();
                return Err(CgroupError::Busy { path });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Reads usage counters (missing files read as `None`/0: hosts differ).
    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for (h, d) in &self.dirs {
            let num = |f: &str| read_u64(&d.join(f));
            let kv = |f: &str, k: &str| read_key(&d.join(f), k);
            match (self.layout, h) {
                ("v2", Hier::Unified) => {
                    u.memory_current = num("memory.current");
                    u.memory_peak = num("memory.peak");
                    u.oom_kills = kv("memory.events", "oom_kill").unwrap_or(0);
                    u.memory_limit_hits = kv("memory.events", "max").unwrap_or(0);
                    u.pids_limit_hits = kv("pids.events", "max").unwrap_or(0);
                    u.pids_peak = num("pids.peak");
                    u.cpu_ns = kv("cpu.stat", "usage_usec").map(|us| us.saturating_mul(1000));
                }
                (_, Hier::Memory) => {
                    u.memory_current = num("memory.usage_in_bytes");
                    u.memory_peak = num("memory.max_usage_in_bytes");
                    u.oom_kills = kv("memory.oom_control", "oom_kill").unwrap_or(0);
                    u.memory_limit_hits = num("memory.failcnt").unwrap_or(0);
                }
                (_, Hier::Pids) => {
                    u.pids_limit_hits = kv("pids.events", "max").unwrap_or(0);
                    u.pids_peak = num("pids.peak");
                }
                (_, Hier::Cpuacct) => u.cpu_ns = num("cpuacct.usage"),
                (_, Hier::Cpu) if u.cpu_ns.is_none() => u.cpu_ns = num("cpuacct.usage"),
                _ => {}
            }
        }
        u
    }

    /// Kills what is left and removes every leaf directory (and the `aegis` parent when it
    /// is empty). Idempotent.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        let killed = self.kill_all();
        let mut first_err = killed.err();
        for (_, d) in self.dirs.iter().rev() {
            // rmdir fails with EBUSY for a short while after the last process was killed
            // (it is still exiting); retry briefly.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if Instant::now() < deadline && e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        first_err.get_or_insert(CgroupError::Io {
                            what: "removing",
                            path: d.clone(),
                            source: e,
                        });
                        break;
                    }
                }
            }
            if let Some(parent) = d.parent() {
                // Another agent may be using the parent; failure to remove it is expected.
                let _ = std::fs::remove_dir(parent);
            }
        }
        self.removed = true;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

/// Moves the calling process and its children from `base` (its own, delegated cgroup) into
/// `base/aegis-supervisor`, so that `base` has no processes and may enable controllers for
/// its children. Anything else in `base` is refused, never moved.
fn move_supervisor(base: &Path) -> Result<(), CgroupError> {
    let me = std::process::id() as i32;
    let others = delegate::foreign_procs(base, me);
    if !others.is_empty() {
        return Err(invalid(
            "placement",
            format!("{} holds processes other than the supervisor ({others:?})", base.display()),
        ));
    }
    let sup = base.join(SUPERVISOR_DIR);
    match std::fs::create_dir(&sup) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating", &sup)(e)),
    }
    let procs = sup.join("cgroup.procs");
    write_file(&procs, "0")?;
    let text = std::fs::read_to_string(base.join("cgroup.procs")).unwrap_or_default();
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if delegate::parent_of(pid) == Some(me) {
            write_file(&procs, &pid.to_string())?;
        }
    }
    Ok(())
}

/// Removes leaves left behind by supervisors that died without cleaning up (SIGKILL): leaf
/// names end in `-<supervisor pid>-<hex>`; a leaf whose supervisor pid is not alive
/// (`alive(pid)` false) has its processes killed and its directory removed. Returns the
/// removed directories. Leaves whose names do not have that shape are left alone.
pub fn sweep_stale(layout: &Layout, alive: &dyn Fn(i32) -> bool) -> Vec<PathBuf> {
    let roots = delegate::sweep_bases(layout);
    let mut removed = Vec::new();
    for root in roots {
        let Ok(rd) = std::fs::read_dir(root.join(PARENT_DIR)) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let mut parts = name.rsplitn(3, '-');
            let (Some(hex), Some(pid), Some(_agent)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(pid) = pid.parse::<i32>() else { continue };
            if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) || alive(pid) {
                continue;
            }
            let dir = e.path();
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) of a process left in an orphaned AEGIS leaf.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            while std::fs::remove_dir(&dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if !dir.exists() {
                removed.push(dir);
            }
        }
    }
    removed
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn read_key(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}
