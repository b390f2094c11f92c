//! cargo-fuzz target for YAML and JSON rules files.
//! The body is `synckit_testkit::fuzz::rules_file`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::rules_file(data));
