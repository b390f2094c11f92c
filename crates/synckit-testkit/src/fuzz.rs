//! Fuzz-target bodies: one function per parser of untrusted input, called both by the cargo-fuzz
//! targets in `fuzz/` and by the corpus replay test, so the two cannot drift apart.
//!
//! Each function accepts or rejects its input (an error is a normal answer) and asserts the laws
//! that hold for accepted input: formatting and parsing again gives the same value, re-encoding a
//! decoded body decodes equal, and the parser agrees with a small reference model where the
//! accepted language is simple. A panic here is a finding. docs/FUZZING.md lists the targets and
//! how to run them.

use std::str::FromStr;

use serde_json::{Value, json};
use synckit_protocol::sse::{self, Frame};
use synckit_protocol::{
    DecodedEvent, MAX_PUSH_EVENTS, WireEvent, decode_push, parse_pull_query, pull_query_string,
};
use synckit_resolve::{Format, RulesDocument, RulesLoader};
use synckit_types::{
    DEFAULT_MAX_DRIFT_MS, ErrorKind, Hlc, HlcState, MAX_KIND_LEN, NodeId, Seq, parse_u64,
};

/// A fuzz target: takes the raw input and panics only on a finding.
pub type Target = fn(&[u8]);

/// Every target by name; the names are those of `fuzz/fuzz_targets/<name>.rs` and of the corpus
/// directories `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("push_body", push_body),
    ("pull_query", pull_query),
    ("cursor", cursor),
    ("hlc", hlc),
    ("version", version),
    ("rules_file", rules_file),
    ("sse_frames", sse_frames),
];

/// `POST /v1/events` bodies through [`decode_push`] and its per-event validation.
///
/// Laws: at most [`MAX_PUSH_EVENTS`] events; a valid event passes [`synckit_types::Event::validate`]
/// once stamped; the valid events re-encoded as a body decode to the same events; an invalid
/// event's id, sent alone, is again answered as invalid under that id.
pub fn push_body(data: &[u8]) {
    let Ok(decoded) = decode_push(data) else {
        return;
    };
    assert!(decoded.len() <= MAX_PUSH_EVENTS, "{} events", decoded.len());
    let mut valid: Vec<WireEvent> = Vec::new();
    for event in decoded {
        match event {
            DecodedEvent::Valid(event) => {
                assert!(!event.kind.is_empty() && event.kind.len() <= MAX_KIND_LEN);
                let stamped = event
                    .clone()
                    .into_event(|| NodeId::new("fuzz").expect("a constant id"), Hlc::default);
                if let Err(e) = stamped.validate() {
                    panic!("decode_push accepted an event that fails validate: {e}");
                }
                valid.push(event);
            }
            DecodedEvent::Invalid { id, .. } => {
                let alone = serde_json::to_vec(&json!({"events": [{"id": id}]}))
                    .expect("a string id encodes");
                match decode_push(&alone).as_deref() {
                    Ok([DecodedEvent::Invalid { id: again, .. }]) => assert_eq!(again, &id),
                    other => panic!("an event with only the id {id:?} decoded as {other:?}"),
                }
            }
        }
    }
    let body = serde_json::to_vec(&json!({ "events": valid })).expect("decoded events encode");
    let again = decode_push(&body).expect("re-encoded valid events decode");
    let again: Vec<WireEvent> = again
        .into_iter()
        .map(|event| match event {
            DecodedEvent::Valid(event) => event,
            DecodedEvent::Invalid { id, message, .. } => {
                panic!("re-encoded event {id:?} became invalid: {message}")
            }
        })
        .collect();
    assert_eq!(again, valid, "re-encoded push body decodes differently");
}

/// `GET /v1/events` query strings through [`parse_pull_query`].
///
/// Laws: an accepted request has a limit in range and encodes with [`pull_query_string`] to a
/// query that parses back to the same request; every rejection is `InvalidInput`.
pub fn pull_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    match parse_pull_query(query) {
        Ok(request) => {
            if let Err(e) = request.validate() {
                panic!("parse_pull_query accepted {request:?}, which fails validate: {e}");
            }
            assert!(request.filter.kinds.iter().all(|k| !k.is_empty()));
            let encoded = pull_query_string(&request);
            match parse_pull_query(&encoded) {
                Ok(again) => assert_eq!(again, request, "re-encoded as {encoded:?}"),
                Err(e) => panic!("re-encoded query {encoded:?} is refused: {e}"),
            }
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}"),
    }
}

