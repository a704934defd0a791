//! What every AEGIS component that *trusts* a policy needs, and nothing of the language that
//! writes one.
//!
//! Input: a policy already compiled by `aegisc` (the typed IR, `policy.ir.json` in a
//! bundle) and questions about it. Output: the IR's types ([`ir`]), the proof that an IR
//! holds its invariants ([`ir::Checked`]), the reference evaluator's answers ([`eval`]),
//! the query grammar shared by `aegisc check`, `aegisd` and the proxy's decision endpoint
//! ([`query`]), and the reasons a system call was refused ([`why`]).
//!
//! Why a crate of its own: `aegis-exec` runs as root on hosts, and the proxy and `aegisd`
//! answer a hostile agent. They depend on this crate and on `aegis-targets` only, never on
//! the compiler's TOML parser, composer or graph code (`cargo tree -p aegis-runtime -e
//! normal`). One evaluator serves all of them, so no two components can disagree.

pub mod errno;
pub mod eval;
pub mod ir;
pub mod query;
pub mod source;
pub mod why;

/// "did you mean `x`?" for a misspelt word among known candidates.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(&word.to_ascii_lowercase(), &c.to_ascii_lowercase());
        if score > 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| c)
}
