//! The `aegisc` binary end to end, run from the repository root as a user would: exit code
//! 2 for invalid policies, 1 for a DENY, 0 for an ALLOW or a valid policy, and the exact
//! line `check` prints.

use std::process::{Command, Output};

use crate::common::repo_root;

fn aegisc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aegisc")).args(args).current_dir(repo_root()).env("NO_COLOR", "1").output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn invalid_fixtures_exit_2_with_their_code_on_stderr() {
    for (fixture, code) in [
        ("unknown-key-top", "aegis::policy::unknown_key"),
        ("extends-cycle-3", "aegis::policy::extends_cycle"),
        ("not-utf8", "aegis::policy::not_utf8"),
        ("port-too-large", "aegis::policy::invalid_port"),
        ("invalid-size-ambiguous-unit", "aegis::policy::invalid_size"),
    ] {
        let path = format!("compiler/tests/fixtures/invalid/{fixture}.toml");
        for cmd in ["validate", "inspect"] {
            let out = aegisc(&[cmd, &path]);
            assert_eq!(out.status.code(), Some(2), "{cmd} {fixture}: {}", text(&out.stderr));
            assert!(text(&out.stderr).contains(code), "{cmd} {fixture}: stderr lacks {code}:\n{}", text(&out.stderr));
        }
        let out = aegisc(&["check", &path, "fs", "read", "/etc/passwd"]);
        assert_eq!(out.status.code(), Some(2), "check {fixture}");
    }
}

#[test]
fn validate_json_reports_invalid_files_with_codes_and_lines() {
    let out = aegisc(&["--format", "json", "validate", "policies/coding-agent.toml", "compiler/tests/fixtures/invalid/relative-path.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["valid"], true);
    assert_eq!(v[1]["valid"], false);
    let d = &v[1]["diagnostics"][0];
    assert_eq!(d["code"], "aegis::policy::relative_path");
    assert_eq!(d["line"], 7);
    assert_eq!(d["column"], 9);
}

#[test]
fn check_prints_the_deny_rule_and_its_location() {
    let out = aegisc(&["check", "policies/inbox-manager.toml", "fs", "read", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == "DENY: path '/etc/passwd' matches deny pattern '/etc/passwd' (policies/inbox-manager.toml:9:11)"),
        "stdout was:\n{stdout}"
    );
}

#[test]
fn check_allows_with_exit_0_and_uses_params() {
    let out = aegisc(&["check", "policies/coding-agent.toml", "--param", "WORKSPACE=/home/u/repo", "fs", "write", "/home/u/repo/src/lib.rs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ALLOW: path '/home/u/repo/src/lib.rs' is covered by write grant '${WORKSPACE}' (policies/coding-agent.toml:24:10)"), "{}", text(&out.stdout));
    let out = aegisc(&["check", "policies/coding-agent.toml", "--param", "WORKSPACE=/home/u/repo", "fs", "read", "/home/u/repo/.env"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn malformed_queries_and_arguments_exit_2() {
    for args in [
        &["check", "policies/inbox-manager.toml", "fs", "read", "etc/passwd"][..],
        &["check", "policies/inbox-manager.toml", "fs", "peek", "/etc/passwd"],
        &["check", "policies/inbox-manager.toml", "--param", "NOPE=/x", "fs", "read", "/x"],
        &["check", "policies/inbox-manager.toml", "net", "example.com", "99999"],
        &["validate"],
        &["frobnicate"],
        &["validate", "policies/no-such-policy.toml"],
    ] {
        let out = aegisc(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn every_example_validates_and_schema_is_json() {
    let mut args = vec!["validate"];
    let names: Vec<String> = crate::common::example_policies().iter().map(|p| format!("policies/{}", p.file_name().unwrap().to_string_lossy())).collect();
    args.extend(names.iter().map(String::as_str));
    let out = aegisc(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().filter(|l| l.starts_with("ok: ")).count(), names.len());
    let out = aegisc(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, aegis_compiler::syntax::schema::json_schema());
}

/// Issue 11.9 as the user met it: `aegisc validate` on a ~270 KB one-line policy with one bad
/// entry panicked inside miette (exit 101 and a backtrace). Now: exit 2, the coded
/// diagnostic, the long line shown as a window, in every command that reads a policy.
#[test]
fn a_very_long_one_line_policy_is_exit_2_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<String> = (0..17_000).map(|i| if i == 16_000 { "\"relative/bad\"".to_string() } else { format!("\"/data/dir{i:05}\"") }).collect();
    let text_in = format!("version = 1\n[agent]\nname = \"x\"\n[filesystem]\nread = [{}]\n[network]\nmode = \"none\"\n", entries.join(", "));
    assert!(text_in.len() > 269_000);
    let path = dir.path().join("long.toml");
    std::fs::write(&path, &text_in).unwrap();
    let p = path.to_str().unwrap();
    for args in [vec!["validate", p], vec!["inspect", p], vec!["check", p, "fs", "read", "/etc/passwd"], vec!["--format", "json", "validate", p]] {
        let out = aegisc(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("backtrace") && !err.contains("internal error"), "{args:?}: {err}");
        assert!(err.contains("aegis::policy::relative_path") || text(&out.stdout).contains("aegis::policy::relative_path"), "{args:?}: {err}");
        assert!(err.lines().all(|l| l.len() < 1000), "{args:?}: the long line is not printed whole");
    }
}
