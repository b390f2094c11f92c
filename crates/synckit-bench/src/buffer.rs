//! `buffer`: throughput of one buffered store into a no-op sink with 4 producers, into a sled
//! event store beside raw sled, and writer latency while the sink is slow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use synckit_buffer::{Batch, BufferedStore, DynSink, EventStoreSink, FnSink, SinkError};
use synckit_store_sled::SledStore;
use synckit_types::{Event, EventStore, TenantId};

use crate::stats::{Figure, median, print_table, rate};
use crate::stores::{Workload, raw_sled};

/// Concurrent writers in the throughput figures.
const PRODUCERS: usize = 4;
/// Items per `write_many` call of the producers.
const CHUNK: usize = 100;
/// How long the slow sink of the latency figure takes per batch.
const SLOW_SINK: Duration = Duration::from_millis(5);

/// The parts, by the names `cargo xtask bench buffer [part...]` selects them with.
const PARTS: &[&str] = &["noop", "sled", "latency"];

/// Run the parts in `only` (all when empty) and print the figures.
pub async fn run(quick: bool, only: &[&str]) -> Result<()> {
    if let Some(unknown) = only.iter().find(|n| !PARTS.contains(n)) {
        bail!("no part named {unknown:?}; available: {}", PARTS.join(", "));
    }
    let wanted = |name: &str| only.is_empty() || only.contains(&name);
    let runs = if quick { 1 } else { 3 };
    println!("buffer: {runs} run(s) per figure, median reported; {PRODUCERS} producers");
    let mut figures = Vec::new();
    if wanted("noop") {
        figures.extend(noop(quick, runs).await?);
    }
    if wanted("sled") {
        figures.extend(sled(quick, runs).await?);
    }
    if wanted("latency") {
        figures.extend(latency(quick).await?);
    }
    let ok = print_table("buffer", &figures);
    println!();
    for f in figures.iter().filter(|f| f.target.is_some()) {
        let word = if f.ok == Some(true) { "PASS" } else { "MISS" };
        let target = f.target.as_deref().unwrap_or_default();
        println!(
            "{word}  {}: {:.1} {} (target {target})",
            f.name, f.value, f.unit
        );
    }
    if !ok {
        bail!("a target was missed");
    }
    Ok(())
}

/// A sink that accepts every batch at once.
fn noop_sink() -> DynSink<u64> {
    Arc::new(FnSink::new(|_: Batch<u64>| async {
        Ok::<(), SinkError>(())
    }))
}

/// Items/s of `PRODUCERS` writers through one store into a no-op sink, from the first write to
/// the end of `close`. `chunk` 1 uses `write`, otherwise `write_many` of `chunk` items.
async fn noop_run(per_producer: usize, chunk: usize) -> Result<f64> {
    let store = BufferedStore::builder("bench-noop", noop_sink())
        .max_batch(4_096)
        .capacity(1 << 18, usize::MAX)
        .flush_interval(Duration::from_millis(10))
        .start()?;
    let start = Instant::now();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let store = store.clone();
        producers.push(tokio::spawn(async move {
            let base = (p * per_producer) as u64;
            let mut next = 0;
            while next < per_producer {
                let n = chunk.min(per_producer - next);
                let from = base + next as u64;
                if n == 1 {
                    store.write(from).await?;
                } else {
                    store.write_many((from..from + n as u64).collect()).await?;
                }
                next += n;
            }
            anyhow::Ok(())
        }));
    }
    for p in producers {
        p.await??;
    }
    let report = store.close().await;
    let elapsed = start.elapsed();
    let total = PRODUCERS * per_producer;
    ensure!(report.is_clean(), "no-op sink: {:?}", report.error);
    ensure!(report.stats.flushed == total as u64, "every item flushed");
    Ok(rate(total, elapsed))
}

async fn noop(quick: bool, runs: usize) -> Result<Vec<Figure>> {
    let per_producer = if quick { 250_000 } else { 2_500_000 };
    let (mut many, mut single) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        many.push(noop_run(per_producer, CHUNK).await?);
        single.push(noop_run(per_producer / 4, 1).await?);
    }
    let many = median(&many);
    Ok(vec![
        Figure {
            name: format!("noop sink, write_many of {CHUNK}"),
            value: many,
            unit: "items/s",
            baseline: None,
            target: Some(">= 2000000/s".into()),
            ok: Some(many >= 2_000_000.0),
        },
        Figure {
            name: "noop sink, write of 1".into(),
            value: median(&single),
            unit: "items/s",
            baseline: None,
            target: None,
            ok: None,
        },
    ])
}

