//! Exponential backoff after consecutive failures, and the random jitter added to every delay.

use std::time::Duration;

use crate::error::{CoordinatorError, Result};

/// Delay before retrying a failing job: `initial * factor^(failures - 1)`, capped at `max`.
///
/// The retry delay replaces the job's interval while it fails, so a job that runs hourly is
/// retried after a second, then two, ... up to `max`; the first success returns it to its
/// interval.
///
/// ```
/// use std::time::Duration;
/// use synckit_coordinator::Backoff;
/// let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
/// let delays: Vec<u64> = (1..=6).map(|n| backoff.delay(n).as_secs()).collect();
/// assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// How much each further failure multiplies the delay by (at least 1).
    pub factor: u32,
}

impl Default for Backoff {
    /// One second, doubling, at most five minutes.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl Backoff {
    /// Doubling from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            factor: 2,
        }
    }

    /// Multiply by `factor` per failure instead of 2.
    pub fn with_factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// The delay after `consecutive_failures` failures in a row (zero for none).
    pub fn delay(&self, consecutive_failures: u32) -> Duration {
        let Some(exponent) = consecutive_failures.checked_sub(1) else {
            return Duration::ZERO;
        };
        self.factor
            .checked_pow(exponent)
            .and_then(|multiplier| self.initial.checked_mul(multiplier))
            .map_or(self.max, |delay| delay.min(self.max))
    }

    pub(crate) fn validate(&self, job: &str) -> Result<()> {
        if self.initial.is_zero() {
            return Err(CoordinatorError::config(format!(
                "job {job:?}: the initial backoff must be longer than zero"
            )));
        }
        if self.max < self.initial {
            return Err(CoordinatorError::config(format!(
                "job {job:?}: the maximum backoff {:?} is shorter than the initial {:?}",
                self.max, self.initial
            )));
        }
        if self.factor == 0 {
            return Err(CoordinatorError::config(format!(
                "job {job:?}: the backoff factor must be at least 1"
            )));
        }
        Ok(())
    }
}

/// A random delay in `0..=max`, so that many coordinators started together do not all hit the
/// same source at the same moment.
pub(crate) fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_is_capped_without_overflow() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(60));
        assert_eq!(b.delay(0), Duration::ZERO);
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(5), Duration::from_millis(1_600));
        assert_eq!(b.delay(40), Duration::from_secs(60));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
        let flat = b.with_factor(1);
        assert_eq!(flat.delay(30), Duration::from_millis(100));
        let huge = Backoff::new(Duration::MAX, Duration::MAX).with_factor(u32::MAX);
        assert_eq!(huge.delay(3), Duration::MAX);
    }

    #[test]
    fn validation() {
        let ok = Backoff::default();
        ok.validate("j").unwrap();
        assert!(
            Backoff::new(Duration::ZERO, Duration::ZERO)
                .validate("j")
                .is_err()
        );
        assert!(
            Backoff::new(Duration::from_secs(2), Duration::from_secs(1))
                .validate("j")
                .is_err()
        );
        assert!(ok.with_factor(0).validate("j").is_err());
    }

    #[test]
    fn jitter_stays_in_range() {
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
