use std::path::{Path, PathBuf};
use std::process::Command;

use aegis_tests::*;

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The policy path as a user in the repository root types it (`policies/x.toml`): it
/// appears in artifacts (origins), which must not depend on where the clone lives.
fn rel(p: &Path) -> PathBuf {
    p.strip_prefix(repo_root()).unwrap().to_path_buf()
}

fn build(policy: &Path, out: &Path, key: Option<&Path>) -> Run {
    let mut c = aegisc();
    c.arg("build").arg(policy).arg("-o").arg(out);
    if let Some(k) = key {
        c.arg("--sign-key").arg(k);
    }
    run(&mut c)
}

fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    let prefix = dir.join("ci");
    let r = run(aegisc().arg("keygen").arg("-o").arg(&prefix));
    assert_eq!(r.code, 0, "keygen failed: {}", r.stderr);
    (dir.join("ci.key"), dir.join("ci.pub"))
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

/// Every text artifact of every example policy's bundle, pinned. Binary BPF is pinned
/// through its disassembly twin. The typed policy (`policy.ir.json`) is the compiler's IR
/// as `compiler/tests/all/examples.rs` pins it in `snapshots/ir/NAME.snap`: asserted against
/// that one snapshot, not stored a second time under `snapshots/bundles/`.
#[test]
fn every_example_policy_builds_and_its_artifacts_are_pinned() {
    let tmp = tempfile::tempdir().unwrap();
    for policy in example_policies() {
        let name = stem(&policy);
        let out = tmp.path().join(&name);
        let r = build(&rel(&policy), &out, None);
        assert_eq!(r.code, 0, "{name}: build failed:\n{}", r.stderr);
        let settings = snapshot_settings("bundles");
        for (file, bytes) in files(&out) {
            if file.ends_with(".bpf") {
                assert_eq!(bytes.len() % 8, 0, "{file}: a sock_filter array is 8-byte records");
                continue;
            }
            let text = String::from_utf8(bytes).unwrap();
            if file == "policy.ir.json" {
                snapshot_settings("ir").bind(|| insta::assert_snapshot!(name.as_str(), text));
                continue;
            }
            settings.bind(|| insta::assert_snapshot!(format!("{name}__{file}"), text));
        }
    }
}

#[test]
fn builds_are_byte_identical_and_signed_bundles_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    for policy in example_policies() {
        let name = stem(&policy);
        let a = tmp.path().join(format!("{name}-a"));
        let b = tmp.path().join(format!("{name}-b"));
        assert_eq!(build(&policy, &a, Some(&key)).code, 0);
        assert_eq!(build(&policy, &b, Some(&key)).code, 0);
        assert_eq!(files(&a), files(&b), "{name}: two builds differ");
        let v = run(aegisc().arg("verify").arg(&a).arg("--key").arg(&public));
        assert_eq!(v.code, 0, "{name}: verify failed: {}", v.stderr);
        assert!(v.stdout.contains("verifies"), "{}", v.stdout);
        if have("minisign") {
            let m = run(Command::new("minisign").arg("-Vm").arg(a.join("manifest.json")).arg("-p").arg(&public));
            assert_eq!(m.code, 0, "{name}: minisign rejects the signature: {}{}", m.stdout, m.stderr);
        } else {
            eprintln!("SKIP (minisign interop): minisign is not installed");
        }
    }
}

#[test]
fn every_nftables_artifact_passes_nft_check() {
    if !have("nft") {
        skip!("nft is not installed (.ci/run installs Debian's nftables)");
    }
    if !is_root() {
        skip!("nft -c needs root (CAP_NET_ADMIN) to check a ruleset");
    }
    let tmp = tempfile::tempdir().unwrap();
    for policy in example_policies() {
        let name = stem(&policy);
        let out = tmp.path().join(&name);
        assert_eq!(build(&policy, &out, None).code, 0);
        let r = run(Command::new("nft").arg("-c").arg("-j").arg("-f").arg(out.join("nftables.json")));
        assert_eq!(r.code, 0, "{name}: nft -c rejects nftables.json: {}", r.stderr);
    }
}

