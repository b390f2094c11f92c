//! Watermarks: how far a pipeline has consumed each source item, persisted in one JSON file
//! that is replaced atomically (temp file, fsync, rename, fsync of the directory).
//!
//! A [`Watermark`] holds the byte offset and ordinal (line number) of the consumed prefix of an
//! item, the SHA-256 of that prefix (so a rewritten item is noticed), and the item's generation
//! (raised each time the item is found rewritten). A [`WatermarkSet`] also records the versions
//! and namespace it was written under: when any of them differs, the pipeline starts over.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of the watermark file's own layout. A file with another layout is refused rather
/// than guessed at.
pub const WATERMARK_FILE_VERSION: u32 = 1;

/// How far one source item has been consumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Raised each time the item is found rewritten; part of every record id, so records of a
    /// new generation never collide with those of an earlier one.
    pub generation: u64,
    /// Bytes of the item consumed (always the end of a complete line).
    pub offset: u64,
    /// Records (lines) consumed: the number of the last consumed line, 1-based.
    pub ordinal: u64,
    /// SHA-256, lowercase hex, of the first `offset` bytes of the item.
    pub prefix_sha256: String,
    /// The item's size when it was last read, to skip unchanged items cheaply.
    #[serde(default)]
    pub size: Option<u64>,
    /// The item's modification time (nanoseconds since the Unix epoch) when it was last read.
    #[serde(default)]
    pub modified_ns: Option<u64>,
}

/// Every watermark of one pipeline, with what they were written under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkSet {
    /// Layout of this file ([`WATERMARK_FILE_VERSION`]).
    pub file_version: u32,
    /// The pipeline's record format version when the watermarks were written.
    pub pipeline_version: u32,
    /// The application's record format version when the watermarks were written.
    pub format_version: u32,
    /// The namespace mixed into record ids (for example a node id).
    pub namespace: String,
    /// Watermarks by source item id.
    pub sources: BTreeMap<String, Watermark>,
}

impl WatermarkSet {
    /// An empty set written under these versions and namespace.
    pub fn new(pipeline_version: u32, format_version: u32, namespace: impl Into<String>) -> Self {
        WatermarkSet {
            file_version: WATERMARK_FILE_VERSION,
            pipeline_version,
            format_version,
            namespace: namespace.into(),
            sources: BTreeMap::new(),
        }
    }
}

/// Why the watermark file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatermarkError {
    /// Reading or writing the file failed.
    #[error("watermark file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a watermark file this version understands. It is never overwritten
    /// silently: starting over would re-send every record under new ids.
    #[error(
        "watermark file {path} is damaged or from another version ({reason}); move it away to \
         start over from the first record"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The watermark file of one pipeline: loaded once, changed in memory, saved atomically.
#[derive(Debug, Clone)]
pub struct WatermarkStore {
    path: PathBuf,
    set: Option<WatermarkSet>,
}

impl WatermarkStore {
    /// Load `path`; a missing file is an empty store (nothing consumed yet).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, WatermarkError> {
        let path = path.into();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(WatermarkStore { path, set: None });
            }
            Err(source) => return Err(WatermarkError::Io { path, source }),
        };
        let set: WatermarkSet =
            serde_json::from_slice(&bytes).map_err(|e| WatermarkError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if set.file_version != WATERMARK_FILE_VERSION {
            return Err(WatermarkError::Corrupt {
                reason: format!(
                    "file layout {} where {WATERMARK_FILE_VERSION} is expected",
                    set.file_version
                ),
                path,
            });
        }
        Ok(WatermarkStore {
            path,
            set: Some(set),
        })
    }

    /// The file this store saves to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The loaded watermarks; `None` when nothing was ever saved.
    pub fn set(&self) -> Option<&WatermarkSet> {
        self.set.as_ref()
    }

    /// The watermark of one source item.
    pub fn get(&self, source: &str) -> Option<&Watermark> {
        self.set.as_ref().and_then(|s| s.sources.get(source))
    }

    /// Replace the whole set in memory (saved by [`WatermarkStore::save`]).
    pub fn replace(&mut self, set: WatermarkSet) {
        self.set = Some(set);
    }

    /// The bytes [`WatermarkStore::save`] writes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, WatermarkError> {
        let mut bytes =
            serde_json::to_vec_pretty(&self.set).map_err(|e| WatermarkError::Corrupt {
                path: self.path.clone(),
                reason: format!("cannot encode: {e}"),
            })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Write the set to the file atomically: a reader (or a crash) sees the old file or the new
    /// one, never a mix. Blocking: call it off the async runtime's threads.
    pub fn save(&self) -> Result<(), WatermarkError> {
        let bytes = self.to_bytes()?;
        write_atomic(&self.path, &bytes).map_err(|source| WatermarkError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Replace `path` with `bytes` atomically and durably: write a temporary file beside it, fsync
/// it, rename it over `path`, then fsync the directory so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = name.to_os_string();
    // The process id keeps two writers of one directory off each other's temp file.
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync here; the rename is as durable as the platform
    // makes it.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(offset: u64) -> Watermark {
        Watermark {
            generation: 1,
            offset,
            ordinal: 3,
            prefix_sha256: "ab".repeat(32),
            size: Some(offset),
            modified_ns: Some(7),
        }
    }

    #[test]
    fn missing_file_is_empty_and_saved_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wm.json");
        let mut store = WatermarkStore::open(&path).unwrap();
        assert!(store.set().is_none());
        let mut set = WatermarkSet::new(1, 2, "ns");
        set.sources.insert("a".to_owned(), mark(10));
        store.replace(set.clone());
        store.save().unwrap();
        let back = WatermarkStore::open(&path).unwrap();
        assert_eq!(back.set(), Some(&set));
        assert_eq!(back.get("a"), Some(&mark(10)));
        assert_eq!(back.get("b"), None);
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("wm.json")]);
    }

    #[test]
    fn damaged_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wm.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            WatermarkStore::open(&path),
            Err(WatermarkError::Corrupt { .. })
        ));
        let mut set = WatermarkSet::new(1, 1, "ns");
        set.file_version = 99;
        fs::write(&path, serde_json::to_vec(&set).unwrap()).unwrap();
        let err = WatermarkStore::open(&path).unwrap_err();
        assert!(err.to_string().contains("layout 99"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"a long first version").unwrap();
        write_atomic(&path, b"short").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
    }
}