/// Events/s of `PRODUCERS` writers through a buffered store into a sled event store, batches
/// of the workload's size, beside raw sled and the store appended to directly.
async fn sled(quick: bool, runs: usize) -> Result<Vec<Figure>> {
    let workload = Workload::new(quick);
    let batches: Vec<Vec<Event>> = (0..workload.batches()).map(|i| workload.batch(i)).collect();
    let total: usize = batches.iter().map(Vec::len).sum();
    let tenant = TenantId::default_tenant();
    let (mut buffered, mut direct, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let dir = tempfile::tempdir()?;
        let store = Arc::new(SledStore::open(dir.path())?);
        let sink = Arc::new(EventStoreSink::new(store.clone(), tenant.clone()));
        let buffer = BufferedStore::builder("bench-sled", sink)
            .max_batch(workload.batch)
            .capacity(50_000, usize::MAX)
            .flush_interval(Duration::from_millis(10))
            .start()?;
        // Each producer writes a contiguous quarter, so batches hold runs of ascending ids as
        // the direct appends do (the store indexes ids; scattered ids cost it more).
        let events: Vec<Event> = batches.iter().flatten().cloned().collect();
        let shares: Vec<Vec<Event>> = events
            .chunks(total.div_ceil(PRODUCERS))
            .map(<[Event]>::to_vec)
            .collect();
        let start = Instant::now();
        let mut producers = Vec::new();
        for share in shares {
            let buffer = buffer.clone();
            producers.push(tokio::spawn(async move {
                let mut share = share.into_iter().peekable();
                while share.peek().is_some() {
                    let chunk: Vec<Event> = share.by_ref().take(CHUNK).collect();
                    buffer.write_many(chunk).await?;
                }
                anyhow::Ok(())
            }));
        }
        for p in producers {
            p.await??;
        }
        let report = buffer.close().await;
        buffered.push(rate(total, start.elapsed()));
        ensure!(report.is_clean(), "sled sink: {:?}", report.error);
        ensure!(
            store.head(&tenant).await?.get() == total as u64,
            "every event stored"
        );
        EventStore::close(&*store).await?;
        drop(store);

        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path())?;
        let start = Instant::now();
        for batch in &batches {
            store.append(&tenant, batch).await?;
        }
        direct.push(rate(total, start.elapsed()));
        EventStore::close(&store).await?;
        drop(store);

        let dir = tempfile::tempdir()?;
        raw.push(raw_sled(dir.path(), &batches)?.0);
    }
    let (buffered, direct, raw) = (median(&buffered), median(&direct), median(&raw));
    Ok(vec![
        Figure {
            name: format!("sled store via buffer, batches of {}", workload.batch),
            value: buffered,
            unit: "events/s",
            baseline: Some(raw),
            target: Some(">= 0.8x raw sled".into()),
            ok: Some(buffered >= 0.8 * raw),
        },
        Figure {
            name: "sled store, direct append (same batches)".into(),
            value: direct,
            unit: "events/s",
            baseline: Some(raw),
            target: None,
            ok: None,
        },
    ])
}

/// Writer latency while the sink takes `SLOW_SINK` per batch and the store stays below
/// capacity: one writer, bursts of 100 writes a millisecond apart.
async fn latency(quick: bool) -> Result<Vec<Figure>> {
    let writes: usize = if quick { 20_000 } else { 200_000 };
    let capacity = 1 << 20;
    let sink: DynSink<u64> = Arc::new(FnSink::new(|_: Batch<u64>| async {
        tokio::time::sleep(SLOW_SINK).await;
        Ok::<(), SinkError>(())
    }));
    let store = BufferedStore::builder("bench-latency", sink)
        .max_batch(1_000)
        .capacity(capacity, usize::MAX)
        .flush_interval(Duration::from_millis(10))
        .start()?;
    let mut samples = Vec::with_capacity(writes);
    let mut most_held = 0;
    for i in 0..writes {
        let start = Instant::now();
        store.write(i as u64).await?;
        samples.push(start.elapsed().as_secs_f64() * 1e6);
        if i % 100 == 99 {
            most_held = most_held.max(store.stats().held_items);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let report = store.close().await;
    ensure!(report.is_clean(), "slow sink: {:?}", report.error);
    ensure!(
        most_held < capacity,
        "the store reached capacity: writers waited for the sink"
    );
    samples.sort_by(f64::total_cmp);
    let at = |permille: usize| samples[(samples.len() - 1) * permille / 1_000];
    let p99 = at(990);
    Ok(vec![
        Figure {
            name: "write p99, sink sleeping 5 ms per batch".into(),
            value: p99,
            unit: "µs",
            baseline: None,
            target: Some("< 50 µs".into()),
            ok: Some(p99 < 50.0),
        },
        Figure {
            name: "write p50, same run".into(),
            value: at(500),
            unit: "µs",
            baseline: None,
            target: None,
            ok: None,
        },
        Figure {
            name: "write max, same run".into(),
            value: at(1_000),
            unit: "µs",
            baseline: None,
            target: None,
            ok: None,
        },
    ])
}
