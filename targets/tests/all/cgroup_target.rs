//! cgroup target: artifact bytes (snapshot, determinism, validation) and, as root, a real
//! leaf on this host (limits written, membership, usage, cleanup).

use aegis_targets::cgroup::{CgroupSpec, CpuMax, FORMAT_VERSION, Layout, Leaf, Placement};

fn spec() -> CgroupSpec {
    CgroupSpec {
        format: FORMAT_VERSION,
        agent: "coding-agent".into(),
        memory_max: 512 << 20,
        memory_swap_max: 0,
        memory_oom_group: true,
        pids_max: 256,
        cpu_max: Some(CpuMax { quota_us: 150_000, period_us: 100_000 }),
        cpu_weight: 100,
        io_weight: Some(200),
        wall_time_ms: Some(3_600_000),
    }
}

/// `snapshots/cgroup/cgroup_target__NAME.snap`: the name this file's snapshots had when it was its
/// own test binary (insta would now prefix the module path `all::cgroup_target`).
fn snap(name: &str, value: String) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/cgroup"));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(format!("cgroup_target__{name}"), value));
}

#[test]
fn artifact_is_deterministic_and_round_trips() {
    let a = spec().to_json();
    assert_eq!(a, spec().to_json());
    assert_eq!(CgroupSpec::from_json(&a).unwrap(), spec());
    snap("coding_agent_json", String::from_utf8(a).unwrap());
    snap("coding_agent_text", spec().to_text());
}

#[test]
fn invalid_specs_are_rejected_with_the_field() {
    type Mutate = Box<dyn Fn(&mut CgroupSpec)>;
    let cases: Vec<(&str, Mutate)> = vec![
        ("agent", Box::new(|s| s.agent = "../etc".into())),
        ("memory_max", Box::new(|s| s.memory_max = 10)),
        ("pids_max", Box::new(|s| s.pids_max = 0)),
        ("period_us", Box::new(|s| s.cpu_max = Some(CpuMax { quota_us: 5000, period_us: 10 }))),
        ("cpu_weight", Box::new(|s| s.cpu_weight = 0)),
        ("io_weight", Box::new(|s| s.io_weight = Some(20_000))),
    ];
    for (field, f) in cases {
        let mut s = spec();
        f(&mut s);
        let err = CgroupSpec::from_json(&s.to_json()).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
    assert!(CgroupSpec::from_json(b"{\"format\":1}").is_err());
    let mut v: serde_json::Value = serde_json::from_slice(&spec().to_json()).unwrap();
    v["surprise"] = 1.into();
    assert!(CgroupSpec::from_json(v.to_string().as_bytes()).is_err(), "unknown fields refused");
}

#[test]
fn layout_detection_from_mount_tables() {
    let hybrid = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                  cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n\
                  cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
    let l = Layout::from_mounts(hybrid).unwrap();
    assert_eq!(l.name(), "hybrid");
    assert_eq!(l.unified_root().unwrap().to_str(), Some("/sys/fs/cgroup/unified"));
    let v2 = Layout::from_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n").unwrap();
    assert_eq!(v2.name(), "v2");
    let v1 = Layout::from_mounts("cgroup /a cgroup rw,cpu,cpuacct 0 0\n").unwrap();
    assert_eq!(v1.name(), "v1");
    assert_eq!(v1.controllers(), vec!["cpu".to_string(), "cpuacct".to_string()]);
    assert!(Layout::from_mounts("proc /proc proc rw 0 0\n").is_none());
}

fn root_layout() -> Option<Layout> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to create cgroups");
        return None;
    }
    match Layout::detect() {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("SKIP: {e}");
            None
        }
    }
}

#[test]
fn real_leaf_limits_membership_usage_and_cleanup() {
    let Some(layout) = root_layout() else { return };
    let mut s = spec();
    s.agent = "cgtest".into();
    let inst = format!("t{}", std::process::id());
    let mut leaf = Leaf::create(&s, &layout, &Placement::Root, &inst).unwrap();
    let paths = leaf.report().paths.clone();
    assert!(!paths.is_empty());
    // The limit really is in the kernel's file.
    match layout.name() {
        "v2" => {
            let d = leaf.unified_dir().unwrap();
            assert_eq!(std::fs::read_to_string(d.join("memory.max")).unwrap().trim(), (512u64 << 20).to_string());
            assert_eq!(std::fs::read_to_string(d.join("pids.max")).unwrap().trim(), "256");
        }
        _ => {
            let mem = paths.iter().find(|p| p.contains("/memory/")).unwrap();
            let got = std::fs::read_to_string(format!("{mem}/memory.limit_in_bytes")).unwrap();
            assert_eq!(got.trim(), (512u64 << 20).to_string());
            let pids = paths.iter().find(|p| p.contains("/pids/")).unwrap();
            assert_eq!(std::fs::read_to_string(format!("{pids}/pids.max")).unwrap().trim(), "256");
            let cpu = paths.iter().find(|p| p.contains("/cpu/")).unwrap();
            assert_eq!(std::fs::read_to_string(format!("{cpu}/cpu.cfs_quota_us")).unwrap().trim(), "150000");
            assert!(leaf.report().partial.iter().any(|p| p.contains("oom.group")));
        }
    }
    if layout.name() == "hybrid" {
        let (p, level) = leaf.unified().unwrap();
        assert_eq!(level, 2);
        assert!(p.ends_with(&format!("cgtest-{inst}")));
    }
    // A sleeping child is moved in, seen as a member, counted, then killed by remove().
    let mut child = std::process::Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let pid = child.id() as i32;
    leaf.add_pid(pid).unwrap();
    leaf.verify_member(pid).unwrap();
    assert_eq!(leaf.procs(), vec![pid]);
    assert!(leaf.verify_member(std::process::id() as i32).is_err(), "the test runner is not a member");
    let u = leaf.usage();
    assert!(u.memory_current.is_some(), "{u:?}");
    leaf.remove().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for p in paths {
        assert!(!std::path::Path::new(&p).exists(), "{p} removed");
    }
}

#[test]
fn dropping_a_leaf_removes_it() {
    let Some(layout) = root_layout() else { return };
    let mut s = spec();
    s.agent = "cgdrop".into();
    let leaf = Leaf::create(&s, &layout, &Placement::Root, &format!("d{}", std::process::id())).unwrap();
    let paths = leaf.report().paths.clone();
    drop(leaf);
    for p in paths {
        assert!(!std::path::Path::new(&p).exists(), "{p} removed on drop");
    }
}

#[test]
fn an_unprivileged_user_without_a_v2_delegation_is_told_the_fix() {
    // v1 controllers are never delegated to users: the refusal says so and what to do.
    let hybrid = Layout::from_mounts(
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n",
    )
    .unwrap();
    let e = hybrid.placement_for(1000, 1, "0::/user.slice\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("uid 1000") && msg.contains("cgroup v1") && msg.contains("best-effort"), "{msg}");
    // On v2, a cgroup this user cannot write (here the hierarchy root) is refused with the
    // exact systemd-run line that gives a delegated scope.
    let v2 = Layout::V2 { root: "/sys/fs/cgroup".into() };
    let e = v2.placement_for(1000, 1, "0::/\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("hierarchy root"), "{msg}");
    assert!(msg.contains("systemd-run --user --scope -p Delegate=yes -- "), "{msg}");
    assert_eq!(aegis_targets::cgroup::delegate::own_path("1:name=x:/a\n0::/user.slice/u@1.service/x.scope\n").as_deref(), Some("user.slice/u@1.service/x.scope"));
}
