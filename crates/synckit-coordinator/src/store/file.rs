//! `FileStatusStore`: every job's status in one JSON file, replaced atomically on each save
//! (write a temporary file, fsync it, rename it over the old one, fsync the directory).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{CoordinatorError, Result};
use crate::status::JobStatus;
use crate::store::{LocalLeases, StatusStore, blocking};

/// The file format this code writes; a file with a larger number is refused.
const FORMAT: u32 = 1;

/// The file's JSON: a format number and the statuses by job name.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    format: u32,
    jobs: BTreeMap<String, JobStatus>,
}

/// Statuses in one JSON file; leases in this process's memory.
///
/// One process owns the file: two processes saving to one file would overwrite each other's
/// jobs. A save rewrites the whole file and returns once it is durable, so after a crash the
/// file holds either the previous or the new statuses, never a mix.
#[derive(Debug)]
pub struct FileStatusStore {
    path: PathBuf,
    /// The file's content; each save changes it and rewrites the file under this lock, so
    /// saves that outlive their caller (a timeout) still land in order.
    statuses: Arc<Mutex<BTreeMap<String, JobStatus>>>,
    leases: LocalLeases,
}

impl FileStatusStore {
    /// Open the status file at `path`, creating its directory if needed (the file itself is
    /// created by the first save). Temporary files left by a crash are removed.
    ///
    /// Fails with `Corrupted` when the file does not decode or was written by a newer format,
    /// and `Store` when it cannot be read. Blocking: call it at start-up, or through
    /// `spawn_blocking`.
    pub fn open(path: impl Into<PathBuf>) -> Result<FileStatusStore> {
        let path = path.into();
        let name = file_name(&path)?;
        let dir = parent(&path);
        fs::create_dir_all(&dir)
            .map_err(|e| io_error(&format!("creating {}", dir.display()), e))?;
        remove_leftovers(&dir, &name);
        let statuses = match fs::read(&path) {
            Ok(bytes) => decode_body(&bytes, &path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_error(&format!("reading {}", path.display()), e)),
        };
        Ok(FileStatusStore {
            path,
            statuses: Arc::new(Mutex::new(statuses)),
            leases: LocalLeases::default(),
        })
    }

