//! The postgres backend's figures: store append and scan beside the raw postgres baseline, page and head cost.
//!
//! Needs a PostgreSQL server: `SYNCKIT_TEST_POSTGRES_URL` (which `cargo xtask bench` sets to the
//! local test server when unset). Every run uses fresh schemas, dropped at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use synckit_store_postgres::tokio_postgres::{self, NoTls};
use synckit_store_postgres::{PostgresConfig, PostgresStore};
use synckit_types::{AggregateId, Event, EventStore, Filter, ReadRequest, Seq, TenantId};

use super::Workload;
use crate::stats::{Figure, median, rate};

/// The server used when `SYNCKIT_TEST_POSTGRES_URL` is unset.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Events per page of the full scans.
const SCAN_PAGE: usize = 5_000;
/// Events per page of the page-read latency measurement.
const LATENCY_PAGE: usize = 100;
/// Page reads timed per log size.
const PAGE_SAMPLES: usize = 200;
/// `head` calls timed per log size (each is one round trip, long enough to time alone).
const HEAD_SAMPLES: usize = 1_000;
/// Events in the small log the scale figures are compared with.
const SMALL_LOG: usize = 1_000;
/// How much slower a page read or `head` may be at scale than on the small log. Both are
/// index seeks, one B-tree level deeper at scale, behind a round trip that dominates; a scan
/// instead of a seek would cost ~1000x (the ratio of the log sizes).
const SCALE_FACTOR: f64 = 3.0;
/// Connections of each benchmark store (the machine has 2 cores).
const POOL: usize = 4;

/// Measure the postgres store against raw postgres.
pub async fn bench(workload: &Workload) -> Result<Vec<Figure>> {
    let url = std::env::var("SYNCKIT_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let admin = connect(&url).await?;
    let tenant = TenantId::default_tenant();
    let batches: Vec<Vec<Event>> = (0..workload.batches()).map(|i| workload.batch(i)).collect();
    let total: usize = batches.iter().map(Vec::len).sum();
    let mut schemas = Schemas::new(&admin);

    let (mut append, mut raw_append, mut scan, mut raw_scan) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..workload.runs {
        let schema = schemas.fresh();
        let store = open(&url, &schema).await?;
        let raw = connect(&url).await?;
        raw.batch_execute(&format!(
            "CREATE TABLE {schema}.raw_events (seq BIGINT PRIMARY KEY, body TEXT NOT NULL)"
        ))
        .await?;
        // Alternate which goes first, so neither always meets a checkpoint or a warm cache.
        for store_first in [run % 2 == 0, run % 2 == 1] {
            if store_first {
                let start = Instant::now();
                for batch in &batches {
                    store.append(&tenant, batch).await?;
                }
                append.push(rate(total, start.elapsed()));
                ensure!(
                    store.head(&tenant).await? == Seq(total as u64),
                    "every event accepted"
                );
            } else {
                raw_append.push(raw_insert(&raw, &schema, &batches).await?);
            }
        }
        for store_first in [run % 2 == 0, run % 2 == 1] {
            if store_first {
                scan.push(store_scan(&store, &tenant, total).await?);
            } else {
                raw_scan.push(raw_read(&raw, &schema, total).await?);
            }
        }
        EventStore::close(&store).await?;
        schemas.drop_all().await?;
    }

    let append = median(&append);
    let raw_append = median(&raw_append);
    let mut figures = vec![
        Figure {
            name: "postgres: append (events/s)".into(),
            value: append,
            unit: "events/s",
            baseline: Some(raw_append),
            target: Some(">= 0.5x raw".into()),
            ok: Some(append >= 0.5 * raw_append),
        },
        Figure {
            name: "postgres: full scan, pages of 5000".into(),
            value: median(&scan),
            unit: "events/s",
            baseline: Some(median(&raw_scan)),
            target: None,
            ok: None,
        },
    ];

    // Page reads and `head` on a large log, against the same on a small one.
    let small = Scale::build(&url, &mut schemas, workload, SMALL_LOG).await?;
    let started = Instant::now();
    let large = Scale::build(&url, &mut schemas, workload, workload.scale_events).await?;
    let load_rate = rate(workload.scale_events, started.elapsed());
    // No ANALYZE: the reads must seek through an index before autovacuum has gathered
    // statistics, as right after a bulk load.
    let small_page = small.page_latency(None).await?;
    let large_page = large.page_latency(None).await?;
    let small_agg = small.page_latency(Some("agg-3")).await?;
    let large_agg = large.page_latency(Some("agg-3")).await?;
    let small_head = small.head_latency().await?;
    let large_head = large.head_latency().await?;
    let scale = workload.scale_events;
    figures.push(Figure {
        name: format!("postgres: load {scale} events by append"),
        value: load_rate,
        unit: "events/s",
        baseline: None,
        target: None,
        ok: None,
    });
    for (name, value, baseline) in [
        (
            format!("postgres: read page of {LATENCY_PAGE} at {scale}"),
            large_page,
            small_page,
        ),
        (
            format!("postgres: aggregate page of {LATENCY_PAGE} at {scale}"),
            large_agg,
            small_agg,
        ),
        (format!("postgres: head at {scale}"), large_head, small_head),
    ] {
        figures.push(Figure {
            name,
            value,
            unit: "µs",
            baseline: Some(baseline),
            target: Some(format!("<= {SCALE_FACTOR}x at {SMALL_LOG}")),
            ok: Some(value <= SCALE_FACTOR * baseline),
        });
    }
    small.close().await?;
    large.close().await?;
    schemas.drop_all().await?;
    Ok(figures)
}

/// A plain driver connection, its connection task spawned.
async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url} (set SYNCKIT_TEST_POSTGRES_URL)"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn open(url: &str, schema: &str) -> Result<PostgresStore> {
    let config = PostgresConfig::new(url)
        .with_schema(schema)
        .with_pool_size(POOL)
        .with_statement_timeout(Some(Duration::from_secs(600)));
    Ok(PostgresStore::connect(config).await?)
}

