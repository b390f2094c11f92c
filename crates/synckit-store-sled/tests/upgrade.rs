//! Opening a store written by an older schema upgrades it in place to the current one, and the
//! upgraded store answers exactly as before: schema 1 kept one id-index key per event (now
//! sorted id runs), schema 2 counted an aggregate's pending events by scanning (now stored)
//! and kept one key per confirmed and per pending event (now chunks), schema 3 kept one
//! outbox-id key per pending event (now sorted id runs).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test.

use std::path::Path;

use serde_json::json;
use synckit_store_sled::{SCHEMA_VERSION, SledStore, sled};
use synckit_types::{
    AggregateId, AppendOutcome, ErrorKind, Event, EventStore, EventStoreExt, Hlc, NodeStore,
    NodeWrite, PendingEvent, RejectCode, Seq, StoredEvent, TenantId,
};

fn event(id: &str, aggregate: &str, note: &str) -> Event {
    Event::builder("Upgrade", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "note": note }))
        .build()
        .unwrap()
}

/// Ids in scattered order, so the index is not built from one ordered run.
fn events(tenant: &str, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let id = format!("{tenant}-{:05}", (i * 7_919) % n);
            event(&id, &format!("agg-{}", i % 5), "first")
        })
        .collect()
}

/// A length-prefixed key part, as the store's codec writes it.
fn part(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(bytes.len()).unwrap()];
    out.extend_from_slice(bytes);
    out
}

/// Events confirmed on the node side: `n` events at seqs 1..=n.
fn confirmed(n: usize) -> Vec<StoredEvent> {
    (0..n)
        .map(|i| StoredEvent {
            event: event(
                &format!("node-{:05}", (i * 7_919) % n),
                "agg-n",
                "confirmed",
            ),
            seq: Seq(i as u64 + 1),
            aggregate_version: i as u64 + 1,
            recorded_at: 5,
        })
        .collect()
}

/// Pending events on the node side: `n` events over aggregates `pend-0` to `pend-3`.
fn pending(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            event(
                &format!("pending-{i:05}"),
                &format!("pend-{}", i % 4),
                "pending",
            )
        })
        .collect()
}

/// The pending count each of `pend-0` to `pend-4` reports.
async fn pending_counts(store: &SledStore) -> Vec<u64> {
    let mut counts = Vec::new();
    for a in 0..5 {
        let aggregate = AggregateId::new(format!("pend-{a}")).unwrap();
        counts.push(store.aggregate_head(&aggregate).await.unwrap().pending);
    }
    counts
}

/// Every key of `tree` under `prefix`.
fn keys(tree: &sled::Tree, prefix: u8) -> Vec<sled::IVec> {
    tree.scan_prefix([prefix])
        .keys()
        .map(Result::unwrap)
        .collect()
}

/// Rewrite a closed store's outbox ids in the schema-3 layout: one key per pending event
/// (`o id` -> ordinal ++ aggregate) instead of the `p` runs.
fn downgrade_outbox_ids_to_schema_three(db: &sled::Db, pending: &[PendingEvent]) {
    let node = db.open_tree("synckit_node").unwrap();
    let runs = keys(&node, b'p');
    assert!(!runs.is_empty(), "the current schema keeps outbox-id runs");
    for key in runs {
        node.remove(key).unwrap();
    }
    for p in pending {
        let mut key = vec![b'o'];
        key.extend_from_slice(p.event.id.as_str().as_bytes());
        let mut value = p.ordinal.to_be_bytes().to_vec();
        value.extend_from_slice(p.event.aggregate_id.as_str().as_bytes());
        node.insert(key, value).unwrap();
    }
}

