//! Fuzz target: `switchyard::fuzzing::sse` (see src/fuzzing.rs for its invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::sse(data));