/// The benchmark's schemas, dropped together.
struct Schemas<'a> {
    admin: &'a tokio_postgres::Client,
    names: Vec<String>,
}

impl<'a> Schemas<'a> {
    fn new(admin: &'a tokio_postgres::Client) -> Self {
        Schemas {
            admin,
            names: Vec::new(),
        }
    }

    fn fresh(&mut self) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "synckit_bench_{}_{}_{nanos}",
            std::process::id(),
            self.names.len()
        );
        self.names.push(name.clone());
        name
    }

    async fn drop_all(&mut self) -> Result<()> {
        for name in self.names.drain(..) {
            self.admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .await?;
        }
        Ok(())
    }
}

/// Raw PostgreSQL with the same events as serde_json text: one multi-row INSERT (arrays
/// unnested) and one transaction per batch, into a table keyed by `seq`. Events/s.
async fn raw_insert(
    raw: &tokio_postgres::Client,
    schema: &str,
    batches: &[Vec<Event>],
) -> Result<f64> {
    let insert = raw
        .prepare(&format!(
            "INSERT INTO {schema}.raw_events (seq, body)
             SELECT * FROM unnest($1::bigint[], $2::text[])"
        ))
        .await?;
    let mut seq = 0_i64;
    let mut written = 0;
    let start = Instant::now();
    for events in batches {
        let mut seqs = Vec::with_capacity(events.len());
        let mut bodies = Vec::with_capacity(events.len());
        for event in events {
            seq += 1;
            seqs.push(seq);
            bodies.push(serde_json::to_string(event)?);
        }
        raw.batch_execute("BEGIN").await?;
        raw.execute(&insert, &[&seqs, &bodies]).await?;
        raw.batch_execute("COMMIT").await?;
        written += events.len();
    }
    Ok(rate(written, start.elapsed()))
}

/// The store's full scan through `read`, pages of [`SCAN_PAGE`]. Events/s.
async fn store_scan(store: &PostgresStore, tenant: &TenantId, total: usize) -> Result<f64> {
    let start = Instant::now();
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
    ensure!(read == total, "the scan read every event");
    Ok(rate(read, start.elapsed()))
}

/// The raw full scan: pages of [`SCAN_PAGE`] by `seq`, every body decoded. Events/s.
async fn raw_read(raw: &tokio_postgres::Client, schema: &str, total: usize) -> Result<f64> {
    let page = raw
        .prepare(&format!(
            "SELECT seq, body FROM {schema}.raw_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .await?;
    let limit = SCAN_PAGE as i64;
    let start = Instant::now();
    let mut after = 0_i64;
    let mut read = 0;
    loop {
        let rows = raw.query(&page, &[&after, &limit]).await?;
        for row in &rows {
            after = row.try_get(0)?;
            let _event: Event = serde_json::from_str(row.try_get(1)?)?;
        }
        read += rows.len();
        if rows.len() < SCAN_PAGE {
            break;
        }
    }
    ensure!(read == total, "the raw scan read every event");
    Ok(rate(read, start.elapsed()))
}

/// A store filled with `events` events, for latency figures.
struct Scale {
    store: PostgresStore,
    tenant: TenantId,
    events: usize,
}

impl Scale {
    async fn build(
        url: &str,
        schemas: &mut Schemas<'_>,
        workload: &Workload,
        events: usize,
    ) -> Result<Scale> {
        let schema = schemas.fresh();
        let store = open(url, &schema).await?;
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
        // A few untimed reads first: each pooled connection prepares its statements once.
        for _ in 0..POOL * 2 {
            let request = ReadRequest::after(Seq::ZERO, LATENCY_PAGE).with_filter(filter.clone());
            self.store.read(&self.tenant, &request).await?;
        }
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
        for _ in 0..POOL * 2 {
            self.store.head(&self.tenant).await?;
        }
        let mut samples = Vec::with_capacity(HEAD_SAMPLES);
        for _ in 0..HEAD_SAMPLES {
            let start = Instant::now();
            std::hint::black_box(self.store.head(&self.tenant).await?);
            samples.push(micros(start.elapsed()));
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
