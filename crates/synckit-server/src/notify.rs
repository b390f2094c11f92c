//! Per-tenant change notification: appends bump a tenant's counter; subscribers wait on it.

use std::collections::HashMap;
use std::sync::Mutex;

use synckit_types::TenantId;
use tokio::sync::watch;

/// One watch channel per tenant seen.
#[derive(Debug, Default)]
pub struct Notifier {
    tenants: Mutex<HashMap<TenantId, watch::Sender<u64>>>,
}

impl Notifier {
    fn sender(&self, tenant: &TenantId) -> watch::Sender<u64> {
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        tenants
            .entry(tenant.clone())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Wait handle for `tenant`'s changes. Take it before reading, so nothing is missed.
    pub fn subscribe(&self, tenant: &TenantId) -> watch::Receiver<u64> {
        self.sender(tenant).subscribe()
    }

    /// Tell `tenant`'s subscribers that new events were committed.
    pub fn notify(&self, tenant: &TenantId) {
        self.sender(tenant)
            .send_modify(|generation| *generation += 1);
    }
}
