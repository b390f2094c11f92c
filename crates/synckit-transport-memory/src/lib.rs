//! In-process synckit hub and transport over any `EventStore`, with fault injection for tests.
//!
//! A [`MemoryHub`] plays the hub over any [`EventStore`](synckit_types::EventStore): it gives
//! each client a [`MemoryTransport`] bound to one tenant, which implements
//! [`Transport`](synckit_types::Transport) by calling the store directly (push = append,
//! pull = read, head = head) and serves live subscriptions from the store, woken by the hub after
//! every append that stored something. There is no network and no background task.
//!
//! Each transport carries its own [`Faults`]: failed calls, lost responses ("committed, but the
//! reply never arrived"), latency and dropped subscriptions, so retry and resume logic can be
//! tested deterministically.
//!
//! ```
//! use std::sync::Arc;
//!
//! use synckit_store_memory::MemoryStore;
//! use synckit_transport_memory::MemoryHub;
//! use synckit_types::{Event, Hlc, TenantId, Transport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> synckit_types::Result<()> {
//! let hub = MemoryHub::new(Arc::new(MemoryStore::new()));
//! let transport = hub.transport(TenantId::new("acme")?);
//! let event = Event::builder("TaskCreated", "task-1")
//!     .origin("node-1")
//!     .hlc(Hlc::new(1, 0))
//!     .build()?;
//!
//! // The hub commits the push, but the client never hears back; its retry is a duplicate.
//! transport.faults().lose_next_responses(1);
//! assert!(transport.push(&[event.clone()]).await.is_err());
//! let report = transport.push(&[event]).await?;
//! assert_eq!(report.head.get(), 1);
//! # Ok(())
//! # }
//! ```

mod faults;
mod hub;
mod transport;

pub use faults::Faults;
pub use hub::MemoryHub;
pub use transport::{MemoryTransport, SUBSCRIPTION_PAGE_SIZE};
