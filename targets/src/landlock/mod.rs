//! The `landlock` target: `landlock.json`, its text twin, and applying it at launch.
//!
//! Input: the policy's filesystem rules ([`FsRule`]: a [`PathTemplate`] and read / write /
//! exec / deny) plus, set by the compiler, TCP ports, IPC scopes and audit flags. Output: a
//! [`LandlockArtifact`] whose `min_abi` is computed from what it handles, the compile-time
//! [`Loss`]es, and at launch a [`LandlockStatus`]. Invariants: default deny (every fs right
//! of ABI 1–3 is handled, see [`rights`] for the exact read/write/exec sets); deny beats
//! allow; paths stay templates until launch; `Mode::Required` never downgrades.
//!
//! | file          | holds                                                        |
//! |---------------|--------------------------------------------------------------|
//! | `template.rs` | path templates (`${WORKSPACE}/src`) and launch parameters     |
//! | `rights.rs`   | rights, their ABI, the read/write/exec mapping                |
//! | `artifact.rs` | `landlock.json`: types, canonical JSON, text twin            |
//! | `compat.rs`   | older ABIs: fallbacks, the ABI a launch needs, refusals      |
//! | `lower.rs`    | fs rules → artifact, compile-time losses                      |
//! | `apply.rs`    | launch: resolve, mask check or split, enforce, report        |
//! | `split.rs`    | launch: an allowed tree split around denied / read-only paths |
//! | `mediate.rs`  | launch: the file helper's table of mediated directories        |
//! | `loader.rs`   | what `ld.so` needs; `PT_INTERP` reader                       |
//! | `sys.rs`      | raw Landlock system calls                                    |

pub mod apply;
pub mod artifact;
pub mod compat;
pub mod loader;
pub mod lower;
pub mod mediate;
pub mod rights;
mod split;
mod sys;
pub mod template;

pub use apply::{
    ApplyError, Enforcement, HelperHook, HelperSetup, LandlockStatus, Mode, apply, apply_capped, apply_with_helper,
    kernel_abi, negotiate,
};
pub use artifact::{ArtifactError, DenyRule, LandlockArtifact, NetRule, PathRule, ReadOnlyRule};
pub use compat::{Fallback, Fallbacks, InForce, Item, Missing};
pub use loader::{elf_interpreter, loader_paths, loader_rules};
pub use lower::{FsAccess, FsLowering, FsRule, Loss, lower_fs, runtime_rules};
pub use rights::{Abi, FsRight, GrantKind, NetRight, RestrictFlag, Scope, rights_for};
pub use template::{Params, PathTemplate, TemplateError};
