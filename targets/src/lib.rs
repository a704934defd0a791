//! Kernel-facing artifact formats for AEGIS.
//!
//! Each module holds one target's artifact: its on-disk encoding (deterministic bytes),
//! decoding, a human-readable text twin, and the code that applies it to the running
//! process on a target host. Nothing here knows the policy language: the compiler lowers
//! its IR into these types, and the runtime (`aegis-exec`) depends on this crate only.
//!
//! | module     | artifact files in a bundle                         |
//! |------------|----------------------------------------------------|
//! | `seccomp`  | `seccomp.<arch>.bpf`, `seccomp.<arch>.asm`         |
//! | `landlock` | `landlock.json`                                    |
//! | `mounts`   | `mounts.json`                                      |
//! | `cgroup`   | `cgroup.json`                                      |
//! | `nftables` | `nftables.json`                                    |
//! | `bundle`   | `manifest.json`, `manifest.json.minisig`           |

pub mod bundle;
pub mod cgroup;
pub mod landlock;
pub mod mounts;
pub mod netlink;
pub mod nftables;
pub mod seccomp;
