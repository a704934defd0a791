//! Real launches as root: namespaces, ids, cgroup, cleanup, refusals.

use crate::common::*;

#[test]
fn true_runs_and_everything_is_cleaned_up() {
    if !need_root("true_runs") {
        return;
    }
    let b = build(&Spec::new("rt-true"), true);
    let o = b.run(&["--verbose"], &["/bin/true"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout {out}\nstderr {err}");
    assert!(err.contains("enforcement report"), "{err}");
    assert!(b.leaves().is_empty(), "cgroup leaves removed: {:?}", b.leaves());
    // (Notes about stale leaves swept from earlier crashed runs may appear in between.)
    let kinds: Vec<String> = b.kinds().into_iter().filter(|k| k != "note").collect();
    assert_eq!(
        kinds,
        vec!["bundle_verified", "enforcement_report", "agent_started", "agent_exited"],
        "audit records"
    );
    let exited = &b.events("agent_exited")[0];
    assert_eq!(exited["status"], 0);
}

#[test]
fn agent_sees_new_namespaces_its_init_and_its_uid_map() {
    if !need_root("namespaces") {
        return;
    }
    let b = build(&Spec::new("rt-ns"), true);
    let script = "echo pid=$$; echo init=$(cat /proc/1/comm); cat /proc/self/uid_map; id -u; hostname; \
                  for n in user mnt pid net ipc uts cgroup; do echo $n=$(readlink /proc/self/ns/$n); done; \
                  cat /proc/self/cgroup | head -3; echo nproc=$(ls /proc | grep -c '^[0-9]'); for i in $(tail -n +3 /proc/net/dev | cut -d: -f1); do echo if=$i; done";
    let o = b.run(&[], &["/bin/sh", "-c", script]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    eprintln!("{out}");
    assert!(out.contains("pid=2\n") && out.contains("init=aegis-init\n"), "the agent is pid 2, under aegis's init: {out}");
    // SAFETY: getuid has no preconditions.
    let uid = if is_root() { 65534 } else { unsafe { libc::getuid() } };
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [uid.to_string(), uid.to_string(), "1".into()]), "uid map {out}");
    assert!(out.contains(&format!("\n{uid}\n")), "runs as uid {uid}: {out}");
    assert!(out.contains(&format!("\n{}\n", b.agent)), "hostname is the agent name: {out}");
    for n in ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        let line = out.lines().find(|l| l.starts_with(&format!("{n}="))).unwrap();
        assert_ne!(line, format!("{n}={}", mine.display()), "{n} namespace is new");
    }
    // Cgroup namespace rooted at the leaf: every hierarchy reads "/".
    assert!(out.lines().filter(|l| l.contains(":/")).all(|l| l.ends_with(":/")), "{out}");
    // Fresh /proc: only the agent's own processes (init, sh and the pipeline's children).
    let nproc: usize = out.lines().find_map(|l| l.strip_prefix("nproc=")).unwrap().parse().unwrap();
    assert!(nproc <= 5, "host processes invisible: {nproc}");
    let ifaces: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("if=")).collect();
    assert_eq!(ifaces, vec!["lo"], "network none: only loopback: {out}");
}

#[test]
fn agent_cannot_reach_the_supervisor_or_host_processes() {
    if !need_root("isolation") {
        return;
    }
    let b = build(&Spec::new("rt-iso"), true);
    let me = std::process::id();
    // The test runner and the supervisor live outside the agent's pid namespace: they have
    // no pid there, so neither kill nor ptrace (via /proc/<pid>) can name them.
    let script = format!(
        "kill -0 {me} 2>/dev/null && echo runner-reachable || echo runner-unreachable; \
         [ -e /proc/{me} ] && echo runner-visible || echo runner-invisible; \
         kill -0 $PPID 2>/dev/null; echo ppid=$PPID"
    );
    let o = b.run(&[], &["/bin/sh", "-c", &script]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("runner-unreachable"), "{out}");
    assert!(out.contains("runner-invisible") || me == 1, "{out}");
    // The agent's parent is its init (pid 1), not the supervisor, which has no pid here.
    assert!(out.contains("ppid=1"), "the supervisor has no pid in the agent's namespace: {out}");
}
