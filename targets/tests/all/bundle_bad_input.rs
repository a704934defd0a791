//! Every kind of bad bundle, key use or writer input gives its own stable error code, a
//! message that says what is wrong (file name, key ids, times), and exit status 2.


use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use aegis_targets::bundle::*;
use crate::bundle_support::*;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    sk: SecretKey,
    pk: PublicKey,
    other_pk: PublicKey,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (sk, pk, _, _) = keypair(tmp.path());
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_pk, _, _) = keypair(&other);
    let dir = tmp.path().join("bundle");
    writer(fields("coder", 5), &small_artifacts()).write(&dir, Some(&sk)).unwrap();
    Fixture {
        _tmp: tmp,
        dir,
        sk,
        pk,
        other_pk,
    }
}

#[track_caller]
fn expect_code(r: Result<VerifiedBundle, BundleError>, code: &str) -> String {
    let e = r.expect_err("expected an error");
    assert_eq!(e.code_str(), code, "wrong error: {e}");
    assert_eq!(e.exit_code(), 2, "{e}");
    e.to_string()
}

/// Replaces manifest.json with `text` and signs it properly: the signature is valid, so the
/// error must come from the manifest check itself.
fn resign(f: &Fixture, text: &str) {
    std::fs::write(f.dir.join(MANIFEST_FILE), text).unwrap();
    let sig = sign_detached(text.as_bytes(), &f.sk, "test").unwrap();
    std::fs::write(f.dir.join(SIGNATURE_FILE), sig).unwrap();
}

fn manifest_text(f: &Fixture) -> String {
    std::fs::read_to_string(f.dir.join(MANIFEST_FILE)).unwrap()
}

#[test]
fn missing_signature_when_required() {
    let f = fixture();
    std::fs::remove_file(f.dir.join(SIGNATURE_FILE)).unwrap();
    expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::missing_signature");
    // Accepted only when unsigned bundles are explicitly allowed.
    let mut t = trust(Some(f.pk.clone()));
    t.allow_unsigned = true;
    assert_eq!(verify(&f.dir, &t).unwrap().signed_by(), None);
}

#[test]
fn no_key_and_unsigned_not_allowed() {
    let f = fixture();
    expect_code(verify(&f.dir, &trust(None)), "aegis::bundle::no_trusted_key");
}

#[test]
fn corrupt_and_truncated_signatures() {
    let f = fixture();
    let sig = std::fs::read_to_string(f.dir.join(SIGNATURE_FILE)).unwrap();
    for bad in [
        String::new(),
        "garbage".to_string(),
        sig[..sig.len() / 2].to_string(),
        sig[..sig.len() - 10].to_string() + "\n",
        sig.replace("untrusted comment: aegis bundle manifest signature", "untrusted comment: hi"),
        sig.replace('\n', "\r\n"),
        sig.clone() + "extra line\n",
    ] {
        std::fs::write(f.dir.join(SIGNATURE_FILE), &bad).unwrap();
        let msg = expect_code(
            verify(&f.dir, &trust(Some(f.pk.clone()))),
            "aegis::bundle::corrupt_signature",
        );
        assert!(msg.contains("manifest.json.minisig"), "{msg}");
    }
}

#[test]
fn signature_by_another_key() {
    let f = fixture();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.other_pk.clone()))), "aegis::bundle::wrong_key");
    assert!(msg.contains(&f.pk.key_id().to_string()), "{msg}");
    assert!(msg.contains(&f.other_pk.key_id().to_string()), "{msg}");
}

#[test]
fn tampered_manifest_and_trusted_comment() {
    let f = fixture();
    let text = manifest_text(&f).replace("\"serial\":5", "\"serial\":6");
    std::fs::write(f.dir.join(MANIFEST_FILE), text).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::bad_signature");
    assert!(msg.contains("manifest.json does not match"), "{msg}");

    let f = fixture();
    let sig = std::fs::read_to_string(f.dir.join(SIGNATURE_FILE)).unwrap();
    std::fs::write(f.dir.join(SIGNATURE_FILE), sig.replace("serial=5", "serial=6")).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::bad_signature");
    assert!(msg.contains("trusted comment"), "{msg}");
}

#[test]
fn file_digest_and_size_mismatch_name_the_file() {
    let f = fixture();
    let p = f.dir.join("landlock.json");
    let mut b = std::fs::read(&p).unwrap();
    b[1] ^= 0x20;
    std::fs::write(&p, &b).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::digest_mismatch");
    assert!(msg.contains("landlock.json"), "{msg}");
    b.push(b' ');
    std::fs::write(&p, &b).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::size_mismatch");
    assert!(msg.contains("landlock.json"), "{msg}");
}

