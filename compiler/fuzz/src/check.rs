// The body of the `parse_lower_validate` fuzz target, shared with the integration test
// `fuzz_corpus` (which `include!`s this file) so stable CI compiles and runs it.
//
// Input: arbitrary bytes (and the same bytes with every line pushed far right). Checks:
// compiling never panics; a failure carries at least one error and renders; a success
// serialises, lints, renders `inspect` and answers queries.
// Returns whether the input was a valid policy.

/// Runs the whole front end on `data` and on its far-right twin (see [`far_right`]);
/// panics (a fuzzer finding) on any broken invariant.
pub fn check_one(data: &[u8]) -> bool {
    let valid = check_bytes(data);
    if let Some(shifted) = far_right(data) {
        check_bytes(&shifted);
    }
    valid
}

/// The same policy with every line indented by 70,000 spaces (leading whitespace means the
/// same in TOML outside multi-line strings): every diagnostic then points past column 65,535,
/// where 16-bit format widths used to make the renderer panic (issue 11.9). Only for short
/// inputs, so the fuzzer stays fast.
pub fn far_right(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() > 4096 || data.iter().filter(|b| **b == b'\n').count() > 64 {
        return None;
    }
    let pad = vec![b' '; 70_000];
    let mut out = Vec::with_capacity(data.len() + 65 * pad.len());
    for line in data.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(&pad);
        out.extend_from_slice(line);
    }
    Some(out)
}

fn check_bytes(data: &[u8]) -> bool {
    use aegis_compiler::eval::{FsQuery, Params, Query, evaluate};
    match aegis_compiler::compile_bytes("fuzz.toml", data) {
        Ok(c) => {
            let json = c.policy.to_json();
            assert!(!json.is_null(), "IR must serialise");
            let _ = c.policy.digest();
            let e = aegis_compiler::lint::exposure(&c.policy);
            assert!((0.0..=10.0).contains(&e.score), "exposure {} out of range", e.score);
            let _ = aegis_compiler::cli::inspect::render(&c);
            let _ = aegis_compiler::diag::render_human(&c.warnings, &c.sources, false);
            for access in [FsQuery::Read, FsQuery::Write, FsQuery::Exec] {
                let q = Query::Fs { access, path: "/usr/bin/env".into() };
                let _ = evaluate(&c.policy, &Params::new(), &q);
            }
            true
        }
        Err(f) => {
            assert!(f.diagnostics.iter().any(|d| d.is_error()), "a failed compile must report an error");
            let _ = aegis_compiler::diag::render_human(&f.diagnostics, &f.sources, false);
            false
        }
    }
}
