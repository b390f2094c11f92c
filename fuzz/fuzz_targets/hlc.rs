//! cargo-fuzz target for hybrid-logical-clock stamps (`Hlc`).
//! The body is `synckit_testkit::fuzz::hlc`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::hlc(data));
