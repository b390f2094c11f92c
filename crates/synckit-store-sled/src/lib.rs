//! sled-backed `EventStore` and `NodeStore` for synckit: the embedded default store.
//!
//! One [`SledStore`] in one directory plays both roles: a hub's tenant logs and a node's state
//! (confirmed log, outbox, cursor, node id and clock, review queue, audit trail). Every append
//! and commit is one atomic sled batch, flushed to disk (fsync) before it is acknowledged under
//! the default [`FlushPolicy::EveryWrite`], so a crash at any instant loses no acknowledged write
//! and never leaves a cursor ahead of its data.
//!
//! # When to choose it
//! Choose this store for a node (desktop, field or edge app, agent) or a single-process hub
//! that wants a durable store with no external service and no C toolchain: it is pure Rust and
//! embedded. Choose SQLite instead when other tools must read the file, or when several
//! processes must open it (sled allows one process per directory); choose PostgreSQL for
//! several hubs over one database. Note that sled 0.34 is a beta storage engine whose on-disk
//! format may change between its releases; this crate pins it and guards its own layout with a
//! schema-version marker.
//!
//! # Layout, in brief
//! Three trees: `synckit_meta` (schema marker), `synckit_hub` and `synckit_node`. Per tenant the
//! hub tree holds the log in chunks of up to 16 consecutive events keyed by their last `seq`,
//! an id index for idempotency (sorted runs of up to 64 ids, keyed by their first id), an
//! aggregate index and a kind index (one record per aggregate or kind per append, carrying
//! versions and kinds) and the head. sled's cost is per key written, so an append of 1,000
//! events with time-ordered ids (the default UUIDv7) writes about 100 records. Numbers in keys
//! are big-endian, so every paged read is one range seek. A store written by schema 1 is
//! upgraded in place when it is opened. Heads and the node's counters are also kept in memory, loaded and checked at open, so
//! `head` and `state` are O(1).
//!
//! Beside sled's files, `synckit-store.json` records the schema version (checked before sled
//! opens anything) and the progress at the last clean close. sled recovers a damaged file by
//! dropping everything after the damage, silently; with the marker the store refuses to open
//! instead, naming what is missing, and never writes on top of the shortened log.
//!
//! ```
//! # async fn demo() -> synckit_types::Result<()> {
//! use std::sync::Arc;
//! use synckit_store_sled::SledStore;
//! use synckit_types::{DynEventStore, Event, EventStore, Hlc, TenantId};
//!
//! let dir = std::env::temp_dir().join(format!("synckit-doc-{}", std::process::id()));
//! let store: DynEventStore = Arc::new(SledStore::open(&dir)?);
//! let event = Event::builder("TaskCreated", "task-1")
//!     .origin("n1")
//!     .hlc(Hlc::new(1, 0))
//!     .build()?;
//! let report = store.append(&TenantId::default_tenant(), &[event]).await?;
//! assert_eq!(report.head.get(), 1);
//! store.close().await?;
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```

mod chunks;
mod codec;
mod config;
mod error;
mod hub;
mod idindex;
mod marker;
mod node;
mod seek;
mod store;

pub use codec::SCHEMA_VERSION;
pub use config::{
    DEFAULT_CACHE_CAPACITY, FlushPolicy, MAX_FLUSH_INTERVAL, MIN_CACHE_CAPACITY, SledConfig,
};
pub use store::SledStore;

/// The sled crate this store is built on, re-exported so tools (the benchmarks' raw baseline,
/// offline inspection) use exactly the same version. Writing to a store's trees directly
/// bypasses every check of this crate.
pub use sled;
