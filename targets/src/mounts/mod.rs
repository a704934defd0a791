//! The `mounts` target: `mounts.json` (the sandbox's root layout), its text twin, and
//! applying it in the sandbox child.
//!
//! Input: the policy's filesystem rules (the same [`crate::landlock::FsRule`]s the Landlock
//! lowering takes) and [`PlanOptions`]. Output: a [`MountPlan`] of path templates, the
//! compile-time losses, and at launch a [`MountReport`]. Invariants: the sandbox sees host
//! paths at their host locations; readable trees are read-only, writable trees are separate
//! `nosuid,nodev,noexec` mounts, executable directories are `noexec` with each granted
//! executable bound over itself with exec, denied paths are masked, `/tmp` `/proc` `/dev`
//! are private. The Landlock ruleset keeps guarding the same paths inside this root.
//!
//! Choices: flags are applied with `mount_setattr(2)` (`AT_RECURSIVE`, Linux 5.12), which
//! reaches every submount of a recursive bind (a `MS_REMOUNT|MS_BIND` remount only changes
//! the top one) and only ever *adds* `RDONLY/NOSUID/NODEV/NOEXEC`, so the flags a user
//! namespace locks on inherited mounts are never cleared (which would fail with `EPERM`);
//! every bundle needs Landlock (ABI 1, Linux 5.13), so every host that can run one has it.
//! `/proc` is mounted without `hidepid`: the sandbox has its own pid namespace, so it sees
//! only its own processes anyway. Masks are mode 000, empty and read-only; they cannot be
//! unmounted by the agent (no capabilities after the runtime drops them, and Landlock
//! forbids mount, umount and pivot_root to any restricted process).
//!
//! | file         | holds                                                  |
//! |--------------|--------------------------------------------------------|
//! | `plan.rs`    | `mounts.json`: types, canonical JSON, text twin        |
//! | `lower.rs`   | fs rules → plan, compile-time losses                   |
//! | `apply.rs`   | launch: build the new root, pivot, detach the host    |

pub mod apply;
pub mod lower;
pub mod plan;

pub use apply::{MountError, MountReport, apply};
pub use lower::{EXEC_DIRS, PlanOptions, plan_from_rules};
pub use plan::{MountEntry, MountKind, MountPlan, PlanError};
