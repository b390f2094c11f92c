//! Behaviour of the sled store beyond the conformance suite: everything survives a reopen,
//! close releases the directory, filtered pages stay bounded, and the flush policies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use synckit_store_sled::{FlushPolicy, SledConfig, SledStore};
use synckit_types::{
    AggregateId, AuditQuery, AuditRecord, Conflict, DecisionKind, ErrorKind, Event, EventStore,
    EventStoreExt, Filter, Hlc, ManualClock, NodeId, NodeStore, NodeStoreExt, NodeWrite,
    ReadRequest, ReviewEntry, Seq, StoredEvent, TenantId,
};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn event(id: &str, aggregate: &str, kind: &str) -> Event {
    Event::builder(kind, aggregate)
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
        base_version: 0,
        current_version: 1,
        local: Vec::new(),
        remote: Vec::new(),
    }
}

fn audit(id: &str) -> AuditRecord {
    AuditRecord {
        id: id.to_owned(),
        at: 1,
        decision: DecisionKind::KeepRemote,
        strategy: "lww".to_owned(),
        rule: None,
        group: None,
        reason: "test".to_owned(),
        kind: String::new(),
        changed_fields: Vec::new(),
        context: Default::default(),
        conflict: conflict("a"),
        result: Vec::new(),
        decided_by: "resolver".to_owned(),
        duration_us: 1,
    }
}

