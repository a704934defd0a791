//! Every layer together, for real: a bundle with a mount plan, a Landlock ruleset and a
//! seccomp program built from the target types, run by `aegis-exec`; the agent checks what
//! it may and may not do, and the enforcement report says each layer is fully enforced.
//! Also the fail-closed refusals (unsigned, tampered, proxy mode, blocked user namespaces).

use aegis_targets::bundle::{Enforcement, NetworkMode};
use aegis_targets::landlock::{FsAccess, FsRule, PathTemplate, loader_rules, lower_fs};
use aegis_targets::mounts::{PlanOptions, plan_from_rules};
use aegis_targets::seccomp::{Arch, Hardening, SyscallWeights, aegis_default, compile, to_bytes};
use crate::common::*;
use std::os::unix::fs::PermissionsExt;

fn rule(p: &str, access: FsAccess) -> FsRule {
    FsRule { path: PathTemplate::parse(p).unwrap(), access, origin: format!("test {p}") }
}

fn layered_spec(agent: &str) -> Spec {
    let mut rules = vec![
        rule("/usr", FsAccess::Read),
        rule("/etc", FsAccess::Read),
        rule("/proc", FsAccess::Read),
        rule("/usr/bin/dash", FsAccess::Exec),
        rule("/usr/bin/cat", FsAccess::Exec),
        rule("${WORKSPACE}", FsAccess::Write),
        rule("/etc/hostname", FsAccess::Deny),
        rule("/dev/null", FsAccess::Write),
    ];
    rules.extend(loader_rules("x86_64"));
    let ll = lower_fs(&rules);
    let (plan, _) = plan_from_rules(&rules, &PlanOptions::default());
    let seccomp = compile(&aegis_default(&Hardening::default()), Arch::X86_64, &SyscallWeights::default()).unwrap();
    let mut spec = Spec::new(agent);
    spec.parameters = vec!["WORKSPACE".into()];
    spec.landlock_abi = Some(ll.artifact.min_abi.0);
    spec.seccomp = true;
    spec.extra_files = vec![
        ("landlock.json".into(), ll.artifact.to_json().unwrap().into_bytes()),
        ("mounts.json".into(), plan.to_json().unwrap().into_bytes()),
        ("seccomp.x86_64.bpf".into(), to_bytes(&seccomp)),
    ];
    spec
}

fn workspace(b: &TestBundle) -> std::path::PathBuf {
    let ws = b.tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::write(ws.join("ok.txt"), "visible\n").unwrap();
    std::fs::create_dir(ws.join("secret")).unwrap();
    std::fs::write(ws.join("secret/key.txt"), "hidden\n").unwrap();
    // The agent runs as nobody: let it traverse and write its workspace.
    for p in [b.tmp.path().to_path_buf(), ws.clone(), ws.join("secret")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(ws.join("secret/key.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    ws
}

#[test]
fn every_layer_enforced_and_verified() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIP layers: the test's seccomp program is built for x86_64");
        return;
    }
    if !need_root("layers") {
        return;
    }
    let b = build(&layered_spec("rt-layers"), true);
    let ws = workspace(&b);
    let script = "cat $WS/ok.txt; cat /etc/hostname 2>/dev/null || echo secret-denied; \
                  echo hi > $WS/new.txt && echo write-ok; (echo x > /etc/aegis-test) 2>/dev/null || echo etc-denied; \
                  while read l; do case $l in Seccomp:*|NoNewPrivs:*|CapEff:*|CapBnd:*) echo $l;; esac; done < /proc/self/status; \
                  /usr/bin/id 2>/dev/null || echo id-exec-denied";
    let param = format!("WORKSPACE={}", ws.display());
    let mut cmd = b.command(&["--verbose", "--param", &param, "--env", "WS"], &["/bin/sh", "-c", script]);
    cmd.env("WS", &ws);
    let o = cmd.output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("visible"), "{out}");
    let host_name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert!(out.contains("secret-denied") && (host_name.trim().is_empty() || !out.contains(host_name.trim())), "denied path masked: {out}");
    assert!(out.contains("write-ok") && ws.join("new.txt").exists(), "{out}\n{err}");
    assert!(out.contains("etc-denied"), "{out}");
    assert!(out.contains("Seccomp:\t2") || out.contains("Seccomp: 2"), "seccomp filter mode: {out}");
    assert!(out.contains("NoNewPrivs:\t1") || out.contains("NoNewPrivs: 1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000") || out.contains("CapEff: 0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000") || out.contains("CapBnd: 0000000000000000"), "{out}");
    assert!(out.contains("id-exec-denied"), "exec of a binary not granted: {out}");
    for layer in ["landlock", "seccomp", "namespaces", "capabilities", "no_new_privs"] {
        assert!(
            err.lines().any(|l| l.trim_start().starts_with(layer) && l.contains("fully enforced")),
            "{layer} fully enforced in the report:\n{err}"
        );
    }
    let report = &b.events("enforcement_report")[0];
    assert_eq!(report["cgroup_mode"], aegis_targets::cgroup::Layout::detect().unwrap().name());
    assert!(b.leaves().is_empty());
}

