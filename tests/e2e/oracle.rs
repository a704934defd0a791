//! `aegisc check` answers as the kernel of this host will (issue 11 item 10), differentially
//! against real sandboxed attempts, as root: paths are resolved on the host as the kernel
//! resolves them (`/bin/sh` is the granted `/usr/bin/dash`; a workspace symlink to
//! `/etc/passwd` is `/etc/passwd`), a parameter under the host's `/tmp` leaves the private
//! `/tmp` readable and writable, and what the sandbox replaces (`/dev/shm`, `/tmp`) is a note
//! in the answer and a line in the loss report.

use std::path::Path;
use std::process::Command;

use aegis_tests::*;

use crate::launch::*;

#[test]
fn paths_are_answered_as_the_kernel_resolves_them_on_this_host() {
    if !sandbox_ready() {
        return;
    }
    if std::fs::canonicalize("/bin/sh").ok().as_deref() != Some(Path::new("/usr/bin/dash")) {
        eprintln!("SKIP: /bin/sh is not /usr/bin/dash on this host (the policy grants dash)");
        return;
    }
    let lab = Lab::new();
    let ws = lab.agent_dir("repo");
    put(&ws.join("src/main.py"), "print('hi')\n", Some(AGENT_UID));
    put(&ws.join(".env"), "TOKEN=x\n", Some(AGENT_UID));
    std::os::unix::fs::chown(ws.join("src"), Some(AGENT_UID), Some(AGENT_UID)).unwrap();
    // Symlinks the agent could have left in its workspace in an earlier session.
    std::os::unix::fs::symlink("/etc/passwd", ws.join("src/passwd")).unwrap();
    std::os::unix::fs::symlink("/usr/share", ws.join("src/share")).unwrap();
    std::os::unix::fs::symlink("main.py", ws.join("src/alias.py")).unwrap();
    let params = [("WORKSPACE", ws.as_path())];
    let probes = vec![
        exec(&["/bin/sh", "-c", "true"]),
        exec(&["/bin/bash", "-c", "true"]),
        read(&ws.join("src/passwd")),
        write(&ws.join("src/passwd")),
        read(&ws.join("src/share/base-files/motd")),
        write(&ws.join("src/share/evil")),
        read(&ws.join("src/alias.py")),
        write(&ws.join("src/alias.py")),
    ];
    let (got, _) = differential(&lab, &policy("coding-agent.toml"), &params, &probes);
    assert_eq!(got[0], "ok", "/bin/sh runs: {}", got[0]);
    // The pure evaluator (paths as written) would have said DENY for /bin/sh and ALLOW for
    // reading the workspace's link to /etc/passwd; this host's answers name the resolution.
    let answer = run(aegisc().arg("check").arg(policy("coding-agent.toml")).args(["exec", "/bin/sh"]));
    assert_eq!(answer.code, 0, "{}", answer.stdout);
    assert!(answer.stdout.contains("'/bin/sh' resolves to '/usr/bin/dash'"), "{}", answer.stdout);
    let w = format!("WORKSPACE={}", ws.display());
    let answer = run(aegisc().arg("check").arg("--param").arg(&w).arg(policy("coding-agent.toml")).args(["fs", "read"]).arg(ws.join("src/passwd")));
    assert_eq!(answer.code, 1, "{}", answer.stdout);
    assert!(answer.stdout.contains("resolves to '/etc/passwd'"), "{}", answer.stdout);
}

#[test]
fn a_parameter_under_the_hosts_tmp_leaves_the_private_tmp_usable() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let host_tmp = tempfile::Builder::new().prefix("aegis-e2e-").tempdir_in("/tmp").unwrap();
    let ds = host_tmp.path().join("dataset");
    std::fs::create_dir(&ds).unwrap();
    put(&ds.join("sales.csv"), "a,b\n", None);
    let out = lab.agent_dir("reports");
    let params = [("DATASET", ds.as_path()), ("OUTPUT", out.as_path())];
    // data-analyst denies ${DATASET}/raw-pii, absent here: it used to split the private
    // /tmp around it (nothing listable or creatable there) while check said ALLOW.
    let probes = vec![
        read(Path::new("/tmp")),
        write(Path::new("/tmp/scratch.txt")),
        read(host_tmp.path()),
        read(&ds.join("sales.csv")),
        write(&ds.join("new.csv")),
        write(&ds.join("raw-pii")),
    ];
    differential(&lab, &policy("data-analyst.toml"), &params, &probes);
    // Creating next to the dataset: the runtime made that directory, so check says how.
    let mut c = aegisc();
    c.arg("check").arg(policy("data-analyst.toml"));
    for (k, v) in params {
        c.arg("--param").arg(format!("{k}={}", v.display()));
    }
    let answer = run(c.args(["fs", "write"]).arg(host_tmp.path().join("x")));
    assert!(answer.stdout.contains("the runtime creates") && answer.stdout.contains("belongs to root"), "{}", answer.stdout);
}

#[test]
fn what_the_sandbox_replaces_is_a_note_and_a_loss() {
    if !sandbox_ready() {
        return;
    }
    let lab = Lab::new();
    let p = lab.path("shm.toml");
    std::fs::write(
        &p,
        "version = 1\n[agent]\nname = \"shm\"\n[filesystem]\nread = [\"/usr\"]\nwrite = [\"/dev/shm\"]\n\
         [exec]\nallow = [\"/usr/bin/python3\"]\n[resources]\nmemory = \"256MiB\"\npids = 32\nwall_time = \"1m\"\n",
    )
    .unwrap();
    let name = format!("aegis-e2e-{}", std::process::id());
    let inside = Path::new("/dev/shm").join(&name);
    let (got, _) = differential(&lab, &p, &[], &[write(&inside)]);
    assert_eq!(got[0], "ok");
    assert!(!inside.exists(), "the agent's /dev/shm is its own: nothing reached the host's");
    let answer = run(aegisc().arg("check").arg(&p).args(["fs", "write"]).arg(&inside));
    assert!(answer.stdout.contains("/dev/shm is the sandbox's own"), "{}", answer.stdout);
    let answer = run(aegisc().arg("check").arg(&p).args(["fs", "write", "/tmp/x"]));
    assert!(answer.stdout.contains("private tmpfs"), "{}", answer.stdout);
    let bundle = lab.build(&p, "shm-bundle");
    let losses = std::fs::read_to_string(bundle.join("loss-report.txt")).unwrap();
    assert!(losses.contains("`/dev/shm` is the sandbox's own tmpfs"), "{losses}");
    let _ = Command::new("rm").arg("-f").arg(&inside).status();
}
