//! cargo-fuzz target for the `GET /v1/events` query string.
//! The body is `synckit_testkit::fuzz::pull_query`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::pull_query(data));
