//! Exit codes of `aegis-exec` and the error type that maps to them.
//!
//! The agent's own exit status is passed through unchanged (128 + signal number when it was
//! killed by a signal, like a shell). `aegis-exec`'s own failures use three codes that an
//! agent is unlikely to collide with deliberately (they mirror `docker run`):
//!
//! | code | meaning |
//! |------|---------|
//! | 125  | invalid input or refused bundle (bad flags, signature/digest/expiry/serial, missing parameter, no command) |
//! | 126  | enforcement unavailable: a required layer cannot be applied on this host, is not implemented yet, or did not verify after applying |
//! | 127  | internal error (a system call the supervisor needs failed), or the agent's command cannot be run in the sandbox (not there, not executable: as a shell's "command not found") |
//! | 123  | the audit log could not be written (disk full, I/O error): the run was stopped (or never started) and the records kept were written into the room reserved for them |
//! | 122  | the agent used up the run's audit budget (`--audit-budget`): one record says so and the agent was stopped |

/// Invalid input or refused bundle.
pub const EXIT_REFUSED: i32 = 125;
/// A required layer is unavailable, not implemented, or failed verification.
pub const EXIT_UNENFORCEABLE: i32 = 126;
/// Internal error, including failure to exec the agent's command.
pub const EXIT_INTERNAL: i32 = 127;
/// The audit log could not be written: the run was stopped (fail closed).
pub const EXIT_AUDIT_FAILED: i32 = 123;
/// The agent used up the run's audit budget and was stopped.
pub const EXIT_AUDIT_BUDGET: i32 = 122;

/// Why a launch did not happen (or stopped before the agent ran).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input (flags, bundle, parameters) is not acceptable.
    #[error("refused: {0}")]
    Refused(String),
    /// The bundle requires a layer whose implementation is missing from this build.
    #[error("not implemented: {layer} (the bundle requires it; refusing to launch without it)")]
    NotImplemented { layer: &'static str },
    /// The host cannot provide a required layer.
    #[error("{layer} unavailable: {why}")]
    Unavailable { layer: &'static str, why: String },
    /// A layer was applied but its verification failed.
    #[error("{layer} not verified: {why}")]
    NotVerified { layer: &'static str, why: String },
    /// The audit log could not be opened or appended to: nothing runs unrecorded.
    #[error("audit log failed: {0}")]
    AuditFailed(String),
    /// The agent's command is not there, or not runnable, in the sandbox (exit 127, as a
    /// shell's "command not found").
    #[error("cannot run the agent's command in the sandbox: {why}")]
    CommandNotRunnable { why: String },
    /// A step of the supervisor failed.
    #[error("internal error: {what}: {why}")]
    Internal { what: &'static str, why: String },
}

impl RunError {
    /// The documented exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Refused(_) => EXIT_REFUSED,
            RunError::NotImplemented { .. } | RunError::Unavailable { .. } | RunError::NotVerified { .. } => {
                EXIT_UNENFORCEABLE
            }
            RunError::Internal { .. } | RunError::CommandNotRunnable { .. } => EXIT_INTERNAL,
            RunError::AuditFailed(_) => EXIT_AUDIT_FAILED,
        }
    }

    pub(crate) fn internal(what: &'static str, why: impl std::fmt::Display) -> RunError {
        RunError::Internal {
            what,
            why: why.to_string(),
        }
    }

    pub(crate) fn os(what: &'static str) -> RunError {
        RunError::internal(what, std::io::Error::last_os_error())
    }
}
