//! `aegisc keygen` and `aegisc verify`: minisign key pairs, and bundle verification as the
//! runtime does it (signature, manifest, every digest, expiry).

use std::path::{Path, PathBuf};

use aegis_targets::bundle::{self, TrustPolicy};

use super::{Exit, Format, eprint_error, print_json};

pub fn keygen(prefix: &Path, force: bool, format: Format) -> Exit {
    let secret = PathBuf::from(format!("{}.key", prefix.display()));
    let public = PathBuf::from(format!("{}.pub", prefix.display()));
    match bundle::generate_keypair(&secret, &public, force) {
        Ok(pk) => {
            match format {
                Format::Human => {
                    println!("secret key: {} (mode 0600, keep it private: signs bundles with aegisc build --sign-key, or audit checkpoints with aegis-exec --checkpoint-key)", secret.display());
                    println!("public key: {} (verifies them: aegis-exec --trust-key, aegisc verify --key, aegis-audit verify --key)", public.display());
                    println!("key id:     {}", pk.key_id());
                }
                Format::Json => print_json(&serde_json::json!({
                    "secret_key": secret.display().to_string(),
                    "public_key": public.display().to_string(),
                    "key_id": pk.key_id().to_string(),
                })),
            }
            Exit::Ok
        }
        Err(e) => {
            eprint_error(&e);
            if e.exit_code() == 2 { Exit::Invalid } else { Exit::Internal }
        }
    }
}

pub fn verify(dir: &Path, key: Option<&Path>, allow_unsigned: bool, format: Format) -> Exit {
    let key = match key {
        Some(p) => match bundle::load_public_key(p) {
            Ok(k) => Some(k),
            Err(e) => {
                eprint_error(&e);
                return Exit::Invalid;
            }
        },
        None => None,
    };
    let trust = TrustPolicy { key, allow_unsigned, now: bundle::now_unix(), min_serial: None };
    match bundle::verify(dir, &trust) {
        Ok(b) => {
            let m = b.manifest();
            match format {
                Format::Human => {
                    println!(
                        "ok: {} verifies: agent '{}', serial {}, {} files, {}",
                        dir.display(),
                        m.agent,
                        m.serial,
                        m.files.entries().len(),
                        b.signed_by().map(|k| format!("signed by key {k}")).unwrap_or_else(|| "UNSIGNED".into())
                    );
                }
                Format::Json => print_json(&serde_json::json!({
                    "ok": true,
                    "agent": m.agent,
                    "serial": m.serial,
                    "manifest_sha256": b.manifest_sha256(),
                    "signed_by": b.signed_by().map(|k| k.to_string()),
                })),
            }
            Exit::Ok
        }
        Err(e) => {
            eprint_error(&e);
            if e.exit_code() == 2 { Exit::Invalid } else { Exit::Internal }
        }
    }
}
