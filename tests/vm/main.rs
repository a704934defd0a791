//! The nested-VM matrix (issue 12, "other host shapes, for real"): Debian's own kernels
//! (bookworm's 6.1, Landlock ABI 2; bookworm-security's 6.12, ABI 6) booted under qemu's TCG
//! emulation with this machine's filesystem shared read-only (virtme-ng `--force-9p`), a
//! pure cgroup2 hierarchy shaped like systemd's (controllers enabled down to
//! `user@1000.service`, user-owned delegated scopes, a root-owned login session), and in it
//! `aegis-exec doctor` and the launch/attack subset (`agent.py` under `policies/*.toml`) as
//! root and as uid 1000, with user namespaces allowed and blocked (`guest.sh`).
//!
//! Every result is checked against what must happen on that kernel and host shape
//! ([`expect`]): a launch that must run runs and its attacks fail (limits, Landlock on the old
//! ABI with the mount plan's fallback, the delegated cgroup it used); a launch that must be
//! refused exits 126 and names the fix; `doctor`'s per-bundle verdict and exit status equal
//! what the launch then did. One boot per kernel (TCG boots in ~15-20 s and runs everything
//! in it); the two kernels boot in parallel.
//!
//! Skips with a printed reason where it cannot run: no qemu, virtme-ng, busybox-static or
//! kernel package (`.ci/run` installs them). `AEGIS_VM_KERNELS=6.1` (or `6.12`) limits the
//! kernels; `AEGIS_VNG` points at `vng`; `AEGIS_VM_ACCEL=kvm` uses KVM where it works (this
//! development machine's nested kvm-pvm hangs stock kernels, so TCG is the default).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aegis_tests::{aegisc, bin, repo_root, run, run_for};

/// A kernel of the matrix: which Debian package it comes from, how its version starts, and
/// its Landlock ABI.
struct Kernel {
    name: &'static str,
    package: &'static str,
    prefix: &'static str,
    abi: u32,
}

const KERNELS: [Kernel; 2] = [
    Kernel { name: "6.1", package: "linux-image-amd64 (bookworm)", prefix: "6.1.", abi: 2 },
    Kernel { name: "6.12", package: "linux-image-6.12-amd64 (bookworm-security)", prefix: "6.12.", abi: 6 },
];

/// A scenario: who runs `aegis-exec` where (guest.sh builds each shape), which bundles it
/// tries, and on which kernel (`None`: every kernel).
struct Scenario {
    name: &'static str,
    bundles: &'static [&'static str],
    only_on: Option<&'static str>,
}

/// Every launch costs seconds under TCG, so a scenario runs only on the kernels where its
/// outcome can differ: the Landlock ABI decides the root and delegated-scope scenarios (runs,
/// fallbacks, refusals), both kernels; where the leaf goes for a user in a shared scope or a
/// root-owned session is cgroup2's delegation rules alone, the same on both kernels, so it
/// runs on 6.1 (the guest with fewer agent runs: the two boots finish closer together).
const SCENARIOS: &[Scenario] = &[
    Scenario { name: "root-userns", bundles: &["vm-none", "vm-proxy", "vm-host"], only_on: None },
    Scenario { name: "root-nouserns", bundles: &["vm-none", "vm-landlock-only", "vm-proxy-landlock"], only_on: None },
    Scenario { name: "user-scope-userns", bundles: &["vm-none", "vm-proxy", "vm-host"], only_on: None },
    Scenario { name: "user-scope-nouserns", bundles: &["vm-none", "vm-landlock-only", "vm-proxy-landlock"], only_on: None },
    Scenario { name: "user-terminal-userns", bundles: &["vm-none"], only_on: Some("6.1") },
    Scenario { name: "user-session-userns", bundles: &["vm-none", "vm-cgroup-best-effort"], only_on: Some("6.1") },
];

