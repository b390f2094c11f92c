//! SQLite-backed `EventStore` and `NodeStore` for synckit (rusqlite, bundled SQLite, WAL).
//!
//! [`SqliteStore`] keeps hub logs (one per tenant) and a node's state (confirmed log, outbox,
//! cursor, node id and clock, review queue, audit trail) in one SQLite database file.
//!
//! # When to choose it
//! For applications that already ship SQLite, or want one ordinary file they can back up, copy
//! and inspect with the `sqlite3` shell: desktop and mobile apps, edge agents, and a
//! single-process hub. Appends go through one writer connection, so a file serves one busy hub
//! process (other processes may share it, taking turns on SQLite's write lock); several hubs
//! over one database belong on PostgreSQL. Tests and ephemeral nodes want the memory store.
//!
//! # Durability
//! The store runs SQLite in WAL mode with `synchronous = FULL` by default: every append or
//! commit is one transaction whose WAL frames are fsynced before `COMMIT` returns, and the
//! store acknowledges only after that, so an acknowledged event survives a process crash and a
//! power loss. [`Synchronous::Normal`] trades the power-loss guarantee for fewer fsyncs (a
//! process crash still loses nothing); `OFF` is not offered.
//!
//! # Gap-free order and atomicity
//! An append runs in one `BEGIN IMMEDIATE` transaction on the single writer connection, so
//! SQLite's write lock is held from before the tenant's head is read until after `COMMIT`.
//! Seqs are assigned as `head + 1, head + 2, ...` inside the transaction, which also moves the
//! head row, so appends are serialized and a tenant's committed seqs are always exactly
//! `1..=head`. Every read runs in one read transaction and sees one committed snapshot, so it
//! can never see seq N+1 without seq N: a reader that has read up to N never later finds a new
//! event at or below N. This holds across processes too (their `BEGIN IMMEDIATE` waits for the
//! lock, up to the busy timeout). A node commit is likewise one transaction: confirmed events,
//! outbox, cursor, reviews and audit change together or not at all.
//!
//! # Async use and cancellation
//! Calls run their SQLite work off the async worker threads: on tokio's blocking pool, or for
//! an append on a multi-thread runtime in `block_in_place` (so the batch is borrowed, not
//! copied). Either runtime flavor works. Dropping a call's future cannot leave half a write: a
//! write the caller gave up on before `COMMIT` is rolled back, and a drop that races with
//! `COMMIT` waits for it (one fsync), so once the drop returns the outcome is settled.
//! [`SqliteStore::open`] itself is blocking: call it at start-up or inside `spawn_blocking`.
//!
//! # Layout
//! An event's row key is `tenant << 40 | seq`, so each tenant's log is one contiguous range of
//! an integer B-tree and an unfiltered page is a range read; ids (unique per tenant) have an
//! index, and aggregates and kinds have posting lists written once per append rather than an
//! index entry per event. `head` and aggregate versions are rows of
//! their own, read in O(1) and O(log n). Limits: 2^40 - 1 events per tenant, 2^23 - 1
//! tenants; beyond them an append fails with `LimitExceeded`. The schema version is kept in
//! `PRAGMA user_version`, the file is marked as a synckit store with `PRAGMA application_id`,
//! and migrations run at open in one transaction. A file with a newer schema version is
//! refused (`Corrupted`, naming both versions) and left unchanged; a SQLite file of another
//! application is refused (`Config`).
//!
//! ```no_run
//! # async fn demo() -> synckit_types::Result<()> {
//! use std::sync::Arc;
//! use synckit_store_sqlite::SqliteStore;
//! use synckit_types::{DynEventStore, Event, EventStore, Hlc, TenantId};
//!
//! let store: DynEventStore = Arc::new(SqliteStore::open("synckit.db")?);
//! let event = Event::builder("TaskCreated", "task-1")
//!     .origin("n1")
//!     .hlc(Hlc::new(1, 0))
//!     .build()?;
//! let report = store.append(&TenantId::default_tenant(), &[event]).await?;
//! assert_eq!(report.head.get(), 1);
//! store.close().await?;
//! # Ok(())
//! # }
//! ```

mod codec;
mod config;
mod error;
mod hub;
mod node;
mod postings;
mod schema;
mod store;

pub use config::{MAX_BUSY_TIMEOUT, MAX_READERS, SqliteConfig, Synchronous};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use store::SqliteStore;

/// The rusqlite this store is built with (bundled SQLite), for code that opens its own
/// connections beside the store: tools, tests and the benchmark's raw baseline.
pub use rusqlite;