/// Rewrite a closed store's node tree in the schema-2 layout: no outbox counts (`Q`), the
/// confirmed log (`C seq`), the outbox (`O ordinal`) and its aggregate index
/// (`P lp(aggregate) ordinal`) one key per event instead of the `K`, `B` and `G` chunks, and
/// schema 3's outbox ids.
fn downgrade_node_to_schema_two(
    db: &sled::Db,
    confirmed: &[StoredEvent],
    pending: &[PendingEvent],
) {
    downgrade_outbox_ids_to_schema_three(db, pending);
    let node = db.open_tree("synckit_node").unwrap();
    for (class, what) in [
        (b'Q', "outbox counts"),
        (b'K', "confirmed chunks"),
        (b'B', "outbox chunks"),
        (b'G', "outbox index chunks"),
    ] {
        let found = keys(&node, class);
        assert!(!found.is_empty(), "the current schema keeps {what}");
        for key in found {
            node.remove(key).unwrap();
        }
    }
    for e in confirmed {
        let mut key = vec![b'C'];
        key.extend_from_slice(&e.seq.get().to_be_bytes());
        // Schema 2's record: format 1, aggregate version, recorded_at, the event's JSON.
        let mut record = vec![1];
        record.extend_from_slice(&e.aggregate_version.to_be_bytes());
        record.extend_from_slice(&e.recorded_at.to_be_bytes());
        record.extend(serde_json::to_vec(&e.event).unwrap());
        node.insert(key, record).unwrap();
    }
    for p in pending {
        let mut key = vec![b'O'];
        key.extend_from_slice(&p.ordinal.to_be_bytes());
        let mut record = vec![1];
        record.extend(serde_json::to_vec(&p.event).unwrap());
        node.insert(key, record).unwrap();
        let mut key = vec![b'P'];
        key.extend(part(p.event.aggregate_id.as_str().as_bytes()));
        key.extend_from_slice(&p.ordinal.to_be_bytes());
        node.insert(key, &[][..]).unwrap();
    }
}

/// Mark the database and the marker file of a store as schema `version`.
fn mark_schema(db: &sled::Db, dir: &Path, version: u32) {
    let meta = db.open_tree("synckit_meta").unwrap();
    meta.insert("schema_version", &version.to_be_bytes()[..])
        .unwrap();
    db.flush().unwrap();
    let marker = dir.join("synckit-store.json");
    let text = std::fs::read_to_string(&marker).unwrap();
    let old = text.replace(
        &format!("\"schema_version\": {SCHEMA_VERSION}"),
        &format!("\"schema_version\": {version}"),
    );
    assert_ne!(old, text, "the marker names its schema version");
    std::fs::write(&marker, old).unwrap();
}

