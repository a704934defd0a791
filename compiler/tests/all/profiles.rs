//! Built-in profiles (`extends = ["aegis:NAME@VERSION"]`): every shipped profile compiles
//! into a valid policy; a shipped version never changes; every profile and group is
//! documented in `docs/profiles.md`; the credential stores stay denied under every agent
//! profile, also when the policy grants the whole home directory; origins name the profile
//! (`aegis:credential-stores@1:LINE:COL`) in answers and in `inspect`; an unpinned
//! reference warns; profiles extend only profiles.

use aegis_compiler::diag::Code;
use aegis_compiler::eval::{self, FsQuery, Params, Query, Verdict, evaluate};
use aegis_compiler::profiles::{PROFILES, parse};
use aegis_compiler::{Compiled, compile_bytes};
use sha2::{Digest, Sha256};

use crate::common::{repo_root, with_snapshots};

/// The profiles that describe one agent (a `[agent] name`), not a reusable group.
fn agent_profiles() -> Vec<&'static aegis_compiler::profiles::Profile> {
    PROFILES.iter().filter(|p| p.text.contains("\n[agent]\nname = ")).collect()
}

fn compile(text: &str) -> Compiled {
    compile_bytes("my-agent.toml", text.as_bytes()).unwrap_or_else(|f| panic!("{text}\n{:?}", f.diagnostics))
}

fn extending(reference: &str, extra: &str) -> String {
    format!("version = 1\n[agent]\nname = \"my-agent\"\nextends = [\"{reference}\"]\n{extra}")
}

#[test]
fn every_shipped_profile_compiles_and_extends_only_profiles() {
    assert!(PROFILES.windows(2).all(|w| (w[0].name, w[0].version) < (w[1].name, w[1].version)), "PROFILES is sorted");
    for p in PROFILES {
        let c = compile(&extending(&p.reference(), ""));
        // The warnings a profile may carry are the ones its docs explain (a group sets no
        // resource limits: the agent profile that uses it does); no error, ever.
        let group = !agent_profiles().iter().any(|a| a.name == p.name);
        let unexpected: Vec<_> = c
            .warnings
            .iter()
            .filter(|w| {
                let explained = [Code::LintInterpreter, Code::LintReadableSecret].contains(&w.code);
                !(explained || group && w.code == Code::LintNoLimits)
            })
            .map(|w| format!("{}: {}", w.code, w.message))
            .collect();
        assert!(unexpected.is_empty(), "{}: {unexpected:?}", p.reference());
        assert!(!p.summary().is_empty() && p.text.starts_with("# "), "{}: the first line says what it is for", p.reference());
        // A profile extends only profiles (anything else is an error above), pinned (an
        // unpinned one would have warned above).
        assert!(c.policy.sources.iter().skip(1).all(|s| parse(s).is_some()), "{}: {:?}", p.reference(), c.policy.sources);
        assert!(!p.text.contains("oci ="), "{}: a profile has no directory for an OCI file", p.reference());
    }
}

/// A shipped version is frozen: a policy pinned to it must compile the same with every
/// later aegis. A change to a profile is a new version (a new file `NAME@N+1.toml`): if this
/// snapshot changes for an existing version, that is the bug.
#[test]
fn shipped_versions_never_change() {
    let digests: String = PROFILES
        .iter()
        .map(|p| format!("{} sha256:{}\n", p.reference(), hex::encode(Sha256::digest(p.text.as_bytes()))))
        .collect();
    with_snapshots("profiles", || insta::assert_snapshot!("shipped-versions", digests));
}

#[test]
fn every_profile_is_documented() {
    let doc = std::fs::read_to_string(repo_root().join("docs/profiles.md")).unwrap();
    for p in PROFILES {
        assert!(doc.contains(&format!("`{}`", p.reference())), "docs/profiles.md does not name `{}`", p.reference());
    }
    for code in [Code::UnknownProfile, Code::LintUnpinnedProfile] {
        assert!(doc.contains(code.as_str()), "docs/profiles.md does not name {code}");
    }
}

/// Fake credential stores in a home directory: every agent profile denies them, by the
/// credential-stores group, even in a policy that grants the whole home directory.
#[test]
fn credential_stores_stay_denied_under_every_agent_profile() {
    let secrets = [
        "/home/me/.ssh/id_ed25519",
        "/home/me/.aws/credentials",
        "/home/me/.config/gcloud/application_default_credentials.json",
        "/home/me/.docker/config.json",
        "/home/me/.netrc",
        "/home/me/.git-credentials",
        "/home/me/.kube/config",
        "/home/me/.config/gh/hosts.yml",
        "/home/me/.npmrc",
        "/home/me/.pypirc",
        "/home/me/.local/share/keyrings/login.keyring",
        "/home/me/.mozilla/firefox/x.default/logins.json",
        "/home/me/.bash_history",
        "/home/me/.bashrc",
    ];
    let agents = agent_profiles();
    assert!(agents.len() >= 7, "{:?}", agents.iter().map(|p| p.name).collect::<Vec<_>>());
    for p in agents {
        for extra in ["", "[filesystem]\nwrite = [\"${HOME}\"]\n"] {
            let c = compile(&extending(&p.reference(), extra));
            let mut params: Params = Params::new();
            for (name, value) in [("HOME", "/home/me"), ("WORKSPACE", "/home/me/src/project"), ("APP", "/home/me/agent"), ("STATE", "/home/me/agent-state")] {
                if c.policy.parameters.contains_key(name) {
                    let (k, v) = eval::parse_param(&format!("{name}={value}")).unwrap();
                    params.insert(k, v);
                }
            }
            for secret in secrets {
                for access in [FsQuery::Read, FsQuery::Write] {
                    let d = evaluate(&c.policy, &params, &Query::Fs { access, path: secret.into() }).unwrap();
                    assert_eq!(d.verdict, Verdict::Deny, "{} {extra:?}: {access:?} {secret}: {}", p.reference(), d.reason);
                    let origin = d.rule.as_ref().and_then(|r| r.origin).map(|o| c.sources.locate(o).file);
                    let group = origin.unwrap_or_default();
                    assert!(group == "aegis:credential-stores@1" || group == "aegis:shell-configs@1" || group == "aegis:git-https@1", "{secret}: decided by {group}");
                }
            }
        }
    }
}

