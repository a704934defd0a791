//! Real Landlock rulesets built from `landlock.json` artifacts, loaded in forked children:
//! what the test policy allows works, what it denies fails, including the attacks an agent
//! would try. These run without a mount namespace, so denies inside allowed trees are
//! enforced by the launch-time split.


use aegis_targets::landlock::{self, Abi, Enforcement, InForce, Mode};
use crate::landlock_support::*;

fn skip_without_landlock() -> bool {
    if landlock::kernel_abi() < Abi(3) {
        eprintln!("SKIP: kernel Landlock ABI {} < V3", landlock::kernel_abi());
        return true;
    }
    false
}

#[test]
fn split_fallback_grants_the_tree_and_hides_the_denied_paths() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let lowered = landlock::lower_fs(&policy());
    assert_eq!(lowered.artifact.min_abi, Abi(3), "refer + truncate need V3");
    in_child(|c| {
        let st = landlock::apply(&lowered.artifact, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        c.expect(
            st.status == Enforcement::FullyEnforced,
            format!("status {:?}", st.status),
        );
        c.expect(
            st.abi_in_use == Abi(3),
            format!("abi in use {}", st.abi_in_use),
        );
        c.expect(
            st.details
                .iter()
                .any(|d| d.contains("split allow") && d.contains("/rw")),
            format!("no split reported: {:?}", st.details),
        );
        c.expect(
            st.losses
                .iter()
                .any(|l| l.stricter_reading && l.what.contains("/rw` split")),
            format!("split loss not reported: {:?}", st.losses),
        );
        // read-only tree
        c.expect(can_read(&base.join("ro/file.txt")), "read ro/file.txt");
        c.expect(
            can_read(&base.join("ro/sub/deep.txt")),
            "read ro/sub/deep.txt",
        );
        c.expect(
            !can_write(&base.join("ro/file.txt")),
            "write ro/file.txt must fail",
        );
        c.expect(
            !can_write(&base.join("ro/new.txt")),
            "create ro/new.txt must fail",
        );
        // writable tree, split around the denies
        c.expect(can_read(&base.join("rw/ok.txt")), "read rw/ok.txt");
        c.expect(can_write(&base.join("rw/ok.txt")), "write rw/ok.txt");
        c.expect(
            can_write(&base.join("rw/work/new.txt")),
            "create rw/work/new.txt",
        );
        c.expect(
            std::fs::create_dir(base.join("rw/work/d")).is_ok(),
            "mkdir rw/work/d",
        );
        c.expect(
            std::fs::rename(
                base.join("rw/work/new.txt"),
                base.join("rw/work/d/moved.txt"),
            )
            .is_ok(),
            "rename inside the writable tree",
        );
        // stricter reading of the split, reported as a loss above
        c.expect(
            !can_write(&base.join("rw/created-later.txt")),
            "the split chain dir stays closed",
        );
        // denied paths
        c.expect(!can_read(&base.join("rw/.env")), "read rw/.env must fail");
        c.expect(!can_write(&base.join("rw/.env")), "write rw/.env must fail");
        c.expect(
            !can_read(&base.join("rw/secret/key.txt")),
            "read rw/secret/key.txt must fail",
        );
        c.expect(
            std::fs::read_dir(base.join("rw/secret")).is_err(),
            "list rw/secret must fail",
        );
        // outside every grant
        c.expect(
            !can_write(&base.join("outside/x")),
            "write outside the write trees must fail",
        );
        c.expect(
            !can_write(std::path::Path::new("/etc/aegis-test")),
            "write /etc must fail",
        );
        c.expect(!can_read(&base.join("outside")), "read outside must fail");
    });
}

#[test]
fn attacks_on_a_denied_file_fail_without_mounts() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let lowered = landlock::lower_fs(&policy());
    in_child(|c| {
        landlock::apply(&lowered.artifact, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        let env = base.join("rw/.env");
        c.expect(
            !can_read(&base.join("rw/work/env-link")),
            "read through a symlink must fail",
        );
        let via_proc = std::path::PathBuf::from(format!("/proc/self/root{}", env.display()));
        c.expect(
            !can_read(&via_proc),
            "read through /proc/self/root must fail",
        );
        let via_dotdot = base.join("rw/work/../.env");
        c.expect(!can_read(&via_dotdot), "read through .. must fail");
        let e = errno_of(std::fs::hard_link(&env, base.join("rw/work/hl")));
        c.expect(
            e != 0,
            "hard-linking the denied file into a writable dir must fail",
        );
        c.expect(!can_read(&base.join("rw/work/hl")), "no readable hard link");
        c.expect(
            std::fs::rename(&env, base.join("rw/work/stolen")).is_err(),
            "rename the denied file must fail",
        );
        c.expect(
            std::fs::rename(base.join("rw/secret"), base.join("rw/work/s")).is_err(),
            "rename the denied directory must fail",
        );
        c.expect(
            std::fs::remove_file(&env).is_err(),
            "delete the denied file must fail",
        );
        c.expect(
            std::os::unix::fs::symlink(&env, base.join("rw/work/l2")).is_ok()
                && !can_read(&base.join("rw/work/l2")),
            "a new symlink to the denied file still reads nothing",
        );
    });
    // Nothing leaked out of the child: the denied file is intact on the host.
    assert_eq!(
        std::fs::read_to_string(base.join("rw/.env")).unwrap(),
        "TOKEN=hunter2"
    );
}

