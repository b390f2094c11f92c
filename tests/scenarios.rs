//! The sync scenarios of the foundation issue, each on an in-process hub with paused time.
#![allow(clippy::unwrap_used)]

use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use synckit::prelude::*;
use synckit::resolve::{AdditiveMerge, FirstWriteWins, ManualReview};
use synckit::{AuditQuery, DecisionKind, DynResolver, NodeStoreExt, SyncOutcome};
use synckit_tests::{Probe, TestHub, TestNode, node, node_with, quick_retry};

fn edit(aggregate: &str, title: &str) -> EventBuilder {
    Event::builder("Renamed", aggregate).data(json!({ "title": title }))
}

async fn assert_converged(hub: &TestHub, nodes: &[&TestNode]) {
    let log = hub.log().await;
    for n in nodes {
        assert_eq!(
            n.store.confirmed_all().await.unwrap(),
            log,
            "{} diverged",
            n.node.id()
        );
        assert_eq!(
            n.store.state().await.unwrap().pending,
            0,
            "{} has pending",
            n.node.id()
        );
    }
}

fn last_title(log: &[StoredEvent], aggregate: &str) -> String {
    log.iter()
        .rev()
        .find(|e| e.event.aggregate_id.as_str() == aggregate)
        .map(|e| e.event.data["title"].as_str().unwrap().to_owned())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn first_sync_against_an_empty_hub() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let r = a.node.sync().await.unwrap();
    assert_eq!(r.outcome, SyncOutcome::Completed);
    assert_eq!((r.pushed, r.pulled, r.conflicts), (0, 0, 0));
    assert_eq!(r.local_head, Seq(0));
    assert_eq!(r.hub_head, Some(Seq(0)));
    assert!(r.errors.is_empty());
}

#[tokio::test(start_paused = true)]
async fn disjoint_offline_writes_converge() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let b = node(&hub, "b", 1_000).await;
    for i in 0..3 {
        a.node.append(edit(&format!("a-{i}"), "x")).await.unwrap();
    }
    for i in 0..2 {
        b.node.append(edit(&format!("b-{i}"), "y")).await.unwrap();
    }
    assert_eq!(a.node.sync().await.unwrap().pushed, 3);
    let rb = b.node.sync().await.unwrap();
    assert_eq!((rb.pushed, rb.pulled, rb.conflicts), (2, 3, 0));
    assert_eq!(a.node.sync().await.unwrap().pulled, 2);
    assert_eq!(hub.log().await.len(), 5);
    assert_converged(&hub, &[&a, &b]).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_that_only_pulled_pushes_nothing() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let b = node(&hub, "b", 1_000).await;
    a.node.append(edit("t", "x")).await.unwrap();
    a.node.sync().await.unwrap();
    let first = b.node.sync().await.unwrap();
    assert_eq!((first.pushed, first.pulled), (0, 1));
    let second = b.node.sync().await.unwrap();
    assert_eq!((second.pushed, second.pulled), (0, 0));
    assert_eq!(hub.log().await.len(), 1, "no echo of pulled events");
    assert_converged(&hub, &[&a, &b]).await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_response_retried_gives_no_duplicate() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    a.node.append(edit("t", "x")).await.unwrap();
    a.node.append(edit("t", "y")).await.unwrap();
    a.transport.faults().lose_next_responses(1);
    let r = a.node.sync().await.unwrap();
    assert_eq!(r.pushed, 2, "the retry finds both events stored");
    assert_eq!(hub.log().await.len(), 2);
    assert_converged(&hub, &[&a]).await;
    // Even a whole failed sync (every retry lost) leaves nothing twice.
    a.node.append(edit("t", "z")).await.unwrap();
    a.transport.faults().lose_next_responses(3);
    assert!(a.node.sync().await.is_err());
    a.node.sync().await.unwrap();
    assert_eq!(hub.log().await.len(), 3);
    assert_converged(&hub, &[&a]).await;
}

#[tokio::test(start_paused = true)]
async fn same_id_with_different_content_is_rejected_reported_and_not_stored() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let b = node(&hub, "b", 1_000).await;
    b.node
        .append(edit("t", "original").id("shared-id"))
        .await
        .unwrap();
    b.node.sync().await.unwrap();
    a.node
        .append(edit("other", "impostor").id("shared-id"))
        .await
        .unwrap();
    a.node.append(edit("fine", "ok")).await.unwrap();
    let r = a.node.sync().await.unwrap();
    assert_eq!(
        r.pushed, 1,
        "the other event of the batch still goes through"
    );
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].code, "id_conflict");
    assert_eq!(r.errors[0].event_id.as_deref(), Some("shared-id"));
    let log = hub.log().await;
    let shared: Vec<_> = log
        .iter()
        .filter(|e| e.event.id.as_str() == "shared-id")
        .collect();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].event.data["title"], "original");
    // Not lost: parked for the application, with the reason.
    let reviews = a.node.reviews(10).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert!(
        reviews[0].reason.contains("id_conflict"),
        "{}",
        reviews[0].reason
    );
    assert_eq!(reviews[0].conflict.local[0].data["title"], "impostor");
}

