//! Where credentials live: the places `aegis learn` never proposes (nor lets a learning run
//! read) and `aegis why` warns about when a change would widen towards them.
//!
//! Input: a path (absolute, as the agent saw it) and the home directory it is relative to.
//! Output: whether it is, or lies inside, a credential store, and which one. Invariants:
//! matching is by whole path components (`.ssh` matches `~/.ssh/id_rsa`, not `~/.sshx`);
//! the list is a superset of the lints' home secrets (`crate::lint`), so what the lints
//! call a secret is never proposed either.

/// Credential stores relative to a home directory: keys, cloud and registry credentials,
/// keyrings, browser profiles (cookies, saved passwords), shell and REPL history.
pub const HOME_CREDENTIAL_STORES: &[&str] = &[
    ".ssh",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker/config.json",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".npmrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".config/gh/hosts.yml",
    ".config/hub",
    ".terraform.d/credentials.tfrc.json",
    ".vault-token",
    ".pgpass",
    ".my.cnf",
    ".gnupg",
    ".password-store",
    ".local/share/keyrings",
    ".config/op",
    ".mozilla",
    ".config/google-chrome",
    ".config/chromium",
    ".config/BraveSoftware",
    ".config/microsoft-edge",
    ".var/app/org.mozilla.firefox",
    "snap/firefox",
    ".bash_history",
    ".zsh_history",
    ".zhistory",
    ".history",
    ".sh_history",
    ".local/share/fish/fish_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".sqlite_history",
    ".lesshst",
    ".viminfo",
];

/// Credential stores at fixed absolute paths.
pub const SYSTEM_CREDENTIAL_STORES: &[&str] =
    &["/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh", "/etc/ssl/private", "/etc/pki/tls/private", "/root", "/var/run/secrets", "/run/secrets"];

/// Whether a file name looks like a secret wherever it is: private keys, key stores,
/// environment files, credential files. Used to decide whether a directory in the user's
/// home or workspace holds "nothing else sensitive" before a learned policy grants it whole.
pub fn sensitive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let exact = [".env", ".netrc", ".pgpass", ".git-credentials", ".npmrc", ".pypirc", "credentials", "credentials.json", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".vault-token", "secrets.json", "secrets.yaml", "secrets.yml"];
    let suffix = [".pem", ".key", ".p12", ".pfx", ".kdbx", ".keystore", ".jks", ".tfstate", ".ovpn"];
    exact.contains(&lower.as_str())
        || lower.starts_with(".env.")
        || suffix.iter().any(|s| lower.ends_with(s))
        || (lower.starts_with("id_") && !lower.ends_with(".pub") && ["id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"].iter().any(|k| lower.starts_with(k)))
}

fn components(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|c| !c.is_empty())
}

/// Whether `path` is `store` or lies below it (both absolute, whole components).
fn within(path: &str, store: &str) -> bool {
    let mut p = components(path);
    components(store).all(|s| p.next() == Some(s))
}

/// The credential store `path` is or lies inside (`home` is the home directory the
/// relative stores are under), as an absolute path.
pub fn store_of(path: &str, home: Option<&str>) -> Option<String> {
    if let Some(s) = SYSTEM_CREDENTIAL_STORES.iter().find(|s| within(path, s)) {
        return Some((*s).to_string());
    }
    let home = home?.trim_end_matches('/');
    HOME_CREDENTIAL_STORES.iter().map(|s| format!("{home}/{s}")).find(|s| within(path, s))
}

/// The credential store of some home directory `path` is or lies inside, found by the
/// store's own names wherever they occur (`/srv/u/.ssh/id_rsa` is in the store
/// `/srv/u/.ssh`): a safety net for homes nobody named.
pub fn store_anywhere(path: &str) -> Option<String> {
    let comps: Vec<&str> = components(path).collect();
    for s in HOME_CREDENTIAL_STORES {
        let sc: Vec<&str> = components(s).collect();
        for start in 0..comps.len() {
            if comps.get(start..start + sc.len()).is_some_and(|w| w == sc.as_slice()) {
                let upto: Vec<&str> = comps.iter().take(start + sc.len()).copied().collect();
                return Some(format!("/{}", upto.join("/")));
            }
        }
    }
    None
}

/// The credential stores that lie inside `dir` (or contain it): what a grant of `dir`
/// would reach, as absolute paths.
pub fn stores_under(dir: &str, home: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = SYSTEM_CREDENTIAL_STORES.iter().map(|s| (*s).to_string()).collect();
    if let Some(h) = home {
        let h = h.trim_end_matches('/');
        out.extend(HOME_CREDENTIAL_STORES.iter().map(|s| format!("{h}/{s}")));
    }
    out.into_iter().filter(|s| within(s, dir) || within(dir, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_match_by_whole_components() {
        let home = Some("/home/u");
        assert_eq!(store_of("/home/u/.ssh/id_rsa", home).as_deref(), Some("/home/u/.ssh"));
        assert_eq!(store_of("/home/u/.ssh", home).as_deref(), Some("/home/u/.ssh"));
        assert_eq!(store_of("/home/u/.sshx/a", home), None);
        assert_eq!(store_of("/home/u/.config/gcloud/creds.db", home).as_deref(), Some("/home/u/.config/gcloud"));
        assert_eq!(store_of("/etc/shadow", None).as_deref(), Some("/etc/shadow"));
        assert_eq!(store_of("/home/u/src/x", home), None);
        assert_eq!(store_anywhere("/var/tmp/x/home/.netrc").as_deref(), Some("/var/tmp/x/home/.netrc"));
        assert_eq!(store_anywhere("/srv/u/.config/gcloud/a/b").as_deref(), Some("/srv/u/.config/gcloud"));
        assert_eq!(store_anywhere("/srv/u/.config/other"), None);
        assert!(stores_under("/home/u", home).contains(&"/home/u/.aws".to_string()));
        assert!(stores_under("/home/u/src", home).is_empty());
        assert_eq!(stores_under("/home/u/.ssh/keys", home), vec!["/home/u/.ssh".to_string()]);
    }

    #[test]
    fn secret_looking_names() {
        for n in [".env", ".env.local", "server.key", "cert.PEM", "id_ed25519", "id_rsa_work", "credentials", "vault.kdbx"] {
            assert!(sensitive_name(n), "{n}");
        }
        for n in ["id_ed25519.pub", "main.rs", "README.md", "keys.rs", "environment.yml", ".envrc"] {
            assert!(!sensitive_name(n), "{n}");
        }
    }

    #[test]
    fn every_lint_secret_is_a_credential_store() {
        for s in crate::lint::HOME_SECRETS {
            assert!(HOME_CREDENTIAL_STORES.contains(s), "{s}");
        }
    }
}
