//! The AEGIS egress proxy and API gate (work in progress: see issue 7). The runtime still
//! refuses `proxy` network mode until this crate is wired in.
