//! End-to-end tests for AEGIS live in `e2e/`; this library is empty on purpose.
