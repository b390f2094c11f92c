//! The SQLite store against the memory store (the reference backend): the same random appends
//! and commits, with duplicates, id conflicts, stale versions, several tenants, aggregates and
//! kinds, must give the same outcomes, and every read (random cursors, limits and filters) the
//! same pages, before and after a reopen.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use synckit_store_memory::MemoryStore;
use synckit_store_sqlite::{SqliteConfig, SqliteStore};
use synckit_types::{
    AggregateId, AuditQuery, Event, EventId, EventStore, Filter, Hlc, ManualClock, NodeStore,
    NodeStoreExt, NodeWrite, ReadRequest, Seq, StoredEvent, TenantId,
};

const NOW: u64 = 1_700_000_000_000;

fn random_event(rng: &mut fastrand::Rng, id_space: u32) -> Event {
    let id = format!("e{}", rng.u32(0..id_space));
    let aggregate = format!("agg-{}", rng.u8(0..6));
    let kind = ["Created", "Renamed", "Deleted"][rng.usize(0..3)];
    // Content depends on the id mostly, so a repeated id is usually a duplicate and sometimes
    // a conflict.
    let variant = if rng.u8(0..8) == 0 { 1 } else { 0 };
    let mut builder = Event::builder(kind, aggregate)
        .id(id.clone())
        .origin("n1")
        .hlc(Hlc::new(rng.u64(0..1_000), rng.u32(0..3)))
        .data(json!({ "id": id, "variant": variant }));
    if rng.bool() {
        builder = builder.metadata("trace", json!(rng.u8(..)));
    }
    match rng.u8(0..4) {
        0 => builder = builder.expected_version(rng.u64(0..6)),
        1 => builder = builder.unchecked(),
        _ => {}
    }
    let mut event = builder.build().unwrap();
    if rng.u8(0..40) == 0 {
        event.kind = String::new(); // invalid: rejected
    }
    event
}

fn random_filter(rng: &mut fastrand::Rng) -> Filter {
    let aggregate_id = rng
        .bool()
        .then(|| AggregateId::new(format!("agg-{}", rng.u8(0..7))).unwrap());
    let kinds: BTreeSet<String> = ["Created", "Renamed", "Deleted", "Unknown"]
        .iter()
        .filter(|_| rng.u8(0..3) == 0)
        .map(|k| (*k).to_owned())
        .collect();
    Filter {
        aggregate_id,
        kinds,
    }
}

