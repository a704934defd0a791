//! `aegis` as a user meets it, without launching anything: the policy commands answer
//! every bad input exactly as `aegisc` does (same diagnostics, same exit codes, human and
//! JSON); the aegisd commands' and global flags' misuse; `aegis run` refusing an invalid
//! policy with aegisc's diagnostics and aegis-exec's code.
//!
//! Being an integration test of this package also makes `cargo test --workspace` build the
//! `aegis` binary, which `daemon/tests` and `tests/e2e` run (cargo builds a package's
//! binaries only for its own integration tests).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]

use std::process::Command;

use aegis_tests::{aegisc, repo_root, run};

fn aegis() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aegis"));
    // As `aegisc()`; and no AEGIS_* from whoever runs the suite.
    c.current_dir(repo_root()).env("SOURCE_DATE_EPOCH", "1764000000").env("NO_COLOR", "1");
    for v in ["AEGIS_SOCKET", "AEGIS_DIR"] {
        c.env_remove(v);
    }
    c
}

/// A scratch directory outside `/tmp`, like the e2e suite's.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("aegis-cli-").tempdir_in("/var/tmp").unwrap()
}

/// Bad input to every policy command: `aegis` prints what `aegisc` prints and exits with
/// the same code (only the program name in clap's usage lines differs).
#[test]
fn policy_commands_answer_bad_input_exactly_as_aegisc() {
    let tmp = scratch();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[agent]\nname = \"Bad Name\"\n[filesystem]\nread = [\"usr\"]\nwrtie = [\"/x\"]\n").unwrap();
    let bad = bad.to_str().unwrap().to_string();
    let not_toml = tmp.path().join("not.toml");
    std::fs::write(&not_toml, "version = [\n").unwrap();
    let not_toml = not_toml.to_str().unwrap().to_string();
    let good = "policies/inbox-manager.toml";
    let nowhere = tmp.path().join("missing/dir/k").to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["validate", "nonexistent.toml"], 2),
        (vec!["validate", &bad, good], 2),
        (vec!["validate", &not_toml], 2),
        (vec!["inspect", &bad], 2),
        (vec!["check", &bad, "fs", "read", "/etc/passwd"], 2),
        (vec!["check", good, "fs", "read", "relative/path"], 2),
        (vec!["check", good, "fs", "delete", "/x"], 2),
        (vec!["check", good, "net", "example.com", "https"], 2),
        (vec!["check", good, "--param", "APP", "fs", "read", "/x"], 2),
        (vec!["check", good, "--param", "APPP=/srv/app", "fs", "read", "/srv/app/x"], 2),
        (vec!["check", good, "api", "nosuchapi", "GET", "/"], 2),
        (vec!["check", good, "fs", "read", "/etc/passwd"], 1),
        (vec!["build", &bad, "-o", &nowhere], 2),
        (vec!["build", good, "-o", &nowhere, "--sign-key", "/nonexistent.key"], 2),
        (vec!["build", good, "-o", &nowhere, "--expires-in", "soon"], 2),
        (vec!["explain-syscall", good, "not_a_syscall"], 2),
        (vec!["explain-syscall", good, "read", "0xZZ"], 2),
        (vec!["diff", good, "nonexistent.toml"], 2),
        (vec!["diff", &bad, good], 2),
        // aegisc calls a key file it cannot write an internal error (3), not invalid input.
        (vec!["keygen", "-o", &nowhere], 3),
        (vec!["verify", "/nonexistent-bundle"], 2),
        (vec!["verify", "policies", "--allow-unsigned"], 2),
        (vec!["schema", "extra"], 2),
        (vec!["validate"], 2),
        (vec!["validate", "--frobnicate", good], 2),
        (vec!["inspect", good, "--format", "yaml"], 2),
    ];
    for (args, want) in &cases {
        for json in [false, true] {
            let with = |c: &mut Command| {
                if json && !args.contains(&"--format") {
                    c.args(["--format", "json"]);
                }
                run(c.args(args))
            };
            let theirs = with(&mut aegisc());
            let ours = with(&mut aegis());
            let what = format!("{} (json {json})", args.join(" "));
            assert_eq!(theirs.code, *want, "aegisc {what}: {}", theirs.stderr);
            assert_eq!(ours.code, theirs.code, "aegis {what}: {}", ours.stderr);
            assert_eq!(ours.stdout, theirs.stdout, "aegis {what}: stdout differs");
            let normalise = |s: &str| s.replace("aegisc", "aegis");
            assert_eq!(normalise(&ours.stderr), normalise(&theirs.stderr), "aegis {what}: stderr differs");
            if *want == 2 {
                assert!(!ours.stderr.is_empty() || !ours.stdout.is_empty(), "aegis {what}: said nothing");
            }
        }
    }
    // The diagnostics are aegisc's: coded, located, with a hint.
    let r = run(aegis().args(["validate", &bad]));
    assert!(r.stderr.contains("aegis::policy::unknown_key") && r.stderr.contains("bad.toml:6:1") && r.stderr.contains("did you mean `write`?"), "{}", r.stderr);
}

