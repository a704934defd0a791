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
