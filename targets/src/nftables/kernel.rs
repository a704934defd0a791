//! nf_tables over netlink, for what `nft` cannot do or is too slow for: the `host`-mode
//! dispatch rule ([`add_dispatch`]: `socket cgroupv2` has no key in nft 1.0.6's JSON),
//! listing, presence checks and deletion of tables.
//!
//! Input: table names, a [`Dispatch`] (a cgroup2 id and depth), optionally a network
//! namespace (a path to its nsfs file). Output: the kernel's answer. Invariants: every
//! change is one batch (begin, message, end) that the kernel commits or refuses whole; a
//! request counts as done only when the kernel acknowledged it; a reply that does not parse
//! is an error ([`NftError::Shape`]), never read past its end; the supervisor returns to its
//! own network namespace after opening a socket in another one.

use std::os::fd::AsRawFd;
use std::path::Path;

use super::{AGENT_CHAIN, FAMILY, NftError};

/// The rule that sends the agent's packets to its chain, for [`add_dispatch`]: sockets
/// whose cgroup2 ancestor at `level` is the cgroup with id `cgroup_id` (the inode number of
/// its directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    pub cgroup_id: u64,
    pub level: u32,
}

impl Dispatch {
    /// The dispatch of the cgroup2 directory `dir` at `level`.
    pub fn of_dir(dir: &Path, level: u32) -> Result<Dispatch, NftError> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(dir).map_err(|source| NftError::Spawn { what: "reading the agent's cgroup2 leaf", source })?;
        Ok(Dispatch { cgroup_id: m.ino(), level })
    }
}

/// Appends `socket cgroupv2 level L <id> goto agent` to the `output` chain of `inet table`
/// in the caller's namespace: one nf_tables batch over netlink, committed when the kernel
/// acknowledges it.
pub fn add_dispatch(table: &str, d: Dispatch) -> Result<(), NftError> {
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_NEWRULE: u16 = 6;
    const NFTA_RULE_TABLE: u16 = 1;
    const NFTA_RULE_CHAIN: u16 = 2;
    const NFTA_RULE_EXPRESSIONS: u16 = 4;
    const NFTA_LIST_ELEM: u16 = 1;
    const NFTA_EXPR_NAME: u16 = 1;
    const NFTA_EXPR_DATA: u16 = 2;
    const NFTA_SOCKET_KEY: u16 = 1;
    const NFTA_SOCKET_DREG: u16 = 2;
    const NFTA_SOCKET_LEVEL: u16 = 3;
    const NFT_SOCKET_CGROUPV2: u32 = 3;
    const NFTA_CMP_SREG: u16 = 1;
    const NFTA_CMP_OP: u16 = 2;
    const NFTA_CMP_DATA: u16 = 3;
    const NFT_CMP_EQ: u32 = 0;
    const NFTA_DATA_VALUE: u16 = 1;
    const NFTA_DATA_VERDICT: u16 = 2;
    const NFTA_VERDICT_CODE: u16 = 1;
    const NFTA_VERDICT_CHAIN: u16 = 2;
    const NFTA_IMMEDIATE_DREG: u16 = 1;
    const NFTA_IMMEDIATE_DATA: u16 = 2;
    const NFT_REG_VERDICT: u32 = 0;
    const NFT_REG_1: u32 = 1;
    const NFT_GOTO: i32 = -4;
    let be = |v: u32| v.to_be_bytes().to_vec();
    let cstr = |t: &str| {
        let mut b = t.as_bytes().to_vec();
        b.push(0);
        b
    };
    let expr = |name: &str, data: Vec<u8>| nested(NFTA_LIST_ELEM, &[attr(NFTA_EXPR_NAME, &cstr(name)), nested(NFTA_EXPR_DATA, &[data])]);
    let socket = expr("socket", [attr(NFTA_SOCKET_KEY, &be(NFT_SOCKET_CGROUPV2)), attr(NFTA_SOCKET_DREG, &be(NFT_REG_1)), attr(NFTA_SOCKET_LEVEL, &be(d.level))].concat());
    let cmp = expr(
        "cmp",
        [attr(NFTA_CMP_SREG, &be(NFT_REG_1)), attr(NFTA_CMP_OP, &be(NFT_CMP_EQ)), nested(NFTA_CMP_DATA, &[attr(NFTA_DATA_VALUE, &d.cgroup_id.to_ne_bytes())])].concat(),
    );
    let verdict = nested(NFTA_DATA_VERDICT, &[attr(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes()), attr(NFTA_VERDICT_CHAIN, &cstr(AGENT_CHAIN))]);
    let goto = expr("immediate", [attr(NFTA_IMMEDIATE_DREG, &be(NFT_REG_VERDICT)), nested(NFTA_IMMEDIATE_DATA, &[verdict])].concat());
    let exprs = [socket, cmp, goto].concat();
    let (tbl, chain) = (cstr(table), cstr("output"));
    let req = libc::NLM_F_REQUEST as u16;
    let mut batch = nl_msg(NFNL_MSG_BATCH_BEGIN, req, 1, NFNL_SUBSYS_NFTABLES, &[]);
    batch.extend(nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE,
        req | (libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16,
        2,
        0,
        &[(NFTA_RULE_TABLE, &tbl), (NFTA_RULE_CHAIN, &chain), (NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &exprs)],
    ));
    batch.extend(nl_msg(NFNL_MSG_BATCH_END, req, 3, NFNL_SUBSYS_NFTABLES, &[]));
    let sock = netfilter_socket(None)?;
    nl_send(&sock, &batch)?;
    match nl_ack(&sock)? {
        Ack::Done(_) => Ok(()),
        Ack::NotFound => Err(NftError::Missing(format!("{FAMILY} {table} (adding the dispatch rule)"))),
    }
}

