//! The event envelope, its builder, and the hub-stamped form stored in a log.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::id::{AggregateId, EventId, NodeId};
use crate::seq::Seq;

/// Longest event kind accepted, in bytes.
pub const MAX_KIND_LEN: usize = 128;

/// String-keyed JSON metadata of an event.
pub type Metadata = BTreeMap<String, Value>;

/// A domain event as its writer created it. The hub adds its position ([`StoredEvent`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// Unique, client-chosen; the idempotency key.
    pub id: EventId,
    /// The event type, e.g. `TaskRenamed`.
    pub kind: String,
    /// The entity the event belongs to.
    pub aggregate_id: AggregateId,
    /// The JSON payload.
    #[serde(default)]
    pub data: Value,
    /// String-keyed JSON metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// The node that created the event.
    pub origin: NodeId,
    /// The hybrid logical clock stamp from the origin.
    pub hlc: Hlc,
    /// Optimistic concurrency: the aggregate version the writer saw. `None` skips the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

impl Event {
    /// Start building an event of `kind` on `aggregate_id`.
    pub fn builder(kind: impl Into<String>, aggregate_id: impl Into<String>) -> EventBuilder {
        EventBuilder::new(kind, aggregate_id)
    }

    /// Check the fields a deserializer cannot: the kind's length and characters.
    pub fn validate(&self) -> Result<()> {
        validate_kind(&self.kind)
    }

    /// Whether `other` carries the same content as `self`: kind, aggregate, data and metadata.
    ///
    /// Used for idempotency: a stored id sent again with the same content is a duplicate, with
    /// other content it is rejected. Origin, clock stamp and expected version are not content:
    /// a hub may stamp them, and a node rebases the expected version of an event it re-sends.
    pub fn same_content(&self, other: &Event) -> bool {
        self.kind == other.kind
            && self.aggregate_id == other.aggregate_id
            && self.data == other.data
            && self.metadata == other.metadata
    }

    /// The total order used by last- and first-write-wins: clock stamp, then origin node id.
    pub fn order_key(&self) -> (Hlc, &NodeId) {
        (self.hlc, &self.origin)
    }
}

fn validate_kind(kind: &str) -> Result<()> {
    if kind.is_empty() {
        return Err(Error::invalid_input("event kind must not be empty"));
    }
    if kind.len() > MAX_KIND_LEN {
        return Err(Error::invalid_input(format!(
            "event kind is {} bytes long; the limit is {MAX_KIND_LEN}",
            kind.len()
        )));
    }
    if kind.chars().any(char::is_control) {
        return Err(Error::invalid_input(
            "event kind contains a control character",
        ));
    }
    Ok(())
}

/// What to send as an event's `expected_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// A node fills in its local head of the aggregate; outside a node this means no check.
    #[default]
    Auto,
    /// This exact version.
    Exactly(u64),
    /// No concurrency check (append-only streams).
    Unchecked,
}

/// Builds an [`Event`]; a node's `append` fills in what is left unset.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    id: Option<String>,
    kind: String,
    aggregate_id: String,
    data: Value,
    metadata: Metadata,
    origin: Option<String>,
    hlc: Option<Hlc>,
    expect: Expect,
}

impl EventBuilder {
    /// Start an event of `kind` on `aggregate_id`.
    pub fn new(kind: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        EventBuilder {
            id: None,
            kind: kind.into(),
            aggregate_id: aggregate_id.into(),
            data: Value::Null,
            metadata: Metadata::new(),
            origin: None,
            hlc: None,
            expect: Expect::Auto,
        }
    }

    /// Use this id instead of a fresh UUIDv7.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Set the JSON payload.
    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }

    /// Add one metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// Set the origin node (a node sets its own).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Set the clock stamp (a node stamps from its clock).
    pub fn hlc(mut self, hlc: Hlc) -> Self {
        self.hlc = Some(hlc);
        self
    }

    /// Require the aggregate to be at exactly `version` when the hub appends this event.
    pub fn expected_version(mut self, version: u64) -> Self {
        self.expect = Expect::Exactly(version);
        self
    }

    /// Append without a concurrency check.
    pub fn unchecked(mut self) -> Self {
        self.expect = Expect::Unchecked;
        self
    }

    /// Set the expectation directly.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// The expectation set so far.
    pub fn expectation(&self) -> Expect {
        self.expect
    }

    /// Whether an explicit id was set.
    pub fn has_id(&self) -> bool {
        self.id.is_some()
    }

    /// Whether an origin was set.
    pub fn has_origin(&self) -> bool {
        self.origin.is_some()
    }

    /// Whether a clock stamp was set.
    pub fn has_hlc(&self) -> bool {
        self.hlc.is_some()
    }

    /// Validate and build. Origin and clock stamp must be set; `Expect::Auto` becomes no check.
    pub fn build(self) -> Result<Event> {
        let origin = self
            .origin
            .ok_or_else(|| Error::invalid_input("event origin is not set"))?;
        let hlc = self
            .hlc
            .ok_or_else(|| Error::invalid_input("event clock stamp (hlc) is not set"))?;
        validate_kind(&self.kind)?;
        let expected_version = match self.expect {
            Expect::Exactly(v) => Some(v),
            Expect::Auto | Expect::Unchecked => None,
        };
        Ok(Event {
            id: match self.id {
                Some(id) => EventId::new(id)?,
                None => EventId::generate(),
            },
            kind: self.kind,
            aggregate_id: AggregateId::new(self.aggregate_id)?,
            data: self.data,
            metadata: self.metadata,
            origin: NodeId::new(origin)?,
            hlc,
            expected_version,
        })
    }
}

/// An event as stored in a hub log: the envelope plus its hub-assigned position.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// The event as its writer sent it.
    #[serde(flatten)]
    pub event: Event,
    /// Position in the tenant's global order.
    pub seq: Seq,
    /// Position within the aggregate (1 for its first event).
    pub aggregate_version: u64,
    /// Hub time of the append, milliseconds since the Unix epoch.
    pub recorded_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> EventBuilder {
        Event::builder("TaskRenamed", "task-1")
            .origin("n1")
            .hlc(Hlc::new(1, 0))
            .data(json!({"title": "a"}))
    }

    #[test]
    fn builder_validates() {
        assert!(base().build().is_ok());
        assert!(
            Event::builder("", "a")
                .origin("n")
                .hlc(Hlc::default())
                .build()
                .is_err()
        );
        assert!(
            Event::builder("K", "")
                .origin("n")
                .hlc(Hlc::default())
                .build()
                .is_err()
        );
        assert!(
            Event::builder("K", "a")
                .hlc(Hlc::default())
                .build()
                .is_err()
        );
        assert!(Event::builder("K", "a").origin("n").build().is_err());
        assert_eq!(
            base().expected_version(3).build().unwrap().expected_version,
            Some(3)
        );
        assert_eq!(base().unchecked().build().unwrap().expected_version, None);
    }

    #[test]
    fn same_content_ignores_stamps() {
        let a = base().id("e").build().unwrap();
        let mut b = a.clone();
        b.hlc = Hlc::new(9, 9);
        b.origin = NodeId::new("other").unwrap();
        b.expected_version = Some(4);
        assert!(a.same_content(&b));
        b.data = json!({"title": "b"});
        assert!(!a.same_content(&b));
    }

    #[test]
    fn stored_event_json_is_flat() {
        let e = StoredEvent {
            event: base().id("e").build().unwrap(),
            seq: Seq(7),
            aggregate_version: 2,
            recorded_at: 5,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["id"], "e");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["hlc"], "0000000000000001-00000000");
        let back: StoredEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
