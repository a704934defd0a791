//! Signing keys: created private (0600) and never overwritten unless asked; loaded with a
//! precise error for each kind of bad key; never shown in any error or debug output.


use std::os::unix::fs::PermissionsExt;

use aegis_targets::bundle::*;
use crate::bundle_support::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn generated_secret_key_is_0600_even_with_a_permissive_umask() {
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: umask only changes this process's file creation mask; restored below.
    let old = unsafe { libc::umask(0) };
    let r = generate_keypair(&tmp.path().join("k"), &tmp.path().join("k.pub"), false);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    r.unwrap();
    assert_eq!(mode(&tmp.path().join("k")), 0o600);
    assert_eq!(mode(&tmp.path().join("k.pub")), 0o644);
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    let text = std::fs::read_to_string(tmp.path().join("k.pub")).unwrap();
    assert!(text.starts_with("untrusted comment: minisign public key "), "{text}");
}

#[test]
fn existing_keys_are_not_overwritten_unless_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let (sec, pubp) = (tmp.path().join("k"), tmp.path().join("k.pub"));
    let first = generate_keypair(&sec, &pubp, false).unwrap();
    let before = std::fs::read(&sec).unwrap();
    let e = generate_keypair(&sec, &pubp, false).unwrap_err();
    assert!(matches!(e, KeyError::Exists { .. }), "{e}");
    assert_eq!(e.exit_code(), 2);
    assert_eq!(std::fs::read(&sec).unwrap(), before);

    // Only the public key exists: still refused, and no secret key is created.
    let sec2 = tmp.path().join("k2");
    let e = generate_keypair(&sec2, &pubp, false).unwrap_err();
    assert!(matches!(e, KeyError::Exists { .. }), "{e}");
    assert!(!sec2.exists());

    let second = generate_keypair(&sec, &pubp, true).unwrap();
    assert_ne!(first.key_id(), second.key_id());
    assert_eq!(mode(&sec), 0o600);
    assert_eq!(load_secret_key(&sec).unwrap().public_key(), second);
    assert_eq!(load_public_key(&pubp).unwrap(), second);

    let e = generate_keypair(&sec, &sec, true).unwrap_err();
    assert!(matches!(e, KeyError::SamePath { .. }), "{e}");
}

#[test]
fn bad_keys_give_precise_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, sec, pubp) = keypair(tmp.path());
    let code = |e: &KeyError| miette::Diagnostic::code(e).unwrap().to_string();

    let e = load_secret_key(&tmp.path().join("missing")).unwrap_err();
    assert_eq!(code(&e), "aegis::key::unreadable");
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("missing"), "{e}");

    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_secret_key(&sec).unwrap_err();
    assert_eq!(code(&e), "aegis::key::insecure_permissions");
    assert!(e.to_string().contains("0644"), "{e}");
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(code(&load_secret_key(&sec).unwrap_err()), "aegis::key::insecure_permissions");
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load_secret_key(&sec).is_ok());

    let write_private = |name: &str, content: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    // A public key given where the secret key is expected.
    let p = write_private("pub-as-sec", &std::fs::read_to_string(&pubp).unwrap());
    let e = load_secret_key(&p).unwrap_err();
    assert_eq!(code(&e), "aegis::key::wrong_format");
    assert!(e.to_string().contains("public key"), "{e}");
    for junk in ["", "hello\n", "untrusted comment: x\n!!!notbase64\n"] {
        let p = write_private("junk", junk);
        assert_eq!(code(&load_secret_key(&p).unwrap_err()), "aegis::key::wrong_format", "{junk:?}");
        assert_eq!(code(&load_public_key(&p).unwrap_err()), "aegis::key::wrong_format", "{junk:?}");
    }
    // A secret key given where the public key is expected.
    let e = load_public_key(&sec).unwrap_err();
    assert_eq!(code(&e), "aegis::key::wrong_format");

    // A corrupted secret key (one base64 character changed inside the secret part).
    let text = std::fs::read_to_string(&sec).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut key: Vec<char> = lines[1].chars().collect();
    key[100] = if key[100] == 'A' { 'B' } else { 'A' };
    lines[1] = key.into_iter().collect();
    let p = write_private("corrupt", &(lines.join("\n") + "\n"));
    assert_eq!(code(&load_secret_key(&p).unwrap_err()), "aegis::key::corrupt");
}

