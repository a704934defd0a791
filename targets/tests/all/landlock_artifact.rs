//! The `landlock.json` format: canonical bytes, validation of tampered or inconsistent
//! artifacts, minimum-ABI computation, the read/write/exec mapping, deny-beats-allow in the
//! lowering, path templates, the ELF interpreter reader, and the text twin snapshot.


use aegis_targets::landlock::{
    self, Abi, Fallback, FsAccess, FsRight, GrantKind, InForce, LandlockArtifact, NetRight,
    NetRule, PathTemplate, RestrictFlag, Scope, TemplateError,
};
use proptest::prelude::*;
use crate::landlock_support::rule;

/// A small coding-agent policy, shared with the mounts snapshot.
fn example() -> LandlockArtifact {
    use FsAccess::*;
    let mut rules = vec![
        rule("/usr", Read, "fs.read[0]"),
        rule("/etc", Read, "fs.read[1]"),
        rule("/etc/shadow", Deny, "fs.deny[0]"),
        rule("/usr/bin/git", Exec, "fs.exec[0]"),
        rule("/usr/bin/python3", Exec, "fs.exec[1]"),
        rule("${WORKSPACE}", Write, "fs.write[0]"),
        rule("${WORKSPACE}/.env", Deny, "fs.deny[1]"),
        rule("/tmp", Write, "fs.write[1]"),
    ];
    rules.extend(landlock::loader_rules("x86_64"));
    let mut a = landlock::lower_fs(&rules).artifact;
    a.handled_net = [NetRight::BindTcp, NetRight::ConnectTcp].into();
    a.net_rules = vec![NetRule {
        port: 443,
        access: [NetRight::ConnectTcp].into(),
    }];
    a.scopes = [Scope::AbstractUnixSocket, Scope::Signal].into();
    a.restrict_flags = [RestrictFlag::LogNewExecOn].into();
    a.fallbacks.fs = [
        (FsRight::Refer, Fallback::Stricter),
        (FsRight::Truncate, Fallback::MountPlan),
    ]
    .into();
    a.fallbacks.scopes = [(Scope::Signal, Fallback::PidNamespace)].into();
    a.normalize();
    a
}

fn snapshot(name: &str, text: &str) {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../snapshots/landlock"
    ));
    s.set_prepend_module_to_snapshot(false);
    s.bind(|| insta::assert_snapshot!(name, text));
}

#[test]
fn text_twin_and_json_snapshots() {
    let a = example();
    snapshot("example_landlock_txt", &a.render_text());
    snapshot("example_landlock_json", &a.to_json().unwrap());
}

#[test]
fn json_is_canonical_and_round_trips() {
    let a = example();
    let j = a.to_json().unwrap();
    assert_eq!(j, example().to_json().unwrap(), "same input, same bytes");
    let back = LandlockArtifact::from_json(&j).unwrap();
    assert_eq!(back, a);
    assert_eq!(back.to_json().unwrap(), j);
}

#[test]
fn min_abi_follows_what_is_handled() {
    let fs_only = landlock::lower_fs(&[rule("/usr", FsAccess::Read, "r")]).artifact;
    assert_eq!(
        fs_only.min_abi,
        Abi(3),
        "truncate (V3) and refer (V2) are always handled"
    );
    let mut a = fs_only.clone();
    a.handled_net.insert(NetRight::ConnectTcp);
    a.normalize();
    assert_eq!(a.min_abi, Abi(4));
    a.handled_fs.insert(FsRight::IoctlDev);
    a.normalize();
    assert_eq!(a.min_abi, Abi(5));
    a.scopes.insert(Scope::Signal);
    a.normalize();
    assert_eq!(a.min_abi, Abi(6));
    a.restrict_flags.insert(RestrictFlag::LogNewExecOn);
    a.normalize();
    assert_eq!(a.min_abi, Abi(7));
    assert_eq!(example().min_abi, Abi(7));
}

