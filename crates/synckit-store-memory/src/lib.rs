//! In-memory `EventStore` and `NodeStore`: one [`MemoryStore`] plays the hub role (a log per
//! tenant) and the node role (confirmed log, outbox, cursor, review queue, audit trail).
//!
//! Nothing is written to disk: the store lives as long as the process. It is the reference
//! backend of the store conformance suite in `synckit-testkit`, the store of in-process hubs in
//! tests, and a fit for ephemeral nodes that re-sync from the hub on every start.
//!
//! Every call takes one `std::sync::Mutex` for the whole of its work and never awaits while
//! holding it, so each call is atomic: an append, a read or a commit sees and leaves the store
//! in a consistent state, and a dropped future has either done all of its work or none of it.
//!
//! ```
//! # async fn demo() -> synckit_types::Result<()> {
//! use std::sync::Arc;
//! use synckit_store_memory::MemoryStore;
//! use synckit_types::{DynEventStore, Event, EventStore, Hlc, TenantId};
//!
//! let store: DynEventStore = Arc::new(MemoryStore::new());
//! let event = Event::builder("TaskCreated", "task-1")
//!     .origin("n1")
//!     .hlc(Hlc::new(1, 0))
//!     .build()?;
//! let report = store.append(&TenantId::default_tenant(), &[event]).await?;
//! assert_eq!(report.head.get(), 1);
//! # Ok(())
//! # }
//! ```

mod hub;
mod node;
mod store;

pub use store::MemoryStore;