/// What the agent profiles grant for their own job, as `aegisc check` answers it.
#[test]
fn agent_profiles_grant_their_own_settings_and_the_checkout() {
    let cases = [
        ("aegis:claude-code@1", "/home/me/.claude/settings.json", "api.anthropic.com"),
        ("aegis:codex@1", "/home/me/.codex/config.toml", "api.openai.com"),
        ("aegis:gemini-cli@1", "/home/me/.gemini/settings.json", "generativelanguage.googleapis.com"),
        ("aegis:opencode@1", "/home/me/.config/opencode/opencode.json", "models.dev"),
        ("aegis:aider@1", "/home/me/.aider/caches/x.json", "api.openai.com"),
    ];
    for (reference, settings, api) in cases {
        let c = compile(&extending(reference, ""));
        let params: Params = ["HOME=/home/me", "WORKSPACE=/home/me/src/project"].iter().map(|p| eval::parse_param(p).unwrap()).collect();
        let ask = |access, path: &str| evaluate(&c.policy, &params, &Query::Fs { access, path: path.into() }).unwrap().verdict;
        assert_eq!(ask(FsQuery::Write, settings), Verdict::Allow, "{reference}: {settings}");
        assert_eq!(ask(FsQuery::Write, "/home/me/src/project/src/main.rs"), Verdict::Allow, "{reference}");
        assert_eq!(ask(FsQuery::Write, "/home/me/src/project/.git/hooks/pre-commit"), Verdict::Deny, "{reference}: built-in protection");
        assert_eq!(ask(FsQuery::Read, "/home/me/Documents/taxes.pdf"), Verdict::Deny, "{reference}: the rest of home");
        assert_eq!(ask(FsQuery::Read, "/etc/shadow"), Verdict::Deny, "{reference}");
        assert_eq!(ask(FsQuery::Exec, "/usr/bin/git"), Verdict::Allow, "{reference}");
        let net = |host: &str, exe: Option<&str>| {
            eval::evaluate_for(&c.policy, &params, &Query::Net { host: host.into(), port: 443, protocol: aegis_compiler::ir::Protocol::Tcp }, exe).unwrap().verdict
        };
        assert_eq!(net(api, None), Verdict::Allow, "{reference}: {api}");
        assert_eq!(net("pypi.org", None), Verdict::Allow, "{reference}: registries");
        assert_eq!(net("evil.example", None), Verdict::Deny, "{reference}");
        // git over HTTPS is git's alone.
        assert_eq!(net("github.com", Some("/usr/bin/git")), Verdict::Allow, "{reference}");
        assert_eq!(net("github.com", Some("/usr/bin/curl")), Verdict::Deny, "{reference}");
    }
}

/// `inspect` shows where each rule comes from: the composition order, and each rule's
/// profile and line.
#[test]
fn inspect_names_the_profile_of_every_rule() {
    let c = compile(&extending("aegis:claude-code@1", "[filesystem]\nread = [\"/opt/tools\"]\n"));
    let text = aegis_compiler::cli::inspect::render(&c);
    with_snapshots("inspect", || insta::assert_snapshot!("profile-claude-code", text));
    assert!(text.contains("Sources      my-agent.toml, aegis:claude-code@1, aegis:coding-agent@1, aegis:system-base@1"), "{text}");
    assert!(text.lines().any(|l| l.contains("${HOME}/.ssh") && l.contains("aegis:credential-stores@1:")), "{text}");
    assert!(text.lines().any(|l| l.contains("/opt/tools") && l.contains("my-agent.toml:")), "{text}");
}

#[test]
fn an_unpinned_profile_warns_and_means_the_newest_version() {
    let c = compile(&extending("aegis:codex", ""));
    let w: Vec<_> = c.warnings.iter().filter(|w| w.code == Code::LintUnpinnedProfile).collect();
    assert_eq!(w.len(), 1, "{:?}", c.warnings);
    assert!(w[0].help.as_deref().unwrap_or("").contains("`aegis:codex@1`"), "{:?}", w[0]);
    assert!(c.policy.sources.contains(&"aegis:codex@1".to_string()), "{:?}", c.policy.sources);
    // Pinned and unpinned references to one version are one file (a diamond, composed once).
    let both = compile("version = 1\n[agent]\nname = \"x\"\nextends = [\"aegis:codex\", \"aegis:codex@1\"]\n");
    assert_eq!(both.policy.sources.iter().filter(|s| s.as_str() == "aegis:codex@1").count(), 1);
}
