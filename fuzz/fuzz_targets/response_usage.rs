//! Fuzz target: `switchyard::fuzzing::response_usage` (see src/fuzzing.rs for its invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::response_usage(data));
