//! The storage contracts: `EventStore` (a hub's tenant logs) and `NodeStore` (a node's state).
//!
//! One backend type usually implements both. Every method that changes state is atomic and
//! durable before it returns (as durable as the backend is), so dropping the future of a call
//! (cancellation) or crashing leaves either all of its effects or none. A call whose future was
//! dropped has finished, or never started, its effects before any later call on the store can
//! observe them.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{Event, StoredEvent};
use crate::hlc::Hlc;
use crate::id::{AggregateId, EventId, NodeId, TenantId};
use crate::outcome::AppendReport;
use crate::query::{Page, ReadRequest};
use crate::resolve::{Conflict, DecisionKind, ResolutionContext};
use crate::seq::Seq;

/// A hub's storage: one append-only, totally ordered log per tenant.
///
/// Append rules, per event in batch order (see DESIGN.md):
/// 1. same id stored with the same content ([`Event::same_content`]): `duplicate`; with other
///    content: `rejected` with `id_conflict`;
/// 2. an earlier event of the same batch on the same aggregate was not stored, or
///    `expected_version` is given and is not the aggregate's current version: `conflict` (so a
///    writer's events on one aggregate never overtake each other, checked or not);
/// 3. otherwise `accepted` with the next `seq` and aggregate version.
///
/// Readers never skip: once a read returned `next = N`, no event with `seq <= N` appears later.
#[async_trait]
pub trait EventStore: Send + Sync + Debug + 'static {
    /// Append a batch to `tenant`'s log; one result per event, in order.
    async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport>;

    /// Read events of `tenant` after a cursor (see [`Page`]).
    async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page>;

    /// The highest committed `seq` of `tenant` (`Seq::ZERO` when empty). O(1).
    async fn head(&self, tenant: &TenantId) -> Result<Seq>;

    /// The current version of an aggregate (0 when it has no events).
    async fn aggregate_version(&self, tenant: &TenantId, aggregate_id: &AggregateId)
    -> Result<u64>;

    /// Close the store; later calls fail with [`crate::ErrorKind::Closed`]. Idempotent.
    async fn close(&self) -> Result<()>;
}

/// A shared hub store.
pub type DynEventStore = Arc<dyn EventStore>;

/// A node's persistent state, in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// The node's id, once assigned.
    pub node_id: Option<NodeId>,
    /// The last clock stamp issued or observed.
    pub hlc: Hlc,
    /// Pull cursor: every hub event with `seq <= cursor` that the node's filter admits is in the
    /// confirmed log. Always a hub `seq`, never a local count.
    pub cursor: Seq,
    /// Number of pending (unconfirmed) local events.
    pub pending: u64,
    /// Number of entries in the review queue.
    pub reviews: u64,
    /// The highest `seq` in the confirmed log.
    pub confirmed_head: Seq,
}

/// A local event waiting to be accepted by the hub.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    /// Local order of the outbox; stays the same when the event is rebased.
    pub ordinal: u64,
    /// The event as it will be pushed.
    pub event: Event,
}

/// The local view of one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AggregateHead {
    /// Highest confirmed aggregate version.
    pub confirmed_version: u64,
    /// Number of pending events on the aggregate.
    pub pending: u64,
}

/// Id of a review-queue entry.
pub type ReviewId = String;

/// A conflict parked until the application decides.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ReviewEntry {
    /// Unique id.
    pub id: ReviewId,
    /// The conflict, with both sides.
    pub conflict: Conflict,
    /// Why it was parked.
    pub reason: String,
    /// The strategy that parked it.
    pub strategy: String,
    /// The rule that parked it, for rule-based resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// When, in milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// One resolver decision, kept for as long as the node's store.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Unique id (time-ordered).
    pub id: String,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
    /// What was decided.
    pub decision: DecisionKind,
    /// The strategy that decided.
    pub strategy: String,
    /// The rule that matched, for rule-based resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule group that decided, for grouped resolvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Why.
    pub reason: String,
    /// The event kind of the conflict (that of the last local event).
    #[serde(default)]
    pub kind: String,
    /// The `data` fields whose values differ between the two sides ([`Conflict::changed_fields`]).
    #[serde(default)]
    pub changed_fields: Vec<String>,
    /// Node, user, session and origin the resolution ran for.
    #[serde(default)]
    pub context: ResolutionContext,
    /// The conflict as the resolver saw it (the state before).
    pub conflict: Conflict,
    /// The events put back into the outbox (the state after; empty when dropped or parked).
    pub result: Vec<Event>,
    /// Who decided (`application` for a review resolved by the application).
    pub decided_by: String,
    /// How long the resolver took, in microseconds.
    pub duration_us: u64,
}

