//! Every tamper case of issue 5, each detected with the record, line and byte offset.

use aegis_audit::{Problem, Report, verify_reader};

use crate::common::{keys, line_starts, lines, vopts, write_log};

fn verify_bytes(bytes: &[u8], opts: &aegis_audit::VerifyOptions) -> Report {
    verify_reader(bytes, opts).unwrap()
}

/// Index of the line holding byte `pos` (a line owns its newline).
fn line_of(starts: &[usize], pos: usize) -> usize {
    starts.partition_point(|&s| s <= pos) - 1
}

#[test]
fn flipping_any_byte_of_any_record_is_detected_at_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "log");
    let log = dir.path().join("audit.log");
    // 6 events of different kinds, then the signed checkpoint that `close` writes (seq 6).
    write_log(&log, 6, Some(&k), 0, None);
    let bytes = std::fs::read(&log).unwrap();
    let with_key = vopts(Some(&k), &[]);
    let base = verify_bytes(&bytes, &with_key);
    assert!(base.is_ok(), "{:?}", base.failure);
    assert_eq!(
        (base.records, base.checkpoints, base.signed_checkpoints),
        (7, 1, 1)
    );
    let starts = line_starts(&bytes);
    let last_line = starts[starts.len() - 2];
    // A flip in record r is found at r or, through `prev`, at r + 1, so it never reaches a later
    // signature check: the key matters only for the last record (the signed checkpoint). Checking
    // signatures only there keeps this exhaustive test fast in debug builds.
    let no_key = vopts(None, &[]);
    let positions: Vec<usize> = (0..bytes.len()).collect();
    let undetected: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = positions
            .chunks(bytes.len().div_ceil(2))
            .map(|chunk| {
                let (bytes, starts, with_key, no_key) = (&bytes, &starts, &with_key, &no_key);
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut buf = bytes.clone();
                    for &pos in chunk {
                        let opts = if pos >= last_line { with_key } else { no_key };
                        // Every byte gets a low bit flip; every third byte also a pseudo-random
                        // replacement (more would only slow the test, the outcome is the same).
                        let rnd = (pos as u8).wrapping_mul(151).wrapping_add(7);
                        let mut news = vec![bytes[pos] ^ 0x01];
                        if pos % 3 == 0 {
                            news.push(if rnd == bytes[pos] { rnd ^ 0x40 } else { rnd });
                        }
                        for new in news {
                            buf[pos] = new;
                            let r = verify_bytes(&buf, opts);
                            let rec = line_of(starts, pos) as u64;
                            match &r.failure {
                                None => bad.push(format!(
                                    "byte {pos} (record {rec}) -> {new:#04x}: not detected"
                                )),
                                Some(f) => {
                                    let precise = f.seq == rec
                                        || (f.seq == rec + 1
                                            && matches!(f.problem, Problem::PrevMismatch { .. }));
                                    if !precise
                                        || f.offset != starts[f.seq as usize] as u64
                                        || f.line != f.seq + 1
                                    {
                                        bad.push(format!(
                                            "byte {pos} (record {rec}): imprecise: {f}"
                                        ));
                                    }
                                }
                            }
                        }
                        buf[pos] = bytes[pos];
                    }
                    bad
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        undetected.is_empty(),
        "{} cases:\n{}",
        undetected.len(),
        undetected.join("\n")
    );
}

