//! Code generation: [`SeccompSpec`] → classic BPF for one architecture.
//!
//! Input: a validated spec, the target [`Arch`] and syscall weights (how often each syscall is
//! made). Output: a `Vec<SockFilter>` whose verdict for every `seccomp_data` equals
//! [`decide`](super::spec::decide). Invariants: the architecture is checked first (foreign →
//! KILL_PROCESS); syscall numbers are partitioned into maximal ranges with the same outcome
//! (everything above the highest known number, x32 and -1 included, is one ENOSYS range) and
//! searched with an optimal weighted binary tree of `jge` instructions, so hot syscalls take
//! the fewest instructions; a path that loads an argument exists only below a syscall whose
//! outcome depends on arguments, so every constant outcome — always-allowed syscalls in
//! particular — is decided from `arch` and `nr` alone (the kernel's action cache sees it);
//! 64-bit comparisons test both 32-bit halves; jumps beyond 255 go through a nearby copy of
//! the `ret` or a `ja`; more than 4096 instructions is a typed error; the same input gives
//! the same bytes (only ordered maps, integer weights, deterministic tie-breaks).

use std::collections::BTreeMap;

use super::bpf::*;
use super::spec::{Action, ArgCond, CmpOp, ENOSYS, SeccompSpec, SpecError};
use super::syscalls::Arch;

/// How often each syscall is made (by name); shapes the search tree, never the verdicts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyscallWeights {
    pub counts: BTreeMap<String, u64>,
}

/// The agent-like syscall mix recorded with `strace -c -f` (see `bench-data/`).
pub const AGENT_MIX: &str = include_str!("../../bench-data/syscall-mix.txt");

impl SyscallWeights {
    /// Parse `strace -c` output: the `calls` column by syscall name (other lines ignored).
    pub fn from_strace_summary(text: &str) -> SyscallWeights {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(first), Some(name), Some(calls)) = (cols.first(), cols.last(), cols.get(3))
            else {
                continue;
            };
            if first.parse::<f64>().is_err() || *name == "total" {
                continue;
            }
            if let Ok(n) = calls.parse::<u64>() {
                *counts.entry((*name).to_owned()).or_insert(0) += n;
            }
        }
        SyscallWeights { counts }
    }

    /// The recorded agent mix shipped with the crate.
    pub fn agent_mix() -> SyscallWeights {
        SyscallWeights::from_strace_summary(AGENT_MIX)
    }

    /// Count for `name` (0 if never seen).
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// Why a spec could not be turned into a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(
        "seccomp filter for {arch} needs {len} instructions, more than the kernel's limit of \
         4096; reduce argument conditions or merge syscalls with the same action"
    )]
    TooLong { arch: Arch, len: usize },
}

/// What one syscall number leads to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Leaf {
    Ret(Action),
    /// Rules (conditions → action) tried in order, then `fallback`.
    Args {
        rules: Vec<(Vec<ArgCond>, Action)>,
        fallback: Action,
    },
}

fn leaf_for(spec: &SeccompSpec, arch: Arch, nr: u32) -> Leaf {
    if let Some(a) = spec.constant_action(arch, nr) {
        return Leaf::Ret(a);
    }
    // constant_action is None only for known names that are not clone3.
    let name = arch.syscall_name(nr).unwrap_or("");
    let mut rules = Vec::new();
    for r in spec.rules_for(arch, name) {
        rules.push((r.conds.clone(), r.action));
        if r.conds.is_empty() {
            break; // later rules can never be reached
        }
    }
    Leaf::Args {
        rules,
        fallback: spec.default_action,
    }
}

/// A maximal run of syscall numbers `lo..=hi` with the same leaf.
#[derive(Debug, Clone)]
struct Range {
    lo: u32,
    leaf: Leaf,
    weight: u64,
}

fn ranges(spec: &SeccompSpec, arch: Arch, weights: &SyscallWeights) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    let mut push = |nr: u32, leaf: Leaf, w: u64| match out.last_mut() {
        Some(last) if last.leaf == leaf => last.weight += w,
        _ => out.push(Range {
            lo: nr,
            leaf,
            weight: w,
        }),
    };
    for nr in 0..=arch.highest_nr() {
        let w = arch.syscall_name(nr).map_or(0, |n| weights.get(n));
        push(nr, leaf_for(spec, arch, nr), w);
    }
    // Everything above: future syscalls, x32 numbers (bit 30), -1.
    push(
        arch.highest_nr().saturating_add(1),
        Leaf::Ret(Action::Errno(ENOSYS)),
        0,
    );
    // A floor weight keeps rarely used ranges from sinking arbitrarily deep, while staying
    // below one real call in total.
    let n = out.len() as u64;
    for r in &mut out {
        r.weight = r.weight.saturating_mul(n).saturating_add(1);
    }
    out
}

