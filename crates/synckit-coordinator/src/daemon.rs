//! Daemon mode: run a piece of work whenever watched files change, a realtime stream announces
//! something, or the caller pulls a [`DaemonTrigger`]; bursts are debounced into one run, a periodic
//! reconciler catches changes the file watcher missed, and runs never overlap.
//!
//! # How a run is started
//! Every trigger (a file event, a message on a connected channel, [`DaemonTrigger::fire`], a change
//! found by the reconciler) makes a run *due* once the triggers have been quiet for
//! [`DaemonConfig::debounce`], but no later than [`DaemonConfig::max_delay`] after the first
//! trigger of the burst, so a never-ending stream of events cannot starve the work. Triggers
//! that arrive while a run is in progress make exactly one more run due after it.
//!
//! # One writer
//! A single loop task awaits each run before it looks at triggers again: runs are strictly
//! sequential. A failed run is retried after [`DaemonConfig::retry_delay`], doubling up to
//! [`DaemonConfig::max_retry_delay`], unless a trigger comes first.
//!
//! # The reconciler
//! File watchers miss events (overflowing kernel queues, network file systems, editors that
//! replace files). Every [`DaemonConfig::reconcile_interval`] the reconciler lists the watched
//! paths and compares each file's size and modification time (and, with
//! [`DaemonConfig::reconcile_hashes`], a SHA-256 of its content) with a snapshot taken when the
//! last run started. A difference makes a run due.
//!
//! # Tasks
//! [`DaemonBuilder::start`] spawns the loop and one small forwarding task per connected
//! channel; the returned [`Daemon`] owns them. [`Daemon::stop`] lets a run in progress finish
//! and ends them all; dropping the [`Daemon`] ends them at once (a run in progress is
//! cancelled at its next await point, which the [`crate::pipeline`] is built to survive).

use std::collections::BTreeMap;
use std::fmt::{self, Debug};
use std::fs::{self, File};
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use notify::{EventKind, RecursiveMode, Watcher};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use synckit_types::{BoxError, DynClock, SystemClock};
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::pipeline::modified_ns;

/// What one run of the work did, for the daemon's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkReport {
    /// Records (events, lines, ...) the run moved.
    pub records: u64,
    /// Problems that did not fail the run (malformed lines, skipped items, ...).
    pub errors: u64,
}

/// The work a [`Daemon`] runs. A [`crate::pipeline::Pipeline`] is one; [`work_fn`] makes one
/// from a closure.
#[async_trait]
pub trait DaemonWork: Send + Sync + 'static {
    /// Do one run. An error is recorded in the status and the run is retried later.
    async fn run(&self) -> Result<WorkReport, BoxError>;
}

#[async_trait]
impl<T: DaemonWork + ?Sized> DaemonWork for Arc<T> {
    async fn run(&self) -> Result<WorkReport, BoxError> {
        (**self).run().await
    }
}

/// [`DaemonWork`] made from a closure that returns a future.
pub struct WorkFn<F>(F);

impl<F> Debug for WorkFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkFn")
    }
}

/// Make [`DaemonWork`] from a closure, e.g. `work_fn(move || { let p = p.clone(); async move
/// { ... } })`.
pub fn work_fn<F, Fut>(f: F) -> WorkFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<WorkReport, BoxError>> + Send + 'static,
{
    WorkFn(f)
}

#[async_trait]
impl<F, Fut> DaemonWork for WorkFn<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<WorkReport, BoxError>> + Send + 'static,
{
    async fn run(&self) -> Result<WorkReport, BoxError> {
        (self.0)().await
    }
}