#[test]
fn exec_is_limited_to_granted_files() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let lowered = landlock::lower_fs(&policy());
    let ld = ld_so();
    in_child(|c| {
        landlock::apply(&lowered.artifact, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        let mytrue = base.join("bin/mytrue");
        c.expect(
            runs(&[mytrue.to_str().unwrap()]),
            "granted copy of true runs (loader granted implicitly)",
        );
        c.expect(runs(&["/usr/bin/true"]), "granted /usr/bin/true runs");
        c.expect(
            !runs(&["/usr/bin/false"]),
            "non-granted /usr/bin/false must not exec",
        );
        c.expect(
            !runs(&[base.join("bin/other").to_str().unwrap()]),
            "non-granted bin/other must not exec",
        );
        let copied = base.join("rw/work/cp");
        std::fs::copy("/usr/bin/true", &copied).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o755)).unwrap();
        c.expect(
            !runs(&[copied.to_str().unwrap()]),
            "copied binary in a writable dir must not exec",
        );
        let script = base.join("rw/work/s.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        c.expect(
            !runs(&[script.to_str().unwrap()]),
            "shebang script in a writable dir must not exec",
        );
        // Landlock alone does not see mmap(PROT_EXEC): ld.so can load a readable binary.
        // The mount plan's noexec closes this (mounts_apply.rs); asserted so a kernel change shows.
        c.expect(
            runs(&[
                ld.to_str().unwrap(),
                base.join("bin/other").to_str().unwrap(),
            ]),
            "expected gap: ld.so loads a readable, non-granted binary when no noexec mount exists",
        );
        // Landlock does not restrict memfds (no path): the mount plan's vm.memfd_noexec or
        // seccomp must. Asserted so the need for that layer stays visible.
        c.expect(
            memfd_exec_runs(),
            "expected gap: Landlock alone does not stop memfd exec",
        );
    });
}

#[test]
fn missing_parameter_is_an_error_and_missing_path_is_skipped() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let mut rules = policy();
    rules.push(rule(
        "${BASE}/does-not-exist",
        aegis_targets::landlock::FsAccess::Read,
        "read missing",
    ));
    let lowered = landlock::lower_fs(&rules);
    in_child(|c| {
        let err = landlock::apply(
            &lowered.artifact,
            &aegis_targets::landlock::Params::new(),
            Mode::Required,
            InForce::NOTHING,
        );
        c.expect(
            matches!(&err, Err(landlock::ApplyError::Template(_))),
            format!("missing parameter must be an error, got {err:?}"),
        );
        let st = landlock::apply(&lowered.artifact, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        c.expect(
            st.details
                .iter()
                .any(|d| d.contains("does-not-exist") && d.contains("missing")),
            format!("missing path not reported: {:?}", st.details),
        );
    });
    let bad = aegis_targets::landlock::Params::from_pairs([(
        "BASE",
        std::path::Path::new("relative/dir"),
    )]);
    assert!(bad.is_err(), "a relative parameter must be refused");
    let gone = aegis_targets::landlock::Params::from_pairs([("BASE", &*base.join("nope"))]);
    assert!(
        gone.is_err(),
        "a parameter naming a missing path must be refused"
    );
}

