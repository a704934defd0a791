//! How cgroups are mounted on this host: pure v2, hybrid (v1 controllers plus a cgroup2 tree)
//! or v1 only.
//!
//! Input: `/proc/self/mounts` ([`Layout::detect`]) or its text ([`Layout::from_mounts`]).
//! Output: a [`Layout`]: the mount points and the controllers a leaf can get. Invariants: the
//! first cgroup2 mount is the host's (later ones are bind copies); only the controllers
//! AEGIS uses are collected from v1 mounts; no cgroup filesystem at all is an error, not an
//! empty layout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{CgroupError, io};

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