/// Settings of a [`Daemon`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Quiet time after the last trigger before a run starts. Default 500 ms.
    pub debounce: Duration,
    /// Longest time from the first trigger of a burst to the run. Default 10 s.
    pub max_delay: Duration,
    /// How often the reconciler rescans the watched paths; `None` turns it off. Default 30 s.
    pub reconcile_interval: Option<Duration>,
    /// Whether the reconciler also compares content hashes (reads every file on every pass),
    /// catching a rewrite that kept size and modification time. Default false.
    pub reconcile_hashes: bool,
    /// Whether to watch the paths with the operating system's file watcher. With false, only
    /// the reconciler looks at them. Default true.
    pub watch_files: bool,
    /// Run once right after starting (to catch up with what changed while stopped). Default
    /// true.
    pub run_on_start: bool,
    /// Wait before retrying a failed run. Default 1 s.
    pub retry_delay: Duration,
    /// Longest wait between retries (the wait doubles after each failure). Default 5 min.
    pub max_retry_delay: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            debounce: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            reconcile_interval: Some(Duration::from_secs(30)),
            reconcile_hashes: false,
            watch_files: true,
            run_on_start: true,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(300),
        }
    }
}

impl DaemonConfig {
    fn validate(&self) -> Result<(), DaemonError> {
        if self.max_delay < self.debounce {
            return Err(DaemonError::Config(format!(
                "max_delay {:?} is shorter than debounce {:?}",
                self.max_delay, self.debounce
            )));
        }
        if self.reconcile_interval.is_some_and(|i| i.is_zero()) {
            return Err(DaemonError::Config(
                "reconcile_interval must be greater than zero".into(),
            ));
        }
        if self.retry_delay.is_zero() || self.max_retry_delay < self.retry_delay {
            return Err(DaemonError::Config(
                "retry_delay must be greater than zero and at most max_retry_delay".into(),
            ));
        }
        Ok(())
    }
}

/// Why a daemon could not start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// [`DaemonBuilder::start`] was called outside a tokio runtime.
    #[error("the daemon needs a running tokio runtime")]
    NoRuntime,
    /// The file watcher could not be set up for a path.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The path.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// The settings contradict each other.
    #[error("invalid daemon configuration: {0}")]
    Config(String),
    /// The daemon has stopped.
    #[error("the daemon has stopped")]
    Stopped,
}

/// A snapshot of a daemon's state and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// A run is in progress.
    pub running: bool,
    /// A run is due (debouncing, or waiting to retry).
    pub pending: bool,
    /// The daemon has stopped.
    pub stopped: bool,
    /// Runs finished, failed ones included.
    pub runs: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Failures since the last successful run.
    pub consecutive_failures: u64,
    /// Triggers received (file events, channel messages, [`DaemonTrigger::fire`] calls).
    pub triggers: u64,
    /// File watcher errors (each also makes a run due: something may have been missed).
    pub watcher_errors: u64,
    /// Snapshots of the watched paths taken (at start, before each run, by each reconcile).
    pub scans: u64,
    /// Reconciler passes.
    pub reconcile_passes: u64,
    /// Reconciler passes that found a change no trigger had announced.
    pub reconcile_changes: u64,
    /// Records moved by all runs.
    pub records: u64,
    /// Problems reported by all runs.
    pub errors: u64,
    /// When the last run started, in milliseconds since the Unix epoch.
    pub last_run_started_ms: Option<u64>,
    /// When the last successful run ended ("last sync"), in milliseconds since the Unix epoch.
    pub last_sync_ms: Option<u64>,
    /// The report of the last successful run.
    pub last_report: Option<WorkReport>,
    /// The error of the last failed run (kept after later successes; see `consecutive_failures`).
    pub last_error: Option<String>,
    /// When the last run failed, in milliseconds since the Unix epoch.
    pub last_error_ms: Option<u64>,
}

struct Shared {
    notify: Notify,
    triggers: AtomicU64,
    watcher_errors: AtomicU64,
}

/// Makes a run of a [`Daemon`] due (after the debounce). Cheap to clone; usable from any thread,
/// inside or outside the runtime. Feed it from whatever stream should start runs.
#[derive(Clone)]
pub struct DaemonTrigger {
    shared: Arc<Shared>,
}

impl Debug for DaemonTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonTrigger")
            .field("fired", &self.shared.triggers.load(Ordering::Relaxed))
            .finish()
    }
}

impl DaemonTrigger {
    /// Announce a change.
    pub fn fire(&self) {
        self.shared.triggers.fetch_add(1, Ordering::SeqCst);
        // One stored permit covers any number of triggers: they are debounced into one run.
        self.shared.notify.notify_one();
    }
}

