//! cargo-fuzz target: arbitrary bytes through parse → compose → lower → lint → evaluate.
//! Run (nightly toolchain): `cd compiler/fuzz && cargo +nightly fuzz run parse_lower_validate`.

#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../src/check.rs");

fuzz_target!(|data: &[u8]| {
    check_one(data);
});
