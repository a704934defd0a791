//! `aegis-exec doctor [BUNDLE_DIR...]`: what *this user* can have on this host, found by
//! trying it, and whether each bundle given can run here.
//!
//! Input: the calling process's identity and host (nothing is configured), and bundle
//! directories. Probes, each the real operation a launch performs, in a child or undone
//! afterwards: user + mount + pid + network namespaces are created, the id maps written and
//! a mount made inside (an AppArmor-restricted user namespace fails there, not at
//! `unshare`); the Landlock ABI is asked from the kernel; seccomp's actions are read from
//! the kernel; a cgroup leaf is created where the launch would make it (as root under the
//! hierarchy root, as a user in their delegated subtree: see
//! `aegis_targets::cgroup::delegate`), a process moved in and its membership verified; `nft`
//! lists tables where the launch would load one (root: the host's network namespace; a
//! user: a user + network namespace of their own).
//!
//! Output: one line per feature on stdout, then per bundle `<agent>: can run` (with notes:
//! what an older kernel costs, credentials a proxy needs) or `<agent>: cannot run: <what is
//! missing and the fix>`. The per-bundle verdict calls the launch's own functions on the
//! probed host wherever they decide from the bundle and the host alone ([`verdict`]); the
//! nested-VM matrix (`tests/vm/`) checks it equals what the launch then does. Exit status:
//! 0 when every bundle can run (or none was given), else the highest code a launch would
//! exit with (126 a layer unavailable, 125 a bundle refused or unreadable).

use std::ffi::CString;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_targets::bundle::{self, NetworkMode, TrustPolicy};
use aegis_targets::cgroup::{CgroupSpec, Layout, Leaf, Placement};
use aegis_targets::landlock::{Abi, InForce, LandlockArtifact, compat};

use crate::exit::{EXIT_REFUSED, RunError};
use crate::stage::nftables::HostMode;
use crate::stage::verify::{Provenance, Verified};
use crate::stage::{self, Instance};

/// What the host gives this user.
#[derive(Debug)]
pub struct HostReport {
    pub euid: u32,
    pub landlock_abi: Abi,
    pub seccomp: bool,
    pub seccomp_user_notif: bool,
    pub seccomp_log: bool,
    /// User, mount, pid and network namespaces created, id maps written, a mount made.
    pub namespaces: Result<(), String>,
    pub cgroup_layout: Option<Layout>,
    /// Where a leaf goes and the probe's outcome; `Err`: why there is none (with the fix).
    pub cgroup: Result<String, String>,
    pub nft_binary: Option<PathBuf>,
    /// `nft` lists tables where the launch would load one.
    pub nft: Result<(), String>,
}


/// The id-map writes a process makes for the user namespace it just unshared: (file,
/// contents), setgroups first (from inside, even root has no CAP_SETGID in the parent).
fn id_maps(euid: u32, egid: u32) -> Vec<(CString, Vec<u8>)> {
    let mut v = Vec::new();
    v.extend(CString::new("/proc/self/setgroups").ok().map(|p| (p, b"deny".to_vec())));
    v.extend(CString::new("/proc/self/uid_map").ok().map(|p| (p, format!("0 {euid} 1").into_bytes())));
    v.extend(CString::new("/proc/self/gid_map").ok().map(|p| (p, format!("0 {egid} 1").into_bytes())));
    v
}

/// Writes prepared id maps with raw calls (safe after fork). `Err(step)` on failure.
fn write_maps(maps: &[(CString, Vec<u8>)]) -> Result<(), usize> {
    for (i, (path, bytes)) in maps.iter().enumerate() {
        // SAFETY: open/write/close of a NUL-terminated path with a live buffer.
        let ok = unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            let ok = fd >= 0 && libc::write(fd, bytes.as_ptr().cast(), bytes.len()) == bytes.len() as isize;
            if fd >= 0 {
                libc::close(fd);
            }
            ok
        };
        if !ok {
            return Err(i);
        }
    }
    Ok(())
}

