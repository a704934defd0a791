//! Classic BPF instructions (`struct sock_filter`) and their raw encoding.
//!
//! Input/output: a program as `[SockFilter]` ↔ the raw bytes of a `struct sock_filter` array
//! (8 bytes each: `u16 code, u8 jt, u8 jf, u32 k`, little-endian, as the kernel reads it on
//! both supported hosts). Invariant: `from_bytes(to_bytes(p)) == p`; `from_bytes` rejects a
//! length that is not a multiple of 8, an empty program and one longer than 4096.

use serde::{Deserialize, Serialize};

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
pub const BPF_MAXINSNS: usize = 4096;

// Instruction classes.
pub const BPF_LD: u16 = 0x00;
pub const BPF_LDX: u16 = 0x01;
pub const BPF_ST: u16 = 0x02;
pub const BPF_STX: u16 = 0x03;
pub const BPF_ALU: u16 = 0x04;
pub const BPF_JMP: u16 = 0x05;
pub const BPF_RET: u16 = 0x06;
pub const BPF_MISC: u16 = 0x07;
// Sizes.
pub const BPF_W: u16 = 0x00;
pub const BPF_H: u16 = 0x08;
pub const BPF_B: u16 = 0x10;
// Modes.
pub const BPF_IMM: u16 = 0x00;
pub const BPF_ABS: u16 = 0x20;
pub const BPF_IND: u16 = 0x40;
pub const BPF_MEM: u16 = 0x60;
pub const BPF_LEN: u16 = 0x80;
// ALU and jump operations.
pub const BPF_ADD: u16 = 0x00;
pub const BPF_SUB: u16 = 0x10;
pub const BPF_MUL: u16 = 0x20;
pub const BPF_DIV: u16 = 0x30;
pub const BPF_OR: u16 = 0x40;
pub const BPF_AND: u16 = 0x50;
pub const BPF_LSH: u16 = 0x60;
pub const BPF_RSH: u16 = 0x70;
pub const BPF_NEG: u16 = 0x80;
pub const BPF_MOD: u16 = 0x90;
pub const BPF_XOR: u16 = 0xa0;
pub const BPF_JA: u16 = 0x00;
pub const BPF_JEQ: u16 = 0x10;
pub const BPF_JGT: u16 = 0x20;
pub const BPF_JGE: u16 = 0x30;
pub const BPF_JSET: u16 = 0x40;
// Sources.
pub const BPF_K: u16 = 0x00;
pub const BPF_X: u16 = 0x08;
pub const BPF_A: u16 = 0x10;
// Misc.
pub const BPF_TAX: u16 = 0x00;
pub const BPF_TXA: u16 = 0x80;

/// Offsets in `struct seccomp_data`.
pub const OFF_NR: u32 = 0;
pub const OFF_ARCH: u32 = 4;
pub const OFF_IP: u32 = 8;
pub const OFF_ARGS: u32 = 16;

/// Low 32 bits of argument `i` (little-endian `seccomp_data`).
pub const fn arg_lo(i: u8) -> u32 {
    OFF_ARGS + 8 * i as u32
}

/// High 32 bits of argument `i`.
pub const fn arg_hi(i: u8) -> u32 {
    OFF_ARGS + 8 * i as u32 + 4
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(C)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl SockFilter {
    /// A non-jump instruction.
    pub const fn stmt(code: u16, k: u32) -> SockFilter {
        SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A conditional jump (offsets relative to the next instruction).
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }

    /// `A = seccomp_data[off]` (32-bit word).
    pub const fn load(off: u32) -> SockFilter {
        SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, off)
    }

    /// `return k`.
    pub const fn ret(k: u32) -> SockFilter {
        SockFilter::stmt(BPF_RET | BPF_K, k)
    }

    /// The instruction class (`BPF_CLASS`).
    pub const fn class(&self) -> u16 {
        self.code & 0x07
    }
}

/// Errors decoding a raw program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("raw BPF program of {len} bytes is not a whole number of 8-byte instructions")]
    Truncated { len: usize },
    #[error("raw BPF program is empty")]
    Empty,
    #[error("raw BPF program has {count} instructions, more than the kernel's 4096")]
    TooLong { count: usize },
}

/// The raw `struct sock_filter` array.
pub fn to_bytes(program: &[SockFilter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out
}

/// Parse a raw `struct sock_filter` array.
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<SockFilter>, DecodeError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let count = bytes.len() / 8;
    if count > BPF_MAXINSNS {
        return Err(DecodeError::TooLong { count });
    }
    Ok(bytes
        .as_chunks::<8>()
        .0
        .iter()
        .map(|c| SockFilter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}
