//! End-to-end tests: one binary, one module per area. They run the real binaries
//! (`aegisc`, `aegis-exec`, `aegis-audit`) that `cargo test --workspace` builds, from the
//! repository root, as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]

/// `aegisc build` on every example policy: artifacts snapshotted, reproducible, signed,
/// verified by `aegisc verify` and `minisign`, nftables checked by `nft -c`, tampering found.
mod build;
/// `aegisc diff` on widening and narrowing changes.
mod diff;
/// `aegis`, the local loop: the README's quick start as written, `aegis run` of a local
/// policy (report and audit say so), `./aegis.toml`.
mod cli;
/// Real launches as root: example policies agree with `aegisc check` layer by layer; a proxy
/// bundle without its credential, unsigned, tampered and incomplete launches are refused;
/// the audit log records each launch.
mod launch;
/// Attacks an agent might try (fs, exec, network, escapes, resource bombs), each contained.
mod attacks;
/// Protected paths in a writable workspace (`.git/config`, `.git/hooks`, ...): renamed,
/// swapped, replaced and rewritten by the agent, never reaching the host's git.
mod protect;
/// `aegisc check` answers as the kernel of this host will: symlinks resolved here, the private
/// `/tmp` and `/dev` named in notes and the loss report (issue 11 item 10).
mod oracle;
/// A benign coding workload (python, git) under coding-agent runs with no false denial.
mod benign;
/// The audit log under a hostile agent: a full filesystem stops the run and loses no record,
/// a flood ends at the run's budget, repeats are counted, a killed supervisor is reported.
mod audit;
/// The user's terminal through a pty harness: the agent cannot take it, Ctrl-C and Ctrl-Z do
/// what the user means, modes are restored, dangerous output is filtered.
mod tty;
/// The egress proxy and API gate (issue 7): inbox-manager and research-agent against test
/// servers in an isolated upstream namespace; attacks denied and audited, benign tools work.
mod proxy;
/// Issue 11.1: pathname unix sockets reachable only through `[network] unix`, in every mode,
/// against path tricks and races; datagram sockets refused; abstract sockets scoped as before.
mod unix;
/// Why, for every layer: seccomp, filesystem (`--explain`) and nftables denials are readable
/// records, as root and as a user, and `aegis why` explains them (rule, location, the
/// smallest checked change, secrets flagged).
mod why;
/// Learn mode: a benign workload (Python, git, HTTP through the proxy) learned as root and
/// as a user, then run under the proposal with no denial; planted secrets neither read nor
/// proposed.
mod learn;
/// The built-in profiles run their real agents (Claude Code, Codex CLI, Gemini CLI,
/// opencode, Aider, a LangChain tool, installed by `.ci/run`; a Node script) as a user with
/// no denial, and keep planted credential stores unreadable.
mod profiles;
/// Issue 15.4: `seccomp.oci.json` under runc: a networked program uses the sockets its policy
/// grants, the others are refused, and an exec gate only AEGIS can serve is refused by runc.
mod oci;
/// Issue 15.5: LangChain and CrewAI tools wrapped to ask `aegisd` before acting (frameworks
/// from PyPI, installed by `.ci/run`; no model calls); an MCP stdio server under its own policy.
mod frameworks;
