//! Tampering any byte of any file of a signed bundle is detected: every byte of every file
//! (artifacts, manifest, signature) is flipped in turn, and every file is truncated at every
//! length; each variant must fail verification. Runs in memory (the same checks as on disk,
//! see `Bundle::from_files`) to stay fast.
//!
//! Cost: each variant that reaches the signature check costs two Ed25519 verifications,
//! ~0.5 ms with optimized crypto crates but ~60 ms when `curve25519-dalek` is built at
//! opt-level 0 (the default dev/test profile). The tests measure one verification and, when
//! it is slow, check every `stride`-th byte of the manifest and signature (printing a NOTE)
//! so the suite stays within seconds; with the workspace profile override
//! `[profile.dev.package.curve25519-dalek] opt-level = 3` they are exhaustive.


use std::collections::BTreeMap;
use std::path::Path;

use aegis_targets::bundle::*;
use crate::bundle_support::*;

fn signed_small() -> (BTreeMap<String, Vec<u8>>, TrustPolicy) {
    let tmp = tempfile::tempdir().unwrap();
    let (sk, pk, _, _) = keypair(tmp.path());
    // Small but complete: every kind of field present once.
    let mut f = fields("a", 1);
    f.architectures.retain(|a| a == "x86_64");
    f.kernel.namespaces.clear();
    f.enforcement.retain(|l, _| l == "seccomp");
    f.parameters.clear();
    f.parameters.insert("W".into(), LaunchParameter { description: String::new() });
    f.entrypoint = Some(vec!["/a".into()]);
    let c = writer(f, &small_artifacts()).build(Some(&sk)).unwrap();
    (c.files().clone(), trust(Some(pk)))
}

/// Step between tampered bytes of the manifest and signature: 1 (exhaustive) when a full
/// verification is fast, larger when the crypto crates are unoptimized (see module docs).
fn stride(files: &BTreeMap<String, Vec<u8>>, t: &TrustPolicy) -> usize {
    let start = std::time::Instant::now();
    check(files.clone(), t).unwrap();
    let one = start.elapsed();
    // Budget ~3 s for the manifest + signature variants of one test.
    let variants = files[MANIFEST_FILE].len() + files[SIGNATURE_FILE].len();
    let budget = std::time::Duration::from_secs(3);
    let stride = (one.as_secs_f64() * variants as f64 / budget.as_secs_f64()).ceil() as usize;
    let stride = stride.max(1);
    if stride > 1 {
        eprintln!(
            "NOTE: one verification takes {one:?} (unoptimized crypto); tampering every {stride}th byte of manifest/signature, every byte of artifacts"
        );
    }
    stride
}

/// Whether byte `i` of file `name` is tampered with in this run.
fn covered(name: &str, i: usize, stride: usize) -> bool {
    let costly = name == MANIFEST_FILE || name == SIGNATURE_FILE;
    !costly || i.is_multiple_of(stride)
}

fn check(files: BTreeMap<String, Vec<u8>>, t: &TrustPolicy) -> Result<VerifiedBundle, BundleError> {
    Bundle::from_files(Path::new("mem"), files)?.verify(t)
}

#[test]
fn the_untouched_bundle_verifies() {
    let (files, t) = signed_small();
    assert!(check(files, &t).is_ok());
}

#[test]
fn flipping_any_byte_of_any_file_is_detected() {
    let (files, t) = signed_small();
    let stride = stride(&files, &t);
    let mut tried = 0;
    for (name, bytes) in &files {
        for i in (0..bytes.len()).filter(|&i| covered(name, i, stride)) {
            // Low bit: a near miss (valid base64/JSON/hex stays valid); high bit: invalid UTF-8.
            let masks: &[u8] = if stride == 1 { &[0x01, 0x80] } else { &[0x01] };
            for &mask in masks {
                let mut f = files.clone();
                f.get_mut(name).unwrap()[i] ^= mask;
                let r = check(f, &t);
                assert!(r.is_err(), "flipping bit {mask:#x} of byte {i} of {name} went unnoticed");
                tried += 1;
            }
        }
    }
    // Every artifact byte, plus at least some manifest and signature bytes.
    assert!(tried > 29 + 10, "{tried}");
}

#[test]
fn truncating_or_extending_any_file_is_detected() {
    let (files, t) = signed_small();
    let stride = stride(&files, &t);
    for (name, bytes) in &files {
        for len in (0..bytes.len()).filter(|&i| covered(name, i, stride)) {
            let mut f = files.clone();
            f.get_mut(name).unwrap().truncate(len);
            assert!(check(f, &t).is_err(), "{name} truncated to {len} went unnoticed");
        }
        let mut f = files.clone();
        f.get_mut(name).unwrap().push(b'\n');
        assert!(check(f, &t).is_err(), "{name} with an extra newline went unnoticed");
    }
}

#[test]
fn digest_errors_name_the_file() {
    let (files, t) = signed_small();
    let mut f = files.clone();
    f.get_mut("landlock.json").unwrap()[0] ^= 1;
    let e = check(f, &t).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::digest_mismatch");
    let msg = e.to_string();
    assert!(msg.contains("`landlock.json`"), "{msg}");
    assert!(msg.contains(&files_digest(&files, "landlock.json")), "{msg}");
}

fn files_digest(files: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    FileEntry::of(&files[name]).sha256
}
