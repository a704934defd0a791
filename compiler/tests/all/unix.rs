//! `[network] unix`: pathname unix sockets are a network grant of their own (issue 11.1).
//! A read grant makes a socket visible, never connectable; a filesystem deny beats a unix
//! grant; the network mode does not matter; lints name root-equivalent daemons and grants
//! the sandbox cannot show; `diff` calls a new grant a widening; `aegisc check ... unix PATH`
//! answers with the deciding rule and its location.

use std::process::Command;

use aegis_compiler::diag::Code;
use aegis_compiler::eval::{self, Params, Query, Verdict, evaluate};
use aegis_compiler::{Compiled, compile_bytes};

use crate::common::repo_root;

fn policy(mode: &str, extra_fs: &str, unix: &str) -> String {
    format!(
        "version = 1\n[agent]\nname = \"u\"\n[parameters]\nRUN = \"runtime dir\"\n\
         [filesystem]\nread = [\"/\"]\n{extra_fs}\n[network]\nmode = \"{mode}\"\nunix = {unix}\n"
    )
}

fn compile(text: &str) -> Compiled {
    compile_bytes("u.toml", text.as_bytes()).unwrap_or_else(|f| panic!("{text}\n{:?}", f.diagnostics))
}

fn ask(c: &Compiled, params: &[&str], path: &str) -> (Verdict, String, Vec<String>) {
    let params: Params = params.iter().map(|p| eval::parse_param(p).unwrap()).collect();
    let d = evaluate(&c.policy, &params, &Query::Unix { path: path.into() }).unwrap();
    (d.verdict, d.reason, d.notes)
}

#[test]
fn a_read_grant_never_makes_a_socket_connectable_in_any_mode() {
    for mode in ["none", "proxy", "host"] {
        let c = compile(&policy(mode, "", "[]"));
        let (v, reason, notes) = ask(&c, &[], "/run/docker.sock");
        assert_eq!(v, Verdict::Deny, "{mode}: {reason}");
        assert!(reason.contains("no [network] unix grant covers socket path '/run/docker.sock' (default deny)"), "{reason}");
        assert!(notes.iter().any(|n| n.contains("read grant '/' makes the path visible")), "{notes:?}");
    }
}

#[test]
fn a_unix_grant_allows_its_subtree_in_every_mode_and_a_deny_beats_it() {
    for mode in ["none", "proxy", "host"] {
        let c = compile(&policy(mode, "deny = [\"/run/app/admin.sock\"]", "[\"/run/app\", \"${RUN}/bus\"]"));
        let (v, reason, notes) = ask(&c, &[], "/run/app/app.sock");
        assert_eq!((v, reason.as_str()), (Verdict::Allow, "socket path '/run/app/app.sock' is covered by unix grant '/run/app'"), "{mode}");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(ask(&c, &[], "/run/app").0, Verdict::Allow);
        assert_eq!(ask(&c, &[], "/run/apps.sock").0, Verdict::Deny, "a grant is a subtree, not a prefix of names");
        let (v, reason, _) = ask(&c, &[], "/run/app/admin.sock");
        assert_eq!((v, reason.as_str()), (Verdict::Deny, "socket path '/run/app/admin.sock' matches deny pattern '/run/app/admin.sock'"));
        // Parameter-rooted grants compare once the parameter has a value, and say so before.
        let (v, _, notes) = ask(&c, &[], "/run/user/1000/bus");
        assert_eq!(v, Verdict::Deny);
        assert!(notes.iter().any(|n| n.contains("--param RUN=/path")), "{notes:?}");
        assert_eq!(ask(&c, &["RUN=/run/user/1000"], "/run/user/1000/bus").0, Verdict::Allow);
        assert_eq!(ask(&c, &["RUN=/run/user/1000"], "${RUN}/bus").0, Verdict::Allow);
    }
}

#[test]
fn malformed_unix_grants_and_queries_are_diagnosed() {
    for (bad, code) in [("\"run/x.sock\"", Code::RelativePath), ("\"/run/*.sock\"", Code::UnsupportedGlob), ("\"${NOPE}/x\"", Code::UnknownParameter)] {
        let text = policy("none", "", &format!("[{bad}]"));
        let f = compile_bytes("u.toml", text.as_bytes()).err().unwrap_or_else(|| panic!("{bad} must be refused"));
        assert!(f.diagnostics.iter().any(|d| d.code == code), "{bad}: {:?}", f.diagnostics);
    }
    let c = compile(&policy("none", "", "[]"));
    assert!(evaluate(&c.policy, &Params::new(), &Query::Unix { path: "x.sock".into() }).is_err(), "a relative query is an error");
}

