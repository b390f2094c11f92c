//! The sled backend's figures: store append and scan beside the raw sled baseline, page and head cost.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use synckit_store_sled::{DEFAULT_CACHE_CAPACITY, SledStore, sled};
use synckit_types::{AggregateId, Event, EventStore, Filter, ReadRequest, Seq, TenantId};

use super::Workload;
use crate::stats::{Figure, median, rate};

/// Events per page of the full scans.
const SCAN_PAGE: usize = 5_000;
/// Events per page of the page-read latency measurement.
const LATENCY_PAGE: usize = 100;
/// Page reads timed per log size.
const PAGE_SAMPLES: usize = 200;
/// `head` calls per timed group (one call is too short to time alone).
const HEAD_GROUP: usize = 1_000;
/// Timed groups of `head` calls per log size.
const HEAD_SAMPLES: usize = 21;
/// Events in the small log the scale figures are compared with.
const SMALL_LOG: usize = 1_000;
/// How much slower a page read or `head` may be at scale than on the small log. The large log
/// does not fit in sled's cache and the small one does, which costs up to ~4x here; a read that
/// scanned instead of seeking would cost ~1000x (the ratio of the log sizes).
const SCALE_FACTOR: f64 = 10.0;

/// Measure the sled store against raw sled.
pub async fn bench(workload: &Workload) -> Result<Vec<Figure>> {
    let tenant = TenantId::default_tenant();
    let batches: Vec<Vec<Event>> = (0..workload.batches()).map(|i| workload.batch(i)).collect();
    let total: usize = batches.iter().map(Vec::len).sum();

    let (mut append, mut raw_append, mut scan, mut raw_scan) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..workload.runs {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let start = Instant::now();
        for batch in &batches {
            store.append(&tenant, batch).await?;
        }
        append.push(rate(total, start.elapsed()));
        ensure!(
            store.head(&tenant).await? == Seq(total as u64),
            "every event accepted"
        );

        let start = Instant::now();
        let mut after = Seq::ZERO;
        let mut read = 0;
        loop {
            let page = store
                .read(&tenant, &ReadRequest::after(after, SCAN_PAGE))
                .await?;
            read += page.events.len();
            after = page.next;
            if !page.has_more {
                break;
            }
        }
        scan.push(rate(read, start.elapsed()));
        ensure!(read == total, "the scan read every event");
        EventStore::close(&store).await?;
        drop(store);

        let raw_dir = tempfile::tempdir()?;
        let (append_rate, scan_rate) = raw_sled(raw_dir.path(), &batches)?;
        raw_append.push(append_rate);
        raw_scan.push(scan_rate);
    }

    let append = median(&append);
    let raw_append = median(&raw_append);
    let ratio_ok = append >= 0.5 * raw_append;
    let absolute_ok = append >= 40_000.0;
    let mut figures = vec![
        Figure {
            name: "sled: append (events/s)".into(),
            value: append,
            unit: "events/s",
            baseline: Some(raw_append),
            target: Some(">= 0.5x raw and >= 40000/s".into()),
            ok: Some(ratio_ok && absolute_ok),
        },
        Figure {
            name: "sled: full scan, pages of 5000".into(),
            value: median(&scan),
            unit: "events/s",
            baseline: Some(median(&raw_scan)),
            target: None,
            ok: None,
        },
    ];

    // Page reads and `head` on a large log, against the same on a small one.
    let small = Scale::build(workload, SMALL_LOG).await?;
    let large = Scale::build(workload, workload.scale_events).await?;
    let small_page = small.page_latency(None).await?;
    let large_page = large.page_latency(None).await?;
    let small_agg = small.page_latency(Some("agg-3")).await?;
    let large_agg = large.page_latency(Some("agg-3")).await?;
    let small_head = small.head_latency().await?;
    let large_head = large.head_latency().await?;
    let scale = workload.scale_events;
    for (name, value, baseline, unit) in [
        (
            format!("sled: read page of {LATENCY_PAGE} at {scale}"),
            large_page,
            small_page,
            "µs",
        ),
        (
            format!("sled: aggregate page of {LATENCY_PAGE} at {scale}"),
            large_agg,
            small_agg,
            "µs",
        ),
        (
            format!("sled: head at {scale}"),
            large_head * 1_000.0,
            small_head * 1_000.0,
            "ns",
        ),
    ] {
        figures.push(Figure {
            name,
            value,
            unit,
            baseline: Some(baseline),
            target: Some(format!("<= {SCALE_FACTOR}x at {SMALL_LOG}")),
            ok: Some(value <= SCALE_FACTOR * baseline),
        });
    }
    small.close().await?;
    large.close().await?;
    Ok(figures)
}