#[test]
fn password_protected_keys_are_refused_clearly() {
    // `minisign -G` (with a password) writes `Ed` `Sc` `B2` (scrypt) at the start of the key;
    // making one with the tool takes seconds of scrypt, so the header is set here instead.
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, sec, _) = keypair(tmp.path());
    let text = std::fs::read_to_string(&sec).unwrap();
    let line = text.lines().nth(1).unwrap();
    assert!(line.starts_with("RWQAAEIy"), "{line}"); // Ed, 0 0, B2: unencrypted
    let enc = text.replace(line, &line.replacen("RWQAAEIy", "RWRTY0Iy", 1));
    std::fs::write(&sec, enc).unwrap();
    let e = load_secret_key(&sec).unwrap_err();
    assert_eq!(miette::Diagnostic::code(&e).unwrap().to_string(), "aegis::key::encrypted");
    assert!(e.to_string().contains("password-protected"), "{e}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn key_material_never_appears_in_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let (sk, pk, sec, _) = keypair(tmp.path());
    let secret_line = std::fs::read_to_string(&sec).unwrap().lines().nth(1).unwrap().to_string();
    let mut shown = vec![format!("{sk:?}"), format!("{pk:?}")];

    // Errors produced with this key around: insecure mode, wrong key, corrupt copy.
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_secret_key(&sec).unwrap_err();
    shown.push(e.to_string());
    shown.push(format!("{e:?}"));
    std::fs::set_permissions(&sec, std::fs::Permissions::from_mode(0o600)).unwrap();
    let truncated = tmp.path().join("trunc");
    std::fs::write(&truncated, &std::fs::read(&sec).unwrap()[..120]).unwrap();
    std::fs::set_permissions(&truncated, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = load_secret_key(&truncated).unwrap_err();
    shown.push(e.to_string());
    shown.push(format!("{e:?}"));
    let dir = tmp.path().join("b");
    writer(fields("coder", 1), &small_artifacts()).write(&dir, Some(&sk)).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (_, other_pk, _, _) = keypair(other.path());
    let e = verify(&dir, &trust(Some(other_pk))).unwrap_err();
    shown.push(e.to_string());
    shown.push(format!("{e:?}"));
    let report = format!("{:?}", miette::Report::new(e));
    shown.push(report);

    // No 12-character window of the secret key line (base64) appears anywhere.
    let windows: Vec<&str> = (0..secret_line.len() - 12)
        .map(|i| &secret_line[i..i + 12])
        // The leading bytes (algorithm, zeroed KDF fields) are not secret and are common.
        .filter(|w| !w.contains("AAAA") && !w.starts_with("RWQ"))
        .collect();
    for s in &shown {
        for w in &windows {
            assert!(!s.contains(w), "key material {w:?} shown in {s:?}");
        }
    }
}

/// The secret key is never world-readable, not even between creation and a later chmod:
/// traced with strace, every file created on the way to the key path is created by
/// `open(O_CREAT|O_EXCL, 0600)`, and the key appears by link/rename of that file.
#[test]
fn secret_key_is_private_from_the_first_syscall() {
    if let Some(dir) = std::env::var_os("AEGIS_TEST_KEYGEN_DIR") {
        // Child mode (under strace): just make the key pair.
        let dir = std::path::PathBuf::from(dir);
        generate_keypair(&dir.join("traced"), &dir.join("traced.pub"), false).unwrap();
        return;
    }
    let strace_ok = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !strace_ok {
        eprintln!("SKIP: strace not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-o"])
        .arg(&trace)
        .arg(std::env::current_exe().unwrap())
        // Its name in the `all` binary is module-qualified.
        .args(["--exact", "bundle_keys::secret_key_is_private_from_the_first_syscall", "--test-threads", "1"])
        .env("AEGIS_TEST_KEYGEN_DIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&tmp.path().join("traced")), 0o600);
    let trace = std::fs::read_to_string(&trace).unwrap();
    let key_lines: Vec<&str> = trace
        .lines()
        .filter(|l| l.contains("traced") && !l.contains("traced.pub") && !l.contains("ENOENT"))
        .collect();
    let creates: Vec<&&str> = key_lines.iter().filter(|l| l.contains("O_CREAT")).collect();
    assert!(!creates.is_empty(), "no key file creation traced:\n{trace}");
    for l in &creates {
        assert!(l.contains("O_EXCL") && l.contains(", 0600) = "), "{l}");
    }
    for l in &key_lines {
        assert!(!l.contains("chmod"), "mode changed after creation: {l}");
    }
    // fchmod names no path: the child must not call it at all.
    assert!(!trace.lines().any(|l| l.contains("fchmod(")), "fchmod traced");
    assert!(key_lines.iter().any(|l| l.contains("link")), "{key_lines:?}");
}
