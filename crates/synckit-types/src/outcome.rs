//! Per-event outcomes of an append: accepted, duplicate, conflict or rejected.

use crate::error::ErrorSummary;
use crate::id::EventId;
use crate::seq::Seq;

/// Why the hub refused an event for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RejectCode {
    /// The id is already stored with different content.
    IdConflict,
    /// The event is malformed (bad kind, id or field).
    InvalidEvent,
    /// An id or aggregate id is empty, too long or holds a control character.
    InvalidId,
    /// The event is larger than a configured limit.
    TooLarge,
    /// The event's JSON nests deeper than the configured limit.
    TooDeep,
    /// The clock stamp is further in the future than the allowed drift.
    ClockDrift,
}

impl RejectCode {
    /// The snake_case wire code.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::IdConflict => "id_conflict",
            RejectCode::InvalidEvent => "invalid_event",
            RejectCode::InvalidId => "invalid_id",
            RejectCode::TooLarge => "too_large",
            RejectCode::TooDeep => "too_deep",
            RejectCode::ClockDrift => "clock_drift",
        }
    }
}

/// What happened to one event of an append.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AppendOutcome {
    /// Stored durably at `seq`.
    Accepted {
        /// Position in the tenant's order.
        seq: Seq,
        /// Position within the aggregate.
        aggregate_version: u64,
        /// Hub time of the append, milliseconds since the Unix epoch.
        recorded_at: u64,
    },
    /// Already stored with the same content; nothing changed.
    Duplicate {
        /// Position of the stored original.
        seq: Seq,
        /// Aggregate version of the stored original.
        aggregate_version: u64,
        /// Hub time of the original append.
        recorded_at: u64,
    },
    /// `expected_version` did not match; not stored.
    Conflict {
        /// The aggregate's version at the hub.
        current_version: u64,
    },
    /// Refused for good; not stored.
    Rejected {
        /// Why.
        code: RejectCode,
        /// Human detail.
        message: String,
    },
}

impl AppendOutcome {
    /// The position, for accepted and duplicate events.
    pub fn seq(&self) -> Option<Seq> {
        match self {
            AppendOutcome::Accepted { seq, .. } | AppendOutcome::Duplicate { seq, .. } => {
                Some(*seq)
            }
            _ => None,
        }
    }

    /// Whether the event is now in the hub's log (accepted now or before).
    pub fn is_stored(&self) -> bool {
        self.seq().is_some()
    }
}

/// The outcome of one event, with its id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendResult {
    /// The event's id.
    pub id: EventId,
    /// What happened to it.
    #[serde(flatten)]
    pub outcome: AppendOutcome,
}

impl AppendResult {
    /// An error summary for a rejected event, `None` otherwise.
    pub fn rejection(&self) -> Option<ErrorSummary> {
        match &self.outcome {
            AppendOutcome::Rejected { code, message } => Some(ErrorSummary {
                code: code.as_str().to_owned(),
                message: message.clone(),
                event_id: Some(self.id.to_string()),
            }),
            _ => None,
        }
    }
}

/// The answer to an append: one result per event in batch order, and the head after it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppendReport {
    /// One result per submitted event, in the order submitted.
    pub results: Vec<AppendResult>,
    /// The tenant's head after the append.
    pub head: Seq,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let r = AppendResult {
            id: EventId::new("e1").unwrap(),
            outcome: AppendOutcome::Conflict { current_version: 4 },
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"id": "e1", "status": "conflict", "current_version": 4})
        );
        let rejected = AppendResult {
            id: EventId::new("e2").unwrap(),
            outcome: AppendOutcome::Rejected {
                code: RejectCode::IdConflict,
                message: "x".into(),
            },
        };
        let v = serde_json::to_value(&rejected).unwrap();
        assert_eq!(v["code"], "id_conflict");
        assert_eq!(rejected.rejection().unwrap().code, "id_conflict");
    }
}