#[test]
fn a_required_layer_that_fails_stops_the_launch() {
    if !need_root("layer_fails") {
        return;
    }
    // A Landlock grant on the workspace parameter that is missing at launch → refused before
    // anything runs (exit 125); a best-effort marking does not rescue a bad parameter.
    let b = build(&layered_spec("rt-fail"), true);
    let o = b.run(&[], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o).1);
    assert!(text(&o).1.contains("missing --param WORKSPACE"), "{}", text(&o).1);
    assert!(b.kinds().contains(&"bundle_refused".to_string()));
    assert!(b.leaves().is_empty());
}

#[test]
fn unsigned_bundles_need_the_flag_and_are_audited() {
    if !need_root("unsigned") {
        return;
    }
    let b = build(&Spec::new("rt-unsigned"), false);
    let o = b.run(&[], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "unsigned refused with a trust key: {}", text(&o).1);
    let o = std::process::Command::new(EXE)
        .env("AEGIS_STATE_DIR", &b.state)
        .args(["--allow-unsigned", "--audit-log"])
        .arg(&b.log)
        .arg(&b.dir)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let kinds = b.kinds();
    assert!(kinds.contains(&"bundle_refused".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"unsigned_bundle_allowed".to_string()), "{kinds:?}");
}

#[test]
fn tampered_bundle_is_refused_before_anything_is_created() {
    if !need_root("tampered") {
        return;
    }
    let b = build(&Spec::new("rt-tamper"), true);
    let f = b.dir.join("cgroup.json");
    let t = std::fs::read_to_string(&f).unwrap().replace("\"pids_max\": 64", "\"pids_max\": 65");
    std::fs::write(&f, t).unwrap();
    let o = b.run(&[], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o).1);
    assert!(b.leaves().is_empty());
}

/// The proxy answers from the bundle's typed policy (`policy.ir.json`); a proxy-mode bundle
/// without it (this one is built from targets alone) cannot be enforced and is refused.
#[test]
fn a_proxy_mode_bundle_without_its_typed_policy_is_refused() {
    if !need_root("proxy") {
        return;
    }
    let mut spec = Spec::new("rt-proxy");
    spec.network = NetworkMode::Proxy;
    spec.net = Some(aegis_targets::nftables::NetPolicy {
        mode: aegis_targets::nftables::NetMode::Proxy { port: 3128 },
        endpoints: vec![],
        resolvers: vec![],
    });
    let b = build(&spec, true);
    let o = b.run(&[], &["/bin/true"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o).1);
    assert!(text(&o).1.contains("policy.ir.json"), "{}", text(&o).1);
    assert!(b.leaves().is_empty(), "nothing was created");
}

