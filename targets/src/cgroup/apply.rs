//! Launch: creating an agent's leaf in every hierarchy AEGIS uses and writing its limits
//! ([`Leaf::create`]).
//!
//! Input: a [`CgroupSpec`], the host's [`Layout`], the [`Placement`] chosen for this
//! supervisor, and an instance name. Output: a [`Leaf`] and its [`ApplyReport`] (layout,
//! placement, directories, every setting written, what the host could not express).
//! Invariants: the spec is validated again before anything is made; memory and pids limits
//! are always set or the launch fails (a missing `memory`/`pids` controller is an error);
//! what v1 cannot express exactly is recorded in [`ApplyReport::partial`]; a failure half
//! way removes what was made (the partly built `Leaf` is dropped).

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::leaf::Hier;
use super::{CgroupError, CgroupSpec, Layout, Leaf, PARENT_DIR, Placement, SUPERVISOR_DIR, blkio_weight, cpu_shares, delegate, invalid, io, write_file};

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
