//! What the file keeps and how the store behaves around it: everything survives a reopen
//! (hub logs, node state, outbox ordinals that are never reused), both roles share one file
//! and one close, `recorded_at` comes from the configured clock, and a write lock held by
//! another process gives a retryable `Unavailable` error after the busy timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use synckit_store_sqlite::{SqliteConfig, SqliteStore, rusqlite};
use synckit_types::{
    AggregateId, AppendOutcome, AuditQuery, AuditRecord, Conflict, DecisionKind, DynEventStore,
    DynNodeStore, ErrorKind, Event, EventId, EventStore, EventStoreExt, Hlc, ManualClock, NodeId,
    NodeStore, NodeStoreExt, NodeWrite, ReadRequest, ReviewEntry, Seq, StoredEvent, TenantId,
};

fn event(id: &str, aggregate: &str) -> Event {
    Event::builder("TaskRenamed", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id }))
        .build()
        .unwrap()
}

fn conflict(aggregate: &str) -> Conflict {
    Conflict {
        aggregate_id: AggregateId::new(aggregate).unwrap(),
        base_version: 1,
        current_version: 2,
        local: vec![event("local", aggregate)],
        remote: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (ta, tb) = (TenantId::new("a").unwrap(), TenantId::new("b").unwrap());
    let review = ReviewEntry {
        id: "r1".into(),
        conflict: conflict("x"),
        reason: "parked".into(),
        strategy: "manual".into(),
        rule: None,
        created_at: 5,
    };
    let audit = AuditRecord {
        id: "x1".into(),
        at: 7,
        decision: DecisionKind::KeepRemote,
        strategy: "lww".into(),
        rule: Some("r".into()),
        group: None,
        reason: "newer".into(),
        kind: String::new(),
        changed_fields: Vec::new(),
        context: Default::default(),
        conflict: conflict("x"),
        result: Vec::new(),
        decided_by: "resolver".into(),
        duration_us: 3,
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .append(&ta, &[event("e1", "x"), event("e2", "y")])
            .await
            .unwrap();
        store.append(&tb, &[event("e1", "x")]).await.unwrap();
        store
            .commit(NodeWrite {
                node_id: Some(NodeId::new("node-1").unwrap()),
                hlc: Some(Hlc::new(42, 1)),
                put_pending: vec![event("p1", "x"), event("p2", "x"), event("p3", "y")],
                confirm: vec![StoredEvent {
                    event: event("c1", "x"),
                    seq: Seq(4),
                    aggregate_version: 2,
                    recorded_at: 9,
                }],
                cursor: Some(Seq(4)),
                put_reviews: vec![review.clone()],
                audit: vec![audit.clone()],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        // The newest ordinal leaves the outbox before the reopen: it must not come back.
        store
            .commit(NodeWrite {
                remove_pending: vec![EventId::new("p3").unwrap()],
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        store.close().await.unwrap();
    }

    let store = SqliteStore::open(&path).unwrap();
    let a: Vec<String> = store
        .read_all(&ta)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.id.to_string())
        .collect();
    assert_eq!(a, ["e1", "e2"]);
    assert_eq!(store.head(&tb).await.unwrap(), Seq(1));
    assert_eq!(
        store
            .aggregate_version(&ta, &AggregateId::new("x").unwrap())
            .await
            .unwrap(),
        1
    );
    let report = store.append(&ta, &[event("e2", "y")]).await.unwrap();
    assert!(matches!(
        report.results[0].outcome,
        AppendOutcome::Duplicate { seq: Seq(2), .. }
    ));

    let state = store.state().await.unwrap();
    assert_eq!(state.node_id, Some(NodeId::new("node-1").unwrap()));
    assert_eq!(state.hlc, Hlc::new(42, 1));
    assert_eq!(
        (
            state.cursor,
            state.confirmed_head,
            state.pending,
            state.reviews
        ),
        (Seq(4), Seq(4), 2, 1)
    );
    let pending = store.pending_all().await.unwrap();
    let ordinals: Vec<u64> = pending.iter().map(|p| p.ordinal).collect();
    assert_eq!(ordinals, [1, 2]);
    store
        .commit(NodeWrite {
            put_pending: vec![event("p4", "y")],
            ..NodeWrite::default()
        })
        .await
        .unwrap();
    assert_eq!(
        store.pending_all().await.unwrap()[2].ordinal,
        4,
        "ordinal 3 is never reused"
    );
    assert_eq!(store.review("r1").await.unwrap(), Some(review));
    assert_eq!(store.audit(&AuditQuery::default()).await.unwrap(), [audit]);
    assert_eq!(
        store.confirmed(Seq::ZERO, 10).await.unwrap()[0]
            .event
            .id
            .as_str(),
        "c1"
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_roles_share_the_file_and_one_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("s.db")).unwrap());
    let hub: DynEventStore = store.clone();
    let node: DynNodeStore = store.clone();
    let t = TenantId::default_tenant();
    hub.append(&t, &[event("e1", "a")]).await.unwrap();
    node.commit(NodeWrite {
        cursor: Some(Seq(1)),
        ..NodeWrite::default()
    })
    .await
    .unwrap();
    node.close().await.unwrap();
    assert_eq!(hub.head(&t).await.unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(node.state().await.unwrap_err().kind(), ErrorKind::Closed);
    hub.close().await.unwrap();
    let text = format!("{store:?}");
    assert!(text.contains("closed: true"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_at_comes_from_the_configured_clock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let config = SqliteConfig::new(dir.path().join("s.db")).clock(Arc::new(clock.clone()));
    let store = SqliteStore::open_with(config).unwrap();
    let t = TenantId::default_tenant();
    store.append(&t, &[event("e1", "a")]).await.unwrap();
    clock.advance(10);
    store.append(&t, &[event("e2", "a")]).await.unwrap();
    let page = store
        .read(&t, &ReadRequest::after(Seq::ZERO, 10))
        .await
        .unwrap();
    let stamps: Vec<u64> = page.events.iter().map(|e| e.recorded_at).collect();
    assert_eq!(stamps, [5_000, 5_010]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_is_retryable_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let config = SqliteConfig::new(&path).busy_timeout(Duration::from_millis(50));
    let store = SqliteStore::open_with(config).unwrap();
    let t = TenantId::default_tenant();
    store.append(&t, &[event("e1", "a")]).await.unwrap();

    // Another process (here: another connection) holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = store.append(&t, &[event("e2", "a")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    // Reads go on meanwhile (WAL readers do not wait for the writer).
    assert_eq!(store.head(&t).await.unwrap(), Seq(1));

    other.execute_batch("COMMIT").unwrap();
    let report = store.append(&t, &[event("e2", "a")]).await.unwrap();
    assert!(matches!(
        report.results[0].outcome,
        AppendOutcome::Accepted { seq: Seq(2), .. }
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
    let t = TenantId::default_tenant();
    let report = store
        .append(&t, &[event("e1", "a"), event("e2", "a")])
        .await
        .unwrap();
    assert_eq!(report.head, Seq(2));
    assert_eq!(store.read_all(&t).await.unwrap().len(), 2);
    store.close().await.unwrap();
}