/// Decides which paths count (applied to file events and to the reconciler's listing).
pub type PathFilter = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// How the loop and forwarders are asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Running,
    /// Let a run in progress finish, then end.
    Finish,
    /// End now, cancelling a run in progress.
    Abort,
}

type Feed = Box<
    dyn FnOnce(DaemonTrigger, watch::Receiver<Mode>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

/// A path to watch and rescan.
#[derive(Debug, Clone)]
struct WatchedPath {
    path: PathBuf,
    recursive: bool,
}

/// Assembles and starts a [`Daemon`].
pub struct DaemonBuilder {
    work: Arc<dyn DaemonWork>,
    config: DaemonConfig,
    paths: Vec<WatchedPath>,
    filter: Option<PathFilter>,
    feeds: Vec<Feed>,
    clock: DynClock,
}

impl Debug for DaemonBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonBuilder")
            .field("config", &self.config)
            .field("paths", &self.paths)
            .field("feeds", &self.feeds.len())
            .finish_non_exhaustive()
    }
}

impl DaemonBuilder {
    /// The settings; `DaemonConfig::default()` when not set.
    pub fn config(mut self, config: DaemonConfig) -> Self {
        self.config = config;
        self
    }

    /// Watch (and reconcile) a file or directory; `recursive` also covers subdirectories.
    pub fn path(mut self, path: impl Into<PathBuf>, recursive: bool) -> Self {
        self.paths.push(WatchedPath {
            path: path.into(),
            recursive,
        });
        self
    }

    /// Only files for which `filter` answers true count, in directories watched or rescanned.
    pub fn filter(mut self, filter: impl Fn(&Path) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(filter));
        self
    }

    /// Each message on `receiver` is a trigger (a lagging receiver counts as one); the
    /// channel closing ends only this feed. Use it for a node's realtime results.
    pub fn on_broadcast<T: Clone + Send + 'static>(
        mut self,
        mut receiver: broadcast::Receiver<T>,
    ) -> Self {
        self.feeds.push(Box::new(move |trigger, mut mode| {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        biased;
                        () = ended(&mut mode) => return,
                        message = receiver.recv() => match message {
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => trigger.fire(),
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                    }
                }
            })
        }));
        self
    }

    /// Each change of the value behind `receiver` is a trigger; the sender going away ends
    /// only this feed. Use it for a node's sync state or progress.
    pub fn on_watch<T: Send + Sync + 'static>(mut self, mut receiver: watch::Receiver<T>) -> Self {
        self.feeds.push(Box::new(move |trigger, mut mode| {
            Box::pin(async move {
                loop {
                    tokio::select! {
                        biased;
                        () = ended(&mut mode) => return,
                        changed = receiver.changed() => match changed {
                            Ok(()) => trigger.fire(),
                            Err(_) => return,
                        },
                    }
                }
            })
        }));
        self
    }

    /// The clock of the status timestamps; the system clock when not set.
    pub fn clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }

    /// Set up the file watcher and start the loop (and the feeds) on the current tokio
    /// runtime. The returned [`Daemon`] owns everything started.
    pub fn start(self) -> Result<Daemon, DaemonError> {
        self.config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| DaemonError::NoRuntime)?;
        let shared = Arc::new(Shared {
            notify: Notify::new(),
            triggers: AtomicU64::new(0),
            watcher_errors: AtomicU64::new(0),
        });
        let trigger = DaemonTrigger {
            shared: Arc::clone(&shared),
        };
        let watcher = if self.config.watch_files && !self.paths.is_empty() {
            Some(start_watcher(
                &self.paths,
                self.filter.clone(),
                trigger.clone(),
            )?)
        } else {
            None
        };
        let (mode_tx, mode_rx) = watch::channel(Mode::Running);
        let (status_tx, _) = watch::channel(DaemonStatus::default());
        let status = Arc::new(status_tx);
        let (reconcile_tx, reconcile_rx) = mpsc::channel(8);
        let feeds = self
            .feeds
            .into_iter()
            .map(|feed| runtime.spawn(feed(trigger.clone(), mode_rx.clone())))
            .collect();
        let event_loop = EventLoop {
            work: self.work,
            config: self.config,
            scanner: Scanner {
                paths: Arc::new(self.paths),
                filter: self.filter,
            },
            clock: self.clock,
            shared,
            status: Arc::clone(&status),
            mode: mode_rx,
            reconcile_requests: reconcile_rx,
        };
        let task = runtime.spawn(event_loop.run());
        Ok(Daemon {
            trigger,
            status,
            mode: mode_tx,
            reconcile: reconcile_tx,
            task: Some(task),
            feeds,
            _watcher: watcher,
        })
    }
}

