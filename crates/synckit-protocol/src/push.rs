//! Push and read bodies: the wire event (origin and clock optional), per-event results, head.

use serde_json::Value;
use serde_json::value::RawValue;
use synckit_types::{
    AggregateId, AppendOutcome, AppendReport, AppendResult, Error, Event, EventId, Hlc, Metadata,
    NodeId, RejectCode, Result, Seq, StoredEvent,
};

use crate::MAX_PUSH_EVENTS;
use crate::error::ErrorObject;

/// An event as a client sends it. `origin` and `hlc` may be left out; the hub stamps them.
/// `expected_version` absent or `null` means no concurrency check.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WireEvent {
    /// Unique, client-chosen.
    pub id: EventId,
    /// Event type.
    pub kind: String,
    /// The entity.
    pub aggregate_id: AggregateId,
    /// Payload; `null` when absent.
    #[serde(default)]
    pub data: Value,
    /// Metadata; `{}` when absent.
    #[serde(default)]
    pub metadata: Metadata,
    /// Writer node; stamped by the hub when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<NodeId>,
    /// Writer clock; stamped by the hub when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
    /// The aggregate version the writer saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

impl WireEvent {
    /// The envelope, with `origin` and `hlc` filled in where the client left them out.
    pub fn into_event(self, origin: impl FnOnce() -> NodeId, hlc: impl FnOnce() -> Hlc) -> Event {
        Event {
            id: self.id,
            kind: self.kind,
            aggregate_id: self.aggregate_id,
            data: self.data,
            metadata: self.metadata,
            origin: self.origin.unwrap_or_else(origin),
            hlc: self.hlc.unwrap_or_else(hlc),
            expected_version: self.expected_version,
        }
    }
}

impl From<&Event> for WireEvent {
    fn from(e: &Event) -> WireEvent {
        WireEvent {
            id: e.id.clone(),
            kind: e.kind.clone(),
            aggregate_id: e.aggregate_id.clone(),
            data: e.data.clone(),
            metadata: e.metadata.clone(),
            origin: Some(e.origin.clone()),
            hlc: Some(e.hlc),
            expected_version: e.expected_version,
        }
    }
}

/// `POST /v1/events` body as a client builds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PushRequest<'a> {
    /// The events, in order.
    pub events: &'a [Event],
}

/// One event of a decoded push body.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodedEvent {
    /// A well-formed event.
    Valid(WireEvent),
    /// An event with a usable id but an invalid field; it is answered `rejected` with `code`,
    /// and the rest of the batch goes on.
    Invalid {
        /// The id as sent.
        id: String,
        /// Why: `invalid_id`, `invalid_event`, `too_large` or `too_deep`.
        code: RejectCode,
        /// What is wrong.
        message: String,
    },
}

/// Per-event limits of [`decode_push_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushLimits {
    /// Bytes of one event's `metadata` as JSON (default 64 KiB); larger is `too_large`.
    pub max_metadata_bytes: usize,
    /// Nesting depth of one event, the event object being depth 1 (default 32); deeper is
    /// `too_deep`.
    pub max_depth: usize,
}

impl Default for PushLimits {
    fn default() -> PushLimits {
        PushLimits {
            max_metadata_bytes: 64 << 10,
            max_depth: 32,
        }
    }
}

/// [`decode_push_with`] under the default [`PushLimits`].
pub fn decode_push(body: &[u8]) -> Result<Vec<DecodedEvent>> {
    decode_push_with(body, &PushLimits::default())
}

/// Decode a push body: `{"events": [...]}` with 1 to 1,000 events.
///
/// A body that is not JSON, not of that shape, or holds an event without a string `id` is an
/// error for the whole request (400). An event with an id but another bad field, or past one
/// of `limits`, is [`DecodedEvent::Invalid`] and is answered per event.
pub fn decode_push_with(body: &[u8], limits: &PushLimits) -> Result<Vec<DecodedEvent>> {
    // Each event is kept as its raw text and decoded on its own, so one bad event is answered
    // alone, without building a `Value` tree of the whole body first.
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let body: Body<'_> = serde_json::from_slice(body).map_err(|e| {
        Error::invalid_input(format!("push body is not {{\"events\": [...]}}: {e}"))
    })?;
    if body.events.len() > MAX_PUSH_EVENTS {
        return Err(Error::new(
            synckit_types::ErrorKind::LimitExceeded,
            format!(
                "a push holds {} events; the limit is {MAX_PUSH_EVENTS}",
                body.events.len()
            ),
        ));
    }
    body.events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| decode_event(index, raw.get(), limits))
        .collect()
}

