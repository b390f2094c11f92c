//! `SledStatusStore` (feature `sled`): each job's status as a JSON value in a sled tree,
//! flushed to disk on every save.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{CoordinatorError, Result};
use crate::status::JobStatus;
use crate::store::{LocalLeases, StatusStore, blocking, decode, encode};

/// The tree the statuses live in when the store opens its own database.
pub const DEFAULT_TREE: &str = "synckit_coordinator_status";

/// How long `open` waits for a database lock that a store dropped a moment ago in this process
/// may still hold.
const LOCK_HANDOFF: Duration = Duration::from_secs(2);

/// Statuses in a sled tree (key: job name, value: the status JSON); leases in this process's
/// memory. sled locks its directory, so one process owns the store.
#[derive(Debug)]
pub struct SledStatusStore {
    tree: sled::Tree,
    leases: LocalLeases,
}

impl SledStatusStore {
    /// Open (or create) a sled database in the directory `path` and use its
    /// [`DEFAULT_TREE`].
    ///
    /// Fails with `Store` when the directory cannot be opened (another process holds it, no
    /// permission). Blocking: call it at start-up, or through `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStatusStore> {
        let path = path.as_ref();
        let what = format!("opening the sled status store at {}", path.display());
        let deadline = std::time::Instant::now() + LOCK_HANDOFF;
        let mut pause = Duration::from_millis(5);
        // Every save flushes, so sled's background flusher (which keeps the lock a moment
        // after the database is dropped) is not needed.
        let config = sled::Config::new().path(path).flush_every_ms(None);
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(e) => return Err(sled_error(&what, e)),
            }
        };
        let tree = db
            .open_tree(DEFAULT_TREE)
            .map_err(|e| sled_error(&format!("{what}: opening tree {DEFAULT_TREE}"), e))?;
        Ok(SledStatusStore::from_tree(tree))
    }

    /// Use `tree` of a database the application already has open.
    pub fn from_tree(tree: sled::Tree) -> SledStatusStore {
        SledStatusStore {
            tree,
            leases: LocalLeases::default(),
        }
    }
}

#[async_trait]
impl StatusStore for SledStatusStore {
    async fn load_all(&self) -> Result<Vec<JobStatus>> {
        let tree = self.tree.clone();
        blocking("loading job statuses", move || {
            let mut statuses = Vec::new();
            for entry in tree.iter() {
                let (key, value) =
                    entry.map_err(|e| sled_error("reading the sled status tree", e))?;
                let status = decode(&value, "a status in the sled tree")?;
                if status.job.as_bytes() != key.as_ref() {
                    return Err(CoordinatorError::corrupted(
                        format!(
                            "the sled status entry {:?} holds the status of job {:?}",
                            String::from_utf8_lossy(&key),
                            status.job
                        ),
                        None,
                    ));
                }
                statuses.push(status);
            }
            Ok(statuses)
        })
        .await
    }

    async fn load(&self, job: &str) -> Result<Option<JobStatus>> {
        let tree = self.tree.clone();
        let job = job.to_owned();
        blocking("loading a job status", move || {
            let what = format!("reading the status of job {job:?}");
            match tree.get(job.as_bytes()).map_err(|e| sled_error(&what, e))? {
                Some(value) => decode(&value, &format!("the sled status of job {job:?}")).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn save(&self, status: &JobStatus) -> Result<()> {
        let tree = self.tree.clone();
        let bytes = encode(status)?;
        let job = status.job.clone();
        blocking("saving a job status", move || {
            let what = format!("saving the status of job {job:?}");
            tree.insert(job.as_bytes(), bytes)
                .map_err(|e| sled_error(&what, e))?;
            tree.flush().map_err(|e| sled_error(&what, e))?;
            Ok(())
        })
        .await
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

/// sled reports a held directory lock as an I/O error with this text.
fn is_lock_error(error: &sled::Error) -> bool {
    matches!(error, sled::Error::Io(e) if e.to_string().contains("could not acquire lock"))
}

fn sled_error(what: &str, error: sled::Error) -> CoordinatorError {
    match error {
        sled::Error::Corruption { .. } => {
            CoordinatorError::corrupted(format!("{what}: {error}"), Some(error.into()))
        }
        other => CoordinatorError::store(format!("{what}: {other}"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStatusStore::open(dir.path()).unwrap();
        let mut a = JobStatus::new("a");
        a.failures = 2;
        store.save(&a).await.unwrap();
        store.save(&JobStatus::new("b")).await.unwrap();
        drop(store);
        let store = SledStatusStore::open(dir.path()).unwrap();
        assert_eq!(store.load("a").await.unwrap(), Some(a));
        assert_eq!(store.load_all().await.unwrap().len(), 2);
        assert!(store.load("c").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn damaged_values_are_corrupted_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("a", &b"{oops"[..]).unwrap();
        let store = SledStatusStore::from_tree(tree.clone());
        let err = store.load("a").await.unwrap_err();
        assert!(matches!(err, CoordinatorError::Corrupted { .. }), "{err}");
        tree.insert("a", &br#"{"job":"b"}"#[..]).unwrap();
        assert!(store.load_all().await.is_err());
    }
}
