//! Property tests (proptest) of the compiler and the reference evaluator.
//!
//! * Policy texts assembled from a grammar of valid and invalid pieces never panic the
//!   compiler, its renderer, the linter or the evaluator.
//! * On random valid policies and random queries, the evaluator's laws hold:
//!   deny beats allow, default deny, rule order does not matter, and adding a grant never
//!   turns an ALLOW into a DENY (monotonicity).
//!
//! Generated policies draw paths, hosts and HTTP paths from small alphabets so that rules
//! and queries overlap often; case counts stay modest to keep the suite fast.

use aegis_compiler::diag::render_human;
use aegis_compiler::eval::{self, Decision, FsQuery, Params, Query, Verdict, evaluate};
use aegis_compiler::ir::Protocol;
use aegis_compiler::{Compiled, compile_bytes};
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------------------------------
// Random valid policies

#[derive(Clone, Debug, Default)]
struct Model {
    read: Vec<String>,
    write: Vec<String>,
    deny: Vec<String>,
    exec: Vec<String>,
    net_allow: Vec<String>,
    net_deny: Vec<String>,
    api_allow: Vec<String>,
    api_deny: Vec<String>,
    unix: Vec<String>,
}

fn quote(list: &[String]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

impl Model {
    fn render(&self) -> String {
        format!(
            "version = 1\n[agent]\nname = \"prop\"\n[parameters]\nW = \"workspace\"\n\
             [filesystem]\nread = {}\nwrite = {}\ndeny = {}\n[exec]\nallow = {}\n\
             [network]\nmode = \"proxy\"\nallow = {}\ndeny = {}\nunix = {}\n\
             [api.svc]\nhost = \"svc.test\"\nscopes = [\"s1\"]\nallow = {}\ndeny = {}\n",
            quote(&self.read),
            quote(&self.write),
            quote(&self.deny),
            quote(&self.exec),
            quote(&self.net_allow),
            quote(&self.net_deny),
            quote(&self.unix),
            quote(&self.api_allow),
            quote(&self.api_deny),
        )
    }

    fn compile(&self) -> Compiled {
        let text = self.render();
        compile_bytes("prop.toml", text.as_bytes())
            .unwrap_or_else(|f| panic!("generated policy must be valid:\n{text}\n{}", render_human(&f.diagnostics, &f.sources, false)))
    }
}

fn fs_path(max_depth: usize) -> impl Strategy<Value = String> {
    (select(vec!["", "${W}"]), prop::collection::vec(select(vec!["a", "b", "c"]), 0..=max_depth)).prop_map(|(root, parts)| {
        if root.is_empty() && parts.is_empty() {
            "/".to_string()
        } else {
            format!("{root}{}", parts.iter().map(|p| format!("/{p}")).collect::<String>())
        }
    })
}

fn endpoint() -> impl Strategy<Value = String> {
    (
        select(vec!["h1.test", "h2.test", "*.h.test", "10.0.0.0/8", "10.1.2.3", "[2001:db8::/32]"]),
        select(vec!["80", "443", "8000-8080", "*", "22,443"]),
        select(vec!["", "/tcp", "/udp"]),
    )
        .prop_map(|(h, p, proto)| format!("{h}:{p}{proto}"))
}

fn http_rule() -> impl Strategy<Value = String> {
    (select(vec!["GET", "POST", "*"]), prop::collection::vec(select(vec!["x", "y", "*", "**"]), 0..=3))
        .prop_map(|(m, segs)| format!("{m} /{}", segs.join("/")))
}

fn list<S: Strategy<Value = String>>(s: S, max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(s, 0..=max)
}

fn model() -> impl Strategy<Value = Model> {
    (
        (list(fs_path(3), 4), list(fs_path(3), 3), list(fs_path(3), 3), list(fs_path(3), 3)),
        (list(endpoint(), 4), list(endpoint(), 2), list(http_rule(), 4), list(http_rule(), 2)),
        list(fs_path(3), 3),
    )
        .prop_map(|((read, write, deny, exec), (net_allow, net_deny, api_allow, api_deny), unix)| Model {
            read,
            write,
            deny,
            exec,
            net_allow,
            net_deny,
            api_allow,
            api_deny,
            unix,
        })
}

/// The same model with every list shuffled.
fn shuffled(m: Model) -> impl Strategy<Value = Model> {
    let s = |v: Vec<String>| Just(v).prop_shuffle();
    (
        (s(m.read), s(m.write), s(m.deny), s(m.exec)),
        (s(m.net_allow), s(m.net_deny), s(m.api_allow), s(m.api_deny)),
        s(m.unix),
    )
        .prop_map(|((read, write, deny, exec), (net_allow, net_deny, api_allow, api_deny), unix)| Model {
            read,
            write,
            deny,
            exec,
            net_allow,
            net_deny,
            api_allow,
            api_deny,
            unix,
        })
}

#[derive(Clone, Debug)]
struct Case {
    query: Query,
    /// `W=/a` or none: parameter-rooted rules either meet absolute queries or stay apart.
    w: Option<&'static str>,
}

fn query() -> impl Strategy<Value = Query> {
    let fs = (select(vec![FsQuery::Read, FsQuery::Write, FsQuery::Exec]), fs_path(4))
        .prop_map(|(access, path)| Query::Fs { access, path });
    let net = (
        select(vec!["h1.test", "h2.test", "x.h.test", "a.b.h.test", "h.test", "10.1.2.3", "10.9.9.9", "11.0.0.1", "2001:db8::7"]),
        select(vec![80u16, 443, 8080, 22, 9000]),
        select(vec![Protocol::Tcp, Protocol::Udp]),
    )
        .prop_map(|(h, port, protocol)| Query::Net { host: h.to_string(), port, protocol });
    let api = (select(vec!["GET", "POST", "DELETE"]), prop::collection::vec(select(vec!["x", "y", "z"]), 0..=4))
        .prop_map(|(m, segs)| Query::ApiHttp { api: "svc".into(), method: m.into(), path: format!("/{}", segs.join("/")) });
    let unix = fs_path(4).prop_map(|path| Query::Unix { path });
    prop_oneof![3 => fs, 2 => net, 2 => api, 1 => unix]
}

fn case() -> impl Strategy<Value = Case> {
    (query(), select(vec![None, Some("W=/a")])).prop_map(|(query, w)| Case { query, w })
}

fn decide(c: &Compiled, case: &Case) -> Decision {
    let params: Params = case.w.iter().map(|p| eval::parse_param(p).unwrap()).collect();
    evaluate(&c.policy, &params, &case.query).unwrap_or_else(|e| panic!("query {:?}: {e}", case.query))
}

/// A rule, in policy syntax, that denies exactly what `q` asks for.
fn deny_rule_for(m: &mut Model, q: &Query) {
    match q {
        // A filesystem deny beats a unix grant too.
        Query::Fs { path, .. } | Query::Unix { path } => m.deny.push(path.clone()),
        Query::Net { host, port, protocol } => {
            let h = if host.contains(':') { format!("[{host}]") } else { host.clone() };
            m.net_deny.push(format!("{h}:{port}/{protocol}"));
        }
        Query::ApiHttp { method, path, .. } => m.api_deny.push(format!("{method} {path}")),
        Query::ApiScope { .. } => unreachable!(),
    }
}

fn grant() -> impl Strategy<Value = (u8, String, String)> {
    (0u8..7, fs_path(3), prop_oneof![endpoint(), http_rule()]).prop_map(|(k, p, other)| (k, p, other))
}

fn add_grant(m: &mut Model, (kind, path, other): &(u8, String, String)) {
    match kind {
        0 => m.read.push(path.clone()),
        1 => m.write.push(path.clone()),
        2 => m.exec.push(path.clone()),
        3 => m.unix.push(path.clone()),
        _ if other.contains(':') => m.net_allow.push(other.clone()),
        _ => m.api_allow.push(other.clone()),
    }
}

/// Whether policy path `outer` covers query path `inner` (as written: same root, component
/// prefix).
fn covers(outer: &str, inner: &str) -> bool {
    outer == "/" && inner.starts_with('/') || inner == outer || inner.starts_with(&format!("{outer}/"))
}

/// A read grant strictly inside a write grant makes writing below it fail, unless a deeper
/// write grant covers the path (the most specific rule decides).
#[test]
fn a_read_grant_inside_a_write_grant_is_a_read_only_carve_out() {
    let m = |read: &[&str], write: &[&str]| Model {
        read: read.iter().map(|s| s.to_string()).collect(),
        write: write.iter().map(|s| s.to_string()).collect(),
        ..Model::default()
    };
    let ask = |m: &Model, access: FsQuery, path: &str| {
        decide(&m.compile(), &Case { query: Query::Fs { access, path: path.into() }, w: None })
    };
    let carved = m(&["/a/b"], &["/a"]);
    let d = ask(&carved, FsQuery::Write, "/a/b/c");
    assert_eq!(d.verdict, Verdict::Deny, "{}", d.reason);
    assert!(d.reason.contains("read-only: read grant '/a/b' inside write grant '/a'"), "{}", d.reason);
    assert_eq!(ask(&carved, FsQuery::Read, "/a/b/c").verdict, Verdict::Allow);
    assert_eq!(ask(&carved, FsQuery::Write, "/a/c").verdict, Verdict::Allow);
    assert_eq!(ask(&carved, FsQuery::Write, "/a/bc").verdict, Verdict::Allow, "whole components only");
    let regranted = m(&["/a/b"], &["/a", "/a/b/c"]);
    assert_eq!(ask(&regranted, FsQuery::Write, "/a/b/c/d").verdict, Verdict::Allow, "a deeper write grant decides");
    assert_eq!(ask(&regranted, FsQuery::Write, "/a/b/x").verdict, Verdict::Deny);
    let same_depth = m(&["/a"], &["/a"]);
    assert_eq!(ask(&same_depth, FsQuery::Write, "/a/x").verdict, Verdict::Allow, "at equal depth write wins");
    let outside = m(&["/"], &["/a"]);
    assert_eq!(ask(&outside, FsQuery::Write, "/a/x").verdict, Verdict::Allow, "a read grant above the write grant is no carve-out");
}

/// What a user compares between two answers: verdict, reason, deciding rule, notes
/// (locations move when lines are shuffled, so they are left out).
fn meaning(d: &Decision) -> (Verdict, String, Option<(String, String)>, Vec<String>) {
    (d.verdict, d.reason.clone(), d.rule.as_ref().map(|r| (r.kind.clone(), r.text.clone())), d.notes.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn deny_beats_allow(m in model(), cases in prop::collection::vec(case(), 1..8)) {
        for case in &cases {
            let mut with_deny = m.clone();
            deny_rule_for(&mut with_deny, &case.query);
            let d = decide(&with_deny.compile(), case);
            prop_assert_eq!(d.verdict, Verdict::Deny, "{:?} with a covering deny rule: {}", case, d.reason);
        }
    }

    #[test]
    fn default_deny(deny in list(fs_path(3), 3), net_deny in list(endpoint(), 2), api_deny in list(http_rule(), 2), cases in prop::collection::vec(case(), 1..16)) {
        let m = Model { deny, net_deny, api_deny, ..Model::default() };
        let c = m.compile();
        for case in &cases {
            let d = decide(&c, case);
            prop_assert_eq!(d.verdict, Verdict::Deny, "{:?} allowed by a policy without grants: {}", case, d.reason);
        }
    }

    #[test]
    fn rule_order_does_not_matter((m, s) in model().prop_flat_map(|m| (Just(m.clone()), shuffled(m))), cases in prop::collection::vec(case(), 1..16)) {
        let (a, b) = (m.compile(), s.compile());
        prop_assert_eq!(a.policy.digest(), b.policy.digest(), "shuffled lists changed the IR");
        for case in &cases {
            prop_assert_eq!(meaning(&decide(&a, case)), meaning(&decide(&b, case)), "{:?}", case);
        }
    }

    /// Monotonicity, with the one exception the language defines: a read grant is a
    /// read-only carve-out for writing below it. (A write grant also brings the built-in
    /// protections below it, `.git/hooks` and the like, which this generator's paths never
    /// name; `eval_table` covers them.)
    #[test]
    fn adding_a_grant_never_takes_a_permission_away(m in model(), g in grant(), cases in prop::collection::vec(case(), 1..16)) {
        let before = m.compile();
        let mut more = m.clone();
        add_grant(&mut more, &g);
        let after = more.compile();
        for case in &cases {
            // Paths as the case's parameter makes them (`${W}` is `/a` there).
            let resolved = |p: &str| case.w.and_then(|w| w.strip_prefix("W=")).map_or_else(|| p.to_string(), |w| p.replace("${W}", w));
            let carved = matches!(&case.query, Query::Fs { access: FsQuery::Write, path } if g.0 == 0 && covers(&resolved(&g.1), &resolved(path)));
            if decide(&before, case).verdict == Verdict::Allow && !carved {
                let d = decide(&after, case);
                prop_assert_eq!(d.verdict, Verdict::Allow, "{:?} became DENY after adding {:?}: {}", case, g, d.reason);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Random policy texts, valid and invalid

fn value_piece() -> impl Strategy<Value = String> {
    let strings = select(vec![
        "\"/usr\"", "\"${WORKSPACE}/src\"", "\"${NOPE}\"", "\"usr\"", "\"~/.ssh\"", "\"/a/../b\"", "\"/a//b\"", "\"/a/*.c\"",
        "\"/**\"", "\"/a/**/b\"", "\"\"", "\"github.com:443\"", "\"*.x.org:443/udp\"", "\"10.0.0.1/8:1\"", "\"[::1]:53/udp\"",
        "\"h:0\"", "\"h:70000\"", "\"h:9-1\"", "\"h:1/icmp\"", "\"512MiB\"", "\"512M\"", "\"-1GiB\"", "\"1.5GiB\"", "\"30m\"",
        "\"5y\"", "\"1h30m\"", "\"GET /a/*/b/**\"", "\"get /x\"", "\"* /\"", "\"POST /a;b\"", "\"proxy\"", "\"host\"", "\"none\"",
        "\"required\"", "\"best-effort\"", "\"EPERM\"", "\"ptrace\"", "\"default\"", "\"caf\\u00e9\"", "\"\\u0000\"", "\"x\"",
    ]);
    let scalars = prop_oneof![
        strings.prop_map(str::to_string),
        any::<i64>().prop_map(|i| i.to_string()),
        select(vec!["0", "-1", "1", "65535", "4095", "1e400", "0.5", "-0.0", "nan", "inf", "true", "1979-05-27T07:32:00Z"]).prop_map(str::to_string),
    ];
    scalars.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((select(vec!["host", "ports", "protocol", "oci", "header", "from_env", "from_file", "x"]), inner), 0..3)
                .prop_map(|kv| format!("{{ {} }}", kv.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "))),
        ]
    })
}

fn line_piece() -> impl Strategy<Value = String> {
    let header = select(vec![
        "[agent]", "[parameters]", "[filesystem]", "[exec]", "[network]", "[api.svc]", "[api.svc.credential]", "[api.Bad]", "[resources]",
        "[syscalls]", "[syscalls.errno]", "[enforcement]", "[filesytem]", "[[agent]]", "[agent.extra]", "[",
    ])
    .prop_map(str::to_string);
    let key = select(vec![
        "version", "name", "description", "extends", "command", "WORKSPACE", "read", "write", "deny", "tmp_size", "allow", "mode", "dns", "unix",
        "host", "port", "scopes", "credential", "memory", "pids", "cpu", "cpu_weight", "io_weight", "wall_time", "base", "log", "kill",
        "default_errno", "ptrace", "landlock", "seccomp", "min_landlock_abi", "nmae", "\"quoted key\"", "a.b",
    ]);
    let kv = (key, value_piece()).prop_map(|(k, v)| format!("{k} = {v}"));
    let junk = "[ -~]{0,20}";
    prop_oneof![2 => header, 6 => kv, 1 => junk]
}

fn policy_text() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(line_piece(), 0..24)).prop_map(|(preamble, lines)| {
        let head = if preamble { "version = 1\n[agent]\nname = \"fuzz\"\n" } else { "" };
        format!("{head}{}\n", lines.join("\n"))
    })
}

/// Everything a user can do with a policy text; none of it may panic.
fn exercise(text: &[u8]) {
    match compile_bytes("random.toml", text) {
        Ok(c) => {
            let _ = c.policy.to_json();
            let _ = c.policy.digest();
            let _ = aegis_compiler::lint::exposure(&c.policy);
            let _ = aegis_compiler::cli::inspect::render(&c);
            let _ = render_human(&c.warnings, &c.sources, false);
            for q in ["fs read /usr/x", "fs write ${WORKSPACE}/x", "fs exec /usr/bin/git"] {
                let w: Vec<&str> = q.split(' ').collect();
                let access = match w[1] {
                    "read" => FsQuery::Read,
                    "write" => FsQuery::Write,
                    _ => FsQuery::Exec,
                };
                let _ = evaluate(&c.policy, &Params::new(), &Query::Fs { access, path: w[2].into() });
            }
            let _ = evaluate(&c.policy, &Params::new(), &Query::Net { host: "github.com".into(), port: 443, protocol: Protocol::Tcp });
            let _ = evaluate(&c.policy, &Params::new(), &Query::Unix { path: "/run/x.sock".into() });
            let _ = evaluate(&c.policy, &Params::new(), &Query::ApiHttp { api: "svc".into(), method: "GET".into(), path: "/a/b".into() });
        }
        Err(f) => {
            assert!(f.diagnostics.iter().any(|d| d.is_error()), "failure without an error");
            let _ = render_human(&f.diagnostics, &f.sources, false);
            for d in &f.diagnostics {
                let _ = aegis_compiler::diag::to_json(d, &f.sources);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn grammar_policies_never_panic(text in policy_text()) {
        exercise(text.as_bytes());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_examples_never_panic(which in 0usize..4, cut in any::<prop::sample::Index>(), insert in "[ -~\n]{0,8}") {
        let paths = crate::common::example_policies();
        let text = std::fs::read_to_string(&paths[which % paths.len()]).unwrap();
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        exercise(mutated.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// HTTP rule matching

/// The definition of a rule match, written as plainly as possible (exponential; small
/// inputs only): `*` takes one segment, `**` any number, literals compare equal.
fn naive_match(rule: &[&str], path: &[&str]) -> bool {
    match rule.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|k| naive_match(rest, &path[k..])),
        Some((seg, rest)) => match path.split_first() {
            Some((p, tail)) => (*seg == "*" || seg == p) && naive_match(rest, tail),
            None => false,
        },
    }
}

fn rule_matches(rule_segs: &[&str], method: &str, path_segs: &[&str]) -> bool {
    let rule = aegis_compiler::ir::HttpRule::parse(&format!("GET /{}", rule_segs.join("/"))).unwrap();
    let path = aegis_compiler::ir::api::canonical_path(&format!("/{}", path_segs.join("/"))).unwrap();
    rule.matches(method, &path)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn http_rules_match_by_their_definition(
        rule in prop::collection::vec(select(vec!["a", "b", "*", "**"]), 0..6),
        path in prop::collection::vec(select(vec!["a", "b", "c"]), 0..7),
    ) {
        prop_assert_eq!(rule_matches(&rule, "GET", &path), naive_match(&rule, &path), "rule {:?} path {:?}", rule, path);
        prop_assert!(!rule_matches(&rule, "POST", &path));
    }
}

#[test]
fn many_double_stars_against_a_long_path_stay_fast() {
    // The agent chooses the request path; a rule with several `**` must not make the
    // proxy backtrack exponentially (this took hours with a recursive matcher).
    let rule: Vec<&str> = ["**"; 12].into_iter().chain(["z"]).collect();
    let path: Vec<&str> = ["a"; 400].to_vec();
    let start = std::time::Instant::now();
    assert!(!rule_matches(&rule, "GET", &path));
    let mut hit = path.clone();
    hit.push("z");
    assert!(rule_matches(&rule, "GET", &hit));
    assert!(start.elapsed() < std::time::Duration::from_secs(5), "matching took {:?}", start.elapsed());
}