fn decode_event(index: usize, raw: &str, limits: &PushLimits) -> Result<DecodedEvent> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: Value,
        #[serde(default)]
        aggregate_id: Value,
    }
    // Only a bad event pays for a second look, to find its id.
    let invalid = |code: RejectCode, message: String| match serde_json::from_str::<IdOnly>(raw) {
        Ok(IdOnly {
            id: Value::String(id),
            aggregate_id,
        }) => {
            let bad_id = EventId::new(id.as_str()).is_err()
                || aggregate_id
                    .as_str()
                    .is_some_and(|a| AggregateId::new(a).is_err());
            let code = if bad_id { RejectCode::InvalidId } else { code };
            Ok(DecodedEvent::Invalid { id, code, message })
        }
        _ => Err(Error::invalid_input(format!(
            "event {index} of the push has no string \"id\""
        ))),
    };
    let depth = json_depth(raw.as_bytes());
    if depth > limits.max_depth {
        return invalid(
            RejectCode::TooDeep,
            format!(
                "the event nests {depth} levels deep; the limit is {}",
                limits.max_depth
            ),
        );
    }
    let event = match serde_json::from_str::<WireEvent>(raw) {
        Ok(event) => event,
        Err(e) => return invalid(RejectCode::InvalidEvent, e.to_string()),
    };
    // Only an event larger than the metadata limit can hold metadata past it.
    if raw.len() > limits.max_metadata_bytes {
        let size = serde_json::to_vec(&event.metadata).map_or(usize::MAX, |m| m.len());
        if size > limits.max_metadata_bytes {
            return Ok(DecodedEvent::Invalid {
                id: event.id.as_str().to_owned(),
                code: RejectCode::TooLarge,
                message: format!(
                    "metadata is {size} bytes; the limit is {}",
                    limits.max_metadata_bytes
                ),
            });
        }
    }
    Ok(match event_check(&event) {
        Ok(()) => DecodedEvent::Valid(event),
        Err(message) => DecodedEvent::Invalid {
            id: event.id.as_str().to_owned(),
            code: RejectCode::InvalidEvent,
            message,
        },
    })
}

/// The deepest nesting of arrays and objects in JSON text (strings are skipped).
///
/// Strings, most of an event's bytes, are crossed with `memchr` to their next quote or
/// backslash rather than byte by byte.
pub fn json_depth(text: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut at = 0;
    while let Some(&b) = text.get(at) {
        at += 1;
        match b {
            b'"' => loop {
                let rest = text.get(at..).unwrap_or_default();
                let Some(found) = memchr::memchr2(b'"', b'\\', rest) else {
                    return deepest; // an unterminated string: nothing more to count
                };
                at += found + 1;
                if rest.get(found) == Some(&b'"') {
                    break;
                }
                at += 1; // the escaped byte
            },
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn event_check(event: &WireEvent) -> std::result::Result<(), String> {
    if event.kind.is_empty() || event.kind.len() > synckit_types::MAX_KIND_LEN {
        return Err(format!(
            "kind must be 1 to {} bytes",
            synckit_types::MAX_KIND_LEN
        ));
    }
    if event.kind.chars().any(char::is_control) {
        return Err("kind contains a control character".to_owned());
    }
    Ok(())
}

/// Status of one pushed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored now.
    Accepted,
    /// Stored before, same content.
    Duplicate,
    /// `expected_version` did not match.
    Conflict,
    /// Refused for good.
    Rejected,
}

/// One entry of a push answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WireResult {
    /// The event id as sent.
    pub id: String,
    /// What happened.
    pub status: Status,
    /// Position, for accepted and duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<Seq>,
    /// Aggregate version, for accepted and duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate_version: Option<u64>,
    /// Hub time of the append, for accepted and duplicate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<u64>,
    /// The aggregate's version, for conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// Why, for rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObject>,
}

impl WireResult {
    /// The answer for an event the hub refused before the store saw it.
    pub fn invalid(id: String, code: RejectCode, message: String) -> WireResult {
        WireResult {
            id,
            status: Status::Rejected,
            seq: None,
            aggregate_version: None,
            recorded_at: None,
            current_version: None,
            error: Some(ErrorObject {
                code: code.as_str().to_owned(),
                message,
            }),
        }
    }

    /// Back to the typed result, checking that the fields of the status are present.
    pub fn into_append_result(self) -> Result<AppendResult> {
        let missing = |field: &str| {
            Error::protocol(format!(
                "{:?} result for {} lacks {field}",
                self.status, self.id
            ))
        };
        let outcome = match self.status {
            Status::Accepted | Status::Duplicate => {
                let seq = self.seq.ok_or_else(|| missing("seq"))?;
                let aggregate_version = self
                    .aggregate_version
                    .ok_or_else(|| missing("aggregate_version"))?;
                let recorded_at = self.recorded_at.unwrap_or(0);
                if self.status == Status::Accepted {
                    AppendOutcome::Accepted {
                        seq,
                        aggregate_version,
                        recorded_at,
                    }
                } else {
                    AppendOutcome::Duplicate {
                        seq,
                        aggregate_version,
                        recorded_at,
                    }
                }
            }
            Status::Conflict => AppendOutcome::Conflict {
                current_version: self
                    .current_version
                    .ok_or_else(|| missing("current_version"))?,
            },
            Status::Rejected => {
                let error = self.error.clone().ok_or_else(|| missing("error"))?;
                let code = serde_json::from_value(Value::String(error.code.clone()))
                    .unwrap_or(RejectCode::InvalidEvent);
                AppendOutcome::Rejected {
                    code,
                    message: format!("{}: {}", error.code, error.message),
                }
            }
        };
        Ok(AppendResult {
            id: EventId::new(self.id).map_err(|e| e.context("hub answered for a malformed id"))?,
            outcome,
        })
    }
}

impl From<&AppendResult> for WireResult {
    fn from(r: &AppendResult) -> WireResult {
        let mut out = WireResult {
            id: r.id.to_string(),
            status: Status::Rejected,
            seq: None,
            aggregate_version: None,
            recorded_at: None,
            current_version: None,
            error: None,
        };
        match &r.outcome {
            AppendOutcome::Accepted {
                seq,
                aggregate_version,
                recorded_at,
            }
            | AppendOutcome::Duplicate {
                seq,
                aggregate_version,
                recorded_at,
            } => {
                out.status = if matches!(r.outcome, AppendOutcome::Accepted { .. }) {
                    Status::Accepted
                } else {
                    Status::Duplicate
                };
                out.seq = Some(*seq);
                out.aggregate_version = Some(*aggregate_version);
                out.recorded_at = Some(*recorded_at);
            }
            AppendOutcome::Conflict { current_version } => {
                out.status = Status::Conflict;
                out.current_version = Some(*current_version);
            }
            AppendOutcome::Rejected { code, message } => {
                out.error = Some(ErrorObject {
                    code: code.as_str().to_owned(),
                    message: message.clone(),
                });
            }
        }
        out
    }
}

/// `POST /v1/events` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushResponse {
    /// One result per event, in the order sent.
    pub results: Vec<WireResult>,
    /// The tenant's head after the push.
    pub head: Seq,
}