/// Raw sled with the same events as serde_json bytes: one batch insert and a flush per batch,
/// then a full scan that decodes every event. Returns (append, scan) in events/s.
pub(crate) fn raw_sled(path: &std::path::Path, batches: &[Vec<Event>]) -> Result<(f64, f64)> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(DEFAULT_CACHE_CAPACITY)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("raw")?;
    let (mut seq, mut written) = (0u64, 0usize);
    let start = Instant::now();
    for events in batches {
        let mut batch = sled::Batch::default();
        for event in events {
            seq += 1;
            batch.insert(&seq.to_be_bytes()[..], serde_json::to_vec(event)?);
        }
        written += events.len();
        tree.apply_batch(batch)?;
        tree.flush()?;
    }
    let append = rate(written, start.elapsed());

    let start = Instant::now();
    let mut read = 0;
    for item in tree.iter() {
        let (_, value) = item?;
        let _event: Event = serde_json::from_slice(&value)?;
        read += 1;
    }
    let scan = rate(read, start.elapsed());
    ensure!(read == written, "the raw scan read every event");
    Ok((append, scan))
}

/// A store filled with `events` events, for latency figures.
struct Scale {
    _dir: tempfile::TempDir,
    store: SledStore,
    tenant: TenantId,
    events: usize,
}

impl Scale {
    async fn build(workload: &Workload, events: usize) -> Result<Scale> {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let tenant = TenantId::default_tenant();
        let mut stored = 0;
        let mut index = 0;
        while stored < events {
            let mut batch = workload.batch(index);
            batch.truncate(events - stored);
            stored += batch.len();
            store.append(&tenant, &batch).await?;
            index += 1;
        }
        ensure!(
            store.head(&tenant).await? == Seq(events as u64),
            "log filled"
        );
        Ok(Scale {
            _dir: dir,
            store,
            tenant,
            events,
        })
    }

    /// Median µs of reading one page at positions spread over the log.
    async fn page_latency(&self, aggregate: Option<&str>) -> Result<f64> {
        let filter = match aggregate {
            Some(a) => Filter::aggregate(AggregateId::new(a)?),
            None => Filter::all(),
        };
        let span = self.events.saturating_sub(LATENCY_PAGE * 10).max(1);
        let mut samples = Vec::with_capacity(PAGE_SAMPLES);
        for i in 0..PAGE_SAMPLES {
            let after = Seq((i * span / PAGE_SAMPLES) as u64);
            let request = ReadRequest::after(after, LATENCY_PAGE).with_filter(filter.clone());
            let start = Instant::now();
            let page = self.store.read(&self.tenant, &request).await?;
            samples.push(micros(start.elapsed()));
            ensure!(page.events.len() == LATENCY_PAGE, "a full page");
        }
        Ok(median(&samples))
    }

    /// Median µs of one `head` call.
    async fn head_latency(&self) -> Result<f64> {
        let mut samples = Vec::with_capacity(HEAD_SAMPLES);
        for _ in 0..HEAD_SAMPLES {
            let start = Instant::now();
            for _ in 0..HEAD_GROUP {
                std::hint::black_box(self.store.head(&self.tenant).await?);
            }
            samples.push(micros(start.elapsed()) / HEAD_GROUP as f64);
        }
        Ok(median(&samples))
    }

    async fn close(self) -> Result<()> {
        EventStore::close(&self.store).await?;
        Ok(())
    }
}

fn micros(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1e6
}
