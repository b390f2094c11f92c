//! `PostgresStore` beyond the conformance suite: migrations under concurrent opens, reopening,
//! durability as seen by another session, injected clock, closing, odd tenant names, big
//! batches and `Debug`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::sync::Arc;

use common::TestDb;
use serde_json::json;
use synckit_store_postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION};
use synckit_types::{
    AppendOutcome, DynEventStore, DynNodeStore, ErrorKind, Event, EventStore, EventStoreExt, Hlc,
    ManualClock, NodeStore, NodeStoreExt, NodeWrite, ReadRequest, Seq, TenantId,
};

fn event(id: &str, aggregate: &str) -> Event {
    Event::builder("TaskRenamed", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id, "text": "it's \"quoted\" \u{0000} and ünïcode" }))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once() {
    let Some(db) = TestDb::new("concurrent_opens_migrate_once") else {
        return;
    };
    let schema = db.fresh_schema();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = db.config(&schema).with_pool_size(1);
            tokio::spawn(PostgresStore::connect(config))
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("every concurrent open succeeds"));
    }
    let raw = db.raw().await;
    let rows = raw
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // All of them work on the one schema.
    let t = TenantId::new("t1").unwrap();
    for (i, store) in stores.iter().enumerate() {
        let report = store
            .append(&t, &[event(&format!("e{i}"), "a")])
            .await
            .unwrap();
        assert_eq!(report.head, Seq(i as u64 + 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_both_roles() {
    let Some(db) = TestDb::new("reopening_keeps_both_roles") else {
        return;
    };
    let schema = db.fresh_schema();
    let t = TenantId::new("t1").unwrap();
    let store = db.open(&schema).await;
    store
        .append(&t, &[event("e1", "a"), event("e2", "b")])
        .await
        .unwrap();
    store
        .commit(NodeWrite {
            node_id: Some(synckit_types::NodeId::new("n1").unwrap()),
            put_pending: vec![event("p1", "a")],
            confirm: store.read_all(&t).await.unwrap(),
            cursor: Some(Seq(2)),
            ..NodeWrite::default()
        })
        .await
        .unwrap();
    let log = store.read_all(&t).await.unwrap();
    let state = store.state().await.unwrap();
    EventStore::close(&store).await.unwrap();
    drop(store);

    let store = db.open(&schema).await;
    assert_eq!(store.read_all(&t).await.unwrap(), log);
    assert_eq!(store.head(&t).await.unwrap(), Seq(2));
    assert_eq!(store.state().await.unwrap(), state);
    assert_eq!(store.confirmed_all().await.unwrap(), log);
    assert_eq!(
        store.pending_all().await.unwrap()[0].event.id.as_str(),
        "p1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_visible_to_other_sessions() {
    let Some(db) = TestDb::new("acknowledged_writes_are_visible_to_other_sessions") else {
        return;
    };
    let schema = db.fresh_schema();
    let store = db.open(&schema).await;
    let raw = db.raw().await;
    let t = TenantId::new("t1").unwrap();
    for round in 1..=5_i64 {
        store
            .append(&t, &[event(&format!("e{round}"), "a")])
            .await
            .unwrap();
        // Committed before the call returned: another session sees it at once.
        let row = raw
            .query_one(
                &format!(
                    "SELECT t.head, count(e.*) FROM \"{schema}\".tenants t
                     JOIN \"{schema}\".events e USING (tenant_key)
                     WHERE t.name = 't1' GROUP BY t.head"
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (round, round));
        store
            .commit(NodeWrite {
                cursor: Some(Seq(round as u64)),
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        let cursor: i64 = raw
            .query_one(
                &format!("SELECT pull_cursor FROM \"{schema}\".node_state"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(cursor, round);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_at_comes_from_the_clock() {
    let Some(db) = TestDb::new("recorded_at_comes_from_the_clock") else {
        return;
    };
    let clock = ManualClock::new(1_000);
    let schema = db.fresh_schema();
    let store = PostgresStore::connect(db.config(&schema).with_clock(Arc::new(clock.clone())))
        .await
        .unwrap();
    let t = TenantId::new("t1").unwrap();
    store.append(&t, &[event("e1", "a")]).await.unwrap();
    clock.advance(500);
    store.append(&t, &[event("e2", "a")]).await.unwrap();
    let stamps: Vec<u64> = store
        .read_all(&t)
        .await
        .unwrap()
        .iter()
        .map(|e| e.recorded_at)
        .collect();
    assert_eq!(stamps, [1_000, 1_500]);
    clock.advance(500);
    let report = store.append(&t, &[event("e1", "a")]).await.unwrap();
    match report.results[0].outcome {
        AppendOutcome::Duplicate { recorded_at, .. } => assert_eq!(recorded_at, 1_000),
        ref other => panic!("expected a duplicate, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_roles_close_together() {
    let Some(db) = TestDb::new("both_roles_close_together") else {
        return;
    };
    let store = Arc::new(db.store().await);
    let hub: DynEventStore = store.clone();
    let node: DynNodeStore = store.clone();
    hub.close().await.unwrap();
    assert_eq!(node.state().await.unwrap_err().kind(), ErrorKind::Closed);
    node.close().await.unwrap();
    let t = TenantId::new("t1").unwrap();
    assert_eq!(hub.head(&t).await.unwrap_err().kind(), ErrorKind::Closed);
    assert!(format!("{store:?}").contains("closed: true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_tenant_and_aggregate_names_stay_apart() {
    let Some(db) = TestDb::new("odd_tenant_and_aggregate_names_stay_apart") else {
        return;
    };
    let store = db.store().await;
    let names = [
        "t'; DROP TABLE events; --",
        "T1",
        "t1 ",
        "ünïcödé",
        "%",
        "_",
        &"x".repeat(128),
    ];
    for (i, name) in names.iter().enumerate() {
        let t = TenantId::new(*name).unwrap();
        let batch: Vec<Event> = (0..=i).map(|j| event(&format!("e{j}"), "a'b\"c")).collect();
        store.append(&t, &batch).await.unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let t = TenantId::new(*name).unwrap();
        assert_eq!(store.head(&t).await.unwrap(), Seq(i as u64 + 1), "{name:?}");
        let log = store.read_all(&t).await.unwrap();
        assert_eq!(log.len(), i + 1, "{name:?}");
        let agg = synckit_types::AggregateId::new("a'b\"c").unwrap();
        assert_eq!(
            store.aggregate_version(&t, &agg).await.unwrap(),
            i as u64 + 1
        );
        assert_eq!(log[0].event, event("e0", "a'b\"c"), "round trip");
    }
    assert_eq!(
        store.head(&TenantId::new("t1").unwrap()).await.unwrap(),
        Seq::ZERO
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_one_transaction() {
    let Some(db) = TestDb::new("a_large_batch_is_one_transaction") else {
        return;
    };
    let store = db.store().await;
    let t = TenantId::new("t1").unwrap();
    let batch: Vec<Event> = (0..12_000)
        .map(|i| event(&format!("e{i:05}"), &format!("agg-{}", i % 13)))
        .collect();
    let report = store.append(&t, &batch).await.unwrap();
    assert_eq!(report.head, Seq(12_000));
    assert!(
        report
            .results
            .iter()
            .all(|r| matches!(r.outcome, AppendOutcome::Accepted { .. }))
    );
    let again = store.append(&t, &batch).await.unwrap();
    assert!(
        again
            .results
            .iter()
            .all(|r| matches!(r.outcome, AppendOutcome::Duplicate { .. }))
    );
    let page = store
        .read(&t, &ReadRequest::after(Seq(11_990), 100))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 10);
    assert_eq!((page.next, page.has_more), (Seq(12_000), false));
}

#[tokio::test]
async fn debug_hides_the_url() {
    let Some(db) = TestDb::new("debug_hides_the_url") else {
        return;
    };
    let store = db.store().await;
    let text = format!("{store:?}");
    assert!(text.contains(store.schema()), "{text}");
    assert!(!text.contains("postgres://"), "{text}");
    let config = PostgresConfig::new("postgres://u:hunter2@h/d");
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_page_reads_one_bounded_window() {
    let Some(db) = TestDb::new("a_kind_page_reads_one_bounded_window") else {
        return;
    };
    let store = PostgresStore::connect(db.config(&db.fresh_schema()))
        .await
        .unwrap();
    let t = TenantId::new("t1").unwrap();
    // 25,000 events; the rare kind sits at seqs 5 and 23,001 only.
    let rare = [5_usize, 23_001];
    for chunk in 0..25 {
        let batch: Vec<Event> = (1..=1_000)
            .map(|i| {
                let seq = chunk * 1_000 + i;
                let kind = if rare.contains(&seq) {
                    "Rare"
                } else {
                    "Common"
                };
                Event::builder(kind, format!("agg-{}", seq % 7))
                    .id(format!("e{seq}"))
                    .origin("n1")
                    .hlc(Hlc::new(1_000, 0))
                    .build()
                    .unwrap()
            })
            .collect();
        store.append(&t, &batch).await.unwrap();
    }
    let kinds = |kind: &str| synckit_types::Filter {
        kinds: [kind.to_owned()].into(),
        ..synckit_types::Filter::all()
    };
    let request = |after: u64| ReadRequest::after(Seq(after), 100).with_filter(kinds("Rare"));
    // The first page finds seq 5 and stops at the end of its window, not at the head.
    let page = store.read(&t, &request(0)).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [Seq(5)]
    );
    assert_eq!(page.next, Seq(10_000));
    assert!(page.has_more);
    // A window with no match is an empty page that still moves the cursor.
    let page = store.read(&t, &request(10_000)).await.unwrap();
    assert!(page.events.is_empty());
    assert_eq!((page.next, page.has_more), (Seq(20_000), true));
    let page = store.read(&t, &request(20_000)).await.unwrap();
    assert_eq!(
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [Seq(23_001)]
    );
    assert_eq!((page.next, page.has_more), (Seq(25_000), false));
    // A full page ends at its last event, so nothing after it is skipped.
    let page = store
        .read(
            &t,
            &ReadRequest::after(Seq(0), 10).with_filter(kinds("Common")),
        )
        .await
        .unwrap();
    assert_eq!(page.events.len(), 10);
    assert_eq!(page.next, Seq(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_2_drops_the_kind_index_of_a_version_1_schema() {
    let Some(db) = TestDb::new("migration_2_drops_the_kind_index_of_a_version_1_schema") else {
        return;
    };
    let schema = db.fresh_schema();
    let store = PostgresStore::connect(db.config(&schema)).await.unwrap();
    let t = TenantId::new("t1").unwrap();
    store.append(&t, &[event("e1", "a")]).await.unwrap();
    EventStore::close(&store).await.unwrap();
    // Put the schema back to version 1 as that release left it.
    let raw = db.raw().await;
    raw.batch_execute(&format!(
        "CREATE INDEX events_kind ON \"{schema}\".events (tenant_key, kind, seq);
         DELETE FROM \"{schema}\".schema_migrations WHERE version = 2;"
    ))
    .await
    .unwrap();
    let store = PostgresStore::connect(db.config(&schema)).await.unwrap();
    let index: Option<String> = raw
        .query_one(
            "SELECT to_regclass($1)::text",
            &[&format!("\"{schema}\".events_kind")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(index, None, "migration 2 dropped the kind index");
    let versions: Vec<i64> = raw
        .query(
            &format!("SELECT version FROM \"{schema}\".schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(store.read_all(&t).await.unwrap().len(), 1, "data kept");
}
