//! Stage 8, Landlock.
//!
//! Input: the bundle's `landlock.json` (decoded and validated by the supervisor), the launch
//! parameters, and whether the bundle requires the layer. Output, in the child (after the
//! mount plan, so paths resolve inside the new root; after no_new_privs):
//! `aegis_targets::landlock::apply` enforces the ruleset and returns a status.
//!
//! Older kernels: an item the kernel's ABI lacks (`truncate` below ABI 3, ...) may be
//! enforced by another layer instead (the mount plan, the agent's own pid or network
//! namespace; see `aegis_targets::landlock::compat`). Which layers are in force is decided in
//! the child from its real state, not from flags: its pid, network and mount namespaces
//! differ from the supervisor's (inode numbers taken before clone), and for the mount plan
//! the bundle has one, which the mounts stage has applied by then or the launch already
//! failed. Invariants: a required layer must come
//! back "fully enforced" (every item enforced by Landlock or by a fallback in force),
//! otherwise the child refuses to exec (exit 126) naming what is missing and the fix; the
//! supervisor refuses before anything is created when even every fallback would not do
//! (`floor_abi`) or the bundle's `min_landlock_abi` is above the kernel's ABI.

use aegis_targets::landlock::{
    Abi, Enforcement, InForce, LandlockArtifact, Missing, Mode, Params, RestrictFlag, compat, kernel_abi,
};

use crate::stage::report::{ChildReport, Fail, INFO_LANDLOCK_ABI, INFO_LANDLOCK_DETAILS, INFO_LANDLOCK_STATUS, INFO_LEN};
use crate::exit::RunError;
use crate::stage::Stage;
use crate::stage::verify::Verified;

pub const FILE: &str = aegis_targets::bundle::contract::LANDLOCK;
pub const WHAT_APPLY: u32 = 1;
pub const WHAT_NOT_FULL: u32 = 2;
pub const WHAT_ABI: u32 = 3;

/// Child-side plan.
pub struct ChildLandlock {
    plan: Option<(LandlockArtifact, Params, Mode)>,
    /// The supervisor's pid, network and mount namespace inodes (to tell which layers are
    /// in force).
    supervisor_ns: [u64; 3],
    /// The bundle has a mount plan (applied in the child whenever it has a mount namespace).
    has_mount_plan: bool,
    /// `log_new_exec_on` was added here for the audit log, not by the bundle.
    added_log_flag: bool,
    /// The seccomp program sends entry-creating calls to the supervisor: start the file
    /// helper ([`crate::fshelper`]) when names absent at launch must be protected.
    mediate: bool,
}

impl ChildLandlock {
    /// A plan that applies nothing (the layer is absent from the bundle).
    pub fn placeholder() -> ChildLandlock {
        ChildLandlock {
            plan: None,
            supervisor_ns: [0; 3],
            has_mount_plan: false,
            added_log_flag: false,
            mediate: false,
        }
    }
}

fn ns_inode(path: &std::ffi::CStr) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value for stat(2) to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes.
    let r = unsafe { libc::stat(path.as_ptr(), &mut st) };
    (r == 0).then_some(st.st_ino)
}

/// The calling process's pid, network and mount namespace inodes.
fn own_namespaces() -> [Option<u64>; 3] {
    [ns_inode(c"/proc/self/ns/pid"), ns_inode(c"/proc/self/ns/net"), ns_inode(c"/proc/self/ns/mnt")]
}

/// Which compensating layers are in force in the calling (child) process. An unreadable
/// namespace link counts as "not in force": the launch then needs more of Landlock itself.
fn in_force_here(l: &ChildLandlock) -> InForce {
    let [pid, net, mnt] = own_namespaces();
    let [sup_pid, sup_net, sup_mnt] = l.supervisor_ns;
    InForce {
        pid_namespace: pid.is_some_and(|i| i != sup_pid),
        network_namespace: net.is_some_and(|i| i != sup_net),
        mount_plan: l.has_mount_plan && mnt.is_some_and(|i| i != sup_mnt),
    }
}