/// A page request over the audit trail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only decisions about this aggregate.
    pub aggregate_id: Option<AggregateId>,
    /// Records after this id (exclusive), for paging.
    pub after: Option<String>,
    /// At most this many (0 means 100).
    pub limit: usize,
}

/// Everything one step of the node engine changes, applied atomically by [`NodeStore::commit`].
///
/// Applied in this order: node id, clock, removals from the outbox, additions to the outbox,
/// confirmed events (an event confirmed leaves the outbox), cursor, review-queue additions, then
/// removals, audit trail.
///
/// Every backend refuses, with nothing applied: a different node id, a cursor moving backwards,
/// an id put in the outbox that is or becomes confirmed, removing an unknown review entry, a
/// review or audit id that already exists, a different event at an already confirmed `seq`,
/// and a confirmed event with `seq` or aggregate version 0. Stored events read back exactly as
/// written, `expected_version` included.
#[derive(Debug, Clone, Default)]
pub struct NodeWrite {
    /// Assign the node id; an already different id is an error.
    pub node_id: Option<NodeId>,
    /// The clock state; kept only if it is later than the stored one.
    pub hlc: Option<Hlc>,
    /// Remove these events from the outbox (unknown ids are ignored).
    pub remove_pending: Vec<EventId>,
    /// Add events to the outbox; an id already pending is replaced in place (same ordinal), an
    /// id already confirmed is an error.
    pub put_pending: Vec<Event>,
    /// Record hub-confirmed events; ids already confirmed are skipped, ids in the outbox leave it.
    pub confirm: Vec<StoredEvent>,
    /// Move the pull cursor; moving it backwards is an error.
    pub cursor: Option<Seq>,
    /// Add review-queue entries.
    pub put_reviews: Vec<ReviewEntry>,
    /// Remove review-queue entries (unknown ids are an error).
    pub remove_reviews: Vec<ReviewId>,
    /// Append audit records.
    pub audit: Vec<AuditRecord>,
}

impl NodeWrite {
    /// Whether the write changes nothing.
    pub fn is_empty(&self) -> bool {
        self.node_id.is_none()
            && self.hlc.is_none()
            && self.remove_pending.is_empty()
            && self.put_pending.is_empty()
            && self.confirm.is_empty()
            && self.cursor.is_none()
            && self.put_reviews.is_empty()
            && self.remove_reviews.is_empty()
            && self.audit.is_empty()
    }
}

/// What a [`NodeStore::commit`] changed that the caller cannot know in advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitSummary {
    /// Events of `confirm` that were new to the confirmed log (the rest were already there).
    pub newly_confirmed: u64,
}

/// A node's storage: confirmed events in hub order, the outbox, the pull cursor, node id and
/// clock, the review queue and the audit trail, all changed together by [`NodeStore::commit`].
#[async_trait]
pub trait NodeStore: Send + Sync + Debug + 'static {
    /// A snapshot of the node's state.
    async fn state(&self) -> Result<NodeState>;

    /// Apply `write` atomically and durably: all of it or none of it.
    async fn commit(&self, write: NodeWrite) -> Result<CommitSummary>;

    /// Pending events with `ordinal > after`, in outbox order, at most `limit` (0 gives none).
    async fn pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>>;

    /// Every pending event of one aggregate, in outbox order.
    async fn pending_for(&self, aggregate_id: &AggregateId) -> Result<Vec<PendingEvent>>;

    /// Confirmed events with `seq > after`, in `seq` order, at most `limit` (0 gives none).
    async fn confirmed(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>>;

    /// Confirmed version and pending count of one aggregate.
    async fn aggregate_head(&self, aggregate_id: &AggregateId) -> Result<AggregateHead>;

    /// Review-queue entries, oldest first, at most `limit` (0 gives none).
    async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>>;

    /// One review-queue entry.
    async fn review(&self, id: &str) -> Result<Option<ReviewEntry>>;

    /// Audit records, oldest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>>;

    /// Close the store; later calls fail with [`crate::ErrorKind::Closed`]. Idempotent.
    async fn close(&self) -> Result<()>;
}

