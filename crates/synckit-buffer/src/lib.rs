//! synckit-buffer: batches writes in front of any sink by size and time, with bounded memory.
//!
//! A [`BufferedStore<T>`] sits in front of a [`Sink<T>`] (an async batch writer used as
//! `Arc<dyn Sink<T>>`). Writers push items under a short lock and return; a background flusher
//! owned by the store takes a batch out when [`BufferConfig::max_batch`] items are waiting or
//! [`BufferConfig::flush_interval`] has passed since the first of them arrived, and writes it
//! without the lock. So writers never wait for sink I/O until the store is at capacity.
//!
//! ```no_run
//! # async fn demo() -> Result<(), synckit_buffer::BufferError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use synckit_buffer::{Batch, BufferedStore, FnSink, FullPolicy};
//!
//! let sink = Arc::new(FnSink::new(|batch: Batch<String>| async move {
//!     println!("writing {} lines", batch.len());
//!     Ok(())
//! }));
//! let store = BufferedStore::builder("lines", sink)
//!     .max_batch(500)
//!     .flush_interval(Duration::from_millis(200))
//!     .capacity(10_000, 8 << 20)
//!     .weigh(|line: &String| line.len())
//!     .when_full(FullPolicy::Block)
//!     .start()?;
//! store.write("hello".to_owned()).await?;
//! let report = store.close().await;
//! assert!(report.is_clean());
//! # Ok(()) }
//! ```
//!
//! # What it guarantees
//! - **Order and no loss in memory**: batches reach the sink in the order items were accepted;
//!   a failed batch is kept and written again, whole and first, with exponential backoff and
//!   jitter ([`RetryPolicy`]) while the error is retryable. Every item gets a sequence number
//!   ([`Batch::first_seq`]) that a retried batch keeps.
//! - **Bounded memory**: at most [`BufferConfig::capacity_items`] items and
//!   [`BufferConfig::capacity_bytes`] bytes (as a weigher measures them) are held, counting
//!   batches being written or retried and batches kept after a permanent failure. At capacity a
//!   write blocks (default), drops what does not fit (counted), or is rejected
//!   ([`FullPolicy`]).
//! - **Nothing goes nowhere**: a batch refused for good goes to the [`DeadLetter`] you
//!   configure: another sink, a callback, or (default) the store's failed list, which stays
//!   counted against capacity until [`BufferedStore::take_failed`] or `close` hands it back.
//! - **Close**: [`BufferedStore::close`] refuses later writes with [`BufferError::Closed`],
//!   flushes what is held under a deadline of its own (counted from the call, never an
//!   inherited, already expired one), and returns a [`CloseReport`] with every item it could
//!   not deliver.
//! - **Durable spool** (optional, [`BufferBuilder::durable`]): each write is appended to a
//!   length- and CRC-framed log and synced (group commit) before it returns, and a
//!   flushed-up-to marker is synced after every successful sink write. A crash loses nothing
//!   acknowledged; a restart replays only items past the marker, under their old sequence
//!   numbers. A crash between a sink write and its marker delivers that batch again, so the
//!   exact guarantee is: every acknowledged item reaches the sink at least once, and exactly
//!   once for a sink that skips sequence numbers it already stored ([`Batch::items_after`]) or
//!   is idempotent by item id, as every [`synckit_types::EventStore`] is by event id.
//!
//! This crate touches the disk only for the spool. That is an exception to the rule that only
//! store crates touch disk: the spool is the buffer's own write-ahead log, not a store.
//!
//! # Engine, sinks, cache
//! [`BufferEngine`] runs stores of different item types with one limit on concurrent sink
//! writes, starts them together (stores registered later start at once) and stops them
//! together, returning every store's report. Provided sinks: [`EventStoreSink`] (any event
//! store, one tenant), [`FnSink`] (an async function) and, with the `node` feature,
//! `OutboxSink` (a node's outbox, which then syncs to the hub). [`DirtyCache`] persists keyed
//! in-memory state periodically; a value set while an older one failed to flush wins.
//!
//! # Observability
//! Every store reports through the `metrics` facade with the label `store` (see [`observe`]),
//! and [`BufferedStore::stats`] returns a [`BufferStats`] snapshot.
//!
//! # Time
//! Timers use tokio's clock, so tests drive the interval with paused time
//! (`#[tokio::test(start_paused = true)]` and `tokio::time::advance`).

mod cache;
mod config;
mod engine;
mod error;
pub mod observe;
mod sink;
mod spool;
mod store;

pub use cache::{DirtyCache, DirtyCacheBuilder};
pub use config::{BufferConfig, FullPolicy, RetryPolicy};
pub use engine::{BufferEngine, EngineReport};
pub use error::{BufferError, SinkError};
#[cfg(feature = "node")]
pub use sink::OutboxSink;
pub use sink::{Batch, DynSink, EventStoreSink, FnSink, Sink};
pub use store::{
    BufferBuilder, BufferHandle, BufferStats, BufferedStore, CloseReport, DeadLetter, FailedBatch,
    StoreReport, Weigher,
};