#[test]
fn deleting_swapping_or_inserting_a_record_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_log(&log, 12, None, 0, None);
    let l = lines(&std::fs::read(&log).unwrap());
    let opts = vopts(None, &[]);
    let offset_of = |v: &[Vec<u8>], i: usize| v[..i].iter().map(Vec::len).sum::<usize>() as u64;

    // Deleting record 5: record 6 now sits at index 5.
    let mut del = l.clone();
    del.remove(5);
    let f = verify_bytes(&del.concat(), &opts).failure.unwrap();
    assert_eq!((f.seq, f.offset), (5, offset_of(&del, 5)));
    assert_eq!(
        f.problem,
        Problem::SeqMismatch {
            expected: 5,
            found: 6
        }
    );
    assert!(
        f.to_string().contains("record seq 5 (line 6, byte offset"),
        "{f}"
    );

    // Deleting the first record.
    let f = verify_bytes(&l[1..].concat(), &opts).failure.unwrap();
    assert_eq!(
        f.problem,
        Problem::SeqMismatch {
            expected: 0,
            found: 1
        }
    );

    // Swapping records 3 and 7.
    let mut sw = l.clone();
    sw.swap(3, 7);
    let f = verify_bytes(&sw.concat(), &opts).failure.unwrap();
    assert_eq!(
        (f.seq, f.problem.clone()),
        (
            3,
            Problem::SeqMismatch {
                expected: 3,
                found: 7
            }
        )
    );

    // Swapping two adjacent records.
    let mut sw = l.clone();
    sw.swap(8, 9);
    let f = verify_bytes(&sw.concat(), &opts).failure.unwrap();
    assert_eq!(
        (f.seq, f.problem),
        (
            8,
            Problem::SeqMismatch {
                expected: 8,
                found: 9
            }
        )
    );

    // Inserting a duplicate of record 2 after it.
    let mut ins = l.clone();
    ins.insert(3, l[2].clone());
    let f = verify_bytes(&ins.concat(), &opts).failure.unwrap();
    assert_eq!(
        (f.seq, f.problem),
        (
            3,
            Problem::SeqMismatch {
                expected: 3,
                found: 2
            }
        )
    );

    // Inserting a record with the right seq but the chain not recomputed: prev mismatch at the
    // record after it.
    let mut forged = String::from_utf8(l[4].clone()).unwrap();
    forged = forged.replace("\"seq\":4", "\"seq\":5");
    let mut ins = l[..5].to_vec();
    ins.push(forged.into_bytes());
    let f = verify_bytes(&ins.concat(), &opts).failure.unwrap();
    assert_eq!(f.seq, 5);
    assert!(matches!(f.problem, Problem::PrevMismatch { .. }), "{f}");
    assert!(f.to_string().contains("prev is"), "{f}");
}

/// Re-chain a list of record lines (recompute seq and prev), as a forger without the key would.
fn rechain(recs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = aegis_audit::GENESIS;
    for (i, r) in recs.iter().enumerate() {
        let mut v: serde_json::Value =
            serde_json::from_slice(r.strip_suffix(b"\n").unwrap()).unwrap();
        v["seq"] = i.into();
        v["prev"] = aegis_audit::to_hex(&prev).into();
        let line = serde_json::to_vec(&v).unwrap();
        prev = aegis_audit::record_hash(&line);
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

#[test]
fn inserting_a_record_and_rechaining_is_caught_by_the_next_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let log = dir.path().join("audit.log");
    write_log(&log, 9, Some(&k), 4, None); // checkpoints at seq 4 and 9, final at 11
    let l = lines(&std::fs::read(&log).unwrap());
    let mut ins = l.clone();
    ins.insert(6, l[5].clone());
    let forged = rechain(&ins);
    // Even without a key the checkpoint at (now) seq 10 disagrees with the records before it.
    let f = verify_bytes(&forged, &vopts(None, &[])).failure.unwrap();
    assert_eq!(f.seq, 10);
    assert!(matches!(f.problem, Problem::CheckpointMismatch(_)), "{f}");
}

#[test]
fn truncating_the_tail_is_detected_against_a_checkpoint_file() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path(), "k");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("checkpoints"));
    write_log(&log, 10, Some(&k), 4, Some(&sink));
    let bytes = std::fs::read(&log).unwrap();
    let starts = line_starts(&bytes);
    let opts = vopts(Some(&k), &[&sink]);
    let ok = verify_bytes(&bytes, &opts);
    assert!(ok.is_ok(), "{:?}", ok.failure);
    assert_eq!(ok.external_checkpoints, 3);

    // Cut at a record boundary: the chain alone is fine, the checkpoint file is not.
    let cut = starts[starts.len() - 3];
    let alone = verify_bytes(&bytes[..cut], &vopts(None, &[]));
    assert!(alone.is_ok(), "chain alone cannot see a clean truncation");
    let f = verify_bytes(&bytes[..cut], &opts).failure.unwrap();
    assert!(matches!(f.problem, Problem::Truncated(_)), "{f}");
    assert_eq!(f.offset, cut as u64);
    assert!(f.to_string().contains("log truncated"), "{f}");

    // Cut inside a record: a torn tail, reported where the complete records end.
    let mid = starts[5] + 17;
    let f = verify_bytes(&bytes[..mid], &vopts(None, &[]))
        .failure
        .unwrap();
    assert_eq!(
        (f.seq, f.offset, f.problem.clone()),
        (5, starts[5] as u64, Problem::TornTail { bytes: 17 })
    );

    // Everything removed.
    let f = verify_bytes(b"", &opts).failure.unwrap();
    assert!(matches!(f.problem, Problem::Truncated(_)), "{f}");
}

