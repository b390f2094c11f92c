//! Daemon mode: a burst of triggers inside the debounce window starts exactly one run (paused
//! time, and once with the real file watcher), triggers during a run start exactly one more and
//! runs never overlap, `max_delay` bounds the wait under a steady stream, the reconciler finds
//! a change no event announced, channel feeds trigger runs, failures are retried and reported,
//! and stop/drop end the daemon as documented.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use synckit_coordinator::{
    BoxError, Daemon, DaemonConfig, DaemonStatus, DaemonWork, DirSource, MemorySink, Pipeline,
    WorkReport, work_fn,
};
use synckit_types::ManualClock;
use tokio::sync::{Mutex, Notify, broadcast, mpsc, watch};
use tokio::time::Instant;

/// Settings for tests: no start-up run and no reconciler unless a test turns them on.
fn quiet(debounce_ms: u64) -> DaemonConfig {
    DaemonConfig {
        debounce: Duration::from_millis(debounce_ms),
        max_delay: Duration::from_secs(3600),
        reconcile_interval: None,
        run_on_start: false,
        watch_files: false,
        ..DaemonConfig::default()
    }
}

/// Work that counts its runs and remembers when each one started.
#[derive(Default)]
struct Counting {
    runs: AtomicU64,
    started: std::sync::Mutex<Vec<Instant>>,
}

#[async_trait]
impl DaemonWork for Counting {
    async fn run(&self) -> Result<WorkReport, BoxError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.lock().unwrap().push(Instant::now());
        Ok(WorkReport {
            records: 2,
            errors: 0,
        })
    }
}

