//! Bundle writer + signer and verifier on a realistic bundle (11 files, ~56 KB), against the
//! real alternatives: the minisign crate's own (hedged) signing, and the shell route
//! `minisign -Vm manifest.json -p key.pub && sha256sum -c`.
//!
//! Run: `cargo bench -p aegis-targets --bench bundle` (release profile). Prints the median
//! and minimum of N runs for each step. Timings are informational, never pass/fail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "a benchmark: a failed unwrap or index ends the run with its message")]

use std::process::Command;
use std::time::{Duration, Instant};

use aegis_targets::bundle::*;

/// The bundle tests' fixtures: the same realistic artifact set and manifest fields.
#[path = "../tests/all/bundle_support.rs"]
mod bundle_support;

fn artifacts() -> Vec<(String, Vec<u8>)> {
    bundle_support::realistic_artifacts()
}

fn writer() -> BundleWriter {
    bundle_support::writer(bundle_support::fields("coding-agent", 1), &artifacts())
}

fn measure(label: &str, n: usize, mut f: impl FnMut()) {
    f(); // warm up
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    println!("{label:<58} median {:>10.1?}  min {:>10.1?}  (n={n})", times[n / 2], times[0]);
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let (sec, pubp) = (tmp.path().join("key"), tmp.path().join("key.pub"));
    generate_keypair(&sec, &pubp, false).unwrap();
    let sk = load_secret_key(&sec).unwrap();
    let pk = load_public_key(&pubp).unwrap();
    let total: usize = artifacts().iter().map(|(_, b)| b.len()).sum();
    println!("bundle: {} artifacts, {total} bytes\n", artifacts().len());

    measure("load_secret_key (read + parse + checks)", 200, || {
        load_secret_key(&sec).unwrap();
    });
    measure("build in memory (digests + manifest + signature)", 200, || {
        writer().build(Some(&sk)).unwrap();
    });
    let mut i = 0;
    measure("write to a new dir + sign (what `aegisc build -o new` does)", 200, || {
        i += 1;
        writer().write(&tmp.path().join(format!("new{i}")), Some(&sk)).unwrap();
    });
    let out = tmp.path().join("out");
    measure("rewrite an existing bundle + sign (atomic swap, old removed)", 200, || {
        writer().write(&out, Some(&sk)).unwrap();
    });
    let trust = TrustPolicy { key: Some(pk.clone()), allow_unsigned: false, now: 1_700_000_001, min_serial: None };
    measure("verify from disk (read, hash, signature, manifest)", 200, || {
        verify(&out, &trust).unwrap();
    });
    let built = writer().build(Some(&sk)).unwrap();
    measure("verify in memory (hash, signature, manifest)", 200, || {
        Bundle::from_files(&out, built.files().clone()).unwrap().verify(&trust).unwrap();
    });

    // Alternatives.
    let manifest = std::fs::read(out.join(MANIFEST_FILE)).unwrap();
    let crate_sk = minisign::SecretKeyBox::from_string(&std::fs::read_to_string(&sec).unwrap())
        .and_then(|b| b.into_unencrypted_secret_key())
        .ok();


    if let Some(crate_sk) = crate_sk {
        measure("alt: minisign crate sign of manifest.json (hedged)", 200, || {
            minisign::sign(None, &crate_sk, manifest.as_slice(), Some("x"), Some("y")).unwrap();
        });
    } else {
        println!("alt: minisign crate cannot load this key (it checks the checksum differently)");
    }
    let have_tool = Command::new("minisign").arg("-v").output().is_ok();
    if have_tool {
        let names: Vec<String> = artifacts().into_iter().map(|(n, _)| n).collect();
        let sums = tmp.path().join("SHA256SUMS");
        let listing: String = names
            .iter()
            .map(|n| format!("{}  {n}\n", FileEntry::of(&std::fs::read(out.join(n)).unwrap()).sha256))
            .collect();
        std::fs::write(&sums, listing).unwrap();
        measure("alt: `minisign -Vm` + `sha256sum -c` (two processes)", 50, || {
            let a = Command::new("minisign")
                .arg("-Vqm")
                .arg(out.join(MANIFEST_FILE))
                .arg("-p")
                .arg(&pubp)
                .status()
                .unwrap();
            let b = Command::new("sha256sum")
                .arg("--quiet")
                .arg("-c")
                .arg(&sums)
                .current_dir(&out)
                .status()
                .unwrap();
            assert!(a.success() && b.success());
        });
    } else {
        println!("SKIP alt: minisign tool not installed");
    }

}
