//! The sqlite backend's figures: store append and scan beside the raw sqlite baseline, page and head cost.
//!
//! Raw SQLite is rusqlite used directly under the store's settings (WAL, `synchronous = FULL`):
//! one plain table `(id, body)`, each 1,000-event batch inserted in one transaction through a
//! cached prepared statement, the bodies being the events' serde_json bytes. Encoding (for
//! appends) and decoding (for scans) are timed on both sides, as both must do them; the
//! difference is what the store adds: idempotency and version lookups, its indexes, the head,
//! aggregate and kind rows, and leaving the async worker thread. The raw inserts alone (bodies
//! encoded before the clock starts) are printed too, for reference.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use synckit_store_sqlite::{SqliteStore, rusqlite};
use synckit_types::{
    AggregateId, AppendOutcome, Event, EventStore, Filter, ReadRequest, Seq, TenantId,
};

use super::Workload;
use crate::stats::{Figure, median, rate};

/// Events per page in the latency measurements (a typical pull page).
const PAGE: usize = 100;
/// Page size of the full scans (the largest page a store hands out).
const SCAN_PAGE: usize = 5_000;
/// Samples per latency figure.
const SAMPLES: usize = 300;
/// Events in the small log that the latencies at scale are compared with.
const SMALL_LOG: usize = 1_000;
/// How much slower than on the small log a page read or `head` may be at scale. A seek stays
/// a seek, but a large file no longer fits the page cache, so the rows of one aggregate (spread
/// over the log) cost a page read each; a read that scanned instead of seeking would be
/// hundreds of times slower.
const MAX_SCALE_RATIO: f64 = 10.0;

/// Measure the sqlite store against raw sqlite.
pub async fn bench(workload: &Workload) -> Result<Vec<Figure>> {
    let tenant = TenantId::new("bench")?;
    let (mut append, mut raw_append, mut raw_insert, mut scan, mut raw_scan) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..workload.runs {
        let dir = tempfile::tempdir()?;
        let (a, s) = store_run(workload, &tenant, &dir.path().join("store.db")).await?;
        append.push(a);
        scan.push(s);
        let raw_path = dir.path().join("raw.db");
        let w = *workload;
        let (a, i, s) = tokio::task::spawn_blocking(move || raw_run(&w, &raw_path)).await??;
        raw_append.push(a);
        raw_insert.push(i);
        raw_scan.push(s);
    }
    let (append, raw_append) = (median(&append), median(&raw_append));
    let mut figures = vec![
        Figure {
            name: "sqlite: append".into(),
            value: append,
            unit: "events/s",
            baseline: Some(raw_append),
            target: Some(">= 0.5x raw".into()),
            ok: Some(append >= 0.5 * raw_append),
        },
        Figure {
            // For reference: raw inserts with the JSON encoded before the clock starts.
            name: "sqlite: raw insert, encoding not timed".into(),
            value: median(&raw_insert),
            unit: "events/s",
            baseline: None,
            target: None,
            ok: None,
        },
        Figure {
            name: "sqlite: full scan (pages of 5,000)".into(),
            value: median(&scan),
            unit: "events/s",
            baseline: Some(median(&raw_scan)),
            target: None,
            ok: None,
        },
    ];

    let small = latencies(workload, &tenant, SMALL_LOG).await?;
    let large = latencies(workload, &tenant, workload.scale_events).await?;
    let scale = workload.scale_events;
    for (name, value, baseline) in [
        (
            format!("sqlite: page read ({PAGE}) at {scale} events"),
            large.page,
            small.page,
        ),
        (
            format!("sqlite: aggregate page ({PAGE}) at {scale}"),
            large.aggregate_page,
            small.aggregate_page,
        ),
        (
            format!("sqlite: head at {scale} events"),
            large.head,
            small.head,
        ),
    ] {
        figures.push(Figure {
            name,
            value,
            unit: "µs",
            baseline: Some(baseline),
            target: Some(format!("<= {MAX_SCALE_RATIO}x {SMALL_LOG}-event log")),
            ok: Some(value <= MAX_SCALE_RATIO * baseline),
        });
    }
    Ok(figures)
}

