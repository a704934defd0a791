//! The AEGIS policy compiler.
//!
//! Pipeline (each stage one module): `syntax` (TOML → syntax tree with spans) → `compose`
//! (`extends` chains) → `lower` (checks every value, builds the typed `ir`) → `lint`
//! (warnings, exposure score) → `eval` (the reference evaluator that answers queries and is
//! the oracle every kernel target is tested against). `cli` holds one file per `aegisc`
//! command. See `docs/policy.md` for the language and the evaluator's semantics.

pub mod cli;
pub mod compose;
pub mod diag;
pub mod diff;
pub mod emit;
pub mod explain;
pub mod lint;
pub mod lower;
pub mod profiles;
pub mod secrets;
pub mod syntax;
pub mod syscall_names;

// The IR, its evaluator and the source positions rules carry live in `aegis-policy`, which the
// loader, the proxy and aegisd use without this crate's parser; re-exported under their old
// paths so the pipeline reads as one crate.
pub use aegis_policy::{eval, ir, source};

use std::path::Path;

use diag::{Diagnostic, Diagnostics};
use source::SourceMap;

/// A policy that parsed, composed and lowered without errors, with its warnings.
pub struct Compiled {
    pub sources: SourceMap,
    /// Checked against the IR's invariants: the only form a target's emit accepts.
    pub policy: ir::Checked,
    pub warnings: Vec<Diagnostic>,
}

/// A policy that failed: every diagnostic (errors and warnings) and the sources to render
/// them against.
pub struct Failed {
    pub sources: SourceMap,
    pub diagnostics: Vec<Diagnostic>,
}

fn finish(loaded: compose::Loaded, mut diags: Diagnostics) -> Result<Compiled, Failed> {
    let policy = match &loaded.merged {
        Some(pf) if !diags.has_errors() => lower::lower(pf, &loaded.sources, &mut diags),
        _ => None,
    };
    match policy {
        Some(policy) if !diags.has_errors() => {
            let mut warnings = diags.into_vec();
            warnings.extend(lint::lint(&policy));
            Ok(Compiled { sources: loaded.sources, policy, warnings })
        }
        _ => Err(Failed { sources: loaded.sources, diagnostics: diags.into_vec() }),
    }
}

/// Parses, composes, lowers and lints the policy at `path`.
pub fn compile_file(path: &Path) -> Result<Compiled, Failed> {
    let mut diags = Diagnostics::default();
    let loaded = compose::load(path, &mut diags);
    finish(loaded, diags)
}

/// Same as [`compile_file`] for a policy given as bytes (tests, fuzzing).
pub fn compile_bytes(name: &str, bytes: &[u8]) -> Result<Compiled, Failed> {
    let mut diags = Diagnostics::default();
    let loaded = compose::load_bytes(name, bytes, &mut diags);
    finish(loaded, diags)
}
