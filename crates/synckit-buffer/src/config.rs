//! Settings of a buffered store: batch size and interval, capacity and what to do when full,
//! retry backoff, and the deadlines of a write and of the final flush.

use std::time::Duration;

use crate::error::BufferError;

/// What a write does when the buffer is at capacity (items or bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FullPolicy {
    /// Wait until a flush makes room (backpressure). The default: nothing is lost.
    #[default]
    Block,
    /// Accept what fits and drop the rest of the write, counting every dropped item in
    /// [`crate::BufferStats::dropped`] and the `dropped` metric. The write still succeeds.
    DropNewest,
    /// Refuse the whole write with [`BufferError::Full`] (retryable); nothing of it is taken.
    Reject,
}

/// Exponential backoff with jitter between attempts of a failed flush.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Fraction of each wait that is random, in `0.0..=1.0`: a wait of `d` becomes a value in
    /// `d * (1 - jitter) ..= d`, so stores that failed together do not retry together.
    pub jitter: f64,
    /// Attempts (the first included) after which a retryable error is treated as permanent and
    /// the batch goes to the dead letter. `None` retries until the store closes.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            jitter: 0.5,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1 for the first): doubling from
    /// `initial_backoff` up to `max_backoff`, less a random share of `jitter`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let full = self
            .initial_backoff
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_backoff);
        let cut = self.jitter.clamp(0.0, 1.0) * fastrand::f64();
        full.mul_f64(1.0 - cut)
    }

    /// Whether `failures` failed attempts have used up the attempts allowed.
    pub(crate) fn exhausted(&self, failures: u32) -> bool {
        self.max_attempts.is_some_and(|max| failures >= max)
    }

    fn validate(&self) -> Result<(), BufferError> {
        if self.initial_backoff.is_zero() || self.initial_backoff > self.max_backoff {
            return Err(BufferError::Config(
                "retry backoff: need 0 < initial_backoff <= max_backoff".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(BufferError::Config(
                "retry jitter must be between 0.0 and 1.0".into(),
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(BufferError::Config(
                "retry max_attempts must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How a buffered store batches, bounds its memory and retries.
///
/// Start from `BufferConfig::default()` and set fields, or use the shortcuts on
/// [`crate::BufferBuilder`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BufferConfig {
    /// Flush as soon as this many items are buffered; also the largest batch a sink receives.
    pub max_batch: usize,
    /// Flush when this much time has passed since the first item of the pending batch arrived.
    pub flush_interval: Duration,
    /// Most items held at once: buffered, being written, and kept after a permanent failure.
    pub capacity_items: usize,
    /// Most bytes held at once, as measured by the store's weigher (see
    /// [`crate::BufferBuilder::weigh`]).
    pub capacity_bytes: usize,
    /// What a write does at capacity.
    pub when_full: FullPolicy,
    /// Backoff between attempts of a failed flush.
    pub retry: RetryPolicy,
    /// How long `close` may spend on the final flush, counted from when it is called.
    pub close_timeout: Duration,
    /// How long one sink write may take before it counts as a retryable failure (a hung sink
    /// must not hold a flush slot of the engine for ever). `None`: no limit.
    pub write_timeout: Option<Duration>,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_batch: 1_000,
            flush_interval: Duration::from_secs(1),
            capacity_items: 100_000,
            capacity_bytes: 64 << 20,
            when_full: FullPolicy::Block,
            retry: RetryPolicy::default(),
            close_timeout: Duration::from_secs(10),
            write_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl BufferConfig {
    /// Check that the values are usable together.
    pub fn validate(&self) -> Result<(), BufferError> {
        if self.max_batch == 0 {
            return Err(BufferError::Config("max_batch must be at least 1".into()));
        }
        if self.capacity_items < self.max_batch {
            return Err(BufferError::Config(format!(
                "capacity_items ({}) must be at least max_batch ({}): a full batch must fit",
                self.capacity_items, self.max_batch
            )));
        }
        if self.capacity_bytes == 0 {
            return Err(BufferError::Config(
                "capacity_bytes must be at least 1".into(),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(BufferError::Config(
                "flush_interval must be greater than zero".into(),
            ));
        }
        if self.write_timeout.is_some_and(|t| t.is_zero()) {
            return Err(BufferError::Config(
                "write_timeout must be greater than zero".into(),
            ));
        }
        self.retry.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_only_shortens() {
        let p = RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(70),
            jitter: 0.0,
            max_attempts: None,
        };
        assert_eq!(p.backoff(1), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(20));
        assert_eq!(p.backoff(3), Duration::from_millis(40));
        assert_eq!(p.backoff(4), Duration::from_millis(70));
        assert_eq!(p.backoff(400), Duration::from_millis(70));
        let j = RetryPolicy { jitter: 0.5, ..p };
        for _ in 0..100 {
            let d = j.backoff(2);
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
    }

    #[test]
    fn validation_refuses_contradictions() {
        assert!(BufferConfig::default().validate().is_ok());
        let mut c = BufferConfig::default();
        c.capacity_items = c.max_batch - 1;
        assert!(c.validate().is_err());
        let c = BufferConfig {
            max_batch: 0,
            ..BufferConfig::default()
        };
        assert!(c.validate().is_err());
        let mut c = BufferConfig::default();
        c.retry.jitter = 2.0;
        assert!(c.validate().is_err());
        let c = BufferConfig {
            flush_interval: Duration::ZERO,
            ..BufferConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
