//! `load`: 1,000 concurrent clients, each on its own keep-alive connection, push and pull
//! against one `synckit serve` process (sled) for 60 seconds. Reports request latency
//! percentiles, answers by status (only configured 429s are allowed besides 200), and the
//! hub's resident memory over time, which must stay flat after warm-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::net::hub::HubProcess;
use crate::stats::{Figure, print_table};

/// The shape of the run.
struct Load {
    clients: usize,
    duration: Duration,
    /// Before this, memory is warming up (sled's page cache filling, pools growing).
    warm_up: Duration,
    /// Events per push.
    batch: usize,
    payload: usize,
    tokens: usize,
}

impl Load {
    fn new(quick: bool) -> Load {
        if quick {
            Load {
                clients: 100,
                duration: Duration::from_secs(6),
                warm_up: Duration::from_secs(2),
                batch: 10,
                payload: 200,
                tokens: 10,
            }
        } else {
            Load {
                clients: 1_000,
                duration: Duration::from_secs(60),
                warm_up: Duration::from_secs(20),
                batch: 10,
                payload: 200,
                tokens: 10,
            }
        }
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Request latencies in microseconds.
    latencies: Vec<u32>,
    /// Answers by status code; 0 counts transport failures.
    statuses: BTreeMap<u16, u64>,
}

pub async fn run(quick: bool) -> Result<()> {
    let mut load = Load::new(quick);
    // A longer soak: SYNCKIT_LOAD_SECS=600 cargo xtask bench load.
    if let Some(seconds) = std::env::var("SYNCKIT_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        load.duration = Duration::from_secs(seconds.max(load.warm_up.as_secs() + 10));
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("hub.toml");
    // A rate limit the workload can reach, so the 429 path runs under load too; and a sled
    // page cache of 32 MiB, so the warm-up (the cache filling) ends well inside the run.
    std::fs::write(
        &config,
        "[serve]\nrate_limit_per_second = 200\nrate_limit_burst = 400\nsled_cache_mib = 32\n",
    )?;
    let tokens: Vec<String> = (0..load.tokens)
        .map(|i| format!("load-token-{i}"))
        .collect();
    let mut args = vec!["--config".to_owned(), config.display().to_string()];
    for token in &tokens {
        args.push("--token".to_owned());
        args.push(format!("{token}=load:write"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hub = HubProcess::start_with("sled", &dir.path().join("hub"), &args)?;
    let address = hub.url.trim_start_matches("http://").to_owned();
    println!(
        "{} clients for {:?} against {} (sled), {} tokens at 200 requests/s each",
        load.clients, load.duration, hub.url, load.tokens
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + load.duration;
    let mut clients = Vec::with_capacity(load.clients);
    for i in 0..load.clients {
        let token = tokens[i % tokens.len()].clone();
        clients.push(tokio::spawn(client(
            i,
            address.clone(),
            token,
            until,
            (load.batch, load.payload),
            tally.clone(),
        )));
    }
    // The hub's memory, once a second.
    let rss = hub.rss_reader();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    while Instant::now() < until {
        samples.push((started.elapsed(), rss()?));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for c in clients {
        c.await.context("a client task failed")??;
    }
    samples.push((started.elapsed(), rss()?));
    let tally = tally.lock().await;
    hub.stop()?;

    let mut latencies = tally.latencies.clone();
    latencies.sort_unstable();
    let pct = |p: usize| {
        // Nearest rank, in integers: index = round((len - 1) * p) with p in thousandths.
        let index = (latencies.len().saturating_sub(1) * p + 500) / 1000;
        f64::from(latencies.get(index).copied().unwrap_or(0)) / 1000.0
    };
    let total: u64 = tally.statuses.values().sum();
    let ok = tally.statuses.get(&200).copied().unwrap_or(0);
    let limited = tally.statuses.get(&429).copied().unwrap_or(0);
    let errors = total - ok - limited;
    let after_warm_up: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= load.warm_up)
        .map(|(_, r)| *r)
        .collect();
    let (first, last) = (
        after_warm_up.first().copied().unwrap_or(0),
        after_warm_up.last().copied().unwrap_or(0),
    );
    let peak = after_warm_up.iter().copied().max().unwrap_or(0);
    let growth = last as f64 / first.max(1) as f64;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "answers: {:?} (0 = transport failure); hub RSS after warm-up {:.0} MiB -> {:.0} MiB \
         (peak {:.0} MiB)",
        tally.statuses,
        mib(first),
        mib(last),
        mib(peak)
    );
    println!(
        "hub RSS by second (MiB): {}",
        samples
            .iter()
            .map(|(_, r)| format!("{:.0}", mib(*r)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let seconds = load.duration.as_secs_f64();
    let figure = |name: &str, value: f64, unit: &'static str| Figure {
        name: name.to_owned(),
        value,
        unit,
        baseline: None,
        target: None,
        ok: None,
    };
    let checked = |name: &str, value: f64, unit: &'static str, target: &str, ok: bool| Figure {
        target: Some(target.to_owned()),
        ok: Some(ok),
        ..figure(name, value, unit)
    };
    let figures = vec![
        figure("requests answered 200", ok as f64 / seconds, "req/s"),
        figure(
            "requests answered 429 (configured)",
            limited as f64 / seconds,
            "req/s",
        ),
        checked(
            "other answers and failures",
            errors as f64,
            "count",
            "== 0",
            errors == 0,
        ),
        figure("request latency p50", pct(500), "ms"),
        figure("request latency p99", pct(990), "ms"),
        checked(
            "hub RSS growth after warm-up",
            growth,
            "x",
            "<= 1.10x",
            growth <= 1.10,
        ),
    ];
    if !print_table("load: 1,000 clients push and pull", &figures) && !quick {
        bail!("a load target was missed");
    }
    Ok(())
}

/// One client: push a batch, pull after its cursor, repeat until `until`; on 429 wait the
/// `Retry-After` the hub gave.
async fn client(
    index: usize,
    address: String,
    token: String,
    until: Instant,
    (batch, payload): (usize, usize),
    tally: Arc<Mutex<Tally>>,
) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(&address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(connection);
    let auth = format!("Bearer {token}");
    let pad = "p".repeat(payload);
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut cursor = 0u64;
    let mut n = 0u64;
    while Instant::now() < until {
        let events: Vec<Value> = (0..batch)
            .map(|k| {
                json!({"id": format!("c{index}-{n}-{k}"), "kind": "Loaded",
                       "aggregate_id": format!("agg-{index}"), "data": {"pad": pad}})
            })
            .collect();
        n += 1;
        let push = Request::builder()
            .method(Method::POST)
            .uri("/v1/events")
            .header("host", &address)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({ "events": events }).to_string(),
            )))?;
        let pull = Request::builder()
            .method(Method::GET)
            .uri(format!("/v1/events?after={cursor}&limit=100"))
            .header("host", &address)
            .header("authorization", &auth)
            .body(Full::new(Bytes::new()))?;
        for request in [push, pull] {
            let is_pull = request.method() == Method::GET;
            let sent = Instant::now();
            if sender.ready().await.is_err() {
                // The hub closed the connection: count it, and stop this client.
                *statuses.entry(0).or_default() += 1;
                return merge(&tally, latencies, statuses).await;
            }
            let answer = match sender.send_request(request).await {
                Ok(answer) => answer,
                Err(_) => {
                    *statuses.entry(0).or_default() += 1;
                    return merge(&tally, latencies, statuses).await;
                }
            };
            let status = answer.status().as_u16();
            let retry_after = answer
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let body = answer.into_body().collect().await?.to_bytes();
            let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
            latencies.push(micros);
            *statuses.entry(status).or_default() += 1;
            if status == 429 {
                let wait = Duration::from_secs(retry_after.unwrap_or(1));
                let left = until.saturating_duration_since(Instant::now());
                tokio::time::sleep(wait.min(left)).await;
                break;
            }
            if is_pull && status == 200 {
                let page: Value = serde_json::from_slice(&body)?;
                cursor = page["next"].as_u64().unwrap_or(cursor);
            }
        }
    }
    merge(&tally, latencies, statuses).await
}

async fn merge(
    tally: &Mutex<Tally>,
    latencies: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
) -> Result<()> {
    let mut tally = tally.lock().await;
    tally.latencies.extend(latencies);
    for (status, count) in statuses {
        *tally.statuses.entry(status).or_default() += count;
    }
    Ok(())
}