/// Supervisor side: decodes the artifact, checks the kernel ABI. Returns the child plan
/// and, when the layer is absent or skipped, the report detail.
pub fn prepare(v: &Verified) -> Result<(ChildLandlock, Option<String>), RunError> {
    let Some(bytes) = v.file(FILE) else {
        if v.manifest.kernel.landlock_abi.is_some() && v.required("landlock") {
            return Err(RunError::Refused("the manifest requires Landlock but the bundle has no landlock.json".into()));
        }
        return Ok((ChildLandlock::placeholder(), Some("no landlock.json in bundle".into())));
    };
    let text = std::str::from_utf8(bytes).map_err(|_| RunError::Refused("landlock.json is not UTF-8".into()))?;
    let art = LandlockArtifact::from_json(text).map_err(|e| RunError::Refused(format!("landlock.json: {e}")))?;
    let mode = if v.required("landlock") { Mode::Required } else { Mode::BestEffort };
    let kernel = kernel_abi();
    if mode == Mode::Required {
        // Refused early only when no launch could run here; whether this one gets the
        // layers that make up for the rest is known in the child.
        let floor = art.floor_abi();
        if kernel < floor {
            return Err(RunError::Unavailable {
                layer: "landlock",
                why: compat::refusal(kernel, floor, &art.missing(kernel, InForce::EVERYTHING), InForce::EVERYTHING),
            });
        }
        if let Some(min) = v.manifest.kernel.landlock_abi
            && kernel.0 < min
        {
            return Err(RunError::Unavailable {
                layer: "landlock",
                why: format!(
                    "this kernel's Landlock ABI is {}, the bundle requires at least {min} (its policy's [enforcement] min_landlock_abi); run it on Linux {}+",
                    kernel.0,
                    compat::linux_release(Abi(min))
                ),
            });
        }
    }
    let params = crate::stage::mounts::params(v)?;
    // Audit: by default Landlock does not log denials after the exec that starts the agent.
    // Where the kernel can (ABI 7), ask it to, so the supervisor can record them from the
    // kernel log. This is host-side observability, not policy: it is not in the artifact,
    // so the bundle's minimum ABI stays what the policy needs.
    let mut art = art;
    let added_log_flag = kernel >= RestrictFlag::LogNewExecOn.since() && art.restrict_flags.insert(RestrictFlag::LogNewExecOn);
    let supervisor_ns = match own_namespaces() {
        [Some(p), Some(n), Some(m)] => [p, n, m],
        _ => return Err(RunError::internal("reading /proc/self/ns/{pid,net,mnt}", std::io::Error::last_os_error())),
    };
    Ok((
        ChildLandlock {
            plan: Some((art, params, mode)),
            supervisor_ns,
            has_mount_plan: v.file(crate::stage::mounts::FILE).is_some(),
            added_log_flag,
            mediate: crate::stage::seccomp::mediates_files(v),
        },
        None,
    ))
}

impl ChildLandlock {
    /// Without a mount namespace the built-in private `/tmp` would be a write grant on the
    /// host's `/tmp` (other users' files and sockets): the grant on `/tmp` is moved to `dir`,
    /// the run's own directory ([`super::mounts::PrivateTmp`]). Returns whether there was
    /// such a grant.
    pub fn retarget_tmp(&mut self, dir: &std::path::Path) -> Result<bool, RunError> {
        let Some((art, _, _)) = self.plan.as_mut() else { return Ok(false) };
        let tmp = aegis_targets::landlock::PathTemplate::parse("/tmp").map_err(|e| RunError::internal("landlock /tmp rule", e))?;
        let to = aegis_targets::landlock::PathTemplate::parse(&dir.display().to_string()).map_err(|e| RunError::internal("the run's /tmp", e))?;
        let mut moved = false;
        for r in art.path_rules.iter_mut().filter(|r| r.path == tmp) {
            r.path = to.clone();
            r.origin.insert(format!("private /tmp without a mount namespace: {}", dir.display()));
            moved = true;
        }
        art.path_rules.sort_by_key(|r| r.path.to_string());
        Ok(moved)
    }
}

impl ChildLandlock {
    /// Without a network namespace (proxy mode, user namespaces blocked): TCP to `port` is
    /// the agent's only TCP (the proxy's host loopback port), and it may bind no TCP port.
    /// Needs Landlock ABI 4 (TCP rights); Landlock filters TCP by port, not by address, so a
    /// listener on that port number elsewhere would be reachable too (the report says so).
    /// `false` when the bundle has no Landlock ruleset to add it to.
    pub fn only_tcp_to(&mut self, port: u16) -> bool {
        let Some((art, _, _)) = self.plan.as_mut() else { return false };
        art.only_tcp_to(port);
        true
    }
}

