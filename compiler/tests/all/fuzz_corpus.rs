//! The cargo-fuzz target (`compiler/fuzz/`) is not built by the workspace (it needs a
//! nightly toolchain); this module compiles its body and runs it over every fixture and
//! example policy, so the target cannot rot and its seed corpus is known not to crash.

include!("../../fuzz/src/check.rs");

#[test]
fn fuzz_body_runs_over_the_corpus() {
    let mut inputs: Vec<std::path::PathBuf> = crate::common::example_policies();
    for dir in ["tests/fixtures/invalid", "tests/fixtures/invalid/extends"] {
        for e in std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                inputs.push(p);
            }
        }
    }
    assert!(inputs.len() > 50);
    let mut valid = 0;
    for p in &inputs {
        if check_one(&std::fs::read(p).unwrap()) {
            valid += 1;
        }
    }
    // Examples compile; fixtures do not (the extends helpers have no agent name).
    assert_eq!(valid, crate::common::example_policies().len());
}