#[test]
fn the_abi_a_launch_needs_counts_only_fallbacks_in_force() {
    // The fs lowering alone: refer (V2) and truncate (V3) with the compiler's fallbacks.
    let mut a = landlock::lower_fs(&[rule("/usr", FsAccess::Read, "r")]).artifact;
    a.fallbacks.fs = [
        (FsRight::Refer, Fallback::Stricter),
        (FsRight::Truncate, Fallback::MountPlan),
    ]
    .into();
    a.validate().unwrap();
    assert_eq!(a.min_abi, Abi(3), "Landlock alone still needs V3");
    assert_eq!(
        a.needed_abi(InForce::NOTHING),
        Abi(3),
        "without a mount plan truncate needs Landlock"
    );
    let plan_only = InForce {
        mount_plan: true,
        pid_namespace: true,
        network_namespace: true,
    };
    assert_eq!(
        a.needed_abi(plan_only),
        Abi(1),
        "refer is stricter below V2, truncate is read-only mounts"
    );
    assert_eq!(a.floor_abi(), Abi(1));
    // What a V2 kernel lacks, and who enforces it.
    let m = a.missing(Abi(2), plan_only);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].by, Some(Fallback::MountPlan));
    assert!(m[0].describe().contains("mount plan"), "{}", m[0].describe());
    assert_eq!(a.missing(Abi(2), InForce::NOTHING)[0].by, None);
    // Without namespaces, scopes and TCP rules are Landlock's alone.
    a.scopes.insert(Scope::Signal);
    a.handled_net.insert(NetRight::ConnectTcp);
    a.fallbacks.scopes.insert(Scope::Signal, Fallback::PidNamespace);
    a.fallbacks.net.insert(NetRight::ConnectTcp, Fallback::NetworkNamespace);
    a.normalize();
    assert_eq!(a.min_abi, Abi(6));
    assert_eq!(a.floor_abi(), Abi(1));
    assert_eq!(
        a.needed_abi(InForce {
            mount_plan: false,
            pid_namespace: true,
            network_namespace: true,
        }),
        Abi(3)
    );
    // Sharing the host's network namespace (root's host mode): TCP rules need V4.
    assert_eq!(
        a.needed_abi(InForce {
            mount_plan: true,
            pid_namespace: true,
            network_namespace: false,
        }),
        Abi(4)
    );
    assert_eq!(a.needed_abi(InForce::NOTHING), Abi(6));
    // The refusal names what is missing and both fixes.
    let why = landlock::compat::refusal(
        Abi(2),
        Abi(6),
        &a.missing(Abi(2), InForce::NOTHING),
        InForce::NOTHING,
    );
    for part in [
        "ABI is 2",
        "`truncate` (V3)",
        "scope signal",
        "Linux 6.12",
        "user namespaces are allowed",
    ] {
        assert!(why.contains(part), "{part:?} not in {why:?}");
    }
}

#[test]
fn a_fallback_no_layer_can_provide_is_refused() {
    let mut a = example();
    a.fallbacks.fs.insert(FsRight::WriteFile, Fallback::MountPlan);
    assert!(matches!(
        a.validate(),
        Err(landlock::ArtifactError::BadFallback { .. })
    ));
    let mut b = example();
    b.fallbacks.fs.insert(FsRight::Truncate, Fallback::PidNamespace);
    assert!(matches!(
        b.validate(),
        Err(landlock::ArtifactError::BadFallback { .. })
    ));
    let mut c = example();
    c.fallbacks.fs.insert(FsRight::IoctlDev, Fallback::Stricter);
    assert!(
        matches!(
            c.validate(),
            Err(landlock::ArtifactError::BadFallback { .. })
        ),
        "a fallback for an unhandled right"
    );
    let j = example().to_json().unwrap();
    let tampered = j.replace("\"truncate\": \"mount_plan\"", "\"truncate\": \"stricter\"");
    assert_ne!(tampered, j);
    assert!(LandlockArtifact::from_json(&tampered).is_err());
}

#[test]
fn tampered_or_inconsistent_artifacts_are_refused() {
    let j = example().to_json().unwrap();
    let lowered_abi = j.replace("\"min_abi\": 7", "\"min_abi\": 3");
    assert!(matches!(
        LandlockArtifact::from_json(&lowered_abi),
        Err(landlock::ArtifactError::AbiMismatch { .. })
    ));
    let wrong_format = j.replace("aegis.landlock/1", "aegis.landlock/9");
    assert!(matches!(
        LandlockArtifact::from_json(&wrong_format),
        Err(landlock::ArtifactError::Format(_))
    ));
    let unknown = j.replacen('{', "{\"extra\": 1,", 1);
    assert!(LandlockArtifact::from_json(&unknown).is_err());
    let bad_right = j.replacen("\"read_file\"", "\"read_everything\"", 1);
    assert!(LandlockArtifact::from_json(&bad_right).is_err());
    let bad_path = j.replacen("\"/etc\"", "\"etc/../..\"", 1);
    assert!(LandlockArtifact::from_json(&bad_path).is_err());

    let mut a = example();
    a.handled_fs.remove(&FsRight::Refer);
    a.min_abi = a.required_abi();
    assert!(matches!(
        a.validate(),
        Err(landlock::ArtifactError::UnhandledRight { .. })
    ));
    let mut b = example();
    b.path_rules.reverse();
    assert!(matches!(
        b.to_json(),
        Err(landlock::ArtifactError::NotCanonical(_))
    ));
    for garbage in ["", "null", "[]", "{\"format\": 1}", "{{{{"] {
        assert!(LandlockArtifact::from_json(garbage).is_err(), "{garbage}");
    }
}

#[test]
fn access_kinds_map_to_exact_rights() {
    use FsRight::*;
    let read = landlock::rights_for(GrantKind::Read);
    assert_eq!(read, [ReadFile, ReadDir].into());
    let exec = landlock::rights_for(GrantKind::Exec);
    assert!(exec.contains(&Execute) && exec.contains(&ReadFile) && !exec.contains(&WriteFile));
    let write = landlock::rights_for(GrantKind::Write);
    assert!(write.is_superset(&read), "write implies read");
    for r in [
        WriteFile, Truncate, MakeReg, MakeDir, RemoveFile, RemoveDir, Refer, MakeSym,
    ] {
        assert!(write.contains(&r), "write includes {r}");
    }
    for r in [Execute, MakeChar, MakeBlock, IoctlDev] {
        assert!(!write.contains(&r), "write excludes {r}");
    }
}

