//! What every AEGIS binary does when it panics (issue 11.9: no input may end in a Rust
//! backtrace and exit 101). Input: the tool's name, its documented internal-error exit code
//! and its `main` body. Output: the body's exit code; or, when the main thread panics, one
//! line on stderr (`TOOL: internal error: MESSAGE (at FILE:LINE); this is a bug, please
//! report it`) and the internal-error code. Invariants: a panic never prints more than that
//! one line, whichever thread and whichever crate (dependencies included) it comes from; a
//! panic on another thread (a server's connection, the proxy's relays) prints its line and
//! ends that thread only (it unwinds, so the guards it holds are released), the process
//! goes on; the main thread unwinds too, so its guards run (the supervisor's cgroup leaf,
//! nftables table and child are cleaned up) before the exit code is returned.

use std::panic::{self, PanicHookInfo};
use std::process::ExitCode;

/// Longest panic message printed (the rest is cut: a message can quote any input).
const MAX_MESSAGE: usize = 300;

/// Runs `body` as the binary's `main` under the panic policy of the crate docs.
pub fn main(tool: &'static str, internal_error: u8, body: impl FnOnce() -> ExitCode + panic::UnwindSafe) -> ExitCode {
    panic::set_hook(Box::new(move |info| eprintln!("{}", line(tool, info))));
    panic::catch_unwind(body).unwrap_or(ExitCode::from(internal_error))
}

/// For tools whose output is piped into `head` and the like: a closed pipe ends the process
/// quietly (the default `SIGPIPE` action, as for every Unix filter) instead of a write error.
pub fn die_on_broken_pipe() {
    // SAFETY: resetting one signal's disposition to its default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The one line printed for a panic.
fn line(tool: &str, info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic");
    let first = msg.lines().next().unwrap_or_default();
    let mut end = first.len().min(MAX_MESSAGE);
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    let cut = if end < first.len() || msg.lines().nth(1).is_some() { "…" } else { "" };
    let at = info.location().map(|l| format!(" (at {}:{})", l.file(), l.line())).unwrap_or_default();
    let thread = std::thread::current();
    let on = match thread.name() {
        Some("main") | None => String::new(),
        Some(n) => format!(" in thread {n}"),
    };
    format!("{tool}: internal error{on}: {}{cut}{at}; this is a bug, please report it", first.get(..end).unwrap_or_default())
}
