//! Fault injection for [`MemoryTransport`](crate::MemoryTransport): failed calls, lost responses,
//! latency and dropped subscriptions, all deterministic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use synckit_types::{Error, Result};
use tokio::sync::watch;

/// The faults a [`MemoryTransport`](crate::MemoryTransport) injects into its own calls.
///
/// Shared by every clone of one transport (one "connection"); another transport from the same
/// hub has its own. Nothing here is random: a test (or a simulation harness with its own seeded
/// random source) decides which faults happen and when, so a failing run can be replayed.
///
/// A *call* is one invocation of `push`, `pull`, `head` or `subscribe`. The reads a live
/// subscription makes after it is established are not calls: use
/// [`disconnect_subscriptions`](Faults::disconnect_subscriptions) to break those.
///
/// Every injected error has kind [`Unavailable`](synckit_types::ErrorKind::Unavailable), is
/// retryable, and has a message starting with `injected fault`.
#[derive(Debug)]
pub struct Faults {
    fail_next: AtomicU64,
    lose_next: AtomicU64,
    delay_nanos: AtomicU64,
    calls: AtomicU64,
    injected: AtomicU64,
    disconnects: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail_next: AtomicU64::new(0),
            lose_next: AtomicU64::new(0),
            delay_nanos: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            injected: AtomicU64::new(0),
            disconnects: watch::Sender::new(0),
        }
    }
}

impl Faults {
    /// Make the next `n` calls fail before they reach the store: nothing is applied, the caller
    /// gets a retryable `unavailable` error ("the request never arrived"). Replaces any count
    /// still pending; `0` cancels it.
    pub fn fail_next(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Make the next `n` calls that the store completes successfully lose their response: the
    /// store applies the call (a push is committed), then the caller gets a retryable
    /// `unavailable` error ("committed, but the response was lost"). A retry of a lost push
    /// returns `duplicate` outcomes. For `pull`, `head` and `subscribe` the store is read and the
    /// answer thrown away. A call failed by [`fail_next`](Faults::fail_next), or failed by the
    /// store itself, does not use up the count. Replaces any count still pending; `0` cancels it.
    pub fn lose_next_responses(&self, n: u64) {
        self.lose_next.store(n, Ordering::SeqCst);
    }

    /// Wait `delay` (with `tokio::time::sleep`) at the start of every call, before any other
    /// fault is decided. `Duration::ZERO` means no delay and no timer.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// The delay set by [`set_delay`](Faults::set_delay).
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::SeqCst))
    }

    /// End every live subscription of this transport with a retryable `unavailable` error, as a
    /// dropped connection would. The events already yielded stay delivered; the subscriber
    /// resumes by subscribing again after the last `seq` it received. Subscriptions made
    /// afterwards are not affected.
    pub fn disconnect_subscriptions(&self) {
        self.disconnects
            .send_modify(|epoch| *epoch = epoch.wrapping_add(1));
        self.injected.fetch_add(1, Ordering::SeqCst);
    }

    /// Cancel pending failures and lost responses and remove the delay. The counters stay.
    pub fn clear(&self) {
        self.fail_next.store(0, Ordering::SeqCst);
        self.lose_next.store(0, Ordering::SeqCst);
        self.delay_nanos.store(0, Ordering::SeqCst);
    }

    /// How many calls were made on this transport, failed or not.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// How many faults were injected so far (failed calls, lost responses, disconnects).
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// Start of a call: count it, wait the delay, then fail it if a failure is pending.
    pub(crate) async fn before_call(&self, method: &str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if take_one(&self.fail_next) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Error::unavailable(format!(
                "injected fault: {method} failed before reaching the hub"
            )));
        }
        Ok(())
    }

    /// End of a call the store completed: drop the response if a loss is pending.
    pub(crate) fn after_call(&self, method: &str) -> Result<()> {
        if take_one(&self.lose_next) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(Error::unavailable(format!(
                "injected fault: {method} was applied by the hub but its response was lost"
            )));
        }
        Ok(())
    }

    /// A receiver that sees every later [`disconnect_subscriptions`](Faults::disconnect_subscriptions).
    pub(crate) fn disconnects(&self) -> watch::Receiver<u64> {
        self.disconnects.subscribe()
    }
}

/// Decrement `counter` if it is positive; whether it was.
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::ErrorKind;

    #[tokio::test]
    async fn fail_next_counts_down_and_clear_cancels() {
        let faults = Faults::default();
        faults.fail_next(2);
        for _ in 0..2 {
            let err = faults.before_call("push").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert!(err.is_retryable());
            assert!(err.message().starts_with("injected fault"), "{err}");
        }
        faults.before_call("push").await.unwrap();
        faults.fail_next(5);
        faults.clear();
        faults.before_call("head").await.unwrap();
        assert_eq!(faults.calls(), 4);
        assert_eq!(faults.injected(), 2);
    }

    #[tokio::test]
    async fn lost_responses_count_down() {
        let faults = Faults::default();
        faults.lose_next_responses(1);
        assert!(faults.after_call("push").is_err());
        assert!(faults.after_call("push").is_ok());
        assert_eq!(faults.injected(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_waits_before_the_call() {
        let faults = Faults::default();
        faults.set_delay(Duration::from_secs(3));
        assert_eq!(faults.delay(), Duration::from_secs(3));
        let start = tokio::time::Instant::now();
        faults.before_call("pull").await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        faults.clear();
        assert_eq!(faults.delay(), Duration::ZERO);
    }
}
