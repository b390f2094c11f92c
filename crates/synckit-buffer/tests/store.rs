//! BufferedStore behaviour: size and time triggers, retries in order, full policies, close,
//! dead letters, flush, stats and metrics. Timers run on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{TestSink, quick_retry};
use futures::poll;
use synckit_buffer::{BufferError, BufferedStore, DeadLetter, FailedBatch, FullPolicy};
use synckit_types::Error;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn max_batch_100_and_250_writes_give_100_100_then_50_at_close() {
    let sink = Arc::new(TestSink::<u64>::new());
    let mut done = sink.subscribe();
    let store = BufferedStore::builder("batches", sink.clone())
        .max_batch(100)
        .flush_interval(HOUR)
        .start()
        .unwrap();
    for i in 0..250u64 {
        store.write(i).await.unwrap();
    }
    assert_eq!(done.recv().await.unwrap().len(), 100);
    assert_eq!(done.recv().await.unwrap().len(), 100);
    // The last 50 wait for the interval (an hour) or close.
    assert!(done.try_recv().is_err());
    assert_eq!(sink.sizes(), [100, 100]);

    let report = store.close().await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(sink.sizes(), [100, 100, 50]);
    assert_eq!(sink.written_items(), (0..250).collect::<Vec<_>>());
    let firsts: Vec<u64> = sink.written().iter().map(|b| b.first_seq()).collect();
    assert_eq!(firsts, [1, 101, 201]);
    assert_eq!(report.stats.flushed, 250);
    assert_eq!(report.stats.queued, 250);
    assert_eq!(report.stats.batches, 3);
}

