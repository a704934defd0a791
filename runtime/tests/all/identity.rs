//! Who the agent is: launched by root, the `--user`, else the sudo invoker, else 65534, with
//! supplementary groups dropped unless named; launched by a user, that user (files it writes
//! are theirs). The report and the audit log say who ran as whom.

use crate::common::*;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

/// `id -u`, `id -g`, `id -G` of the agent, then a file written into `$0` (a workspace).
const PROBE: &str = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); touch \"$0/written\" && echo wrote";

/// A workspace owned by `uid`, mode 0755, inside the bundle's scratch directory (made
/// traversable for everyone).
fn workspace(b: &TestBundle, uid: u32) -> std::path::PathBuf {
    std::fs::set_permissions(b.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = b.tmp.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o755)).unwrap();
    ws
}

fn started_identity(b: &TestBundle) -> serde_json::Value {
    b.events("agent_started")[0]["identity"].clone()
}

#[test]
fn root_runs_the_agent_as_nobody_by_default() {
    if !need_root("nobody") {
        return;
    }
    let b = build(&Spec::new("rt-id-nobody"), true);
    let ws = workspace(&b, 65534);
    let o = b.run(&["--verbose"], &["/bin/sh", "-c", PROBE, ws.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("uid=65534 gid=65534 groups=65534\n"), "{out}");
    assert!(err.contains("agent         uid 65534 (nobody)"), "{err}");
    assert!(err.contains("supplementary groups dropped; launched by uid 0 (root)"), "{err}");
    let id = started_identity(&b);
    assert_eq!((id["uid"].as_u64(), id["launched_by_uid"].as_u64()), (Some(65534), Some(0)), "{id}");
    assert_eq!(b.events("enforcement_report")[0]["identity"], id, "the report event says it too");
}

#[test]
fn under_sudo_the_agent_is_the_invoking_user_and_owns_what_it_writes() {
    if !need_root("sudo_user") {
        return;
    }
    let Some(uid) = unprivileged_user("sudo_user") else { return };
    let b = build(&Spec::new("rt-id-sudo"), true);
    let ws = workspace(&b, uid);
    let o = b
        .command(&["--verbose"], &["/bin/sh", "-c", PROBE, ws.to_str().unwrap()])
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", uid.to_string())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    // Root's own groups (0, ...) are gone: only the agent's gid remains.
    assert!(out.contains(&format!("uid={uid} gid={uid} groups={uid}\n")), "{out}");
    assert!(out.contains("wrote"), "{out}");
    let f = std::fs::metadata(ws.join("written")).unwrap();
    assert_eq!((f.uid(), f.gid()), (uid, uid), "the file belongs to the user");
    assert!(err.contains(&format!("launched by uid 0 (root) via sudo from uid {uid}")), "{err}");
    let id = started_identity(&b);
    assert_eq!((id["uid"].as_u64(), id["sudo_uid"].as_u64()), (Some(uid as u64), Some(uid as u64)), "{id}");
}

#[test]
fn root_keeps_only_the_named_groups() {
    if !need_root("named_groups") {
        return;
    }
    let Some(uid) = unprivileged_user("named_groups") else { return };
    let b = build(&Spec::new("rt-id-groups"), true);
    let ws = workspace(&b, uid);
    // `--user UID:GID` and a named group (by number: present on every host).
    let o = b.run(&["--user", &format!("{uid}:{uid}"), "--group", "100"], &["/bin/sh", "-c", PROBE, ws.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("uid={uid} gid={uid} groups={uid} 100\n")), "{out}");
    assert_eq!(started_identity(&b)["groups"], serde_json::json!([100]));
}

#[test]
fn the_agent_never_runs_as_root_or_as_an_unknown_user() {
    if !need_root("refused_users") {
        return;
    }
    let b = build(&Spec::new("rt-id-refused"), true);
    for args in [
        vec!["--user", "root"],
        vec!["--user", "0"],
        vec!["--user", "1000:0"],
        vec!["--user", "no-such-user-aegis"],
        vec!["--group", "0"],
        vec!["--group", "no-such-group-aegis"],
    ] {
        let o = b.run(&args, &["/bin/true"]);
        let err = text(&o).1;
        assert_eq!(o.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains("--user") || err.contains("--group") || err.contains("root"), "{args:?}: {err}");
        assert!(b.leaves().is_empty(), "nothing was created for {args:?}");
    }
}

#[test]
fn an_unprivileged_user_runs_the_agent_as_themselves() {
    if !need_root("rootless_identity") {
        return;
    }
    let Some(uid) = unprivileged_user("rootless_identity") else { return };
    let mut spec = Spec::new("rt-id-user");
    spec.enforcement.insert("cgroup".into(), aegis_targets::bundle::Enforcement::BestEffort);
    spec.enforcement.insert("nftables".into(), aegis_targets::bundle::Enforcement::BestEffort);
    let b = build(&spec, true);
    b.give_to(uid);
    let ws = workspace(&b, uid);
    let o = b.command_as(uid, &["--verbose"], &["/bin/sh", "-c", PROBE, ws.to_str().unwrap()]).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(&format!("uid={uid} gid={uid}")), "the same ids inside: {out}");
    let f = std::fs::metadata(ws.join("written")).unwrap();
    assert_eq!((f.uid(), f.gid()), (uid, uid), "the file belongs to the user");
    assert!(err.contains(&format!("launched by uid {uid}")), "{err}");
    let id = started_identity(&b);
    assert_eq!((id["uid"].as_u64(), id["launched_by_uid"].as_u64()), (Some(uid as u64), Some(uid as u64)), "{id}");
    // Only root can choose another identity.
    for args in [vec!["--user", "root"], vec!["--user", "65534"], vec!["--group", "100"]] {
        let o = b.command_as(uid, &args, &["/bin/true"]).output().unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", text(&o).1);
        assert!(text(&o).1.contains("only root"), "{args:?}: {}", text(&o).1);
    }
}
