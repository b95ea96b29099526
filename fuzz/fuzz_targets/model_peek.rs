//! Fuzz target: `switchyard::fuzzing::model_peek` (see src/fuzzing.rs for its invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::model_peek(data));
