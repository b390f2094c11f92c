//! `MemoryStore`: the `EventStore` and `NodeStore` implementations over mutex-guarded maps.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use foldhash::HashMap;
use synckit_types::{
    AggregateHead, AggregateId, AppendReport, AuditQuery, AuditRecord, Clock, CommitSummary,
    DynClock, Error, Event, EventStore, NodeState, NodeStore, NodeWrite, Page, PendingEvent,
    ReadRequest, Result, ReviewEntry, Seq, StoredEvent, SystemClock, TenantId,
};

use crate::hub::TenantLog;
use crate::node::NodeData;

/// An in-memory hub and node store.
///
/// As an [`EventStore`] it keeps one log per tenant, fully isolated; as a [`NodeStore`] it keeps
/// one node's state. Both roles live in the same value and are closed together by `close` from
/// either trait. Share it as `Arc<MemoryStore>` (or as `DynEventStore` / `DynNodeStore`).
///
/// Where the `NodeStore` contract leaves a case open, this store refuses the whole write:
/// a review entry or audit record whose id already exists is a `Conflict`, as is confirming a
/// new event at a `seq` that holds another one; a confirmed event with `seq` or aggregate
/// version 0, or a malformed event, is `InvalidInput`. An audit query whose `after` id is not
/// in the trail is `NotFound`. Outbox ordinals start at 1.
pub struct MemoryStore {
    clock: DynClock,
    hub: Mutex<Hub>,
    node: Mutex<Node>,
}

#[derive(Default)]
struct Hub {
    closed: bool,
    tenants: HashMap<TenantId, TenantLog>,
}

#[derive(Default)]
struct Node {
    closed: bool,
    data: NodeData,
}

impl MemoryStore {
    /// An empty store that stamps `recorded_at` from the system clock.
    pub fn new() -> Self {
        MemoryStore::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that stamps `recorded_at` from `clock` (a `ManualClock` in tests).
    pub fn with_clock(clock: DynClock) -> Self {
        MemoryStore {
            clock,
            hub: Mutex::new(Hub::default()),
            node: Mutex::new(Node::default()),
        }
    }

    /// The hub maps, or why they cannot be used.
    fn hub(&self) -> Result<MutexGuard<'_, Hub>> {
        let hub = lock(&self.hub)?;
        if hub.closed {
            return Err(closed());
        }
        Ok(hub)
    }

    /// The node state, or why it cannot be used.
    fn node(&self) -> Result<MutexGuard<'_, Node>> {
        let node = lock(&self.node)?;
        if node.closed {
            return Err(closed());
        }
        Ok(node)
    }

    /// Close both roles; idempotent.
    fn close_all(&self) -> Result<()> {
        lock(&self.hub)?.closed = true;
        lock(&self.node)?.closed = true;
        Ok(())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must not block, nor deadlock when the caller holds the lock.
        let mut d = f.debug_struct("MemoryStore");
        d.field("clock", &self.clock);
        match self.hub.try_lock() {
            Ok(hub) => d
                .field("closed", &hub.closed)
                .field("tenants", &hub.tenants.len()),
            Err(_) => d.field("hub", &"<busy>"),
        };
        match self.node.try_lock() {
            Ok(node) => d.field("node", &node.data.state()),
            Err(_) => d.field("node", &"<busy>"),
        };
        d.finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| {
        Error::internal("memory store lock is poisoned: an earlier call panicked while holding it")
    })
}

