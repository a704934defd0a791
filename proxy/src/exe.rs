//! Which executable of the agent opened a proxy connection, for the audit record.
//!
//! Input: the agent's pid (in the supervisor's pid namespace), the cgroup leaf's process
//! list (if any), and the client address of an accepted connection. Output: the path of the
//! executable holding the connecting socket, or `None` when it cannot be told (the process
//! exited, or shares the socket in a way `/proc` does not show). Invariants: read-only
//! scans of `/proc`; only processes of the agent (its leaf, or the agent itself) are
//! looked at; the socket is matched by inode from the agent's own network namespace table.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct AgentProcs {
    pub pid: i32,
    /// `cgroup.procs` of the agent's leaf.
    pub procs_file: Option<PathBuf>,
}

/// The `/proc/net/tcp` form of a socket address (`0100007F:0C38`).
fn proc_net_form(a: &SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => Some(format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port())),
        SocketAddr::V6(_) => None,
    }
}

fn socket_inode(agent_pid: i32, peer: &SocketAddr) -> Option<String> {
    let want = proc_net_form(peer)?;
    let table = std::fs::read_to_string(format!("/proc/{agent_pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&want.as_str())).then(|| f.get(9).map(|s| s.to_string())).flatten()
    })
}

impl AgentProcs {
    fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .procs_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default();
        if !v.contains(&self.pid) {
            v.push(self.pid);
        }
        v
    }

    /// The executable behind the client end of a connection accepted from `peer`.
    pub fn exe_of(&self, peer: &SocketAddr) -> Option<String> {
        let inode = socket_inode(self.pid, peer)?;
        let link = format!("socket:[{inode}]");
        for pid in self.pids() {
            let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for e in dir.flatten() {
                if std::fs::read_link(e.path()).ok().is_some_and(|t| t.as_os_str() == link.as_str()) {
                    return std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.display().to_string());
                }
            }
        }
        None
    }
}
