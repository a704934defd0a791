//! Stage 11, exec: replace the child with the agent's command, in its working directory.
//!
//! Input: the command (argv), the agent's environment, its working directory, and the
//! bundle's typed policy (`policy.ir.json`, when the bundle has one). Output, before clone
//! ([`ChildExec::prepare`]): the command resolved the way the sandbox sees it — a bare name
//! is looked up on the *agent's* `PATH`, among files the policy lets it execute, never on the
//! caller's (a pyenv/nvm shim directory does not exist inside) — and refused (exit 125, with
//! the deciding rule from the reference evaluator) when the policy does not let the agent
//! execute it; the working directory: `--cwd DIR`, else `aegis-exec`'s own when the policy
//! lets the agent read it, else `/`. In the child: `chdir` (after the caps stage, so the
//! agent's own ids are checked), then `execve`; on failure a [`Fail`] with the errno.
//! Invariants: the child does no string work (PATH lookup happens before clone); the
//! agent's default `PATH` ([`default_path`]) holds only the standard directories the policy
//! grants executables in, in the usual order, not the operator's `PATH`.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use aegis_policy::eval::{self, FsQuery, Query, Verdict};
use aegis_policy::ir::{FsAccess, Policy};

use crate::stage::report::Fail;
use crate::exit::RunError;
use crate::stage::Stage;
use crate::stage::verify::Verified;

pub const WHAT_EXECVE: u32 = 1;
pub const WHAT_SIGMASK: u32 = 2;
pub const WHAT_CHDIR: u32 = 3;

/// The standard directories a default `PATH` is made of, in the usual order.
pub const STANDARD_BIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// The agent's `PATH` when `--env PATH` does not give one: the standard directories that
/// hold an executable the policy grants (a grant of the file, or of the directory), in
/// [`STANDARD_BIN_DIRS`] order. Without a typed policy: `/usr/local/bin:/usr/bin:/bin`.
pub fn default_path(policy: Option<&Policy>) -> String {
    let Some(policy) = policy else {
        return "/usr/local/bin:/usr/bin:/bin".into();
    };
    let grants: Vec<String> = policy.filesystem.rules_of(FsAccess::Exec).map(|r| r.path.to_string()).collect();
    let dirs: Vec<&str> = STANDARD_BIN_DIRS
        .iter()
        .copied()
        .filter(|d| {
            grants.iter().any(|g| {
                g == d || Path::new(g).parent() == Some(Path::new(d)) || Path::new(d).starts_with(g.as_str())
            })
        })
        .collect();
    if dirs.is_empty() { "/usr/bin:/bin".into() } else { dirs.join(":") }
}

/// The bundle's typed policy and the launch parameters in the evaluator's form, when the
/// bundle has one (bundles built by `aegisc` do).
pub struct Judge {
    policy: aegis_policy::ir::Checked,
    params: eval::Params,
}

