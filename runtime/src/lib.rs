//! `aegis-exec`: verify a bundle, isolate, apply every layer, exec the agent, supervise, audit.
//!
//! ```text
//! aegis-exec [--trust-key PUB | --allow-unsigned] [--param NAME=VALUE]... [--audit-log PATH]
//!            [--env NAME[=VALUE]]... [--cwd DIR] [--user NAME|UID[:GID]] [--group G]...
//!            [--audit-budget SIZE] [--checkpoint-key KEY [--checkpoint-sink FILE]]
//!            [--verbose] BUNDLE_DIR [-- COMMAND...]
//! aegis-exec doctor [BUNDLE_DIR...]
//! ```
//!
//! Input: a bundle directory (verified before anything else), launch parameters, a command
//! (or the bundle's entrypoint). Output: the agent runs as a child of the supervisor in new
//! namespaces, inside a cgroup leaf where the host allows one, behind its nftables table,
//! with no capabilities and no_new_privs, as the user who launched it ([`identity`]); the
//! supervisor forwards signals, enforces wall time, reaps, writes the audit log, removes
//! what it created, and exits with the agent's status. Invariants: the stages run in the
//! fixed order of [`stage`]; a layer the bundle requires and this host or build cannot
//! provide stops the launch (fail closed); what was enforced is reported per layer. No root
//! is needed: `docs/exec.md` says what each host shape gives.
//!
//! Exit codes ([`exit`]): the agent's status (128 + signal when killed); 125 invalid input or
//! refused bundle; 126 a required layer is unavailable, not implemented, or failed
//! verification; 127 internal error or the command could not be executed; 123 the audit log
//! could not be written (the run was stopped); 122 the agent used up its audit budget.
//!
//! Environment: `AEGIS_STATE_DIR` (serial store directory, default `/var/lib/aegis` for root,
//! `${XDG_STATE_HOME:-$HOME/.local/state}/aegis` for a user), `SUDO_UID`/`SUDO_GID` (root's
//! default agent identity), `AEGIS_EXEC_TEST_NO_USERNS` (behave as if user namespaces were
//! blocked; can only make a launch stricter, used by tests of the best-effort mode).

pub mod audit;
pub mod broker;
pub mod child;
pub mod doctor;
pub mod errno;
pub mod exit;
pub mod flags;
pub mod handoff;
pub mod identity;
pub mod fshelper;
pub(crate) mod helper_process;
pub mod launch;
pub mod learn;
pub mod report;
pub mod signals;
pub mod seqpacket;
pub mod stage;
pub mod supervise;
pub mod unotify;
pub mod tty;

pub use exit::{EXIT_AUDIT_BUDGET, EXIT_AUDIT_FAILED, EXIT_INTERNAL, EXIT_REFUSED, EXIT_UNENFORCEABLE, RunError};
pub use stage::verify::{BundleSource, LaunchOptions, LocalPolicy};
