//! synckit: offline-first, event-based data synchronization.
//!
//! Applications append domain events to a local store on each node and keep working offline;
//! nodes converge through a hub that gives every tenant one authoritative order. Conflicts go to
//! pluggable resolvers and are never lost silently.
//!
//! This facade re-exports the stable API of the synckit crates; each optional crate is behind a
//! feature of the same name (`node`, `resolve`, `store-memory`, `transport-memory`,
//! `store-sled`, `store-sqlite`, `store-postgres`, `transport-http`, `transport-ws`, `server`,
//! `protocol`, `buffer`, `coordinator` (with `coordinator-sled`, `coordinator-postgres`),
//! `testkit`, or `full`). Start with [`prelude`].
//!
//! ```
//! use std::sync::Arc;
//! use synckit::prelude::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> synckit::Result<()> {
//! let hub = MemoryHub::new(Arc::new(MemoryStore::new()));
//! let node = Node::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     .transport(Arc::new(hub.transport(TenantId::new("acme")?)))
//!     .open()
//!     .await?;
//! node.append(Event::builder("TaskCreated", "task-1").data(serde_json::json!({"title": "Ship"})))
//!     .await?;
//! let result = node.sync().await?;
//! assert_eq!(result.pushed, 1);
//! # Ok(()) }
//! ```

pub use synckit_types::*;

/// The core types and traits (`synckit-types`).
pub use synckit_types as types;

/// The node engine (`synckit-node`).
#[cfg(feature = "node")]
pub use synckit_node as node;
#[cfg(feature = "node")]
pub use synckit_node::{
    Config, ConfigBuilder, DecisionSummary, Node, NodeBuilder, RetryPolicy, ReviewChoice,
    SyncOutcome, SyncResult, SyncState,
};

/// Conflict resolvers (`synckit-resolve`).
#[cfg(feature = "resolve")]
pub use synckit_resolve as resolve;

/// The in-memory store (`synckit-store-memory`).
#[cfg(feature = "store-memory")]
pub use synckit_store_memory::MemoryStore;

/// The in-process hub and transport (`synckit-transport-memory`).
#[cfg(feature = "transport-memory")]
pub use synckit_transport_memory::{MemoryHub, MemoryTransport};

/// The sled store, the embedded default (`synckit-store-sled`).
#[cfg(feature = "store-sled")]
pub use synckit_store_sled::{SledConfig, SledStore};

/// The SQLite store (`synckit-store-sqlite`).
#[cfg(feature = "store-sqlite")]
pub use synckit_store_sqlite::{SqliteConfig, SqliteStore};

/// The PostgreSQL store (`synckit-store-postgres`).
#[cfg(feature = "store-postgres")]
pub use synckit_store_postgres::{PostgresConfig, PostgresStore};

/// The HTTP transport (`synckit-transport-http`).
#[cfg(feature = "transport-http")]
pub use synckit_transport_http::{HttpConfig, HttpTransport};

/// The WebSocket transport (`synckit-transport-ws`).
#[cfg(feature = "transport-ws")]
pub use synckit_transport_ws::{WsConfig, WsTransport};

/// The hub server (`synckit-server`).
#[cfg(feature = "server")]
pub use synckit_server as server;

/// The wire protocol (`synckit-protocol`).
#[cfg(feature = "protocol")]
pub use synckit_protocol as protocol;

/// The buffered write engine (`synckit-buffer`).
#[cfg(feature = "buffer")]
pub use synckit_buffer as buffer;

/// The sync coordinator (`synckit-coordinator`).
#[cfg(feature = "coordinator")]
pub use synckit_coordinator as coordinator;

/// Conformance suites and the simulation harness (`synckit-testkit`).
#[cfg(feature = "testkit")]
pub use synckit_testkit as testkit;

/// The names most programs need: `use synckit::prelude::*;`.
pub mod prelude {
    pub use synckit_types::{
        AggregateId, Clock, ConflictResolver, Decision, DynEventStore, DynNodeStore, DynTransport,
        Error, ErrorKind, Event, EventBuilder, EventId, EventStore, Filter, NodeId, NodeStore,
        Result, Seq, StoredEvent, TenantId, Transport,
    };

    #[cfg(feature = "node")]
    pub use synckit_node::{Config, Node, ReviewChoice, SyncResult, SyncState};

    #[cfg(feature = "resolve")]
    pub use synckit_resolve::{AdditiveMerge, FirstWriteWins, LastWriteWins, ManualReview};

    #[cfg(feature = "store-memory")]
    pub use synckit_store_memory::MemoryStore;

    #[cfg(feature = "transport-memory")]
    pub use synckit_transport_memory::{MemoryHub, MemoryTransport};
}