/// Pull cursors through `Seq::from_str`.
///
/// Laws: accepted exactly when the text is one or more ASCII digits that fit a `u64` (so no sign,
/// space or other digit forms); the value matches `u64`'s own parser; the decimal form and the
/// JSON form both round-trip.
pub fn cursor(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let model = decimal_model(text);
    match Seq::from_str(text) {
        Ok(seq) => {
            assert_eq!(Some(seq.get()), model, "cursor {text:?}");
            assert_eq!(seq.to_string().parse::<Seq>().ok(), Some(seq));
            let json = serde_json::to_string(&seq).expect("a Seq encodes");
            assert_eq!(json, seq.to_string());
            assert_eq!(serde_json::from_str::<Seq>(&json).ok(), Some(seq));
        }
        Err(e) => {
            assert_eq!(model, None, "cursor {text:?} refused: {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
}

/// Hybrid-logical-clock stamps through `Hlc::from_str`.
///
/// Laws: accepted exactly when the text is 16 lower-case hex digits, `-`, 8 lower-case hex
/// digits; the accepted text is the canonical form (`to_string` gives it back) and the JSON
/// form round-trips; a clock that observes the stamp, or resumes from it, stamps strictly after
/// it unless the counter is exhausted.
pub fn hlc(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lower_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let bytes = text.as_bytes();
    let model = bytes.len() == 25
        && bytes[16] == b'-'
        && lower_hex(&bytes[..16])
        && lower_hex(&bytes[17..]);
    match Hlc::from_str(text) {
        Ok(stamp) => {
            assert!(model, "hlc {text:?} accepted as {stamp:?}");
            assert_eq!(stamp.to_string(), text);
            let json = serde_json::to_string(&stamp).expect("an Hlc encodes");
            assert_eq!(serde_json::from_str::<Hlc>(&json).ok(), Some(stamp));
            let exhausted = stamp.counter == u32::MAX;
            let mut observer = HlcState::new(Hlc::default(), DEFAULT_MAX_DRIFT_MS);
            match observer.observe(stamp, stamp.wall_ms) {
                Ok(next) => assert!(next > stamp, "observe({stamp:?}) gave {next:?}"),
                Err(e) => assert!(exhausted && e.kind() == ErrorKind::ClockDrift, "{e}"),
            }
            let mut resumed = HlcState::new(stamp, DEFAULT_MAX_DRIFT_MS);
            match resumed.tick(stamp.wall_ms) {
                Ok(next) => assert!(next > stamp, "tick after {stamp:?} gave {next:?}"),
                Err(e) => assert!(exhausted && e.kind() == ErrorKind::ClockDrift, "{e}"),
            }
        }
        Err(e) => {
            assert!(!model, "hlc {text:?} refused: {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }
}

/// Versions and counts (`expected_version`, `Last-Event-ID`, `after`, `limit`) through
/// [`parse_u64`].
///
/// Laws: the same accepted language as [`cursor`]; every refusal is `InvalidInput` and names
/// the field; the value's decimal form parses back to it.
pub fn version(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_u64("version", text) {
        Ok(n) => {
            assert_eq!(Some(n), decimal_model(text), "version {text:?}");
            assert_eq!(parse_u64("version", &n.to_string()).ok(), Some(n));
        }
        Err(e) => {
            assert_eq!(decimal_model(text), None, "version {text:?} refused: {e}");
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.to_string().contains("version"), "{e}");
        }
    }
}

/// The strict decimal language: one or more ASCII digits whose value fits a `u64`.
fn decimal_model(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Rules files, as YAML and as JSON, through [`RulesDocument::parse`] and [`RulesLoader`].
///
/// Laws: parsing is deterministic; a document that parses builds (or is refused) the same way
/// through [`RulesLoader::build`] and [`RulesLoader::load_str`]; a built resolver keeps the
/// document's name; errors display.
pub fn rules_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loader = RulesLoader::default();
    for format in [Format::Yaml, Format::Json] {
        match RulesDocument::parse(text, format) {
            Ok(doc) => {
                let again = RulesDocument::parse(text, format);
                assert_eq!(
                    again.as_ref().ok(),
                    Some(&doc),
                    "{format:?} parse is not stable"
                );
                let _ = doc.rules();
                let built = loader.build(&doc);
                let loaded = loader.load_str(text, format);
                match (&built, &loaded) {
                    (Ok(b), Ok(l)) => {
                        assert_eq!(b.name(), doc.name.value);
                        assert_eq!(b.describe(), l.describe());
                    }
                    (Err(b), Err(l)) => assert_eq!(b.to_string(), l.to_string()),
                    _ => panic!(
                        "{format:?}: build gave {:?}, load_str gave {:?}",
                        built.as_ref().err(),
                        loaded.as_ref().err()
                    ),
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}

/// Server-Sent Events streams through [`sse::Parser`], and close frames through
/// [`sse::encode_close`].
///
/// The first input byte picks the frame bound, the second the chunk size; the rest is the
/// stream. Laws: the frames do not depend on how the stream is cut into chunks (fed whole, or
/// chunk by chunk, the parser either gives the same frames or fails both ways); a close frame
/// built from any code and message parses back to them.
pub fn sse_frames(data: &[u8]) {
    let [bound, chunk, stream @ ..] = data else {
        return;
    };
    let max_frame = 1 + usize::from(*bound) * 4;
    let chunk = 1 + usize::from(*chunk % 16);

    let whole = sse::Parser::new(max_frame).feed(stream);
    let mut parser = sse::Parser::new(max_frame);
    let mut pieces: Result<Vec<Frame>, _> = Ok(Vec::new());
    for piece in stream.chunks(chunk) {
        match parser.feed(piece) {
            Ok(frames) => {
                if let Ok(all) = &mut pieces {
                    all.extend(frames);
                }
            }
            Err(e) => {
                pieces = Err(e);
                break;
            }
        }
    }
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "frames differ with chunks of {chunk}"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "max_frame {max_frame}: fed whole {whole:?}, in chunks of {chunk} {:?}",
            pieces.as_ref().map(Vec::len)
        ),
    }

    let text = String::from_utf8_lossy(stream);
    let (code, message) = text.split_once('\0').unwrap_or((&text, ""));
    let frame = sse::encode_close(code, message);
    let frames = sse::Parser::new(frame.len())
        .feed(frame.as_bytes())
        .unwrap_or_else(|e| panic!("close frame {frame:?} is refused: {e}"));
    let [close] = frames.as_slice() else {
        panic!("close frame {frame:?} parsed as {frames:?}");
    };
    assert_eq!(close.event, "close");
    let body: Value = serde_json::from_str(&close.data).expect("close data is JSON");
    assert_eq!(body, json!({"code": code, "message": message}));
}