/// Creates user, mount, pid and network namespaces in a child, writes its id maps and
/// makes its mount tree private (the launch's first mount): what a launch needs of them.
fn probe_namespaces(euid: u32, egid: u32) -> Result<(), String> {
    if std::env::var_os("AEGIS_EXEC_TEST_NO_USERNS").is_some() {
        return Err("AEGIS_EXEC_TEST_NO_USERNS is set (the launch behaves as if user namespaces were blocked)".into());
    }
    let maps = id_maps(euid, egid);
    let steps = ["unshare(CLONE_NEWUSER|NEWNS|NEWPID|NEWNET)", "writing /proc/self/setgroups", "writing the uid map", "writing the gid map", "mount(\"/\", MS_REC|MS_PRIVATE) inside"];
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 into our array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    let [r, w] = fds;
    // SAFETY: fork in a single-threaded process; the child makes raw calls only and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let fail = |step: u32, e: i32| -> ! {
            let msg = [step.to_ne_bytes(), (e as u32).to_ne_bytes()].concat();
            // SAFETY: write to our pipe, then leave without running destructors.
            unsafe {
                libc::write(w, msg.as_ptr().cast(), msg.len());
                libc::_exit(1)
            }
        };
        // SAFETY: unshare with constant flags.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET) } != 0 {
            fail(0, crate::errno::last());
        }
        if let Err(i) = write_maps(&maps) {
            fail(i as u32 + 1, crate::errno::last());
        }
        // SAFETY: mount(2) with literals and null data.
        if unsafe { libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) } != 0 {
            fail(4, crate::errno::last());
        }
        // SAFETY: leave the child.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(w) };
    let mut buf = [0u8; 8];
    // SAFETY: reading into our buffer from our pipe.
    let n = unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing our fd, reaping our child.
    unsafe {
        libc::close(r);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    if n != 8 {
        return Ok(());
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let e = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) as i32;
    Err(format!(
        "{} failed: {}{}",
        steps.get(step).unwrap_or(&"namespace setup"),
        std::io::Error::from_raw_os_error(e),
        if step == 0 {
            " (unprivileged user namespaces blocked: user.max_user_namespaces=0, kernel.unprivileged_userns_clone=0, or a container's seccomp profile)"
        } else if step == 4 {
            " (the user namespace has no capabilities: an AppArmor restriction such as Ubuntu's kernel.apparmor_restrict_unprivileged_userns)"
        } else {
            ""
        }
    ))
}

/// `nft list tables` where a launch would load its table: the host's network namespace for
/// root; for a user, a user + network namespace of their own (where the user's namespace
/// owns the network namespace, as for the agent's).
fn probe_nft(bin: &Path, euid: u32, egid: u32, namespaces: bool) -> Result<(), String> {
    let mut cmd = Command::new(bin);
    cmd.args(["list", "tables"]).env_clear();
    if euid != 0 {
        if !namespaces {
            return Err("a user can load nftables only in a network namespace of their own (user namespaces unavailable)".into());
        }
        let maps = id_maps(euid, egid);
        // SAFETY: the closure makes raw calls only (unshare, open/write/close of prepared
        // buffers) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                write_maps(&maps).map_err(|_| std::io::Error::last_os_error())
            });
        }
    }
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("{}: {e}", bin.display())),
    }
}