/// What the enforcement report needs to know of the ruleset after the plan moved into the
/// child's plan: its ABI needs and fallbacks.
pub struct Needs {
    artifact: Option<LandlockArtifact>,
}

/// The ruleset's ABI needs, for the report (as the bundle states them: without the audit
/// flag this host added).
pub fn min_abi(l: &ChildLandlock) -> Needs {
    let mut artifact = l.plan.as_ref().map(|(a, _, _)| a.clone());
    if let Some(a) = artifact.as_mut()
        && l.added_log_flag
    {
        a.restrict_flags.remove(&RestrictFlag::LogNewExecOn);
    }
    Needs { artifact }
}

impl Needs {
    /// The report line: the ABI in use and, per item the kernel lacks, what enforces it at
    /// this launch (`in_force`: the layers the agent got, as the child judged them).
    pub fn detail(&self, abi_in_use: u32, notes: u32, in_force: InForce) -> String {
        let kernel = kernel_abi();
        let Some(a) = &self.artifact else {
            return format!("ruleset enforced at ABI {abi_in_use}, kernel has {}", kernel.0);
        };
        let mut t = format!(
            "ruleset enforced at ABI {abi_in_use} (Landlock alone needs {}, this launch {}, kernel has {}); {notes} launch-time note(s)",
            a.min_abi.0,
            a.needed_abi(in_force).0,
            kernel.0
        );
        let missing: Vec<Missing> = a.missing(kernel, in_force);
        if !missing.is_empty() {
            t.push_str("; kernel lacks ");
            t.push_str(&missing.iter().map(Missing::describe).collect::<Vec<_>>().join("; "));
        }
        t
    }
}

/// Child side. With mediation, the file helper is forked inside `apply` (after
/// no_new_privs, before the agent's ruleset, with its own) and its control socket handed
/// over; it is sent before the seccomp listener, so the supervisor has it when it serves.
pub fn apply_in_child(l: &ChildLandlock, handoff: Option<&crate::handoff::Sender>, info: &mut [u32; INFO_LEN], msg: &mut ChildReport) -> Result<(), Fail> {
    let Some((art, params, mode)) = &l.plan else {
        return Ok(());
    };
    let in_force = in_force_here(l);
    let mut hook = |setup: aegis_targets::landlock::HelperSetup| -> Result<(), String> {
        let tx = handoff.ok_or("no handoff channel to the supervisor")?;
        let ctl = crate::fshelper::fork_in_child(setup)?;
        use std::os::fd::AsRawFd as _;
        tx.send(crate::handoff::Tag::FsHelper, 0, 0, Some(ctl.as_raw_fd())).map_err(|e| format!("handing the file helper over: errno {e}"))
    };
    let helper: Option<aegis_targets::landlock::HelperHook<'_>> = if l.mediate { Some(&mut hook) } else { None };
    match aegis_targets::landlock::apply_with_helper(art, params, *mode, in_force, Abi(u32::MAX), helper) {
        Ok(st) => {
            info[INFO_LANDLOCK_STATUS] = match st.status {
                Enforcement::FullyEnforced => 1,
                Enforcement::PartiallyEnforced => 2,
                Enforcement::NotEnforced => 3,
            };
            info[INFO_LANDLOCK_ABI] = st.abi_in_use.0;
            info[INFO_LANDLOCK_DETAILS] = (st.details.len() + st.losses.len()) as u32;
            if *mode == Mode::Required && st.status != Enforcement::FullyEnforced {
                msg.set_msg(&format!("status {:?} at ABI {}; details: {}", st.status, st.abi_in_use.0, st.details.join("; ")));
                return Err(Fail::check(Stage::Landlock, WHAT_NOT_FULL));
            }
            Ok(())
        }
        Err(e) => {
            msg.set_msg(&e.to_string());
            let what = if matches!(e, aegis_targets::landlock::ApplyError::AbiTooLow { .. }) { WHAT_ABI } else { WHAT_APPLY };
            Err(Fail::check(Stage::Landlock, what))
        }
    }
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_APPLY => "applying the Landlock ruleset",
        WHAT_NOT_FULL => "Landlock not fully enforced at the bundle's ABI",
        WHAT_ABI => "the kernel's Landlock ABI is too old for this launch",
        _ => "landlock",
    }
}
