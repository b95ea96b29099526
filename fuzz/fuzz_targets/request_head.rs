//! Fuzz target: `switchyard::fuzzing::request_head` (see src/fuzzing.rs for its invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::request_head(data));
