//! Runs the store conformance suite against `synckit-store-memory`'s `MemoryStore`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use synckit_store_memory::MemoryStore;
use synckit_testkit::store_suite::{event_store_suite, node_store_suite};
use synckit_types::{DynEventStore, DynNodeStore};

fn event_store() -> DynEventStore {
    Arc::new(MemoryStore::new())
}

fn node_store() -> DynNodeStore {
    Arc::new(MemoryStore::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_conformance() {
    event_store_suite(|| async { event_store() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_store_conformance() {
    node_store_suite(|| async { node_store() }).await;
}

// The suite must not depend on the runtime flavor: run it on one thread as well.
#[tokio::test]
async fn event_store_conformance_current_thread() {
    event_store_suite(|| async { event_store() }).await;
}

#[tokio::test]
async fn node_store_conformance_current_thread() {
    node_store_suite(|| async { node_store() }).await;
}
