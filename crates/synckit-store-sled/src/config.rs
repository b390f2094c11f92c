//! `SledConfig`: where the store lives, how much it caches and when it makes writes durable.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use synckit_types::{DynClock, Error, Result, SystemClock};

/// Smallest accepted page cache: below this sled thrashes on every read.
pub const MIN_CACHE_CAPACITY: u64 = 1024 * 1024;

/// Default page cache: 256 MiB, a quarter of sled's own default, sized for an embedded store
/// that shares its process with an application.
pub const DEFAULT_CACHE_CAPACITY: u64 = 256 * 1024 * 1024;

/// Longest accepted interval of [`FlushPolicy::Periodic`].
pub const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(60);

/// When an append or commit becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Flush (write and fsync) before every append or commit returns: an acknowledged write
    /// survives a crash of the process or the machine. The default.
    #[default]
    EveryWrite,
    /// Acknowledge before the flush and let a background thread flush at this interval.
    ///
    /// Faster for small writes, but a crash can lose the writes of the last interval,
    /// acknowledged or not. What survives is still a consistent prefix (a cursor never runs
    /// ahead of its data), because sled recovers whole batches in log order. Only for data that
    /// can be re-fetched, such as a node that can pull again from its hub.
    Periodic(Duration),
}

/// The configuration of a [`crate::SledStore`].
///
/// ```
/// use synckit_store_sled::{FlushPolicy, SledConfig};
///
/// let config = SledConfig::new("/var/lib/app/synckit")
///     .cache_capacity(64 * 1024 * 1024)
///     .flush(FlushPolicy::EveryWrite);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct SledConfig {
    /// The directory of the database; created when missing.
    pub path: PathBuf,
    /// Bytes of sled's page cache (default [`DEFAULT_CACHE_CAPACITY`]).
    pub cache_capacity: u64,
    /// When writes become durable (default [`FlushPolicy::EveryWrite`]).
    pub flush: FlushPolicy,
    /// The clock that stamps `recorded_at` on appended events (default: the system clock).
    pub clock: DynClock,
}

impl SledConfig {
    /// The defaults for a store in the directory `path`.
    pub fn new(path: impl Into<PathBuf>) -> SledConfig {
        SledConfig {
            path: path.into(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            flush: FlushPolicy::EveryWrite,
            clock: Arc::new(SystemClock),
        }
    }

    /// Set the page cache size in bytes.
    pub fn cache_capacity(mut self, bytes: u64) -> SledConfig {
        self.cache_capacity = bytes;
        self
    }

    /// Set when writes become durable.
    pub fn flush(mut self, flush: FlushPolicy) -> SledConfig {
        self.flush = flush;
        self
    }

    /// Stamp `recorded_at` from `clock` (a `ManualClock` in tests).
    pub fn clock(mut self, clock: DynClock) -> SledConfig {
        self.clock = clock;
        self
    }

    /// Check every setting; the error names the setting and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config("sled store: `path` must not be empty"));
        }
        if self.cache_capacity < MIN_CACHE_CAPACITY {
            return Err(Error::config(format!(
                "sled store: `cache_capacity` is {} bytes; the minimum is {MIN_CACHE_CAPACITY} (1 MiB)",
                self.cache_capacity
            )));
        }
        if let FlushPolicy::Periodic(every) = self.flush
            && (every < Duration::from_millis(1) || every > MAX_FLUSH_INTERVAL)
        {
            return Err(Error::config(format!(
                "sled store: periodic flush interval is {every:?}; it must be between 1 ms and {MAX_FLUSH_INTERVAL:?}"
            )));
        }
        Ok(())
    }

    /// The interval for sled's background flusher, in milliseconds (`None`: no flusher).
    pub(crate) fn flush_every_ms(&self) -> Option<u64> {
        match self.flush {
            FlushPolicy::EveryWrite => None,
            FlushPolicy::Periodic(every) => {
                Some(u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1))
            }
        }
    }

    /// Whether every write is flushed before it is acknowledged.
    pub(crate) fn flush_each_write(&self) -> bool {
        self.flush == FlushPolicy::EveryWrite
    }
}

impl fmt::Debug for SledConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledConfig")
            .field("path", &self.path)
            .field("cache_capacity", &self.cache_capacity)
            .field("flush", &self.flush)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::ErrorKind;

    #[test]
    fn defaults_are_durable_and_valid() {
        let config = SledConfig::new("/tmp/x");
        assert_eq!(config.flush, FlushPolicy::EveryWrite);
        assert!(config.flush_each_write());
        assert_eq!(config.flush_every_ms(), None);
        assert_eq!(config.cache_capacity, DEFAULT_CACHE_CAPACITY);
        config.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_config_errors_naming_the_setting() {
        let cases = [
            (SledConfig::new(""), "path"),
            (
                SledConfig::new("/tmp/x").cache_capacity(10),
                "cache_capacity",
            ),
            (
                SledConfig::new("/tmp/x").flush(FlushPolicy::Periodic(Duration::ZERO)),
                "interval",
            ),
            (
                SledConfig::new("/tmp/x").flush(FlushPolicy::Periodic(Duration::from_secs(3600))),
                "interval",
            ),
        ];
        for (config, word) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            assert!(err.to_string().contains(word), "{err}");
        }
    }

    #[test]
    fn periodic_flush_maps_to_sled_interval() {
        let config =
            SledConfig::new("/tmp/x").flush(FlushPolicy::Periodic(Duration::from_millis(250)));
        config.validate().unwrap();
        assert!(!config.flush_each_write());
        assert_eq!(config.flush_every_ms(), Some(250));
    }
}
