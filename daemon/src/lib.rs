//! `aegisd`, the AEGIS decision daemon, and the library side of its client (the `aegis`
//! binary lives in `cli/`).
//!
//! Input: one JSON request per line on a Unix stream socket (`register` a policy or a signed
//! bundle under its agent name; `check-fs`, `check-exec`, `check-net`, `check-api` questions
//! about a registered agent; `list`), from peers the socket admits. Output: one JSON response
//! per line, `{"ok":true,"verdict":"ALLOW"|"DENY",...}` or `{"ok":false,"error":{code,
//! message, hint}}`, and one hash-chained audit record per decision (`--audit-log`).
//! Invariants: every verdict comes from [`aegis_policy::eval::evaluate`], the same
//! reference evaluator as `aegisc check`, on the same IR (a bundle's verified
//! `policy.ir.json`); when an audit log is configured, no verdict is sent unless its record
//! was appended first (fail closed); a peer that is neither root, the daemon's own user, nor
//! a member of `--group` is refused even if the socket file's mode was widened; no input
//! (malformed JSON, binary garbage, over-long lines, a peer that vanishes mid-line) panics
//! the daemon or stops it from serving others. Protocol and permissions: `docs/aegisd.md`.
//!
//! Modules: [`protocol`] (request and response shapes, error codes and exit codes),
//! [`registry`] (registered agents and how a query is answered), [`peer`] (who is on the
//! other end of a connection, and whether they are admitted), [`socket`] (creating the
//! listening socket safely), [`server`] (the accept loop, one thread per connection, audit),
//! [`client`] (what `aegis` sends and prints), [`local`] (`AEGIS_DIR` and `AEGIS_SOCKET`: the
//! socket and audit log the local tools share).

pub mod client;
pub mod error;
pub mod local;
pub mod peer;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod socket;

pub use error::{RequestError, StartError};