#[tokio::test(start_paused = true)]
async fn a_backlog_of_2500_is_pulled_whole_in_pages_of_100() {
    let hub = TestHub::new();
    let writer = node(&hub, "w", 1_000).await;
    let events: Vec<_> = (0..2_500)
        .map(|i| edit(&format!("agg-{}", i % 50), &i.to_string()).unchecked())
        .collect();
    writer.node.append_batch(events).await.unwrap();
    writer.node.push().await.unwrap();
    assert_eq!(hub.log().await.len(), 2_500);

    let probe = Arc::new(Probe::new(hub.transport(), Duration::ZERO));
    let reader = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .transport(probe.clone())
        .config(Config::builder().page_size(100).build().unwrap())
        .open()
        .await
        .unwrap();
    let r = reader.sync().await.unwrap();
    assert_eq!(r.pulled, 2_500);
    assert_eq!(r.local_head, Seq(2_500));
    assert_eq!(*probe.pulls.lock().unwrap(), 25, "25 pages of 100");
    assert_eq!(
        reader.store().confirmed_all().await.unwrap(),
        hub.log().await
    );
}

/// a and b share a task, then edit it offline, a's clock advanced by `a_ms` and b's by `b_ms`
/// (the hybrid clocks already agree on the shared history, so these decide who wrote last).
async fn concurrent_edit(
    resolver: DynResolver,
    a_ms: u64,
    b_ms: u64,
) -> (TestHub, TestNode, TestNode) {
    let hub = TestHub::new();
    let config = Config {
        retry: quick_retry(),
        ..Config::default()
    };
    let a = node_with(&hub, "a", resolver.clone(), config.clone(), 1_000).await;
    let b = node_with(&hub, "b", resolver, config, 1_000).await;
    a.node.append(edit("task", "created")).await.unwrap();
    a.node.sync().await.unwrap();
    b.node.sync().await.unwrap();
    a.clock.advance(a_ms);
    b.clock.advance(b_ms);
    // Both edit offline; a syncs first, so b's edit conflicts.
    a.node.append(edit("task", "by a")).await.unwrap();
    b.node.append(edit("task", "by b")).await.unwrap();
    a.node.sync().await.unwrap();
    let r = b.node.sync().await.unwrap();
    assert_eq!(r.conflicts, 1);
    assert_eq!(r.decisions.len(), 1);
    a.node.sync().await.unwrap();
    assert_converged(&hub, &[&a, &b]).await;
    (hub, a, b)
}

