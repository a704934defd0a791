//! Interoperability with the real `minisign` tool (Debian's `minisign`), both ways: our keys
//! and signatures verify with `minisign -Vm`, keys made by `minisign -G -W` sign through our
//! library, and our signature is byte-for-byte what `minisign -S` makes.


use std::path::Path;
use std::process::Command;

use aegis_targets::bundle::*;
use crate::bundle_support::*;

fn minisign_verify(dir: &Path, pubkey: &Path) -> (bool, String) {
    let out = Command::new("minisign")
        .arg("-Vm")
        .arg(dir.join(MANIFEST_FILE))
        .arg("-p")
        .arg(pubkey)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn our_key_and_signature_verify_with_the_minisign_tool() {
    let Some(_) = minisign_tool() else {
        eprintln!("SKIP: minisign tool not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (sk, _, _, pubp) = keypair(tmp.path());
    let dir = tmp.path().join("out");
    writer(fields("coder", 3), &realistic_artifacts()).write(&dir, Some(&sk)).unwrap();
    let (ok, out) = minisign_verify(&dir, &pubp);
    assert!(ok, "minisign rejected our bundle: {out}");
    assert!(out.contains("aegis-bundle agent=coder serial=3"), "{out}");

    // And it rejects a tampered manifest, so the check above means something.
    let m = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&m).unwrap().replace("\"serial\":3", "\"serial\":4");
    std::fs::write(&m, text).unwrap();
    let (ok, out) = minisign_verify(&dir, &pubp);
    assert!(!ok, "minisign accepted a tampered manifest: {out}");
}

#[test]
fn minisign_tool_keys_sign_through_our_library() {
    let Some(_) = minisign_tool() else {
        eprintln!("SKIP: minisign tool not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sec = tmp.path().join("sec");
    let pubp = tmp.path().join("pub");
    let st = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pubp)
        .arg("-s")
        .arg(&sec)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let sk = load_secret_key(&sec).unwrap();
    let pk = load_public_key(&pubp).unwrap();
    assert_eq!(sk.key_id(), pk.key_id());
    // The key id we show is the one minisign prints in the .pub comment (the tool does not
    // zero-pad it; we do, as the minisign crate does).
    let pub_text = std::fs::read_to_string(&pubp).unwrap();
    let shown = pub_text.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert_eq!(u64::from_str_radix(shown, 16).unwrap(), sk.key_id().as_u64(), "{pub_text}");

    let dir = tmp.path().join("out");
    writer(fields("coder", 9), &realistic_artifacts()).write(&dir, Some(&sk)).unwrap();
    let v = verify(&dir, &trust(Some(pk))).unwrap();
    assert_eq!(v.signed_by(), Some(sk.key_id()));
    let (ok, out) = minisign_verify(&dir, &pubp);
    assert!(ok, "{out}");

    // Byte-for-byte: minisign -S with the same comments makes exactly our signature file.
    let tool_sig = tmp.path().join("tool.minisig");
    let st = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&sec)
        .arg("-m")
        .arg(dir.join(MANIFEST_FILE))
        .arg("-x")
        .arg(&tool_sig)
        .args(["-c", UNTRUSTED_COMMENT, "-t", "aegis-bundle agent=coder serial=9"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    assert_eq!(
        std::fs::read_to_string(&tool_sig).unwrap(),
        std::fs::read_to_string(dir.join(SIGNATURE_FILE)).unwrap()
    );
}

#[test]
fn a_signature_made_by_the_minisign_tool_verifies_with_our_verifier() {
    let Some(_) = minisign_tool() else {
        eprintln!("SKIP: minisign tool not installed");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_, pk, sec, _) = keypair(tmp.path());
    let dir = tmp.path().join("out");
    writer(fields("coder", 1), &small_artifacts()).write(&dir, None).unwrap();
    // Hand-signing with the tool (a trusted comment of the signer's choosing).
    let st = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&sec)
        .arg("-m")
        .arg(dir.join(MANIFEST_FILE))
        .args(["-c", UNTRUSTED_COMMENT, "-t", "signed by hand"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let v = verify(&dir, &trust(Some(pk.clone()))).unwrap();
    assert_eq!(v.signed_by(), Some(pk.key_id()));
}
