//! What the dynamic loader needs to run a dynamic executable under Landlock.
//!
//! Input: a target architecture name, or an ELF file. Output: the loader paths to grant
//! `exec` on (the compiler adds them as implicit rules), or the `PT_INTERP` path of a file.
//! Invariant: the lists only name loader files; rules on paths missing at launch are skipped.
//!
//! Why: `execve` of a dynamic binary makes the kernel open its `PT_INTERP` interpreter with
//! `__FMODE_EXEC`, which Landlock checks as `execute` (plus `read_file` to map it). So any
//! dynamic binary needs `execute`+`read_file` on `ld.so`; shared libraries only need
//! `read_file` (they are `mmap`ed, which Landlock does not check). The cost: `ld.so` can
//! then also be run directly (`ld.so /usr/bin/x`), and it opens `x` with a plain read and
//! maps it `PROT_EXEC`, which Landlock does not see. The mount plan closes that hole for
//! the executable directories (`/usr/bin`, `/bin`, `/sbin`, `/usr/sbin`, `/usr/local/bin`,
//! writable trees, `/tmp`): they are mounted `noexec`, where `mmap(PROT_EXEC)` fails with
//! `EPERM`, and each granted executable is bind-mounted over itself without `noexec`.
//! Executables kept in library directories (e.g. `/usr/lib/git-core/*`, `/usr/libexec`)
//! stay loadable through `ld.so`, because libraries must stay mappable: a recorded loss.

use super::lower::{FsAccess, FsRule};
use super::template::PathTemplate;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Loader paths for `arch` (`x86_64`, `aarch64`): glibc (merged-/usr and not) and musl.
pub fn loader_paths(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &[
            "/lib/ld-musl-x86_64.so.1",
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "/usr/lib64/ld-linux-x86-64.so.2",
        ],
        "aarch64" => &[
            "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
            "/lib/ld-linux-aarch64.so.1",
            "/lib/ld-musl-aarch64.so.1",
            "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
        ],
        _ => &[],
    }
}

/// The implicit `exec` rules for the loader of `arch`, with origin `implicit: dynamic loader`.
pub fn loader_rules(arch: &str) -> Vec<FsRule> {
    loader_paths(arch)
        .iter()
        .filter_map(|p| PathTemplate::parse(p).ok())
        .map(|path| FsRule {
            path,
            access: FsAccess::Exec,
            origin: "implicit: dynamic loader".to_owned(),
        })
        .collect()
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file (`None` for a static binary or
/// a non-ELF file).
pub fn elf_interpreter(path: &Path) -> io::Result<Option<PathBuf>> {
    let mut f = std::fs::File::open(path)?;
    let mut h = [0u8; 64];
    if f.read(&mut h)? < 64 || h[..4] != *b"\x7fELF" || h[4] != 2 || h[5] != 1 {
        return Ok(None);
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&h[0x20..0x28]);
    let phoff = u64::from_le_bytes(b8);
    let phentsize = u64::from(u16::from_le_bytes([h[0x36], h[0x37]]));
    let phnum = u64::from(u16::from_le_bytes([h[0x38], h[0x39]]));
    for i in 0..phnum.min(256) {
        let mut ph = [0u8; 56];
        f.seek(SeekFrom::Start(
            phoff.saturating_add(i.saturating_mul(phentsize)),
        ))?;
        f.read_exact(&mut ph)?;
        if u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) != 3 {
            continue; // not PT_INTERP
        }
        b8.copy_from_slice(&ph[8..16]);
        let off = u64::from_le_bytes(b8);
        b8.copy_from_slice(&ph[32..40]);
        let size = u64::from_le_bytes(b8).min(4096);
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
        f.seek(SeekFrom::Start(off))?;
        f.read_exact(&mut buf)?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        buf.truncate(end);
        return Ok(Some(PathBuf::from(
            String::from_utf8_lossy(&buf).into_owned(),
        )));
    }
    Ok(None)
}
