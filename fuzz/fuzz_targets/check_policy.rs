//! Arbitrary bytes as a SetProvisionPolicyRequest, through `check_static` and `check_graph`
//! with an in-memory lookup. The body and its invariants live in
//! `tests/golden/fuzz_check.rs`, where the test suite compiles and runs it too.
#![no_main]

#[path = "../../tests/golden/fuzz_check.rs"]
mod fuzz_check;
#[path = "../../tests/golden/paths.rs"]
mod paths;
#[path = "../../tests/golden/protojson.rs"]
mod protojson;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzz_check::check_request_bytes(data);
});
