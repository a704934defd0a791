//! End-to-end tests: one binary, one module per area. They run the real binaries
//! (`aegisc`, `aegis-exec`, `aegis-audit`) built by cargo for this workspace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
