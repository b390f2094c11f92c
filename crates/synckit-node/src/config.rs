//! Node configuration: batch and page sizes, timeouts, the retry policy, sync direction, filter.

use std::time::Duration;

use synckit_types::{DEFAULT_MAX_DRIFT_MS, Error, Filter, MAX_PAGE_SIZE, NodeId, Result};

/// Largest push batch: the hub protocol's limit.
pub const MAX_BATCH_SIZE: usize = 1_000;

/// How failed hub calls are retried. Only retryable errors (see `Error::is_retryable`) are
/// retried; permanent ones fail the sync at once.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included (1 means no retry).
    pub max_attempts: u32,
    /// Back-off before the second attempt; doubled for each later one.
    pub base: Duration,
    /// Longest back-off.
    pub cap: Duration,
    /// Random spread of each back-off, as a fraction (0.0 to 1.0): a delay `d` becomes a value
    /// in `d * (1 - jitter) ..= d`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The back-off after failed attempt number `attempt` (1-based), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The back-off with jitter applied, using `unit` in `0.0..1.0` as the random draw.
    pub fn backoff_with_jitter(&self, attempt: u32, unit: f64) -> Duration {
        let full = self.backoff(attempt);
        full.mul_f64(1.0 - self.jitter * unit.clamp(0.0, 1.0))
    }

    fn validate(&self) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(Error::config("retry.max_attempts must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config(format!(
                "retry.jitter {} is outside 0.0..=1.0",
                self.jitter
            )));
        }
        if self.base > self.cap {
            return Err(Error::config(format!(
                "retry.base {:?} is larger than retry.cap {:?}",
                self.base, self.cap
            )));
        }
        Ok(())
    }
}

/// Everything a node can be tuned by. Build with [`Config::builder`] or start from
/// `Config::default()`; [`Config::validate`] runs when the node opens.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Use this node id; otherwise the stored one, or a fresh one on first open.
    pub node_id: Option<NodeId>,
    /// Events per push request (1 to 1,000). Default 100.
    pub batch_size: usize,
    /// Events per pull page (1 to 5,000). Default 500.
    pub page_size: usize,
    /// Deadline of one whole sync run. Default 5 minutes.
    pub sync_timeout: Duration,
    /// Retry policy of each hub call.
    pub retry: RetryPolicy,
    /// Sync pushes only: nothing is pulled.
    pub push_only: bool,
    /// Sync pulls only: nothing is pushed.
    pub pull_only: bool,
    /// Pull only events matching this filter. Filtered-out events count as read: the cursor
    /// moves past them, so changing the filter later does not bring them back.
    pub filter: Filter,
    /// Push, pull and resolve rounds per sync before leftover conflicts wait for the next
    /// sync. Default 4.
    pub max_rounds: u32,
    /// How far ahead of local time a remote clock stamp may be. Default 5 minutes.
    pub max_clock_drift_ms: u64,
    /// Application user recorded with resolver decisions.
    pub user: Option<String>,
    /// Application session recorded with resolver decisions.
    pub session: Option<String>,
    /// Where decisions are asked for (an application or tool name, e.g. `cli`), recorded with
    /// resolver decisions.
    pub origin: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: None,
            batch_size: 100,
            page_size: 500,
            sync_timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            push_only: false,
            pull_only: false,
            filter: Filter::all(),
            max_rounds: 4,
            max_clock_drift_ms: DEFAULT_MAX_DRIFT_MS,
            user: None,
            session: None,
            origin: None,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder(Config::default())
    }

    /// Check every value and their combinations.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(Error::config(format!(
                "batch_size {} is outside 1..={MAX_BATCH_SIZE}",
                self.batch_size
            )));
        }
        if self.page_size == 0 || self.page_size > MAX_PAGE_SIZE {
            return Err(Error::config(format!(
                "page_size {} is outside 1..={MAX_PAGE_SIZE}",
                self.page_size
            )));
        }
        if self.sync_timeout.is_zero() {
            return Err(Error::config("sync_timeout must be greater than zero"));
        }
        if self.push_only && self.pull_only {
            return Err(Error::config(
                "push_only and pull_only are both set; a sync must do at least one",
            ));
        }
        if self.max_rounds == 0 {
            return Err(Error::config("max_rounds must be at least 1"));
        }
        self.retry.validate()
    }
}

/// Builds a [`Config`]; [`ConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct ConfigBuilder(Config);

impl ConfigBuilder {
    /// See [`Config::node_id`].
    pub fn node_id(mut self, id: NodeId) -> Self {
        self.0.node_id = Some(id);
        self
    }
    /// See [`Config::batch_size`].
    pub fn batch_size(mut self, n: usize) -> Self {
        self.0.batch_size = n;
        self
    }
    /// See [`Config::page_size`].
    pub fn page_size(mut self, n: usize) -> Self {
        self.0.page_size = n;
        self
    }
    /// See [`Config::sync_timeout`].
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.0.sync_timeout = timeout;
        self
    }
    /// See [`Config::retry`].
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.0.retry = retry;
        self
    }
    /// See [`Config::push_only`].
    pub fn push_only(mut self, on: bool) -> Self {
        self.0.push_only = on;
        self
    }
    /// See [`Config::pull_only`].
    pub fn pull_only(mut self, on: bool) -> Self {
        self.0.pull_only = on;
        self
    }
    /// See [`Config::filter`].
    pub fn filter(mut self, filter: Filter) -> Self {
        self.0.filter = filter;
        self
    }
    /// See [`Config::max_rounds`].
    pub fn max_rounds(mut self, n: u32) -> Self {
        self.0.max_rounds = n;
        self
    }
    /// See [`Config::max_clock_drift_ms`].
    pub fn max_clock_drift_ms(mut self, ms: u64) -> Self {
        self.0.max_clock_drift_ms = ms;
        self
    }
    /// See [`Config::user`] and [`Config::session`].
    pub fn identity(mut self, user: Option<String>, session: Option<String>) -> Self {
        self.0.user = user;
        self.0.session = session;
        self
    }
    /// See [`Config::origin`].
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.0.origin = Some(origin.into());
        self
    }
    /// Validate and return the configuration.
    pub fn build(self) -> Result<Config> {
        self.0.validate()?;
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::ErrorKind;

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn bad_values_are_config_errors() {
        let cases = [
            Config::builder().batch_size(0),
            Config::builder().batch_size(1001),
            Config::builder().page_size(0),
            Config::builder().page_size(5001),
            Config::builder().sync_timeout(Duration::ZERO),
            Config::builder().push_only(true).pull_only(true),
            Config::builder().max_rounds(0),
            Config::builder().retry(RetryPolicy {
                max_attempts: 0,
                ..RetryPolicy::default()
            }),
            Config::builder().retry(RetryPolicy {
                jitter: 1.5,
                ..RetryPolicy::default()
            }),
            Config::builder().retry(RetryPolicy {
                base: Duration::from_secs(20),
                ..RetryPolicy::default()
            }),
        ];
        for case in cases {
            let err = case.clone().build().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{case:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            jitter: 0.5,
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(4), Duration::from_millis(800));
        assert_eq!(p.backoff(5), Duration::from_millis(1000));
        assert_eq!(p.backoff(60), Duration::from_millis(1000));
        assert_eq!(p.backoff_with_jitter(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff_with_jitter(2, 1.0), Duration::from_millis(100));
    }
}