/// Optimal alphabetic binary tree over the ranges (Knuth's O(n²) dynamic programme):
/// `root[i][j]` is the first range of the right subtree of the node covering `i..=j`.
#[allow(
    clippy::indexing_slicing,
    reason = "the programme's indices are in bounds by construction: 0 <= i <= s - 1 < s <= j < n \
              for cost and root (n x n), j + 1 <= n for prefix (n + 1 entries)"
)]
fn optimal_roots(ranges: &[Range]) -> Vec<Vec<usize>> {
    let n = ranges.len();
    let mut prefix = vec![0u64; n + 1];
    for (i, r) in ranges.iter().enumerate() {
        prefix[i + 1] = prefix[i].saturating_add(r.weight);
    }
    let w = |i: usize, j: usize| prefix[j + 1] - prefix[i];
    let mut cost = vec![vec![0u64; n]; n];
    let mut root = vec![vec![0usize; n]; n];
    for (i, row) in root.iter_mut().enumerate() {
        row[i] = i;
    }
    for len in 2..=n {
        for i in 0..=n - len {
            let j = i + len - 1;
            let lo = if len == 2 {
                i + 1
            } else {
                root[i][j - 1].max(i + 1)
            };
            let hi = if len == 2 { j } else { root[i + 1][j].min(j) };
            let mut best = (u64::MAX, lo);
            for s in lo..=hi.max(lo) {
                let c = cost[i][s - 1].saturating_add(cost[s][j]);
                if c < best.0 {
                    best = (c, s);
                }
            }
            cost[i][j] = best.0.saturating_add(w(i, j));
            root[i][j] = best.1;
        }
    }
    root
}

/// Builds the program backwards (from the last instruction), so every jump target is known
/// when the jump is emitted. A label is an index into `rev` (position from the end).
struct Emitter {
    rev: Vec<SockFilter>,
    /// The nearest copy of each `ret k` emitted so far.
    rets: BTreeMap<u32, usize>,
    /// Labels of argument blocks already emitted.
    blocks: BTreeMap<Leaf, usize>,
}

impl Emitter {
    fn push(&mut self, ins: SockFilter) -> usize {
        self.rev.push(ins);
        self.rev.len() - 1
    }

    fn ret(&mut self, action: Action) -> usize {
        let k = action.to_ret();
        match self.rets.get(&k) {
            Some(l) => *l,
            None => {
                let l = self.push(SockFilter::ret(k));
                self.rets.insert(k, l);
                l
            }
        }
    }

    /// Distance a jump placed at the next position needs to reach `target`.
    fn dist(&self, target: usize) -> usize {
        self.rev.len() - target - 1
    }

    /// A label equivalent to `target` that is close to the next position.
    fn near(&mut self, target: usize) -> usize {
        let t = self.rev.get(target).copied();
        match t {
            Some(ins) if ins.code == BPF_RET | BPF_K => {
                let l = self.push(ins);
                self.rets.insert(ins.k, l);
                l
            }
            _ => {
                let off = self.dist(target) as u32;
                self.push(SockFilter::stmt(BPF_JMP | BPF_JA, off))
            }
        }
    }

    /// Emit `if (A <op> k) goto jt else goto jf`, adding trampolines for long jumps.
    fn cond(&mut self, op: u16, k: u32, mut jt: usize, mut jf: usize) -> usize {
        loop {
            let (dt, df) = (self.dist(jt), self.dist(jf));
            if dt <= 255 && df <= 255 {
                return self.push(SockFilter::jump(
                    BPF_JMP | op | BPF_K,
                    k,
                    dt as u8,
                    df as u8,
                ));
            }
            if dt >= df {
                jt = self.near(jt);
            } else {
                jf = self.near(jf);
            }
        }
    }

    /// Make `target` the next instruction in program order (for fall-through).
    fn fall_into(&mut self, target: usize) {
        if self.rev.len().checked_sub(1) != Some(target) {
            self.near(target);
        }
    }

    /// `A = <word at off>` falling into `next`.
    fn load(&mut self, off: u32, next: usize) -> usize {
        self.fall_into(next);
        self.push(SockFilter::load(off))
    }

