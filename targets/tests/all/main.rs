#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap or index is a failed test, with its message"
)]
//! Integration tests of the kernel-facing targets, built into one binary (one link step
//! instead of fifteen). `cargo test -p aegis-targets --test all MODULE::` runs one area.
//!
//! Tests of different modules now share one process and run in parallel: anything a test
//! names on the host (cgroup leaves, nftables tables, files outside its temp dir) carries
//! this process's pid and a name no other module uses; kernel policies (Landlock, seccomp,
//! namespaces) are applied in forked children, never in the test runner.
//!
//! Bundles (`bundle_support`: manifest fields, artifact sets, keys, the minisign tool):
//! * `bundle_bad_input`: every bad bundle, key use or writer input has its own error code,
//!   a precise message and exit status 2.
//! * `bundle_canonical`: canonical manifests round-trip and re-encode stably (proptest).
//! * `bundle_keys`: keys are created 0600, never overwritten unless asked, never shown.
//! * `bundle_minisign_interop`: our keys and signatures against the real `minisign` tool.
//! * `bundle_reproducible`: same inputs, byte-identical bundle; atomic replacement.
//! * `bundle_tamper`: every flipped byte and every truncation of a signed bundle is caught.
//!
//! Landlock and mounts (`landlock_support`: checks in forked children, optionally in new
//! user + mount + pid namespaces):
//! * `landlock_artifact`: the `landlock.json` format, minimum ABI, lowering, text twin.
//! * `landlock_enforce`: real rulesets: what is allowed works, what is denied fails.
//! * `landlock_protect`: protected paths inside write trees with Landlock alone.
//! * `mounts_plan`: the `mounts.json` format and the fs-rules lowering, text twin.
//! * `mounts_apply`: the mount plan applied for real, Landlock on top, the attacks again.
//!
//! Seccomp (`seccomp_support`: a spec that needs `BPF_JA` trampolines):
//! * `seccomp_differential`: every emitted program against `decide`, in the emulator.
//! * `seccomp_interop`: syscall tables vs kernel headers and libseccomp, OCI, disassembly.
//! * `seccomp_live`: real filters in forked children: what the kernel does.
//!
//! Network and resources:
//! * `nftables_target`: the artifact per mode, `nft -c`, and a real load/verify/delete.
//! * `cgroup_target`: the artifact, and a real leaf on this host (as root).
//!
//! Snapshots keep the names they had as separate binaries (`snapshots/<target>/`).

mod bundle_support;
mod landlock_support;
mod seccomp_support;

mod bundle_bad_input;
mod bundle_canonical;
mod bundle_keys;
mod bundle_minisign_interop;
mod bundle_reproducible;
mod bundle_tamper;
mod cgroup_target;
mod landlock_artifact;
mod landlock_enforce;
mod landlock_protect;
mod mounts_apply;
mod mounts_plan;
mod nftables_target;
mod seccomp_differential;
mod seccomp_interop;
mod seccomp_live;