/// A running daemon: the handle that owns its loop, its feeds and its file watcher.
///
/// [`Daemon::stop`] ends it gracefully; dropping it ends it at once.
pub struct Daemon {
    trigger: DaemonTrigger,
    status: Arc<watch::Sender<DaemonStatus>>,
    mode: watch::Sender<Mode>,
    reconcile: mpsc::Sender<oneshot::Sender<bool>>,
    task: Option<JoinHandle<()>>,
    feeds: Vec<JoinHandle<()>>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Debug for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Daemon")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Start assembling a daemon that runs `work`.
    pub fn builder(work: Arc<dyn DaemonWork>) -> DaemonBuilder {
        DaemonBuilder {
            work,
            config: DaemonConfig::default(),
            paths: Vec::new(),
            filter: None,
            feeds: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A handle that makes a run due; feed it from any source of changes.
    pub fn trigger(&self) -> DaemonTrigger {
        self.trigger.clone()
    }

    /// A snapshot of the state and totals.
    pub fn status(&self) -> DaemonStatus {
        let mut status = self.status.borrow().clone();
        status.triggers = self.trigger.shared.triggers.load(Ordering::SeqCst);
        status
    }

    /// Watch the status change (published at every trigger, scan and run).
    pub fn subscribe(&self) -> watch::Receiver<DaemonStatus> {
        self.status.subscribe()
    }

    /// Run a reconciler pass now, in the loop (so never during a run); answers whether it
    /// found a change, which makes a run due.
    pub async fn reconcile_now(&self) -> Result<bool, DaemonError> {
        let (reply, answer) = oneshot::channel();
        self.reconcile
            .send(reply)
            .await
            .map_err(|_| DaemonError::Stopped)?;
        answer.await.map_err(|_| DaemonError::Stopped)
    }

    /// Stop: a run in progress finishes, no new one starts, the feeds and the watcher end.
    /// Returns the final status.
    pub async fn stop(mut self) -> DaemonStatus {
        self.mode.send_replace(Mode::Finish);
        if let Some(task) = self.task.take() {
            // A panicking run ended the loop; the status already says what it last knew.
            let _ = task.await;
        }
        for feed in self.feeds.drain(..) {
            let _ = feed.await;
        }
        self.status()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Abort);
        if let Some(task) = self.task.take() {
            task.abort();
        }
        for feed in self.feeds.drain(..) {
            feed.abort();
        }
    }
}

/// Completes once the daemon is asked to end, in either way.
async fn ended(mode: &mut watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m != Mode::Running).await;
}

/// Completes once the daemon is asked to end at once.
async fn aborted(mode: &mut watch::Receiver<Mode>) {
    let _ = mode.wait_for(|m| *m == Mode::Abort).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn start_watcher(
    paths: &[WatchedPath],
    filter: Option<PathFilter>,
    trigger: DaemonTrigger,
) -> Result<notify::RecommendedWatcher, DaemonError> {
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) => {
            // Reads (our own included) are not changes.
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let counts = event.need_rescan()
                || event.paths.is_empty()
                || filter
                    .as_ref()
                    .is_none_or(|f| event.paths.iter().any(|p| f(p)));
            if counts {
                trigger.fire();
            }
        }
        Err(e) => {
            trigger.shared.watcher_errors.fetch_add(1, Ordering::SeqCst);
            warn!(error = %e, "file watcher error; running to be safe");
            trigger.fire();
        }
    };
    let first = paths.first().map(|p| p.path.clone()).unwrap_or_default();
    let mut watcher =
        notify::recommended_watcher(handler).map_err(|source| DaemonError::Watch {
            path: first,
            source,
        })?;
    for p in paths {
        let mode = if p.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        watcher
            .watch(&p.path, mode)
            .map_err(|source| DaemonError::Watch {
                path: p.path.clone(),
                source,
            })?;
    }
    Ok(watcher)
}