#[test]
fn lints_name_root_equivalent_daemons_and_invisible_grants() {
    let c = compile(&policy("none", "", "[\"/run\"]"));
    let broad: Vec<&str> = c.warnings.iter().filter(|w| w.code == Code::LintBroadUnix).map(|w| w.message.as_str()).collect();
    assert_eq!(broad.len(), 1, "{:?}", c.warnings);
    assert!(broad[0].contains("/run/docker.sock") && broad[0].contains("/run/dbus/system_bus_socket"), "{}", broad[0]);
    let exposure = aegis_compiler::lint::exposure(&c.policy);
    assert!(exposure.reasons.iter().any(|r| r.reason.starts_with("root-equivalent daemon socket(s) reachable") && r.points >= 3.0), "{:?}", exposure.reasons);

    let text = "version = 1\n[agent]\nname = \"u\"\n[filesystem]\nread = [\"/usr\"]\ndeny = [\"/srv/x\"]\n[network]\nunix = [\"/srv/app.sock\", \"/srv/x/y.sock\", \"/usr/s.sock\"]\n";
    let c = compile(text);
    let codes: Vec<(Code, &str)> = c
        .warnings
        .iter()
        .filter(|w| matches!(w.code, Code::LintUnixNotVisible | Code::LintShadowedGrant))
        .map(|w| (w.code, w.message.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (Code::LintUnixNotVisible, "unix grant '/srv/app.sock' names a path no filesystem grant makes visible"),
            (Code::LintShadowedGrant, "unix grant '/srv/x/y.sock' is inside deny pattern '/srv/x'"),
        ]
    );
    let (v, _, notes) = ask(&c, &[], "/srv/app.sock");
    assert_eq!(v, Verdict::Allow);
    assert!(notes.iter().any(|n| n.contains("no filesystem grant covers '/srv/app.sock'")), "{notes:?}");
}

#[test]
fn a_new_unix_grant_is_a_widening_in_diff() {
    let old = compile(&policy("none", "", "[\"/run/app\"]"));
    let new = compile(&policy("none", "", "[\"/run/app\", \"/run/app/x.sock\", \"/run/other.sock\"]"));
    let d = aegis_compiler::diff::diff(&old.policy, &new.policy);
    let added: Vec<(&str, bool)> = d.changes.iter().map(|c| (c.text.as_str(), c.widens)).collect();
    assert_eq!(added, [("may connect to unix sockets at /run/app/x.sock", false), ("may connect to unix sockets at /run/other.sock", true)]);
    let back = aegis_compiler::diff::diff(&new.policy, &old.policy);
    assert!(!back.widened(), "removing grants never widens: {:?}", back.changes);
}

#[test]
fn aegisc_check_answers_unix_queries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u.toml");
    std::fs::write(&path, policy("none", "", "[\"/run/app/app.sock\"]")).unwrap();
    let check = |q: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_aegisc")).arg("check").arg(&path).args(["unix", q]).current_dir(repo_root()).env("NO_COLOR", "1").output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, out) = check("/run/app/app.sock");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with(&format!("ALLOW: socket path '/run/app/app.sock' is covered by unix grant '/run/app/app.sock' ({}:11:9)", path.display())), "{out}");
    let (code, out) = check("/run/x.sock");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("DENY: no [network] unix grant covers socket path '/run/x.sock' (default deny)\n  note: read grant '/' makes the path visible"), "{out}");
    assert_eq!(check("x.sock").0, Some(2), "a relative path is an invalid query");
}

#[test]
fn the_private_tmp_is_a_built_in_grant_a_deny_or_user_grant_refines() {
    let c = compile(&policy("none", "deny = [\"/tmp/secret\"]", "[\"/tmp/app.sock\"]"));
    let (v, reason, notes) = ask(&c, &[], "/tmp/pymp-1/listener-2");
    assert_eq!(v, Verdict::Allow);
    assert_eq!(reason, "socket path '/tmp/pymp-1/listener-2' is covered by built-in unix grant '/tmp' (the private /tmp holds only the agent's own sockets)");
    assert!(notes.iter().any(|n| n.contains("no mount namespace")), "{notes:?}");
    assert_eq!(ask(&c, &[], "/tmp/secret/x.sock").0, Verdict::Deny, "a deny beats the built-in grant");
    assert_eq!(ask(&c, &[], "/tmp/app.sock").1, "socket path '/tmp/app.sock' is covered by unix grant '/tmp/app.sock'", "the most specific grant is reported");
    assert_eq!(ask(&c, &[], "/tmpx/a.sock").0, Verdict::Deny);
    // Not a user grant: no lint, no exposure points.
    assert!(!c.warnings.iter().any(|w| matches!(w.code, Code::LintUnixNotVisible | Code::LintBroadUnix)), "{:?}", c.warnings);
    let bare = compile(&policy("none", "", "[]"));
    assert!(!aegis_compiler::lint::exposure(&bare.policy).reasons.iter().any(|r| r.reason.contains("unix")));
}