#[test]
fn required_refuses_an_old_kernel_and_best_effort_reports_partial() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let lowered = landlock::lower_fs(&policy());
    assert!(matches!(
        landlock::negotiate(&lowered.artifact, Abi(2), Mode::Required, InForce::NOTHING),
        Err(landlock::ApplyError::AbiTooLow { .. })
    ));
    in_child(|c| {
        let r = landlock::apply_capped(
            &lowered.artifact,
            &params(&base),
            Mode::Required,
            InForce::NOTHING,
            Abi(2),
        );
        c.expect(
            matches!(r, Err(landlock::ApplyError::AbiTooLow { .. })),
            format!("Required on V2: {r:?}"),
        );
        let st =
            landlock::apply_capped(
                &lowered.artifact,
                &params(&base),
                Mode::BestEffort,
                InForce::NOTHING,
                Abi(2),
            )
                .unwrap();
        c.expect(
            st.status == Enforcement::PartiallyEnforced,
            format!("status {:?}", st.status),
        );
        c.expect(st.abi_in_use == Abi(2), format!("abi {}", st.abi_in_use));
        c.expect(
            st.details.iter().any(|d| d.contains("truncate")),
            format!("{:?}", st.details),
        );
        // Truncate is no longer handled: truncating a read-only file now works (the loss).
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(base.join("ro/file.txt"));
        c.expect(f.is_err(), "write_file is still enforced on V2");
        c.expect(
            std::fs::File::open(base.join("ro/file.txt")).is_ok(),
            "read still granted",
        );
    });
}

#[test]
fn tcp_ports_and_scopes_are_enforced() {
    if landlock::kernel_abi() < Abi(6) {
        eprintln!("SKIP: kernel Landlock ABI {} < V6", landlock::kernel_abi());
        return;
    }
    use aegis_targets::landlock::{NetRight, NetRule, Scope};
    let (_dir, base) = tree();
    let mut a = landlock::lower_fs(&policy()).artifact;
    a.handled_net = [NetRight::BindTcp, NetRight::ConnectTcp].into();
    a.scopes = [Scope::Signal, Scope::AbstractUnixSocket].into();
    // Find a free port first; the child may bind only that one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    a.net_rules = vec![NetRule {
        port,
        access: [NetRight::BindTcp].into(),
    }];
    a.normalize();
    assert_eq!(a.min_abi, Abi(6));
    let parent = std::process::id() as i32;
    in_child(|c| {
        let st = landlock::apply(&a, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        c.expect(
            st.status == Enforcement::FullyEnforced,
            format!("{:?}", st.status),
        );
        c.expect(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "bind on the granted port",
        );
        let other = std::net::TcpListener::bind(("127.0.0.1", 0));
        c.expect(other.is_err(), "bind on another port must fail");
        c.expect(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "connect is not granted",
        );
        // SAFETY: signal 0 only checks permission.
        let r = unsafe { libc::kill(parent, 0) };
        c.expect(r != 0, "signalling a process outside the domain must fail");
    });
}

#[test]
fn an_existing_hard_link_to_a_denied_file_is_reported_as_a_loss() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    // Made by the host before launch: the agent cannot make it (see the attack test).
    std::fs::hard_link(base.join("rw/.env"), base.join("rw/work/hl-pre")).unwrap();
    let lowered = landlock::lower_fs(&policy());
    assert!(lowered.artifact.params().contains("BASE"));
    in_child(|c| {
        let st = landlock::apply(&lowered.artifact, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        c.expect(
            st.losses
                .iter()
                .any(|l| !l.stricter_reading && l.what.contains("2 hard links")),
            format!("hard-link loss not reported: {:?}", st.losses),
        );
        // The documented gap: Landlock checks paths, so the other name reads the inode.
        c.expect(
            can_read(&base.join("rw/work/hl-pre")),
            "expected gap: the pre-existing link is readable",
        );
        c.expect(
            !can_read(&base.join("rw/.env")),
            "the denied name itself stays closed",
        );
    });
}

#[test]
fn a_deny_on_a_path_absent_at_launch_stays_denied_when_created() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let mut rules = policy();
    rules.push(rule(
        "${BASE}/rw/work/future.txt",
        landlock::FsAccess::Deny,
        "deny future",
    ));
    std::fs::create_dir(base.join("rw/work/sub")).unwrap();
    let lowered = landlock::lower_fs(&rules);
    in_child(|c| {
        landlock::apply(&lowered.artifact, &params(&base), Mode::Required, InForce::NOTHING).unwrap();
        c.expect(
            !can_write(&base.join("rw/work/future.txt")),
            "creating the denied path must fail",
        );
        c.expect(
            can_write(&base.join("rw/work/sub/x")),
            "siblings on the chain keep the write grant",
        );
    });
}

/// The compiler's fallbacks for the fs lowering (see `compiler/src/emit/landlock.rs`).
fn with_fallbacks(mut a: landlock::LandlockArtifact) -> landlock::LandlockArtifact {
    use aegis_targets::landlock::{Fallback, FsRight};
    a.fallbacks.fs = [
        (FsRight::Refer, Fallback::Stricter),
        (FsRight::Truncate, Fallback::MountPlan),
    ]
    .into();
    a.validate().unwrap();
    a
}