/// Wait (bounded; in paused time the bound costs no real time) until `done` holds.
async fn wait_for(
    status: &mut watch::Receiver<DaemonStatus>,
    what: &str,
    done: impl Fn(&DaemonStatus) -> bool,
) -> DaemonStatus {
    tokio::time::timeout(Duration::from_secs(120), status.wait_for(|s| done(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
        .clone()
}

#[tokio::test(start_paused = true)]
async fn fifty_triggers_inside_the_debounce_window_start_exactly_one_run() {
    let work = Arc::new(Counting::default());
    let daemon = Daemon::builder(work.clone())
        .config(quiet(1_000))
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    let trigger = daemon.trigger();
    let mut last = Instant::now();
    for _ in 0..50 {
        trigger.fire();
        last = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let after = wait_for(&mut status, "the run", |s| s.runs >= 1).await;
    // Quiet for a long while (paused time: the runtime jumps ahead whenever it is idle).
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(work.runs.load(Ordering::SeqCst), 1);
    let status = daemon.status();
    assert_eq!(status.runs, 1);
    assert_eq!(status.triggers, 50);
    assert_eq!(status.records, 2);
    assert!(!status.pending && !status.running);
    assert_eq!(after.last_report.unwrap().records, 2);
    // Trailing debounce: the run waited for a quiet second after the last trigger.
    let started = work.started.lock().unwrap()[0];
    assert!(started >= last + Duration::from_millis(1_000));
}

#[tokio::test(start_paused = true)]
async fn triggers_spaced_wider_than_the_window_start_one_run_each() {
    let work = Arc::new(Counting::default());
    let daemon = Daemon::builder(work.clone())
        .config(quiet(1_000))
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    for n in 1..=3 {
        daemon.trigger().fire();
        wait_for(&mut status, "a run", |s| s.runs == n).await;
    }
    assert_eq!(work.runs.load(Ordering::SeqCst), 3);
}

/// Work whose runs wait for a release, tracking how many are in flight at once.
struct Gated {
    release: Mutex<mpsc::Receiver<()>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    started: Notify,
    runs: AtomicU64,
}

#[async_trait]
impl DaemonWork for Gated {
    async fn run(&self) -> Result<WorkReport, BoxError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.started.notify_one();
        self.release.lock().await.recv().await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(WorkReport::default())
    }
}

fn gated() -> (Arc<Gated>, mpsc::Sender<()>) {
    let (tx, rx) = mpsc::channel(16);
    let work = Arc::new(Gated {
        release: Mutex::new(rx),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        started: Notify::new(),
        runs: AtomicU64::new(0),
    });
    (work, tx)
}

#[tokio::test(start_paused = true)]
async fn triggers_during_a_run_start_exactly_one_more_and_runs_never_overlap() {
    let (work, release) = gated();
    let daemon = Daemon::builder(work.clone())
        .config(quiet(100))
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    daemon.trigger().fire();
    work.started.notified().await;
    assert!(daemon.status().running);
    for _ in 0..5 {
        daemon.trigger().fire();
        tokio::time::advance(Duration::from_millis(500)).await;
    }
    // Still one run in flight, however long the triggers kept coming.
    assert_eq!(work.runs.load(Ordering::SeqCst), 1);
    release.send(()).await.unwrap();
    work.started.notified().await;
    assert_eq!(work.runs.load(Ordering::SeqCst), 2);
    release.send(()).await.unwrap();
    wait_for(&mut status, "the second run to end", |s| {
        s.runs == 2 && !s.running
    })
    .await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(work.runs.load(Ordering::SeqCst), 2);
    assert_eq!(work.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn max_delay_bounds_the_wait_under_a_steady_stream_of_triggers() {
    let work = Arc::new(Counting::default());
    let config = DaemonConfig {
        max_delay: Duration::from_secs(5),
        ..quiet(1_000)
    };
    let daemon = Daemon::builder(work.clone())
        .config(config)
        .start()
        .unwrap();
    let trigger = daemon.trigger();
    // A trigger every 400 ms for 30 s never leaves a quiet second.
    for _ in 0..75 {
        trigger.fire();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let runs = work.runs.load(Ordering::SeqCst);
    assert!(runs >= 4, "only {runs} run(s): the stream starved the work");
}

fn append(path: &std::path::Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_reconciler_finds_a_change_the_watcher_missed() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.jsonl");
    append(&file, "{\"n\":1}\n");
    let work = Arc::new(Counting::default());
    let config = DaemonConfig {
        // No file watcher: the change below produces no event at all.
        watch_files: false,
        reconcile_interval: Some(Duration::from_secs(10)),
        ..quiet(100)
    };
    let daemon = Daemon::builder(work.clone())
        .config(config)
        .path(tmp.path(), false)
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    wait_for(&mut status, "the baseline scan", |s| s.scans >= 1).await;

    // Nothing changed: passes go by without a run.
    wait_for(&mut status, "three passes", |s| s.reconcile_passes >= 3).await;
    assert_eq!(work.runs.load(Ordering::SeqCst), 0);

    // A file the filter ignores is no change either.
    append(&tmp.path().join("notes.txt"), "ignored\n");
    let passes = daemon.status().reconcile_passes;
    wait_for(&mut status, "another pass", |s| s.reconcile_passes > passes).await;
    assert_eq!(work.runs.load(Ordering::SeqCst), 0);

    append(&file, "{\"n\":2}\n");
    let after = wait_for(&mut status, "a run", |s| s.runs == 1).await;
    assert_eq!(after.reconcile_changes, 1);
    assert_eq!(after.triggers, 0, "no event announced the change");

    // The run's snapshot is the new baseline: later passes find nothing.
    let passes = daemon.status().reconcile_passes;
    wait_for(&mut status, "two more passes", |s| {
        s.reconcile_passes >= passes + 2
    })
    .await;
    assert_eq!(work.runs.load(Ordering::SeqCst), 1);
    assert_eq!(daemon.status().reconcile_changes, 1);
}

#[tokio::test(start_paused = true)]
async fn content_hashes_catch_a_rewrite_that_kept_size_and_time() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a.jsonl");
    std::fs::write(&file, "aaaa\n").unwrap();
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let rewrite = || {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        (&f).write_all(b"bbbb\n").unwrap();
        f.set_modified(modified).unwrap();
    };
    for hashes in [false, true] {
        std::fs::write(&file, "aaaa\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let work = Arc::new(Counting::default());
        let daemon = Daemon::builder(work.clone())
            .config(DaemonConfig {
                reconcile_hashes: hashes,
                ..quiet(100)
            })
            .path(&file, false)
            .start()
            .unwrap();
        assert!(!daemon.reconcile_now().await.unwrap());
        rewrite();
        assert_eq!(daemon.reconcile_now().await.unwrap(), hashes);
        daemon.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_real_file_writes_starts_exactly_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let work = Arc::new(Counting::default());
    let config = DaemonConfig {
        watch_files: true,
        // Generous: 50 small writes take far less, so the whole burst falls in one window.
        debounce: Duration::from_secs(2),
        ..quiet(0)
    };
    let daemon = Daemon::builder(work.clone())
        .config(config)
        .path(tmp.path(), false)
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    let write = |i: usize| append(&tmp.path().join(format!("f{}.jsonl", i % 5)), "{}\n");
    for i in 0..25 {
        write(i);
    }
    // The watcher has delivered the first writes: without the debounce a run would start now,
    // and the second half of the burst would start another.
    wait_for(&mut status, "the first file events", |s| s.triggers >= 1).await;
    for i in 25..50 {
        write(i);
    }
    wait_for(&mut status, "a run started by file events", |s| {
        s.runs >= 1 && !s.running
    })
    .await;
    // Quiet check: the reconciler sees nothing the run did not, and no run is due.
    assert!(!daemon.reconcile_now().await.unwrap());
    let status = daemon.status();
    assert_eq!(status.runs, 1, "{status:?}");
    assert!(!status.pending, "{status:?}");
    assert!(status.triggers >= 1);
    assert_eq!(work.runs.load(Ordering::SeqCst), 1);
    daemon.stop().await;
}

#[tokio::test(start_paused = true)]
async fn broadcast_and_watch_feeds_trigger_runs() {
    let work = Arc::new(Counting::default());
    let (results_tx, results_rx) = broadcast::channel::<u64>(4);
    let (state_tx, state_rx) = watch::channel("idle");
    let daemon = Daemon::builder(work.clone())
        .config(quiet(100))
        .on_broadcast(results_rx)
        .on_watch(state_rx)
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    results_tx.send(1).unwrap();
    wait_for(&mut status, "a run from the broadcast", |s| s.runs == 1).await;
    state_tx.send("synced").unwrap();
    wait_for(&mut status, "a run from the watch", |s| s.runs == 2).await;
    // Closed feeds end quietly; the daemon and its trigger keep working.
    drop(results_tx);
    drop(state_tx);
    daemon.trigger().fire();
    wait_for(&mut status, "a run from the trigger", |s| s.runs == 3).await;
    assert_eq!(daemon.status().triggers, 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_run_is_reported_and_retried() {
    let attempts = Arc::new(AtomicU64::new(0));
    let work = {
        let attempts = attempts.clone();
        Arc::new(work_fn(move || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt == 0 {
                    Err::<WorkReport, BoxError>("hub unreachable".into())
                } else {
                    Ok(WorkReport {
                        records: 5,
                        errors: 1,
                    })
                }
            }
        }))
    };
    let clock = ManualClock::new(1_000);
    let config = DaemonConfig {
        run_on_start: true,
        retry_delay: Duration::from_secs(3),
        ..quiet(100)
    };
    let daemon = Daemon::builder(work)
        .config(config)
        .clock(Arc::new(clock.clone()))
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    let failed = wait_for(&mut status, "the failure", |s| s.failures == 1).await;
    assert_eq!(failed.last_error.as_deref(), Some("hub unreachable"));
    assert_eq!(failed.last_error_ms, Some(1_000));
    assert_eq!(failed.consecutive_failures, 1);
    assert!(failed.pending, "a retry is due");
    assert_eq!(failed.last_sync_ms, None);
    clock.set(9_000);
    // No trigger: the retry comes by itself.
    let ok = wait_for(&mut status, "the retry", |s| s.runs == 2).await;
    assert_eq!(ok.consecutive_failures, 0);
    assert_eq!(ok.last_sync_ms, Some(9_000));
    assert_eq!((ok.records, ok.errors), (5, 1));
    assert_eq!(ok.last_error.as_deref(), Some("hub unreachable"));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn stop_lets_the_running_run_finish() {
    let (work, release) = gated();
    let daemon = Daemon::builder(work.clone())
        .config(quiet(100))
        .start()
        .unwrap();
    daemon.trigger().fire();
    work.started.notified().await;
    let stopping = tokio::spawn(daemon.stop());
    tokio::task::yield_now().await;
    assert!(!stopping.is_finished());
    release.send(()).await.unwrap();
    let last = stopping.await.unwrap();
    assert!(last.stopped);
    assert_eq!(last.runs, 1, "the run in progress finished and counted");
    assert_eq!(work.in_flight.load(Ordering::SeqCst), 0);
}

/// Work that never ends and says when its future is dropped.
struct Endless {
    started: Notify,
    dropped: Arc<AtomicBool>,
    gone: Arc<Notify>,
}

struct DropFlag(Arc<AtomicBool>, Arc<Notify>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
        self.1.notify_one();
    }
}

#[async_trait]
impl DaemonWork for Endless {
    async fn run(&self) -> Result<WorkReport, BoxError> {
        let _flag = DropFlag(self.dropped.clone(), self.gone.clone());
        self.started.notify_one();
        std::future::pending::<()>().await;
        Ok(WorkReport::default())
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_daemon_cancels_the_run_in_progress() {
    let work = Arc::new(Endless {
        started: Notify::new(),
        dropped: Arc::new(AtomicBool::new(false)),
        gone: Arc::new(Notify::new()),
    });
    let daemon = Daemon::builder(work.clone())
        .config(quiet(100))
        .start()
        .unwrap();
    daemon.trigger().fire();
    work.started.notified().await;
    assert!(!work.dropped.load(Ordering::SeqCst));
    drop(daemon);
    tokio::time::timeout(Duration::from_secs(60), work.gone.notified())
        .await
        .expect("the run was not cancelled");
    assert!(work.dropped.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_as_daemon_work() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    append(&logs.join("a.jsonl"), "{\"n\":1}\n{\"n\":2}\nbad\n");
    let sink = Arc::new(MemorySink::new());
    let pipeline = Pipeline::builder(
        Arc::new(DirSource::new(&logs).extension("jsonl")),
        sink.clone(),
        tmp.path().join("wm.json"),
    )
    .open()
    .unwrap();
    let daemon = Daemon::builder(Arc::new(pipeline.clone()))
        .config(DaemonConfig {
            run_on_start: true,
            ..quiet(50)
        })
        .path(&logs, false)
        .start()
        .unwrap();
    let mut status = daemon.subscribe();
    let after = wait_for(&mut status, "the start-up run", |s| s.runs == 1).await;
    assert_eq!((after.records, after.errors), (2, 1));
    assert_eq!(sink.records().len(), 2);
    append(&logs.join("a.jsonl"), "{\"n\":3}\n");
    daemon.trigger().fire();
    let after = wait_for(&mut status, "the triggered run", |s| s.runs == 2).await;
    assert_eq!(after.records, 3);
    assert_eq!(pipeline.status().runs, 2);
    daemon.stop().await;
}