/// Rewrite a closed store in the schema-1 layout: schema 2's node tree, and the id indexes one
/// key per event (the hub's `I lp(tenant) id` -> seq instead of `J` runs, the node's `c id` ->
/// seq instead of `d` runs).
fn downgrade_to_schema_one(
    dir: &Path,
    stored: &[(String, Vec<(String, u64)>)],
    node_confirmed: &[StoredEvent],
    node_pending: &[PendingEvent],
) {
    let db = sled::Config::new().path(dir).open().unwrap();
    downgrade_node_to_schema_two(&db, node_confirmed, node_pending);
    let node = db.open_tree("synckit_node").unwrap();
    let runs = keys(&node, b'd');
    assert!(
        !runs.is_empty(),
        "the current schema keeps confirmed-id runs"
    );
    for key in runs {
        node.remove(key).unwrap();
    }
    for e in node_confirmed {
        let mut key = vec![b'c'];
        key.extend_from_slice(e.event.id.as_str().as_bytes());
        node.insert(key, &e.seq.get().to_be_bytes()[..]).unwrap();
    }
    let hub = db.open_tree("synckit_hub").unwrap();
    for (tenant, ids) in stored {
        let mut runs = vec![b'J'];
        runs.extend(part(tenant.as_bytes()));
        let keys: Vec<_> = hub.scan_prefix(&runs).keys().map(Result::unwrap).collect();
        assert!(!keys.is_empty(), "the current schema keeps id runs");
        for key in keys {
            hub.remove(key).unwrap();
        }
        for (id, seq) in ids {
            let mut key = vec![b'I'];
            key.extend(part(tenant.as_bytes()));
            key.extend_from_slice(id.as_bytes());
            hub.insert(key, &seq.to_be_bytes()[..]).unwrap();
        }
    }
    mark_schema(&db, dir, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_one_store_is_upgraded_at_open() {
    assert_eq!(SCHEMA_VERSION, 4, "this test upgrades from schema 1 to 4");
    let dir = tempfile::tempdir().unwrap();
    let tenants = ["alpha", "beta"];
    let mut stored = Vec::new();
    let node_pending = {
        let store = SledStore::open(dir.path()).unwrap();
        for (t, n) in tenants.iter().zip([3_000, 700]) {
            let tenant = TenantId::new(*t).unwrap();
            for chunk in events(t, n).chunks(500) {
                store.append(&tenant, chunk).await.unwrap();
            }
            let ids = store
                .read_all(&tenant)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.event.id.to_string(), e.seq.get()))
                .collect::<Vec<_>>();
            stored.push((t.to_string(), ids));
        }
        for part in confirmed(2_000).chunks(700) {
            let write = NodeWrite {
                confirm: part.to_vec(),
                ..NodeWrite::default()
            };
            store.commit(write).await.unwrap();
        }
        let write = NodeWrite {
            put_pending: pending(30),
            ..NodeWrite::default()
        };
        store.commit(write).await.unwrap();
        let pending = store.pending(0, 100).await.unwrap();
        EventStore::close(&store).await.unwrap();
        pending
    };
    downgrade_to_schema_one(dir.path(), &stored, &confirmed(2_000), &node_pending);

    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(pending_counts(&store).await, [8, 8, 7, 7, 0]);
    // The confirmed log reads as before, whole and from the middle.
    assert_eq!(
        store.confirmed(Seq(0), 5_000).await.unwrap(),
        confirmed(2_000)
    );
    assert_eq!(
        store.confirmed(Seq(1_500), 3).await.unwrap(),
        confirmed(2_000)[1_500..1_503]
    );
    assert_eq!(store.state().await.unwrap().confirmed_head, Seq(2_000));
    for ((t, ids), n) in stored.iter().zip([3_000, 700]) {
        let tenant = TenantId::new(t).unwrap();
        // Every stored id is still known: the same events are duplicates at their seqs.
        let again = events(t, n);
        let report = store.append(&tenant, &again).await.unwrap();
        assert_eq!(report.head.get(), n as u64, "nothing was stored twice");
        let by_id: std::collections::HashMap<&str, u64> =
            ids.iter().map(|(id, seq)| (id.as_str(), *seq)).collect();
        for result in &report.results {
            match result.outcome {
                AppendOutcome::Duplicate { seq, .. } => {
                    assert_eq!(seq.get(), by_id[result.id.as_str()]);
                }
                ref other => panic!("{}: {other:?}", result.id),
            }
        }
        // Changed content under a stored id is still refused.
        let changed = event(&ids[17].0, "agg-0", "changed");
        let report = store.append(&tenant, &[changed]).await.unwrap();
        assert!(
            matches!(
                report.results[0].outcome,
                AppendOutcome::Rejected {
                    code: RejectCode::IdConflict,
                    ..
                }
            ),
            "{:?}",
            report.results[0].outcome
        );
        // And new events append after the old ones.
        let new = event(&format!("{t}-new"), "agg-0", "new");
        let report = store
            .append(&tenant, std::slice::from_ref(&new))
            .await
            .unwrap();
        assert!(matches!(
            report.results[0].outcome,
            AppendOutcome::Accepted { .. }
        ));
        let report = store.append(&tenant, &[new]).await.unwrap();
        assert!(matches!(
            report.results[0].outcome,
            AppendOutcome::Duplicate { .. }
        ));
    }
    // The node still knows every confirmed id: confirming them again records nothing, and
    // none can go back to the outbox; a new one is confirmed.
    let again = NodeWrite {
        confirm: confirmed(2_000),
        ..NodeWrite::default()
    };
    assert_eq!(store.commit(again).await.unwrap().newly_confirmed, 0);
    let back = NodeWrite {
        put_pending: vec![confirmed(2_000)[1_234].event.clone()],
        ..NodeWrite::default()
    };
    assert_eq!(
        store.commit(back).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let new = StoredEvent {
        event: event("node-new", "agg-n", "confirmed"),
        seq: Seq(2_001),
        aggregate_version: 2_001,
        recorded_at: 5,
    };
    let write = NodeWrite {
        confirm: vec![new],
        ..NodeWrite::default()
    };
    assert_eq!(store.commit(write).await.unwrap().newly_confirmed, 1);
    EventStore::close(&store).await.unwrap();

    // The database now says the current schema and holds no schema-1 id keys.
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let meta = db.open_tree("synckit_meta").unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap().as_ref(),
        &SCHEMA_VERSION.to_be_bytes()[..]
    );
    let hub = db.open_tree("synckit_hub").unwrap();
    assert_eq!(hub.scan_prefix([b'I']).count(), 0);
    let node = db.open_tree("synckit_node").unwrap();
    assert_eq!(node.scan_prefix([b'c']).count(), 0);
    assert_eq!(node.scan_prefix([b'C']).count(), 0);
    assert_eq!(node.scan_prefix([b'o']).count(), 0);
}

/// `(ordinal, id)` of pending events, to compare listings.
fn listing(pending: &[PendingEvent]) -> Vec<(u64, String)> {
    pending
        .iter()
        .map(|p| (p.ordinal, p.event.id.to_string()))
        .collect()
}