fn truncate_errno(p: &std::path::Path) -> i32 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), 0) } == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[test]
fn an_old_abi_without_the_mount_plan_is_refused_naming_the_fix() {
    if skip_without_landlock() {
        return;
    }
    let (_dir, base) = tree();
    let a = with_fallbacks(landlock::lower_fs(&policy()).artifact);
    in_child(|c| {
        for cap in [Abi(1), Abi(2)] {
            let r = landlock::apply_capped(&a, &params(&base), Mode::Required, InForce::NOTHING, cap);
            let msg = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
            c.expect(
                matches!(r, Err(landlock::ApplyError::AbiTooLow { .. }))
                    && msg.contains("`truncate` (V3)")
                    && msg.contains("Linux 6.2")
                    && msg.contains("user namespaces are allowed"),
                format!("at {cap} without a mount plan: {msg:?}"),
            );
        }
        // Nothing was enforced by the refusal: the file is still writable by DAC here.
        c.expect(can_write(&base.join("ro/file.txt")), "refusal enforces nothing");
    });
}

#[test]
fn the_mount_plan_enforces_truncate_on_an_old_abi() {
    if skip_without_landlock() {
        return;
    }
    if !namespaces_available() {
        eprintln!("SKIP: needs user namespaces for the mount plan");
        return;
    }
    let (_dir, base) = tree();
    let opts = aegis_targets::mounts::PlanOptions {
        tmp_size_bytes: Some(1 << 20),
        ..Default::default()
    };
    let (plan, _) = aegis_targets::mounts::plan_from_rules(&policy(), &opts);
    let a = with_fallbacks(landlock::lower_fs(&policy()).artifact);
    for cap in [Abi(2), Abi(1)] {
        std::fs::create_dir_all(base.join("rw/work/a")).unwrap();
        std::fs::write(base.join("rw/work/a/f"), "x").unwrap();
        std::fs::write(base.join("rw/ok.txt"), "ok").unwrap();
        in_namespaces(|c| {
            if let Err(e) = aegis_targets::mounts::apply(&plan, &params(&base)) {
                return c.expect(false, format!("mounts::apply: {e}"));
            }
            let st = match landlock::apply_capped(&a, &params(&base), Mode::Required, InForce::EVERYTHING, cap) {
                Ok(s) => s,
                Err(e) => return c.expect(false, format!("at {cap}: {e}")),
            };
            c.expect(
                st.status == Enforcement::FullyEnforced,
                format!("at {cap}: {:?} {:?}", st.status, st.details),
            );
            c.expect(
                st.details.iter().any(|d| d.contains("`truncate` (V3): enforced by the mount plan")),
                format!("at {cap}: the report names the fallback: {:?}", st.details),
            );
            // What Landlock's truncate right would have refused, the read-only bind refuses.
            c.expect(
                truncate_errno(&base.join("ro/file.txt")) == libc::EROFS,
                format!("at {cap}: truncate of a read-only grant must fail with EROFS"),
            );
            c.expect(
                truncate_errno(&base.join("rw/ok.txt")) == 0,
                format!("at {cap}: truncate inside the write grant works"),
            );
            c.expect(
                std::fs::read_to_string(base.join("rw/.env")).map_or(true, |t| !t.contains("hunter2")),
                format!("at {cap}: the denied file stays hidden (masked)"),
            );
            let moved = std::fs::rename(base.join("rw/work/a/f"), base.join("rw/work/g"));
            if cap >= Abi(2) {
                c.expect(moved.is_ok(), format!("at {cap}: rename into another directory: {moved:?}"));
            } else {
                // Below V2 the kernel denies every reparenting: the stricter reading.
                c.expect(
                    errno_of(moved) == libc::EXDEV,
                    "at V1: rename into another directory fails with EXDEV",
                );
                c.expect(
                    st.details.iter().any(|d| d.contains("`refer` (V2)") && d.contains("stricter")),
                    format!("at V1 the report says refer is stricter: {:?}", st.details),
                );
                c.expect(
                    std::fs::rename(base.join("rw/work/a/f"), base.join("rw/work/a/h")).is_ok(),
                    "at V1: rename inside one directory works",
                );
            }
        });
        let _ = std::fs::remove_dir_all(base.join("rw/work/a"));
        let _ = std::fs::remove_file(base.join("rw/work/g"));
    }
}