/// Creates a leaf where the launch would, moves a child process in, verifies it is a member,
/// and removes the leaf (killing the child): the launch's cgroup stage, for real.
fn probe_cgroup(layout: &Layout, placement: &Placement) -> Result<String, String> {
    let spec = CgroupSpec {
        format: aegis_targets::cgroup::FORMAT_VERSION,
        agent: "doctor".into(),
        memory_max: 64 << 20,
        memory_swap_max: 0,
        memory_oom_group: true,
        pids_max: 8,
        cpu_max: None,
        cpu_weight: 100,
        io_weight: None,
        wall_time_ms: None,
    };
    let mut leaf = Leaf::create(&spec, layout, placement, &Instance::new().id()).map_err(|e| e.to_string())?;
    // SAFETY: fork; the child only waits to be killed.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        loop {
            // SAFETY: pause(2) has no preconditions.
            unsafe { libc::pause() };
        }
    }
    let moved = leaf.add_pid(pid).and_then(|()| leaf.verify_member(pid));
    let removed = leaf.remove();
    // SAFETY: kill and reap our own child (remove() killed it already when it worked).
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    moved.map_err(|e| e.to_string())?;
    removed.map_err(|e| e.to_string())?;
    let r = leaf.report();
    Ok(format!(
        "{}; limits {}; a process moved in and verified",
        r.placement,
        r.settings.iter().map(|s| s.file.as_str()).collect::<Vec<_>>().join(",")
    ))
}

