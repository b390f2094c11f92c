//! Overload protection that needs state: a token bucket per bearer token, and a count of live
//! subscriptions per tenant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use synckit_types::TenantId;
use tokio::time::Instant;

use crate::config::RateLimit;
use crate::error::ApiError;

/// One token bucket per grant (tokens are fixed at start, so a grant's index is its key).
#[derive(Debug)]
pub struct RateLimiter {
    limit: Option<RateLimit>,
    buckets: Vec<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    available: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Buckets for `grants` tokens, each full.
    pub fn new(limit: Option<RateLimit>, grants: usize) -> RateLimiter {
        let now = Instant::now();
        let burst = limit.map_or(0.0, |l| f64::from(l.burst));
        RateLimiter {
            limit,
            buckets: (0..grants)
                .map(|_| {
                    Mutex::new(Bucket {
                        available: burst,
                        updated: now,
                    })
                })
                .collect(),
        }
    }

    /// Take one request from the bucket of grant `index`, or say how long to wait.
    pub fn check(&self, index: usize, now: Instant) -> Result<(), Duration> {
        let (Some(limit), Some(bucket)) = (self.limit, self.buckets.get(index)) else {
            return Ok(());
        };
        let Ok(mut bucket) = bucket.lock() else {
            // A poisoned bucket only ever held two numbers; let the request through.
            return Ok(());
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.available =
            (bucket.available + elapsed * limit.per_second).min(f64::from(limit.burst));
        bucket.updated = now;
        if bucket.available >= 1.0 {
            bucket.available -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.available) / limit.per_second,
            ))
        }
    }

    /// [`RateLimiter::check`] now, as a 429 with `Retry-After` in whole seconds (at least 1).
    pub fn admit(&self, index: usize) -> Result<(), ApiError> {
        self.check(index, Instant::now()).map_err(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::too_many_requests(
                "rate_limited",
                format!("this token is over its request rate; retry in {seconds} s"),
                seconds.max(1),
            )
        })
    }
}

/// Live subscriptions per tenant, bounded.
#[derive(Debug, Default)]
pub struct SubscriberSlots {
    max: usize,
    live: Arc<Mutex<HashMap<TenantId, usize>>>,
}

/// A held subscription slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SubscriberSlot {
    tenant: TenantId,
    live: Arc<Mutex<HashMap<TenantId, usize>>>,
}

impl SubscriberSlots {
    /// At most `max` live subscriptions per tenant.
    pub fn new(max: usize) -> SubscriberSlots {
        SubscriberSlots {
            max,
            live: Arc::default(),
        }
    }

    /// A slot for one more subscription of `tenant`, or 429 `too_many_subscribers`.
    pub fn acquire(&self, tenant: &TenantId) -> Result<SubscriberSlot, ApiError> {
        let full = || {
            ApiError::too_many_requests(
                "too_many_subscribers",
                format!(
                    "tenant {tenant} already has {} live subscriptions, the limit",
                    self.max
                ),
                1,
            )
        };
        let mut live = self.live.lock().map_err(|_| full())?;
        let count = live.entry(tenant.clone()).or_insert(0);
        if *count >= self.max {
            return Err(full());
        }
        *count += 1;
        Ok(SubscriberSlot {
            tenant: tenant.clone(),
            live: self.live.clone(),
        })
    }
}

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        if let Ok(mut live) = self.live.lock()
            && let Some(count) = live.get_mut(&self.tenant)
        {
            *count -= 1;
            if *count == 0 {
                live.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(
            Some(RateLimit {
                per_second: 10.0,
                burst: 3,
            }),
            2,
        );
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(0, t0).is_ok());
        }
        let wait = limiter.check(0, t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        assert!(
            limiter.check(1, t0).is_ok(),
            "each token has its own bucket"
        );
        assert!(limiter.check(0, t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.check(0, t0 + Duration::from_millis(100)).is_err());
        // A long idle spell refills only up to the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check(0, later).is_ok());
        }
        assert!(limiter.check(0, later).is_err());
    }

    #[test]
    fn no_limit_admits_everything() {
        let limiter = RateLimiter::new(None, 1);
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| limiter.check(0, t0).is_ok()));
    }

    #[test]
    fn subscriber_slots_are_per_tenant_and_freed_on_drop() {
        let slots = SubscriberSlots::new(2);
        let a = TenantId::new("a").unwrap();
        let b = TenantId::new("b").unwrap();
        let first = slots.acquire(&a).unwrap();
        let _second = slots.acquire(&a).unwrap();
        let refused = slots.acquire(&a).unwrap_err();
        assert_eq!(refused.status().as_u16(), 429);
        assert!(slots.acquire(&b).is_ok());
        drop(first);
        assert!(slots.acquire(&a).is_ok());
    }
}
