//! The AEGIS egress proxy and API gate. It runs inside the supervisor (`aegis-exec`) and
//! listens on `127.0.0.1:3128` inside the agent's loopback-only network namespace: the only
//! way out for a `proxy`-mode agent. See `docs/proxy.md` for what it enforces.
//!
//! Modules, from the bytes up:
//! - [`addr`]: host spellings (every IPv4 form parsed as an address), special ranges;
//! - [`sni`]: the server name of a TLS ClientHello;
//! - [`http1`]: strict HTTP/1.1 framing (refuses every smuggling shape);
//! - [`reinterpret`]: method and path overrides servers would act on (headers, bodies);
//! - [`gate`]: policy questions, answered by the compiler's reference evaluator; credentials;
//!   vetting of resolved addresses;
//! - [`resolve`]: pinned and system name resolution; this host's addresses;
//! - [`tls`]: the per-sandbox CA and verified upstream TLS;
//! - [`relay`]: TCP tunnels (splice) and TLS-to-TLS relays;
//! - [`fronting`]: whether a tunnel could reach a declared API's server (domain fronting);
//! - [`exe`]: which agent executable opened a connection (sock_diag + `/proc`);
//! - [`records`]: audit records with repeats aggregated; the proxy's CPU for the agent, bounded;
//! - [`decision`]: the decision endpoint agent frameworks ask before acting;
//! - [`server`]: the accept pool and the per-connection logic (tunnel, inspect, forward).
pub mod addr;
pub mod decision;
pub mod exe;
pub mod fronting;
pub mod gate;
pub mod http1;
pub mod records;
pub mod reinterpret;
pub mod relay;
pub mod resolve;
pub mod server;
pub mod sni;
pub mod tls;
