//! The `mounts.json` format and the fs-rules lowering: canonical bytes, validation, what
//! each access kind becomes, implicit noexec executable directories, and the text twin.


use aegis_targets::landlock::{self, FsAccess, FsRule, PathTemplate};
use aegis_targets::mounts::{self, MountKind, MountPlan, PlanOptions};
use crate::landlock_support::rule;

fn example_rules() -> Vec<FsRule> {
    use FsAccess::*;
    let mut rules = vec![
        rule("/usr", Read, "fs.read[0]"),
        rule("/etc", Read, "fs.read[1]"),
        rule("/etc/shadow", Deny, "fs.deny[0]"),
        rule("/usr/bin/git", Exec, "fs.exec[0]"),
        rule("/usr/bin/python3", Exec, "fs.exec[1]"),
        rule("${WORKSPACE}", Write, "fs.write[0]"),
        rule("${WORKSPACE}/.env", Deny, "fs.deny[1]"),
        rule("${WORKSPACE}/bin/run", Exec, "fs.exec[2]"),
        rule("/tmp", Write, "fs.write[1]"),
        rule("/proc/self/status", Read, "fs.read[2]"),
    ];
    rules.extend(landlock::loader_rules("x86_64"));
    rules
}

fn kind_of(plan: &MountPlan, target: &str) -> Option<MountKind> {
    let t = PathTemplate::parse(target).unwrap();
    plan.entries.iter().find(|e| e.target == t).map(|e| e.kind)
}

#[test]
fn text_twin_and_json_snapshots() {
    let (plan, losses) = mounts::plan_from_rules(&example_rules(), &PlanOptions::default());
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../snapshots/mounts"));
    s.set_prepend_module_to_snapshot(false);
    let losses: Vec<String> = losses
        .iter()
        .map(|l| format!("[{}] {} (stricter: {})", l.rule, l.what, l.stricter_reading))
        .collect();
    s.bind(|| {
        insta::assert_snapshot!("example_mounts_txt", plan.render_text());
        insta::assert_snapshot!("example_mounts_json", plan.to_json().unwrap());
        insta::assert_snapshot!("example_mounts_losses", losses.join("\n"));
    });
}

#[test]
fn each_access_kind_becomes_the_right_mount() {
    let (plan, losses) = mounts::plan_from_rules(&example_rules(), &PlanOptions::default());
    assert_eq!(
        kind_of(&plan, "/usr"),
        Some(MountKind::Bind {
            writable: false,
            exec: true
        }),
        "libraries stay mappable"
    );
    assert_eq!(
        kind_of(&plan, "/usr/bin"),
        Some(MountKind::Bind {
            writable: false,
            exec: false
        }),
        "executable dir noexec"
    );
    assert_eq!(
        kind_of(&plan, "/usr/bin/git"),
        Some(MountKind::Bind {
            writable: false,
            exec: true
        }),
        "granted exec bind"
    );
    assert_eq!(
        kind_of(&plan, "${WORKSPACE}"),
        Some(MountKind::Bind {
            writable: true,
            exec: false
        }),
        "write trees are their own noexec mount"
    );
    assert_eq!(
        kind_of(&plan, "${WORKSPACE}/bin/run"),
        Some(MountKind::Bind {
            writable: true,
            exec: true
        }),
        "exec inside a write tree stays writable"
    );
    assert_eq!(kind_of(&plan, "${WORKSPACE}/.env"), Some(MountKind::Mask));
    assert_eq!(kind_of(&plan, "/etc/shadow"), Some(MountKind::Mask));
    assert!(
        matches!(
            kind_of(&plan, "/tmp"),
            Some(MountKind::Tmpfs { exec: false, .. })
        ),
        "/tmp is private, not the host's"
    );
    assert_eq!(kind_of(&plan, "/proc"), Some(MountKind::Proc));
    assert_eq!(
        kind_of(&plan, "/proc/self/status"),
        None,
        "fresh /proc replaces host binds"
    );
    assert!(
        losses
            .iter()
            .any(|l| l.rule == "fs.read[2]" && l.stricter_reading)
    );
    assert!(
        losses
            .iter()
            .any(|l| l.what.contains("ld.so") && !l.stricter_reading)
    );
    assert!(plan.memfd_noexec);
    let (_, losses) = mounts::plan_from_rules(&landlock::runtime_rules(), &PlanOptions::default());
    assert!(
        losses.is_empty(),
        "the runtime's own /dev and /proc rules lose nothing: {losses:?}"
    );
}

