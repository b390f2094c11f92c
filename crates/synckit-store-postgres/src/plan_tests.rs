//! Checks that PostgreSQL runs every read and lookup of the store through an index, never a
//! sequential scan, with custom and with generic (prepared) plans. Needs the test database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

use std::sync::Arc;

use serde_json::json;
use synckit_types::{Event, EventStore, Hlc, NodeStore, NodeWrite, StoredEvent, TenantId};

use crate::schema::quote;
use crate::{PostgresConfig, PostgresStore};

fn url() -> Option<String> {
    synckit_testkit::services::postgres_url("query plan tests")
}

fn event(n: usize) -> Event {
    Event::builder(
        ["Created", "Renamed", "Closed"][n % 3],
        format!("agg-{}", n % 50),
    )
    .id(format!("evt-{n:08}"))
    .origin("n1")
    .hlc(Hlc::new(1_000, 0))
    .data(json!({ "n": n }))
    .build()
    .unwrap()
}

/// The plan of `sql`, as text.
async fn plan(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client
        .query(&format!("EXPLAIN {sql}"), &[])
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"));
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_lookups_use_indexes() {
    let Some(url) = url() else { return };
    let schema = format!("synckit_test_plan_{:016x}", fastrand::u64(..));
    let store = Arc::new(
        PostgresStore::connect(
            PostgresConfig::new(url.clone())
                .with_schema(&schema)
                .with_pool_size(2),
        )
        .await
        .unwrap(),
    );
    // Spawned, so that a failed check is reported by the JoinHandle and the schema is still
    // dropped below.
    let outcome = tokio::spawn(check_plans(store.clone(), url.clone(), schema.clone()))
        .await
        .map_err(|e| e.into_panic());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    EventStore::close(&*store).await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {} CASCADE", quote(&schema)))
        .await
        .unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn check_plans(store: Arc<PostgresStore>, url: String, schema: String) {
    let schema = schema.as_str();
    // Two tenants, so that every plan must also pick its tenant.
    let (big, small) = (
        TenantId::new("big").unwrap(),
        TenantId::new("small").unwrap(),
    );
    for chunk in (0..20_000).collect::<Vec<_>>().chunks(2_000) {
        let events: Vec<Event> = chunk.iter().map(|&n| event(n)).collect();
        store.append(&big, &events).await.unwrap();
    }
    store
        .append(&small, &(0..100).map(event).collect::<Vec<_>>())
        .await
        .unwrap();
    let confirmed: Vec<StoredEvent> = (1..=5_000)
        .map(|n| StoredEvent {
            event: event(n),
            seq: synckit_types::Seq(n as u64),
            aggregate_version: 1 + (n / 50) as u64,
            recorded_at: 0,
        })
        .collect();
    store
        .commit(NodeWrite {
            confirm: confirmed,
            put_pending: (5_001..8_000).map(event).collect(),
            ..NodeWrite::default()
        })
        .await
        .unwrap();

    // A session set up as the store's are (its planner settings matter here).
    let (client, connection) = PostgresConfig::new(url.clone())
        .validate()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    // A hub has many tenants; with two, a scan of the one-page table would be the best plan.
    client
        .batch_execute(&format!(
            "INSERT INTO {}.tenants (name) SELECT 'filler-' || g FROM generate_series(1, 5000) g",
            quote(schema)
        ))
        .await
        .unwrap();

    let sql = &store.sql;
    let key: i64 = client
        .query_one(
            &format!(
                "SELECT tenant_key FROM {}.tenants WHERE name = 'big'",
                quote(schema)
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let key = key.to_string();
    // (what, statement, arguments as SQL literals, what the plan must contain)
    let checks: Vec<(&str, &str, String, &[&str])> = vec![
        ("head", &sql.head, "'big'".into(), &["tenants_name_key"]),
        (
            "aggregate version",
            &sql.aggregate_version,
            "'big', 'agg-7'".into(),
            &["Index Scan Backward using events_aggregate"],
        ),
        (
            "page",
            &sql.read_all,
            "'big', 10000, 100, 10100".into(),
            &["events_pkey"],
        ),
        (
            "page of an aggregate",
            &sql.read_aggregate,
            "'big', 10000, 100, 'agg-7', '{}'".into(),
            &["events_aggregate"],
        ),
        (
            "page of an aggregate and kinds",
            &sql.read_aggregate,
            "'big', 10000, 100, 'agg-7', '{Closed,Created}'".into(),
            &["events_aggregate"],
        ),
        (
            "page of kinds",
            &sql.read_kinds,
            "'big', 10000, 100, '{Closed,Created}', 20000".into(),
            &["events_pkey"],
        ),
        (
            "idempotency lookup",
            &sql.known_ids,
            format!("{key}, '{{evt-00000001,evt-00019999,nope}}'"),
            &["events_id"],
        ),
        (
            "versions lookup",
            &sql.versions,
            "'big', '{agg-1,agg-2}'".into(),
            &["Index Scan Backward using events_aggregate"],
        ),
        (
            "confirmed page",
            &sql.confirmed_page,
            "10000, 100".into(),
            &["node_confirmed_pkey"],
        ),
        (
            "pending page",
            &sql.pending_page,
            "10000, 100".into(),
            &["node_pending_pkey"],
        ),
        (
            "local aggregate head",
            &sql.aggregate_head,
            "'agg-7'".into(),
            &["Backward using node_confirmed_aggregate"],
        ),
        (
            "node state",
            &sql.node_state,
            String::new(),
            &["Backward using node_confirmed_pkey"],
        ),
    ];
    // First without statistics (as right after a bulk load, before autovacuum analyzed the
    // tables), then with them.
    for (stats, cache_mode) in [
        ("no statistics", "auto"),
        ("no statistics", "force_generic_plan"),
        ("analyzed", "auto"),
        ("analyzed", "force_generic_plan"),
    ] {
        if stats == "analyzed" {
            client
                .batch_execute(&format!(
                    "ANALYZE {s}.events; ANALYZE {s}.tenants; ANALYZE {s}.node_confirmed; \
                     ANALYZE {s}.node_pending",
                    s = quote(schema)
                ))
                .await
                .unwrap();
        }
        client
            .batch_execute(&format!("SET plan_cache_mode = {cache_mode}"))
            .await
            .unwrap();
        let mode = format!("{stats}, {cache_mode}");
        for (what, statement, args, indexes) in &checks {
            // A prepared statement, as the driver sends it: under force_generic_plan the plan
            // is the one PostgreSQL reuses for every later execution.
            client
                .batch_execute(&format!("PREPARE checked AS {statement}"))
                .await
                .unwrap_or_else(|e| panic!("PREPARE {what}: {e}"));
            let call = if args.is_empty() {
                "EXECUTE checked".to_owned()
            } else {
                format!("EXECUTE checked({args})")
            };
            let text = plan(&client, &call).await;
            client.batch_execute("DEALLOCATE checked").await.unwrap();
            if std::env::var_os("SYNCKIT_SHOW_PLANS").is_some() {
                eprintln!("--- {what} ({mode}):\n{text}");
            }
            for table in ["events", "tenants", "node_confirmed", "node_pending"] {
                // Counting one aggregate's outbox events: on a small outbox (3,000 rows here)
                // a scan of it is the planner's honest best, and the outbox is not a log.
                if *what == "local aggregate head" && table == "node_pending" {
                    continue;
                }
                assert!(
                    !text.contains(&format!("Seq Scan on {table}")),
                    "{what} ({mode}) scans {table}:\n{text}"
                );
                assert!(
                    !text.contains(&format!("Bitmap Heap Scan on {table}")),
                    "{what} ({mode}) bitmap-scans {table}:\n{text}"
                );
            }
            for index in *indexes {
                assert!(
                    text.contains(index),
                    "{what} ({mode}) does not use {index}:\n{text}"
                );
            }
        }
    }
}
