//! `net`: the hub on the network, as a real `synckit serve` process on loopback. Push and pull
//! of a large log between sled stores beside raw sled, memory-to-memory push beside the
//! in-process hub, subscriber latency and memory, and the hub's memory while a node pulls.

pub(crate) mod hub;
mod subscribers;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::json;
use synckit_node::{Config, Node};
use synckit_store_memory::MemoryStore;
use synckit_store_sled::SledStore;
use synckit_transport_http::HttpTransport;
use synckit_transport_memory::MemoryHub;
use synckit_types::{DynNodeStore, DynTransport, Event, EventBuilder, Hlc, TenantId};

use crate::stats::{Figure, median, print_table, rate};
use hub::HubProcess;

/// The shape of the run.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Events pushed and pulled between the sled stores.
    pub events: usize,
    /// Events pushed memory to memory per run.
    pub memory_events: usize,
    /// Runs of the memory push and of the raw baseline (median reported).
    pub runs: usize,
    /// Events per push batch and per pulled page.
    pub batch: usize,
    /// Bytes of payload per event.
    pub payload: usize,
    /// Concurrent subscribers.
    pub subscribers: usize,
    /// Events appended per second while the subscribers listen.
    pub rate: u32,
    /// How long the subscribers listen.
    pub listen: Duration,
}

impl Workload {
    fn new(quick: bool) -> Workload {
        if quick {
            Workload {
                events: 20_000,
                memory_events: 20_000,
                runs: 1,
                batch: 1_000,
                payload: 200,
                subscribers: 50,
                rate: 100,
                listen: Duration::from_secs(2),
            }
        } else {
            Workload {
                events: 1_000_000,
                memory_events: 200_000,
                runs: 3,
                batch: 1_000,
                payload: 200,
                subscribers: 1_000,
                rate: 100,
                listen: Duration::from_secs(10),
            }
        }
    }

    /// Batch `index` of events as an application appends them (the node stamps the rest).
    fn builders(&self, index: usize) -> Vec<EventBuilder> {
        let filler = "x".repeat(self.payload);
        (0..self.batch)
            .map(|i| {
                let n = index * self.batch + i;
                Event::builder("Measured", format!("agg-{}", n % 100)).data(json!(filler))
            })
            .collect()
    }

    /// The same events, fully stamped, for the raw baseline.
    fn raw_batches(&self) -> Result<Vec<Vec<Event>>> {
        let filler = "x".repeat(self.payload);
        (0..self.events.div_ceil(self.batch))
            .map(|index| {
                (0..self.batch)
                    .map(|i| {
                        let n = index * self.batch + i;
                        Ok(Event::builder("Measured", format!("agg-{}", n % 100))
                            .origin("bench")
                            .hlc(Hlc::new(1_700_000_000_000 + n as u64, 0))
                            .data(json!(filler))
                            .build()?)
                    })
                    .collect()
            })
            .collect()
    }
}

/// The parts, by the names `cargo xtask bench net [part...]` selects them with.
const PARTS: &[&str] = &["sled", "memory", "subscribers"];

/// Run the parts of the network benchmark in `only` (all when empty) and print the figures.
pub async fn run(quick: bool, only: &[&str]) -> Result<()> {
    if let Some(unknown) = only.iter().find(|n| !PARTS.contains(n)) {
        anyhow::bail!("no part named {unknown:?}; available: {}", PARTS.join(", "));
    }
    let wanted = |name: &str| only.is_empty() || only.contains(&name);
    let w = Workload::new(quick);
    println!(
        "net: {} events pushed and pulled sled to sled over HTTP (batches and pages of {}, \
         {}-byte payloads); {} memory-to-memory x {} runs; {} subscribers at {} events/s for {:?}",
        w.events, w.batch, w.payload, w.memory_events, w.runs, w.subscribers, w.rate, w.listen
    );
    let mut figures = Vec::new();
    if wanted("sled") {
        figures.extend(sled_to_sled(&w).await?);
    }
    if wanted("memory") {
        figures.extend(memory_to_memory(&w).await?);
    }
    if wanted("subscribers") {
        figures.extend(subscribers::bench(&w).await?);
    }
    if !print_table("net", &figures) {
        anyhow::bail!("a target was missed");
    }
    Ok(())
}

/// A node over `store` talking to the hub at `url`, with batches and pages of `w.batch`.
async fn node(store: DynNodeStore, transport: DynTransport, w: &Workload) -> Result<Node> {
    let config = Config {
        batch_size: w.batch,
        page_size: w.batch,
        ..Config::default()
    };
    Ok(Node::builder()
        .store(store)
        .transport(transport)
        .config(config)
        .open()
        .await?)
}

/// Fill `node`'s outbox with `count` events (not timed).
async fn fill(node: &Node, w: &Workload, count: usize) -> Result<()> {
    for index in 0..count.div_ceil(w.batch) {
        node.append_batch(w.builders(index)).await?;
    }
    Ok(())
}