/// The scenarios that run on kernel `k`.
fn scenarios(k: &Kernel) -> impl Iterator<Item = &'static Scenario> + '_ {
    SCENARIOS.iter().filter(|s| s.only_on.is_none_or(|n| n == k.name))
}

const BUNDLES: &[&str] = &["vm-none", "vm-proxy", "vm-host", "vm-landlock-only", "vm-proxy-landlock", "vm-cgroup-best-effort"];

/// What must happen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// The agent runs; `limits`: the cgroup layer is enforced (else best-effort, reported);
    /// `placement`: where the report says the leaf went; `namespaces`: the agent has them.
    Runs { limits: bool, placement: &'static str, namespaces: bool },
    /// Exit 126; stderr and doctor name the layer and each fix fragment.
    Refused { layer: &'static str, fix: &'static [&'static str] },
}

fn expect(abi: u32, scenario: &str, bundle: &str) -> Expect {
    let user = scenario.starts_with("user-");
    let userns = !scenario.ends_with("-nouserns");
    let placement = match scenario {
        s if s.starts_with("root-") => "as root",
        s if s.starts_with("user-scope") => "delegated own cgroup",
        s if s.starts_with("user-terminal") => "delegated user@UID.service",
        _ => "",
    };
    let runs = Expect::Runs { limits: true, placement, namespaces: userns };
    match (scenario, bundle) {
        (s, "vm-none") if s.starts_with("user-session") => {
            Expect::Refused { layer: "cgroup", fix: &["systemd-run --user --scope -p Delegate=yes -- ", "best-effort"] }
        }
        (s, "vm-cgroup-best-effort") if s.starts_with("user-session") => {
            Expect::Runs { limits: false, placement: "", namespaces: true }
        }
        (_, "vm-none" | "vm-proxy") if !userns => {
            Expect::Refused { layer: "namespaces", fix: &["allow unprivileged user namespaces", "best-effort"] }
        }
        // The proxy on a host port needs Landlock's TCP port rules to stay the only way out.
        (_, "vm-proxy-landlock") if !userns && abi < 4 => Expect::Refused {
            layer: "network",
            fix: &["needs Landlock ABI 4", "allow unprivileged user namespaces", "Linux 6.7+"],
        },
        (_, "vm-landlock-only") if !userns && abi < 6 => Expect::Refused {
            layer: "landlock",
            fix: &["Landlock ABI 6 (Linux 6.12+)", "user namespaces are allowed"],
        },
        // Root's host mode shares the host's network namespace: only Landlock (ABI 6) keeps
        // the agent from the host's abstract UNIX sockets. A user's host-mode agent gets a
        // namespace of its own (the granted endpoints forwarded), so any ABI will do.
        (_, "vm-host") if !user && abi < 6 => Expect::Refused {
            layer: "landlock",
            fix: &["Landlock ABI 6 (Linux 6.12+)", "a network namespace of its own"],
        },
        _ => runs,
    }
}

fn find_kernel(k: &Kernel) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|v| v.starts_with(k.prefix) && v.ends_with("-amd64") && Path::new("/lib/modules").join(v).is_dir())
        .collect();
    found.sort();
    found.pop()
}

fn vng() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AEGIS_VNG") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new("/opt/vng-venv/bin/vng");
    if venv.exists() {
        return Some(venv.to_path_buf());
    }
    aegis_tests::have("vng").then(|| PathBuf::from("vng"))
}

/// Why the matrix cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    if !aegis_tests::have("qemu-system-x86_64") {
        return Some("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into());
    }
    if !Path::new("/bin/busybox").exists() && !Path::new("/usr/bin/busybox").exists() {
        return Some("busybox is not installed (apt-get install busybox-static; virtme-ng needs it)".into());
    }
    if vng().is_none() {
        return Some("virtme-ng is not installed (python3 -m venv /opt/vng-venv && /opt/vng-venv/bin/pip install virtme-ng)".into());
    }
    None
}