pub fn probe() -> HostReport {
    // SAFETY: getters without preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    let namespaces = probe_namespaces(euid, egid);
    let layout = Layout::detect().ok();
    let cgroup = match &layout {
        None => Err("no cgroup filesystem is mounted".to_string()),
        Some(l) => match l.placement() {
            Ok(p) => probe_cgroup(l, &p),
            Err(e) => Err(e.to_string()),
        },
    };
    let found = aegis_targets::nftables::nft_binary();
    let nft = match &found {
        Ok(b) => probe_nft(b, euid, egid, namespaces.is_ok()),
        Err(e) => Err(e.to_string()),
    };
    let nft_binary = found.ok();
    HostReport {
        euid,
        landlock_abi: aegis_targets::landlock::kernel_abi(),
        // SAFETY: prctl with integer arguments.
        seccomp: unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0,
        seccomp_user_notif: actions.split_whitespace().any(|a| a == "user_notif"),
        seccomp_log: actions.split_whitespace().any(|a| a == "log"),
        namespaces,
        cgroup_layout: layout,
        cgroup,
        nft_binary,
        nft,
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn render(r: &HostReport) -> String {
    let mut t = format!(
        "aegis-exec doctor (uid {}{})\n",
        r.euid,
        if r.euid == 0 { ", root" } else { "" }
    );
    match r.landlock_abi.0 {
        0 => t.push_str("landlock        unavailable\n"),
        abi => {
            let _ = writeln!(t, "landlock        ABI {abi}");
            for c in compat::costs(r.landlock_abi) {
                let _ = writeln!(t, "                lacks {c}");
            }
        }
    }
    let _ = writeln!(
        t,
        "seccomp         {} (user notification: {}, log action: {})",
        if r.seccomp { "filter mode available" } else { "unavailable" },
        yes(r.seccomp_user_notif),
        yes(r.seccomp_log)
    );
    let _ = writeln!(
        t,
        "user namespaces {}",
        match &r.namespaces {
            Ok(()) => "yes (user, mount, pid, net created, id maps written, a mount made inside)".to_string(),
            Err(e) => format!("no: {e}"),
        }
    );
    let layout = r.cgroup_layout.as_ref();
    let _ = writeln!(
        t,
        "cgroup          {} ({})",
        layout.map(Layout::name).unwrap_or("none"),
        match &r.cgroup {
            Ok(d) => format!("controllers {}; {d}", layout.map(|l| l.controllers().join(",")).unwrap_or_default()),
            Err(e) => format!("no writable cgroup: {e}"),
        }
    );
    let _ = writeln!(
        t,
        "nftables        binary: {}; kernel: {}",
        r.nft_binary.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "missing".into()),
        match &r.nft {
            Ok(()) if r.euid == 0 => "nf_tables usable".to_string(),
            Ok(()) => "nf_tables usable in a network namespace of this user's own".to_string(),
            Err(e) => format!("not usable: {e}"),
        }
    );
    t
}

/// Whether a bundle can run here: what would refuse its launch (in the launch's order: the
/// first is the one it exits with) and what it runs without.
pub struct Verdict {
    pub agent: String,
    pub missing: Vec<RunError>,
    pub notes: Vec<String>,
}

/// The launch's rules applied to the probed host: the launch's own functions where they
/// decide from the bundle and the host alone (the network's enforcement, the refusals
/// without user namespaces, the mount plan), the probes where the launch would try
/// (cgroup leaf, nft, namespaces), and the Landlock ABI with the layers this host gives.
pub fn verdict(dir: &Path, host: &HostReport) -> Result<Verdict, String> {
    let vb = bundle::verify(dir, &TrustPolicy::unsigned_ok()).map_err(|e| e.to_string())?;
    // What the launch's stages read (no parameters or command: no rule below needs them).
    let v = Verified {
        dir: vb.dir().to_path_buf(),
        manifest: vb.manifest().clone(),
        files: vb.files().clone(),
        bundle_sha256: vb.manifest_sha256().to_string(),
        provenance: Provenance::UnsignedAllowed,
        params: Default::default(),
        command: Vec::new(),
    };
    let m = &v.manifest;
    let ns = host.namespaces.is_ok();
    let ns_why = host.namespaces.as_ref().err().cloned().unwrap_or_default();
    let proxy = m.network_mode == NetworkMode::Proxy;
    let mut missing = Vec::new();
    let mut notes = Vec::new();

    // stage::cgroup (the launch's first host-dependent step): the probe made a real leaf
    // where the launch would.
    if v.file(aegis_targets::bundle::contract::CGROUP).is_some() && !m.kernel.cgroup_versions.is_empty() {
        match (&host.cgroup, v.required("cgroup")) {
            (Err(e), true) => missing.push(RunError::Unavailable { layer: "cgroup", why: e.clone() }),
            (Err(e), false) => notes.push(format!("cgroup best-effort, runs without limits: {e}")),
            (Ok(_), _) => {}
        }
    }

    // stage::nftables::prepare: how host mode is enforced for this launcher (the host's
    // namespace for root with a cgroup2 tree; else the granted endpoints forwarded from the
    // agent's own, refused for grants that cannot be forwarded one by one).
    let host_mode = HostMode::decide(host.euid == 0, host.cgroup_layout.as_ref());
    let shared = m.network_mode == NetworkMode::Host && host_mode == HostMode::Cgroup;
    let forwarded = match stage::nftables::prepare(&v, &Instance::new(), host_mode) {
        Ok(p) => p.and_then(|p| p.forwarded),
        Err(e) => {
            missing.push(e);
            None
        }
    };

    // stage::landlock::prepare: refused before anything exists where no launch could run
    // (every compensating layer in force), or below the bundle's min_landlock_abi; the
    // artifact is read again for the child's check below.
    let landlock = v
        .file(stage::landlock::FILE)
        .map(|bytes| {
            let text = std::str::from_utf8(bytes).map_err(|_| "landlock.json is not UTF-8".to_string())?;
            LandlockArtifact::from_json(text).map_err(|e| e.to_string())
        })
        .transpose()?;
    let kernel = host.landlock_abi;
    let floor_refused = match stage::landlock::prepare(&v) {
        Ok(_) => false,
        Err(e) => {
            missing.push(e);
            true
        }
    };

    // stage::seccomp
    if m.kernel.seccomp && v.required("seccomp") && !host.seccomp {
        missing.push(RunError::Unavailable { layer: "seccomp", why: "seccomp filter mode unavailable".into() });
    }

    // Without user namespaces the launch goes on without any namespace, or refuses
    // (launch::refusal_without_user_namespaces, then stage::mounts without a mount namespace).
    if !ns {
        match crate::launch::refusal_without_user_namespaces(&v, &ns_why, (proxy, shared, forwarded.as_ref()), kernel) {
            Err(e) => missing.push(e),
            Ok(()) => {
                if let Err(e) = stage::mounts::prepare(&v, false) {
                    missing.push(e);
                }
                notes.push(format!("without user namespaces ({ns_why}): Landlock + seccomp + cgroup only, the run's own /tmp"));
                if proxy {
                    notes.push("the proxy listens on a host loopback port, Landlock's only TCP destination (told apart by port, not address)".into());
                } else if !shared && v.file(stage::nftables::FILE).is_some() {
                    notes.push("no network namespace: the agent has the host's network UNFILTERED (nftables best-effort)".into());
                }
            }
        }
    }

    // stage::nftables, the load: into the host's namespace (shared host mode) or the
    // agent's own (with user namespaces); the probe listed tables there.
    if m.kernel.nftables
        && v.file(stage::nftables::FILE).is_some()
        && (shared || ns)
        && let Err(e) = &host.nft
    {
        if v.required("nftables") {
            missing.push(RunError::Unavailable { layer: "nftables", why: e.clone() });
        } else {
            notes.push(format!("nftables best-effort, network unfiltered: {e}"));
        }
    }

    // stage::landlock in the child: the ABI this launch needs with the layers it got.
    if let Some(mut art) = landlock
        && !floor_refused
    {
        if proxy && !ns {
            // What the launch adds for the proxy on a host port (any port: same rights).
            art.only_tcp_to(0);
        }
        let in_force = InForce {
            pid_namespace: ns,
            network_namespace: ns && !shared,
            mount_plan: ns && v.file(stage::mounts::FILE).is_some(),
        };
        let needed = art.needed_abi(in_force);
        if v.required("landlock") && kernel < needed {
            missing.push(RunError::Unavailable {
                layer: "landlock",
                why: compat::refusal(kernel, needed, &art.missing(kernel, in_force), in_force),
            });
        } else {
            notes.extend(art.missing(kernel, in_force).iter().map(|mi| format!("Landlock ABI {} lacks {}", kernel.0, mi.describe())));
        }
    }

    // Proxy mode: the credentials the proxy injects must be there at launch (a missing one
    // refuses it). Say where each comes from and whether it is present now.
    if proxy
        && let Some(ir) = v.file(aegis_targets::bundle::contract::POLICY_IR)
        && let Ok(policy) = aegis_policy::ir::Checked::from_json(ir)
    {
        for api in policy.apis.values() {
            match api.credential.as_ref().map(|c| &c.source) {
                Some(aegis_policy::ir::SecretSource::Env(var)) => notes.push(format!(
                    "api '{}' needs ${var} in aegis-exec's environment ({})",
                    api.name,
                    if std::env::var_os(var).is_some() { "set now" } else { "NOT set now" }
                )),
                Some(aegis_policy::ir::SecretSource::File(path)) => notes.push(format!(
                    "api '{}' needs the credential file {path} ({})",
                    api.name,
                    if Path::new(path).is_file() { "present" } else { "MISSING" }
                )),
                None => {}
            }
        }
    }
    Ok(Verdict {
        agent: m.agent.clone(),
        missing,
        notes,
    })
}

pub fn run(bundles: &[String]) -> i32 {
    let host = probe();
    print!("{}", render(&host));
    let mut code = 0;
    for d in bundles {
        match verdict(Path::new(d), &host) {
            Ok(v) => match v.missing.first() {
                None => {
                    let notes = if v.notes.is_empty() { String::new() } else { format!("; {}", v.notes.join("; ")) };
                    println!("bundle {d}: {}: can run{notes}", v.agent);
                }
                Some(first) => {
                    let all: Vec<String> = v.missing.iter().map(RunError::to_string).collect();
                    println!("bundle {d}: {}: cannot run: {}", v.agent, all.join("; "));
                    // What its launch would exit with (its first refusal).
                    code = code.max(first.exit_code());
                }
            },
            Err(e) => {
                println!("bundle {d}: cannot be read: {e}");
                code = code.max(EXIT_REFUSED);
            }
        }
    }
    code
}
