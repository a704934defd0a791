//! The AEGIS egress proxy and API gate. It runs inside the supervisor (`aegis-exec`) and
//! listens on `127.0.0.1:3128` inside the agent's loopback-only network namespace: the only
//! way out for a `proxy`-mode agent.
//!
//! Modules: [`addr`] (host spellings, special address ranges), [`sni`] (ClientHello server
//! name), [`gate`] (policy questions, answered by the compiler's evaluator; credentials),
//! [`resolve`] (pinned and system name resolution; this host's addresses), [`tls`] (the
//! per-sandbox CA and upstream TLS).
pub mod addr;
pub mod sni;
pub mod gate;
pub mod resolve;
pub mod tls;
pub mod http1;
pub mod relay;
pub mod exe;
pub mod decision;
pub mod server;