async fn audit(n: &TestNode) -> Vec<synckit::AuditRecord> {
    n.node.audit(&AuditQuery::default()).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn last_write_wins_keeps_the_later_edit_on_both_nodes() {
    // b wrote later: b's edit is rebased after a's and is the final state.
    let (hub, _, b) = concurrent_edit(Arc::new(LastWriteWins), 1_000, 5_000).await;
    assert_eq!(last_title(&hub.log().await, "task"), "by b");
    let records = audit(&b).await;
    assert_eq!(records[0].decision, DecisionKind::KeepLocal);
    assert_eq!(
        records[0].conflict.remote[0].event.data["title"], "by a",
        "loser recorded"
    );

    // b wrote earlier: b's edit loses, is dropped, and is in the audit trail.
    let (hub, _, b) = concurrent_edit(Arc::new(LastWriteWins), 5_000, 1_000).await;
    let log = hub.log().await;
    assert_eq!(last_title(&log, "task"), "by a");
    assert!(log.iter().all(|e| e.event.data["title"] != "by b"));
    let records = audit(&b).await;
    assert_eq!(records[0].decision, DecisionKind::KeepRemote);
    assert_eq!(
        records[0].conflict.local[0].data["title"], "by b",
        "loser recorded"
    );
    assert_eq!(records[0].strategy, "last_write_wins");
}

#[tokio::test(start_paused = true)]
async fn first_write_wins_is_the_mirror_image() {
    let (hub, _, b) = concurrent_edit(Arc::new(FirstWriteWins), 1_000, 5_000).await;
    assert_eq!(
        last_title(&hub.log().await, "task"),
        "by a",
        "a wrote first"
    );
    assert_eq!(audit(&b).await[0].decision, DecisionKind::KeepRemote);

    let (hub, _, b) = concurrent_edit(Arc::new(FirstWriteWins), 5_000, 1_000).await;
    assert_eq!(
        last_title(&hub.log().await, "task"),
        "by b",
        "b wrote first"
    );
    assert_eq!(audit(&b).await[0].decision, DecisionKind::KeepLocal);
}

#[tokio::test(start_paused = true)]
async fn additive_merge_keeps_both() {
    let (hub, _, b) = concurrent_edit(Arc::new(AdditiveMerge), 5_000, 1_000).await;
    let titles: Vec<_> = hub
        .log()
        .await
        .iter()
        .map(|e| e.event.data["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["created", "by a", "by b"]);
    assert_eq!(audit(&b).await[0].decision, DecisionKind::Merge);
}

#[tokio::test(start_paused = true)]
async fn an_edit_made_after_pulling_the_other_edit_is_no_conflict() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let b = node(&hub, "b", 1_000).await;
    a.node.append(edit("task", "by a")).await.unwrap();
    a.node.sync().await.unwrap();
    b.node.sync().await.unwrap();
    b.node.append(edit("task", "by b after a")).await.unwrap();
    let r = b.node.sync().await.unwrap();
    assert_eq!((r.pushed, r.conflicts), (1, 0));
    assert!(audit(&b).await.is_empty());
    a.node.sync().await.unwrap();
    assert_converged(&hub, &[&a, &b]).await;
}

#[tokio::test(start_paused = true)]
async fn review_parks_the_conflict_while_the_rest_of_the_batch_applies() {
    let hub = TestHub::new();
    let config = Config {
        retry: quick_retry(),
        ..Config::default()
    };
    let a = node_with(&hub, "a", Arc::new(ManualReview), config.clone(), 1_000).await;
    let b = node_with(&hub, "b", Arc::new(ManualReview), config, 2_000).await;
    a.node.append(edit("task-1", "by a")).await.unwrap();
    a.node.sync().await.unwrap();
    // b never saw a's edit; its batch holds a conflicting edit and an unrelated one.
    b.node.append(edit("task-1", "by b")).await.unwrap();
    b.node.append(edit("task-2", "unrelated")).await.unwrap();
    let r = b.node.sync().await.unwrap();
    assert_eq!(r.conflicts, 1);
    assert_eq!(r.decisions[0].decision, DecisionKind::Review);
    let log = hub.log().await;
    assert_eq!(log.len(), 2, "the unrelated edit applied");
    assert_eq!(last_title(&log, "task-2"), "unrelated");
    // Parked with both sides.
    let reviews = b.node.reviews(10).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].conflict.local[0].data["title"], "by b");
    assert_eq!(reviews[0].conflict.remote[0].event.data["title"], "by a");
    assert_eq!(b.store.state().await.unwrap().pending, 0);

    // The application keeps its edit: it syncs after a's.
    b.node
        .resolve_review(&reviews[0].id, ReviewChoice::KeepLocal)
        .await
        .unwrap();
    assert!(b.node.reviews(10).await.unwrap().is_empty());
    let r = b.node.sync().await.unwrap();
    assert_eq!((r.pushed, r.conflicts), (1, 0));
    a.node.sync().await.unwrap();
    let log = hub.log().await;
    assert_eq!(last_title(&log, "task-1"), "by b");
    assert_converged(&hub, &[&a, &b]).await;
    let records = audit(&b).await;
    assert_eq!(records.last().unwrap().decided_by, "application");
    // Resolving an unknown or already resolved entry is a clear error.
    let err = b
        .node
        .resolve_review(&reviews[0].id, ReviewChoice::KeepRemote)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test(start_paused = true)]
async fn cancelling_mid_sync_leaves_cursors_consistent_and_the_next_sync_finishes() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let other = node(&hub, "o", 1_000).await;
    let backlog: Vec<_> = (0..300)
        .map(|i| edit(&format!("o-{i}"), "x").unchecked())
        .collect();
    other.node.append_batch(backlog).await.unwrap();
    other.node.push().await.unwrap();
    let mine: Vec<_> = (0..500)
        .map(|i| edit(&format!("a-{i}"), "y").unchecked())
        .collect();
    a.node.append_batch(mine).await.unwrap();

    a.transport.faults().set_delay(Duration::from_millis(5));
    {
        let mut sync = pin!(a.node.sync());
        // Let it push a few batches, then cancel.
        while a.transport.faults().calls() < 3 {
            assert!(matches!(futures::poll!(sync.as_mut()), Poll::Pending));
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        a.node.cancel_sync();
        let err = sync.await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
    }
    assert_eq!(a.node.sync_state(), SyncState::Cancelled);
    let state = a.store.state().await.unwrap();
    let hub_len = hub.log().await.len() as u64;
    assert!(
        hub_len > 300 && hub_len < 800,
        "cancelled part-way: {hub_len}"
    );
    assert_eq!(
        state.pending + (hub_len - 300),
        500,
        "every event pending or at the hub"
    );

    a.transport.faults().set_delay(Duration::ZERO);
    let r = a.node.sync().await.unwrap();
    assert_eq!(r.outcome, SyncOutcome::Completed);
    other.node.sync().await.unwrap();
    assert_eq!(hub.log().await.len(), 800);
    assert_converged(&hub, &[&a, &other]).await;
}