#[test]
fn blocked_user_namespaces_refuse_or_degrade_as_the_bundle_says() {
    if !need_root("userns_blocked") {
        return;
    }
    let b = build(&Spec::new("rt-nouserns"), true);
    let o = b.command(&[], &["/bin/true"]).env("AEGIS_EXEC_TEST_NO_USERNS", "1").output().unwrap();
    assert_eq!(o.status.code(), Some(126), "required namespaces: precise refusal");
    assert!(text(&o).1.contains("namespaces unavailable"), "{}", text(&o).1);
    assert!(b.leaves().is_empty(), "cgroup leaf removed after the refusal");

    let mut spec = Spec::new("rt-bestns");
    spec.enforcement.insert("namespaces".into(), Enforcement::BestEffort);
    // Network mode none is a network namespace: without one it must be best-effort too.
    let strict = build(&spec, true);
    let o = strict.command(&[], &["/bin/true"]).env("AEGIS_EXEC_TEST_NO_USERNS", "1").output().unwrap();
    assert_eq!(o.status.code(), Some(126), "network none without a netns refused: {}", text(&o).1);
    assert!(text(&o).1.contains("network namespace"), "{}", text(&o).1);
    spec.enforcement.insert("nftables".into(), Enforcement::BestEffort);
    let b = build(&spec, true);
    let o = b
        .command(&["--verbose"], &["/bin/sh", "-c", "echo pid=$$; id -u"])
        .env("AEGIS_EXEC_TEST_NO_USERNS", "1")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(!out.contains("pid=1\n"), "no pid namespace in this mode: {out}");
    assert!(out.contains("65534"), "still not root: {out}");
    assert!(err.contains("namespaces    not enforced"), "{err}");
}

#[test]
fn doctor_reports_this_host() {
    let o = std::process::Command::new(EXE).arg("doctor").output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let abi = aegis_targets::landlock::kernel_abi().0;
    if abi > 0 {
        assert!(out.contains(&format!("landlock        ABI {abi}")), "{out}");
    }
    let layout = aegis_targets::cgroup::Layout::detect().map(|l| l.name()).unwrap_or("none");
    assert!(out.contains(&format!("cgroup          {layout}")), "{out}");
    assert!(out.contains("user namespaces"), "{out}");
    assert!(out.contains("nftables        binary: "), "{out}");
    if is_root() {
        // A bundle that needs nothing this host lacks runs; the report says so.
        let b = build(&Spec::new("rt-doctor"), true);
        let o = std::process::Command::new(EXE).arg("doctor").arg(&b.dir).output().unwrap();
        assert!(text(&o).0.contains(&format!("{}: can run", b.agent)), "{}", text(&o).0);
    }
}

/// `doctor BUNDLE` says what the launch then does, without user namespaces (where most of
/// the launch's refusals are): for each step from every layer required to the Landlock +
/// seccomp mode, the verdict is "can run" exactly when the launch runs, and otherwise names
/// the layer the launch is refused for, with the launch's exit status.
#[test]
fn doctor_without_user_namespaces_says_what_the_launch_does() {
    if !need_root("doctor_nouserns") {
        return;
    }
    if aegis_targets::landlock::kernel_abi().0 < 6 {
        eprintln!("SKIP doctor_nouserns: Landlock ABI 6 needed for the mode without namespaces");
        return;
    }
    // Each step makes one more layer best-effort: the refusal moves to the next layer.
    let steps: [(&[&str], Option<&str>); 4] = [
        (&[], Some("namespaces")),
        (&["namespaces"], Some("network")),
        (&["namespaces", "nftables"], Some("mounts")),
        (&["namespaces", "nftables", "mounts"], None),
    ];
    for (best_effort, refused) in steps {
        let mut spec = layered_spec("rt-doctor-nouserns");
        for layer in best_effort {
            spec.enforcement.insert((*layer).into(), Enforcement::BestEffort);
        }
        let b = build(&spec, true);
        let ws = workspace(&b);
        let doctor = std::process::Command::new(EXE).arg("doctor").arg(&b.dir).env("AEGIS_EXEC_TEST_NO_USERNS", "1").output().unwrap();
        let (report, _) = text(&doctor);
        let verdict = report.lines().find(|l| l.starts_with(&format!("bundle {}: ", b.dir.display()))).unwrap_or_default().to_string();
        let o = b
            .command(&["--param", &format!("WORKSPACE={}", ws.display())], &["/usr/bin/cat", "/dev/null"])
            .env("AEGIS_EXEC_TEST_NO_USERNS", "1")
            .output()
            .unwrap();
        let err = text(&o).1;
        match refused {
            Some(layer) => {
                let named = format!("{layer} unavailable: ");
                assert_eq!(o.status.code(), Some(126), "{best_effort:?}: {err}");
                assert!(err.contains(&named), "{best_effort:?}: the launch is refused for {layer}: {err}");
                assert!(err.contains("fix: "), "{best_effort:?}: the refusal names its fix: {err}");
                assert_eq!(doctor.status.code(), Some(126), "{best_effort:?}: {report}");
                let first = verdict.split(": cannot run: ").nth(1).unwrap_or_default();
                assert!(first.starts_with(&named), "{best_effort:?}: doctor names the launch's refusal first: {verdict}");
            }
            None => {
                assert_eq!(o.status.code(), Some(0), "{best_effort:?}: {err}");
                assert_eq!(doctor.status.code(), Some(0), "{report}");
                assert!(verdict.contains(": can run; ") && verdict.contains("without user namespaces"), "{verdict}");
            }
        }
    }
}

