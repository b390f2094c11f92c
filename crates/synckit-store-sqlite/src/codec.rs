//! The stored form of an event: a JSON body holding every field but the id, which has its own
//! column (and index) in every table that stores events.
//!
//! Encoding borrows the event's fields (no copies of ids or strings) into a buffer the caller
//! reuses, and writes the clock stamp with a small hex writer; decoding rebuilds the exact
//! `Event` that was written, `expected_version` included. A body that does not decode, or an id
//! column that is not a valid id, is reported as `Corrupted`.

use std::fmt::Display;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use synckit_types::{AggregateId, Error, ErrorKind, Event, EventId, Hlc, Metadata, NodeId, Result};

/// The body as written: borrowed fields.
#[derive(Serialize)]
struct BodyRef<'a> {
    kind: &'a str,
    aggregate_id: &'a str,
    data: &'a Value,
    #[serde(skip_serializing_if = "Metadata::is_empty")]
    metadata: &'a Metadata,
    origin: &'a str,
    #[serde(serialize_with = "hlc_text")]
    hlc: Hlc,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_version: Option<u64>,
}

/// The body as read back.
#[derive(Deserialize)]
struct Body {
    kind: String,
    aggregate_id: AggregateId,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    metadata: Metadata,
    origin: NodeId,
    hlc: Hlc,
    #[serde(default)]
    expected_version: Option<u64>,
}

/// Write `hlc` in its string form (`{:016x}-{:08x}`) without the formatting machinery.
fn hlc_text<S: Serializer>(hlc: &Hlc, serializer: S) -> std::result::Result<S::Ok, S::Error> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [b'-'; 25];
    let digit = |nibble: u64| HEX[usize::from(u8::try_from(nibble & 0xf).unwrap_or(0))];
    for (i, byte) in (0u32..).zip(text[..16].iter_mut()) {
        *byte = digit(hlc.wall_ms >> (60 - 4 * i));
    }
    for (i, byte) in (0u32..).zip(text[17..].iter_mut()) {
        *byte = digit(u64::from(hlc.counter) >> (28 - 4 * i));
    }
    // Only ASCII hex digits and '-' were written.
    serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
}

/// Encode `event` (all but its id) into `buf`, replacing what it held.
pub(crate) fn encode_event(event: &Event, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let body = BodyRef {
        kind: &event.kind,
        aggregate_id: event.aggregate_id.as_str(),
        data: &event.data,
        metadata: &event.metadata,
        origin: event.origin.as_str(),
        hlc: event.hlc,
        expected_version: event.expected_version,
    };
    serde_json::to_writer(&mut *buf, &body).map_err(|e| {
        Error::invalid_input(format!("event {} cannot be encoded as JSON: {e}", event.id))
            .with_source(e)
    })
}

/// Rebuild the event stored under `id` with `body`; `what` names the row in errors.
pub(crate) fn decode_event(what: impl Display, id: &str, body: &[u8]) -> Result<Event> {
    let id = EventId::new(id).map_err(|e| damaged(&what, "its id column is invalid", e))?;
    let body: Body = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::Corrupted,
            format!("{what} is damaged: its stored body does not decode: {e}"),
        )
        .with_source(e)
    })?;
    Ok(Event {
        id,
        kind: body.kind,
        aggregate_id: body.aggregate_id,
        data: body.data,
        metadata: body.metadata,
        origin: body.origin,
        hlc: body.hlc,
        expected_version: body.expected_version,
    })
}

fn damaged(what: &impl Display, why: &str, e: Error) -> Error {
    Error::new(
        ErrorKind::Corrupted,
        format!("{what} is damaged: {why}: {}", e.message()),
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(expected: Option<u64>, metadata: bool) -> Event {
        let mut b = Event::builder("TaskRenamed", "task-1")
            .id("e-1")
            .origin("node-a")
            .hlc(Hlc::new(0x0123_4567_89ab_cdef, 0xfedc_ba98))
            .data(json!({"title": "x\"y", "n": [1, 2.5, null]}));
        if metadata {
            b = b.metadata("trace", json!("abc"));
        }
        if let Some(v) = expected {
            b = b.expected_version(v);
        }
        b.build().unwrap()
    }

    #[test]
    fn round_trips_every_field() {
        let mut buf = Vec::new();
        for e in [
            event(None, false),
            event(Some(0), true),
            event(Some(7), false),
        ] {
            encode_event(&e, &mut buf).unwrap();
            let back = decode_event("row", e.id.as_str(), &buf).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn clock_is_written_in_its_string_form() {
        let mut buf = Vec::new();
        for hlc in [
            Hlc::new(0, 0),
            Hlc::new(u64::MAX, u32::MAX),
            Hlc::new(1_700_000_000_123, 42),
        ] {
            let mut e = event(None, false);
            e.hlc = hlc;
            encode_event(&e, &mut buf).unwrap();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            assert_eq!(v["hlc"], json!(hlc.to_string()));
            assert!(v.get("id").is_none(), "the id lives in its column");
        }
    }

    #[test]
    fn damage_is_corrupted() {
        let err = decode_event("event at seq 3", "e-1", b"{\"kind\":").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        assert!(err.to_string().contains("event at seq 3"), "{err}");
        let mut buf = Vec::new();
        encode_event(&event(None, false), &mut buf).unwrap();
        let err = decode_event("row", "", &buf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
    }
}
