//! Runs the store conformance suite against `PostgresStore`, each check on a fresh schema, and
//! the gap-free reader check and the whole hub suite across two hubs over one schema.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use common::TestDb;
use synckit_testkit::store_suite::{
    check_readers_never_skip_across, event_store_suite, node_store_suite,
};
use synckit_types::{
    AggregateId, AppendReport, DynEventStore, DynNodeStore, Event, EventStore, Page, ReadRequest,
    Result, Seq, TenantId,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_conformance() {
    let Some(db) = TestDb::new("event_store_conformance") else {
        return;
    };
    let db = &db;
    event_store_suite(|| async move { Arc::new(db.store().await) as DynEventStore }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_store_conformance() {
    let Some(db) = TestDb::new("node_store_conformance") else {
        return;
    };
    let db = &db;
    node_store_suite(|| async move { Arc::new(db.store().await) as DynNodeStore }).await;
}

// The suite must not depend on the runtime flavor: run it on one thread as well.
#[tokio::test]
async fn event_store_conformance_current_thread() {
    let Some(db) = TestDb::new("event_store_conformance_current_thread") else {
        return;
    };
    let db = &db;
    event_store_suite(|| async move { Arc::new(db.store().await) as DynEventStore }).await;
}

#[tokio::test]
async fn node_store_conformance_current_thread() {
    let Some(db) = TestDb::new("node_store_conformance_current_thread") else {
        return;
    };
    let db = &db;
    node_store_suite(|| async move { Arc::new(db.store().await) as DynNodeStore }).await;
}

/// Invariant 4 with several hubs: writers and readers spread over two stores (two pools, as two
/// hub processes would have) over one schema never skip an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_skip_across_two_hubs() {
    let Some(db) = TestDb::new("readers_never_skip_across_two_hubs") else {
        return;
    };
    for round in 0..3 {
        let schema = db.fresh_schema();
        let a: DynEventStore = Arc::new(db.open(&schema).await);
        let b: DynEventStore = Arc::new(db.open(&schema).await);
        eprintln!("two hubs, round {round}");
        check_readers_never_skip_across(vec![a, b]).await;
    }
}

/// Every call goes to the next of several hubs over one schema, so a check's appends, reads
/// and retries each land on a different hub.
struct RoundRobin {
    hubs: Vec<DynEventStore>,
    next: AtomicUsize,
}

impl RoundRobin {
    fn pick(&self) -> &DynEventStore {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.hubs[i % self.hubs.len()]
    }
}

impl fmt::Debug for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoundRobin")
            .field("hubs", &self.hubs.len())
            .finish()
    }
}

#[async_trait]
impl EventStore for RoundRobin {
    async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport> {
        self.pick().append(tenant, events).await
    }

    async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
        self.pick().read(tenant, request).await
    }

    async fn head(&self, tenant: &TenantId) -> Result<Seq> {
        self.pick().head(tenant).await
    }

    async fn aggregate_version(
        &self,
        tenant: &TenantId,
        aggregate_id: &AggregateId,
    ) -> Result<u64> {
        self.pick().aggregate_version(tenant, aggregate_id).await
    }

    async fn close(&self) -> Result<()> {
        for hub in &self.hubs {
            hub.close().await?;
        }
        Ok(())
    }
}

/// The whole hub suite with every call alternating between two hubs over one schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_conformance_across_two_hubs() {
    let Some(db) = TestDb::new("event_store_conformance_across_two_hubs") else {
        return;
    };
    let db = &db;
    event_store_suite(|| async move {
        let schema = db.fresh_schema();
        let hubs: Vec<DynEventStore> = vec![
            Arc::new(db.open(&schema).await),
            Arc::new(db.open(&schema).await),
        ];
        Arc::new(RoundRobin {
            hubs,
            next: AtomicUsize::new(0),
        }) as DynEventStore
    })
    .await;
}