#[tokio::test(start_paused = true)]
async fn a_sink_failing_twice_gets_the_same_items_in_order_on_the_third_try() {
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_next([Error::unavailable("one"), Error::unavailable("two")]);
    let mut done = sink.subscribe();
    let store = BufferedStore::builder("retry", sink.clone())
        .max_batch(10)
        .flush_interval(HOUR)
        .retry(quick_retry())
        .start()
        .unwrap();
    store.write_many((0..20).collect()).await.unwrap();
    let first = done.recv().await.unwrap();
    let second = done.recv().await.unwrap();
    assert_eq!(first.items(), (0..10).collect::<Vec<_>>());
    assert_eq!(first.first_seq(), 1);
    assert_eq!(second.items(), (10..20).collect::<Vec<_>>());

    let attempts = sink.attempts();
    assert_eq!(
        attempts.len(),
        4,
        "three tries of the first batch, one of the second"
    );
    for attempt in &attempts[..3] {
        assert_eq!(attempt, &first, "every try carries the same batch");
    }
    assert_eq!(attempts[3], second);
    assert_eq!(store.stats().failed_attempts, 2);
    assert!(store.close().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn the_time_trigger_fires_at_the_interval() {
    let interval = Duration::from_millis(100);
    let sink = Arc::new(TestSink::<u64>::new());
    let mut done = sink.subscribe();
    let store = BufferedStore::builder("timer", sink.clone())
        .max_batch(100)
        .flush_interval(interval)
        .start()
        .unwrap();
    let start = Instant::now();
    store.write(1).await.unwrap();
    store.write(2).await.unwrap();

    tokio::time::advance(interval - Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(sink.written().is_empty(), "flushed before the interval");
    assert!(done.try_recv().is_err());

    tokio::time::advance(Duration::from_millis(1)).await;
    let batch = done.recv().await.unwrap();
    assert_eq!(batch.items(), [1, 2]);
    assert!(
        start.elapsed() <= interval,
        "flushed {:?} after the first write",
        start.elapsed()
    );
    assert!(store.close().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_writer_blocked_at_capacity_is_released_when_a_flush_makes_room() {
    let gate = Arc::new(Semaphore::new(0));
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let sink = Arc::new(
        TestSink::<u64>::new()
            .gated(gate.clone())
            .on_enter(entered_tx),
    );
    let store = BufferedStore::builder("block", sink.clone())
        .max_batch(10)
        .capacity(10, usize::MAX)
        .flush_interval(HOUR)
        .start()
        .unwrap();
    store.write_many((0..10).collect()).await.unwrap();
    // The full batch is being written, held at the gate: the store is at capacity.
    assert_eq!(entered.recv().await, Some(10));
    assert_eq!(store.stats().held_items, 10);

    let blocked = store.write(10);
    tokio::pin!(blocked);
    assert!(
        poll!(&mut blocked).is_pending(),
        "a write at capacity waits"
    );
    gate.add_permits(1);
    blocked.await.unwrap();

    gate.add_permits(10);
    let report = store.close().await;
    assert!(report.is_clean());
    assert_eq!(sink.written_items(), (0..11).collect::<Vec<_>>());
    assert_eq!(report.stats.dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn a_writer_blocked_at_capacity_gets_closed_when_the_store_closes() {
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_always(true, false);
    let store = BufferedStore::builder("block-close", sink.clone())
        .max_batch(5)
        .capacity(5, usize::MAX)
        .retry(quick_retry())
        .start()
        .unwrap();
    store.write_many((0..5).collect()).await.unwrap();
    let blocked = store.write(5);
    tokio::pin!(blocked);
    assert!(poll!(&mut blocked).is_pending());
    let report = store.close_within(Duration::from_millis(50)).await;
    assert!(matches!(blocked.await, Err(BufferError::Closed { .. })));
    assert_eq!(report.unflushed, (0..5).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn dropping_at_capacity_counts_what_it_dropped() {
    let sink = Arc::new(TestSink::<u64>::new());
    // Not started: nothing is flushed, so capacity stays reached.
    let store = BufferedStore::builder("drop", sink.clone())
        .max_batch(10)
        .capacity(10, usize::MAX)
        .when_full(FullPolicy::DropNewest)
        .build()
        .unwrap();
    assert_eq!(store.write_many((0..15).collect()).await.unwrap(), 10);
    store.write(99).await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.dropped, 6);
    assert_eq!(stats.queued, 10);
    assert_eq!(stats.held_items, 10);

    let report = store.close().await;
    assert!(report.is_clean());
    assert_eq!(report.stats.dropped, 6);
    assert_eq!(sink.written_items(), (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn rejecting_at_capacity_refuses_the_whole_write() {
    let sink = Arc::new(TestSink::<u64>::new());
    let store = BufferedStore::builder("reject", sink.clone())
        .max_batch(10)
        .capacity(10, usize::MAX)
        .when_full(FullPolicy::Reject)
        .build()
        .unwrap();
    assert_eq!(store.write_many((0..8).collect()).await.unwrap(), 8);
    let error = store.write_many((8..13).collect()).await.unwrap_err();
    assert!(
        matches!(error, BufferError::Full { items: 8, .. }),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(store.write_many(vec![8, 9]).await.unwrap(), 2);
    assert!(matches!(
        store.write(10).await,
        Err(BufferError::Full { .. })
    ));
    // More than the whole capacity can never fit.
    assert!(matches!(
        store.write_many((0..11).collect()).await,
        Err(BufferError::TooLarge { .. })
    ));
    assert_eq!(store.stats().rejected, 6);
    assert!(store.close().await.is_clean());
    assert_eq!(sink.written_items(), (0..10).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn the_byte_capacity_counts_what_the_weigher_says() {
    let sink = Arc::new(TestSink::<String>::new());
    let store = BufferedStore::builder("bytes", sink.clone())
        .capacity(100, 10)
        .max_batch(100)
        .weigh(|s: &String| s.len())
        .when_full(FullPolicy::Reject)
        .build()
        .unwrap();
    store.write("12345678".into()).await.unwrap();
    assert!(matches!(
        store.write("123".into()).await,
        Err(BufferError::Full { bytes: 8, .. })
    ));
    store.write("12".into()).await.unwrap();
    assert!(matches!(
        store.write("x".repeat(11)).await,
        Err(BufferError::TooLarge { .. })
    ));
    assert_eq!(store.stats().held_bytes, 10);
    assert!(store.close().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn writes_after_close_fail_with_closed() {
    let sink = Arc::new(TestSink::<u64>::new());
    let store = BufferedStore::builder("closed", sink.clone())
        .start()
        .unwrap();
    store.write(1).await.unwrap();
    let report = store.close().await;
    assert!(report.is_clean());
    assert_eq!(sink.written_items(), [1]);
    let error = store.write(2).await.unwrap_err();
    assert!(matches!(error, BufferError::Closed { .. }), "{error}");
    assert!(!error.is_retryable());
    assert!(matches!(
        store.write_many(vec![3]).await,
        Err(BufferError::Closed { .. })
    ));
    assert!(store.is_closed());
    assert!(store.start().is_err());
    // A second close reports the counters and nothing else.
    let again = store.close().await;
    assert!(again.is_clean());
    assert_eq!(again.stats.flushed, 1);
}

#[tokio::test(start_paused = true)]
async fn close_reports_what_it_could_not_flush_when_the_sink_keeps_failing() {
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_always(true, false);
    let store = BufferedStore::builder("failing", sink.clone())
        .max_batch(3)
        .retry(quick_retry())
        .start()
        .unwrap();
    store.write_many((0..5).collect()).await.unwrap();
    let started = Instant::now();
    let report = store.close_within(Duration::from_secs(1)).await;
    assert!(started.elapsed() <= Duration::from_secs(1));
    assert!(!report.is_clean());
    assert_eq!(report.unflushed, (0..5).collect::<Vec<_>>());
    match &report.error {
        Some(BufferError::Unflushed {
            items: 5,
            last_error: Some(e),
            ..
        }) => assert!(e.is_retryable()),
        other => panic!("expected Unflushed with the sink's error, got {other:?}"),
    }
    assert!(report.stats.failed_attempts > 1, "it kept retrying");
    assert!(sink.written().is_empty());
    assert!(matches!(
        store.write(9).await,
        Err(BufferError::Closed { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_final_flush_has_a_deadline_of_its_own() {
    // The flusher has been retrying for longer than the close timeout when close is called:
    // the deadline counts from the call, so the final flush still gets its retries.
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_always(true, false);
    let store = BufferedStore::builder("deadline", sink.clone())
        .max_batch(1)
        .retry(quick_retry())
        .start()
        .unwrap();
    store.write(1).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(sink.written().is_empty());
    sink.fail_always(false, false);
    let report = store.close_within(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(sink.written_items(), [1]);
}

#[tokio::test(start_paused = true)]
async fn permanent_failures_go_to_the_dead_letter_sink() {
    let sink = Arc::new(TestSink::<u64>::new());
    let dead = Arc::new(TestSink::<u64>::new());
    sink.fail_next([Error::invalid_input("bad batch")]);
    let store = BufferedStore::builder("dead-letter", sink.clone())
        .max_batch(2)
        .dead_letter(DeadLetter::Sink(dead.clone()))
        .start()
        .unwrap();
    store.write_many(vec![1, 2, 3, 4]).await.unwrap();
    let report = store.close().await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(dead.written_items(), [1, 2]);
    assert_eq!(sink.written_items(), [3, 4]);
    assert_eq!(report.stats.dead_lettered, 2);
    assert_eq!(sink.attempts().len(), 2, "a permanent error is not retried");
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_past_max_attempts_go_to_the_callback() {
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_always(true, false);
    type Seen = Vec<(Vec<u64>, bool)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen_by_callback = seen.clone();
    let mut retry = quick_retry();
    retry.max_attempts = Some(3);
    let store = BufferedStore::builder("callback", sink.clone())
        .max_batch(2)
        .retry(retry)
        .dead_letter(DeadLetter::Callback(Arc::new(
            move |f: FailedBatch<u64>| {
                seen_by_callback
                    .lock()
                    .unwrap()
                    .push((f.batch.into_items(), f.error.is_retryable()));
            },
        )))
        .start()
        .unwrap();
    store.write_many(vec![1, 2]).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(vec![1, 2], true)]);
    assert_eq!(sink.attempts().len(), 3);
    assert_eq!(
        store.stats().held_items,
        0,
        "the callback took it: room is freed"
    );
    assert!(store.close().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn by_default_refused_batches_are_kept_and_reported() {
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_next([Error::invalid_input("no")]);
    let store = BufferedStore::builder("keep", sink.clone())
        .max_batch(2)
        .capacity(4, usize::MAX)
        .when_full(FullPolicy::Reject)
        .start()
        .unwrap();
    store.write_many(vec![1, 2]).await.unwrap();
    store.flush().await.unwrap();
    let stats = store.stats();
    assert_eq!(stats.failed_items, 2);
    assert_eq!(stats.held_items, 2, "kept items count against capacity");
    store.write_many(vec![3, 4]).await.unwrap();
    store.flush().await.unwrap();
    // Two of four places are taken by the kept batch.
    assert!(matches!(
        store.write_many(vec![5, 6, 7]).await,
        Err(BufferError::Full { items: 2, .. })
    ));

    let report = store.close().await;
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].batch.items(), [1, 2]);
    assert!(!report.failed[0].error.is_retryable());
    assert!(report.unflushed.is_empty());
    assert_eq!(sink.written_items(), [3, 4]);
    let erased = synckit_buffer::StoreReport::from(report);
    assert_eq!(erased.failed, 2);
    assert!(matches!(
        erased.errors[..],
        [BufferError::Refused { items: 2, .. }]
    ));
}

#[tokio::test(start_paused = true)]
async fn take_failed_frees_room() {
    let sink = Arc::new(TestSink::<u64>::new());
    sink.fail_next([Error::invalid_input("no")]);
    let store = BufferedStore::builder("take", sink.clone())
        .max_batch(2)
        .capacity(2, usize::MAX)
        .start()
        .unwrap();
    store.write_many(vec![1, 2]).await.unwrap();
    store.flush().await.unwrap();
    let blocked = store.write(3);
    tokio::pin!(blocked);
    assert!(
        poll!(&mut blocked).is_pending(),
        "the kept batch fills the store"
    );
    let failed = store.take_failed();
    assert_eq!(failed.len(), 1);
    blocked.await.unwrap();
    assert!(store.close().await.is_clean());
    assert_eq!(sink.written_items(), [3]);
}

#[tokio::test(start_paused = true)]
async fn flush_writes_everything_accepted_before_it() {
    let sink = Arc::new(TestSink::<u64>::new());
    let store = BufferedStore::builder("flush", sink.clone())
        .max_batch(100)
        .flush_interval(HOUR)
        .start()
        .unwrap();
    store.write_many(vec![1, 2, 3]).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(sink.written_items(), [1, 2, 3]);
    store.flush().await.unwrap();
    assert_eq!(sink.sizes(), [3]);
    assert!(store.close().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn a_store_built_but_not_started_flushes_at_close() {
    let sink = Arc::new(TestSink::<u64>::new());
    let store = BufferedStore::builder("idle", sink.clone())
        .build()
        .unwrap();
    store.write_many(vec![1, 2]).await.unwrap();
    assert!(sink.written().is_empty());
    assert!(store.close().await.is_clean());
    assert_eq!(sink.written_items(), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn invalid_settings_are_refused() {
    let sink = Arc::new(TestSink::<u64>::new());
    let error = BufferedStore::builder("bad", sink.clone())
        .max_batch(10)
        .capacity(5, 100)
        .build()
        .unwrap_err();
    assert!(matches!(error, BufferError::Config(_)), "{error}");
    assert!(BufferedStore::builder("", sink).build().is_err());
}

#[test]
fn metrics_are_reported_per_store() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let sink = Arc::new(TestSink::<u64>::new());
            sink.fail_next([Error::unavailable("once")]);
            let store = BufferedStore::builder("metered", sink)
                .max_batch(2)
                .capacity(4, usize::MAX)
                .when_full(FullPolicy::DropNewest)
                .retry(quick_retry())
                .build()
                .unwrap();
            store.write_many(vec![1, 2, 3, 4, 5]).await.unwrap();
            store.start().unwrap();
            assert!(store.close().await.is_clean());
        });
    });
    let mut counters = std::collections::BTreeMap::new();
    let mut histograms = std::collections::BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        assert!(
            key.labels()
                .any(|l| l.key() == "store" && l.value() == "metered"),
            "{key:?} is labelled with the store"
        );
        match value {
            DebugValue::Counter(n) => {
                counters.insert(key.name().to_owned(), n);
            }
            DebugValue::Histogram(v) => {
                histograms.insert(key.name().to_owned(), v.len());
            }
            DebugValue::Gauge(_) => {}
        }
    }
    use synckit_buffer::observe::*;
    assert_eq!(counters[QUEUED], 4);
    assert_eq!(counters[DROPPED], 1);
    assert_eq!(counters[FLUSHED], 4);
    assert_eq!(counters[FAILED], 1);
    assert_eq!(
        histograms[FLUSH_DURATION], 3,
        "two batches, one of them tried twice"
    );
    assert_eq!(histograms[BATCH_SIZE], 3);
}
