//! The same fields, artifacts and key give byte-identical bundles, signature included; an
//! existing bundle is replaced atomically; the result verifies.


use aegis_targets::bundle::*;
use crate::bundle_support::*;

#[test]
fn two_builds_are_byte_identical_signature_included() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, pk, sec, _) = keypair(tmp.path());
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    // Load the key separately each time, as two `aegisc build` runs would.
    let sk1 = load_secret_key(&sec).unwrap();
    let sk2 = load_secret_key(&sec).unwrap();
    writer(fields("coder", 7), &realistic_artifacts()).write(&a, Some(&sk1)).unwrap();
    // Artifacts added in another order: the bundle must not depend on it.
    let mut rev = realistic_artifacts();
    rev.reverse();
    writer(fields("coder", 7), &rev).write(&b, Some(&sk2)).unwrap();

    let fa = read_dir_files(&a);
    let fb = read_dir_files(&b);
    assert_eq!(fa.len(), realistic_artifacts().len() + 2);
    assert!(fa.contains_key(MANIFEST_FILE) && fa.contains_key(SIGNATURE_FILE));
    assert_eq!(fa, fb, "bundles differ");
    let sig = String::from_utf8(fa[SIGNATURE_FILE].clone()).unwrap();
    assert!(sig.contains("trusted comment: aegis-bundle agent=coder serial=7\n"), "{sig}");
    assert!(sig.starts_with("untrusted comment: aegis bundle manifest signature\n"), "{sig}");

    let v = verify(&a, &trust(Some(pk))).unwrap();
    assert_eq!(v.signed_by(), Some(sk1.key_id()));
    assert_eq!(v.manifest().serial, 7);
    assert_eq!(v.file("landlock.json"), Some(fa["landlock.json"].as_slice()));
    assert_eq!(v.files().len(), realistic_artifacts().len());
}

#[test]
fn manifest_is_canonical_json_with_every_field() {
    let c = writer(fields("coder", 7), &small_artifacts()).build(None).unwrap();
    let m = String::from_utf8(c.files()[MANIFEST_FILE].clone()).unwrap();
    assert!(m.ends_with("}\n") && !m.contains(": ") && !m.contains(", "), "{m}");
    assert!(m.starts_with("{\"agent\":\"coder\",\"architectures\":[\"aarch64\",\"x86_64\"],"), "{m}");
    for key in [
        "\"compiler\":{\"name\":\"aegisc\",\"version\":\"0.1.0\"}",
        "\"enforcement\":{\"cgroup\":\"best-effort\",\"landlock\":\"required\",\"seccomp\":\"required\"}",
        "\"kernel\":{\"cgroup_versions\":[\"v1\",\"v2\"],\"landlock_abi\":4,\"namespaces\":[\"mount\",\"net\",\"user\"],\"nftables\":true,\"seccomp\":true}",
        "\"format\":\"aegis-bundle\",\"format_version\":1,",
        "\"network_mode\":\"proxy\"",
        "\"entrypoint\":[\"/usr/bin/agent\",\"--serve\"]",
        "\"expires_at\":1800000000,",
        "\"issued_at\":1700000000,",
        "\"serial\":7}",
        "\"parameters\":{\"WORKSPACE\":{\"description\":\"the repository the agent works on\"}}",
    ] {
        assert!(m.contains(key), "missing {key} in {m}");
    }
    // The digest listed is the sha256 of the file, as `sha256sum` computes it.
    let entry = c.manifest().files.get("landlock.json").unwrap();
    assert_eq!(entry.size, 13);
    // `printf '{"rules":[]}\n' | sha256sum`
    assert_eq!(entry.sha256, "5a5b52a3c1c7d9103184fb694520ce53371457515c948e10af19635d03c86f9e");
    // Decoding gives the same manifest back.
    assert_eq!(&Manifest::from_bytes(m.as_bytes()).unwrap(), c.manifest());
}

#[test]
fn listed_digests_match_sha256sum() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let c = writer(fields("coder", 1), &realistic_artifacts()).write(&dir, None).unwrap();
    let out = std::process::Command::new("sha256sum")
        .args(c.manifest().files.entries().keys())
        .current_dir(&dir)
        .output();
    let Ok(out) = out else {
        eprintln!("SKIP: sha256sum not available");
        return;
    };
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        let (digest, name) = line.split_once("  ").unwrap();
        assert_eq!(c.manifest().files.get(name).unwrap().sha256, digest, "{name}");
    }
    assert_eq!(text.lines().count(), realistic_artifacts().len());
}

#[test]
fn rewriting_replaces_an_existing_bundle_and_refuses_other_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    writer(fields("coder", 1), &realistic_artifacts()).write(&dir, None).unwrap();
    // A second build with fewer files replaces the whole directory: no stale files remain.
    writer(fields("coder", 2), &small_artifacts()).write(&dir, None).unwrap();
    let files = read_dir_files(&dir);
    assert_eq!(files.len(), small_artifacts().len() + 1);
    let mut t = trust(None);
    t.allow_unsigned = true;
    assert_eq!(verify(&dir, &t).unwrap().manifest().serial, 2);
    // No temp directories are left next to it.
    let siblings: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(siblings, vec![std::ffi::OsString::from("out")]);

    // An empty directory is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    writer(fields("coder", 1), &small_artifacts()).write(&empty, None).unwrap();
    assert!(empty.join(MANIFEST_FILE).is_file());

    // A directory with other content is never clobbered.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("thesis.tex"), b"precious").unwrap();
    let e = writer(fields("coder", 1), &small_artifacts()).write(&home, None).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::output_not_a_bundle", "{e}");
    assert_eq!(std::fs::read(home.join("thesis.tex")).unwrap(), b"precious");
    // Even one with a manifest.json, if it also holds something a bundle never does.
    std::fs::write(home.join(MANIFEST_FILE), b"{}").unwrap();
    std::fs::create_dir(home.join("sub")).unwrap();
    let e = writer(fields("coder", 1), &small_artifacts()).write(&home, None).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::output_not_a_bundle", "{e}");
    // A regular file at the output path.
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let e = writer(fields("coder", 1), &small_artifacts()).write(&file, None).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::output_not_a_bundle", "{e}");
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn source_date_epoch_parsing() {
    assert_eq!(parse_source_date_epoch("1700000000").unwrap(), Some(1_700_000_000));
    assert_eq!(parse_source_date_epoch("").unwrap(), None);
    for bad in ["-1", "abc", "1.5", "99999999999999999999999"] {
        let e = parse_source_date_epoch(bad).unwrap_err();
        assert_eq!(e.code_str(), "aegis::bundle::invalid_source_date_epoch");
        assert_eq!(e.exit_code(), 2);
    }
}