/// What the reconciler compares for each file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    size: u64,
    modified_ns: Option<u64>,
    sha256: Option<Vec<u8>>,
}

type Snapshot = BTreeMap<PathBuf, Stamp>;

#[derive(Clone)]
struct Scanner {
    paths: Arc<Vec<WatchedPath>>,
    filter: Option<PathFilter>,
}

impl Scanner {
    /// Stamps of every file under the watched paths. Blocking. Files that vanish or cannot be
    /// read while listing are left out: their absence is itself a change.
    fn scan(&self, hashes: bool) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for p in self.paths.iter() {
            match fs::metadata(&p.path) {
                Ok(meta) if meta.is_dir() => {
                    self.scan_dir(&p.path, p.recursive, hashes, &mut snapshot)
                }
                // A file watched by name counts whatever the filter says.
                Ok(meta) => stamp(&p.path, &meta, hashes, &mut snapshot),
                Err(e) => debug!(path = %p.path.display(), error = %e, "watched path unreadable"),
            }
        }
        snapshot
    }

    fn scan_dir(&self, dir: &Path, recursive: bool, hashes: bool, snapshot: &mut Snapshot) {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                debug!(dir = %dir.display(), error = %e, "directory unreadable");
                return;
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if recursive {
                    self.scan_dir(&path, true, hashes, snapshot);
                }
            } else if self.filter.as_ref().is_none_or(|f| f(&path)) {
                stamp(&path, &meta, hashes, snapshot);
            }
        }
    }
}

fn stamp(path: &Path, meta: &fs::Metadata, hashes: bool, snapshot: &mut Snapshot) {
    let sha256 = if hashes {
        match hash_file(path) {
            Ok(hash) => Some(hash),
            Err(_) => return,
        }
    } else {
        None
    };
    snapshot.insert(
        path.to_path_buf(),
        Stamp {
            size: meta.len(),
            modified_ns: modified_ns(meta),
            sha256,
        },
    );
}

fn hash_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(hash.finalize().to_vec()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hash.update(buf.get(..n).unwrap_or_default());
    }
}

/// How a run ended, for the loop.
enum RunEnd {
    Succeeded,
    Failed,
    Aborted,
}

/// The single writer: owns the schedule and runs the work, one run at a time.
struct EventLoop {
    work: Arc<dyn DaemonWork>,
    config: DaemonConfig,
    scanner: Scanner,
    clock: DynClock,
    shared: Arc<Shared>,
    status: Arc<watch::Sender<DaemonStatus>>,
    mode: watch::Receiver<Mode>,
    reconcile_requests: mpsc::Receiver<oneshot::Sender<bool>>,
}

/// When the next run is due, and when the burst that made it due began.
#[derive(Default)]
struct Schedule {
    due: Option<Instant>,
    burst_start: Option<Instant>,
}

impl Schedule {
    fn triggered(&mut self, config: &DaemonConfig) {
        let now = Instant::now();
        let start = *self.burst_start.get_or_insert(now);
        self.due = Some((now + config.debounce).min(start + config.max_delay));
    }
}

impl EventLoop {
    fn publish(&self, change: impl FnOnce(&mut DaemonStatus)) {
        let triggers = self.shared.triggers.load(Ordering::SeqCst);
        let watcher_errors = self.shared.watcher_errors.load(Ordering::SeqCst);
        self.status.send_modify(|s| {
            s.triggers = triggers;
            s.watcher_errors = watcher_errors;
            change(s);
        });
    }

    async fn scan(&self) -> Snapshot {
        if self.scanner.paths.is_empty() {
            return Snapshot::new();
        }
        let scanner = self.scanner.clone();
        let hashes = self.config.reconcile_hashes;
        let snapshot = tokio::task::spawn_blocking(move || scanner.scan(hashes))
            .await
            .unwrap_or_default();
        self.publish(|s| s.scans += 1);
        snapshot
    }

