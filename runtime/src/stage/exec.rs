//! Stage 11, exec: replace the child with the agent's command.
//!
//! Input: the command (argv) and environment, resolved to a path by the supervisor (PATH
//! lookup happens before clone, so the child does no string work). Output: `execve`; on
//! failure a [`Fail`] with the errno (the supervisor exits 127 and says why).

use std::ffi::CString;

use crate::child::Fail;
use crate::exit::RunError;
use crate::stage::Stage;

pub const WHAT_EXECVE: u32 = 1;
pub const WHAT_SIGMASK: u32 = 2;

/// argv/envp as NUL-terminated pointer arrays into CStrings owned by the same struct.
pub struct ChildExec {
    pub path: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
}

fn cstr(what: &'static str, s: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Refused(format!("{what} contains a NUL byte: {s:?}")))
}

impl ChildExec {
    /// Resolves `command[0]` (PATH lookup unless it contains `/`) and builds the arrays.
    pub fn prepare(command: &[String], env: &[(String, String)]) -> Result<ChildExec, RunError> {
        let Some(first) = command.first() else {
            return Err(RunError::Refused("no command given and the bundle declares no entrypoint".into()));
        };
        let path = resolve(first, env)?;
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
            path: cstr("command path", &path)?,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
        })
    }
}

fn resolve(cmd: &str, env: &[(String, String)]) -> Result<String, RunError> {
    if cmd.contains('/') {
        return Ok(cmd.to_string());
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("/usr/local/bin:/usr/bin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = std::path::Path::new(dir).join(cmd);
        if let Ok(m) = std::fs::metadata(&p)
            && m.is_file()
        {
            return Ok(p.display().to_string());
        }
    }
    Err(RunError::Refused(format!("command not found in PATH: {cmd}")))
}

/// Child side: execve. Returns only on failure.
pub fn exec(e: &ChildExec) -> Fail {
    // SAFETY: path, argv and envp are NUL-terminated arrays of pointers to live CStrings.
    unsafe { libc::execve(e.path.as_ptr(), e.argv_ptrs.as_ptr(), e.envp_ptrs.as_ptr()) };
    Fail::errno(Stage::Exec, WHAT_EXECVE)
}

pub fn describe(what: u32) -> &'static str {
    match what {
        WHAT_EXECVE => "execve of the agent's command",
        WHAT_SIGMASK => "restoring the signal mask",
        _ => "exec",
    }
}
