//! BufferEngine: stores of different types, start and stop, per-store intervals, the limit on
//! concurrent flushes, and isolation of a failing sink. Timers run on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::{TestSink, quick_retry};
use synckit_buffer::{BufferEngine, BufferError, BufferedStore, DirtyCache, RetryPolicy};
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn stop_returns_the_error_of_a_failing_store_and_the_others_still_flush() {
    let engine = BufferEngine::new(2).unwrap();
    let good_sink = Arc::new(TestSink::<u64>::new());
    let text_sink = Arc::new(TestSink::<String>::new());
    let bad_sink = Arc::new(TestSink::<u64>::new());
    bad_sink.fail_always(true, false);
    let good = engine
        .register(BufferedStore::builder("good", good_sink.clone()).flush_interval(HOUR))
        .unwrap();
    let text = engine
        .register(BufferedStore::builder("text", text_sink.clone()).flush_interval(HOUR))
        .unwrap();
    let bad = engine
        .register(
            BufferedStore::builder("bad", bad_sink.clone())
                .retry(quick_retry())
                .close_timeout(Duration::from_secs(1)),
        )
        .unwrap();
    engine.start().unwrap();
    good.write_many((0..10).collect()).await.unwrap();
    text.write("hello".to_owned()).await.unwrap();
    bad.write_many(vec![7, 8]).await.unwrap();

    let mut report = engine.stop().await;
    assert!(!report.is_clean());
    assert!(report.store("good").unwrap().is_clean());
    assert!(report.store("text").unwrap().is_clean());
    assert_eq!(good_sink.written_items(), (0..10).collect::<Vec<_>>());
    assert_eq!(text_sink.written_items(), ["hello"]);

    let errors: Vec<(&str, &BufferError)> = report.errors().collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "bad");
    assert!(matches!(
        errors[0].1,
        BufferError::Unflushed {
            items: 2,
            last_error: Some(_),
            ..
        }
    ));
    let bad_report = report
        .stores
        .iter_mut()
        .find(|s| s.name() == "bad")
        .unwrap();
    assert_eq!(bad_report.unflushed, 2);
    let (unflushed, failed) = bad_report.take_items::<u64>().unwrap();
    assert_eq!(unflushed, [7, 8]);
    assert!(failed.is_empty());

    assert!(matches!(
        good.write(1).await,
        Err(BufferError::Closed { .. })
    ));
    assert!(
        engine
            .register(BufferedStore::builder("late", good_sink))
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn the_concurrent_flush_limit_is_honoured() {
    let limit = 2;
    let engine = BufferEngine::new(limit).unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let mut sinks = Vec::new();
    let mut stores = Vec::new();
    for i in 0..6 {
        let sink = Arc::new(
            TestSink::<u64>::new()
                .delayed(Duration::from_millis(10))
                .counting(in_flight.clone(), max.clone()),
        );
        let store = engine
            .register(
                BufferedStore::builder(format!("s{i}"), sink.clone())
                    .max_batch(5)
                    .flush_interval(HOUR),
            )
            .unwrap();
        sinks.push(sink);
        stores.push(store);
    }
    engine.start().unwrap();
    for store in &stores {
        // Two full batches each: every store wants to write at once.
        store.write_many((0..10).collect()).await.unwrap();
    }
    for store in &stores {
        store.flush().await.unwrap();
    }
    assert_eq!(
        max.load(std::sync::atomic::Ordering::SeqCst),
        limit,
        "writes overlapped up to the limit and never beyond"
    );
    for sink in &sinks {
        assert_eq!(sink.written_items(), (0..10).collect::<Vec<_>>());
    }
    assert!(engine.stop().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_failing_sink_does_not_delay_another_stores_flushes() {
    let engine = BufferEngine::new(1).unwrap();
    let failing = Arc::new(TestSink::<u64>::new());
    failing.fail_always(true, false);
    let mut slow_retry = RetryPolicy::default();
    slow_retry.initial_backoff = Duration::from_secs(1);
    slow_retry.max_backoff = Duration::from_secs(1);
    slow_retry.jitter = 0.0;
    let broken = engine
        .register(
            BufferedStore::builder("broken", failing.clone())
                .max_batch(1)
                .retry(slow_retry)
                .close_timeout(Duration::from_millis(10)),
        )
        .unwrap();
    let healthy_sink = Arc::new(TestSink::<u64>::new());
    let mut done = healthy_sink.subscribe();
    let interval = Duration::from_millis(100);
    let healthy = engine
        .register(BufferedStore::builder("healthy", healthy_sink.clone()).flush_interval(interval))
        .unwrap();
    engine.start().unwrap();

    broken.write_many(vec![1, 2, 3]).await.unwrap();
    let start = Instant::now();
    for round in 0..5u32 {
        healthy.write(u64::from(round)).await.unwrap();
        let batch = done.recv().await.unwrap();
        assert_eq!(batch.items(), [u64::from(round)]);
        assert!(
            start.elapsed() <= interval * (round + 1),
            "round {round}: flushed {:?} after the start",
            start.elapsed()
        );
    }
    assert!(
        !failing.attempts().is_empty(),
        "the broken store kept trying"
    );
    assert!(healthy_sink.written().len() == 5);
    let report = engine.stop().await;
    assert!(report.store("healthy").unwrap().is_clean());
    assert!(!report.store("broken").unwrap().is_clean());
}

#[tokio::test(start_paused = true)]
async fn stores_registered_after_start_get_their_own_timers() {
    let engine = BufferEngine::new(4).unwrap();
    engine.start().unwrap();
    let fast_sink = Arc::new(TestSink::<u64>::new());
    let slow_sink = Arc::new(TestSink::<u64>::new());
    let mut fast_done = fast_sink.subscribe();
    let mut slow_done = slow_sink.subscribe();
    let fast = engine
        .register(
            BufferedStore::builder("fast", fast_sink.clone())
                .flush_interval(Duration::from_millis(50)),
        )
        .unwrap();
    let slow = engine
        .register(
            BufferedStore::builder("slow", slow_sink.clone())
                .flush_interval(Duration::from_millis(500)),
        )
        .unwrap();
    let start = Instant::now();
    fast.write(1).await.unwrap();
    slow.write(2).await.unwrap();
    fast_done.recv().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert!(slow_sink.written().is_empty());
    slow_done.recv().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(500));

    let names: Vec<String> = engine.stats().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["fast", "slow"]);
    assert!(
        engine
            .register(BufferedStore::builder("fast", fast_sink))
            .is_err(),
        "names are unique"
    );
    assert!(engine.stop().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn dirty_caches_run_under_the_engine_too() {
    let engine = BufferEngine::new(1).unwrap();
    let sink = Arc::new(TestSink::<(String, u64)>::new());
    let mut done = sink.subscribe();
    let cache = engine
        .register_cache(
            DirtyCache::builder("cache", sink.clone()).flush_interval(Duration::from_millis(20)),
        )
        .unwrap();
    cache.set("a".into(), 1).unwrap();
    engine.start().unwrap();
    let batch = done.recv().await.unwrap();
    assert_eq!(batch.items(), [("a".to_owned(), 1)]);
    cache.set("b".into(), 2).unwrap();
    let report = engine.stop().await;
    assert!(report.is_clean());
    assert_eq!(sink.written_items().len(), 2);
}

#[test]
fn a_limit_of_zero_is_refused() {
    assert!(matches!(BufferEngine::new(0), Err(BufferError::Config(_))));
}
