//! cargo-fuzz target for Server-Sent Events frames.
//! The body is `synckit_testkit::fuzz::sse_frames`; tests/fuzz_corpora.rs replays the corpus through it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| synckit_testkit::fuzz::sse_frames(data));