    fn leaf(&mut self, leaf: &Leaf) -> usize {
        match leaf {
            Leaf::Ret(a) => self.ret(*a),
            Leaf::Args { rules, fallback } => {
                if let Some(l) = self.blocks.get(leaf) {
                    return *l;
                }
                let mut next = self.ret(*fallback);
                for (conds, action) in rules.iter().rev() {
                    let mut pass = self.ret(*action);
                    for c in conds.iter().rev() {
                        pass = self.arg_cond(c, pass, next);
                    }
                    next = pass;
                }
                self.blocks.insert(leaf.clone(), next);
                next
            }
        }
    }

    /// Code that goes to `pass` when `c` holds, else to `fail`.
    fn arg_cond(&mut self, c: &ArgCond, pass: usize, fail: usize) -> usize {
        if pass == fail {
            return pass;
        }
        let (vh, vl) = ((c.value >> 32) as u32, c.value as u32);
        let (hi, lo) = (arg_hi(c.index), arg_lo(c.index));
        match c.op {
            CmpOp::Eq => self.eq(hi, lo, vh, vl, pass, fail),
            CmpOp::Ne => self.eq(hi, lo, vh, vl, fail, pass),
            CmpOp::Gt => self.greater(hi, lo, vh, vl, BPF_JGT, pass, fail),
            CmpOp::Ge => self.greater(hi, lo, vh, vl, BPF_JGE, pass, fail),
            CmpOp::Le => self.greater(hi, lo, vh, vl, BPF_JGT, fail, pass),
            CmpOp::Lt => self.greater(hi, lo, vh, vl, BPF_JGE, fail, pass),
            CmpOp::MaskedEq(m) => {
                let (mh, ml) = ((m >> 32) as u32, m as u32);
                let lo_label = self.masked_word(lo, ml, vl, pass, fail);
                self.masked_word(hi, mh, vh, lo_label, fail)
            }
        }
    }

    fn eq(&mut self, hi: u32, lo: u32, vh: u32, vl: u32, pass: usize, fail: usize) -> usize {
        let j = self.cond(BPF_JEQ, vl, pass, fail);
        let lo_label = self.load(lo, j);
        let j = self.cond(BPF_JEQ, vh, lo_label, fail);
        self.load(hi, j)
    }

    /// `(word & mask) == value` → pass; a zero mask holds trivially (validation ensured
    /// the value has no bits outside the mask).
    fn masked_word(&mut self, off: u32, mask: u32, value: u32, pass: usize, fail: usize) -> usize {
        if mask == 0 {
            return pass;
        }
        let j = self.cond(BPF_JEQ, value, pass, fail);
        let next = if mask == u32::MAX {
            j
        } else {
            self.fall_into(j);
            self.push(SockFilter::stmt(BPF_ALU | BPF_AND | BPF_K, mask))
        };
        self.load(off, next)
    }

    /// `arg > v` (op = JGT) or `arg >= v` (op = JGE), unsigned 64-bit: the high words decide
    /// unless equal, then the low words.
    #[allow(clippy::too_many_arguments, reason = "the two argument words, the two value words, the comparison and both targets")]
    fn greater(
        &mut self,
        hi: u32,
        lo: u32,
        vh: u32,
        vl: u32,
        op: u16,
        pass: usize,
        fail: usize,
    ) -> usize {
        let j = self.cond(op, vl, pass, fail);
        let lo_label = self.load(lo, j);
        let top = match vh {
            // hi > 0 decides; otherwise hi == 0 and the low word decides.
            0 => self.cond(BPF_JGT, 0, pass, lo_label),
            // hi > u32::MAX is impossible: hi == MAX → low word, else fail.
            u32::MAX => self.cond(BPF_JEQ, vh, lo_label, fail),
            _ => {
                let eq = self.cond(BPF_JEQ, vh, lo_label, fail);
                self.cond(BPF_JGT, vh, pass, eq)
            }
        };
        self.load(hi, top)
    }

    fn tree(&mut self, ranges: &[Range], roots: &[Vec<usize>], i: usize, j: usize) -> usize {
        if i == j {
            return match ranges.get(i) {
                Some(r) => self.leaf(&r.leaf),
                None => self.ret(Action::KillProcess),
            };
        }
        let s = roots
            .get(i)
            .and_then(|r| r.get(j))
            .copied()
            .unwrap_or(i + 1);
        let right = self.tree(ranges, roots, s, j);
        let left = self.tree(ranges, roots, i, s - 1);
        let k = ranges.get(s).map_or(0, |r| r.lo);
        self.cond(BPF_JGE, k, right, left)
    }
}

