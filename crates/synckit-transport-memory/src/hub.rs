//! `MemoryHub`: an in-process hub over any `EventStore`, handing out per-tenant transports.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use synckit_types::{DynEventStore, TenantId};
use tokio::sync::watch;

use crate::transport::MemoryTransport;

/// An in-process hub: the hub role of synckit over any [`EventStore`](synckit_types::EventStore),
/// without a network, for tests, simulations and single-process applications.
///
/// [`transport`](MemoryHub::transport) gives a client connection bound to one tenant. Appends
/// made through the hub's transports wake that tenant's live subscriptions. Clones share the
/// store and the subscribers.
///
/// Appends made to the store by anything else (another hub over the same store, or direct
/// calls) are not seen by live subscriptions until the next append through this hub, or until
/// [`notify`](MemoryHub::notify) is called.
#[derive(Debug, Clone)]
pub struct MemoryHub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    store: DynEventStore,
    /// One generation counter per tenant, bumped after each append that stored something.
    tenants: Mutex<HashMap<TenantId, Arc<watch::Sender<u64>>>>,
}

impl MemoryHub {
    /// A hub serving `store`.
    pub fn new(store: DynEventStore) -> MemoryHub {
        MemoryHub {
            inner: Arc::new(HubInner {
                store,
                tenants: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A new client connection for `tenant`, with its own [`Faults`](crate::Faults).
    pub fn transport(&self, tenant: TenantId) -> MemoryTransport {
        let notify = self.notifier(&tenant);
        MemoryTransport::new(self.inner.store.clone(), tenant, notify)
    }

    /// The store the hub serves.
    pub fn store(&self) -> &DynEventStore {
        &self.inner.store
    }

    /// Wake the live subscriptions of `tenant` so they read the store again; for events
    /// appended to the store without going through this hub.
    pub fn notify(&self, tenant: &TenantId) {
        bump(&self.notifier(tenant));
    }

    fn notifier(&self, tenant: &TenantId) -> Arc<watch::Sender<u64>> {
        // The map only ever gains entries, so a panic elsewhere cannot leave it inconsistent.
        let mut tenants = self
            .inner
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new(watch::Sender::new(0)))
            .clone()
    }
}

/// Advance a tenant's generation counter, waking its subscribers.
pub(crate) fn bump(notify: &watch::Sender<u64>) {
    // `send_modify` updates the value even when nobody is subscribed yet.
    notify.send_modify(|generation| *generation = generation.wrapping_add(1));
}