/// Builds the matrix's bundles (unsigned: the launches pass `--allow-unsigned`).
fn build_bundles(dir: &Path) {
    for b in BUNDLES {
        let policy = repo_root().join("tests/vm/policies").join(format!("{b}.toml"));
        let r = run(aegisc().arg("build").arg(&policy).arg("-o").arg(dir.join(b)));
        assert_eq!(r.code, 0, "aegisc build {b}: {}", r.stderr);
    }
}

/// Boots `kver` and runs guest.sh with `k`'s scenarios; returns the guest's output.
fn boot(k: &Kernel, kver: &str, bundles: &Path) -> String {
    let guest = repo_root().join("tests/vm/guest.sh");
    let agent = repo_root().join("tests/vm/agent.py");
    let bin_dir = bin("aegis-exec").parent().unwrap().to_path_buf();
    let scenarios: Vec<String> = scenarios(k).map(|s| format!("{}={}", s.name, s.bundles.join(","))).collect();
    let cmd = format!(
        "bash {} {} {} {} {}",
        guest.display(),
        bin_dir.display(),
        bundles.display(),
        agent.display(),
        scenarios.join(" ")
    );
    let qemu = match std::env::var("AEGIS_VM_ACCEL").as_deref() {
        Ok("kvm") => "-cpu host,-arch-capabilities",
        _ => "-machine accel=tcg -cpu max",
    };
    let vng = vng().unwrap();
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(dir) = vng.parent().filter(|d| !d.as_os_str().is_empty()) {
        path = format!("{}:{path}", dir.display());
    }
    let start = Instant::now();
    // Generous: TCG on a loaded 2-core machine is slow; a hung guest still fails.
    let r = run_for(
        Command::new(&vng)
            .current_dir("/")
            .env("PATH", path)
            .args(["--run", kver, "--force-9p", "--memory", "1G", "--cpus", "2"])
            .arg(format!("--qemu-opts={qemu}"))
            .arg("--exec")
            .arg(&cmd),
        Duration::from_secs(30 * 60),
    );
    eprintln!("{kver} guest: exit {} after {:?}", r.code, start.elapsed());
    assert!(r.stdout.contains("AEGISVM|info|done|"), "the {kver} guest did not finish (exit {}):\n{}\n{}", r.code, r.stdout, r.stderr);
    r.stdout
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len() / 2).filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A result line of the guest.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// (scenario, bundle or `*`, `doctor` or `launch`) → what happened.
type Results = BTreeMap<(String, String, String), Outcome>;

/// The guest's results and its info lines.
fn parse(out: &str) -> (Results, BTreeMap<String, String>) {
    let mut results = BTreeMap::new();
    let mut info = BTreeMap::new();
    for line in out.lines() {
        // The console adds escapes and NULs around the guest's lines.
        let Some(i) = line.find("AEGISVM|") else { continue };
        let line: String = line.get(i + 8..).unwrap_or_default().chars().filter(|c| !c.is_control()).collect();
        let f: Vec<&str> = line.split('|').collect();
        match f.as_slice() {
            ["info", k, v] => {
                info.insert((*k).to_string(), (*v).to_string());
            }
            [s, b, kind, code, rest @ ..] => {
                let o = Outcome {
                    code: code.parse().unwrap_or(-1),
                    stdout: rest.first().map(|h| unhex(h)).unwrap_or_default(),
                    stderr: rest.get(1).map(|h| unhex(h)).unwrap_or_default(),
                };
                results.insert(((*s).to_string(), (*b).to_string(), (*kind).to_string()), o);
            }
            _ => {}
        }
    }
    (results, info)
}

/// The agent's probe results (agent.py's JSON line).
fn probes(stdout: &str) -> Option<serde_json::Value> {
    stdout.lines().rev().find_map(|l| serde_json::from_str(l.trim()).ok())
}

