//! DirtyCache: periodic flush of dirty keys, and a newer value winning over an older one whose
//! flush failed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{TestSink, quick_retry};
use synckit_buffer::{BufferError, DirtyCache};
use synckit_types::Error;
use tokio::sync::{Semaphore, mpsc};

type Entry = (&'static str, u32);

#[tokio::test(start_paused = true)]
async fn an_update_during_a_failed_flush_wins_over_the_retried_older_value() {
    let gate = Arc::new(Semaphore::new(0));
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let sink = Arc::new(
        TestSink::<Entry>::new()
            .gated(gate.clone())
            .on_enter(entered_tx),
    );
    sink.fail_next([Error::unavailable("down")]);
    let cache = DirtyCache::builder("state", sink.clone()).build().unwrap();
    cache.set("a", 1).unwrap();
    cache.set("b", 1).unwrap();

    let flushing = tokio::spawn({
        let cache = cache.clone();
        async move { cache.flush().await }
    });
    // The first flush is in the sink with a=1, b=1; a changes meanwhile.
    assert_eq!(entered.recv().await, Some(2));
    cache.set("a", 2).unwrap();
    gate.add_permits(1);
    assert!(matches!(
        flushing.await.unwrap(),
        Err(BufferError::Sink { .. })
    ));
    assert_eq!(
        cache.dirty_len(),
        2,
        "b is dirty again, a holds its newer value"
    );

    gate.add_permits(1);
    assert_eq!(cache.flush().await.unwrap(), 2);
    let written: BTreeMap<&str, u32> = sink.written_items().into_iter().collect();
    assert_eq!(written, BTreeMap::from([("a", 2), ("b", 1)]));
    assert!(
        !sink.written_items().contains(&("a", 1)),
        "the older value of a was never written after the newer one"
    );
    assert_eq!(cache.dirty_len(), 0);
    assert!(cache.close().await.is_clean());
}

#[tokio::test(start_paused = true)]
async fn dirty_keys_are_flushed_every_interval_with_the_latest_value() {
    let sink = Arc::new(TestSink::<Entry>::new());
    let mut done = sink.subscribe();
    let cache = DirtyCache::builder("periodic", sink.clone())
        .flush_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    cache.set("k", 1).unwrap();
    cache.set("k", 2).unwrap();
    cache.set("j", 1).unwrap();
    let batch = done.recv().await.unwrap();
    let mut items = batch.into_items();
    items.sort();
    assert_eq!(items, [("j", 1), ("k", 2)]);
    cache.set("k", 3).unwrap();
    assert_eq!(done.recv().await.unwrap().items(), [("k", 3)]);
    assert_eq!(cache.stats().queued, 4);
    assert!(cache.close().await.is_clean());
    assert!(matches!(cache.set("k", 4), Err(BufferError::Closed { .. })));
}

#[tokio::test(start_paused = true)]
async fn close_reports_keys_it_could_not_flush() {
    let sink = Arc::new(TestSink::<Entry>::new());
    sink.fail_always(true, false);
    let cache = DirtyCache::builder("stuck", sink.clone())
        .retry(quick_retry())
        .start()
        .unwrap();
    cache.set("a", 1).unwrap();
    let report = cache.close_within(Duration::from_millis(100)).await;
    assert_eq!(report.unflushed, [("a", 1)]);
    assert!(matches!(
        report.error,
        Some(BufferError::Unflushed {
            items: 1,
            last_error: Some(_),
            ..
        })
    ));
    assert!(sink.attempts().len() > 1, "close retried");
}
