//! `MemoryStatusStore`: statuses and leases in this process's memory, for tests, examples and
//! coordinators whose status need not survive a restart.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::status::JobStatus;
use crate::store::{LocalLeases, StatusStore};

/// Statuses and leases in memory; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryStatusStore {
    statuses: Mutex<BTreeMap<String, JobStatus>>,
    leases: LocalLeases,
}

impl MemoryStatusStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStatusStore::default()
    }
}

#[async_trait]
impl StatusStore for MemoryStatusStore {
    async fn load_all(&self) -> Result<Vec<JobStatus>> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(statuses.values().cloned().collect())
    }

    async fn load(&self, job: &str) -> Result<Option<JobStatus>> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(statuses.get(job).cloned())
    }

    async fn save(&self, status: &JobStatus) -> Result<()> {
        let mut statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        statuses.insert(status.job.clone(), status.clone());
        Ok(())
    }

    async fn try_acquire(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
        Ok(self.leases.try_acquire(job, holder, ttl))
    }

    async fn renew(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
        Ok(self.leases.renew(job, holder, ttl))
    }

    async fn release(&self, job: &str, holder: &str) -> Result<()> {
        self.leases.release(job, holder);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_and_loads() {
        let store = MemoryStatusStore::new();
        assert!(store.load("a").await.unwrap().is_none());
        let mut status = JobStatus::new("a");
        status.runs = 3;
        store.save(&status).await.unwrap();
        store.save(&JobStatus::new("b")).await.unwrap();
        assert_eq!(store.load("a").await.unwrap(), Some(status));
        assert_eq!(store.load_all().await.unwrap().len(), 2);
        assert!(
            store
                .try_acquire("a", "h", Duration::from_secs(1))
                .await
                .unwrap()
        );
        assert!(
            !store
                .try_acquire("a", "i", Duration::from_secs(1))
                .await
                .unwrap()
        );
    }
}
