//! Per-tenant fan-out of committed events: each append is announced once to every live
//! subscriber of its tenant, carrying the events themselves when the append was small, so
//! a thousand subscribers do not each read the store (and encode the frame) for every event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use synckit_protocol::sse::encode_event;
use synckit_types::{Seq, StoredEvent, TenantId};
use tokio::sync::broadcast;

/// Announcements kept per tenant for subscribers that are behind. One that falls further
/// behind is told it lagged and reads the store instead, so memory stays bounded.
const CAPACITY: usize = 32;

/// Appends of more events than this are announced without their events: subscribers read
/// them from the store in pages, and the channel never holds a large batch.
const MAX_CARRIED: usize = 128;

/// One committed append of a tenant.
#[derive(Debug)]
pub struct Committed {
    /// The seq of the first event the append stored.
    pub first: Seq,
    /// The seq of the last event the append stored.
    pub last: Seq,
    /// The stored events, in seq order (seqs `first..=last`), when the append was small;
    /// `None` means "read them from the store".
    pub events: Option<Vec<StoredEvent>>,
    /// The SSE frames of `events`, encoded once by the first stream that needs them.
    frames: OnceLock<Option<Vec<Bytes>>>,
}

impl Committed {
    /// The SSE frame of each event, encoded on first use and shared by every stream; `None`
    /// when the events are not carried or one could not be encoded (then read the store).
    pub fn frames(&self) -> Option<&[Bytes]> {
        self.frames
            .get_or_init(|| {
                let events = self.events.as_ref()?;
                events
                    .iter()
                    .map(|e| encode_event(e).ok().map(Bytes::from))
                    .collect()
            })
            .as_deref()
    }
}

/// One broadcast channel per tenant seen.
#[derive(Debug, Default)]
pub struct Notifier {
    tenants: Mutex<HashMap<TenantId, broadcast::Sender<Arc<Committed>>>>,
}

impl Notifier {
    fn sender(&self, tenant: &TenantId) -> broadcast::Sender<Arc<Committed>> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .clone()
    }

    /// Announcements for `tenant` from now on. Take it before reading the store, so nothing
    /// committed in between is missed.
    pub fn subscribe(&self, tenant: &TenantId) -> broadcast::Receiver<Arc<Committed>> {
        self.sender(tenant).subscribe()
    }

    /// Announce that `events` (consecutive seqs, as one append stores them) were committed.
    pub fn notify(&self, tenant: &TenantId, events: Vec<StoredEvent>) {
        let sender = self.sender(tenant);
        if sender.receiver_count() == 0 {
            return;
        }
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            return;
        };
        let (first, last) = (first.seq, last.seq);
        let contiguous = last.get().checked_sub(first.get()) == Some(events.len() as u64 - 1);
        let events = (contiguous && events.len() <= MAX_CARRIED).then_some(events);
        // No receiver left in between is not an error.
        let _ = sender.send(Arc::new(Committed {
            first,
            last,
            events,
            frames: OnceLock::new(),
        }));
    }
}