async fn compare_reads(
    rng: &mut fastrand::Rng,
    sqlite: &SqliteStore,
    memory: &MemoryStore,
    tenants: &[TenantId],
    rounds: usize,
) {
    for t in tenants {
        assert_eq!(sqlite.head(t).await.unwrap(), memory.head(t).await.unwrap());
        for a in 0..7 {
            let a = AggregateId::new(format!("agg-{a}")).unwrap();
            assert_eq!(
                sqlite.aggregate_version(t, &a).await.unwrap(),
                memory.aggregate_version(t, &a).await.unwrap(),
                "version of {a} in {t}"
            );
        }
    }
    for _ in 0..rounds {
        let t = &tenants[rng.usize(0..tenants.len())];
        let head = memory.head(t).await.unwrap().get();
        let request = ReadRequest::after(Seq(rng.u64(0..head + 3)), rng.usize(1..12))
            .with_filter(random_filter(rng));
        let want = memory.read(t, &request).await.unwrap();
        let got = sqlite.read(t, &request).await.unwrap();
        assert_eq!(got, want, "read {request:?} of {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_matches_the_memory_store() {
    let seed = fastrand::u64(..);
    eprintln!("differential hub seed: {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let config = || SqliteConfig::new(&path).clock(Arc::new(ManualClock::new(NOW)));
    let sqlite = SqliteStore::open_with(config()).unwrap();
    let memory = MemoryStore::with_clock(Arc::new(ManualClock::new(NOW)));
    let tenants: Vec<TenantId> = ["a", "b", "c"]
        .iter()
        .map(|t| TenantId::new(*t).unwrap())
        .collect();

    for _ in 0..150 {
        let t = &tenants[rng.usize(0..tenants.len())];
        // Mostly small batches; now and then a large one, whose posting lists span rows.
        let (size, ids) = if rng.u8(0..15) == 0 {
            (rng.usize(300..700), 1_000_000)
        } else {
            (rng.usize(0..12), 120)
        };
        let mut batch: Vec<Event> = (0..size).map(|_| random_event(&mut rng, ids)).collect();
        if size > 12 {
            // Keep a large batch mostly accepted: no version checks, no invalid kinds.
            for e in &mut batch {
                e.expected_version = None;
                if e.kind.is_empty() {
                    e.kind = "Created".to_owned();
                }
            }
        }
        let want = memory.append(t, &batch).await.unwrap();
        let got = sqlite.append(t, &batch).await.unwrap();
        assert_eq!(got, want, "append to {t} of {batch:#?}");
    }
    compare_reads(&mut rng, &sqlite, &memory, &tenants, 400).await;

    sqlite.close().await.unwrap();
    let sqlite = SqliteStore::open_with(config()).unwrap();
    compare_reads(&mut rng, &sqlite, &memory, &tenants, 100).await;
}

fn stored(event: Event, seq: u64, version: u64) -> StoredEvent {
    StoredEvent {
        event,
        seq: Seq(seq),
        aggregate_version: version,
        recorded_at: NOW + seq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_matches_the_memory_store() {
    let seed = fastrand::u64(..);
    eprintln!("differential node seed: {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    let sqlite = SqliteStore::open(&path).unwrap();
    let memory = MemoryStore::new();
    let mut cursor: u64 = 0;

    for step in 0..200 {
        let mut write = NodeWrite::default();
        if rng.u8(0..10) == 0 {
            write.node_id = Some(synckit_types::NodeId::new(format!("n{}", rng.u8(0..2))).unwrap());
        }
        if rng.bool() {
            write.hlc = Some(Hlc::new(rng.u64(0..100), rng.u32(0..3)));
        }
        for _ in 0..rng.usize(0..3) {
            write
                .remove_pending
                .push(EventId::new(format!("e{}", rng.u32(0..60))).unwrap());
        }
        for _ in 0..rng.usize(0..4) {
            write.put_pending.push(random_event(&mut rng, 60));
        }
        for _ in 0..rng.usize(0..3) {
            let e = random_event(&mut rng, 60);
            // Now and then a seq or version of 0, which both stores refuse.
            let seq = if rng.u8(0..30) == 0 {
                0
            } else {
                rng.u64(1..80)
            };
            let version = if rng.u8(0..30) == 0 { 0 } else { rng.u64(1..5) };
            write.confirm.push(stored(e, seq, version));
        }
        if rng.bool() {
            cursor = if rng.u8(0..10) == 0 {
                cursor.saturating_sub(1)
            } else {
                cursor + rng.u64(0..3)
            };
            write.cursor = Some(Seq(cursor));
        }
        let want = memory.commit(write.clone()).await;
        let got = sqlite.commit(write.clone()).await;
        match (&got, &want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "step {step}: {write:#?}"),
            (Err(g), Err(w)) => assert_eq!(g.kind(), w.kind(), "step {step}: {g} vs {w}"),
            _ => panic!("step {step}: sqlite {got:?}, memory {want:?} for {write:#?}"),
        }
        if step % 20 == 0 {
            assert_eq!(sqlite.state().await.unwrap(), memory.state().await.unwrap());
        }
    }
    same_node(&sqlite, &memory).await;
    sqlite.close().await.unwrap();
    let sqlite = SqliteStore::open(&path).unwrap();
    same_node(&sqlite, &memory).await;
}

async fn same_node(sqlite: &SqliteStore, memory: &MemoryStore) {
    assert_eq!(sqlite.state().await.unwrap(), memory.state().await.unwrap());
    assert_eq!(
        sqlite.pending_all().await.unwrap(),
        memory.pending_all().await.unwrap()
    );
    assert_eq!(
        sqlite.confirmed_all().await.unwrap(),
        memory.confirmed_all().await.unwrap()
    );
    for a in 0..7 {
        let a = AggregateId::new(format!("agg-{a}")).unwrap();
        assert_eq!(
            sqlite.aggregate_head(&a).await.unwrap(),
            memory.aggregate_head(&a).await.unwrap()
        );
        assert_eq!(
            sqlite.pending_for(&a).await.unwrap(),
            memory.pending_for(&a).await.unwrap()
        );
    }
    assert_eq!(
        sqlite.audit(&AuditQuery::default()).await.unwrap(),
        memory.audit(&AuditQuery::default()).await.unwrap()
    );
}