#[tokio::test(start_paused = true)]
async fn pending_events_go_out_in_batches_of_the_configured_size() {
    let hub = TestHub::new();
    let probe = Arc::new(Probe::new(hub.transport(), Duration::ZERO));
    let n = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .transport(probe.clone())
        .config(Config::builder().batch_size(100).build().unwrap())
        .open()
        .await
        .unwrap();
    let events: Vec<_> = (0..250).map(|i| edit(&format!("t-{i}"), "x")).collect();
    n.append_batch(events).await.unwrap();
    let r = n.sync().await.unwrap();
    assert_eq!(r.pushed, 250);
    assert_eq!(*probe.batches.lock().unwrap(), vec![100, 100, 50]);
}

/// A transport that prepares each push as the list of its ids, and refuses to send a prepared
/// push for other events than it was prepared for.
#[derive(Debug)]
struct Preparing {
    inner: MemoryTransport,
    /// Pushes sent from a prepared body.
    prepared_sends: std::sync::Mutex<usize>,
}

fn id_list(events: &[Event]) -> Vec<u8> {
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    ids.join("\n").into_bytes()
}

#[async_trait::async_trait]
impl Transport for Preparing {
    async fn push(&self, events: &[Event]) -> Result<synckit::AppendReport> {
        self.inner.push(events).await
    }
    fn prepare_push(&self, events: &[Event]) -> Result<Option<synckit::PreparedPush>> {
        Ok(Some(synckit::PreparedPush::new(
            id_list(events),
            events.len(),
        )))
    }
    async fn push_prepared(
        &self,
        events: &[Event],
        prepared: &synckit::PreparedPush,
    ) -> Result<synckit::AppendReport> {
        if prepared.body() != id_list(events).as_slice() {
            return Err(Error::internal("a push prepared for other events was sent"));
        }
        *self.prepared_sends.lock().unwrap() += 1;
        self.inner.push(events).await
    }
    async fn pull(&self, request: &synckit::ReadRequest) -> Result<synckit::Page> {
        self.inner.pull(request).await
    }
    async fn head(&self) -> Result<Seq> {
        self.inner.head().await
    }
    async fn subscribe(&self, after: Seq) -> Result<synckit::Subscription> {
        self.inner.subscribe(after).await
    }
}

/// The push encodes the page after the batch in flight ahead of time. A page from which events
/// of a conflicting aggregate are then held back is sent as what is left, never as the body
/// prepared for the whole page; pages sent whole use their prepared body.
#[tokio::test]
async fn a_page_prepared_ahead_is_sent_only_when_nothing_was_held_back() {
    let hub = TestHub::new();
    let other = node(&hub, "other", 1_000).await;
    other.node.append(edit("x", "by other")).await.unwrap();
    other.node.sync().await.unwrap();

    let transport = Arc::new(Preparing {
        inner: hub.transport(),
        prepared_sends: std::sync::Mutex::new(0),
    });
    let a = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .transport(transport.clone())
        .config(
            Config::builder()
                .batch_size(2)
                .retry(quick_retry())
                .build()
                .unwrap(),
        )
        .open()
        .await
        .unwrap();
    // Pages of two: [x, y] [y, y] [x, y] [y, y]. The first x conflicts (the hub already has
    // one), so the third page is read and prepared while the second is sent, then sent
    // without its x.
    for (i, aggregate) in ["x", "y", "y", "y", "x", "y", "y", "y"].iter().enumerate() {
        a.append(edit(aggregate, &format!("a-{i}"))).await.unwrap();
    }
    let r = a.sync().await.unwrap();
    assert_eq!(r.conflicts, 1);
    assert!(
        *transport.prepared_sends.lock().unwrap() >= 2,
        "the pages sent whole used their prepared bodies"
    );
    other.node.sync().await.unwrap();
    let log = hub.log().await;
    assert_eq!(a.store().confirmed_all().await.unwrap(), log);
    assert_eq!(a.store().state().await.unwrap().pending, 0);
    assert_eq!(
        log.iter()
            .filter(|e| e.event.aggregate_id.as_str() == "y")
            .count(),
        6
    );
}