#[test]
fn deny_beats_allow_in_the_lowering() {
    use FsAccess::*;
    let l = landlock::lower_fs(&[
        rule("${WS}", Write, "w"),
        rule("${WS}/.git", Deny, "d"),
        rule("${WS}/.git/config", Read, "r-inside-deny"),
        rule("${WS}/.env", Deny, "d2"),
    ]);
    let paths: Vec<String> = l
        .artifact
        .path_rules
        .iter()
        .map(|r| r.path.to_string())
        .collect();
    assert_eq!(
        paths,
        ["${WS}"],
        "the grant inside the denied tree is dropped"
    );
    let denies: Vec<String> = l
        .artifact
        .denies
        .iter()
        .map(|r| r.path.to_string())
        .collect();
    assert_eq!(denies, ["${WS}/.env", "${WS}/.git"]);
    assert!(
        l.losses
            .iter()
            .any(|x| x.rule == "r-inside-deny" && x.stricter_reading)
    );
    assert!(
        l.losses
            .iter()
            .any(|x| x.rule == "w" && x.what.contains("split"))
    );
    assert!(
        l.losses
            .iter()
            .any(|x| x.rule == "d" && !x.stricter_reading && x.what.contains("hard link"))
    );
}

#[test]
fn path_templates_parse_strictly() {
    let ok = [
        ("/", "/"),
        ("/usr/", "/usr"),
        ("${WORKSPACE}", "${WORKSPACE}"),
        ("${A_1}/src/x", "${A_1}/src/x"),
    ];
    for (input, shown) in ok {
        assert_eq!(PathTemplate::parse(input).unwrap().to_string(), shown);
    }
    for bad in [
        "usr",
        "",
        "/a/../b",
        "/a/./b",
        "/a//b",
        "${lower}/x",
        "${X",
        "${X}y",
        "/a/${X}",
        "${}",
    ] {
        assert!(PathTemplate::parse(bad).is_err(), "{bad:?} must be refused");
    }
    let ws = PathTemplate::parse("${WS}").unwrap();
    assert!(ws.contains(&PathTemplate::parse("${WS}/a/b").unwrap()));
    assert!(!ws.contains(&PathTemplate::parse("${WSX}/a").unwrap()));
    assert!(
        !PathTemplate::parse("/a/b")
            .unwrap()
            .contains(&PathTemplate::parse("/a/bc").unwrap())
    );
    let err = PathTemplate::parse("${WS}/x")
        .unwrap()
        .resolve(&landlock::Params::new());
    assert!(matches!(err, Err(TemplateError::MissingParameter { .. })));
}

#[test]
fn elf_interpreter_reads_pt_interp() {
    let interp = landlock::elf_interpreter(std::path::Path::new("/bin/true")).unwrap();
    let interp = interp.expect("/bin/true is dynamically linked on this host");
    assert!(interp.to_string_lossy().contains("ld-"), "{interp:?}");
    assert!(interp.exists());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    assert_eq!(landlock::elf_interpreter(&script).unwrap(), None);
    let loaders = landlock::loader_paths(std::env::consts::ARCH);
    let real = std::fs::canonicalize(&interp).unwrap();
    assert!(
        loaders
            .iter()
            .any(|l| std::fs::canonicalize(l).map(|c| c == real).unwrap_or(false)),
        "the implicit loader rules cover this host's loader {real:?}"
    );
}

proptest! {
    #[test]
    fn lowering_ignores_rule_order(perm in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle()) {
        use FsAccess::*;
        let rules = [
            rule("/usr", Read, "a"), rule("${WS}", Write, "b"), rule("${WS}/.env", Deny, "c"),
            rule("/usr/bin/git", Exec, "d"), rule("/usr", Write, "e"), rule("/etc", Read, "f"),
        ];
        let shuffled: Vec<_> = perm.iter().map(|&i| rules[i].clone()).collect();
        let a = landlock::lower_fs(&rules);
        let b = landlock::lower_fs(&shuffled);
        prop_assert_eq!(a.artifact.to_json().unwrap(), b.artifact.to_json().unwrap());
        prop_assert_eq!(a.losses, b.losses);
    }

    #[test]
    fn templates_round_trip(param in proptest::option::of("[A-Z_][A-Z0-9_]{0,6}"),
                            comps in proptest::collection::vec("[a-z0-9._-]{1,6}", 0..4)) {
        prop_assume!(comps.iter().all(|c| c != "." && c != ".."));
        let text = format!("{}{}", param.map(|p| format!("${{{p}}}")).unwrap_or_default(),
                           if comps.is_empty() { "/".to_owned() } else { format!("/{}", comps.join("/")) });
        let t = PathTemplate::parse(&text).unwrap();
        prop_assert_eq!(PathTemplate::parse(&t.to_string()).unwrap(), t);
    }
}
