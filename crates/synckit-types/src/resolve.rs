//! The conflict-resolver contract: a conflict, the context it is resolved in, and the decision.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{Event, StoredEvent};
use crate::id::{AggregateId, NodeId};

/// Pending local events that the hub refused because the aggregate moved on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conflict {
    /// The aggregate both sides wrote to.
    pub aggregate_id: AggregateId,
    /// The aggregate version the local events were written against.
    pub base_version: u64,
    /// The aggregate's version at the hub.
    pub current_version: u64,
    /// The node's pending events on the aggregate, in local order.
    pub local: Vec<Event>,
    /// The hub's events on the aggregate after `base_version` that the writer did not know.
    pub remote: Vec<StoredEvent>,
}

impl Conflict {
    /// The paths of top-level `data` fields whose values differ between the last local and the
    /// last remote event (sorted). Empty when either side is empty or neither carries an object.
    pub fn changed_fields(&self) -> Vec<String> {
        let (Some(local), Some(remote)) = (self.local.last(), self.remote.last()) else {
            return Vec::new();
        };
        let empty = serde_json::Map::new();
        let l = local.data.as_object().unwrap_or(&empty);
        let r = remote.event.data.as_object().unwrap_or(&empty);
        let mut fields: Vec<String> = l
            .keys()
            .chain(r.keys())
            .filter(|k| l.get(*k) != r.get(*k))
            .cloned()
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }
}

/// Who and what a resolution happens for; recorded in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ResolutionContext {
    /// The node resolving (the owner of the pending events).
    pub node_id: Option<NodeId>,
    /// The application user, when the application says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The application session, when the application says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Where the resolution was asked for, e.g. `sync`, `cli` or an application's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// What to do with the pending local events of a conflict.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", content = "events", rename_all = "snake_case")]
pub enum Decision {
    /// Rebase the local events on the hub's version and push them again.
    KeepLocal,
    /// Drop the local events; the hub's events stand. Recorded in the audit trail.
    KeepRemote,
    /// Replace the local events with these, rebased on the hub's version.
    Merge(Vec<Event>),
    /// Park the local events in the review queue until the application decides.
    Review,
}

impl Decision {
    /// The payload-free kind, for audit records and metrics.
    pub fn kind(&self) -> DecisionKind {
        match self {
            Decision::KeepLocal => DecisionKind::KeepLocal,
            Decision::KeepRemote => DecisionKind::KeepRemote,
            Decision::Merge(_) => DecisionKind::Merge,
            Decision::Review => DecisionKind::Review,
        }
    }
}

/// The kind of a [`Decision`], without its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// See [`Decision::KeepLocal`].
    KeepLocal,
    /// See [`Decision::KeepRemote`].
    KeepRemote,
    /// See [`Decision::Merge`].
    Merge,
    /// See [`Decision::Review`].
    Review,
}

impl DecisionKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::KeepLocal => "keep_local",
            DecisionKind::KeepRemote => "keep_remote",
            DecisionKind::Merge => "merge",
            DecisionKind::Review => "review",
        }
    }
}

/// A resolver's answer: the decision and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resolution {
    /// What to do.
    pub decision: Decision,
    /// The strategy that decided, e.g. `last_write_wins`.
    pub strategy: String,
    /// The rule that matched, for rule-based resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule group that decided (by a rule or its fallback), for grouped resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Human-readable reasons.
    pub reason: String,
}

impl Resolution {
    /// A decision by `strategy`, with no rule or group.
    pub fn new(decision: Decision, strategy: impl Into<String>, reason: impl Into<String>) -> Self {
        Resolution {
            decision,
            strategy: strategy.into(),
            rule: None,
            group: None,
            reason: reason.into(),
        }
    }
}

/// Decides conflicts. Must be deterministic: the same conflict gives the same decision on every
/// machine. A resolver error sends the conflict to the review queue; nothing is dropped.
#[async_trait]
pub trait ConflictResolver: Send + Sync + Debug + 'static {
    /// Decide what to do with `conflict`.
    async fn resolve(&self, conflict: &Conflict, context: &ResolutionContext)
    -> Result<Resolution>;
}

/// A shared resolver.
pub type DynResolver = Arc<dyn ConflictResolver>;

#[async_trait]
impl<T: ConflictResolver + ?Sized> ConflictResolver for Arc<T> {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> Result<Resolution> {
        (**self).resolve(conflict, context).await
    }
}

#[async_trait]
impl<T: ConflictResolver + ?Sized> ConflictResolver for Box<T> {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> Result<Resolution> {
        (**self).resolve(conflict, context).await
    }
}