    /// The status file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl StatusStore for FileStatusStore {
    async fn load_all(&self) -> Result<Vec<JobStatus>> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(statuses.values().cloned().collect())
    }

    async fn load(&self, job: &str) -> Result<Option<JobStatus>> {
        let statuses = self.statuses.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(statuses.get(job).cloned())
    }

    async fn save(&self, status: &JobStatus) -> Result<()> {
        let statuses = Arc::clone(&self.statuses);
        let path = self.path.clone();
        let status = status.clone();
        blocking("saving a job status", move || {
            let mut statuses = statuses.lock().unwrap_or_else(PoisonError::into_inner);
            let job = status.job.clone();
            let previous = statuses.insert(job.clone(), status);
            let written = write_atomically(&path, &statuses);
            if written.is_err() {
                // The file still holds the old status: so must the memory.
                match previous {
                    Some(previous) => statuses.insert(job, previous),
                    None => statuses.remove(&job),
                };
            }
            written
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

fn decode_body(bytes: &[u8], path: &Path) -> Result<BTreeMap<String, JobStatus>> {
    let body: Body = serde_json::from_slice(bytes).map_err(|e| {
        CoordinatorError::corrupted(
            format!("status file {} does not decode: {e}", path.display()),
            Some(e.into()),
        )
    })?;
    if body.format > FORMAT {
        return Err(CoordinatorError::corrupted(
            format!(
                "status file {} has format {}, newer than format {FORMAT} that this \
                 synckit-coordinator knows; upgrade synckit or use another file",
                path.display(),
                body.format
            ),
            None,
        ));
    }
    if let Some((key, status)) = body.jobs.iter().find(|(key, s)| **key != s.job) {
        return Err(CoordinatorError::corrupted(
            format!(
                "status file {}: the entry {key:?} holds the status of job {:?}",
                path.display(),
                status.job
            ),
            None,
        ));
    }
    Ok(body.jobs)
}

/// Replace `path` with the JSON of `jobs`: temporary file, fsync, rename, fsync directory.
fn write_atomically(path: &Path, jobs: &BTreeMap<String, JobStatus>) -> Result<()> {
    let name = file_name(path)?;
    let dir = parent(path);
    let body = Body {
        format: FORMAT,
        jobs: jobs.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&body)
        .map_err(|e| CoordinatorError::store("encoding the status file", e))?;
    let what = |step: &str| format!("{step} {}", path.display());
    let mut temp = tempfile::Builder::new()
        .prefix(&temp_prefix(&name))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(&dir)
        .map_err(|e| io_error(&what("creating a temporary file to replace"), e))?;
    temp.write_all(&bytes)
        .map_err(|e| io_error(&what("writing the temporary file for"), e))?;
    temp.as_file()
        .sync_all()
        .map_err(|e| io_error(&what("syncing the temporary file for"), e))?;
    temp.persist(path)
        .map_err(|e| io_error(&what("renaming the temporary file over"), e.error))?;
    sync_dir(&dir).map_err(|e| io_error(&format!("syncing directory {}", dir.display()), e))
}

const TEMP_SUFFIX: &str = ".tmp";

fn temp_prefix(name: &str) -> String {
    format!(".{name}.")
}

/// Remove temporary files a crash left between create and rename (best effort: a file that
/// cannot be removed is only a wasted inode).
fn remove_leftovers(dir: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        if file.starts_with(&prefix) && file.ends_with(TEMP_SUFFIX) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            CoordinatorError::config(format!(
                "status file path {} does not name a file",
                path.display()
            ))
        })
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Make a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Directories cannot be opened for syncing here; the rename is as durable as the OS makes it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn io_error(what: &str, error: io::Error) -> CoordinatorError {
    CoordinatorError::store(format!("{what}: {error}"), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_survive_reopen_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("status.json");
        let store = FileStatusStore::open(&path).unwrap();
        assert!(store.load_all().await.unwrap().is_empty());
        let mut a = JobStatus::new("a");
        a.runs = 7;
        store.save(&a).await.unwrap();
        store.save(&JobStatus::new("b")).await.unwrap();
        let leftover = path.with_file_name(".status.json.abc.tmp");
        fs::write(&leftover, b"half").unwrap();
        drop(store);

        let store = FileStatusStore::open(&path).unwrap();
        assert_eq!(store.load("a").await.unwrap(), Some(a));
        assert_eq!(store.load_all().await.unwrap().len(), 2);
        assert!(!leftover.exists());
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.json"], "no temporary file is left behind");
    }

    #[test]
    fn damaged_or_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        fs::write(&path, b"{not json").unwrap();
        let err = FileStatusStore::open(&path).unwrap_err();
        assert!(matches!(err, CoordinatorError::Corrupted { .. }), "{err}");
        fs::write(&path, br#"{"format":99,"jobs":{}}"#).unwrap();
        let err = FileStatusStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
        fs::write(&path, br#"{"format":1,"jobs":{"a":{"job":"b"}}}"#).unwrap();
        assert!(FileStatusStore::open(&path).is_err());
        fs::write(&path, br#"{"format":1,"jobs":{"a":{"job":"a"}}}"#).unwrap();
        FileStatusStore::open(&path).unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_leaves_memory_and_file_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let store = FileStatusStore::open(&path).unwrap();
        store.save(&JobStatus::new("a")).await.unwrap();
        // A directory where the file should be makes the rename fail.
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"x").unwrap();
        assert!(store.save(&JobStatus::new("b")).await.is_err());
        assert!(store.load("b").await.unwrap().is_none());
        assert!(store.load("a").await.unwrap().is_some());
    }
}