fn closed() -> Error {
    Error::closed("memory store")
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport> {
        let mut hub = self.hub()?;
        let now_ms = self.clock.now_ms();
        if events.is_empty() {
            // Answer without creating a log for a tenant that never wrote.
            let head = hub.tenants.get(tenant).map_or(Seq::ZERO, TenantLog::head);
            return Ok(AppendReport {
                results: Vec::new(),
                head,
            });
        }
        hub.tenants
            .entry(tenant.clone())
            .or_default()
            .append(events, now_ms)
    }

    async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
        let hub = self.hub()?;
        request.validate()?;
        match hub.tenants.get(tenant) {
            Some(log) => log.read(request),
            // An unknown tenant reads as an empty log (an empty one does not allocate).
            None => TenantLog::default().read(request),
        }
    }

    async fn head(&self, tenant: &TenantId) -> Result<Seq> {
        let hub = self.hub()?;
        Ok(hub.tenants.get(tenant).map_or(Seq::ZERO, TenantLog::head))
    }

    async fn aggregate_version(
        &self,
        tenant: &TenantId,
        aggregate_id: &AggregateId,
    ) -> Result<u64> {
        let hub = self.hub()?;
        Ok(hub
            .tenants
            .get(tenant)
            .map_or(0, |log| log.aggregate_version(aggregate_id)))
    }

    async fn close(&self) -> Result<()> {
        self.close_all()
    }
}

#[async_trait]
impl NodeStore for MemoryStore {
    async fn state(&self) -> Result<NodeState> {
        Ok(self.node()?.data.state())
    }

    async fn commit(&self, write: NodeWrite) -> Result<CommitSummary> {
        self.node()?.data.commit(write)
    }

