//! The marker file beside sled's files: the schema version, read before sled touches anything,
//! and the progress of the last clean close, so damaged files are reported, not recovered
//! silently to an earlier state.
//!
//! sled recovers its log up to the first record that fails its checksum and drops the rest; a
//! damaged file therefore opens as an older (or empty) database with no error. The marker
//! records lower bounds that only grow: each tenant's head and the node's cursor and confirmed
//! head at the last clean close (all durable at that point). Recovered state below a bound
//! means data that was acknowledged and flushed is gone: the store refuses to open.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use synckit_types::{Error, ErrorKind, Result};

use crate::codec::SCHEMA_VERSION;
use crate::error::{corrupted, io_error};

/// File name of the marker in the store directory.
pub(crate) const MARKER_FILE: &str = "synckit-store.json";
const FORMAT: &str = "synckit-store-sled";

/// The marker's content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Marker {
    pub(crate) format: String,
    pub(crate) schema_version: u32,
    /// Each tenant's head at the last clean close.
    #[serde(default)]
    pub(crate) heads: BTreeMap<String, u64>,
    /// The node's pull cursor at the last clean close.
    #[serde(default)]
    pub(crate) node_cursor: u64,
    /// The node's confirmed head at the last clean close.
    #[serde(default)]
    pub(crate) node_confirmed_head: u64,
}

impl Marker {
    /// A marker that claims no progress.
    pub(crate) fn empty() -> Marker {
        Marker {
            format: FORMAT.to_owned(),
            schema_version: SCHEMA_VERSION,
            heads: BTreeMap::new(),
            node_cursor: 0,
            node_confirmed_head: 0,
        }
    }

    /// Refuse a marker of another format or a newer schema.
    pub(crate) fn check_version(&self) -> Result<()> {
        if self.format != FORMAT {
            return Err(corrupted(format!(
                "{MARKER_FILE} names the format {:?}, not {FORMAT:?}",
                self.format
            )));
        }
        check_schema_version(self.schema_version)
    }

    /// Refuse a recovered state that is behind the last clean close.
    pub(crate) fn check_progress<'a>(
        &self,
        heads: impl IntoIterator<Item = (&'a str, u64)>,
        node_cursor: u64,
        node_confirmed_head: u64,
    ) -> Result<()> {
        let recovered: BTreeMap<&str, u64> = heads.into_iter().collect();
        for (tenant, &closed_at) in &self.heads {
            let now = recovered.get(tenant.as_str()).copied().unwrap_or(0);
            if now < closed_at {
                return Err(lost(format!(
                    "tenant {tenant} had {closed_at} events at the last clean close, but the \
                     files now hold {now}"
                )));
            }
        }
        if node_cursor < self.node_cursor || node_confirmed_head < self.node_confirmed_head {
            return Err(lost(format!(
                "the node's cursor and confirmed head were {} and {} at the last clean close, \
                 but the files now hold {node_cursor} and {node_confirmed_head}",
                self.node_cursor, self.node_confirmed_head
            )));
        }
        Ok(())
    }
}

fn lost(detail: String) -> Error {
    Error::new(
        ErrorKind::Corrupted,
        format!(
            "the store's files are damaged and sled recovered an earlier state: {detail}; the \
             store was not opened and wrote nothing, but sled's recovery may have cut the \
             damaged part away: restore the directory from a backup, or move it away to start \
             empty"
        ),
    )
}

/// Refuse a schema version this build does not know.
pub(crate) fn check_schema_version(version: u32) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!(
                "the store was written by schema version {version}, but this build of \
                 synckit-store-sled knows versions up to {SCHEMA_VERSION}; upgrade synckit to \
                 open it (nothing was written)"
            ),
        ));
    }
    if version == 0 {
        return Err(corrupted("the schema version is 0, which no build writes"));
    }
    Ok(())
}

/// The marker in `dir`, `None` when there is none (or no directory yet).
pub(crate) fn read(dir: &Path) -> Result<Option<Marker>> {
    let path = dir.join(MARKER_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            corrupted(format!("{} does not decode: {e}", path.display())).with_source(e)
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(format!("reading {}", path.display()), e)),
    }
}

/// Replace the marker in `dir` atomically and durably: write a temporary file, fsync it,
/// rename it over the old one, fsync the directory.
pub(crate) fn write(dir: &Path, marker: &Marker) -> Result<()> {
    let path = dir.join(MARKER_FILE);
    let tmp = dir.join(format!("{MARKER_FILE}.tmp"));
    let what = format!("writing {}", path.display());
    let bytes = serde_json::to_vec_pretty(marker)
        .map_err(|e| Error::internal(format!("{what}: {e}")).with_source(e))?;
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| io_error(&what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_and_foreign_markers_are_refused() {
        let mut m = Marker::empty();
        m.check_version().unwrap();
        m.schema_version = SCHEMA_VERSION + 1;
        let err = m.check_version().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        let text = err.to_string();
        assert!(
            text.contains(&format!("version {}", SCHEMA_VERSION + 1)),
            "{text}"
        );
        assert!(text.contains(&format!("up to {SCHEMA_VERSION}")), "{text}");
        let mut m = Marker::empty();
        m.format = "other".into();
        assert_eq!(m.check_version().unwrap_err().kind(), ErrorKind::Corrupted);
    }

    #[test]
    fn progress_below_the_last_close_is_refused() {
        let mut m = Marker::empty();
        m.heads.insert("t".into(), 10);
        m.node_cursor = 4;
        m.check_progress([("t", 10)], 4, 0).unwrap();
        m.check_progress([("t", 12)], 9, 9).unwrap();
        let err = m.check_progress([("t", 9)], 4, 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
        assert!(err.to_string().contains("tenant t had 10"), "{err}");
        assert!(m.check_progress([], 4, 0).is_err(), "a vanished tenant");
        assert!(
            m.check_progress([("t", 10)], 3, 0).is_err(),
            "cursor behind"
        );
    }

    #[test]
    fn write_then_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut m = Marker::empty();
        m.heads.insert("t".into(), 3);
        write(dir.path(), &m).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(m));
        fs::write(dir.path().join(MARKER_FILE), b"{nope").unwrap();
        assert_eq!(read(dir.path()).unwrap_err().kind(), ErrorKind::Corrupted);
    }
}