/// The aegisd commands' own bad input: usage errors and an unnamed socket are invalid input
/// (2), an unreachable daemon is no answer (3); a global flag where it means nothing is an
/// error, not ignored.
#[test]
fn client_and_global_flag_misuse_have_their_exit_codes() {
    let tmp = scratch();
    let sock = tmp.path().join("none.sock");
    let sock = sock.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--socket", sock, "check-net", "a", "h", "https"], 2, "is not a port"),
        (&["--socket", sock, "check-api", "a", "gmail"], 2, "required"),
        (&["--socket", sock, "check-fs", "a", "read"], 2, "required"),
        (&["--socket", sock, "list"], 3, "cannot connect to aegisd"),
        (&["--socket", sock, "validate", "policies/inbox-manager.toml"], 2, "--socket is for the aegisd commands"),
        (&["frobnicate"], 2, "unrecognized subcommand"),
        (&["run", "--socket", sock, "--", "/bin/true"], 125, "--socket is for the aegisd commands"),
        (&["--format", "json", "run", "--", "/bin/true"], 125, "has no --format"),
        (&["run", "--frobnicate"], 125, "unexpected argument"),
        (&["run", "--param", "NOEQUALS", "--policy", "policies/inbox-manager.toml", "--", "/bin/true"], 125, "--param NOEQUALS: expected NAME=VALUE"),
        (&["run", "--audit-budget", "lots", "--policy", "policies/inbox-manager.toml", "--", "/bin/true"], 125, "lots"),
        (&["run", "--checkpoint-sink", "/x", "--policy", "policies/inbox-manager.toml", "--", "/bin/true"], 125, "--checkpoint-key"),
    ];
    for (args, want, says) in cases {
        let r = run(aegis().env_remove("HOME").args(*args));
        assert_eq!(r.code, *want, "aegis {}: {}", args.join(" "), r.stderr);
        assert!(r.stderr.contains(says), "aegis {}: {}", args.join(" "), r.stderr);
    }
    // Checkpoints need a log to sign: none given and no AEGIS_DIR, XDG_STATE_HOME or HOME
    // for the default one.
    let r = run(aegis().env_remove("HOME").env_remove("XDG_STATE_HOME").args(["run", "--checkpoint-key", "/k.key", "--policy", "policies/inbox-manager.toml", "--", "/bin/true"]));
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert!(r.stderr.contains("--checkpoint-key signs the audit log's checkpoints: give --audit-log PATH too"), "{}", r.stderr);
    let r = run(aegis().env_remove("HOME").env_remove("XDG_STATE_HOME").args(["list"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("give --socket PATH, or set AEGIS_SOCKET or AEGIS_DIR"), "{}", r.stderr);
}

/// An invalid policy stops `aegis run` before anything is created: aegisc's diagnostics,
/// and exit 125 (2 could be the agent's own status).
#[test]
fn run_refuses_an_invalid_policy_with_aegisc_diagnostics() {
    let tmp = scratch();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[agent]\nname = \"x\"\n[filesystem]\nread = [\"usr\"]\n").unwrap();
    let theirs = run(aegisc().arg("check").arg(&bad).args(["fs", "read", "/x"]));
    let r = run(aegis().env("AEGIS_DIR", tmp.path().join("state")).arg("run").arg("--policy").arg(&bad).args(["--", "/bin/true"]));
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert_eq!(r.stderr, theirs.stderr, "the same diagnostics as aegisc");
    assert!(r.stderr.contains("aegis::policy::relative_path"), "{}", r.stderr);
    assert!(!tmp.path().join("state").exists(), "nothing was created for a refused launch");
}

/// A policy whose `write` grant names its own file cannot be made read-only to the agent (a
/// carve-out does not lift a grant at the same depth): `aegis run` refuses it (125) and says
/// what to change, before anything runs. The same file one level up is fine (`aegis validate`).
#[test]
fn run_refuses_a_policy_that_lets_the_agent_rewrite_itself() {
    let tmp = scratch();
    let dir = tmp.path().canonicalize().unwrap();
    let policy = dir.join("aegis.toml");
    let text = format!("version = 1\n[agent]\nname = \"x\"\n[filesystem]\nwrite = [\"{0}\", \"{0}/aegis.toml\"]\n", dir.display());
    std::fs::write(&policy, text).unwrap();
    let r = run(aegis().env("AEGIS_DIR", dir.join("state")).arg("run").arg("--policy").arg(&policy).args(["--", "/bin/true"]));
    assert_eq!(r.code, 125, "{}", r.stderr);
    let says = format!("aegis run: refused: the policy lets the agent write {}, a file it was compiled from", policy.display());
    assert!(r.stderr.contains(&says) && r.stderr.contains("remove that grant"), "{}", r.stderr);
    assert_eq!(run(aegis().arg("validate").arg(&policy)).code, 0);
}

/// Every `examples/*.toml` is a policy users start from: each one validates.
#[test]
fn every_example_policy_validates() {
    let mut n = 0;
    for e in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let r = run(aegis().arg("validate").arg(&p));
            assert_eq!(r.code, 0, "{}: {}", p.display(), r.stderr);
            n += 1;
        }
    }
    assert!(n > 0, "examples/ holds no policy: the README's quick start needs examples/inbox-manager.toml");
}

/// `aegis schema | head` and the like: like any Unix filter (and `aegisc`), a closed output
/// pipe ends the policy commands quietly, never with a panic about a broken pipe.
#[test]
fn a_closed_output_pipe_ends_a_policy_command_quietly() {
    use std::os::unix::process::ExitStatusExt as _;
    // The reader is gone before the command writes anything: every write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = aegis().arg("schema").stdout(writer).stderr(std::process::Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "nothing on stderr: {err}");
    assert_eq!(out.status.signal(), Some(13), "killed by SIGPIPE: {:?}", out.status);
}
