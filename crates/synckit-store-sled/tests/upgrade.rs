//! Opening a store written by schema 1 (one id-index key per event) upgrades it in place to
//! the current schema (sorted id runs), and the upgraded store answers exactly as before.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test.

use std::path::Path;

use serde_json::json;
use synckit_store_sled::{SCHEMA_VERSION, SledStore, sled};
use synckit_types::{
    AppendOutcome, ErrorKind, Event, EventStore, EventStoreExt, Hlc, NodeStore, NodeWrite,
    RejectCode, Seq, StoredEvent, TenantId,
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

/// Rewrite a closed store's id indexes in the schema-1 layout, with no runs, and mark the
/// database and the marker file as schema 1: the hub's `I lp(tenant) id` -> seq instead of
/// `J`, the node's `c id` -> seq instead of `d`.
fn downgrade_to_schema_one(
    dir: &Path,
    stored: &[(String, Vec<(String, u64)>)],
    node_confirmed: &[StoredEvent],
) {
    let db = sled::Config::new().path(dir).open().unwrap();
    let node = db.open_tree("synckit_node").unwrap();
    let runs: Vec<_> = node
        .scan_prefix([b'd'])
        .keys()
        .map(Result::unwrap)
        .collect();
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
    let meta = db.open_tree("synckit_meta").unwrap();
    meta.insert("schema_version", &1_u32.to_be_bytes()[..])
        .unwrap();
    db.flush().unwrap();
    drop(db);
    let marker = dir.join("synckit-store.json");
    let text = std::fs::read_to_string(&marker).unwrap();
    let old = text.replace(
        &format!("\"schema_version\": {SCHEMA_VERSION}"),
        "\"schema_version\": 1",
    );
    assert_ne!(old, text, "the marker names its schema version");
    std::fs::write(&marker, old).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_one_store_is_upgraded_at_open() {
    assert_eq!(SCHEMA_VERSION, 2, "this test upgrades from schema 1 to 2");
    let dir = tempfile::tempdir().unwrap();
    let tenants = ["alpha", "beta"];
    let mut stored = Vec::new();
    {
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
        EventStore::close(&store).await.unwrap();
    }
    downgrade_to_schema_one(dir.path(), &stored, &confirmed(2_000));

    let store = SledStore::open(dir.path()).unwrap();
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

    // The database now says schema 2 and holds no schema-1 id keys.
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
}
