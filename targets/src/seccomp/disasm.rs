//! Disassembler: classic BPF → text a reviewer can read (seccomp-tools style).
//!
//! Input: a program and, optionally, the architecture it filters (to name syscall numbers).
//! Output: one line per instruction, `NNNN: <meaning>` with `# comment` naming the syscall or
//! architecture a constant stands for, e.g. `0012: if (A == 0x3b) goto 0014 else goto 0013  #
//! execve` or `0031: return ERRNO(1)`. Invariants: never fails (unknown opcodes are printed
//! as raw fields); the comments come from a forward data-flow pass that knows what `A` holds
//! (arch, syscall number, an argument half), and are left out where paths disagree.

use std::fmt::Write as _;

use super::bpf::*;
use super::spec::Action;
use super::syscalls::{self, Arch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Unknown,
    Arch,
    Nr,
    Other,
}

fn merge(a: Option<Held>, b: Held) -> Held {
    match a {
        None => b,
        Some(x) if x == b => b,
        Some(_) => Held::Unknown,
    }
}

fn field(k: u32) -> String {
    match k {
        OFF_NR => "sys_number".to_owned(),
        OFF_ARCH => "arch".to_owned(),
        OFF_IP => "instruction_pointer".to_owned(),
        12 => "instruction_pointer >> 32".to_owned(),
        k if (OFF_ARGS..OFF_ARGS + 48).contains(&k) && k % 4 == 0 => {
            let i = (k - OFF_ARGS) / 8;
            if (k - OFF_ARGS).is_multiple_of(8) {
                format!("args[{i}]")
            } else {
                format!("args[{i}] >> 32")
            }
        }
        k => format!("data[{k}]"),
    }
}

fn arch_name(k: u32) -> Option<&'static str> {
    match k {
        syscalls::AUDIT_ARCH_X86_64 => Some("AUDIT_ARCH_X86_64"),
        syscalls::AUDIT_ARCH_AARCH64 => Some("AUDIT_ARCH_AARCH64"),
        syscalls::AUDIT_ARCH_I386 => Some("AUDIT_ARCH_I386"),
        syscalls::AUDIT_ARCH_ARM => Some("AUDIT_ARCH_ARM"),
        _ => None,
    }
}

/// Text of a return value, e.g. `ERRNO(1)`.
pub fn ret_text(k: u32) -> String {
    let a = Action::from_ret(k);
    if a.to_ret() == k {
        a.to_string()
    } else {
        format!("{k:#010x}")
    }
}

/// Disassemble `program`; `arch` names syscall numbers in comments.
pub fn disassemble(program: &[SockFilter], arch: Option<Arch>) -> String {
    let n = program.len();
    let mut held: Vec<Option<Held>> = vec![None; n + 1];
    if let Some(h) = held.get_mut(0) {
        *h = Some(Held::Unknown);
    }
    let mut out = String::new();
    for (pc, ins) in program.iter().enumerate() {
        let here = held.get(pc).copied().flatten().unwrap_or(Held::Unknown);
        let mut flow = |target: usize, h: Held| {
            if let Some(slot) = held.get_mut(target) {
                *slot = Some(merge(*slot, h));
            }
        };
        let k = ins.k;
        let next = pc + 1;
        let (text, comment): (String, Option<String>) = match (ins.class(), ins.code & 0xe0) {
            (BPF_LD, BPF_ABS) if ins.code & 0x18 == BPF_W => {
                let h = match k {
                    OFF_NR => Held::Nr,
                    OFF_ARCH => Held::Arch,
                    _ => Held::Other,
                };
                flow(next, h);
                (format!("A = {}", field(k)), None)
            }
            (BPF_LD | BPF_LDX, mode) => {
                let reg = if ins.class() == BPF_LD { "A" } else { "X" };
                let src = match mode {
                    BPF_IMM => format!("{k:#x}"),
                    BPF_MEM => format!("mem[{k}]"),
                    BPF_LEN => "64".to_owned(),
                    _ => format!("<code {:#06x} k {k:#x}>", ins.code),
                };
                flow(next, if reg == "A" { Held::Other } else { here });
                (format!("{reg} = {src}"), None)
            }
            (BPF_ST, _) => {
                flow(next, here);
                (format!("mem[{k}] = A"), None)
            }
            (BPF_STX, _) => {
                flow(next, here);
                (format!("mem[{k}] = X"), None)
            }
            (BPF_ALU, _) => {
                let src = if ins.code & BPF_X != 0 {
                    "X".to_owned()
                } else {
                    format!("{k:#x}")
                };
                let op = match ins.code & 0xf0 {
                    BPF_ADD => "+=",
                    BPF_SUB => "-=",
                    BPF_MUL => "*=",
                    BPF_DIV => "/=",
                    BPF_MOD => "%=",
                    BPF_AND => "&=",
                    BPF_OR => "|=",
                    BPF_XOR => "^=",
                    BPF_LSH => "<<=",
                    BPF_RSH => ">>=",
                    _ => "",
                };
                flow(next, Held::Other);
                if ins.code & 0xf0 == BPF_NEG {
                    ("A = -A".to_owned(), None)
                } else {
                    (format!("A {op} {src}"), None)
                }
            }
            (BPF_JMP, _) if ins.code & 0xf0 == BPF_JA => {
                let t = next + k as usize;
                flow(t, here);
                (format!("goto {t:04}"), None)
            }
            (BPF_JMP, _) => {
                let (t, f) = (next + usize::from(ins.jt), next + usize::from(ins.jf));
                flow(t, here);
                flow(f, here);
                let x = ins.code & BPF_X != 0;
                let rhs = if x { "X".to_owned() } else { format!("{k:#x}") };
                let cond = match ins.code & 0xf0 {
                    BPF_JEQ => format!("A == {rhs}"),
                    BPF_JGT => format!("A > {rhs}"),
                    BPF_JGE => format!("A >= {rhs}"),
                    BPF_JSET => format!("A & {rhs}"),
                    _ => format!("<code {:#06x}> {rhs}", ins.code),
                };
                let comment = match (here, x) {
                    (Held::Nr, false) => arch.and_then(|a| a.syscall_name(k)).map(str::to_owned),
                    (Held::Arch, false) => arch_name(k).map(str::to_owned),
                    _ => None,
                };
                (format!("if ({cond}) goto {t:04} else goto {f:04}"), comment)
            }
            (BPF_RET, _) => match ins.code & 0x18 {
                BPF_A => ("return A".to_owned(), None),
                _ => (format!("return {}", ret_text(k)), None),
            },
            _ => match ins.code & 0xf8 {
                BPF_TAX => {
                    flow(next, here);
                    ("X = A".to_owned(), None)
                }
                BPF_TXA => {
                    flow(next, Held::Other);
                    ("A = X".to_owned(), None)
                }
                _ => (
                    format!(
                        "<code {:#06x} jt {} jf {} k {k:#x}>",
                        ins.code, ins.jt, ins.jf
                    ),
                    None,
                ),
            },
        };
        let _ = match comment {
            Some(c) => writeln!(out, "{pc:04}: {text}  # {c}"),
            None => writeln!(out, "{pc:04}: {text}"),
        };
    }
    out
}