#[test]
fn granting_an_executable_directory_keeps_it_exec() {
    use FsAccess::*;
    let (plan, _) = mounts::plan_from_rules(
        &[rule("/usr", Read, "r"), rule("/usr/bin", Exec, "x")],
        &PlanOptions::default(),
    );
    assert_eq!(
        kind_of(&plan, "/usr/bin"),
        Some(MountKind::Bind {
            writable: false,
            exec: true
        })
    );
    assert_eq!(
        kind_of(&plan, "/usr/sbin"),
        Some(MountKind::Bind {
            writable: false,
            exec: false
        })
    );
    let (plan, _) =
        mounts::plan_from_rules(&[rule("/usr/bin", Read, "r")], &PlanOptions::default());
    assert_eq!(
        kind_of(&plan, "/usr/bin"),
        Some(MountKind::Bind {
            writable: false,
            exec: false
        }),
        "reading an executable directory does not make it mappable as code"
    );
}

#[test]
fn json_is_canonical_and_validated() {
    let (plan, _) = mounts::plan_from_rules(&example_rules(), &PlanOptions::default());
    let j = plan.to_json().unwrap();
    let mut rules = example_rules();
    rules.reverse();
    assert_eq!(
        mounts::plan_from_rules(&rules, &PlanOptions::default())
            .0
            .to_json()
            .unwrap(),
        j,
        "rule order does not matter"
    );
    let back = MountPlan::from_json(&j).unwrap();
    assert_eq!(back, plan);
    let mut unsorted = plan.clone();
    unsorted.entries.reverse();
    assert!(matches!(
        unsorted.to_json(),
        Err(mounts::PlanError::NotCanonical(_))
    ));
    assert!(MountPlan::from_json(&j.replace("aegis.mounts/1", "x")).is_err());
    assert!(
        MountPlan::from_json(&j.replacen("\"type\": \"mask\"", "\"type\": \"overlay\"", 1))
            .is_err()
    );
    assert!(MountPlan::from_json("{").is_err());
}

#[test]
fn protected_paths_inside_write_trees_are_read_only_and_pinned() {
    use FsAccess::*;
    let rules = [
        rule("${W}", Write, "w"),
        rule("${W}/.git/config", Read, "protect config"),
        rule("${W}/.git/hooks", Read, "protect hooks"),
        rule("${W}/a/b/secret", Deny, "deny"),
        rule("${W}/vendor", Read, "carve-out"),
        rule("${W}/vendor/patches", Write, "re-granted"),
        rule("${W}/vendor/tool", Exec, "exec in a carve-out"),
        rule("/data", Read, "ro tree"),
        rule("/data/x/y", Deny, "deny in a read-only tree"),
    ];
    let (plan, _) = mounts::plan_from_rules(&rules, &PlanOptions::default());
    let ro = Some(MountKind::Bind { writable: false, exec: false });
    let rw = Some(MountKind::Bind { writable: true, exec: false });
    assert_eq!(kind_of(&plan, "${W}/.git/config"), ro, "read-only, and noexec like its tree");
    assert_eq!(kind_of(&plan, "${W}/.git/hooks"), ro);
    assert_eq!(kind_of(&plan, "${W}/.git"), rw, "the ancestor is pinned with the tree's flags");
    assert_eq!(kind_of(&plan, "${W}/a"), rw);
    assert_eq!(kind_of(&plan, "${W}/a/b"), rw);
    assert_eq!(kind_of(&plan, "${W}/a/b/secret"), Some(MountKind::Mask));
    assert_eq!(kind_of(&plan, "${W}/vendor"), ro);
    assert_eq!(kind_of(&plan, "${W}/vendor/patches"), rw, "a deeper write grant decides");
    assert_eq!(
        kind_of(&plan, "${W}/vendor/tool"),
        Some(MountKind::Bind { writable: false, exec: true }),
        "exec inside a carve-out is not writable"
    );
    assert_eq!(kind_of(&plan, "/data/x"), None, "nothing to pin inside a read-only tree");
    let pin = plan.entries.iter().find(|e| e.target == PathTemplate::parse("${W}/.git").unwrap()).unwrap();
    assert!(pin.origin.iter().all(|o| o.starts_with("pin: ancestor of `${W}/.git/")), "{:?}", pin.origin);
}
