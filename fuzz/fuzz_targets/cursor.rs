//! cargo-fuzz target for pull cursors (`Seq`).
//! The body is `synckit_testkit::fuzz::cursor`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::cursor(data));
