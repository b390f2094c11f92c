//! Damage and bad input: a newer schema version, a role without privileges, corrupted rows,
//! an unreachable or silent server, a lost connection and a lock held past the statement
//! timeout. Each gives a clear error of a fitting kind, never a panic, and loses nothing stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::time::Duration;

use common::{TestDb, random_suffix};
use serde_json::json;
use synckit_store_postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION};
use synckit_types::{
    AppendOutcome, AuditQuery, AuditRecord, Conflict, DecisionKind, ErrorKind, Event, EventStore,
    EventStoreExt, Hlc, NodeStore, NodeWrite, ReadRequest, ReviewEntry, Seq, StoredEvent, TenantId,
};

/// Every call of these tests is bounded: a hang is a failure, not a stuck CI run.
const BOUND: Duration = Duration::from_secs(60);

fn tenant() -> TenantId {
    TenantId::new("t1").unwrap()
}

fn event(id: &str, aggregate: &str) -> Event {
    Event::builder("TaskRenamed", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id }))
        .build()
        .unwrap()
}

fn events(ids: &[&str]) -> Vec<Event> {
    ids.iter().map(|id| event(id, "a")).collect()
}

async fn ids_of(store: &PostgresStore) -> Vec<String> {
    store
        .read_all(&tenant())
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_version_is_refused() {
    let Some(db) = TestDb::new("newer_schema_version_is_refused") else {
        return;
    };
    let schema = db.fresh_schema();
    let store = db.open(&schema).await;
    store
        .append(&tenant(), &events(&["e1", "e2", "e3"]))
        .await
        .unwrap();
    EventStore::close(&store).await.unwrap();

    let raw = db.raw().await;
    let newer = SCHEMA_VERSION + 1;
    raw.execute(
        &format!("INSERT INTO \"{schema}\".schema_migrations (version) VALUES ($1)"),
        &[&newer],
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(BOUND, PostgresStore::connect(db.config(&schema)))
        .await
        .unwrap()
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains(&format!("version {newer}"))
            && text.contains(&format!("version {SCHEMA_VERSION}")),
        "the error names both versions: {text}"
    );

    // Nothing was touched: with the marker gone, the data is all there.
    raw.execute(
        &format!("DELETE FROM \"{schema}\".schema_migrations WHERE version = $1"),
        &[&newer],
    )
    .await
    .unwrap();
    let store = db.open(&schema).await;
    assert_eq!(ids_of(&store).await, ["e1", "e2", "e3"]);
    let versions: i64 = raw
        .query_one(
            &format!("SELECT count(*) FROM \"{schema}\".schema_migrations"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, SCHEMA_VERSION, "reopening applies nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_without_privileges_is_forbidden() {
    let Some(db) = TestDb::new("role_without_privileges_is_forbidden") else {
        return;
    };
    let role = format!("synckit_noperm_{}", random_suffix());
    let raw = db.raw().await;
    raw.batch_execute(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .await
        .unwrap();
    db.track_role(&role);
    let as_role = |schema: &str| {
        PostgresConfig::new(db.url_as(&role))
            .with_schema(schema)
            .with_pool_size(2)
    };

    // A schema it may not create.
    let missing = db.fresh_schema();
    let err = tokio::time::timeout(BOUND, PostgresStore::connect(as_role(&missing)))
        .await
        .unwrap()
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert!(
        err.to_string().contains(&missing),
        "names the schema: {err}"
    );

    // A schema it may not use, with data in it.
    let schema = db.fresh_schema();
    let owner = db.open(&schema).await;
    owner
        .append(&tenant(), &events(&["e1", "e2"]))
        .await
        .unwrap();
    let err = tokio::time::timeout(BOUND, PostgresStore::connect(as_role(&schema)))
        .await
        .unwrap()
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert_eq!(ids_of(&owner).await, ["e1", "e2"], "nothing lost");

    // With table privileges only (no DDL), a migrated schema opens and works.
    raw.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";"
    ))
    .await
    .unwrap();
    let limited = PostgresStore::connect(as_role(&schema)).await.unwrap();
    let report = limited.append(&tenant(), &events(&["e3"])).await.unwrap();
    assert_eq!(report.head, Seq(3));
    EventStore::close(&limited).await.unwrap();
    raw.batch_execute(&format!(
        "REVOKE ALL ON ALL TABLES IN SCHEMA \"{schema}\" FROM \"{role}\";
         REVOKE ALL ON SCHEMA \"{schema}\" FROM \"{role}\";"
    ))
    .await
    .unwrap();
    assert_eq!(ids_of(&owner).await, ["e1", "e2", "e3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_event_rows_are_reported() {
    let Some(db) = TestDb::new("corrupted_event_rows_are_reported") else {
        return;
    };
    let schema = db.fresh_schema();
    let store = db.open(&schema).await;
    store
        .append(&tenant(), &events(&["e1", "e2", "e3"]))
        .await
        .unwrap();
    let raw = db.raw().await;
    let key: i64 = raw
        .query_one(
            &format!("SELECT tenant_key FROM \"{schema}\".tenants WHERE name = 't1'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);

    // A row with a body that is not JSON, inserted behind the store's back at seq 4.
    raw.execute(
        &format!(
            "INSERT INTO \"{schema}\".events
                 (tenant_key, seq, id, aggregate_id, aggregate_version, kind, recorded_at, body)
             VALUES ($1, 4, 'bad', 'a', 4, 'TaskRenamed', 0, '{{\"id\": \"bad\", trunc');
             "
        ),
        &[&key],
    )
    .await
    .unwrap();
    raw.execute(
        &format!("UPDATE \"{schema}\".tenants SET head = 4 WHERE tenant_key = $1"),
        &[&key],
    )
    .await
    .unwrap();
    let err = store
        .read(&tenant(), &ReadRequest::after(Seq::ZERO, 10))
        .await
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert!(
        err.to_string().contains("seq 4") && err.to_string().contains("t1"),
        "names where: {err}"
    );
    // Everything else still works: the intact part of the log, head, versions, new appends.
    let page = store
        .read(&tenant(), &ReadRequest::after(Seq::ZERO, 3))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 3);
    assert_eq!(store.head(&tenant()).await.unwrap(), Seq(4));
    let report = store.append(&tenant(), &events(&["e5"])).await.unwrap();
    assert_eq!(report.head, Seq(5));
    let page = store
        .read(&tenant(), &ReadRequest::after(Seq(4), 10))
        .await
        .unwrap();
    assert_eq!(page.events[0].event.id.as_str(), "e5");
    // Re-sending the damaged id cannot be judged duplicate or not: an error, not a guess.
    let err = store
        .append(&tenant(), &events(&["bad"]))
        .await
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");

    // A well-formed body under the wrong row.
    raw.execute(
        &format!(
            "UPDATE \"{schema}\".events SET body = (SELECT body FROM \"{schema}\".events
                 WHERE tenant_key = $1 AND id = 'e1') WHERE tenant_key = $1 AND id = 'e2'"
        ),
        &[&key],
    )
    .await
    .unwrap();
    let err = store
        .read(&tenant(), &ReadRequest::after(Seq(1), 1))
        .await
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    assert!(
        err.to_string().contains("e1") && err.to_string().contains("e2"),
        "{err}"
    );
    let first = store
        .read(&tenant(), &ReadRequest::after(Seq::ZERO, 1))
        .await
        .unwrap();
    assert_eq!(first.events[0].event.id.as_str(), "e1", "e1 is intact");
}

/// The kind of an error that must have happened.
#[track_caller]
fn kind<T: std::fmt::Debug>(result: synckit_types::Result<T>) -> ErrorKind {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => e.kind(),
    }
}

fn conflict() -> Conflict {
    Conflict {
        aggregate_id: synckit_types::AggregateId::new("a").unwrap(),
        base_version: 0,
        current_version: 1,
        local: Vec::new(),
        remote: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_node_rows_are_reported() {
    let Some(db) = TestDb::new("corrupted_node_rows_are_reported") else {
        return;
    };
    let schema = db.fresh_schema();
    let store = db.open(&schema).await;
    store
        .commit(NodeWrite {
            confirm: vec![StoredEvent {
                event: event("e1", "a"),
                seq: Seq(1),
                aggregate_version: 1,
                recorded_at: 0,
            }],
            put_pending: vec![event("p1", "a")],
            put_reviews: vec![ReviewEntry {
                id: "r1".to_owned(),
                conflict: conflict(),
                reason: "test".to_owned(),
                strategy: "manual".to_owned(),
                rule: None,
                created_at: 0,
            }],
            audit: vec![AuditRecord {
                id: "x1".to_owned(),
                at: 0,
                decision: DecisionKind::KeepRemote,
                strategy: "manual".to_owned(),
                rule: None,
                group: None,
                reason: "test".to_owned(),
                kind: String::new(),
                changed_fields: Vec::new(),
                context: Default::default(),
                conflict: conflict(),
                result: Vec::new(),
                decided_by: "resolver".to_owned(),
                duration_us: 0,
            }],
            cursor: Some(Seq(1)),
            ..NodeWrite::default()
        })
        .await
        .unwrap();
    let raw = db.raw().await;
    raw.batch_execute(&format!(
        "UPDATE \"{schema}\".node_confirmed SET body = 'garbage';
         UPDATE \"{schema}\".node_pending SET body = '[1, 2';
         UPDATE \"{schema}\".node_reviews SET body = '{{}}';
         UPDATE \"{schema}\".node_audit SET body = 'null';"
    ))
    .await
    .unwrap();
    assert_eq!(
        kind(store.confirmed(Seq::ZERO, 10).await),
        ErrorKind::Corrupted
    );
    assert_eq!(kind(store.pending(0, 10).await), ErrorKind::Corrupted);
    assert_eq!(kind(store.reviews(10).await), ErrorKind::Corrupted);
    assert_eq!(kind(store.review("r1").await), ErrorKind::Corrupted);
    assert_eq!(
        kind(store.audit(&AuditQuery::default()).await),
        ErrorKind::Corrupted
    );
    // The counters and cursor were not damaged.
    let state = store.state().await.unwrap();
    assert_eq!((state.cursor, state.pending, state.reviews), (Seq(1), 1, 1));

    raw.batch_execute(&format!(
        "UPDATE \"{schema}\".node_state SET hlc = 'not a clock'"
    ))
    .await
    .unwrap();
    let err = store.state().await.unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    let err = store
        .commit(NodeWrite {
            cursor: Some(Seq(2)),
            ..NodeWrite::default()
        })
        .await
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    let cursor: i64 = raw
        .query_one(
            &format!("SELECT pull_cursor FROM \"{schema}\".node_state"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(cursor, 1, "a refused commit changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_unavailable() {
    // A port on loopback that nothing listens on: bind, note it, close it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .with_connect_timeout(Duration::from_secs(2))
        .with_pool_size(1);
    let err = tokio::time::timeout(BOUND, PostgresStore::connect(config))
        .await
        .expect("a refused connection fails within the bound")
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_hits_the_connect_timeout() {
    // Accepts TCP connections (the kernel completes the handshake) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = PostgresConfig::new(format!("postgres://postgres@127.0.0.1:{port}/test"))
        .with_connect_timeout(Duration::from_millis(300))
        .with_pool_size(1);
    let err = tokio::time::timeout(BOUND, PostgresStore::connect(config))
        .await
        .expect("a silent server fails within the bound")
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("connect timeout"), "{err}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_are_retryable_and_lose_nothing() {
    let Some(db) = TestDb::new("lost_connections_are_retryable_and_lose_nothing") else {
        return;
    };
    let schema = db.fresh_schema();
    let app = format!("synckit_test_{}", random_suffix());
    let url = if db.url.contains('?') {
        format!("{}&application_name={app}", db.url)
    } else {
        format!("{}?application_name={app}", db.url)
    };
    let config = PostgresConfig::new(url)
        .with_schema(schema)
        .with_pool_size(2);
    let store = PostgresStore::connect(config).await.unwrap();
    store
        .append(&tenant(), &events(&["e1", "e2"]))
        .await
        .unwrap();

    let raw = db.raw().await;
    let killed: i64 = raw
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) AS t",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "the store's sessions were found");

    // Calls may fail while the pool notices, but only with retryable errors, and they recover.
    let mut recovered = false;
    for _ in 0..5 {
        match tokio::time::timeout(BOUND, store.append(&tenant(), &events(&["e3"])))
            .await
            .unwrap()
        {
            Ok(report) => {
                assert!(report.results[0].outcome.is_stored());
                recovered = true;
                break;
            }
            Err(e) => {
                eprintln!("expected error: {e}");
                assert!(e.is_retryable(), "a lost connection must be retryable: {e}");
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            }
        }
    }
    assert!(recovered, "the store reconnects");
    assert_eq!(ids_of(&store).await, ["e1", "e2", "e3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_held_past_the_statement_timeout_is_a_retryable_timeout() {
    let Some(db) = TestDb::new("lock_held_past_the_statement_timeout_is_a_retryable_timeout")
    else {
        return;
    };
    let schema = db.fresh_schema();
    let store = PostgresStore::connect(
        db.config(&schema)
            .with_statement_timeout(Some(Duration::from_millis(300))),
    )
    .await
    .unwrap();
    store.append(&tenant(), &events(&["e1"])).await.unwrap();

    // Another session (a stuck hub) holds the tenant's append lock.
    let mut raw = db.raw().await;
    let tx = raw.transaction().await.unwrap();
    tx.execute(
        &format!("SELECT head FROM \"{schema}\".tenants WHERE name = 't1' FOR UPDATE"),
        &[],
    )
    .await
    .unwrap();
    let err = tokio::time::timeout(BOUND, store.append(&tenant(), &events(&["e2", "e3"])))
        .await
        .unwrap()
        .unwrap_err();
    eprintln!("expected error: {err}");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable(), "{err}");
    // Readers do not wait for the lock.
    assert_eq!(store.head(&tenant()).await.unwrap(), Seq(1));
    tx.rollback().await.unwrap();

    let report = store
        .append(&tenant(), &events(&["e2", "e3"]))
        .await
        .unwrap();
    assert!(
        report
            .results
            .iter()
            .all(|r| matches!(r.outcome, AppendOutcome::Accepted { .. })),
        "the timed-out append stored nothing: {report:?}"
    );
    assert_eq!(ids_of(&store).await, ["e1", "e2", "e3"]);
}