#[test]
fn a_self_consistent_forgery_is_detected_by_the_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let real = keys(dir.path(), "real");
    let attacker = keys(dir.path(), "attacker");
    let (log, sink) = (dir.path().join("audit.log"), dir.path().join("checkpoints"));
    write_log(&log, 10, Some(&real), 4, Some(&sink));

    // A whole new log written by the attacker with their own key: valid chain and checkpoints.
    let forged = dir.path().join("forged.log");
    write_log(&forged, 10, Some(&attacker), 4, None);
    let fb = std::fs::read(&forged).unwrap();
    assert!(verify_bytes(&fb, &vopts(Some(&attacker), &[])).is_ok());
    let f = verify_bytes(&fb, &vopts(Some(&real), &[])).failure.unwrap();
    assert!(matches!(f.problem, Problem::BadSignature(_)), "{f}");
    assert_eq!(f.seq, 4, "first checkpoint is record 4");

    // The same forgery without any checkpoint: the key demands one.
    let plain = dir.path().join("plain.log");
    write_log(&plain, 10, None, 0, None);
    let pb = std::fs::read(&plain).unwrap();
    assert!(
        verify_bytes(&pb, &vopts(None, &[])).is_ok(),
        "chain alone cannot tell"
    );
    let f = verify_bytes(&pb, &vopts(Some(&real), &[])).failure.unwrap();
    assert!(matches!(f.problem, Problem::NoSignedCheckpoint(_)), "{f}");

    // Replacing the log by an empty file is a forgery too.
    let f = verify_bytes(b"", &vopts(Some(&real), &[])).failure.unwrap();
    assert!(matches!(f.problem, Problem::NoSignedCheckpoint(_)), "{f}");

    // The real log's own records re-chained with one record altered: checkpoints disagree.
    let mut l = lines(&std::fs::read(&log).unwrap());
    l[2] = String::from_utf8(l[2].clone())
        .unwrap()
        .replace("alice", "mallory")
        .into_bytes();
    let f = verify_bytes(&rechain(&l), &vopts(Some(&real), &[]))
        .failure
        .unwrap();
    assert!(matches!(f.problem, Problem::CheckpointMismatch(_)), "{f}");

    // Against the kept checkpoint file, a forged log fails even without signatures checked.
    let f = verify_bytes(&pb, &vopts(None, &[&sink])).failure.unwrap();
    assert!(matches!(f.problem, Problem::ExternalMismatch(_)), "{f}");
}

#[test]
fn time_going_backwards_is_detected_even_in_a_rechained_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    write_log(&log, 6, None, 0, None);
    let mut l = lines(&std::fs::read(&log).unwrap());
    let mut v: serde_json::Value =
        serde_json::from_slice(l[3].strip_suffix(b"\n").unwrap()).unwrap();
    v["ts"] = "2000-01-01T00:00:00.000000000Z".into();
    l[3] = [serde_json::to_vec(&v).unwrap(), b"\n".to_vec()].concat();
    let f = verify_bytes(&rechain(&l), &vopts(None, &[]))
        .failure
        .unwrap();
    assert_eq!(f.seq, 3);
    assert!(
        matches!(f.problem, Problem::TimeWentBackwards { .. }),
        "{f}"
    );
    // Monotonic as written: every record's time is at or after its predecessor's.
    let text = std::fs::read_to_string(&log).unwrap();
    let ts: Vec<String> = text
        .lines()
        .map(|x| aegis_audit::Record::parse(x.as_bytes()).unwrap().ts)
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
}
