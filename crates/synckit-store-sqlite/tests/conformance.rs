//! The store conformance suite from synckit-testkit, in both roles, each check on a fresh
//! database in its own temporary directory; plus the never-skip check across two stores that
//! share one file (two hub processes over one database).
#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test.

use std::sync::{Arc, Mutex};

use synckit_store_sqlite::SqliteStore;
use synckit_testkit::store_suite::{
    check_readers_never_skip_across, event_store_suite, node_store_suite,
};
use synckit_types::{DynEventStore, DynNodeStore};
use tempfile::TempDir;

/// Temporary directories outlive the suite (each check's store lives as long as its check).
struct Dirs(Mutex<Vec<TempDir>>);

impl Dirs {
    fn new() -> Dirs {
        Dirs(Mutex::new(Vec::new()))
    }

    fn fresh(&self) -> SqliteStore {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
        self.0.lock().unwrap().push(dir);
        store
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_conformance() {
    let dirs = Dirs::new();
    event_store_suite(|| async { Arc::new(dirs.fresh()) as DynEventStore }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_store_conformance() {
    let dirs = Dirs::new();
    node_store_suite(|| async { Arc::new(dirs.fresh()) as DynNodeStore }).await;
}

#[tokio::test(flavor = "current_thread")]
async fn event_store_conformance_on_a_current_thread_runtime() {
    let dirs = Dirs::new();
    event_store_suite(|| async { Arc::new(dirs.fresh()) as DynEventStore }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_skip_across_two_stores_on_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a: DynEventStore = Arc::new(SqliteStore::open(&path).unwrap());
    let b: DynEventStore = Arc::new(SqliteStore::open(&path).unwrap());
    check_readers_never_skip_across(vec![a, b]).await;
}