/// A shared node store.
pub type DynNodeStore = Arc<dyn NodeStore>;

macro_rules! forward_stores {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: EventStore + ?Sized> EventStore for $ptr<T> {
            async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport> {
                (**self).append(tenant, events).await
            }
            async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
                (**self).read(tenant, request).await
            }
            async fn head(&self, tenant: &TenantId) -> Result<Seq> {
                (**self).head(tenant).await
            }
            async fn aggregate_version(
                &self,
                tenant: &TenantId,
                aggregate_id: &AggregateId,
            ) -> Result<u64> {
                (**self).aggregate_version(tenant, aggregate_id).await
            }
            async fn close(&self) -> Result<()> {
                (**self).close().await
            }
        }

        #[async_trait]
        impl<T: NodeStore + ?Sized> NodeStore for $ptr<T> {
            async fn state(&self) -> Result<NodeState> {
                (**self).state().await
            }
            async fn commit(&self, write: NodeWrite) -> Result<CommitSummary> {
                (**self).commit(write).await
            }
            async fn pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
                (**self).pending(after, limit).await
            }
            async fn pending_for(&self, aggregate_id: &AggregateId) -> Result<Vec<PendingEvent>> {
                (**self).pending_for(aggregate_id).await
            }
            async fn confirmed(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
                (**self).confirmed(after, limit).await
            }
            async fn aggregate_head(&self, aggregate_id: &AggregateId) -> Result<AggregateHead> {
                (**self).aggregate_head(aggregate_id).await
            }
            async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
                (**self).reviews(limit).await
            }
            async fn review(&self, id: &str) -> Result<Option<ReviewEntry>> {
                (**self).review(id).await
            }
            async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
                (**self).audit(query).await
            }
            async fn close(&self) -> Result<()> {
                (**self).close().await
            }
        }
    };
}

forward_stores!(Arc);
forward_stores!(Box);

/// Conveniences over [`EventStore`], for every store.
#[async_trait]
pub trait EventStoreExt: EventStore {
    /// Read a tenant's whole log, page by page. Memory grows with the log: for tests and tools.
    async fn read_all(&self, tenant: &TenantId) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        let mut after = Seq::ZERO;
        loop {
            let page = self
                .read(tenant, &ReadRequest::after(after, crate::MAX_PAGE_SIZE))
                .await?;
            out.extend(page.events);
            after = page.next;
            if !page.has_more {
                return Ok(out);
            }
        }
    }
}

impl<T: EventStore + ?Sized> EventStoreExt for T {}

/// Conveniences over [`NodeStore`], for every store.
#[async_trait]
pub trait NodeStoreExt: NodeStore {
    /// The whole confirmed log, in `seq` order. Memory grows with the log: for tests and tools.
    async fn confirmed_all(&self) -> Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        let mut after = Seq::ZERO;
        loop {
            let page = self.confirmed(after, crate::MAX_PAGE_SIZE).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = last.seq;
            out.extend(page);
        }
    }

    /// The whole outbox, in order. Memory grows with the outbox: for tests and tools.
    async fn pending_all(&self) -> Result<Vec<PendingEvent>> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.pending(after, crate::MAX_PAGE_SIZE).await?;
            let Some(last) = page.last() else {
                return Ok(out);
            };
            after = last.ordinal;
            out.extend(page);
        }
    }
}

impl<T: NodeStore + ?Sized> NodeStoreExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    // The traits must stay object-safe: they are used as `Arc<dyn Trait>` everywhere.
    #[allow(dead_code)]
    fn object_safe(
        _: &dyn EventStore,
        _: &dyn NodeStore,
        _: &dyn crate::Transport,
        _: &dyn crate::ConflictResolver,
        _: &dyn crate::Clock,
    ) {
    }

    #[test]
    fn empty_write_is_empty() {
        assert!(NodeWrite::default().is_empty());
        let w = NodeWrite {
            cursor: Some(Seq(1)),
            ..NodeWrite::default()
        };
        assert!(!w.is_empty());
    }
}