/// Checks one kernel's results; returns every failure (so one run shows them all).
fn check(k: &Kernel, results: &Results) -> Vec<String> {
    let mut bad = Vec::new();
    let mut fail = |s: &str, b: &str, what: String| bad.push(format!("[{} {s} {b}] {what}", k.name));
    for Scenario { name: scenario, bundles, .. } in scenarios(k) {
        let key = |b: &str, kind: &str| (scenario.to_string(), b.to_string(), kind.to_string());
        let Some(doctor) = results.get(&key("*", "doctor")) else {
            fail(scenario, "*", "no doctor result".into());
            continue;
        };
        let any_refused = bundles.iter().any(|b| matches!(expect(k.abi, scenario, b), Expect::Refused { .. }));
        let want_code = if any_refused { 126 } else { 0 };
        if doctor.code != want_code {
            fail(scenario, "*", format!("doctor exit {} (want {want_code}):\n{}", doctor.code, doctor.stdout));
        }
        for b in *bundles {
            let e = expect(k.abi, scenario, b);
            let verdict = doctor.stdout.lines().find(|l| l.contains(&format!("/{b}: "))).unwrap_or_default();
            let Some(l) = results.get(&key(b, "launch")) else {
                fail(scenario, b, "no launch result".into());
                continue;
            };
            let ran = l.code != 126 && l.code != 125 && l.code != 127;
            // doctor's verdict equals what the launch did.
            if verdict.contains(": can run") != ran {
                fail(scenario, b, format!("doctor says {verdict:?} but the launch exited {}: {}", l.code, l.stderr));
            }
            match e {
                Expect::Refused { layer, fix } => {
                    if l.code != 126 {
                        fail(scenario, b, format!("launch exit {} (want 126): {}\n{}", l.code, l.stderr, l.stdout));
                    }
                    for want in std::iter::once(&layer).chain(fix.iter()) {
                        if !l.stderr.contains(want) {
                            fail(scenario, b, format!("the refusal does not name {want:?}: {}", l.stderr));
                        }
                        if !verdict.contains(want) {
                            fail(scenario, b, format!("doctor's verdict does not name {want:?}: {verdict}"));
                        }
                    }
                }
                Expect::Runs { limits, placement, namespaces } => {
                    if l.code != 0 {
                        fail(scenario, b, format!("launch exit {} (want 0): {}", l.code, l.stderr));
                        continue;
                    }
                    let Some(p) = probes(&l.stdout) else {
                        fail(scenario, b, format!("no probe output: {}", l.stdout));
                        continue;
                    };
                    let get = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
                    for (probe, allowed) in [
                        ("read_data", true),
                        ("write_work", true),
                        ("rename_across", true),
                        ("read_secret", false),
                        ("read_shadow", false),
                        ("write_data", false),
                        ("write_usr", false),
                        ("truncate_data", false),
                    ] {
                        if (get(probe) == "ok") != allowed {
                            fail(scenario, b, format!("{probe} = {} (want {})", get(probe), if allowed { "ok" } else { "denied" }));
                        }
                    }
                    // Egress: only vm-host's grant is reachable, through its filter or its
                    // forward; a proxy answers for the proxy bundles, on a host port without
                    // user namespaces (where seccomp refuses other Internet sockets).
                    if (get("tcp_granted") == "ok") != (*b == "vm-host") {
                        fail(scenario, b, format!("tcp to the granted 127.0.0.1:47801 = {}", get("tcp_granted")));
                    }
                    if get("tcp_other") == "ok" {
                        fail(scenario, b, "tcp to 127.0.0.1:47802, granted to no one, connected".into());
                    }
                    let want_proxy = if b.starts_with("vm-proxy") { "http 403" } else { "no proxy" };
                    if get("proxy") != want_proxy {
                        fail(scenario, b, format!("proxy probe = {} (want {want_proxy})", get("proxy")));
                    }
                    if *b == "vm-proxy-landlock" && !namespaces && get("udp_socket") == "ok" {
                        fail(scenario, b, "a UDP socket was created beside the host-port proxy".into());
                    }
                    let uid = p.get("uid").and_then(|v| v.as_u64()).unwrap_or(u64::MAX);
                    let want_uid = if scenario.starts_with("user-") { 1000 } else { 65534 };
                    if uid != want_uid {
                        fail(scenario, b, format!("the agent ran as uid {uid} (want {want_uid})"));
                    }
                    let refused = p.get("forks_refused_of_40").and_then(|v| v.as_u64()).unwrap_or(0);
                    let report = |layer: &str| l.stderr.lines().find(|x| x.trim_start().starts_with(layer)).unwrap_or_default().to_string();
                    if limits {
                        if refused == 0 {
                            fail(scenario, b, "pids.max 24 did not refuse any of 40 forks".into());
                        }
                        let cg = report("cgroup");
                        if !cg.contains("fully enforced") || !cg.contains(placement) {
                            fail(scenario, b, format!("cgroup report {cg:?} (want fully enforced, {placement})"));
                        }
                    } else {
                        let cg = report("cgroup");
                        if !cg.contains("not enforced") || !cg.contains("systemd-run --user --scope -p Delegate=yes") {
                            fail(scenario, b, format!("cgroup report {cg:?} (want not enforced, naming the fix)"));
                        }
                    }
                    let ns = report("namespaces");
                    if namespaces == ns.contains("not enforced") {
                        fail(scenario, b, format!("namespaces report {ns:?} (want namespaces: {namespaces})"));
                    }
                    // Landlock on the old ABI: truncate is the mount plan's (with namespaces).
                    let ll = report("landlock");
                    if k.abi < 3 && namespaces && !ll.contains("`truncate` (V3): enforced by the mount plan") {
                        fail(scenario, b, format!("landlock report {ll:?} does not say the mount plan enforces truncate"));
                    }
                    if !ll.contains("fully enforced") {
                        fail(scenario, b, format!("landlock report {ll:?}"));
                    }
                }
            }
        }
    }
    bad
}

