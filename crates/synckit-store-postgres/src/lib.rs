//! PostgreSQL-backed `EventStore` and `NodeStore` for synckit: the hub store for teams that
//! run PostgreSQL.
//!
//! # When to choose it
//!
//! Choose [`PostgresStore`] for a hub that must survive its host, that your team already backs
//! up and monitors as PostgreSQL, or that runs as several stateless processes behind a load
//! balancer: any number of hubs over one schema hand out one gap-free `seq` order per tenant.
//! For a single embedded hub or a node on a device, sled or SQLite are simpler (no server);
//! for tests and ephemeral nodes, the memory store.
//!
//! # Guarantees
//!
//! - **Durable acknowledgements.** Every append and node commit is one transaction; the call
//!   returns after `COMMIT` succeeded with `synchronous_commit=on` (set on every session unless
//!   the URL's own `options` say otherwise), so the WAL record is flushed.
//! - **Gap-free order across hubs.** Each append locks its tenant's row in `tenants`
//!   (`SELECT ... FOR UPDATE`), assigns `seq = head + 1 ..` and stores the new head before
//!   committing. Appends of a tenant are serialized, `seq` order is commit order, and a reader
//!   that has seen `seq` N never later finds a new event at or below N. Tenants do not wait
//!   for each other.
//! - **Bounded reads.** `head` reads one row; every page seeks through an index and stops at
//!   its limit, so its cost does not grow with the log.
//! - **Isolation.** Every hub table is keyed by tenant and every statement filters by it.
//! - **Versioned schema.** Migrations are applied at open, in one transaction under an
//!   advisory lock (hubs starting together do not race). A schema written by a newer version
//!   is refused with `Corrupted`, naming both versions.
//!
//! Every session the store opens starts with `synchronous_commit=on` and
//! `enable_bitmapscan=off` (each statement is an ordered index seek with a `LIMIT`; without
//! statistics, as right after a bulk load, PostgreSQL would otherwise bitmap-scan and sort every
//! row after the cursor), then the URL's own `options`, then the configured
//! `statement_timeout`.
//!
//! Connections are plain (`NoTls`): TLS is not supported yet, and a URL with
//! `sslmode=require` is refused with a `Config` error. Use a local socket, a private network or
//! a tunnel.
//!
//! As a node store, one schema holds one node.
//!
//! ```no_run
//! # async fn demo() -> synckit_types::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use synckit_store_postgres::{PostgresConfig, PostgresStore};
//! use synckit_types::{DynEventStore, Event, EventStore, Hlc, TenantId};
//!
//! let config = PostgresConfig::new("postgres://synckit@127.0.0.1:5432/synckit")
//!     .with_schema("hub")
//!     .with_pool_size(8)
//!     .with_statement_timeout(Some(Duration::from_secs(10)));
//! let store: DynEventStore = Arc::new(PostgresStore::connect(config).await?);
//! let event = Event::builder("TaskCreated", "task-1")
//!     .origin("n1")
//!     .hlc(Hlc::new(1, 0))
//!     .build()?;
//! let report = store.append(&TenantId::default_tenant(), &[event]).await?;
//! println!("head is now {}", report.head);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod hub;
mod node;
#[cfg(test)]
mod plan_tests;
mod schema;
mod sql;
mod store;

pub use config::{
    DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_SCHEMA,
    DEFAULT_STATEMENT_TIMEOUT, MAX_POOL_SIZE, PostgresConfig,
};
pub use schema::SCHEMA_VERSION;
pub use store::PostgresStore;
/// The PostgreSQL driver the store is built on, for callers that build a
/// `tokio_postgres::Config` or run their own statements beside the store.
pub use tokio_postgres;