#[test]
fn missing_and_extra_files() {
    let f = fixture();
    std::fs::remove_file(f.dir.join("seccomp.x86_64.bpf")).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::missing_file");
    assert!(msg.contains("seccomp.x86_64.bpf"), "{msg}");

    let f = fixture();
    std::fs::write(f.dir.join("backdoor.sh"), b"#!/bin/sh").unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::unlisted_file");
    assert!(msg.contains("backdoor.sh"), "{msg}");

    let f = fixture();
    std::fs::remove_file(f.dir.join(MANIFEST_FILE)).unwrap();
    expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::missing_manifest");
}

#[test]
fn a_file_listed_twice_even_when_signed() {
    let f = fixture();
    let text = manifest_text(&f);
    let entry_start = text.find("\"landlock.json\":").unwrap();
    let entry_end = entry_start + text[entry_start..].find('}').unwrap() + 1;
    let entry = &text[entry_start..entry_end];
    let doubled = text.replacen(entry, &format!("{entry},{entry}"), 1);
    resign(&f, &doubled);
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::duplicate_file");
    assert!(msg.contains("landlock.json"), "{msg}");
}

#[test]
fn path_tricks_in_the_manifest_and_the_directory() {
    for evil in ["../etc/passwd", "/etc/passwd", ".hidden", "a/b", "manifest.json"] {
        let f = fixture();
        let text = manifest_text(&f).replace("\"landlock.json\":", &format!("{:?}:", evil));
        resign(&f, &text);
        let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::bad_file_name");
        assert!(msg.contains(evil), "{msg}");
    }
    let f = fixture();
    std::fs::write(f.dir.join(".hidden"), b"x").unwrap();
    expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::bad_file_name");
}

#[test]
fn non_regular_files_are_refused() {
    let f = fixture();
    let target = f.dir.join("landlock.json");
    let moved = f.dir.parent().unwrap().join("landlock.real");
    std::fs::rename(&target, &moved).unwrap();
    symlink(&moved, &target).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::not_regular_file");
    assert!(msg.contains("symbolic link") && msg.contains("landlock.json"), "{msg}");

    let f = fixture();
    std::fs::create_dir(f.dir.join("sub")).unwrap();
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::not_regular_file");
    assert!(msg.contains("directory"), "{msg}");

    let f = fixture();
    let fifo = std::ffi::CString::new(f.dir.join("zz.fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::not_regular_file");
    assert!(msg.contains("FIFO"), "{msg}");
}

#[test]
fn expired_bundle_shows_the_times() {
    let f = fixture();
    let mut t = trust(Some(f.pk.clone()));
    t.now = 1_800_000_000;
    let msg = expect_code(verify(&f.dir, &t), "aegis::bundle::expired");
    assert!(msg.contains("1700000000") && msg.contains("1800000000"), "{msg}");
    t.now = 1_799_999_999;
    assert!(verify(&f.dir, &t).is_ok());
}

#[test]
fn serial_below_minimum_is_a_rollback() {
    let f = fixture();
    let mut t = trust(Some(f.pk.clone()));
    t.min_serial = Some(6);
    let msg = expect_code(verify(&f.dir, &t), "aegis::bundle::rollback");
    assert!(msg.contains("serial 5") && msg.contains('6') && msg.contains("coder"), "{msg}");
    t.min_serial = Some(5);
    assert!(verify(&f.dir, &t).is_ok());
}

#[test]
fn wrong_format_or_version() {
    let f = fixture();
    resign(&f, &manifest_text(&f).replace("\"format_version\":1", "\"format_version\":2"));
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::unsupported_format");
    assert!(msg.contains("version 2"), "{msg}");
    let f = fixture();
    resign(&f, &manifest_text(&f).replace("\"aegis-bundle\"", "\"other\""));
    expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::unsupported_format");
}

#[test]
fn invalid_and_non_canonical_manifests() {
    let f = fixture();
    resign(&f, &manifest_text(&f).replace("\"serial\":5", "\"serial\":5,\"surprise\":1"));
    let msg = expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::manifest_invalid");
    assert!(msg.contains("surprise"), "{msg}");
    let f = fixture();
    resign(&f, "not json");
    expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::manifest_invalid");
    let f = fixture();
    let v: serde_json::Value = serde_json::from_str(&manifest_text(&f)).unwrap();
    resign(&f, &serde_json::to_string_pretty(&v).unwrap());
    expect_code(verify(&f.dir, &trust(Some(f.pk.clone()))), "aegis::bundle::manifest_not_canonical");
}

#[test]
fn unreadable_or_odd_bundle_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let msg = expect_code(verify(&missing, &trust(None)), "aegis::bundle::unreadable");
    assert!(msg.contains("nope"), "{msg}");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    expect_code(verify(&file, &trust(None)), "aegis::bundle::not_a_directory");
}