/// Remove `A = word` loads where every path already holds that word in `A` (argument
/// blocks of consecutive rules reload the same half), and relink the jumps. Jumps only get
/// shorter, so the 255 limit still holds; a jump to a removed load lands on its successor,
/// which is what the load would have fallen into.
fn drop_redundant_loads(program: Vec<SockFilter>) -> Vec<SockFilter> {
    let n = program.len();
    // known[pc]: Some(Some(off)) = A holds word `off` on every path into pc.
    let mut known: Vec<Option<Option<u32>>> = vec![None; n + 1];
    let mut redundant = vec![false; n];
    if let Some(k) = known.get_mut(0) {
        *k = Some(None);
    }
    let flow = |known: &mut Vec<Option<Option<u32>>>, t: usize, v: Option<u32>| {
        if let Some(slot) = known.get_mut(t) {
            *slot = Some(match *slot {
                None => v,
                Some(old) if old == v => v,
                Some(_) => None,
            });
        }
    };
    for (pc, ins) in program.iter().enumerate() {
        let here = known.get(pc).copied().flatten().flatten();
        let next = pc + 1;
        match ins.class() {
            BPF_LD if ins.code == BPF_LD | BPF_W | BPF_ABS => {
                if here == Some(ins.k)
                    && let Some(r) = redundant.get_mut(pc)
                {
                    *r = true;
                }
                flow(&mut known, next, Some(ins.k));
            }
            BPF_JMP if ins.code & 0xf0 == BPF_JA => flow(&mut known, next + ins.k as usize, here),
            BPF_JMP => {
                flow(&mut known, next + usize::from(ins.jt), here);
                flow(&mut known, next + usize::from(ins.jf), here);
            }
            BPF_RET => {}
            _ => flow(&mut known, next, None),
        }
    }
    let mut new_index = Vec::with_capacity(n + 1);
    let mut kept = 0usize;
    for r in &redundant {
        new_index.push(kept);
        if !r {
            kept += 1;
        }
    }
    new_index.push(kept);
    let at = |i: usize| new_index.get(i).copied().unwrap_or(kept);
    let mut out = Vec::with_capacity(kept);
    for (pc, ins) in program.iter().enumerate() {
        if redundant.get(pc).copied().unwrap_or(false) {
            continue;
        }
        let mut ins = *ins;
        let me = at(pc) + 1;
        if ins.class() == BPF_JMP {
            if ins.code & 0xf0 == BPF_JA {
                ins.k = (at(pc + 1 + ins.k as usize) - me) as u32;
            } else {
                ins.jt = (at(pc + 1 + usize::from(ins.jt)) - me) as u8;
                ins.jf = (at(pc + 1 + usize::from(ins.jf)) - me) as u8;
            }
        }
        out.push(ins);
    }
    out
}

/// Compile `spec` for `arch`.
pub fn compile(
    spec: &SeccompSpec,
    arch: Arch,
    weights: &SyscallWeights,
) -> Result<Vec<SockFilter>, CodegenError> {
    spec.validate()?;
    let ranges = ranges(spec, arch, weights);
    let roots = optimal_roots(&ranges);
    let mut e = Emitter {
        rev: Vec::new(),
        rets: BTreeMap::new(),
        blocks: BTreeMap::new(),
    };
    let root = e.tree(&ranges, &roots, 0, ranges.len() - 1);
    let load_nr = e.load(OFF_NR, root);
    let kill = e.ret(Action::KillProcess);
    let check = e.cond(BPF_JEQ, arch.audit_arch(), load_nr, kill);
    e.load(OFF_ARCH, check);
    let mut program = e.rev;
    program.reverse();
    let program = drop_redundant_loads(program);
    if program.len() > BPF_MAXINSNS {
        return Err(CodegenError::TooLong {
            arch,
            len: program.len(),
        });
    }
    Ok(program)
}

/// Compile `spec` for every supported architecture.
pub fn compile_all(
    spec: &SeccompSpec,
    weights: &SyscallWeights,
) -> Result<BTreeMap<Arch, Vec<SockFilter>>, CodegenError> {
    Arch::ALL
        .iter()
        .map(|a| compile(spec, *a, weights).map(|p| (*a, p)))
        .collect()
}
