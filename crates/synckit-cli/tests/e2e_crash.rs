//! The crash loop: while four clients push continuously, the `synckit serve` process is killed
//! with SIGKILL twenty times at moments drawn at random from the clients' progress, and
//! restarted on the same port and data. Each client retries a batch until the hub acknowledges
//! it. At the end the hub holds exactly the events that were sent, each once, in gap-free
//! order, and every event acknowledged before a kill survived it. Run for the sled and the
//! PostgreSQL hub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::Hub;
use synckit::{AppendOutcome, Event, Hlc, HttpConfig, HttpTransport, ReadRequest, Seq, Transport};
use tokio::sync::watch;

const CLIENTS: usize = 4;
const KILLS: usize = 20;
const BATCH: usize = 20;
/// A bound on the whole loop; reaching it fails the test.
const BOUND: Duration = Duration::from_secs(240);

/// What the clients sent and what the hub acknowledged.
#[derive(Default)]
struct Ledger {
    sent: BTreeSet<String>,
    acknowledged: BTreeSet<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap())
}

fn batch(client: usize, n: usize, run: &str) -> Vec<Event> {
    (0..BATCH)
        .map(|i| {
            Event::builder("Pushed", format!("client-{client}"))
                .id(format!("{run}-{client}-{n}-{i}"))
                .origin(format!("client-{client}"))
                .hlc(Hlc::new(now_ms(), 0))
                .unchecked()
                .build()
                .unwrap()
        })
        .collect()
}

/// Push batch after batch until `stop`, each retried until acknowledged; bump `progress` on
/// every acknowledged batch.
async fn client(
    id: usize,
    url: String,
    run: String,
    ledger: Arc<Mutex<Ledger>>,
    progress: watch::Sender<u64>,
    mut restarts: watch::Receiver<u64>,
    stop: Arc<AtomicBool>,
) {
    let hub = HttpTransport::with_config(HttpConfig {
        request_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        ..HttpConfig::new(url, None)
    })
    .unwrap();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let events = batch(id, n, &run);
        ledger
            .lock()
            .unwrap()
            .sent
            .extend(events.iter().map(|e| e.id.to_string()));
        let mut failed_at = None;
        loop {
            let generation = *restarts.borrow();
            match hub.push(&events).await {
                Ok(report) => {
                    let mut ledger = ledger.lock().unwrap();
                    for result in &report.results {
                        assert!(
                            matches!(
                                result.outcome,
                                AppendOutcome::Accepted { .. } | AppendOutcome::Duplicate { .. }
                            ),
                            "{result:?}"
                        );
                        ledger.acknowledged.insert(result.id.to_string());
                    }
                    break;
                }
                // The first failure may be a connection the killed hub left behind: retry at
                // once, on a new one. A second failure with no restart in between means the hub
                // is down: wait for it to come back, then send the same batch again.
                Err(_) if failed_at != Some(generation) => failed_at = Some(generation),
                Err(_) => {
                    // Once the loop is over (the sender dropped), just retry.
                    let _ = restarts.wait_for(|g| *g > generation).await;
                }
            }
        }
        progress.send_modify(|p| *p += 1);
        n += 1;
    }
}

async fn crash_loop(store: &[String]) {
    let run = format!("{:x}", now_ms());
    let args: Vec<&str> = store.iter().map(String::as_str).collect();
    let first = Hub::start(&args);
    let url = first.url.clone();
    let listen = url.strip_prefix("http://").unwrap().to_owned();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let (progress, mut watched) = watch::channel(0u64);
    let (restarted_tx, restarts) = watch::channel(0u64);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                url.clone(),
                run.clone(),
                ledger.clone(),
                progress.clone(),
                restarts.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let seed = std::env::var("SYNCKIT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash loop: kill moments from seed {seed} (replay: SYNCKIT_CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut hub = Some(first);
    for round in 0..KILLS {
        // A random moment: after 1 to 6 more acknowledged batches.
        let target = *watched.borrow() + rng.u64(1..=6);
        watched.wait_for(|p| *p >= target).await.unwrap();
        hub.take().unwrap().kill();
        let (listen, args) = (listen.clone(), store.to_vec());
        let restarted = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Hub::start_at(&listen, &args)
        })
        .await
        .unwrap();
        assert_eq!(
            restarted.url, url,
            "round {round}: the hub came back elsewhere"
        );
        hub = Some(restarted);
        restarted_tx.send_modify(|g| *g += 1);
    }
    stop.store(true, Ordering::Relaxed);
    drop(restarted_tx);
    for c in clients {
        c.await.unwrap();
    }
    // Read the whole log back.
    let reader = HttpTransport::new(&url, None).unwrap();
    let mut log = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let page = reader
            .pull(&ReadRequest::after(after, 5_000))
            .await
            .unwrap();
        log.extend(page.events);
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    let ledger = ledger.lock().unwrap();
    let ids: Vec<String> = log.iter().map(|e| e.event.id.to_string()).collect();
    let stored: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(stored.len(), ids.len(), "an event is stored twice");
    let seqs: Vec<u64> = log.iter().map(|e| e.seq.get()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gaps in the order"
    );
    let lost: Vec<_> = ledger.acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {lost:?}",
        lost.len()
    );
    let strangers: Vec<_> = stored.difference(&ledger.sent).collect();
    assert!(strangers.is_empty(), "events nobody sent: {strangers:?}");
    assert_eq!(
        stored, ledger.sent,
        "every sent batch was retried until acknowledged"
    );
    eprintln!(
        "crash loop {store:?}: {KILLS} kills, {} events stored, each once",
        stored.len()
    );
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_hub_killed_twenty_times_keeps_every_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hub").to_str().unwrap().to_owned();
    let store = [
        "--store".to_owned(),
        "sled".to_owned(),
        "--data".to_owned(),
        data,
    ];
    tokio::time::timeout(BOUND, crash_loop(&store))
        .await
        .expect("the crash loop did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_hub_killed_twenty_times_keeps_every_acknowledged_event() {
    let Some(url) = synckit_testkit::services::postgres_url("postgres crash loop") else {
        return;
    };
    let schema = format!("crash_{:x}_{}", now_ms(), std::process::id());
    let store = [
        "--store".to_owned(),
        "postgres".to_owned(),
        "--postgres-url".to_owned(),
        url,
        "--postgres-schema".to_owned(),
        schema,
    ];
    tokio::time::timeout(BOUND, crash_loop(&store))
        .await
        .expect("the crash loop did not finish");
}
