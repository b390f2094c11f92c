//! `SqliteConfig`: where the database lives and how SQLite is tuned, with defaults and validation.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use synckit_types::{DynClock, Error, Result, SystemClock};

/// Longest busy timeout accepted: a writer waiting longer than this for another process is stuck.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_secs(600);

/// Most reader connections a store keeps open.
pub const MAX_READERS: usize = 64;

/// How SQLite makes a commit durable (`PRAGMA synchronous`), in WAL mode.
///
/// The store acknowledges an append or commit only after SQLite's `COMMIT` returns, so this
/// setting decides what "acknowledged" survives:
///
/// | setting | process crash (kill -9) | power loss or OS crash |
/// |---|---|---|
/// | [`Synchronous::Normal`] | nothing acknowledged is lost | the last commits since the last checkpoint may be lost (the file stays consistent) |
/// | [`Synchronous::Full`] (default) | nothing acknowledged is lost | nothing acknowledged is lost |
/// | [`Synchronous::Extra`] | nothing acknowledged is lost | as `Full`, plus directory syncs where SQLite deletes files |
///
/// `OFF` is not offered: it can corrupt the database on power loss, and synckit's invariant 5
/// (a crash never loses an acknowledged event) would then depend on luck.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `PRAGMA synchronous = NORMAL`: the WAL is synced only at checkpoints. Faster (no fsync
    /// per commit) but a power loss can undo acknowledged commits. Only for data that a hub or
    /// peer can send again.
    Normal,
    /// `PRAGMA synchronous = FULL`: the WAL is synced at every commit, before it is
    /// acknowledged. The default: an acknowledged event survives power loss.
    #[default]
    Full,
    /// `PRAGMA synchronous = EXTRA`: `FULL` plus extra directory syncs.
    Extra,
}

impl Synchronous {
    /// The value given to `PRAGMA synchronous`.
    pub fn pragma_value(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
        }
    }

    /// The number `PRAGMA synchronous` reads back as (1, 2 or 3).
    pub fn pragma_number(self) -> i64 {
        match self {
            Synchronous::Normal => 1,
            Synchronous::Full => 2,
            Synchronous::Extra => 3,
        }
    }
}

/// Everything [`crate::SqliteStore::open_with`] needs.
///
/// ```
/// use std::time::Duration;
/// use synckit_store_sqlite::{SqliteConfig, Synchronous};
///
/// let config = SqliteConfig::new("/var/lib/app/synckit.db")
///     .synchronous(Synchronous::Full)
///     .busy_timeout(Duration::from_secs(10))
///     .cache_size_kib(16 * 1024);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
pub struct SqliteConfig {
    /// The database file. Created (with its schema) when missing; its directory must exist.
    /// SQLite keeps `<path>-wal` and `<path>-shm` beside it.
    pub path: PathBuf,
    /// Durability of each commit; see [`Synchronous`]. Default: [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// How long a write waits for another process holding the write lock, or a read for a
    /// checkpoint, before failing with a retryable `Unavailable` error. Default: 5 s.
    pub busy_timeout: Duration,
    /// Page cache per connection, in KiB (`PRAGMA cache_size = -N`). Default: 8 MiB.
    pub cache_size_kib: u32,
    /// Reader connections for concurrent reads beside the one writer (WAL lets readers and the
    /// writer run together). 1 to [`MAX_READERS`]. Default: 4.
    pub readers: usize,
    /// Where `recorded_at` comes from. Default: the system clock.
    pub clock: DynClock,
}

impl SqliteConfig {
    /// The defaults, for the database at `path`.
    pub fn new(path: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            path: path.into(),
            synchronous: Synchronous::default(),
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 8 * 1024,
            readers: 4,
            clock: Arc::new(SystemClock),
        }
    }

    /// Set [`SqliteConfig::synchronous`].
    pub fn synchronous(mut self, synchronous: Synchronous) -> SqliteConfig {
        self.synchronous = synchronous;
        self
    }

    /// Set [`SqliteConfig::busy_timeout`].
    pub fn busy_timeout(mut self, timeout: Duration) -> SqliteConfig {
        self.busy_timeout = timeout;
        self
    }

    /// Set [`SqliteConfig::cache_size_kib`].
    pub fn cache_size_kib(mut self, kib: u32) -> SqliteConfig {
        self.cache_size_kib = kib;
        self
    }

    /// Set [`SqliteConfig::readers`].
    pub fn readers(mut self, readers: usize) -> SqliteConfig {
        self.readers = readers;
        self
    }

    /// Set [`SqliteConfig::clock`] (a `ManualClock` in tests).
    pub fn clock(mut self, clock: DynClock) -> SqliteConfig {
        self.clock = clock;
        self
    }

    /// Check every value is in range; the error (`Config`) names the field.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config("sqlite store: path must not be empty"));
        }
        if self.busy_timeout > MAX_BUSY_TIMEOUT {
            return Err(Error::config(format!(
                "sqlite store: busy_timeout {:?} is longer than the limit {MAX_BUSY_TIMEOUT:?}",
                self.busy_timeout
            )));
        }
        if self.cache_size_kib == 0 {
            return Err(Error::config(
                "sqlite store: cache_size_kib must be at least 1",
            ));
        }
        if self.readers == 0 || self.readers > MAX_READERS {
            return Err(Error::config(format!(
                "sqlite store: readers is {}; it must be 1 to {MAX_READERS}",
                self.readers
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for SqliteConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("path", &self.path)
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .field("cache_size_kib", &self.cache_size_kib)
            .field("readers", &self.readers)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::ErrorKind;

    #[test]
    fn defaults_are_valid_and_durable() {
        let config = SqliteConfig::new("x.db");
        assert!(config.validate().is_ok());
        assert_eq!(config.synchronous, Synchronous::Full);
        assert_eq!(config.synchronous.pragma_number(), 2);
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases = [
            (SqliteConfig::new(""), "path"),
            (SqliteConfig::new("x").readers(0), "readers"),
            (SqliteConfig::new("x").readers(MAX_READERS + 1), "readers"),
            (SqliteConfig::new("x").cache_size_kib(0), "cache_size_kib"),
            (
                SqliteConfig::new("x").busy_timeout(Duration::from_secs(601)),
                "busy_timeout",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
