//! RFC 6962 (RFC 9162 §2.1) Merkle tree over record hashes. Input: the record hashes of a log in
//! order (the "leaf data", 32 bytes each); output: tree heads, inclusion and consistency proofs and
//! their verification. Invariants: leaf hash = `SHA-256(0x00 || record hash)`, node hash =
//! `SHA-256(0x01 || left || right)`, the empty tree's head is `SHA-256("")`, and the split point
//! of `n > 1` leaves is the largest power of two below `n`. [`Frontier`] computes the same head
//! incrementally in O(log n) memory.

use sha2::{Digest as _, Sha256};

use crate::record::Digest;

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn empty_root() -> Digest {
    Sha256::digest([]).into()
}

fn split(n: usize) -> usize {
    // Largest power of two strictly below n (n >= 2).
    let mut k = 1usize;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// Merkle tree head of `leaves` (record hashes).
pub fn root(leaves: &[Digest]) -> Digest {
    match leaves {
        [] => empty_root(),
        [one] => leaf_hash(one),
        _ => {
            let (l, r) = leaves.split_at(split(leaves.len()));
            node_hash(&root(l), &root(r))
        }
    }
}

/// Audit path for leaf `index` in the tree over `leaves` (RFC 6962 §2.1.1); `None` if out of range.
pub fn inclusion_proof(leaves: &[Digest], index: usize) -> Option<Vec<Digest>> {
    if index >= leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

fn path(m: usize, d: &[Digest], out: &mut Vec<Digest>) {
    if d.len() <= 1 {
        return;
    }
    let k = split(d.len());
    let (l, r) = d.split_at(k);
    if m < k {
        path(m, l, out);
        out.push(root(r));
    } else {
        path(m - k, r, out);
        out.push(root(l));
    }
}

/// Consistency proof between the first `m` leaves and all of `leaves` (RFC 6962 §2.1.2);
/// `None` unless `0 < m <= leaves.len()`.
pub fn consistency_proof(leaves: &[Digest], m: usize) -> Option<Vec<Digest>> {
    if m == 0 || m > leaves.len() {
        return None;
    }
    let mut out = Vec::new();
    subproof(m, leaves, true, &mut out);
    Some(out)
}

fn subproof(m: usize, d: &[Digest], complete: bool, out: &mut Vec<Digest>) {
    if m == d.len() {
        if !complete {
            out.push(root(d));
        }
        return;
    }
    let k = split(d.len());
    let (l, r) = d.split_at(k);
    if m <= k {
        subproof(m, l, complete, out);
        out.push(root(r));
    } else {
        subproof(m - k, r, false, out);
        out.push(root(l));
    }
}

/// Verify that `record_hash` is leaf `index` of the tree of `size` leaves with head `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    record_hash: &Digest,
    proof: &[Digest],
    root: &Digest,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = leaf_hash(record_hash);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && &r == root
}

/// Verify that the tree of `second` leaves with head `second_root` extends the tree of `first`
/// leaves with head `first_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Digest,
    second_root: &Digest,
    proof: &[Digest],
) -> bool {
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 || first > second || proof.is_empty() {
        return false;
    }
    let mut path: Vec<Digest> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let Some((head, rest)) = path.split_first() else {
        return false;
    };
    let (mut fr, mut sr) = (*head, *head);
    for c in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    &fr == first_root && &sr == second_root && snode == 0
}

/// Incremental tree head: the roots of the perfect subtrees that make up a tree of `size`
/// leaves (one per set bit of `size`, largest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Digest>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuild from a stored frontier; `None` if the node count does not match `size`.
    pub fn from_parts(size: u64, nodes: Vec<Digest>) -> Option<Frontier> {
        (u64::from(size.count_ones()) == nodes.len() as u64).then_some(Frontier { size, nodes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Subtree roots, largest first.
    pub fn nodes(&self) -> &[Digest] {
        &self.nodes
    }

    /// Append one record hash.
    pub fn push(&mut self, record_hash: &Digest) {
        let mut h = leaf_hash(record_hash);
        let mut s = self.size;
        while s & 1 == 1 {
            match self.nodes.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break,
            }
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The tree head (equal to [`root`] over the same leaves).
    pub fn root(&self) -> Digest {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| crate::record::record_hash(format!("r{i}").as_bytes()))
            .collect()
    }

    #[test]
    fn rfc6962_empty_and_single() {
        assert_eq!(
            hex::encode(root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = leaves(1);
        assert_eq!(root(&d), leaf_hash(&d[0]));
    }

    #[test]
    fn frontier_matches_recursive_root() {
        let d = leaves(70);
        let mut f = Frontier::new();
        assert_eq!(f.root(), root(&[]));
        for n in 1..=d.len() {
            f.push(&d[n - 1]);
            assert_eq!(f.root(), root(&d[..n]), "n={n}");
            let g = Frontier::from_parts(f.size(), f.nodes().to_vec()).unwrap();
            assert_eq!(g, f);
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_reject_tampering() {
        let d = leaves(24);
        for n in 1..=d.len() {
            let r = root(&d[..n]);
            for i in 0..n {
                let p = inclusion_proof(&d[..n], i).unwrap();
                assert!(
                    verify_inclusion(i as u64, n as u64, &d[i], &p, &r),
                    "n={n} i={i}"
                );
                let other = crate::record::record_hash(b"not a record of this log");
                assert!(!verify_inclusion(i as u64, n as u64, &other, &p, &r));
                if n > 1 {
                    assert!(
                        !verify_inclusion(((i + 1) % n) as u64, n as u64, &d[i], &p, &r),
                        "wrong index n={n} i={i}"
                    );
                }
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(bad[0], *first);
                    assert!(!verify_inclusion(i as u64, n as u64, &d[i], &bad, &r));
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_reject_tampering() {
        let d = leaves(24);
        for n in 1..=d.len() {
            let rn = root(&d[..n]);
            for m in 1..=n {
                let rm = root(&d[..m]);
                let p = consistency_proof(&d[..n], m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &rm, &rn, &p),
                    "m={m} n={n}"
                );
                if m < n {
                    let mut other = d[..n].to_vec();
                    other[m - 1][3] ^= 0x80;
                    let forged = root(&other);
                    assert!(
                        !verify_consistency(m as u64, n as u64, &rm, &forged, &p),
                        "m={m} n={n}"
                    );
                    let mut bad = p.clone();
                    bad[0][0] ^= 1;
                    assert!(
                        !verify_consistency(m as u64, n as u64, &rm, &rn, &bad),
                        "m={m} n={n}"
                    );
                }
            }
        }
    }
}