/// Push from a sled node to a sled hub, then pull into a fresh sled node while sampling the
/// hub's memory; both beside raw sled in the same run.
async fn sled_to_sled(w: &Workload) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let batches = w.raw_batches()?;
    let mut raw = Vec::new();
    for run in 0..w.runs {
        let path = dir.path().join(format!("raw-{run}"));
        raw.push(crate::stores::raw_sled(&path, &batches)?.0);
        std::fs::remove_dir_all(&path)?;
    }
    drop(batches);
    let raw = median(&raw);

    let hub = HubProcess::start("sled", &dir.path().join("hub"))?;
    let transport: DynTransport = Arc::new(HttpTransport::new(&hub.url, None)?);
    let writer = node(
        Arc::new(SledStore::open(dir.path().join("writer"))?),
        transport.clone(),
        w,
    )
    .await?;
    println!("net: filling the writer's outbox with {} events", w.events);
    fill(&writer, w, w.events).await?;
    let start = Instant::now();
    let pushed = writer.push().await?;
    let push_rate = rate(w.events, start.elapsed());
    ensure!(
        pushed.pushed == w.events as u64 && pushed.errors.is_empty(),
        "every event pushed: {pushed:?}"
    );
    writer.close().await?;

    let reader = node(
        Arc::new(SledStore::open(dir.path().join("reader"))?),
        transport,
        w,
    )
    .await?;
    let before = hub.rss()?;
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let progress = reader.watch_progress();
        let pid_rss = hub.rss_reader();
        tokio::spawn(async move {
            // (fraction pulled, rss) every 50 ms.
            let mut samples = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let pulled = progress.borrow().pulled;
                if let Ok(rss) = pid_rss() {
                    samples.push((pulled, rss));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        })
    };
    let start = Instant::now();
    let pulled = reader.pull().await?;
    let pull_rate = rate(w.events, start.elapsed());
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await?;
    ensure!(
        pulled.pulled == w.events as u64,
        "every event pulled: {pulled:?}"
    );
    reader.close().await?;
    hub.stop()?;

    // Flat: once a tenth of the log is through (caches warm), the hub grows by less than
    // 1/16 of what it served (events of about 0.5 KiB; a hub that kept what it sent would
    // grow by all of it), plus 8 MiB of allocator slack for small runs.
    let warm_after = (w.events / 10) as u64;
    let warm = samples
        .iter()
        .find(|(pulled, _)| *pulled >= warm_after)
        .map_or(before, |s| s.1);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(before);
    let served = (w.events as u64 - warm_after) * 512;
    let growth = peak.saturating_sub(warm);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "net: hub RSS {:.1} MiB before the pull, {:.1} MiB at 10%, peak {:.1} MiB ({} samples)",
        mib(before),
        mib(warm),
        mib(peak),
        samples.len()
    );
    let curve: Vec<String> = (1..=10)
        .filter_map(|tenth| {
            let at = w.events as u64 * tenth / 10;
            samples
                .iter()
                .find(|(pulled, _)| *pulled >= at)
                .map(|s| format!("{}0%: {:.0}", tenth, mib(s.1)))
        })
        .collect();
    println!("net: hub RSS (MiB) by share pulled: {}", curve.join(", "));
    Ok(vec![
        Figure {
            name: format!("sled node -> sled hub: push {} events", w.events),
            value: push_rate,
            unit: "events/s",
            baseline: Some(raw),
            target: Some(">= 0.5x raw sled".into()),
            ok: Some(push_rate >= 0.5 * raw),
        },
        Figure {
            name: format!("sled hub -> fresh sled node: pull {}", w.events),
            value: pull_rate,
            unit: "events/s",
            baseline: Some(raw),
            target: Some(">= 0.5x raw sled".into()),
            ok: Some(pull_rate >= 0.5 * raw),
        },
        Figure {
            name: "hub RSS growth during the pull after 10%".into(),
            value: mib(growth),
            unit: "MiB",
            baseline: Some(mib(served)),
            target: Some("< 1/16 of bytes served + 8 MiB".into()),
            ok: Some(growth < served / 16 + (8 << 20)),
        },
    ])
}

/// Push from a memory node to a memory hub over HTTP, beside the same push to the in-process
/// hub (no network, no encoding).
async fn memory_to_memory(w: &Workload) -> Result<Vec<Figure>> {
    let dir = tempfile::tempdir()?;
    let (mut http, mut local) = (Vec::new(), Vec::new());
    for _ in 0..w.runs {
        let hub = HubProcess::start("memory", &dir.path().join("unused"))?;
        let writer = node(
            Arc::new(MemoryStore::new()),
            Arc::new(HttpTransport::new(&hub.url, None)?),
            w,
        )
        .await?;
        fill(&writer, w, w.memory_events).await?;
        let start = Instant::now();
        let report = writer.push().await?;
        http.push(rate(w.memory_events, start.elapsed()));
        ensure!(
            report.pushed == w.memory_events as u64,
            "every event pushed"
        );
        hub.stop()?;

        let memory_hub = MemoryHub::new(Arc::new(MemoryStore::new()));
        let writer = node(
            Arc::new(MemoryStore::new()),
            Arc::new(memory_hub.transport(TenantId::default_tenant())),
            w,
        )
        .await?;
        fill(&writer, w, w.memory_events).await?;
        let start = Instant::now();
        let report = writer.push().await?;
        local.push(rate(w.memory_events, start.elapsed()));
        ensure!(
            report.pushed == w.memory_events as u64,
            "every event pushed"
        );
    }
    let value = median(&http);
    Ok(vec![Figure {
        name: "memory node -> memory hub over HTTP: push".into(),
        value,
        unit: "events/s",
        baseline: Some(median(&local)),
        target: Some(">= 250000/s".into()),
        ok: Some(value >= 250_000.0),
    }])
}
