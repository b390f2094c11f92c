//! The store conformance suite from synckit-testkit, in both roles, each check on a fresh
//! store in its own temporary directory.
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test.

use std::sync::{Arc, Mutex};

use synckit_store_sled::SledStore;
use synckit_testkit::store_suite::{event_store_suite, node_store_suite};
use synckit_types::{DynEventStore, DynNodeStore};
use tempfile::TempDir;

/// Opens stores in fresh directories and keeps the directories until the test ends.
#[derive(Default, Clone)]
struct Dirs(Arc<Mutex<Vec<TempDir>>>);

impl Dirs {
    fn open(&self) -> Arc<SledStore> {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        self.0.lock().unwrap().push(dir);
        Arc::new(store)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_conformance() {
    let dirs = Dirs::default();
    event_store_suite(|| {
        let dirs = dirs.clone();
        async move { dirs.open() as DynEventStore }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_store_conformance() {
    let dirs = Dirs::default();
    node_store_suite(|| {
        let dirs = dirs.clone();
        async move { dirs.open() as DynNodeStore }
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn conformance_on_a_current_thread_runtime() {
    let dirs = Dirs::default();
    event_store_suite(|| {
        let dirs = dirs.clone();
        async move { dirs.open() as DynEventStore }
    })
    .await;
    node_store_suite(|| {
        let dirs = dirs.clone();
        async move { dirs.open() as DynNodeStore }
    })
    .await;
}
