//! What a sync reports: the observable state and the `SyncResult` every subscriber receives.

use std::time::Duration;

use serde::Serialize;
use synckit_types::{AggregateId, DecisionKind, ErrorSummary, Seq};

/// Where the node's sync engine is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// No sync has run yet.
    Idle,
    /// Sending the outbox.
    Pushing,
    /// Reading the hub's log.
    Pulling,
    /// Handing conflicts to the resolver.
    Resolving,
    /// The last sync finished.
    Completed,
    /// The last sync failed.
    Failed,
    /// The last sync was cancelled.
    Cancelled,
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    /// Finished; per-event problems, if any, are in `errors`.
    Completed,
    /// Stopped by an error (the last entry of `errors`).
    Failed,
    /// Stopped by `cancel`, `close` or shutdown.
    Cancelled,
}

/// One resolver decision taken during a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionSummary {
    /// The aggregate in conflict.
    pub aggregate_id: AggregateId,
    /// What was decided.
    pub decision: DecisionKind,
    /// The strategy that decided.
    pub strategy: String,
    /// The rule that matched, for rule-based resolvers.
    pub rule: Option<String>,
    /// Why.
    pub reason: String,
    /// Pending local events involved.
    pub local_events: usize,
    /// Remote events the writer did not know.
    pub remote_events: usize,
}

/// The result of one sync, push or pull.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncResult {
    /// How it ended.
    pub outcome: SyncOutcome,
    /// Local events now in the hub's log (accepted, or found already stored on retry).
    pub pushed: u64,
    /// Events new to the local confirmed log from pulled pages.
    pub pulled: u64,
    /// Aggregates in conflict (each counted once per round).
    pub conflicts: u64,
    /// The resolver's decisions.
    pub decisions: Vec<DecisionSummary>,
    /// Per-event rejections and the error that stopped the sync, if any.
    pub errors: Vec<ErrorSummary>,
    /// Wall time of the run.
    #[serde(rename = "duration_ms", serialize_with = "as_millis")]
    pub duration: Duration,
    /// The pull cursor after the run: every hub event up to it is local.
    pub local_head: Seq,
    /// The hub's head as last seen during the run.
    pub hub_head: Option<Seq>,
    /// Push, pull and resolve rounds run.
    pub rounds: u32,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Progress of the running sync, for progress bars. Reset when a run starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncProgress {
    /// Pending events when the run started.
    pub pending_at_start: u64,
    /// Events pushed so far (now in the hub's log).
    pub pushed: u64,
    /// Events pulled so far (new to the local log).
    pub pulled: u64,
    /// The pull cursor.
    pub cursor: Seq,
    /// The hub's head as last seen.
    pub hub_head: Option<Seq>,
}
