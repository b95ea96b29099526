//! Fuzz target: `switchyard::fuzzing::event_stream` (see src/fuzzing.rs for its invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::event_stream(data));
