//! Concurrency stress: 8 producers write 20,000 items each in random-sized writes into a small
//! buffer whose sink fails now and then (retryably); every item must arrive exactly once, in
//! each producer's order, with consecutive sequence numbers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use synckit_buffer::{Batch, BufferedStore, RetryPolicy, Sink, SinkError};
use synckit_types::Error;

const PRODUCERS: usize = 8;
const PER_PRODUCER: u64 = 20_000;

/// Fails about one write in twenty, retryably; records what it accepted.
struct FlakySink {
    rng: Mutex<fastrand::Rng>,
    accepted: Mutex<Vec<(u64, Vec<u64>)>>,
    failures: AtomicU64,
}

impl fmt::Debug for FlakySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlakySink")
    }
}

#[async_trait]
impl Sink<u64> for FlakySink {
    async fn write(&self, batch: &Batch<u64>) -> Result<(), SinkError> {
        let fail = self.rng.lock().unwrap().u8(..20) == 0;
        tokio::task::yield_now().await;
        if fail {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Error::unavailable("flaky"));
        }
        self.accepted
            .lock()
            .unwrap()
            .push((batch.first_seq(), batch.items().to_vec()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_producers_lose_and_repeat_nothing() {
    let seed = std::env::var("SYNCKIT_STRESS_SEED")
        .map(|s| s.parse().unwrap())
        .unwrap_or_else(|_| fastrand::u64(..));
    eprintln!("stress seed: {seed} (replay with SYNCKIT_STRESS_SEED={seed})");
    let sink = Arc::new(FlakySink {
        rng: Mutex::new(fastrand::Rng::with_seed(seed)),
        accepted: Mutex::new(Vec::new()),
        failures: AtomicU64::new(0),
    });
    let mut retry = RetryPolicy::default();
    retry.initial_backoff = Duration::from_micros(100);
    retry.max_backoff = Duration::from_millis(2);
    let store = BufferedStore::builder("stress", sink.clone())
        .max_batch(500)
        .capacity(2_000, usize::MAX)
        .flush_interval(Duration::from_millis(5))
        .retry(retry)
        .start()
        .unwrap();

    let mut producers = Vec::new();
    for p in 0..PRODUCERS as u64 {
        let store = store.clone();
        let mut rng = fastrand::Rng::with_seed(seed ^ (p + 1));
        producers.push(tokio::spawn(async move {
            let mut next = 0;
            while next < PER_PRODUCER {
                let size = rng.usize(1..=64);
                let items: Vec<u64> = (next..PER_PRODUCER)
                    .take(size)
                    .map(|i| p << 32 | i)
                    .collect();
                let count = items.len();
                if count == 1 {
                    store.write(items[0]).await.unwrap();
                } else {
                    assert_eq!(store.write_many(items).await.unwrap(), count);
                }
                next += count as u64;
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap();
    }
    let report = store.close().await;
    assert!(report.is_clean(), "{:?}", report.error);

    let accepted = sink.accepted.lock().unwrap().clone();
    let mut expected_seq = 1;
    let mut next_of = vec![0u64; PRODUCERS];
    for (first_seq, items) in &accepted {
        assert_eq!(
            *first_seq, expected_seq,
            "batches are consecutive, in order"
        );
        expected_seq += items.len() as u64;
        for item in items {
            let (p, i) = ((item >> 32) as usize, item & 0xffff_ffff);
            assert_eq!(
                i, next_of[p],
                "producer {p}: item {i} lost, repeated or reordered"
            );
            next_of[p] += 1;
        }
    }
    assert!(next_of.iter().all(|n| *n == PER_PRODUCER), "{next_of:?}");
    assert_eq!(report.stats.flushed, PRODUCERS as u64 * PER_PRODUCER);
    assert_eq!(report.stats.queued, PRODUCERS as u64 * PER_PRODUCER);
    assert_eq!(
        report.stats.failed_attempts,
        sink.failures.load(Ordering::Relaxed)
    );
    eprintln!(
        "stress: {} batches, {} failed writes retried",
        accepted.len(),
        report.stats.failed_attempts
    );
}
