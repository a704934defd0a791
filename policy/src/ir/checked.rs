//! The proof that a policy holds the IR's invariants: [`Checked`].
//!
//! Input: a [`Policy`], built by the compiler's lowering or read back from a bundle's
//! `policy.ir.json` (which a hostile or careless hand may have written). Output: a
//! [`Checked`] policy, or the first [`Violation`] found. Invariant: a [`Checked`] can only be
//! made here, after every check in [`Checked::check`] passed, so a function that takes one (every
//! target's emit, the proxy's gate, the supervisor's decision records, `aegisd`) never sees a
//! policy that breaks what `ir/mod.rs` promises: sorted, duplicate-free collections (the
//! evaluator and the emitters rely on them for determinism and on "one rule per key"), valid
//! port ranges and CIDR prefixes, errno values the kernel's `SECCOMP_RET_ERRNO` can carry,
//! an entry for every enforcement layer, and origins that point into `sources` (rendering an
//! origin indexes that list). Paths are checked on the way in: a [`super::PathPattern`]
//! cannot be deserialised from a non-canonical spelling.

use std::fmt;
use std::ops::Deref;

use super::{Endpoint, Layer, Policy};
use crate::source::Origin;

/// A policy that holds every IR invariant. Derefs to the [`Policy`].
#[derive(Clone, Debug)]
pub struct Checked(Policy);

/// The first invariant a policy breaks, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

impl Deref for Checked {
    type Target = Policy;
    fn deref(&self) -> &Policy {
        &self.0
    }
}

impl AsRef<Policy> for Checked {
    fn as_ref(&self) -> &Policy {
        &self.0
    }
}

impl Checked {
    /// Checks `policy` against the IR's invariants.
    pub fn check(policy: Policy) -> Result<Checked, Violation> {
        check(&policy)?;
        Ok(Checked(policy))
    }

    /// Reads `policy.ir.json` bytes from a bundle and checks them: the only way the loader,
    /// the proxy and `aegisd` get a policy.
    pub fn from_json(bytes: &[u8]) -> Result<Checked, Violation> {
        let policy: Policy = serde_json::from_slice(bytes).map_err(|e| Violation(e.to_string()))?;
        Checked::check(policy)
    }

    /// The policy, for a caller that must own it.
    pub fn into_inner(self) -> Policy {
        self.0
    }
}

fn fail<T>(what: String) -> Result<T, Violation> {
    Err(Violation(what))
}

/// `items` sorted by `key`, each key once.
fn strictly_sorted<T, K: Ord + fmt::Debug>(what: &str, items: &[T], key: impl Fn(&T) -> K) -> Result<(), Violation> {
    for pair in items.windows(2) {
        if let [a, b] = pair {
            let (ka, kb) = (key(a), key(b));
            if ka >= kb {
                return fail(format!("{what}: not sorted or not unique at {kb:?}"));
            }
        }
    }
    Ok(())
}

fn endpoints(what: &str, list: &[Endpoint]) -> Result<(), Violation> {
    strictly_sorted(what, list, |e| e.clone())?;
    for e in list {
        if e.ports.is_empty() {
            return fail(format!("{what}: {e} has no port range"));
        }
        if e.ports.iter().any(|p| p.first == 0 || p.first > p.last) {
            return fail(format!("{what}: {e} has a port range outside 1-65535 or backwards"));
        }
        for pair in e.ports.windows(2) {
            if let [a, b] = pair
                && a.last >= b.first
            {
                return fail(format!("{what}: {e} has overlapping or unsorted port ranges"));
            }
        }
        if let super::Destination::Network(c) = &e.destination
            && c.prefix > c.max_prefix()
        {
            return fail(format!("{what}: {e} has a prefix longer than its address"));
        }
    }
    Ok(())
}

/// Every origin of the policy, for the index check.
fn origins(p: &Policy) -> impl Iterator<Item = Origin> + '_ {
    let fs = p.filesystem.rules.iter().map(|r| r.origin);
    let unprotect = p.filesystem.protection.unprotect.iter().map(|u| u.origin).chain([p.filesystem.protection.origin]);
    let net = p.network.allow.iter().chain(&p.network.deny).map(|e| e.origin);
    let net = net.chain(p.network.dns.iter().map(|r| r.origin)).chain(p.network.unix.iter().map(|u| u.origin)).chain([p.network.mode_origin]);
    let apis = p.apis.values().flat_map(|a| {
        let rules = a.allow.iter().chain(&a.deny).map(|r| r.origin);
        [a.origin, a.credential.as_ref().and_then(|c| c.origin)].into_iter().chain(a.scopes.iter().map(|s| s.origin)).chain(rules)
    });
    let r = &p.resources;
    let limits = [r.memory_bytes, r.pids, r.cpu_millicores, r.cpu_weight, r.io_weight, r.wall_time_ms].into_iter().map(|l| l.and_then(|l| l.origin));
    let syscalls = p.syscalls.rules.iter().map(|r| r.origin);
    let params = p.parameters.values().map(|v| v.origin);
    [p.agent.origin].into_iter().chain(params).chain(fs).chain(unprotect).chain(net).chain(apis).chain(limits).chain(syscalls).flatten()
}

/// Every invariant of `ir/mod.rs` that a deserialised policy could break.
fn check(p: &Policy) -> Result<(), Violation> {
    if p.agent.name.is_empty() || !p.agent.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return fail(format!("agent name `{}` is not a lower-case identifier", p.agent.name));
    }
    strictly_sorted("filesystem rules", &p.filesystem.rules, |r| (r.access, r.path.clone()))?;
    strictly_sorted("filesystem unprotect", &p.filesystem.protection.unprotect, |u| u.path.clone())?;
    endpoints("network allow", &p.network.allow)?;
    endpoints("network deny", &p.network.deny)?;
    strictly_sorted("network unix", &p.network.unix, |u| u.path.clone())?;
    for (name, api) in &p.apis {
        if &api.name != name {
            return fail(format!("api `{name}` is stored under another name (`{}`)", api.name));
        }
        strictly_sorted(&format!("api `{name}` scopes"), &api.scopes, |s| s.name.clone())?;
        strictly_sorted(&format!("api `{name}` allow"), &api.allow, |r| r.clone())?;
        strictly_sorted(&format!("api `{name}` deny"), &api.deny, |r| r.clone())?;
    }
    strictly_sorted("syscall rules", &p.syscalls.rules, |r| r.name.clone())?;
    // SECCOMP_RET_ERRNO carries 12 bits of errno (MAX_ERRNO).
    let errnos = p.syscalls.rules.iter().filter_map(|r| match r.action {
        super::SyscallAction::Deny(e) => Some(e),
        _ => None,
    });
    if let Some(e) = errnos.chain([p.syscalls.default_errno]).find(|e| !(1..=4095).contains(e)) {
        return fail(format!("errno {e} is outside 1-4095"));
    }
    if let Some(layer) = Layer::ALL.into_iter().find(|l| !p.enforcement.layers.contains_key(l)) {
        return fail(format!("enforcement has no level for the {} layer", layer.word()));
    }
    if let Some(o) = origins(p).find(|o| o.file.index() >= p.sources.len()) {
        return fail(format!("an origin names source file {} of {}", o.file.index(), p.sources.len()));
    }
    Ok(())
}
