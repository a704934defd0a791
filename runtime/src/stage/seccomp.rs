//! Stage 9, seccomp: the last restriction, installed just before exec.
//!
//! Input: the bundle's `seccomp.<arch>.bpf` for this machine's architecture, decoded into
//! instructions by the supervisor. Output, in the child: `aegis_targets::seccomp::apply`
//! installs the filter (no_new_privs + TSYNC) and mode 2 is verified (`PR_GET_SECCOMP`, or
//! `/proc/self/status` when the filter itself denies that prctl). Invariants: a required
//! filter that is missing for this architecture, uses user notification (no listener is
//! served yet), fails to install or does not verify stops the launch (exit 126); only
//! `fds` and `exec` run after it, and they fall back to syscalls any sane filter allows.

use aegis_targets::seccomp::{self, Arch, ApplyOptions, SockFilter};

use crate::child::{ChildReport, Fail, INFO_LEN, INFO_SECCOMP_LEN, INFO_SECCOMP_MODE};
use crate::exit::RunError;
use crate::stage::Stage;
use crate::stage::verify::Verified;

pub const WHAT_APPLY: u32 = 1;
pub const WHAT_VERIFY: u32 = 2;

const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;

/// Child-side plan.
pub struct ChildSeccomp {
    program: Option<Vec<SockFilter>>,
}

impl ChildSeccomp {
    /// A plan that installs nothing (the layer is absent from the bundle).
    pub fn placeholder() -> ChildSeccomp {
        ChildSeccomp { program: None }
    }
}

/// Supervisor side. Returns the child plan and, when absent or skipped, the report detail.
pub fn prepare(v: &Verified) -> Result<(ChildSeccomp, Option<String>), RunError> {
    let any = v.files.keys().any(|k| k.starts_with("seccomp.") && k.ends_with(".bpf"));
    if !any && !v.manifest.kernel.seccomp {
        return Ok((ChildSeccomp::placeholder(), Some("no seccomp program in bundle".into())));
    }
    let skip = |why: String| -> Result<(ChildSeccomp, Option<String>), RunError> {
        if v.required("seccomp") {
            Err(RunError::Unavailable { layer: "seccomp", why })
        } else {
            Ok((ChildSeccomp::placeholder(), Some(format!("best-effort: {why}"))))
        }
    };
    let Some(arch) = Arch::native() else {
        return skip("this machine's architecture has no seccomp tables in AEGIS".into());
    };
    let name = seccomp::bpf_file_name(arch);
    let Some(bytes) = v.file(&name) else {
        return skip(format!("the bundle has no {name} for this architecture"));
    };
    let program = seccomp::from_bytes(bytes).map_err(|e| RunError::Refused(format!("{name}: {e}")))?;
    let notif = program
        .iter()
        .any(|i| i.code == BPF_RET_K && i.k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_USER_NOTIF);
    if notif {
        return Err(RunError::NotImplemented {
            layer: "seccomp user notification (the program returns USER_NOTIF; no listener is served yet)",
        });
    }
    Ok((ChildSeccomp { program: Some(program) }, None))
}

/// Number of instructions, for the report.
pub fn program_len(s: &ChildSeccomp) -> Option<usize> {
    s.program.as_ref().map(Vec::len)
}

pub fn apply_in_child(s: &ChildSeccomp, info: &mut [u32; INFO_LEN], msg: &mut ChildReport) -> Result<(), Fail> {
    let Some(program) = &s.program else {
        return Ok(());
    };
    // SECCOMP_FILTER_FLAG_LOG: the kernel logs refused calls (audit type 1326), which the
    // supervisor records as kernel denials; allowed calls are never logged.
    if let Err(e) = seccomp::apply(program, ApplyOptions { log: true }) {
        msg.set_msg(&e.to_string());
        let errno = match e {
            seccomp::ApplyError::Install { errno } | seccomp::ApplyError::NoNewPrivs { errno } => errno,
            _ => 0,
        };
        return Err(Fail {
            stage: Stage::Seccomp,
            what: WHAT_APPLY,
            errno,
        });
    }
    info[INFO_SECCOMP_LEN] = program.len() as u32;
    // SAFETY: prctl with integer arguments.
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    let mode = if mode == 2 {
        2
    } else {
        // The filter may deny prctl itself; the kernel's own account is /proc/self/status.
        match seccomp::current_mode() {
            Ok(st) if st.mode == seccomp::apply::Mode::Filter => 2,
            _ => -1,
        }
    };
    info[INFO_SECCOMP_MODE] = mode.max(0) as u32;
    if mode != 2 {
        return Err(Fail::check(Stage::Seccomp, WHAT_VERIFY));
    }
    Ok(())
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_APPLY => "installing the seccomp filter",
        WHAT_VERIFY => "seccomp mode is not 2 (filter) after installing",
        _ => "seccomp",
    }
}
