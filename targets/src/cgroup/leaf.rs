//! The life of an agent's leaf after [`Leaf::create`]: moving processes in, checking they
//! are there, killing what is left, removing the directories; and sweeping the leaves of
//! supervisors that died without cleaning up.
//!
//! Input: a created [`Leaf`] (one directory per hierarchy). Output: membership checks and
//! cleanup. Invariants: a pid counts as in the leaf only when `/proc/<pid>/cgroup` names it
//! in every hierarchy the leaf was created in; removal kills first and is idempotent, and
//! dropping a `Leaf` removes it; [`sweep_stale`] touches only leaves named
//! `<agent>-<pid>-<hex>` whose supervisor pid is not alive.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{ApplyReport, CgroupError, Layout, PARENT_DIR, delegate, io, write_file};

/// What one hierarchy directory of a leaf is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Hier {
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

/// A leaf cgroup created for one agent run. Removed on [`Leaf::remove`] or drop.
#[derive(Debug)]
pub struct Leaf {
    pub(super) name: String,
    pub(super) layout: &'static str,
    pub(super) dirs: Vec<(Hier, PathBuf)>,
    /// Path of the cgroup2 leaf relative to the cgroup2 mount, and its depth.
    pub(super) unified: Option<(String, u32)>,
    pub(super) report: ApplyReport,
    pub(super) removed: bool,
}

impl Leaf {
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
