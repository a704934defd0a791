use std::path::Path;

use aegis_tests::*;

/// Writes `policies/<base>` with each `(from, to)` replacement applied, and returns its path.
fn variant(dir: &Path, base: &str, name: &str, edits: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = std::fs::read_to_string(repo_root().join("policies").join(base)).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name}: `{from}` not found in {base}");
        text = text.replacen(from, to, 1);
    }
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn diff_explains_widening_and_narrowing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // (name, base policy, edits, widens?)
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case] = &[
        ("unchanged", "coding-agent.toml", &[], false),
        ("add-endpoint", "coding-agent.toml", &[("\"pypi.org:443\",", "\"pypi.org:443\",\n  \"api.openai.com:443\",")], true),
        ("covered-endpoint", "research-agent.toml", &[("\"arxiv.org:443\",", "\"arxiv.org:443\",\n  \"upload.wikimedia.org:443\",")], false),
        ("drop-write", "data-analyst.toml", &[("write = [\"${OUTPUT}\"]", "write = []")], false),
        ("remove-deny", "coding-agent.toml", &[("deny = [\"${WORKSPACE}/.env\"]", "deny = []")], true),
        ("allow-ptrace", "data-analyst.toml", &[("deny = [\"personality\"]", "deny = [\"personality\"]\nallow = [\"ptrace\"]")], true),
        ("less-memory", "inbox-manager.toml", &[("memory = \"512MiB\"", "memory = \"256MiB\"")], false),
        ("more-memory", "inbox-manager.toml", &[("memory = \"512MiB\"", "memory = \"8GiB\"")], true),
        ("api-deny-removed", "inbox-manager.toml", &[("  \"POST /gmail/v1/users/me/messages/send\",\n", "")], true),
        ("api-rule-added", "inbox-manager.toml", &[("\"GET /gmail/v1/users/me/labels\",", "\"GET /gmail/v1/users/me/labels\",\n  \"DELETE /gmail/v1/users/me/messages/*\",")], true),
        ("best-effort", "research-agent.toml", &[("[resources]", "[enforcement]\nlandlock = \"best-effort\"\n\n[resources]")], true),
    ];
    let settings = snapshot_settings("diff");
    for (name, base, edits, widens) in cases {
        let new = variant(d, base, name, edits);
        let old = std::path::Path::new("policies").join(base);
        let human = run(aegisc().arg("diff").arg(&old).arg(&new));
        assert_eq!(human.code, if *widens { 1 } else { 0 }, "{name}: {}{}", human.stdout, human.stderr);
        let md = run(aegisc().arg("diff").arg(&old).arg(&new).arg("--markdown"));
        assert_eq!(md.code, human.code);
        let json = run(aegisc().args(["--format", "json", "diff"]).arg(&old).arg(&new));
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(v["widened"], serde_json::Value::Bool(*widens), "{name}");
        let text = format!("{}\n---- markdown ----\n{}", human.stdout, md.stdout);
        settings.bind(|| insta::assert_snapshot!(format!("diff__{name}"), text));
    }
}

#[test]
fn diff_reads_bundles_and_refuses_an_edited_ir() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("b");
    let policy = repo_root().join("policies/coding-agent.toml");
    assert_eq!(run(aegisc().arg("build").arg(&policy).arg("-o").arg(&out)).code, 0);
    let same = run(aegisc().arg("diff").arg(&out).arg(&policy));
    assert_eq!(same.code, 0, "{}{}", same.stdout, same.stderr);
    assert!(same.stdout.contains("no permission changes"), "{}", same.stdout);
    let ir = out.join("policy.ir.json");
    let edited = std::fs::read_to_string(&ir).unwrap().replace("\"mode\": \"host\"", "\"mode\": \"none\"");
    std::fs::write(&ir, edited).unwrap();
    let r = run(aegisc().arg("diff").arg(&out).arg(&policy));
    assert_eq!(r.code, 2, "an edited IR was accepted: {}", r.stdout);
}
