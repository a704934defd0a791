#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test, with its message"
)]
//! Integration tests of `aegis-exec`, built into one binary (one link step). `cargo test -p
//! aegis-runtime --test all MODULE::` runs one area. Most launch the real `aegis-exec` on
//! bundles built from the target types (`common`) and need root; they print SKIP otherwise.
//!
//! Tests of different modules share this process and run in parallel: every agent name is
//! `<name>-<pid>` with a name no other module uses (so cgroup leaves and nftables tables,
//! named after the agent, never collide), and kernel policies are applied in forked
//! children or in `aegis-exec`, never in the test runner. Two suites stay separate binaries:
//! `sweep` (a killed supervisor's leftovers must not be swept by a parallel launch of this
//! suite first) and `unotify` (its own harness: the agent re-executes the test binary, which
//! must start single-threaded).
//!
//! * `launch`: real launches as root: namespaces, ids, cgroup, cleanup, refusals.
//! * `layers`: every layer together (mounts, Landlock, seccomp), each reported fully
//!   enforced; the fail-closed refusals (unsigned, tampered, blocked user namespaces).
//! * `identity`: who the agent is (root: `--user`, the sudo invoker, 65534; a user: that
//!   user) and that the report and the audit log say so.
//! * `start`: working directory, command lookup on the sandbox's `PATH`, commands the policy
//!   refuses before launch, refused `--param` and audit-log inputs.
//! * `network`: the network modes for real, on loopback.
//! * `netns`: the namespace's sockets (proxy listener, forwards, NFLOG) handed to the
//!   supervisor, by root and by an unprivileged user.
//! * `netlog`: direct connects in mode `none` stopped by nftables and recorded.
//! * `resources`: fork bomb, memory bomb, wall time: recorded, host unaffected, leaf removed.
//! * `signals`: forwarding, SIGTERM to the supervisor, kill -9 of the agent, cleanup.
//! * `fshelper`: the file helper for names absent at launch, in a forked, Landlocked child.

mod common;

mod fshelper;
mod identity;
mod launch;
mod layers;
mod netlog;
mod netns;
mod network;
mod resources;
mod signals;
mod start;
