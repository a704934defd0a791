//! Landlock rights, the ABI version that introduced each, and the mapping from the policy's
//! access kinds (`read`, `write`, `exec`) to exact right sets.
//!
//! Input: access kinds or right names. Output: sorted right sets ([`BTreeSet`]) and the
//! minimum ABI they need. Invariant: every right's bit value and `since` ABI are the
//! kernel's (`include/uapi/linux/landlock.h`); the serialized names are stable.
//!
//! Mapping choices (why each right is or is not in a set):
//! - `read` = `read_file` + `read_dir`. Listing a directory is reading it.
//! - `exec` = `execute` + `read_file` (+ `read_dir` so a granted directory of executables
//!   can be listed). The kernel maps executables and `ld.so` reads them, so exec without
//!   read does not work for dynamic binaries or scripts anyway.
//! - `write` = `read` + `write_file`, `truncate` (V3: without it `truncate(2)` would be
//!   uncontrolled on any DAC-writable file), `make_reg`, `make_dir`, `make_sym`,
//!   `make_sock`, `make_fifo`, `remove_file`, `remove_dir`, and `refer` (V2). `refer` allows
//!   renames and hard links that move a file to another directory; the kernel only permits
//!   them when the destination grants no right the source lacked, so granting it inside
//!   write trees cannot widen access to a file (a denied file has no rights, so it can never
//!   be linked or moved into an allowed tree). Not handling `refer` would not help: it is
//!   implicitly handled and then every cross-directory rename fails (`mv a/x b/`), a false
//!   denial for build tools.
//! - Never granted by any kind, but always handled (so denied everywhere): `make_char`,
//!   `make_block` (device nodes; mounts are `nodev` too).
//! - `ioctl_dev` (V5) is not in `write` and not handled by the fs lowering: it only
//!   concerns device files, the sandbox sees a minimal `/dev` whose terminal needs ioctls,
//!   and writable trees are `nodev`. Handling it would raise every policy to V5 for no
//!   gain; the seccomp layer filters dangerous terminal ioctls (`TIOCSTI`, `TIOCLINUX`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// A Landlock ABI version (1 = Linux 5.13 … 7 = Linux 6.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Abi(pub u32);

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "V{}", self.0)
    }
}

macro_rules! rights {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal, $bit:expr, $abi:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl $name {
            /// Every value, in declaration (= bit) order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The kernel's bit for this value.
            pub fn bit(self) -> u64 { match self { $($name::$v => $bit,)* } }
            /// The first ABI that knows this value.
            pub fn since(self) -> Abi { match self { $($name::$v => Abi($abi),)* } }
            /// The stable name used in artifacts and text twins.
            pub fn name(self) -> &'static str { match self { $($name::$v => $s,)* } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }
    };
}

rights!(
    /// A filesystem access right (`LANDLOCK_ACCESS_FS_*`).
    FsRight {
        Execute = "execute", 1 << 0, 1;
        WriteFile = "write_file", 1 << 1, 1;
        ReadFile = "read_file", 1 << 2, 1;
        ReadDir = "read_dir", 1 << 3, 1;
        RemoveDir = "remove_dir", 1 << 4, 1;
        RemoveFile = "remove_file", 1 << 5, 1;
        MakeChar = "make_char", 1 << 6, 1;
        MakeDir = "make_dir", 1 << 7, 1;
        MakeReg = "make_reg", 1 << 8, 1;
        MakeSock = "make_sock", 1 << 9, 1;
        MakeFifo = "make_fifo", 1 << 10, 1;
        MakeBlock = "make_block", 1 << 11, 1;
        MakeSym = "make_sym", 1 << 12, 1;
        Refer = "refer", 1 << 13, 2;
        Truncate = "truncate", 1 << 14, 3;
        IoctlDev = "ioctl_dev", 1 << 15, 5;
    }
);

rights!(
    /// A network access right (`LANDLOCK_ACCESS_NET_*`, TCP only).
    NetRight {
        BindTcp = "bind_tcp", 1 << 0, 4;
        ConnectTcp = "connect_tcp", 1 << 1, 4;
    }
);

rights!(
    /// An IPC scope (`LANDLOCK_SCOPE_*`): deny reaching outside the sandbox's domain.
    Scope {
        /// Connecting to abstract UNIX sockets created outside the domain.
        AbstractUnixSocket = "abstract_unix_socket", 1 << 0, 6;
        /// Sending signals to processes outside the domain.
        Signal = "signal", 1 << 1, 6;
    }
);

rights!(
    /// A `landlock_restrict_self(2)` flag (audit logging, V7).
    RestrictFlag {
        /// Do not log denials of the process that called restrict_self before it execs.
        LogSameExecOff = "log_same_exec_off", 1 << 0, 7;
        /// Log denials after exec too (needed to audit the exec'd agent).
        LogNewExecOn = "log_new_exec_on", 1 << 1, 7;
        /// Do not log denials of nested domains.
        LogSubdomainsOff = "log_subdomains_off", 1 << 2, 7;
    }
);

/// Rights that Landlock accepts on a rule whose path is not a directory.
pub const FILE_RIGHTS: &[FsRight] = &[
    FsRight::Execute,
    FsRight::WriteFile,
    FsRight::ReadFile,
    FsRight::Truncate,
    FsRight::IoctlDev,
];

/// A policy access kind that grants rights (`deny` grants none and is lowered separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    Read,
    Write,
    Exec,
}

/// The exact rights a grant kind maps to (see the module docs for each choice).
pub fn rights_for(kind: GrantKind) -> BTreeSet<FsRight> {
    use FsRight::*;
    let read = [ReadFile, ReadDir];
    match kind {
        GrantKind::Read => read.into_iter().collect(),
        GrantKind::Exec => [Execute, ReadFile, ReadDir].into_iter().collect(),
        GrantKind::Write => read
            .into_iter()
            .chain([
                WriteFile, Truncate, MakeReg, MakeDir, MakeSym, MakeSock, MakeFifo, RemoveFile,
                RemoveDir, Refer,
            ])
            .collect(),
    }
}

/// The fs rights every lowered ruleset handles: all V1 rights plus `refer` and `truncate`,
/// so anything not granted is denied (default deny). `ioctl_dev` is left unhandled (see
/// the module docs).
pub fn handled_fs_default() -> BTreeSet<FsRight> {
    FsRight::ALL
        .iter()
        .copied()
        .filter(|r| *r != FsRight::IoctlDev)
        .collect()
}

/// The highest ABI among `since()` of the given values (V1 when empty: any Landlock).
pub fn min_abi<I: IntoIterator<Item = Abi>>(abis: I) -> Abi {
    abis.into_iter().fold(Abi(1), Ord::max)
}

/// Sum of the bits of a set of fs rights.
pub fn fs_bits<'a>(rights: impl IntoIterator<Item = &'a FsRight>) -> u64 {
    rights.into_iter().fold(0, |acc, r| acc | r.bit())
}

/// Restricts a right set to what Landlock accepts on a non-directory.
pub fn for_file(rights: &BTreeSet<FsRight>) -> BTreeSet<FsRight> {
    rights
        .iter()
        .copied()
        .filter(|r| FILE_RIGHTS.contains(r))
        .collect()
}