fn review(id: &str) -> ReviewEntry {
    ReviewEntry {
        id: id.to_owned(),
        conflict: conflict("a"),
        reason: "test".to_owned(),
        strategy: "manual".to_owned(),
        rule: None,
        created_at: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let config = SledConfig::new(dir.path()).clock(Arc::new(clock.clone()));
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    let store = SledStore::open_with(config.clone()).unwrap();
    // Enough events for several chunks and index records, two tenants, two kinds.
    let batch: Vec<Event> = (0..300)
        .map(|i| {
            event(
                &format!("e{i}"),
                &format!("a{}", i % 4),
                ["K1", "K2"][i % 2],
            )
        })
        .collect();
    store.append(&t1, &batch).await.unwrap();
    store.append(&t2, &batch[..5]).await.unwrap();
    let hub_before = store.read_all(&t1).await.unwrap();
    store
        .commit(NodeWrite {
            node_id: Some(NodeId::new("n1").unwrap()),
            hlc: Some(Hlc::new(9, 1)),
            put_pending: vec![event("p1", "a", "K"), event("p2", "b", "K")],
            confirm: vec![StoredEvent {
                event: event("c1", "a", "K"),
                seq: Seq(7),
                aggregate_version: 2,
                recorded_at: 3,
            }],
            cursor: Some(Seq(7)),
            put_reviews: vec![review("r1")],
            audit: vec![audit("x1")],
            ..NodeWrite::default()
        })
        .await
        .unwrap();
    let state_before = store.state().await.unwrap();
    let pending_before = store.pending_all().await.unwrap();
    EventStore::close(&store).await.unwrap();
    drop(store);

    let store = SledStore::open_with(config).unwrap();
    assert_eq!(store.head(&t1).await.unwrap(), Seq(300));
    assert_eq!(store.head(&t2).await.unwrap(), Seq(5));
    let hub_after = store.read_all(&t1).await.unwrap();
    assert_eq!(hub_after, hub_before, "the log reads back identically");
    assert!(hub_after.iter().all(|e| e.recorded_at == 5_000));
    let a1 = AggregateId::new("a1").unwrap();
    assert_eq!(store.aggregate_version(&t1, &a1).await.unwrap(), 75);
    let by_kind = Filter {
        aggregate_id: None,
        kinds: ["K2".to_owned()].into(),
    };
    let page = store
        .read(&t1, &ReadRequest::after(Seq(100), 10).with_filter(by_kind))
        .await
        .unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, [102, 104, 106, 108, 110, 112, 114, 116, 118, 120]);

    assert_eq!(store.state().await.unwrap(), state_before);
    assert_eq!(store.pending_all().await.unwrap(), pending_before);
    assert_eq!(store.reviews(10).await.unwrap(), [review("r1")]);
    assert_eq!(
        store.audit(&AuditQuery::default()).await.unwrap(),
        [audit("x1")]
    );
    // Ordinals continue after a reopen: a new pending event never reuses one.
    store
        .commit(NodeWrite {
            put_pending: vec![event("p3", "a", "K")],
            ..NodeWrite::default()
        })
        .await
        .unwrap();
    let last = store.pending_all().await.unwrap();
    assert!(last[2].ordinal > pending_before[1].ordinal);
    // Appends continue from the stored head and the stored aggregate versions.
    let report = store
        .append(&t1, &[event("e300", "a1", "K1")])
        .await
        .unwrap();
    assert_eq!(report.head, Seq(301));
    assert_eq!(store.aggregate_version(&t1, &a1).await.unwrap(), 76);
    // Duplicates are recognised across a reopen.
    let again = store.append(&t1, &batch[..3]).await.unwrap();
    assert!(
        again
            .results
            .iter()
            .all(|r| matches!(r.outcome, synckit_types::AppendOutcome::Duplicate { .. }))
    );
    EventStore::close(&store).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_found_in_any_order_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let t = tenant("t");
    let batch: Vec<Event> = (0..100)
        .map(|i| event(&format!("e{i}"), &format!("a{}", i % 3), "K"))
        .collect();
    store.append(&t, &batch).await.unwrap();
    // Backwards, then jumping about: each lookup finds its event in whichever chunk holds it.
    let mut retry: Vec<Event> = batch.iter().rev().cloned().collect();
    retry.extend([batch[50].clone(), batch[3].clone(), batch[97].clone()]);
    let report = store.append(&t, &retry).await.unwrap();
    for (sent, result) in retry.iter().zip(&report.results) {
        let n: u64 = sent.id.as_str()[1..].parse().unwrap();
        match result.outcome {
            synckit_types::AppendOutcome::Duplicate {
                seq,
                aggregate_version,
                ..
            } => {
                assert_eq!(seq, Seq(n + 1), "{}", sent.id);
                assert_eq!(aggregate_version, n / 3 + 1, "{}", sent.id);
            }
            ref other => panic!("{}: {other:?}", sent.id),
        }
    }
    assert_eq!(report.head, Seq(100));
    EventStore::close(&store).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_is_idempotent_and_releases_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    // sled allows one open database per directory.
    let second = SledStore::open(dir.path()).unwrap_err();
    assert_eq!(second.kind(), ErrorKind::Storage, "{second}");
    assert!(second.to_string().contains("in use"), "{second}");

    store
        .append(&tenant("t"), &[event("e1", "a", "K")])
        .await
        .unwrap();
    NodeStore::close(&store).await.unwrap();
    EventStore::close(&store).await.unwrap();
    let err = store.head(&tenant("t")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert_eq!(
        store.size_on_disk().await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    // The store value still exists, but the directory is free again.
    let reopened = SledStore::open(dir.path()).unwrap();
    assert_eq!(reopened.head(&tenant("t")).await.unwrap(), Seq(1));
    assert!(format!("{reopened:?}").contains("tenants: 1"));
    EventStore::close(&reopened).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rare_kind_on_a_busy_aggregate_pages_with_bounded_work() {
    // An aggregate + kind filter walks the aggregate index and stops after a fixed number of
    // entries; the page then says how far it got (next) and that there is more.
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let t = tenant("t");
    for b in 0..25 {
        let batch: Vec<Event> = (0..1_000)
            .map(|i| {
                let n = b * 1_000 + i;
                let kind = if n % 9_000 == 8_999 { "Rare" } else { "Common" };
                event(&format!("e{n}"), "hot", kind)
            })
            .collect();
        store.append(&t, &batch).await.unwrap();
    }
    let filter = Filter {
        aggregate_id: Some(AggregateId::new("hot").unwrap()),
        kinds: ["Rare".to_owned()].into(),
    };
    let first = store
        .read(
            &t,
            &ReadRequest::after(Seq::ZERO, 10).with_filter(filter.clone()),
        )
        .await
        .unwrap();
    assert_eq!(
        first.events.len(),
        1,
        "only one rare event in the first 10,000"
    );
    assert_eq!(
        first.next,
        Seq(10_000),
        "the page ends where the scan stopped"
    );
    assert!(first.has_more);
    // Walking the pages finds every rare event exactly once.
    let mut after = Seq::ZERO;
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = store
            .read(
                &t,
                &ReadRequest::after(after, 10).with_filter(filter.clone()),
            )
            .await
            .unwrap();
        found.extend(page.events.iter().map(|e| e.seq.get()));
        pages += 1;
        if !page.has_more {
            break;
        }
        assert!(page.next > after, "progress");
        after = page.next;
    }
    assert_eq!(found, [9_000, 18_000]);
    assert_eq!(pages, 3);
    // The kind index alone answers without scanning.
    let rare = Filter {
        aggregate_id: None,
        kinds: ["Rare".to_owned()].into(),
    };
    let page = store
        .read(&t, &ReadRequest::after(Seq::ZERO, 10).with_filter(rare))
        .await
        .unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|e| e.seq.get()).collect();
    assert_eq!(seqs, [9_000, 18_000]);
    assert!(!page.has_more);
    EventStore::close(&store).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_flush_policy_stores_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        SledConfig::new(dir.path()).flush(FlushPolicy::Periodic(Duration::from_millis(50)));
    let store = SledStore::open_with(config.clone()).unwrap();
    store
        .append(&tenant("t"), &[event("e1", "a", "K")])
        .await
        .unwrap();
    EventStore::close(&store).await.unwrap();
    let store = SledStore::open_with(config).unwrap();
    assert_eq!(store.head(&tenant("t")).await.unwrap(), Seq(1));
    EventStore::close(&store).await.unwrap();
}

#[test]
fn invalid_config_is_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let err = SledStore::open_with(SledConfig::new(&path).cache_capacity(1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!path.exists(), "nothing was created");
}

#[test]
fn works_without_a_tokio_runtime() {
    // Another executor (here a bare `block_on`) runs the blocking work in place.
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let report = futures_lite_block_on(store.append(&tenant("t"), &[event("e1", "a", "K")]));
    assert_eq!(report.unwrap().head, Seq(1));
    futures_lite_block_on(EventStore::close(&store)).unwrap();
}

/// A minimal single-future executor, so this test needs no runtime crate.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park(),
        }
    }
}