impl Judge {
    pub fn of(v: &Verified) -> Result<Option<Judge>, RunError> {
        if v.file(aegis_targets::bundle::contract::POLICY_IR).is_none() {
            return Ok(None);
        }
        Ok(Some(Judge { policy: v.policy_ir("the exec check")?, params: v.eval_params()? }))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The evaluator's answer for `access` of `path`.
    fn decide(&self, access: FsQuery, path: &Path) -> Option<eval::Decision> {
        eval::evaluate(&self.policy, &self.params, &Query::Fs { access, path: path.display().to_string() }).ok()
    }

    fn allows(&self, access: FsQuery, path: &Path) -> bool {
        self.decide(access, path).is_some_and(|d| d.verdict == Verdict::Allow)
    }

    /// The evaluator's answer for `path` as the kernel will see it: a grant of a symbolic
    /// link is attached to the file it names (Landlock opens the path; a bind mount follows
    /// it), so either spelling allows. `None`: allowed; `Some`: the denial of `path`.
    fn denial(&self, access: FsQuery, path: &Path) -> Option<eval::Decision> {
        let d = self.decide(access, path)?;
        if d.verdict == Verdict::Allow || self.allows(access, &real(path)) {
            return None;
        }
        Some(d)
    }
}

/// Why a decision was taken, with its rule and where it is written.
fn why(d: &eval::Decision) -> String {
    match &d.rule {
        Some(r) => format!("{} ({} `{}`)", d.reason, r.kind, r.text),
        None => d.reason.clone(),
    }
}

/// What a path resolves to on this host.
fn real(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The agent's working directory: `--cwd` (refused unless the policy lets the agent read
/// it), else `here` when the policy lets the agent read it, else `/`. `bool`: it was asked
/// for (a failing `chdir` then stops the launch instead of falling back to `/`).
pub fn working_dir(judge: Option<&Judge>, asked: Option<&Path>, here: Option<PathBuf>) -> Result<(PathBuf, bool), RunError> {
    let visible = |p: &Path| judge.is_none_or(|j| j.denial(FsQuery::Read, p).is_none());
    match asked {
        Some(d) => {
            if !d.is_absolute() {
                return Err(RunError::Refused(format!("--cwd {}: must be an absolute path", d.display())));
            }
            if !d.is_dir() {
                return Err(RunError::Refused(format!("--cwd {}: not a directory", d.display())));
            }
            if let Some(dec) = judge.and_then(|j| j.denial(FsQuery::Read, d)) {
                return Err(RunError::Refused(format!("--cwd {}: the agent may not read it: {}", d.display(), why(&dec))));
            }
            Ok((d.to_path_buf(), true))
        }
        None => Ok((here.filter(|h| visible(h)).unwrap_or_else(|| PathBuf::from("/")), false)),
    }
}

/// Resolves `cmd` as the sandbox will: a name with a `/` is that path (relative to the
/// agent's working directory `cwd`); a bare name is the first `dir/cmd` on the agent's
/// `PATH` that is an executable file the policy lets the agent execute. Then the policy must
/// let the agent execute it, or the launch is refused (125) with the deciding rule.
pub fn resolve(cmd: &str, env: &[(String, String)], cwd: &Path, judge: Option<&Judge>) -> Result<PathBuf, RunError> {
    let path = if cmd.contains('/') {
        cwd.join(cmd)
    } else {
        let search = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/bin:/bin");
        let found = search
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(cmd))
            .find(|p| is_executable_file(p) && judge.is_none_or(|j| j.denial(FsQuery::Exec, p).is_none()));
        match found {
            Some(p) => p,
            None => {
                return Err(RunError::Refused(format!(
                    "command not found: `{cmd}` is not an executable the policy grants on the agent's PATH ({search}); give its absolute path or grant it in [exec]"
                )));
            }
        }
    };
    if let Some(d) = judge.and_then(|j| j.denial(FsQuery::Exec, &path)) {
        return Err(RunError::Refused(format!("the policy does not let the agent execute {}: {}", path.display(), why(&d))));
    }
    Ok(path)
}

/// argv/envp as NUL-terminated pointer arrays into CStrings owned by the same struct.
pub struct ChildExec {
    pub path: CString,
    /// Where the agent starts, and whether it was asked for (`--cwd`: failing to enter it
    /// stops the launch; otherwise the agent starts in `/`).
    pub cwd: CString,
    pub cwd_asked: bool,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

fn cstr(what: &'static str, s: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Refused(format!("{what} contains a NUL byte: {s:?}")))
}

impl ChildExec {
    /// Builds the arrays for the resolved `path` (see [`resolve`]) and `command`.
    pub fn prepare(path: &Path, command: &[String], env: &[(String, String)], cwd: &Path, cwd_asked: bool) -> Result<ChildExec, RunError> {
        if command.is_empty() {
            return Err(RunError::Refused("no command given and the bundle declares no entrypoint".into()));
        }
        let argv: Vec<CString> = command.iter().map(|a| cstr("argument", a)).collect::<Result<_, _>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|(k, v)| cstr("environment", &format!("{k}={v}")))
            .collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(ChildExec {
            path: cstr("command path", &path.display().to_string())?,
            cwd: cstr("working directory", &cwd.display().to_string())?,
            cwd_asked,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
        })
    }
}

/// Child side, after the caps stage: enter the working directory (its search permission
/// checked for the agent's own ids). Not asked for and not enterable (not in the sandbox's
/// view, e.g. under the host's `/tmp`): `/`, and the errno is returned for the report.
pub fn enter_cwd(e: &ChildExec) -> Result<i32, Fail> {
    // SAFETY: chdir with a NUL-terminated path we own.
    if unsafe { libc::chdir(e.cwd.as_ptr()) } == 0 {
        return Ok(0);
    }
    let fail = Fail::errno(Stage::Exec, WHAT_CHDIR);
    // SAFETY: as above, a literal.
    if e.cwd_asked || unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(fail);
    }
    Ok(fail.errno.max(1))
}

/// Child side: execve. Returns only on failure.
pub fn exec(e: &ChildExec) -> Fail {
    // SAFETY: path, argv and envp are NUL-terminated arrays of pointers to live CStrings.
    unsafe { libc::execve(e.path.as_ptr(), e.argv_ptrs.as_ptr(), e.envp_ptrs.as_ptr()) };
    Fail::errno(Stage::Exec, WHAT_EXECVE)
}

/// What to check when execve of the agent's command fails with `errno`, when that errno
/// means the command is not there or not runnable in the sandbox's view of the files (not
/// the caller's); `None` for the others (the supervisor's fault: an internal error).
pub fn not_runnable_hint(errno: i32) -> Option<&'static str> {
    match errno {
        libc::ENOENT | libc::ENOTDIR | libc::ELOOP => Some(
            "the command, its interpreter (#!) or its dynamic loader is not in the sandbox's view of the files: `aegisc check POLICY exec PATH` says whether the policy grants it, and a literal path under /tmp is the sandbox's private /tmp, never the host's (pass the directory as a --param)",
        ),
        libc::EACCES | libc::ENOEXEC => Some(
            "the sandbox does not let the agent run it: `aegisc check POLICY exec PATH` says which rule decides (exec needs an exec grant of the file and of its interpreter)",
        ),
        _ => None,
    }
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_EXECVE => "execve of the agent's command",
        WHAT_SIGMASK => "restoring the signal mask",
        WHAT_CHDIR => "entering the agent's working directory (--cwd)",
        _ => "exec",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test, with its message")]
    use super::*;

    fn policy(exec: &[&str]) -> Policy {
        let toml = format!(
            "version = 1\n[agent]\nname = \"t\"\n[filesystem]\nread = [\"/usr\"]\n[exec]\nallow = [{}]\n",
            exec.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", ")
        );
        aegis_compiler::compile_bytes("t.toml", toml.as_bytes()).map_err(|_| ()).unwrap().policy.into_inner()
    }

    #[test]
    fn the_default_path_holds_only_the_standard_directories_with_grants_in_order() {
        assert_eq!(default_path(Some(&policy(&["/usr/bin/python3", "/usr/local/bin/tool", "/opt/x/bin/y"]))), "/usr/local/bin:/usr/bin");
        assert_eq!(default_path(Some(&policy(&["/usr/bin"]))), "/usr/bin");
        assert_eq!(default_path(Some(&policy(&["/usr"]))), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "a grant of /usr covers its bin directories");
        assert_eq!(default_path(None), "/usr/local/bin:/usr/bin:/bin");
    }
}
