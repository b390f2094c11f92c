//! Where buffered items go: the `Sink` trait, the `Batch` it receives, and the provided sinks
//! (any `EventStore`, a node's outbox, an async function).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use synckit_types::{DynEventStore, Error, ErrorKind, Event, TenantId};

use crate::error::SinkError;

/// Items handed to a sink in one write, with their sequence numbers.
///
/// Every item a buffered store accepts gets the next sequence number of that store (from 1);
/// the items of a batch have consecutive numbers from [`Batch::first_seq`]. A retried batch has
/// the same numbers. With a durable spool the numbers survive a restart, so a sink that records
/// the highest number it stored, atomically with the data, can skip what it already has
/// ([`Batch::items_after`]) and so receive every item exactly once, even across a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<T> {
    first_seq: u64,
    items: Vec<T>,
}

impl<T> Batch<T> {
    /// A batch whose first item has sequence number `first_seq`.
    pub fn new(first_seq: u64, items: Vec<T>) -> Self {
        Batch { first_seq, items }
    }

    /// The sequence number of the first item.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The sequence number of the last item (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + self.items.len() as u64).saturating_sub(1)
    }

    /// The items, in order.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items with their sequence numbers.
    pub fn iter_with_seq(&self) -> impl Iterator<Item = (u64, &T)> {
        (self.first_seq..).zip(self.items.iter())
    }

    /// The items whose sequence number is greater than `seq`: what a sink that has stored
    /// everything up to `seq` still needs.
    pub fn items_after(&self, seq: u64) -> &[T] {
        let skip = seq.saturating_sub(self.first_seq.saturating_sub(1));
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        &self.items[skip.min(self.items.len())..]
    }

    /// Take the items out.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
}

/// An asynchronous batch writer that a buffered store flushes into.
///
/// A write succeeds for the whole batch or fails; a failed batch is written again, whole and
/// in order, when the error is retryable ([`Error::is_retryable`]), and goes to the dead letter
/// when it is not. So a write must be safe to repeat: make it idempotent (by item id or by
/// sequence number, see [`Batch`]) or accept a repeat of the last batch after a failure.
#[async_trait]
pub trait Sink<T: Send + Sync + 'static>: Send + Sync + fmt::Debug + 'static {
    /// Write every item of `batch`, durably as the sink defines it, before returning `Ok`.
    async fn write(&self, batch: &Batch<T>) -> Result<(), SinkError>;
}

/// A shared sink.
pub type DynSink<T> = Arc<dyn Sink<T>>;

macro_rules! forward_sink {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: Send + Sync + 'static, S: Sink<T> + ?Sized> Sink<T> for $ptr<S> {
            async fn write(&self, batch: &Batch<T>) -> Result<(), SinkError> {
                (**self).write(batch).await
            }
        }
    };
}

forward_sink!(Arc);
forward_sink!(Box);

/// A sink made of an async function that receives each batch (a clone of it, so the function
/// may keep it).
///
/// ```
/// # use std::sync::Arc;
/// # use synckit_buffer::{Batch, DynSink, FnSink, SinkError};
/// let sink: DynSink<u64> = Arc::new(FnSink::new(|batch: Batch<u64>| async move {
///     println!("{} items from seq {}", batch.len(), batch.first_seq());
///     Ok::<(), SinkError>(())
/// }));
/// ```
pub struct FnSink<T, F> {
    f: F,
    _items: PhantomData<fn(T)>,
}

impl<T, F> FnSink<T, F> {
    /// Wrap `f`.
    pub fn new(f: F) -> Self {
        FnSink {
            f,
            _items: PhantomData,
        }
    }
}

impl<T, F> fmt::Debug for FnSink<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnSink").finish_non_exhaustive()
    }
}

#[async_trait]
impl<T, F, Fut> Sink<T> for FnSink<T, F>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(Batch<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), SinkError>> + Send + 'static,
{
    async fn write(&self, batch: &Batch<T>) -> Result<(), SinkError> {
        (self.f)(batch.clone()).await
    }
}

/// Appends batches of events to one tenant's log of any [`synckit_types::EventStore`].
///
/// Stores are idempotent by event id (an event appended again with the same content is a
/// `duplicate`), so a retried or replayed batch stores nothing twice. Events the store refuses
/// (`conflict`, `rejected`) make the write fail permanently, naming them; the whole batch then
/// goes to the dead letter, including the events of it that were stored.
#[derive(Debug, Clone)]
pub struct EventStoreSink {
    store: DynEventStore,
    tenant: TenantId,
}

impl EventStoreSink {
    /// Append to `tenant`'s log of `store`.
    pub fn new(store: DynEventStore, tenant: TenantId) -> Self {
        EventStoreSink { store, tenant }
    }
}

/// Refused events named in an error message, at most this many.
const NAMED_REFUSALS: usize = 5;

#[async_trait]
impl Sink<Event> for EventStoreSink {
    async fn write(&self, batch: &Batch<Event>) -> Result<(), SinkError> {
        let report = self.store.append(&self.tenant, batch.items()).await?;
        let refused: Vec<String> = report
            .results
            .iter()
            .filter(|r| !r.outcome.is_stored())
            .map(|r| format!("{}: {:?}", r.id, r.outcome))
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        let shown = refused
            .iter()
            .take(NAMED_REFUSALS)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the store refused {} of {} events: {shown}",
                refused.len(),
                batch.len()
            ),
        )
        .with_retryable(false))
    }
}

#[cfg(feature = "node")]
pub use outbox::OutboxSink;

#[cfg(feature = "node")]
mod outbox {
    use async_trait::async_trait;
    use synckit_node::Node;
    use synckit_types::EventBuilder;

    use super::{Batch, Sink};
    use crate::error::SinkError;

    /// Appends batches of events to a node's outbox with [`Node::append_batch`] (atomic per
    /// batch); the node syncs them to the hub. For agents that buffer into a local node.
    ///
    /// A batch whose append failed is appended again on retry. Give events explicit ids when a
    /// repeat must be detected: the node then refuses an id already in its outbox.
    #[derive(Debug, Clone)]
    pub struct OutboxSink {
        node: Node,
    }

    impl OutboxSink {
        /// Append into `node`'s outbox.
        pub fn new(node: Node) -> Self {
            OutboxSink { node }
        }
    }

    #[async_trait]
    impl Sink<EventBuilder> for OutboxSink {
        async fn write(&self, batch: &Batch<EventBuilder>) -> Result<(), SinkError> {
            self.node.append_batch(batch.items().to_vec()).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Sinks are used as `Arc<dyn Sink<T>>`: the trait must stay object-safe.
    #[allow(dead_code)]
    fn object_safe(_: &dyn Sink<u64>, _: DynSink<Event>) {}

    #[test]
    fn sequence_numbers_of_a_batch() {
        let b = Batch::new(10, vec!['a', 'b', 'c']);
        assert_eq!(b.last_seq(), 12);
        assert_eq!(b.items_after(0), &['a', 'b', 'c']);
        assert_eq!(b.items_after(9), &['a', 'b', 'c']);
        assert_eq!(b.items_after(10), &['b', 'c']);
        assert_eq!(b.items_after(12), &[] as &[char]);
        assert_eq!(b.items_after(99), &[] as &[char]);
        let seqs: Vec<u64> = b.iter_with_seq().map(|(s, _)| s).collect();
        assert_eq!(seqs, [10, 11, 12]);
        assert_eq!(Batch::<u8>::new(1, Vec::new()).last_seq(), 0);
    }
}