/// What the node side answers: the outbox, each aggregate's part of it, the confirmed log.
async fn node_view(
    store: &SledStore,
) -> (
    Vec<(u64, String)>,
    Vec<Vec<(u64, String)>>,
    Vec<StoredEvent>,
) {
    let all = listing(&store.pending(0, 10_000).await.unwrap());
    let mut by_aggregate = Vec::new();
    for a in 0..5 {
        let aggregate = AggregateId::new(format!("pend-{a}")).unwrap();
        by_aggregate.push(listing(&store.pending_for(&aggregate).await.unwrap()));
    }
    (
        all,
        by_aggregate,
        store.confirmed(Seq(0), 10_000).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_two_node_is_chunked_and_counted_at_open() {
    a_node_is_upgraded_from(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_three_node_moves_its_outbox_ids_into_runs_at_open() {
    a_node_is_upgraded_from(3).await;
}

/// A node store with an outbox and a confirmed log, rewritten in the layout of schema
/// `version`, opens with the same outbox, listings, counts and confirmed log, and later
/// confirmations, removals and moves find every pending event the old layout held.
async fn a_node_is_upgraded_from(version: u32) {
    let dir = tempfile::tempdir().unwrap();
    let events = pending(403);
    let (before, pending) = {
        let store = SledStore::open(dir.path()).unwrap();
        for part in events.chunks(100) {
            let write = NodeWrite {
                put_pending: part.to_vec(),
                ..NodeWrite::default()
            };
            store.commit(write).await.unwrap();
        }
        let write = NodeWrite {
            confirm: confirmed(50),
            ..NodeWrite::default()
        };
        store.commit(write).await.unwrap();
        assert_eq!(pending_counts(&store).await, [101, 101, 101, 100, 0]);
        let view = node_view(&store).await;
        let pending = store.pending(0, 10_000).await.unwrap();
        EventStore::close(&store).await.unwrap();
        (view, pending)
    };
    assert_eq!(before.0.len(), 403);
    assert_eq!(before.2, confirmed(50));
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    match version {
        2 => downgrade_node_to_schema_two(&db, &confirmed(50), &pending),
        3 => downgrade_outbox_ids_to_schema_three(&db, &pending),
        _ => unreachable!("no downgrade to schema {version}"),
    }
    mark_schema(&db, dir.path(), version);
    drop(db);

    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(pending_counts(&store).await, [101, 101, 101, 100, 0]);
    assert_eq!(node_view(&store).await, before);
    // The counts and listings follow later writes: 10 of pend-1 confirmed, 3 of pend-2 dropped, one of
    // pend-3 moved to pend-4.
    let confirm = events
        .iter()
        .filter(|e| e.aggregate_id.as_str() == "pend-1")
        .take(10)
        .enumerate()
        .map(|(i, e)| StoredEvent {
            event: e.clone(),
            seq: Seq(i as u64 + 51),
            aggregate_version: i as u64 + 1,
            recorded_at: 5,
        })
        .collect();
    let remove = events
        .iter()
        .filter(|e| e.aggregate_id.as_str() == "pend-2")
        .take(3)
        .map(|e| e.id.clone())
        .collect();
    let mut moved = events[3].clone();
    assert_eq!(moved.aggregate_id.as_str(), "pend-3");
    moved.aggregate_id = AggregateId::new("pend-4").unwrap();
    let write = NodeWrite {
        confirm,
        remove_pending: remove,
        put_pending: vec![moved],
        ..NodeWrite::default()
    };
    store.commit(write).await.unwrap();
    assert_eq!(pending_counts(&store).await, [101, 91, 98, 99, 1]);
    let (all, by_aggregate, confirmed_log) = node_view(&store).await;
    assert_eq!(all.len(), 390);
    let mut merged: Vec<(u64, String)> = by_aggregate.concat();
    merged.sort();
    assert_eq!(merged, all, "the aggregate listings partition the outbox");
    assert_eq!(confirmed_log.len(), 60);
    let total: u64 = pending_counts(&store).await.iter().sum();
    assert_eq!(store.state().await.unwrap().pending, total);
    EventStore::close(&store).await.unwrap();

    let db = sled::Config::new().path(dir.path()).open().unwrap();
    let meta = db.open_tree("synckit_meta").unwrap();
    assert_eq!(
        meta.get("schema_version").unwrap().unwrap().as_ref(),
        &SCHEMA_VERSION.to_be_bytes()[..]
    );
    let node = db.open_tree("synckit_node").unwrap();
    assert_eq!(
        node.scan_prefix([b'o']).count(),
        0,
        "no outbox-id keys left"
    );
    assert!(
        node.scan_prefix([b'p']).count() > 0,
        "the outbox ids are in runs"
    );
}