#[test]
fn writer_refuses_bad_names_and_fields() {
    let mut w = BundleWriter::new(fields("coder", 1));
    for bad in ["../x", "a/b", ".hidden", "Upper.json", "manifest.json", "manifest.json.minisig", ""] {
        let e = w.add(bad, b"x".to_vec()).unwrap_err();
        assert_eq!(e.code_str(), "aegis::bundle::bad_file_name", "{bad:?}: {e}");
    }
    w.add("landlock.json", b"x".to_vec()).unwrap();
    let e = w.add("landlock.json", b"y".to_vec()).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::duplicate_file");

    for agent in ["", "has space", "new\nline", "../up"] {
        let e = writer(fields(agent, 1), &small_artifacts()).build(None).unwrap_err();
        assert_eq!(e.code_str(), "aegis::bundle::invalid_field", "{agent:?}: {e}");
    }
    let mut bad = fields("coder", 1);
    bad.policy_sha256 = "xyz".into();
    assert_eq!(writer(bad, &[]).build(None).unwrap_err().code_str(), "aegis::bundle::invalid_field");
    let mut bad = fields("coder", 1);
    bad.expires_at = Some(bad.issued_at);
    let e = writer(bad, &[]).build(None).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::invalid_expiry");
}

#[test]
fn serial_store_refuses_rollback_and_fails_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SerialStore::new(tmp.path().join("lib/serials.json"));
    store.check_and_record("coder", 5).unwrap();
    store.check_and_record("coder", 5).unwrap(); // relaunching the same bundle
    store.check_and_record("other", 1).unwrap();
    let e = store.check_and_record("coder", 4).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::rollback");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("serial 4"), "{e}");
    store.check_and_record("coder", 6).unwrap();
    assert_eq!(store.highest("coder").unwrap(), Some(6));
    assert_eq!(store.highest("other").unwrap(), Some(1));
    // A second handle (another process) sees the same record.
    let again = SerialStore::new(tmp.path().join("lib/serials.json"));
    assert!(again.check_and_record("coder", 5).is_err());

    std::fs::write(store.path(), b"{not json").unwrap();
    let e = store.check_and_record("coder", 100).unwrap_err();
    assert_eq!(e.code_str(), "aegis::bundle::serial_store_corrupt");
}

#[test]
fn concurrent_serial_records_keep_the_maximum() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("serials.json");
    let handles: Vec<_> = (1..=16u64)
        .map(|s| {
            let p = path.clone();
            std::thread::spawn(move || {
                let _ = SerialStore::new(p).check_and_record("coder", s);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(SerialStore::new(&path).highest("coder").unwrap(), Some(16));
}

#[test]
fn verified_bundle_only_from_verification() {
    // Compile-time property documented here: VerifiedBundle has no public constructor, so
    // the only way to get artifact bytes is through `verify`. This checks the bytes match.
    let f = fixture();
    let v = verify(&f.dir, &trust(Some(f.pk.clone()))).unwrap();
    let on_disk: BTreeMap<String, Vec<u8>> = read_dir_files(&f.dir)
        .into_iter()
        .filter(|(n, _)| n != MANIFEST_FILE && n != SIGNATURE_FILE)
        .collect();
    assert_eq!(v.files(), &on_disk);
    assert_eq!(v.manifest_bytes(), std::fs::read(f.dir.join(MANIFEST_FILE)).unwrap().as_slice());
}

#[test]
fn trust_policy_shortcuts() {
    let f = fixture();
    // These policies use the clock: rewrite the bundle without an expiry.
    let mut no_expiry = fields("coder", 5);
    no_expiry.expires_at = None;
    writer(no_expiry, &small_artifacts()).write(&f.dir, Some(&f.sk)).unwrap();
    let v = verify(&f.dir, &TrustPolicy::signed_by(f.pk.clone())).unwrap();
    assert_eq!(v.signed_by(), Some(f.pk.key_id()));
    assert!(TrustPolicy::unsigned_ok().now > 1_700_000_000);
    let v = verify(&f.dir, &TrustPolicy::unsigned_ok()).unwrap();
    assert_eq!(v.signed_by(), None);
    // A rendered diagnostic carries the code and the help.
    let e = verify(&f.dir, &TrustPolicy::signed_by(f.other_pk.clone())).unwrap_err();
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .render_report(&mut out, &e)
        .unwrap();
    assert!(out.contains("aegis::bundle::wrong_key") && out.contains("verify with the public key"), "{out}");
}