/// Without user namespaces there is no mount namespace and so no private `/tmp`: the
/// built-in `/tmp` grant must not become a write grant on the host's `/tmp`. The run gets
/// its own directory (the agent's, 0700), Landlock grants that instead, TMPDIR and HOME
/// point there, and it is gone after the run; the host's `/tmp` stays out of reach. As
/// root and as a user.
#[test]
fn without_user_namespaces_the_agent_gets_its_own_tmp_never_the_hosts() {
    if !need_root("own_tmp") {
        return;
    }
    if aegis_targets::landlock::kernel_abi().0 == 0 {
        eprintln!("SKIP own_tmp: no Landlock in this kernel");
        return;
    }
    let mut rules = vec![
        rule("/usr", FsAccess::Read),
        rule("/usr/bin/dash", FsAccess::Exec),
        rule("/usr/bin/cat", FsAccess::Exec),
        rule("/tmp", FsAccess::Write),
        rule("/dev/null", FsAccess::Write),
    ];
    rules.extend(loader_rules(std::env::consts::ARCH));
    let ll = lower_fs(&rules);
    let mut runs: Vec<Option<u32>> = vec![None];
    runs.extend(unprivileged_user("own_tmp_user").map(Some));
    for user in runs {
        let mut spec = Spec::new(if user.is_some() { "rt-owntmp-user" } else { "rt-owntmp" });
        spec.landlock_abi = Some(ll.artifact.min_abi.0);
        spec.extra_files = vec![("landlock.json".into(), ll.artifact.to_json().unwrap().into_bytes())];
        for layer in ["namespaces", "nftables", "cgroup"] {
            spec.enforcement.insert(layer.into(), Enforcement::BestEffort);
        }
        let b = build(&spec, true);
        let probe = format!("/tmp/aegis-owntmp-probe-{}", std::process::id());
        let script = format!(
            "echo tmpdir=$TMPDIR home=$HOME; echo hi > $TMPDIR/f && echo wrote; cat $TMPDIR/f; (echo x > {probe}) 2>/dev/null || echo host-tmp-denied; (cat /etc/hostname) 2>/dev/null || echo etc-denied"
        );
        let cmd = ["/usr/bin/dash", "-c", script.as_str()];
        let o = match user {
            Some(uid) => {
                b.give_to(uid);
                b.command_as(uid, &["--verbose"], &cmd).env("AEGIS_EXEC_TEST_NO_USERNS", "1").output().unwrap()
            }
            None => b.command(&["--verbose"], &cmd).env("AEGIS_EXEC_TEST_NO_USERNS", "1").output().unwrap(),
        };
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{user:?}: {out}{err}");
        let dir = out.lines().find_map(|l| l.strip_prefix("tmpdir=")).and_then(|l| l.split(' ').next()).unwrap_or_default().to_string();
        assert!(dir.contains("/aegis-rt-owntmp") && dir != "/tmp", "{user:?}: the run's own directory: {out}");
        assert!(out.contains(&format!("home={dir}")), "{out}");
        assert!(out.contains("wrote\nhi\n"), "{user:?}: the agent writes its /tmp: {out}{err}");
        assert!(out.contains("host-tmp-denied"), "{user:?}: the host's /tmp is out of reach: {out}");
        assert!(!std::path::Path::new(&probe).exists(), "{user:?}: the agent wrote into the host's /tmp");
        assert!(out.contains("etc-denied"), "{out}");
        assert!(!std::path::Path::new(&dir).exists(), "{user:?}: the run's /tmp is removed at exit");
        assert!(err.contains(&format!("private /tmp is {dir}")), "{user:?}: the report says so: {err}");
    }
}
