#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test code: a failed unwrap or index is a failed test, with its message")]
//! Integration tests of the policy compiler, built into one binary (one link step).
//!
//! * `corpus`: the invalid-policy corpus (`tests/fixtures/invalid/`): every fixture fails
//!   with its expected code, never panics, and its rendered diagnostics are snapshots.
//! * `examples`: every policy in `policies/` is valid; IR, `inspect` and warnings snapshots;
//!   the JSON Schema accepts every example.
//! * `eval_table`: the reference evaluator's answers on the example policies.
//! * `laws`: proptest properties: no input panics; deny beats allow; default deny; rule order
//!   does not matter; adding a grant never takes a permission away.
//! * `docs`: `docs/policy.md` names every diagnostic code and every key.
//! * `fuzz_corpus`: the cargo-fuzz target's body, run over the corpus and the examples.
//! * `checked`: the IR's invariant check (`Checked`) accepts every compiled policy and
//!   refuses a bundle IR that breaks one, naming it.
//! * `cli`: the `aegisc` binary end to end (exit codes and output lines).
//! * `unix`: `[network] unix` grants: evaluator, lints, diff and `aegisc check ... unix PATH`.
//! * `hosts`: the `mounts` enforcement level and what older Landlock ABIs cost.
//! * `private_tmp`: a literal grant under `/tmp` is flagged (the private `/tmp` replaces it).
//! * `profiles`: the built-in profiles (`extends = ["aegis:NAME@VERSION"]`): valid, frozen,
//!   documented, credential stores denied, origins shown.

mod checked;
mod cli;
mod common;
mod corpus;
mod docs;
mod eval_table;
mod examples;
mod fuzz_corpus;
mod hosts;
mod laws;
mod private_tmp;
mod profiles;
mod unix;