/// NLA_F_NESTED: the attribute holds attributes.
const NLA_F_NESTED: u16 = 0x8000;

/// One attribute (length, type, payload, padding to 4 bytes).
fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(crate::netlink::align4(4 + payload.len()));
    a.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(payload);
    a.resize(crate::netlink::align4(a.len()), 0);
    a
}

/// A nested attribute of the (already encoded) `inner` attributes.
fn nested(ty: u16, inner: &[Vec<u8>]) -> Vec<u8> {
    attr(ty | NLA_F_NESTED, &inner.concat())
}

/// Names of the `inet` tables in the network namespace at `netns` (or the current one):
/// one NFT_MSG_GETTABLE dump over netlink.
pub fn list_tables(netns: Option<&Path>) -> Result<Vec<String>, NftError> {
    let sock = netfilter_socket(netns)?;
    let msg = nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
        1,
        0,
        &[],
    );
    nl_send(&sock, &msg)?;
    let mut names = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err(nl_err("netlink receive"));
        }
        let data = buf.get(..n as usize).unwrap_or_default();
        let mut off = 0usize;
        // struct nlmsghdr: length, type, flags, seq, pid.
        while let Some(&[l0, l1, l2, l3, t0, t1, ..]) = data.get(off..).and_then(<[u8]>::first_chunk::<16>) {
            let len = u32::from_ne_bytes([l0, l1, l2, l3]) as usize;
            let ty = u16::from_ne_bytes([t0, t1]);
            if len < 16 || off + len > data.len() {
                return Err(NftError::Shape("malformed netlink reply".into()));
            }
            let body = data.get(off + 16..off + len).unwrap_or_default();
            match ty {
                NLMSG_DONE => return Ok(names),
                NLMSG_ERROR => {
                    let e = body.first_chunk::<4>().map(|e| i32::from_ne_bytes(*e)).unwrap_or(-libc::EINVAL);
                    return Err(NftError::Spawn {
                        what: "listing tables",
                        source: std::io::Error::from_raw_os_error(e.wrapping_neg()),
                    });
                }
                t if t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE && body.first() == Some(&NFPROTO_INET) => {
                    if let Some(name) = table_name_attr(body.get(4..).unwrap_or_default()) {
                        names.push(name);
                    }
                }
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// NFTA_TABLE_NAME among the attributes of a table message (after its nfgenmsg).
fn table_name_attr(mut attrs: &[u8]) -> Option<String> {
    // struct nlattr: length, type.
    while let Some(&[l0, l1, t0, t1]) = attrs.first_chunk::<4>() {
        let len = usize::from(u16::from_ne_bytes([l0, l1]));
        let ty = u16::from_ne_bytes([t0, t1]) & 0x3fff;
        if len < 4 {
            return None;
        }
        let payload = attrs.get(4..len)?;
        if ty == NFTA_TABLE_NAME {
            let end = payload.iter().position(|b| *b == 0).unwrap_or(payload.len());
            return String::from_utf8(payload.get(..end)?.to_vec()).ok();
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    None
}

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFPROTO_INET: u8 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

fn nl_err(what: &'static str) -> NftError {
    NftError::Spawn {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// A netlink socket in the network namespace at `netns` (or the current one): the
/// supervisor enters the namespace just long enough to create the socket, which stays bound
/// to it.
fn netfilter_socket(netns: Option<&Path>) -> Result<std::os::fd::OwnedFd, NftError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let open = || {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if fd < 0 {
            return Err(nl_err("netlink socket"));
        }
        // SAFETY: a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let Some(ns) = netns else { return open() };
    let own = std::fs::File::open("/proc/self/ns/net").map_err(|source| NftError::Spawn {
        what: "opening our network namespace",
        source,
    })?;
    let target = std::fs::File::open(ns).map_err(|source| NftError::Spawn {
        what: "opening the agent's network namespace",
        source,
    })?;
    // SAFETY: setns with fds we own; the supervisor is single-threaded, and we switch back
    // below whatever happens.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(nl_err("entering the agent's network namespace"));
    }
    let sock = open();
    // SAFETY: as above, back to our own namespace.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(nl_err("returning to the supervisor's network namespace"));
    }
    sock
}

fn nl_msg(ty: u16, flags: u16, seq: u32, res_id: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    // struct nfgenmsg { family, version, res_id (big endian) }
    let family = if res_id == 0 { NFPROTO_INET } else { 0 };
    let r = res_id.to_be_bytes();
    crate::netlink::message(ty, flags, seq, &[family, 0, r[0], r[1]], attrs)
}

fn nl_send(sock: &std::os::fd::OwnedFd, msg: &[u8]) -> Result<(), NftError> {
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sending our buffer to the kernel's netlink address.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent != msg.len() as isize {
        return Err(nl_err("netlink send"));
    }
    Ok(())
}

/// Deletes `inet <table>` in the network namespace at `netns` (or the current one) with one
/// nf_tables netlink transaction (no `nft` process). `Ok(false)` when it did not exist.
pub fn delete_table(table: &str, netns: Option<&Path>) -> Result<bool, NftError> {
    const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    const NFNL_MSG_BATCH_END: u16 = 0x11;
    const NFT_MSG_DELTABLE: u16 = 2;
    let sock = netfilter_socket(netns)?;
    let mut name = table.as_bytes().to_vec();
    name.push(0);
    let req = libc::NLM_F_REQUEST as u16;
    let mut batch = nl_msg(NFNL_MSG_BATCH_BEGIN, req, 1, NFNL_SUBSYS_NFTABLES, &[]);
    batch.extend(nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELTABLE,
        req | libc::NLM_F_ACK as u16,
        2,
        0,
        &[(NFTA_TABLE_NAME, &name)],
    ));
    batch.extend(nl_msg(NFNL_MSG_BATCH_END, req, 3, NFNL_SUBSYS_NFTABLES, &[]));
    nl_send(&sock, &batch)?;
    match nl_ack(&sock)? {
        Ack::Done(_) => Ok(true),
        Ack::NotFound => Ok(false),
    }
}

enum Ack {
    Done(bool),
    NotFound,
}

/// Reads replies until the ACK (or error); `Done(true)` when a NEWTABLE reply came first.
fn nl_ack(sock: &std::os::fd::OwnedFd) -> Result<Ack, NftError> {
    let mut found = false;
    let mut buf = vec![0u8; 16384];
    loop {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return Err(nl_err("netlink receive"));
        }
        let mut off = 0usize;
        let data = buf.get(..n as usize).unwrap_or_default();
        // struct nlmsghdr: length, type, flags, seq, pid.
        while let Some(&[l0, l1, l2, l3, t0, t1, ..]) = data.get(off..).and_then(<[u8]>::first_chunk::<16>) {
            let len = u32::from_ne_bytes([l0, l1, l2, l3]) as usize;
            let ty = u16::from_ne_bytes([t0, t1]);
            if len < 16 {
                return Err(NftError::Shape("malformed netlink reply".into()));
            }
            if ty == NLMSG_ERROR {
                let err = data
                    .get(off + 16..)
                    .and_then(<[u8]>::first_chunk::<4>)
                    .map(|e| i32::from_ne_bytes(*e))
                    .unwrap_or(-libc::EINVAL);
                return match err {
                    0 => Ok(Ack::Done(found)),
                    e if -e == libc::ENOENT => Ok(Ack::NotFound),
                    e => Err(NftError::Spawn {
                        what: "netlink request",
                        source: std::io::Error::from_raw_os_error(-e),
                    }),
                };
            }
            if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWTABLE {
                found = true;
            }
            off += (len + 3) & !3;
        }
    }
}

/// Asks the kernel (NFT_MSG_GETTABLE over netlink) whether `inet <table>` exists in the
/// network namespace at `netns` (or the current one).
pub fn table_present(table: &str, netns: Option<&Path>) -> Result<bool, NftError> {
    table_present_on(&netfilter_socket(netns)?, table)
}

/// [`table_present`] over a NETLINK_NETFILTER socket of the namespace to ask.
pub fn table_present_on(sock: &std::os::fd::OwnedFd, table: &str) -> Result<bool, NftError> {
    let mut name = table.as_bytes().to_vec();
    name.push(0);
    let msg = nl_msg(
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE,
        (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
        1,
        0,
        &[(NFTA_TABLE_NAME, &name)],
    );
    nl_send(sock, &msg)?;
    match nl_ack(sock)? {
        Ack::Done(found) => Ok(found),
        Ack::NotFound => Ok(false),
    }
}
