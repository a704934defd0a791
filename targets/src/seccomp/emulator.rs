//! A classic BPF interpreter with the kernel's seccomp semantics.
//!
//! Input: a program and one [`SeccompData`]. Output: the 32-bit return value the kernel would
//! act on, and how many instructions ran (the benchmark's cost measure). Invariants: every
//! instruction the kernel's seccomp checker accepts is executed as the kernel does (32-bit
//! `A`/`X`, 16 scratch words, only aligned 32-bit absolute loads inside the 64-byte
//! `seccomp_data`, `LEN` = 64, unsigned compares, forward jumps only); anything else is a
//! typed error, never a panic, and every run terminates because jumps only go forward.

use super::bpf::*;
use super::spec::SeccompData;

/// Size of `struct seccomp_data`.
pub const SECCOMP_DATA_LEN: u32 = 64;

/// Result of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The filter's return value (`SECCOMP_RET_*` | data).
    pub ret: u32,
    /// Instructions executed, the final `ret` included.
    pub executed: usize,
}

/// A program the kernel would reject or that misbehaves on this input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    #[error("BPF: execution ran off the end of the program at instruction {pc}")]
    RanOffEnd { pc: usize },
    #[error("BPF instruction {pc}: load from offset {offset} outside seccomp_data or unaligned")]
    BadLoad { pc: usize, offset: u32 },
    #[error("BPF instruction {pc}: scratch slot {slot} out of range (0..16)")]
    BadScratch { pc: usize, slot: u32 },
    #[error("BPF instruction {pc}: opcode {code:#06x} is not allowed in a seccomp filter")]
    BadOpcode { pc: usize, code: u16 },
    #[error("BPF instruction {pc}: division by zero")]
    DivByZero { pc: usize },
}

/// Run `program` on `data`; the filter's return value.
pub fn run(program: &[SockFilter], data: &SeccompData) -> Result<u32, EmuError> {
    run_counted(program, data).map(|o| o.ret)
}

/// Run `program` on `data`, counting executed instructions.
pub fn run_counted(program: &[SockFilter], data: &SeccompData) -> Result<Outcome, EmuError> {
    run_inner(program, data, None)
}

/// Run `program` on `data` and return the indices of the executed instructions (for
/// `aegisc explain-syscall`: print those lines of the disassembly).
pub fn run_traced(
    program: &[SockFilter],
    data: &SeccompData,
) -> Result<(Outcome, Vec<usize>), EmuError> {
    let mut trace = Vec::new();
    let o = run_inner(program, data, Some(&mut trace))?;
    Ok((o, trace))
}

fn run_inner(
    program: &[SockFilter],
    data: &SeccompData,
    mut trace: Option<&mut Vec<usize>>,
) -> Result<Outcome, EmuError> {
    let bytes = data.to_bytes();
    let word = |pc: usize, off: u32| -> Result<u32, EmuError> {
        let o = off as usize;
        if !off.is_multiple_of(4) || off >= SECCOMP_DATA_LEN {
            return Err(EmuError::BadLoad { pc, offset: off });
        }
        match bytes.get(o..o + 4).and_then(|w| <[u8; 4]>::try_from(w).ok()) {
            Some(w) => Ok(u32::from_ne_bytes(w)),
            None => Err(EmuError::BadLoad { pc, offset: off }),
        }
    };
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; 16];
    let mut pc: usize = 0;
    let mut executed = 0usize;
    loop {
        let Some(ins) = program.get(pc) else {
            return Err(EmuError::RanOffEnd { pc });
        };
        executed += 1;
        if let Some(t) = trace.as_deref_mut() {
            t.push(pc);
        }
        let k = ins.k;
        let bad = || EmuError::BadOpcode { pc, code: ins.code };
        let slot = |s: u32| -> Result<usize, EmuError> {
            if s < 16 {
                Ok(s as usize)
            } else {
                Err(EmuError::BadScratch { pc, slot: s })
            }
        };
        match ins.class() {
            BPF_LD | BPF_LDX => {
                let size = ins.code & 0x18;
                let mode = ins.code & 0xe0;
                let v = match mode {
                    BPF_ABS if size == BPF_W && ins.class() == BPF_LD => word(pc, k)?,
                    BPF_IMM if size == BPF_W => k,
                    BPF_MEM if size == BPF_W => mem.get(slot(k)?).copied().unwrap_or(0),
                    BPF_LEN if size == BPF_W => SECCOMP_DATA_LEN,
                    _ => return Err(bad()),
                };
                if ins.class() == BPF_LD {
                    a = v;
                } else {
                    x = v;
                }
                pc += 1;
            }
            BPF_ST | BPF_STX => {
                if ins.code & !0x07 != 0 {
                    return Err(bad());
                }
                let v = if ins.class() == BPF_ST { a } else { x };
                if let Some(m) = mem.get_mut(slot(k)?) {
                    *m = v;
                }
                pc += 1;
            }
            BPF_ALU => {
                let src = if ins.code & BPF_X != 0 { x } else { k };
                a = match ins.code & 0xf0 {
                    BPF_ADD => a.wrapping_add(src),
                    BPF_SUB => a.wrapping_sub(src),
                    BPF_MUL => a.wrapping_mul(src),
                    BPF_DIV => a.checked_div(src).ok_or(EmuError::DivByZero { pc })?,
                    BPF_MOD => a.checked_rem(src).ok_or(EmuError::DivByZero { pc })?,
                    BPF_AND => a & src,
                    BPF_OR => a | src,
                    BPF_XOR => a ^ src,
                    BPF_LSH => a.checked_shl(src).unwrap_or(0),
                    BPF_RSH => a.checked_shr(src).unwrap_or(0),
                    BPF_NEG => a.wrapping_neg(),
                    _ => return Err(bad()),
                };
                pc += 1;
            }
            BPF_JMP => {
                let src = if ins.code & BPF_X != 0 { x } else { k };
                let next = pc + 1;
                pc = match ins.code & 0xf0 {
                    BPF_JA => next + k as usize,
                    op => {
                        let taken = match op {
                            BPF_JEQ => a == src,
                            BPF_JGT => a > src,
                            BPF_JGE => a >= src,
                            BPF_JSET => a & src != 0,
                            _ => return Err(bad()),
                        };
                        next + usize::from(if taken { ins.jt } else { ins.jf })
                    }
                };
            }
            BPF_RET => {
                let ret = match ins.code & 0x18 {
                    BPF_K => k,
                    BPF_A => a,
                    _ => return Err(bad()),
                };
                return Ok(Outcome { ret, executed });
            }
            _ => {
                // BPF_MISC
                match ins.code & 0xf8 {
                    BPF_TAX => x = a,
                    BPF_TXA => a = x,
                    _ => return Err(bad()),
                }
                pc += 1;
            }
        }
    }
}