#[test]
fn tampering_with_any_file_of_a_signed_bundle_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keypair(tmp.path());
    let policy = repo_root().join("policies/coding-agent.toml");
    let good = tmp.path().join("good");
    assert_eq!(build(&policy, &good, Some(&key)).code, 0);
    for (file, bytes) in files(&good) {
        // Flip one byte in the middle of each file (the exhaustive every-byte sweep is in the
        // bundle module's own tests; this checks the CLI path end to end).
        let bad = tmp.path().join(format!("bad-{file}"));
        std::fs::create_dir(&bad).unwrap();
        for (f, b) in files(&good) {
            std::fs::write(bad.join(&f), b).unwrap();
        }
        let mut changed = bytes.clone();
        let i = changed.len() / 2;
        changed[i] ^= 0x01;
        std::fs::write(bad.join(&file), changed).unwrap();
        let v = run(aegisc().arg("verify").arg(&bad).arg("--key").arg(&public));
        assert_eq!(v.code, 2, "a flipped byte in {file} was not refused: {}{}", v.stdout, v.stderr);
    }
    // An extra file, a missing file, and the wrong key.
    std::fs::write(good.join("extra.txt"), b"hello").unwrap();
    assert_eq!(run(aegisc().arg("verify").arg(&good).arg("--key").arg(&public)).code, 2);
    std::fs::remove_file(good.join("extra.txt")).unwrap();
    std::fs::remove_file(good.join("landlock.json")).unwrap();
    assert_eq!(run(aegisc().arg("verify").arg(&good).arg("--key").arg(&public)).code, 2);
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_pub) = keypair(&other);
    let fresh = tmp.path().join("fresh");
    assert_eq!(build(&policy, &fresh, Some(&key)).code, 0);
    let v = run(aegisc().arg("verify").arg(&fresh).arg("--key").arg(&other_pub));
    assert_eq!(v.code, 2, "a bundle signed by another key verified");
}

#[test]
fn the_signing_key_is_private_and_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (key, _) = keypair(tmp.path());
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret_line = secret.lines().nth(1).unwrap();
    let r = build(&repo_root().join("policies/inbox-manager.toml"), &tmp.path().join("b"), Some(&key));
    assert_eq!(r.code, 0);
    assert!(!r.stdout.contains(secret_line) && !r.stderr.contains(secret_line));
    // keygen refuses to overwrite an existing key.
    let again = run(aegisc().arg("keygen").arg("-o").arg(tmp.path().join("ci")));
    assert_eq!(again.code, 2, "keygen overwrote a key: {}", again.stdout);
}

#[test]
fn check_answers_with_the_deciding_rule_and_exit_codes() {
    let r = run(aegisc().args(["check", "policies/inbox-manager.toml", "fs", "read", "/etc/passwd"]));
    assert_eq!(r.code, 1);
    assert_eq!(r.stdout.lines().next().unwrap(), "DENY: path '/etc/passwd' matches deny pattern '/etc/passwd' (policies/inbox-manager.toml:9:11)");
    let r = run(aegisc().args(["check", "policies/inbox-manager.toml", "api", "gmail", "POST", "/gmail/v1/users/me/messages/send"]));
    assert_eq!(r.code, 1, "{}", r.stdout);
    let r = run(aegisc().args(["check", "policies/inbox-manager.toml", "api", "gmail", "POST", "/gmail/v1/users/me/messages/17/modify"]));
    assert_eq!(r.code, 0, "{}", r.stdout);
    let r = run(aegisc().args(["check", "policies/inbox-manager.toml", "fs", "read", "relative/path"]));
    assert_eq!(r.code, 2, "a malformed query is invalid input");
}
