//! Metric names and recording: what buffered stores and dirty caches report through the
//! `metrics` facade, each with the label `store` (the store's name).
//!
//! | metric | kind | meaning |
//! |---|---|---|
//! | [`QUEUED`] | counter | items accepted by writes |
//! | [`FLUSHED`] | counter | items the sink accepted |
//! | [`FAILED`] | counter | failed sink writes (each attempt counts) |
//! | [`DROPPED`] | counter | items dropped by the `DropNewest` policy |
//! | [`REJECTED`] | counter | items refused by the `Reject` policy |
//! | [`DEAD_LETTERED`] | counter | items refused for good and handed to the dead letter |
//! | [`BUFFERED`] | gauge | items held (buffered, being written, kept after failure) |
//! | [`FLUSH_DURATION`] | histogram (seconds) | duration of each sink write |
//! | [`BATCH_SIZE`] | histogram (items) | items per sink write |
//!
//! Handles are taken when a store is built, so install the recorder (for example a Prometheus
//! exporter) before building stores; without one every call is a no-op.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

/// Items accepted by writes.
pub const QUEUED: &str = "synckit_buffer_queued_total";
/// Items written to the sink.
pub const FLUSHED: &str = "synckit_buffer_flushed_total";
/// Failed sink writes.
pub const FAILED: &str = "synckit_buffer_failed_total";
/// Items dropped at capacity by the `DropNewest` policy.
pub const DROPPED: &str = "synckit_buffer_dropped_total";
/// Items refused at capacity by the `Reject` policy.
pub const REJECTED: &str = "synckit_buffer_rejected_total";
/// Items refused for good by the sink and handed to the dead letter.
pub const DEAD_LETTERED: &str = "synckit_buffer_dead_lettered_total";
/// Items held by the store.
pub const BUFFERED: &str = "synckit_buffer_buffered_items";
/// Duration of each sink write, in seconds.
pub const FLUSH_DURATION: &str = "synckit_buffer_flush_duration_seconds";
/// Items per sink write.
pub const BATCH_SIZE: &str = "synckit_buffer_batch_size";

/// Register descriptions and units of every metric above with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(QUEUED, "Items accepted by buffered-store writes.");
    metrics::describe_counter!(FLUSHED, "Items written to the sink.");
    metrics::describe_counter!(FAILED, "Failed sink writes, each attempt counted.");
    metrics::describe_counter!(DROPPED, "Items dropped at capacity (DropNewest policy).");
    metrics::describe_counter!(REJECTED, "Items refused at capacity (Reject policy).");
    metrics::describe_counter!(DEAD_LETTERED, "Items refused for good by the sink.");
    metrics::describe_gauge!(BUFFERED, "Items held by the buffered store.");
    metrics::describe_histogram!(
        FLUSH_DURATION,
        metrics::Unit::Seconds,
        "Duration of each sink write."
    );
    metrics::describe_histogram!(BATCH_SIZE, metrics::Unit::Count, "Items per sink write.");
}

/// The metric handles of one store.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub queued: Counter,
    pub flushed: Counter,
    pub failed: Counter,
    pub dropped: Counter,
    pub rejected: Counter,
    pub dead_lettered: Counter,
    pub buffered: Gauge,
    pub flush_duration: Histogram,
    pub batch_size: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(store: &str) -> Self {
        let label = [("store", store.to_owned())];
        Metrics {
            queued: metrics::counter!(QUEUED, &label),
            flushed: metrics::counter!(FLUSHED, &label),
            failed: metrics::counter!(FAILED, &label),
            dropped: metrics::counter!(DROPPED, &label),
            rejected: metrics::counter!(REJECTED, &label),
            dead_lettered: metrics::counter!(DEAD_LETTERED, &label),
            buffered: metrics::gauge!(BUFFERED, &label),
            flush_duration: metrics::histogram!(FLUSH_DURATION, &label),
            batch_size: metrics::histogram!(BATCH_SIZE, &label),
        }
    }

    pub fn write(&self, items: usize, elapsed: Duration) {
        self.flush_duration.record(elapsed.as_secs_f64());
        self.batch_size.record(items as f64);
    }
}