    /// Rescan and compare with `baseline`; a difference makes a run due (unless one already is).
    async fn reconcile(&self, baseline: &mut Snapshot, schedule: &mut Schedule) -> bool {
        let snapshot = self.scan().await;
        let changed = snapshot != *baseline;
        let missed = changed && schedule.due.is_none();
        if changed {
            *baseline = snapshot;
        }
        if missed {
            info!("reconciler found changes no event announced; running");
            schedule.triggered(&self.config);
        }
        self.publish(|s| {
            s.reconcile_passes += 1;
            s.reconcile_changes += u64::from(missed);
            s.pending = schedule.due.is_some();
        });
        changed
    }

    async fn run(mut self) {
        let mut baseline = self.scan().await;
        let mut schedule = Schedule::default();
        if self.config.run_on_start {
            schedule.due = Some(Instant::now());
        }
        let interval = self.config.reconcile_interval;
        let reconciling = interval.is_some() && !self.scanner.paths.is_empty();
        let mut next_reconcile = interval.filter(|_| reconciling).map(|i| Instant::now() + i);
        let mut retry_delay = self.config.retry_delay;
        self.publish(|s| s.pending = schedule.due.is_some());
        loop {
            tokio::select! {
                // A due run goes first: a flood of triggers must not keep postponing it past
                // `max_delay` (a trigger left waiting makes the next run due after this one).
                biased;
                () = ended(&mut self.mode) => break,
                () = sleep_until(schedule.due) => {
                    schedule = Schedule::default();
                    // The baseline is what this run can see: later changes are news.
                    baseline = self.scan().await;
                    match self.run_once().await {
                        RunEnd::Aborted => break,
                        RunEnd::Succeeded => retry_delay = self.config.retry_delay,
                        RunEnd::Failed => {
                            schedule.due = Some(Instant::now() + retry_delay);
                            retry_delay = (retry_delay * 2).min(self.config.max_retry_delay);
                        }
                    }
                    self.publish(|s| s.pending = schedule.due.is_some());
                }
                () = self.shared.notify.notified() => {
                    schedule.triggered(&self.config);
                    self.publish(|s| s.pending = true);
                }
                Some(reply) = self.reconcile_requests.recv() => {
                    let changed = self.reconcile(&mut baseline, &mut schedule).await;
                    let _ = reply.send(changed);
                }
                () = sleep_until(next_reconcile) => {
                    next_reconcile = interval.map(|i| Instant::now() + i);
                    self.reconcile(&mut baseline, &mut schedule).await;
                }
            }
        }
        self.publish(|s| {
            s.stopped = true;
            s.running = false;
            s.pending = false;
        });
    }

    async fn run_once(&mut self) -> RunEnd {
        let started = self.clock.now_ms();
        self.publish(|s| {
            s.running = true;
            s.pending = false;
            s.last_run_started_ms = Some(started);
        });
        let work = Arc::clone(&self.work);
        let result = tokio::select! {
            biased;
            () = aborted(&mut self.mode) => None,
            result = work.run() => Some(result),
        };
        let now = self.clock.now_ms();
        match result {
            None => RunEnd::Aborted,
            Some(Ok(report)) => {
                debug!(
                    records = report.records,
                    errors = report.errors,
                    "daemon run finished"
                );
                self.publish(|s| {
                    s.running = false;
                    s.runs += 1;
                    s.consecutive_failures = 0;
                    s.records += report.records;
                    s.errors += report.errors;
                    s.last_sync_ms = Some(now);
                    s.last_report = Some(report);
                });
                RunEnd::Succeeded
            }
            Some(Err(e)) => {
                warn!(error = %e, "daemon run failed; retrying later");
                let message = e.to_string();
                self.publish(|s| {
                    s.running = false;
                    s.runs += 1;
                    s.failures += 1;
                    s.consecutive_failures += 1;
                    s.last_error = Some(message);
                    s.last_error_ms = Some(now);
                });
                RunEnd::Failed
            }
        }
    }
}
