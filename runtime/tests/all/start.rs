//! Starting where the user is and running what they named: the working directory, a bare
//! command looked up on the sandbox's PATH (never the caller's), a command the policy does
//! not let the agent execute refused before launch with the deciding rule, the agent's
//! default PATH built from the exec grants, and refused inputs: a misspelt or symlinked
//! `--param`, a missing audit-log directory.

use crate::common::*;
use std::path::Path;

/// A bundle with its typed policy (the evaluator decides before launch): read /usr, /etc and
/// the workspace, write the workspace, execute a few tools.
fn bundle(agent: &str) -> TestBundle {
    bundle_for(agent, false)
}

/// [`bundle`]; `rootless`: its cgroup layer best-effort (this host cannot delegate one).
fn bundle_for(agent: &str, rootless: bool) -> TestBundle {
    let toml = format!(
        "version = 1\n[agent]\nname = \"{agent}\"\n[parameters]\nWORKSPACE = \"workspace\"\n[filesystem]\nread = [\"/usr\", \"/etc\"]\nwrite = [\"${{WORKSPACE}}\"]\n[exec]\nallow = [\"/usr/bin/sh\", \"/usr/bin/dash\", \"/usr/bin/pwd\", \"/usr/bin/ln\", \"/usr/bin/env\"]\n"
    );
    let mut spec = Spec::new(agent);
    spec.parameters = vec!["WORKSPACE".into()];
    spec.extra_files.push(("policy.ir.json".into(), policy_ir(&toml)));
    if rootless {
        spec.enforcement.insert("cgroup".into(), aegis_targets::bundle::Enforcement::BestEffort);
    }
    build(&spec, true)
}

fn workspace(b: &TestBundle) -> std::path::PathBuf {
    let ws = b.tmp.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    std::os::unix::fs::chown(&ws, Some(65534), Some(65534)).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(b.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    ws
}

fn param(ws: &Path) -> String {
    format!("WORKSPACE={}", ws.display())
}

#[test]
fn the_agent_starts_where_the_user_is_when_it_may_read_it() {
    if !need_root("cwd") {
        return;
    }
    let b = bundle("rt-cwd");
    let ws = workspace(&b);
    let sub = ws.join("sub");
    std::fs::create_dir(&sub).unwrap();
    // From inside the workspace: the agent starts there.
    let o = b.command(&["--param", &param(&ws), "--verbose"], &["/usr/bin/pwd"]).current_dir(&sub).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(out.trim(), sub.display().to_string(), "{err}");
    assert!(err.contains(&format!("runs /usr/bin/pwd in {}", sub.display())), "{err}");
    // From a directory the agent may not read: `/`.
    let o = b.command(&["--param", &param(&ws)], &["/usr/bin/pwd"]).current_dir("/var").output().unwrap();
    assert_eq!(text(&o).0.trim(), "/", "{}", text(&o).1);
    // --cwd names it explicitly; one the agent may not read is refused before launch.
    let o = b.command(&["--param", &param(&ws), "--cwd", sub.to_str().unwrap()], &["/usr/bin/pwd"]).output().unwrap();
    assert_eq!(text(&o).0.trim(), sub.display().to_string(), "{}", text(&o).1);
    let o = b.command(&["--param", &param(&ws), "--cwd", "/var"], &["/usr/bin/pwd"]).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("--cwd") && err.contains("default deny"), "the refusal names the deciding rule: {err}");
    let o = b.command(&["--param", &param(&ws), "--cwd", "relative"], &["/usr/bin/pwd"]).output().unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", text(&o).1);
}

#[test]
fn a_bare_command_is_found_on_the_sandboxs_path_never_the_callers() {
    if !need_root("path_lookup") {
        return;
    }
    let b = bundle("rt-lookup");
    let ws = workspace(&b);
    // A version-manager shim first on the caller's PATH (as pyenv/nvm put theirs).
    let shims = b.tmp.path().join("shims");
    std::fs::create_dir(&shims).unwrap();
    let shim = shims.join("env");
    std::fs::write(&shim, "#!/bin/sh\necho SHIM\n").unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let caller_path = format!("{}:/root/.cargo/bin:/usr/bin:/bin", shims.display());
    let o = b.command(&["--param", &param(&ws), "--verbose"], &["env"]).env("PATH", &caller_path).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!out.contains("SHIM"), "the caller's shim ran: {out}");
    assert!(err.contains("runs /usr/bin/env in"), "{err}");
    // The agent's PATH is built from its exec grants, not passed from the caller.
    let path = out.lines().find_map(|l| l.strip_prefix("PATH=")).unwrap_or_else(|| panic!("no PATH in {out}"));
    assert_eq!(path, "/usr/bin", "{out}");
    // ... unless --env PATH gives one.
    let o = b.command(&["--param", &param(&ws), "--env", "PATH=/usr/bin:/opt/tools"], &["env"]).output().unwrap();
    assert!(text(&o).0.contains("PATH=/usr/bin:/opt/tools\n"), "{}", text(&o).0);
    // A name the policy does not let the agent execute anywhere on its PATH.
    let o = b.command(&["--param", &param(&ws)], &["id"]).output().unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("`id` is not an executable the policy grants"), "{err}");
}