/// Append the workload to a fresh store, then scan it; events/s of both.
async fn store_run(workload: &Workload, tenant: &TenantId, path: &Path) -> Result<(f64, f64)> {
    let store = SqliteStore::open(path)?;
    let mut elapsed = Duration::ZERO;
    let mut appended = 0;
    for i in 0..workload.batches() {
        let batch = workload.batch(i);
        let started = Instant::now();
        let report = store.append(tenant, &batch).await?;
        elapsed += started.elapsed();
        ensure!(
            report
                .results
                .iter()
                .all(|r| matches!(r.outcome, AppendOutcome::Accepted { .. })),
            "every benchmark event must be accepted"
        );
        appended += batch.len();
    }
    let append = rate(appended, elapsed);

    let started = Instant::now();
    let mut after = Seq::ZERO;
    let mut read = 0;
    loop {
        let page = store
            .read(tenant, &ReadRequest::after(after, SCAN_PAGE))
            .await?;
        read += page.events.len();
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    let scan = rate(read, started.elapsed());
    ensure!(read == appended, "the scan must return every event");
    store.close().await?;
    Ok((append, scan))
}

/// The raw baseline: append the same events' JSON to a plain table, then scan and decode it.
/// Returns events/s of the append (encoding included), of the inserts alone, and of the scan.
fn raw_run(workload: &Workload, path: &Path) -> Result<(f64, f64, f64)> {
    let mut conn = rusqlite::Connection::open(path)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    ensure!(
        mode == "wal",
        "raw sqlite must run in WAL mode like the store"
    );
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE raw_events (id TEXT NOT NULL, body BLOB NOT NULL)")?;
    let (mut encoding, mut inserting) = (Duration::ZERO, Duration::ZERO);
    let mut appended = 0;
    for i in 0..workload.batches() {
        let batch = workload.batch(i);
        let started = Instant::now();
        let bodies = batch
            .iter()
            .map(serde_json::to_vec)
            .collect::<serde_json::Result<Vec<_>>>()?;
        encoding += started.elapsed();
        let started = Instant::now();
        let tx = conn.transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO raw_events (id, body) VALUES (?1, ?2)")?;
            for (event, body) in batch.iter().zip(&bodies) {
                insert.execute(rusqlite::params![event.id.as_str(), body])?;
            }
        }
        tx.commit()?;
        inserting += started.elapsed();
        appended += batch.len();
    }
    let append = rate(appended, encoding + inserting);
    let insert_only = rate(appended, inserting);

    let started = Instant::now();
    let mut stmt = conn.prepare("SELECT body FROM raw_events ORDER BY rowid")?;
    let mut rows = stmt.query([])?;
    let mut read = 0;
    while let Some(row) = rows.next()? {
        let event: Event = serde_json::from_slice(row.get_ref(0)?.as_bytes()?)?;
        std::hint::black_box(event);
        read += 1;
    }
    let scan = rate(read, started.elapsed());
    ensure!(read == appended, "the raw scan must return every row");
    Ok((append, insert_only, scan))
}

/// Median latencies, in µs, on a log of `events` events.
struct Latencies {
    page: f64,
    aggregate_page: f64,
    head: f64,
}

/// Fill a fresh store with `events` events, then time page reads at random cursors, page reads
/// of one aggregate, and `head`.
async fn latencies(workload: &Workload, tenant: &TenantId, events: usize) -> Result<Latencies> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(dir.path().join("scale.db"))?;
    let batches = events.div_ceil(workload.batch);
    for i in 0..batches {
        store.append(tenant, &workload.batch(i)).await?;
    }
    let head = store.head(tenant).await?.get();
    ensure!(head == (batches * workload.batch) as u64, "fill incomplete");
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let span = head.saturating_sub(PAGE as u64).max(1);
    let aggregate = AggregateId::new("agg-3")?;

    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let (mut page, mut aggregate_page, mut heads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let after = Seq(rng.next() % span);
        let started = Instant::now();
        let read = store.read(tenant, &ReadRequest::after(after, PAGE)).await?;
        page.push(micros(started.elapsed()));
        ensure!(read.events.len() == PAGE, "a full page at {after}");

        let request =
            ReadRequest::after(after, PAGE).with_filter(Filter::aggregate(aggregate.clone()));
        let started = Instant::now();
        let read = store.read(tenant, &request).await?;
        aggregate_page.push(micros(started.elapsed()));
        std::hint::black_box(read);

        let started = Instant::now();
        let h = store.head(tenant).await.context("head")?;
        heads.push(micros(started.elapsed()));
        ensure!(h.get() == head, "head moved");
    }
    store.close().await?;
    Ok(Latencies {
        page: median(&page),
        aggregate_page: median(&aggregate_page),
        head: median(&heads),
    })
}

/// A fixed-seed xorshift generator: the same cursors on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
