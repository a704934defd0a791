//! The reference evaluator's answers on the example policies: one row per question a user
//! would ask `aegisc check`, with the verdict, the words of the reason, and where the
//! deciding rule is written. Rows with `--param` values check that parameters are
//! substituted before rules are compared.

use aegis_compiler::eval::{self, Decision, FsQuery, Params, Query, Verdict, evaluate};
use aegis_compiler::ir::Protocol;
use aegis_compiler::{Compiled, compile_file};

use crate::common::repo_root;

fn compile(name: &str) -> Compiled {
    compile_file(&repo_root().join("policies").join(format!("{name}.toml"))).unwrap_or_else(|_| panic!("{name} must compile"))
}

fn query(words: &str) -> Query {
    let w: Vec<&str> = words.split(' ').collect();
    let fs = |a: &str| match a {
        "read" => FsQuery::Read,
        "write" => FsQuery::Write,
        "exec" => FsQuery::Exec,
        _ => panic!("bad access {a}"),
    };
    match w.as_slice() {
        ["fs", a, p] => Query::Fs { access: fs(a), path: p.to_string() },
        ["net", h, p] => Query::Net { host: h.to_string(), port: p.parse().unwrap(), protocol: Protocol::Tcp },
        ["net", h, p, "udp"] => Query::Net { host: h.to_string(), port: p.parse().unwrap(), protocol: Protocol::Udp },
        ["api", n, s] => Query::ApiScope { api: n.to_string(), scope: s.to_string() },
        ["api", n, m, p] => Query::ApiHttp { api: n.to_string(), method: m.to_string(), path: p.to_string() },
        _ => panic!("bad query {words}"),
    }
}

fn params(list: &[&str]) -> Params {
    list.iter().map(|p| eval::parse_param(p).unwrap()).collect()
}

struct Row {
    policy: &'static str,
    params: &'static [&'static str],
    query: &'static str,
    verdict: Verdict,
    /// Words the reason must contain.
    reason: &'static str,
    /// `line:column` of the deciding rule; "" when no user rule decided.
    at: &'static str,
}

