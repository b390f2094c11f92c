//! cargo-fuzz target for versions and counts (`parse_u64`).
//! The body is `synckit_testkit::fuzz::version`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::version(data));