impl PushResponse {
    /// Back to the typed report (for clients).
    pub fn into_report(self) -> Result<AppendReport> {
        Ok(AppendReport {
            results: self
                .results
                .into_iter()
                .map(WireResult::into_append_result)
                .collect::<Result<_>>()?,
            head: self.head,
        })
    }
}

/// `GET /v1/head` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeadResponse {
    /// The tenant's highest committed seq.
    pub head: Seq,
}

/// `GET /v1/aggregates/{id}` answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AggregateResponse {
    /// The aggregate.
    pub aggregate_id: AggregateId,
    /// Its current version.
    pub version: u64,
    /// Its events, in order.
    pub events: Vec<StoredEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// `text` with the contents of its strings taken out, walked byte by byte: what
    /// `json_depth` sees once it has skipped them.
    fn strings_emptied(text: &[u8]) -> Vec<u8> {
        let (mut out, mut in_string, mut escaped) = (Vec::new(), false, false);
        for &b in text {
            if !in_string {
                in_string = b == b'"';
                out.push(b);
            } else if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                out.push(b);
            }
        }
        out
    }

    #[test]
    fn depth_skips_strings_and_escapes() {
        assert_eq!(json_depth(br#"{"a":[1,{"b":"[[{{"}]}"#), 3);
        assert_eq!(json_depth(br#"{"a":"\"[[","b":"\\"}"#), 1);
        assert_eq!(json_depth(br#"[[["unterminated [[["#), 3);
        assert_eq!(json_depth(br#"["ends in a backslash \"#), 1);
        assert_eq!(json_depth(b""), 0);
    }

    proptest! {
        /// Bytes drawn mostly from JSON's structural characters, quotes and backslashes.
        #[test]
        fn depth_agrees_with_the_byte_loop(
            text in proptest::collection::vec(
                prop_oneof![
                    Just(b'"'), Just(b'\\'), Just(b'['), Just(b']'), Just(b'{'), Just(b'}'),
                    Just(b'x'), any::<u8>(),
                ],
                0..200,
            )
        ) {
            prop_assert_eq!(json_depth(&text), json_depth(&strings_emptied(&text)));
        }
    }

    #[test]
    fn push_bodies_decode_per_event() {
        let body = json!({"events": [
            {"id": "a", "kind": "K", "aggregate_id": "x"},
            {"id": "b", "kind": "", "aggregate_id": "x"},
            {"id": "c", "kind": "K"},
            {"id": "d", "kind": "K", "aggregate_id": "x", "expected_version": null,
             "hlc": "0000000000000001-00000000", "origin": "n"},
        ]});
        let decoded = decode_push(body.to_string().as_bytes()).unwrap();
        assert!(
            matches!(&decoded[0], DecodedEvent::Valid(e) if e.data.is_null() && e.metadata.is_empty())
        );
        assert!(matches!(&decoded[1], DecodedEvent::Invalid { id, .. } if id == "b"));
        assert!(matches!(&decoded[2], DecodedEvent::Invalid { id, .. } if id == "c"));
        assert!(matches!(&decoded[3], DecodedEvent::Valid(e) if e.expected_version.is_none()));
    }

    #[test]
    fn per_event_limits_have_their_own_codes() {
        let limits = PushLimits {
            max_metadata_bytes: 100,
            max_depth: 4,
        };
        let body = json!({"events": [
            {"id": "ok", "kind": "K", "aggregate_id": "x", "data": {"a": {"b": [1]}}},
            {"id": "deep", "kind": "K", "aggregate_id": "x", "data": {"a": {"b": [[1]]}}},
            {"id": "meta", "kind": "K", "aggregate_id": "x", "metadata": {"m": "m".repeat(100)}},
            {"id": "bad\u{1}", "kind": "K", "aggregate_id": "x"},
            {"id": "agg", "kind": "K", "aggregate_id": "\n"},
            {"id": "str", "kind": "K", "aggregate_id": "x", "data": "[[[[[[{{{{"},
        ]});
        let decoded = decode_push_with(body.to_string().as_bytes(), &limits).unwrap();
        let codes: Vec<Option<RejectCode>> = decoded
            .iter()
            .map(|d| match d {
                DecodedEvent::Valid(_) => None,
                DecodedEvent::Invalid { code, .. } => Some(*code),
            })
            .collect();
        assert_eq!(
            codes,
            [
                None,
                Some(RejectCode::TooDeep),
                Some(RejectCode::TooLarge),
                Some(RejectCode::InvalidId),
                Some(RejectCode::InvalidId),
                None,
            ]
        );
        assert_eq!(json_depth(br#"{"a": "\"[[[", "b": [{}]}"#), 3);
    }

    #[test]
    fn bad_push_bodies_fail_whole() {
        for body in [
            "",
            "{",
            "[]",
            "{\"events\": {}}",
            "{\"events\": [{\"kind\": \"K\"}]}",
            "{\"events\": [{\"id\": 5}]}",
        ] {
            assert!(decode_push(body.as_bytes()).is_err(), "{body:?}");
        }
        let many: Vec<_> = (0..1001)
            .map(|i| json!({"id": i.to_string(), "kind": "K", "aggregate_id": "a"}))
            .collect();
        let err = decode_push(json!({"events": many}).to_string().as_bytes()).unwrap_err();
        assert_eq!(err.kind(), synckit_types::ErrorKind::LimitExceeded);
    }

    #[test]
    fn results_round_trip() {
        let results = [
            AppendOutcome::Accepted {
                seq: Seq(3),
                aggregate_version: 1,
                recorded_at: 9,
            },
            AppendOutcome::Duplicate {
                seq: Seq(2),
                aggregate_version: 1,
                recorded_at: 8,
            },
            AppendOutcome::Conflict { current_version: 4 },
            AppendOutcome::Rejected {
                code: RejectCode::IdConflict,
                message: "m".into(),
            },
        ];
        for outcome in results {
            let r = AppendResult {
                id: EventId::new("e").unwrap(),
                outcome,
            };
            let wire = WireResult::from(&r);
            let json = serde_json::to_string(&wire).unwrap();
            let back: WireResult = serde_json::from_str(&json).unwrap();
            let typed = back.into_append_result().unwrap();
            assert_eq!(typed.id, r.id);
            assert_eq!(
                std::mem::discriminant(&typed.outcome),
                std::mem::discriminant(&r.outcome)
            );
        }
        let v = serde_json::to_value(WireResult::invalid(
            "x".into(),
            RejectCode::InvalidEvent,
            "bad".into(),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"id": "x", "status": "rejected", "error": {"code": "invalid_event", "message": "bad"}})
        );
    }

    #[test]
    fn incomplete_results_are_protocol_errors() {
        let r = WireResult {
            id: "a".into(),
            status: Status::Accepted,
            seq: None,
            aggregate_version: None,
            recorded_at: None,
            current_version: None,
            error: None,
        };
        assert_eq!(
            r.into_append_result().unwrap_err().kind(),
            synckit_types::ErrorKind::Protocol
        );
    }
}
