//! Syscall tables: name ↔ number for the architectures AEGIS emits filters for.
//!
//! Input: an [`Arch`] and a syscall name or number. Output: the other half of the pair.
//! Invariants: the tables are complete as of Linux 6.18 (x86_64 0..=469 with its holes,
//! aarch64 0..=469 from the asm-generic table), sorted by number, with unique names and
//! numbers; a number that is not in a table is "unknown" and every AEGIS filter answers it
//! with ENOSYS (so a future syscall never runs under an old bundle).

use serde::{Deserialize, Serialize};

#[path = "table.rs"]
mod table;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `AUDIT_ARCH_I386`: the 32-bit `int 0x80` entry on x86_64; never accepted.
pub const AUDIT_ARCH_I386: u32 = 0x4000_0003;
/// `AUDIT_ARCH_ARM`: 32-bit compat entry on aarch64; never accepted.
pub const AUDIT_ARCH_ARM: u32 = 0x4000_0028;
/// The x32 ABI marks its syscall numbers with this bit (x86_64 `seccomp_data.nr`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An architecture AEGIS emits a filter for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Every supported architecture, in output order.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`.
    pub const fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// The architecture whose native `AUDIT_ARCH_*` value this is.
    pub fn from_audit_arch(value: u32) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.audit_arch() == value)
    }

    /// Name used in file names (`seccomp.<name>.bpf`) and diagnostics.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The architecture of the machine this crate was built for, if supported.
    pub const fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The whole table for this architecture, sorted by number.
    pub fn table(self) -> &'static [(u32, &'static str)] {
        match self {
            Arch::X86_64 => table::X86_64_TABLE,
            Arch::Aarch64 => table::AARCH64_TABLE,
        }
    }

    /// The number of `name` on this architecture (`None`: the syscall does not exist here).
    pub fn nr(self, name: &str) -> Option<u32> {
        self.table()
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(nr, _)| *nr)
    }

    /// The name of syscall `nr` on this architecture (`None`: unknown number).
    pub fn syscall_name(self, nr: u32) -> Option<&'static str> {
        let t = self.table();
        t.binary_search_by_key(&nr, |(n, _)| *n)
            .ok()
            .and_then(|i| t.get(i))
            .map(|(_, s)| *s)
    }

    /// The highest syscall number known on this architecture.
    pub fn highest_nr(self) -> u32 {
        self.table().last().map_or(0, |(n, _)| *n)
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "unsupported architecture {other:?} (expected x86_64 or aarch64)"
            )),
        }
    }
}

/// Whether `name` is a syscall on at least one supported architecture.
pub fn is_known_name(name: &str) -> bool {
    Arch::ALL.iter().any(|a| a.nr(name).is_some())
}

/// Syscall arguments that are user-space pointers, by name: a filter can only see the
/// pointer value, never the memory behind it, so a condition on them means nothing and the
/// spec validation rejects it. Bit i set = argument i is a pointer. Covers the syscalls a
/// policy might be tempted to condition (paths, buffers, socket addresses); syscalls not
/// listed are not checked.
pub const POINTER_ARGS: &[(&str, u8)] = &[
    ("access", 0b1),
    ("acct", 0b1),
    ("bind", 0b10),
    ("chdir", 0b1),
    ("chmod", 0b1),
    ("chown", 0b1),
    ("chroot", 0b1),
    ("connect", 0b10),
    ("creat", 0b1),
    ("execve", 0b111),
    ("execveat", 0b1110),
    ("faccessat", 0b10),
    ("faccessat2", 0b10),
    ("fchmodat", 0b10),
    ("fchmodat2", 0b10),
    ("fchownat", 0b10),
    ("getxattr", 0b111),
    ("lchown", 0b1),
    ("lgetxattr", 0b111),
    ("link", 0b11),
    ("linkat", 0b1010),
    ("lsetxattr", 0b111),
    ("lstat", 0b11),
    ("mkdir", 0b1),
    ("mkdirat", 0b10),
    ("mknod", 0b1),
    ("mknodat", 0b10),
    ("mount", 0b11111),
    ("newfstatat", 0b110),
    ("open", 0b1),
    ("openat", 0b10),
    ("openat2", 0b110),
    ("pivot_root", 0b11),
    ("read", 0b10),
    ("readlink", 0b11),
    ("readlinkat", 0b110),
    ("recvfrom", 0b110010),
    ("recvmsg", 0b10),
    ("rename", 0b11),
    ("renameat", 0b1010),
    ("renameat2", 0b1010),
    ("rmdir", 0b1),
    ("sendmsg", 0b10),
    ("sendto", 0b10010),
    ("setxattr", 0b111),
    ("stat", 0b11),
    ("statx", 0b10010),
    ("swapon", 0b1),
    ("symlink", 0b11),
    ("symlinkat", 0b101),
    ("truncate", 0b1),
    ("umount2", 0b1),
    ("unlink", 0b1),
    ("unlinkat", 0b10),
    ("uselib", 0b1),
    ("utimensat", 0b110),
    ("write", 0b10),
];

/// Whether argument `index` of `name` is a user-space pointer (see [`POINTER_ARGS`]).
pub fn is_pointer_arg(name: &str, index: u8) -> bool {
    POINTER_ARGS
        .iter()
        .any(|(n, mask)| *n == name && index < 8 && mask & (1u8 << index) != 0)
}