const fn row(policy: &'static str, params: &'static [&'static str], query: &'static str, verdict: Verdict, reason: &'static str, at: &'static str) -> Row {
    Row { policy, params, query, verdict, reason, at }
}

use Verdict::{Allow as A, Deny as D};

const ROWS: &[Row] = &[
    // inbox-manager: filesystem
    row("inbox-manager", &[], "fs read /etc/passwd", D, "matches deny pattern '/etc/passwd'", "9:11"),
    row("inbox-manager", &[], "fs read /etc/shadow", D, "matches deny pattern '/etc/shadow'", "9:26"),
    row("inbox-manager", &[], "fs read /etc/hosts", D, "no read grant covers '/etc/hosts' (default deny)", ""),
    row("inbox-manager", &[], "fs read /usr/lib/python3.12/os.py", A, "covered by read grant '/usr'", "11:11"),
    row("inbox-manager", &[], "fs read /usr", A, "covered by read grant '/usr'", "11:11"),
    row("inbox-manager", &[], "fs read /usrlocal", D, "default deny", ""),
    row("inbox-manager", &[], "fs write /usr/bin/python3", D, "no write grant covers '/usr/bin/python3' (default deny)", ""),
    row("inbox-manager", &[], "fs exec /usr/bin/python3", A, "covered by exec grant '/usr/bin/python3'", "22:10"),
    row("inbox-manager", &[], "fs exec /usr/bin/bash", D, "no exec grant covers", ""),
    row("inbox-manager", &[], "fs read /usr/bin/python3", A, "covered by exec grant '/usr/bin/python3'", "22:10"),
    row("inbox-manager", &[], "fs read ${APP}/agent/main.py", A, "covered by read grant '${APP}'", "11:61"),
    row("inbox-manager", &[], "fs read ${APP}/.env", D, "matches deny pattern '${APP}/.env'", "9:41"),
    row("inbox-manager", &[], "fs read ${APP}/.env/x", D, "matches deny pattern '${APP}/.env'", "9:41"),
    row("inbox-manager", &[], "fs write ${APP}/main.py", D, "default deny", ""),
    row("inbox-manager", &[], "fs write ${STATE}/db.sqlite", A, "covered by write grant '${STATE}'", "13:11"),
    row("inbox-manager", &[], "fs read ${STATE}/db.sqlite", A, "covered by write grant '${STATE}'", "13:11"),
    row("inbox-manager", &[], "fs write /tmp/scratch", A, "covered by write grant '/tmp'", ""),
    row("inbox-manager", &[], "fs read /dev/urandom", A, "covered by read grant '/dev/urandom'", ""),
    row("inbox-manager", &[], "fs write /dev/urandom", D, "default deny", ""),
    row("inbox-manager", &[], "fs exec /lib64/ld-linux-x86-64.so.2", A, "exec grant '/lib64/ld-linux-x86-64.so.2'", ""),
    row("inbox-manager", &[], "fs read /opt/app/main.py", D, "default deny", ""),
    // inbox-manager with parameter values: rules rooted at ${APP} now compare with /opt/app
    row("inbox-manager", &["APP=/opt/app"], "fs read /opt/app/main.py", A, "covered by read grant '${APP}'", "11:61"),
    row("inbox-manager", &["APP=/opt/app"], "fs read /opt/app/.env", D, "matches deny pattern '${APP}/.env'", "9:41"),
    row("inbox-manager", &["APP=/opt/app"], "fs read ${APP}/.env", D, "matches deny pattern '${APP}/.env'", "9:41"),
    row("inbox-manager", &["APP=/usr/share/agent"], "fs read /usr/share/agent/.env", D, "matches deny pattern '${APP}/.env'", "9:41"),
    row("inbox-manager", &["APP=/usr/share/agent"], "fs read /usr/share/agent/main.py", A, "covered by read grant '${APP}'", "11:61"),
    row("inbox-manager", &["APP=/opt/app", "STATE=/opt/app/state"], "fs write /opt/app/state/x", A, "covered by write grant '${STATE}'", "13:11"),
    row("inbox-manager", &["APP=/opt/app", "STATE=/opt/app/state"], "fs write /opt/app/x", D, "default deny", ""),
    // inbox-manager: network and API
    row("inbox-manager", &[], "net gmail.googleapis.com 443", A, "matches allowed endpoint 'gmail.googleapis.com:443/tcp' (through the AEGIS proxy)", "28:6"),
    row("inbox-manager", &[], "net GMAIL.googleapis.com. 443", A, "allowed endpoint 'gmail.googleapis.com:443/tcp'", "28:6"),
    row("inbox-manager", &[], "net gmail.googleapis.com 80", D, "no allowed endpoint matches", ""),
    row("inbox-manager", &[], "net gmail.googleapis.com 443 udp", D, "no allowed endpoint matches", ""),
    row("inbox-manager", &[], "net 142.250.0.1 443", D, "default deny", ""),
    row("inbox-manager", &[], "api gmail https://www.googleapis.com/auth/gmail.modify", A, "grants scope", "31:11"),
    row("inbox-manager", &[], "api gmail https://mail.google.com/", D, "does not grant scope", ""),
    row("inbox-manager", &[], "api gmail GET /gmail/v1/users/me/messages", A, "allow rule 'GET /gmail/v1/users/me/messages'", "33:3"),
    row("inbox-manager", &[], "api gmail GET /gmail/v1/users/me/messages/18c2f?format=full", A, "allow rule 'GET /gmail/v1/users/me/messages/*'", "34:3"),
    row("inbox-manager", &[], "api gmail GET /gmail/v1/users/me/messages/a/b", D, "default deny", ""),
    row("inbox-manager", &[], "api gmail POST /gmail/v1/users/me/messages/18c2f/modify", A, "allow rule 'POST /gmail/v1/users/me/messages/*/modify'", "37:3"),
    row("inbox-manager", &[], "api gmail POST /gmail/v1/users/me/messages/send", D, "deny rule 'POST /gmail/v1/users/me/messages/send'", "41:3"),
    row("inbox-manager", &[], "api gmail POST /gmail/v1/users/me/messages/%73end", D, "deny rule 'POST /gmail/v1/users/me/messages/send'", "41:3"),
    row("inbox-manager", &[], "api gmail POST /gmail/v1/users/me/messages/x/../send", D, "is refused", ""),
    row("inbox-manager", &[], "api gmail POST /gmail/v1/users/me/messages/send;x", D, "is refused", ""),
    row("inbox-manager", &[], "api gmail POST /upload/gmail/v1/users/me/messages/send", D, "deny rule '* /upload/**'", "43:3"),
    row("inbox-manager", &[], "api gmail GET /upload", D, "deny rule '* /upload/**'", "43:3"),
    row("inbox-manager", &[], "api gmail DELETE /gmail/v1/users/me/messages/18c2f", D, "no allow rule of api 'gmail' matches", ""),
    // coding-agent: host network, workspace parameter
    row("coding-agent", &[], "fs write ${WORKSPACE}/src/main.rs", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &[], "fs read ${WORKSPACE}/.env", D, "matches deny pattern '${WORKSPACE}/.env'", "28:9"),
    row("coding-agent", &[], "fs exec ${WORKSPACE}/.git/hooks/pre-commit", D, "no exec grant covers", ""),
    row("coding-agent", &[], "fs exec ${WORKSPACE}/build.sh", D, "no exec grant covers", ""),
    row("coding-agent", &["WORKSPACE=/home/u/repo"], "fs write /home/u/repo/README.md", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &["WORKSPACE=/home/u/repo"], "fs read /home/u/repo/.env", D, "matches deny pattern '${WORKSPACE}/.env'", "28:9"),
    row("coding-agent", &["WORKSPACE=/home/u/repo"], "fs read /home/u/.ssh/id_ed25519", D, "default deny", ""),
    // coding-agent: built-in protections below the write grant (read-only, still readable)
    row("coding-agent", &[], "fs write ${WORKSPACE}/.git/config", D, "is read-only: built-in protection '${WORKSPACE}/.git/config' inside write grant '${WORKSPACE}'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.git/config", D, "unprotect = [\"${WORKSPACE}/.git/config\"]", ""),
    row("coding-agent", &[], "fs read ${WORKSPACE}/.git/config", A, "covered by read grant '${WORKSPACE}/.git/config'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.git/hooks/pre-commit", D, "built-in protection '${WORKSPACE}/.git/hooks'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.git/modules/lib/config", D, "built-in protection '${WORKSPACE}/.git/modules'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.git/index", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.git/objects/ab/cdef", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.vscode/tasks.json", D, "built-in protection '${WORKSPACE}/.vscode'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.envrc", D, "built-in protection '${WORKSPACE}/.envrc'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.claude/commands/x.md", D, "built-in protection '${WORKSPACE}/.claude/commands'", ""),
    row("coding-agent", &[], "fs write ${WORKSPACE}/.claude/notes.md", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &[], "fs write ${WORKSPACE}/src/.bashrc", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &["WORKSPACE=/home/u/repo"], "fs write /home/u/repo/.git/hooks/post-checkout", D, "built-in protection '${WORKSPACE}/.git/hooks'", ""),
    row("coding-agent", &["WORKSPACE=/home/u/repo"], "fs write /home/u/repo/.git/HEAD", A, "covered by write grant '${WORKSPACE}'", "24:10"),
    row("coding-agent", &[], "fs exec /usr/lib/git-core/git-remote-https", A, "exec grant '/usr/lib/git-core'", "36:3"),
    row("coding-agent", &[], "fs exec /usr/bin/dash", A, "exec grant '/usr/bin/dash'", "38:3"),
    row("coding-agent", &[], "fs write /usr/bin/git", D, "default deny", ""),
    row("coding-agent", &[], "fs read /etc/ssl/certs/ca-certificates.crt", A, "read grant '/etc/ssl'", "16:3"),
    row("coding-agent", &[], "fs read /etc/passwd", D, "default deny", ""),
    row("coding-agent", &[], "net github.com 443", A, "allowed endpoint 'github.com:443/tcp'", "47:3"),
    row("coding-agent", &[], "net github.com 22", D, "default deny", ""),
    row("coding-agent", &[], "net gist.github.com 443", D, "default deny", ""),
    row("coding-agent", &[], "net 1.1.1.1 53 udp", A, "is the DNS resolver '1.1.1.1'", "45:8"),
    row("coding-agent", &[], "net 1.1.1.1 53", A, "is the DNS resolver '1.1.1.1'", "45:8"),
    row("coding-agent", &[], "net 1.1.1.1 443", D, "default deny", ""),
    row("coding-agent", &[], "net 8.8.8.8 53 udp", D, "default deny", ""),
    // research-agent: wildcard names through the proxy
    row("research-agent", &[], "net upload.wikimedia.org 443", A, "allowed endpoint '*.wikimedia.org:443/tcp'", "24:3"),
    row("research-agent", &[], "net a.b.wikimedia.org 443", A, "allowed endpoint '*.wikimedia.org:443/tcp'", "24:3"),
    row("research-agent", &[], "net wikimedia.org 443", D, "default deny", ""),
    row("research-agent", &[], "net evilwikimedia.org 443", D, "default deny", ""),
    row("research-agent", &[], "net en.wikipedia.org 443 udp", D, "default deny", ""),
    row("research-agent", &[], "fs write ${OUTPUT}/notes.md", A, "write grant '${OUTPUT}'", "14:10"),
    row("research-agent", &[], "fs exec /usr/bin/python3", A, "exec grant '/usr/bin/python3'", "17:10"),
    // data-analyst: an IP endpoint in host mode; a dataset with a denied subtree
    row("data-analyst", &[], "net 10.20.0.15 5432", A, "allowed endpoint '10.20.0.15:5432/tcp'", "24:10"),
    row("data-analyst", &[], "net 10.20.0.16 5432", D, "default deny", ""),
    row("data-analyst", &[], "net 10.20.0.15 5432 udp", D, "default deny", ""),
    row("data-analyst", &[], "net db.internal 5432", D, "default deny", ""),
    row("data-analyst", &[], "fs read ${DATASET}/clean/2024.csv", A, "read grant '${DATASET}'", "13:35"),
    row("data-analyst", &[], "fs read ${DATASET}/raw-pii/users.csv", D, "deny pattern '${DATASET}/raw-pii'", "16:9"),
    row("data-analyst", &[], "fs write ${DATASET}/clean/2024.csv", D, "default deny", ""),
    row("data-analyst", &[], "fs write ${OUTPUT}/report.html", A, "write grant '${OUTPUT}'", "14:10"),
    row("data-analyst", &["DATASET=/data", "OUTPUT=/data/out"], "fs write /data/out/report.html", A, "write grant '${OUTPUT}'", "14:10"),
    row("data-analyst", &["DATASET=/data", "OUTPUT=/data/raw-pii"], "fs write /data/raw-pii/x", D, "deny pattern '${DATASET}/raw-pii'", "16:9"),
];

fn run(r: &Row) -> (Compiled, Decision) {
    let c = compile(r.policy);
    let d = evaluate(&c.policy, &params(r.params), &query(r.query)).unwrap_or_else(|e| panic!("{} `{}`: {e}", r.policy, r.query));
    (c, d)
}

#[test]
fn evaluator_answers_on_the_example_policies() {
    let mut failures = Vec::new();
    for r in ROWS {
        let (c, d) = run(r);
        let at = d.rule.as_ref().and_then(|x| x.origin).map(|o| {
            let l = c.sources.locate(o);
            format!("{}:{}", l.line, l.column)
        });
        let ok = d.verdict == r.verdict && d.reason.contains(r.reason) && at.as_deref().unwrap_or("") == r.at;
        if !ok {
            failures.push(format!(
                "{} {:?} `{}`: got {} `{}` at {:?}; want {} `{}` at `{}`",
                r.policy, r.params, r.query, d.verdict, d.reason, at, r.verdict, r.reason, r.at
            ));
        }
    }
    assert!(failures.is_empty(), "{} rows differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn deny_answers_without_a_user_rule_say_default_deny_or_why() {
    for r in ROWS.iter().filter(|r| r.verdict == D && r.at.is_empty()) {
        let (_, d) = run(r);
        assert!(
            d.reason.contains("default deny")
                || d.reason.contains("refused")
                || (d.reason.contains("built-in protection") && d.rule.as_ref().is_some_and(|x| x.origin.is_none())),
            "{} `{}`: `{}`",
            r.policy,
            r.query,
            d.reason
        );
    }
}

#[test]
fn unresolved_parameters_are_reported_as_notes() {
    let c = compile("inbox-manager");
    // Without APP's value, the ${APP} grant cannot be compared with an absolute path.
    let d = evaluate(&c.policy, &Params::new(), &query("fs read /opt/app/main.py")).unwrap();
    assert_eq!(d.verdict, D);
    assert!(d.notes.iter().any(|n| n.contains("${APP}") && n.contains("--param APP=")), "{:?}", d.notes);
    // An allowed absolute path mentions the ${APP}-rooted deny rules it could not compare.
    let d = evaluate(&c.policy, &Params::new(), &query("fs read /usr/lib/x")).unwrap();
    assert_eq!(d.verdict, A);
    assert!(d.notes.iter().any(|n| n.contains("deny rules") && n.contains("${APP}")), "{:?}", d.notes);
    // With the value, nothing is left uncompared.
    let d = evaluate(&c.policy, &params(&["APP=/opt/app"]), &query("fs read /usr/lib/x")).unwrap();
    assert!(d.notes.is_empty(), "{:?}", d.notes);
}

#[test]
fn malformed_queries_are_errors_not_decisions() {
    let c = compile("inbox-manager");
    let none = Params::new();
    for q in ["fs read etc/passwd", "fs read /etc/../passwd", "fs read /etc/*", "fs read ${NOPE}/x", "api nope scope", "api gmail get /x", "net *.example.com 443", "net 0.0.0.0 0", "net bad_host! 443"] {
        assert!(evaluate(&c.policy, &none, &query(q)).is_err(), "`{q}` must be a query error");
    }
    assert!(evaluate(&c.policy, &params(&["NOPE=/x"]), &query("fs read /x")).is_err(), "undeclared parameter");
    assert!(eval::parse_param("APP=relative").is_err());
    assert!(eval::parse_param("APP").is_err());
    let d = compile("data-analyst");
    assert!(evaluate(&d.policy, &none, &query("api gmail scope")).is_err(), "no APIs declared");
}

#[test]
fn network_mode_none_denies_everything() {
    let Ok(c) = aegis_compiler::compile_bytes("none.toml", b"version = 1\n[agent]\nname = \"offline\"\n") else { panic!("minimal policy must compile") };
    for q in ["net 127.0.0.1 80", "net example.com 443", "net ::1 53 udp"] {
        let d = evaluate(&c.policy, &Params::new(), &query(q)).unwrap();
        assert_eq!(d.verdict, D, "{q}");
        assert!(d.reason.contains("'none'"), "{q}: {}", d.reason);
    }
}
