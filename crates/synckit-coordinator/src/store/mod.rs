//! The `StatusStore` contract (job statuses and job leases) and its implementations: memory,
//! an atomically rewritten JSON file, sled (feature `sled`) and PostgreSQL (feature `postgres`).
//!
//! DESIGN.md keeps disk and database access in the store crates; these status stores are the
//! coordinator's one exception, kept behind the `StatusStore` trait and, for sled and
//! PostgreSQL, behind optional features, so an application can always pass its own store.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{CoordinatorError, Result};
use crate::status::JobStatus;

pub(crate) mod file;
pub(crate) mod memory;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(feature = "sled")]
pub(crate) mod sled;

/// Where job statuses are persisted, and who may run a job right now.
///
/// Statuses: `save` replaces a job's whole status; `load_all` is called once at start.
///
/// Leases: a coordinator runs a job only while it holds the job's lease, so coordinators that
/// share a store never run one job at once. A lease has a holder id and expires `ttl` after it
/// was taken or last renewed, so the lease of a crashed holder frees itself. Stores that one
/// process owns (memory, file, sled) keep leases in that process's memory; the PostgreSQL
/// store keeps them in a table, shared by every process on the schema.
#[async_trait]
pub trait StatusStore: Send + Sync + Debug + 'static {
    /// Every stored status, in no particular order.
    async fn load_all(&self) -> Result<Vec<JobStatus>>;

    /// The stored status of `job`, if any.
    async fn load(&self, job: &str) -> Result<Option<JobStatus>>;

    /// Store `status` (keyed by `status.job`), durably before returning.
    async fn save(&self, status: &JobStatus) -> Result<()>;

    /// Take the lease on `job` for `holder` until `ttl` from now: `true` when it was free,
    /// expired or already `holder`'s (then it is extended), `false` when another holder has it.
    async fn try_acquire(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Extend `holder`'s unexpired lease on `job` to `ttl` from now: `false` when `holder`
    /// does not hold it any more (it expired, or another holder took it).
    async fn renew(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Give up `holder`'s lease on `job`; nothing happens when `holder` does not hold it.
    async fn release(&self, job: &str, holder: &str) -> Result<()>;
}

/// A shared status store.
pub type DynStatusStore = Arc<dyn StatusStore>;

macro_rules! forward_status_store {
    ($ty:ty) => {
        #[async_trait]
        impl<T: StatusStore + ?Sized> StatusStore for $ty {
            async fn load_all(&self) -> Result<Vec<JobStatus>> {
                (**self).load_all().await
            }

            async fn load(&self, job: &str) -> Result<Option<JobStatus>> {
                (**self).load(job).await
            }

            async fn save(&self, status: &JobStatus) -> Result<()> {
                (**self).save(status).await
            }

            async fn try_acquire(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
                (**self).try_acquire(job, holder, ttl).await
            }

            async fn renew(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
                (**self).renew(job, holder, ttl).await
            }

            async fn release(&self, job: &str, holder: &str) -> Result<()> {
                (**self).release(job, holder).await
            }
        }
    };
}

forward_status_store!(Arc<T>);
forward_status_store!(Box<T>);

/// Leases kept in this process's memory, for the stores one process owns. Expiry follows
/// tokio's clock, so tests with paused time can let a lease expire without waiting.
#[derive(Debug, Default)]
pub(crate) struct LocalLeases {
    /// Job name to (holder, expiry).
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalLeases {
    pub(crate) fn try_acquire(&self, job: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        match leases.get(job) {
            Some((other, expiry)) if other != holder && *expiry > now => false,
            _ => {
                leases.insert(job.to_owned(), (holder.to_owned(), after(now, ttl)));
                true
            }
        }
    }

    pub(crate) fn renew(&self, job: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        match leases.get_mut(job) {
            Some((current, expiry)) if current == holder && *expiry > now => {
                *expiry = after(now, ttl);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn release(&self, job: &str, holder: &str) {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if leases
            .get(job)
            .is_some_and(|(current, _)| current == holder)
        {
            leases.remove(job);
        }
    }
}

/// `now + ttl`, saturating far in the future instead of overflowing.
pub(crate) fn after(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl)
        .or_else(|| now.checked_add(crate::job::MAX_DURATION))
        .unwrap_or(now)
}

/// A status as stored JSON.
#[cfg(any(feature = "sled", feature = "postgres"))]
pub(crate) fn encode(status: &JobStatus) -> Result<Vec<u8>> {
    serde_json::to_vec(status).map_err(|e| {
        CoordinatorError::store(format!("encoding the status of job {:?}", status.job), e)
    })
}

/// Stored JSON as a status; `what` says where it was read, for the `Corrupted` error.
#[cfg(any(feature = "sled", feature = "postgres"))]
pub(crate) fn decode(bytes: &[u8], what: &str) -> Result<JobStatus> {
    serde_json::from_slice(bytes).map_err(|e| {
        CoordinatorError::corrupted(format!("{what} does not decode: {e}"), Some(e.into()))
    })
}

/// Run blocking file or sled work on tokio's blocking pool and wait for it.
///
/// The work is not cancelled when the caller stops waiting (a timeout): it finishes on its
/// own, which is why each store does all of one write under one lock.
pub(crate) async fn blocking<T, F>(what: &str, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(CoordinatorError::store(
            format!("{what}: the blocking task failed"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn local_leases_exclude_expire_and_release() {
        let leases = LocalLeases::default();
        let ttl = Duration::from_secs(10);
        assert!(leases.try_acquire("j", "a", ttl));
        assert!(!leases.try_acquire("j", "b", ttl), "held by a");
        assert!(leases.try_acquire("j", "a", ttl), "re-entrant for a");
        assert!(leases.try_acquire("k", "b", ttl), "another job is free");
        assert!(leases.renew("j", "a", ttl));
        assert!(!leases.renew("j", "b", ttl));
        leases.release("j", "b");
        assert!(
            !leases.try_acquire("j", "b", ttl),
            "b cannot release a's lease"
        );

        tokio::time::advance(ttl + Duration::from_millis(1)).await;
        assert!(!leases.renew("j", "a", ttl), "expired");
        assert!(leases.try_acquire("j", "b", ttl), "expired leases are free");
        assert!(!leases.try_acquire("j", "a", ttl));
        leases.release("j", "b");
        assert!(leases.try_acquire("j", "a", ttl));
    }

    #[test]
    fn store_is_object_safe() {
        fn takes(_: &dyn StatusStore) {}
        let store = memory::MemoryStatusStore::new();
        takes(&store);
        let shared: DynStatusStore = Arc::new(store);
        let boxed: Box<dyn StatusStore> = Box::new(Arc::clone(&shared));
        takes(&boxed);
    }
}