#[test]
fn a_command_the_policy_does_not_allow_is_refused_before_launch_with_its_rule() {
    if !need_root("exec_refused") {
        return;
    }
    let b = bundle("rt-execno");
    let ws = workspace(&b);
    let o = b.run(&["--param", &param(&ws)], &["/usr/bin/id"]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "refused input, not an internal error: {err}");
    assert!(err.contains("does not let the agent execute /usr/bin/id") && err.contains("default deny"), "{err}");
    assert!(b.leaves().is_empty(), "nothing was created");
    let notes = b.events("note");
    assert!(notes.iter().any(|n| n["message"].as_str().unwrap_or("").contains("/usr/bin/id")), "the refusal is audited: {notes:?}");
}

#[test]
fn refused_inputs_name_what_is_wrong() {
    if !need_root("refused_inputs") {
        return;
    }
    let b = bundle("rt-inputs");
    let ws = workspace(&b);
    // A misspelt parameter gets a did-you-mean.
    let o = b.run(&["--param", &format!("WORKSPAC={}", ws.display())], &["/usr/bin/pwd"]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("did you mean WORKSPACE?"), "{err}");
    // A missing audit-log directory is refused input, named.
    let missing = b.tmp.path().join("no-such-dir/audit.log");
    let o = std::process::Command::new(EXE)
        .env("AEGIS_STATE_DIR", &b.state)
        .arg("--trust-key")
        .arg(&b.public_key)
        .arg("--audit-log")
        .arg(&missing)
        .arg("--param")
        .arg(param(&ws))
        .arg(&b.dir)
        .arg("--")
        .arg("/usr/bin/pwd")
        .output()
        .unwrap();
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains(&missing.parent().unwrap().display().to_string()) && err.contains("does not exist"), "{err}");
}

/// An earlier agent plants `task -> /etc` in its workspace; the next launch that passes
/// `--param WORKSPACE=<workspace>/task` would bind the host's /etc writable. It is refused, naming
/// the link and the real path (passing that is the explicit choice).
#[test]
fn a_parameter_through_a_planted_symlink_is_refused() {
    if !need_root("symlink_param") {
        return;
    }
    let b = bundle("rt-symparam");
    let ws = workspace(&b);
    let o = b.run(&["--param", &param(&ws)], &["/usr/bin/ln", "-s", "/etc", &format!("{}/task", ws.display())]);
    assert_eq!(o.status.code(), Some(0), "the agent planted its link: {}", text(&o).1);
    assert!(std::fs::symlink_metadata(ws.join("task")).unwrap().file_type().is_symlink());
    let o = b.run(&["--param", &format!("WORKSPACE={}/task", ws.display())], &["/usr/bin/pwd"]);
    let err = text(&o).1;
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains(&format!("{}/task is a symbolic link (-> /etc)", ws.display())), "the link is named: {err}");
    assert!(err.contains("--param WORKSPACE=/etc"), "the real path to pass instead is named: {err}");
    // A link further up the path counts too.
    let o = b.run(&["--param", &format!("WORKSPACE={}/task/ssl", ws.display())], &["/usr/bin/pwd"]);
    assert_eq!(o.status.code(), Some(125), "{}", text(&o).1);
}

/// The kernel's boot command line (cloud metadata, device names, sometimes tokens) is not
/// the agent's business: a fresh /proc shows it empty, as root and as a user.
#[test]
fn the_hosts_boot_command_line_is_hidden() {
    if !need_root("cmdline") {
        return;
    }
    let host = std::fs::read_to_string("/proc/cmdline").unwrap();
    if host.trim().is_empty() {
        eprintln!("SKIP cmdline: this host's /proc/cmdline is empty");
        return;
    }
    let b = bundle("rt-cmdline");
    let ws = workspace(&b);
    let script = "read -r x < /proc/cmdline; echo \"cmdline=[$x]\"";
    let o = b.run(&["--param", &param(&ws), "--verbose"], &["/usr/bin/sh", "-c", script]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.contains("cmdline=[]"), "{out}");
    assert!(err.contains("/proc/cmdline hidden"), "{err}");
    if let Some(uid) = unprivileged_user("cmdline_user") {
        let b = bundle_for("rt-cmdline-user", true);
        let ws = workspace(&b);
        b.give_to(uid);
        let o = b.command_as(uid, &["--param", &param(&ws)], &["/usr/bin/sh", "-c", script]).output().unwrap();
        let (out, err) = text(&o);
        assert!(out.contains("cmdline=[]"), "as a user: {out}{err}");
    }
}
