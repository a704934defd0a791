//! `aegis-exec doctor [BUNDLE_DIR...]`: what this host supports, probed for real (a child
//! tries `unshare(CLONE_NEWUSER)`, the Landlock ABI is asked from the kernel, `nft` is run),
//! and for each bundle directory given, whether its required layers can run here.
//! Output: one line per feature on stdout; exit 0 (a report, not a verdict), or 125 when a
//! given bundle cannot be read.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use aegis_targets::bundle::{self, Enforcement};
use aegis_targets::cgroup::Layout;

const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// What the host offers.
#[derive(Debug, Clone)]
pub struct HostReport {
    pub landlock_abi: Option<u32>,
    pub seccomp: bool,
    pub seccomp_user_notif: bool,
    pub seccomp_log: bool,
    pub user_namespaces: Result<(), String>,
    pub cgroup_layout: Option<String>,
    pub cgroup_detail: String,
    pub nft_binary: Option<String>,
    pub nft_kernel: Result<(), String>,
}

pub fn landlock_abi() -> Option<u32> {
    // SAFETY: landlock_create_ruleset(NULL, 0, VERSION) only returns the ABI number.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (r > 0).then_some(r as u32)
}

fn probe_userns() -> Result<(), String> {
    // SAFETY: fork in a process that runs no other threads at this point; the child only
    // calls unshare and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            let r = libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET);
            libc::_exit(if r == 0 { 0 } else { crate::child::last_errno().clamp(1, 255) });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        e => Err(format!("unshare(CLONE_NEWUSER|NEWNS|NEWPID|NEWNET) failed: {}", std::io::Error::from_raw_os_error(e))),
    }
}

pub fn probe() -> HostReport {
    let mut r = HostReport {
        landlock_abi: landlock_abi(),
        seccomp: false,
        seccomp_user_notif: false,
        seccomp_log: false,
        user_namespaces: Ok(()),
        cgroup_layout: None,
        cgroup_detail: String::new(),
        nft_binary: None,
        nft_kernel: Ok(()),
    };
    // SAFETY: prctl with integer arguments.
    r.seccomp = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } >= 0;
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default();
    r.seccomp_user_notif = actions.split_whitespace().any(|a| a == "user_notif");
    r.seccomp_log = actions.split_whitespace().any(|a| a == "log");
    r.user_namespaces = probe_userns();
    match Layout::detect() {
        Ok(l) => {
            // SAFETY: geteuid has no preconditions.
            let root = unsafe { libc::geteuid() } == 0;
            let deleg = if root {
                "running as root: leaves under <hierarchy>/aegis/".to_string()
            } else {
                let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                let own = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("?").to_string();
                format!("not root: needs a delegated cgroup (e.g. systemd-run --user -p Delegate=yes); own cgroup2 path {own}")
            };
            r.cgroup_detail = format!("controllers {}; {deleg}", l.controllers().join(","));
            if let Some(u) = l.unified_root() {
                r.cgroup_detail.push_str(&format!("; cgroup2 at {} (nftables socket matching possible)", u.display()));
            }
            r.cgroup_layout = Some(l.name().to_string());
        }
        Err(e) => r.cgroup_detail = e.to_string(),
    }
    r.nft_binary = Command::new("nft")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    r.nft_kernel = match Command::new("nft").args(["list", "tables"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("nft: {e}")),
    };
    r
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn render(r: &HostReport) -> String {
    let mut t = String::from("aegis-exec doctor\n");
    let _ = writeln!(
        t,
        "landlock        {}",
        r.landlock_abi.map(|a| format!("ABI {a}")).unwrap_or_else(|| "unavailable".into())
    );
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
        match &r.user_namespaces {
            Ok(()) => "yes (user, mount, pid, net unshared in a probe child)".to_string(),
            Err(e) => format!("no: {e}"),
        }
    );
    let _ = writeln!(t, "cgroup          {} ({})", r.cgroup_layout.as_deref().unwrap_or("none"), r.cgroup_detail);
    let _ = writeln!(
        t,
        "nftables        binary: {}; kernel: {}",
        r.nft_binary.as_deref().unwrap_or("missing"),
        match &r.nft_kernel {
            Ok(()) => "nf_tables usable".to_string(),
            Err(e) => format!("not usable: {e}"),
        }
    );
    t
}