fn matrix(k: &Kernel) {
    if let Ok(only) = std::env::var("AEGIS_VM_KERNELS")
        && !only.split(',').any(|n| n.trim() == k.name)
    {
        eprintln!("SKIP: kernel {} not in AEGIS_VM_KERNELS={only}", k.name);
        return;
    }
    if let Some(why) = missing_tools() {
        eprintln!("SKIP: the nested-VM matrix cannot run here: {why}");
        return;
    }
    let Some(kver) = find_kernel(k) else {
        eprintln!("SKIP: no /boot/vmlinuz-{}*-amd64 with modules (apt-get install {})", k.prefix, k.package);
        return;
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-{}", k.name));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    build_bundles(&dir);
    let out = boot(k, &kver, &dir);
    // Kept for reading after a failure (every result line, hex-encoded output included).
    let _ = std::fs::write(dir.join("guest.log"), &out);
    let (results, info) = parse(&out);
    assert_eq!(info.get("kernel").map(String::as_str), Some(kver.as_str()), "the guest runs the kernel asked for");
    // Where the guest's time went (guest clock, seconds): what to cut when CI grows slow.
    let times: Vec<String> = info.iter().filter_map(|(key, v)| Some(format!("{}={v}", key.strip_prefix("t:")?))).collect();
    eprintln!("{} guest timings (s): {}", k.name, times.join(" "));
    let bad = check(k, &results);
    assert!(bad.is_empty(), "{} of the {} matrix failed:\n{}", bad.len(), k.name, bad.join("\n"));
}

/// Debian 12's stock kernel: Landlock ABI 2.
#[test]
fn debian_6_1_landlock_abi_2() {
    matrix(&KERNELS[0]);
}

/// bookworm-security's 6.12: Landlock ABI 6.
#[test]
fn debian_6_12_landlock_abi_6() {
    matrix(&KERNELS[1]);
}
