//! cargo-fuzz target for `POST /v1/events` push bodies (decoding and per-event validation).
//! The body is `synckit_testkit::fuzz::push_body`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::push_body(data));
