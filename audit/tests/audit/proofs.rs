//! Merkle proofs against the checkpoints a real writer produced.

use aegis_audit::merkle::{
    consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion,
};
use aegis_audit::{Event, Record, from_hex, read_record_hashes};

use crate::common::{keys, write_log};

#[test]
fn checkpoint_roots_support_inclusion_and_consistency_proofs() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let log = dir.path().join("audit.log");
    write_log(&log, 40, Some(&k), 7, None);
    let hashes = read_record_hashes(&log).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let cps: Vec<(u64, [u8; 32])> = text
        .lines()
        .filter_map(|l| match Record::parse(l.as_bytes()).unwrap().event {
            Event::Checkpoint(c) => Some((c.records, from_hex(&c.root).unwrap())),
            _ => None,
        })
        .collect();
    assert!(cps.len() >= 5, "{cps:?}");
    for &(n, r) in &cps {
        assert_eq!(
            root(&hashes[..n as usize]),
            r,
            "checkpoint over {n} records"
        );
        for i in [0, n / 2, n - 1] {
            let p = inclusion_proof(&hashes[..n as usize], i as usize).unwrap();
            assert!(verify_inclusion(i, n, &hashes[i as usize], &p, &r));
            assert!(
                !verify_inclusion(i, n, &hashes[n as usize], &p, &r),
                "a later record is not in it"
            );
        }
    }
    for w in cps.windows(2) {
        let ((m, rm), (n, rn)) = (w[0], w[1]);
        let p = consistency_proof(&hashes[..n as usize], m as usize).unwrap();
        assert!(verify_consistency(m, n, &rm, &rn, &p));
        let mut forged = rn;
        forged[0] ^= 1;
        assert!(!verify_consistency(m, n, &rm, &forged, &p));
    }
}