    async fn pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
        Ok(self.node()?.data.pending(after, limit))
    }

    async fn pending_for(&self, aggregate_id: &AggregateId) -> Result<Vec<PendingEvent>> {
        Ok(self.node()?.data.pending_for(aggregate_id))
    }

    async fn confirmed(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        Ok(self.node()?.data.confirmed(after, limit))
    }

    async fn aggregate_head(&self, aggregate_id: &AggregateId) -> Result<AggregateHead> {
        Ok(self.node()?.data.aggregate_head(aggregate_id))
    }

    async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
        Ok(self.node()?.data.reviews(limit))
    }

    async fn review(&self, id: &str) -> Result<Option<ReviewEntry>> {
        Ok(self.node()?.data.review(id))
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.node()?.data.audit(query)
    }

    async fn close(&self) -> Result<()> {
        self.close_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use synckit_types::{
        AppendOutcome, Conflict, DecisionKind, DynEventStore, DynNodeStore, ErrorKind, EventId,
        Hlc, ManualClock, NodeStoreExt,
    };

    fn event(id: &str, aggregate: &str) -> Event {
        Event::builder("TaskRenamed", aggregate)
            .id(id)
            .origin("n1")
            .hlc(Hlc::new(1, 0))
            .data(json!({ "id": id }))
            .build()
            .unwrap()
    }

    fn stored(id: &str, aggregate: &str, seq: u64, version: u64) -> StoredEvent {
        StoredEvent {
            event: event(id, aggregate),
            seq: Seq(seq),
            aggregate_version: version,
            recorded_at: 0,
        }
    }

    fn review(id: &str) -> ReviewEntry {
        ReviewEntry {
            id: id.to_owned(),
            conflict: conflict("a"),
            reason: "test".to_owned(),
            strategy: "manual".to_owned(),
            rule: None,
            created_at: 0,
        }
    }

    fn conflict(aggregate: &str) -> Conflict {
        Conflict {
            aggregate_id: AggregateId::new(aggregate).unwrap(),
            base_version: 0,
            current_version: 1,
            local: Vec::new(),
            remote: Vec::new(),
        }
    }

    fn audit(id: &str, aggregate: &str) -> AuditRecord {
        AuditRecord {
            id: id.to_owned(),
            at: 0,
            decision: DecisionKind::KeepRemote,
            strategy: "last_write_wins".to_owned(),
            rule: None,
            group: None,
            reason: "test".to_owned(),
            kind: String::new(),
            changed_fields: Vec::new(),
            context: Default::default(),
            conflict: conflict(aggregate),
            result: Vec::new(),
            decided_by: "resolver".to_owned(),
            duration_us: 1,
        }
    }

    fn tenant() -> TenantId {
        TenantId::default_tenant()
    }

    #[tokio::test]
    async fn recorded_at_comes_from_the_clock() {
        let clock = ManualClock::new(1_000);
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        store.append(&tenant(), &[event("e1", "a")]).await.unwrap();
        clock.advance(500);
        store.append(&tenant(), &[event("e2", "a")]).await.unwrap();
        let page = store
            .read(&tenant(), &ReadRequest::after(Seq::ZERO, 10))
            .await
            .unwrap();
        let stamps: Vec<u64> = page.events.iter().map(|e| e.recorded_at).collect();
        assert_eq!(stamps, [1_000, 1_500]);
        clock.advance(500);
        let report = store.append(&tenant(), &[event("e1", "a")]).await.unwrap();
        match report.results[0].outcome {
            AppendOutcome::Duplicate { recorded_at, .. } => assert_eq!(recorded_at, 1_000),
            ref other => panic!("expected a duplicate, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn shared_as_both_traits_and_closed_together() {
        let store = Arc::new(MemoryStore::new());
        let hub: DynEventStore = store.clone();
        let node: DynNodeStore = store;
        hub.close().await.unwrap();
        assert_eq!(node.state().await.unwrap_err().kind(), ErrorKind::Closed);
        node.close().await.unwrap();
        assert_eq!(
            hub.head(&tenant()).await.unwrap_err().kind(),
            ErrorKind::Closed
        );
    }

    #[tokio::test]
    async fn empty_batches_and_reads_create_no_tenant() {
        let store = MemoryStore::new();
        let report = store.append(&tenant(), &[]).await.unwrap();
        assert!(report.results.is_empty());
        assert_eq!(report.head, Seq::ZERO);
        store
            .read(&tenant(), &ReadRequest::after(Seq(3), 10))
            .await
            .unwrap();
        assert!(store.hub.lock().unwrap().tenants.is_empty());
    }

    #[tokio::test]
    async fn debug_is_a_summary_and_never_blocks() {
        let store = MemoryStore::new();
        store.append(&tenant(), &[event("e1", "a")]).await.unwrap();
        let text = format!("{store:?}");
        assert!(text.contains("tenants: 1"), "{text}");
        assert!(
            !text.contains("TaskRenamed"),
            "events are not dumped: {text}"
        );
        let _guard = store.hub.lock().unwrap();
        assert!(format!("{store:?}").contains("<busy>"));
    }

    #[tokio::test]
    async fn poisoned_lock_is_an_internal_error() {
        let store = Arc::new(MemoryStore::new());
        let poisoner = store.clone();
        let joined = std::thread::spawn(move || {
            let _hub = poisoner.hub.lock().unwrap();
            let _node = poisoner.node.lock().unwrap();
            panic!("poison the locks");
        })
        .join();
        assert!(joined.is_err());
        let err = store.head(&tenant()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        let err = store.state().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
        let err = EventStore::close(&*store).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal);
    }

    #[tokio::test]
    async fn ordinals_start_at_one_and_follow_aggregate_changes() {
        let store = MemoryStore::new();
        store
            .commit(NodeWrite {
                put_pending: vec![event("p1", "a"), event("p2", "a")],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let ordinals: Vec<u64> = store
            .pending_all()
            .await
            .unwrap()
            .iter()
            .map(|p| p.ordinal)
            .collect();
        assert_eq!(ordinals, [1, 2]);
        // Replacing p1 with an event on another aggregate moves it between indexes.
        store
            .commit(NodeWrite {
                put_pending: vec![event("p1", "b")],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let a = AggregateId::new("a").unwrap();
        let b = AggregateId::new("b").unwrap();
        assert_eq!(store.aggregate_head(&a).await.unwrap().pending, 1);
        assert_eq!(store.aggregate_head(&b).await.unwrap().pending, 1);
        assert_eq!(store.pending_for(&b).await.unwrap()[0].ordinal, 1);
        // Removed and put back in one write: removals come first, so it gets a new ordinal.
        store
            .commit(NodeWrite {
                remove_pending: vec![EventId::new("p1").unwrap()],
                put_pending: vec![event("p1", "b")],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        assert_eq!(store.pending_for(&b).await.unwrap()[0].ordinal, 3);
    }

    #[tokio::test]
    async fn confirm_rejects_clashing_and_malformed_positions() {
        let store = MemoryStore::new();
        store
            .commit(NodeWrite {
                confirm: vec![stored("e1", "a", 1, 1)],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let clash = store
            .commit(NodeWrite {
                confirm: vec![stored("e2", "a", 1, 2)],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(clash.kind(), ErrorKind::Conflict);
        let clash_in_write = store
            .commit(NodeWrite {
                confirm: vec![stored("e2", "a", 2, 2), stored("e3", "a", 2, 3)],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(clash_in_write.kind(), ErrorKind::Conflict);
        let zero = store
            .commit(NodeWrite {
                confirm: vec![stored("e2", "a", 0, 2)],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(zero.kind(), ErrorKind::InvalidInput);
        assert_eq!(store.confirmed_all().await.unwrap().len(), 1);
        // Confirming a known id again is skipped even when its seq differs.
        store
            .commit(NodeWrite {
                confirm: vec![stored("e1", "a", 9, 1)],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        assert_eq!(store.state().await.unwrap().confirmed_head, Seq(1));
    }

    #[tokio::test]
    async fn put_pending_validates_events() {
        let store = MemoryStore::new();
        let mut bad = event("p1", "a");
        bad.kind = String::new();
        let err = store
            .commit(NodeWrite {
                put_pending: vec![bad],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(store.state().await.unwrap().pending, 0);
    }

    #[tokio::test]
    async fn review_ids_are_unique_and_removable_in_the_write_that_adds_them() {
        let store = MemoryStore::new();
        store
            .commit(NodeWrite {
                put_reviews: vec![review("r1")],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let dup = store
            .commit(NodeWrite {
                put_reviews: vec![review("r1")],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::Conflict);
        let twice = store
            .commit(NodeWrite {
                remove_reviews: vec!["r1".to_owned(), "r1".to_owned()],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(twice.kind(), ErrorKind::NotFound);
        store
            .commit(NodeWrite {
                put_reviews: vec![review("r2")],
                remove_reviews: vec!["r2".to_owned()],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let ids: Vec<String> = store
            .reviews(10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["r1"]);
        assert_eq!(store.state().await.unwrap().reviews, 1);
    }

    #[tokio::test]
    async fn audit_ids_are_unique_and_unknown_cursors_fail() {
        let store = MemoryStore::new();
        store
            .commit(NodeWrite {
                audit: vec![audit("x1", "a"), audit("x2", "b")],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let dup = store
            .commit(NodeWrite {
                audit: vec![audit("x3", "a"), audit("x1", "a")],
                ..NodeWrite::default()
            })
            .await
            .unwrap_err();
        assert_eq!(dup.kind(), ErrorKind::Conflict);
        assert_eq!(store.audit(&AuditQuery::default()).await.unwrap().len(), 2);
        let unknown = store
            .audit(&AuditQuery {
                after: Some("nope".to_owned()),
                ..AuditQuery::default()
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        // `after` may name a record of another aggregate than the filter's.
        let page = store
            .audit(&AuditQuery {
                aggregate_id: Some(AggregateId::new("b").unwrap()),
                after: Some("x1".to_owned()),
                limit: 5,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, "x2");
    }

    #[tokio::test]
    async fn confirmed_version_is_the_highest_seen() {
        let store = MemoryStore::new();
        // A filtered node can confirm out of aggregate order across writes.
        store
            .commit(NodeWrite {
                confirm: vec![stored("e5", "a", 5, 3)],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        store
            .commit(NodeWrite {
                confirm: vec![stored("e2", "a", 2, 1)],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let head = store
            .aggregate_head(&AggregateId::new("a").unwrap())
            .await
            .unwrap();
        assert_eq!(head.confirmed_version, 3);
    }
}