/// Whether `dir`'s bundle could run here, with reasons when not.
pub fn bundle_verdict(dir: &Path, host: &HostReport) -> Result<String, String> {
    let b = bundle::Bundle::open(dir).map_err(|e| e.to_string())?;
    let _ = b;
    let manifest_bytes = std::fs::read(dir.join(bundle::MANIFEST_FILE)).map_err(|e| e.to_string())?;
    let m = bundle::Manifest::from_bytes(&manifest_bytes).map_err(|e| e.to_string())?;
    let required = |layer: &str| m.enforcement.get(layer) != Some(&Enforcement::BestEffort);
    let mut missing = Vec::new();
    if let Some(abi) = m.kernel.landlock_abi
        && required("landlock")
    {
        match host.landlock_abi {
            Some(h) if h >= abi => {}
            Some(h) => missing.push(format!("Landlock ABI {abi} needed, host has {h}")),
            None => missing.push("Landlock unavailable".into()),
        }
    }
    if m.kernel.seccomp && required("seccomp") && !host.seccomp {
        missing.push("seccomp unavailable".to_string());
    }
    if !m.kernel.namespaces.is_empty() && required("namespaces") && host.user_namespaces.is_err() {
        missing.push("user namespaces unavailable".into());
    }
    if m.kernel.nftables && required("nftables") && (host.nft_binary.is_none() || host.nft_kernel.is_err()) {
        missing.push("nftables unavailable".into());
    }
    if m.network_mode == bundle::NetworkMode::Host
        && required("nftables")
        && !matches!(host.cgroup_layout.as_deref(), Some("v2" | "hybrid"))
    {
        missing.push("host network mode needs a cgroup2 tree for socket matching".into());
    }
    if !m.kernel.cgroup_versions.is_empty() && required("cgroup") && host.cgroup_layout.is_none() {
        missing.push("no cgroup filesystem".into());
    }
    if m.network_mode == bundle::NetworkMode::Proxy && host.user_namespaces.is_err() {
        // The proxy is the only route out only inside the agent's own network namespace.
        missing.push("network mode proxy needs a network namespace (user namespaces unavailable)".into());
    }
    // Proxy mode: the credentials the proxy injects must be there at launch (a missing one
    // refuses it). Say where each comes from and whether it is present now.
    let mut needs = Vec::new();
    if m.network_mode == bundle::NetworkMode::Proxy
        && let Ok(ir) = std::fs::read(dir.join("policy.ir.json"))
        && let Ok(policy) = serde_json::from_slice::<aegis_compiler::ir::Policy>(&ir)
    {
        for api in policy.apis.values() {
            match api.credential.as_ref().map(|c| &c.source) {
                Some(aegis_compiler::ir::SecretSource::Env(var)) => needs.push(format!(
                    "api '{}' needs ${var} in aegis-exec's environment ({})",
                    api.name,
                    if std::env::var_os(var).is_some() { "set now" } else { "NOT set now" }
                )),
                Some(aegis_compiler::ir::SecretSource::File(path)) => needs.push(format!(
                    "api '{}' needs the credential file {path} ({})",
                    api.name,
                    if Path::new(path).is_file() { "present" } else { "MISSING" }
                )),
                None => {}
            }
        }
    }
    if missing.is_empty() {
        if needs.is_empty() {
            Ok(format!("{}: can run", m.agent))
        } else {
            Ok(format!("{}: can run; {}", m.agent, needs.join("; ")))
        }
    } else {
        Err(format!("{}: cannot run: {}", m.agent, missing.join("; ")))
    }
}

pub fn run(bundles: &[String]) -> i32 {
    let host = probe();
    print!("{}", render(&host));
    let mut code = 0;
    for d in bundles {
        match bundle_verdict(Path::new(d), &host) {
            Ok(s) => println!("bundle {d}: {s}"),
            Err(s) => {
                println!("bundle {d}: {s}");
                if !Path::new(d).is_dir() {
                    code = crate::exit::EXIT_REFUSED;
                }
            }
        }
    }
    code
}
