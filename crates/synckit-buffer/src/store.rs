//! `BufferedStore`: a typed buffer in front of a sink. Writers push under a short lock; a
//! background flusher owned by the store takes batches out and writes them without the lock,
//! retrying in order; an optional spool thread makes every acknowledged write durable first.

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::{BufferConfig, FullPolicy, RetryPolicy};
use crate::error::{BufferError, SinkError};
use crate::observe::Metrics;
use crate::sink::{Batch, DynSink};
use crate::spool::{self, Codec, SpoolFile};

/// Measures an item in bytes for the byte capacity. Must be cheap, and the same every time it
/// is asked about the same item.
pub type Weigher<T> = fn(&T) -> usize;

/// What to do with a batch the sink refused for good (a permanent error, or a retryable one
/// past [`RetryPolicy::max_attempts`]).
#[non_exhaustive]
pub enum DeadLetter<T> {
    /// Keep it in the store's failed list: still counted against capacity, so a sink that
    /// refuses everything fills the buffer and applies the [`FullPolicy`] instead of losing
    /// data. [`BufferedStore::take_failed`] empties the list; `close` reports what is in it.
    /// The default.
    Keep,
    /// Write it to another sink (one attempt); if that fails too, keep it.
    Sink(DynSink<T>),
    /// Hand it, with the error, to a function (called on the flusher task: keep it short).
    Callback(Arc<dyn Fn(FailedBatch<T>) + Send + Sync>),
}

impl<T> fmt::Debug for DeadLetter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetter::Keep => f.write_str("Keep"),
            DeadLetter::Sink(sink) => f.debug_tuple("Sink").field(sink).finish(),
            DeadLetter::Callback(_) => f.write_str("Callback(..)"),
        }
    }
}

/// A batch the sink refused for good, with the sink's error.
#[derive(Debug)]
pub struct FailedBatch<T> {
    /// The batch, as it was last written.
    pub batch: Batch<T>,
    /// Why the sink refused it.
    pub error: SinkError,
}

/// A snapshot of a store's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BufferStats {
    /// The store's name.
    pub name: String,
    /// Items accepted by writes.
    pub queued: u64,
    /// Items the sink accepted.
    pub flushed: u64,
    /// Sink writes that succeeded.
    pub batches: u64,
    /// Sink writes that failed (each attempt counts).
    pub failed_attempts: u64,
    /// Items dropped at capacity by [`FullPolicy::DropNewest`].
    pub dropped: u64,
    /// Items refused at capacity by [`FullPolicy::Reject`].
    pub rejected: u64,
    /// Items refused for good by the sink and handed to the dead letter (kept ones included).
    pub dead_lettered: u64,
    /// Items held now: buffered, being written, or kept after a permanent failure.
    pub held_items: usize,
    /// Bytes held now, as the weigher measures them.
    pub held_bytes: usize,
    /// Items in the failed list now (see [`DeadLetter::Keep`]).
    pub failed_items: usize,
    /// Whether the store was closed.
    pub closed: bool,
}

/// What `close` could not deliver, and the final counters.
#[derive(Debug)]
pub struct CloseReport<T> {
    /// The counters when the store finished closing.
    pub stats: BufferStats,
    /// Items never written: still buffered (or being written) when the deadline passed, or not
    /// yet durable when the spool failed. A batch whose write was cut off by the deadline is
    /// here too, although the sink may have stored it. With a spool these items also stay in
    /// the spool and are replayed when the store is opened again: write them elsewhere only if
    /// the spool will not be reopened.
    pub unflushed: Vec<T>,
    /// Batches the sink refused for good that were kept (see [`DeadLetter::Keep`]).
    pub failed: Vec<FailedBatch<T>>,
    /// Why `unflushed` is not empty: [`BufferError::Unflushed`] with the last sink error, or
    /// the spool's error.
    pub error: Option<BufferError>,
}

impl<T> CloseReport<T> {
    /// Whether everything was delivered.
    pub fn is_clean(&self) -> bool {
        self.unflushed.is_empty() && self.failed.is_empty() && self.error.is_none()
    }
}

/// The type-erased form of a [`CloseReport`], as [`crate::BufferEngine::stop`] returns it.
#[derive(Debug)]
pub struct StoreReport {
    /// The counters when the store finished closing.
    pub stats: BufferStats,
    /// Number of items never written (see [`CloseReport::unflushed`]).
    pub unflushed: usize,
    /// Number of items refused for good and kept (see [`CloseReport::failed`]).
    pub failed: usize,
    /// Every error: the close error, then one [`BufferError::Refused`] per kept batch.
    pub errors: Vec<BufferError>,
    items: Box<dyn Any + Send>,
}

impl StoreReport {
    /// The store's name.
    pub fn name(&self) -> &str {
        &self.stats.name
    }

    /// Whether everything was delivered.
    pub fn is_clean(&self) -> bool {
        self.unflushed == 0 && self.failed == 0 && self.errors.is_empty()
    }

    /// The unflushed items and the refused batches, if the store's item type is `T` (once).
    pub fn take_items<T: Send + 'static>(&mut self) -> Option<(Vec<T>, Vec<Batch<T>>)> {
        let items = std::mem::replace(&mut self.items, Box::new(()));
        match items.downcast::<(Vec<T>, Vec<Batch<T>>)>() {
            Ok(items) => Some(*items),
            Err(other) => {
                self.items = other;
                None
            }
        }
    }
}

impl<T: Send + 'static> From<CloseReport<T>> for StoreReport {
    fn from(report: CloseReport<T>) -> Self {
        let name = report.stats.name.clone();
        let mut errors: Vec<BufferError> = report.error.into_iter().collect();
        let mut batches = Vec::with_capacity(report.failed.len());
        let mut failed = 0;
        for f in report.failed {
            failed += f.batch.len();
            errors.push(BufferError::Refused {
                store: name.clone(),
                first_seq: f.batch.first_seq(),
                items: f.batch.len(),
                source: f.error,
            });
            batches.push(f.batch);
        }
        StoreReport {
            stats: report.stats,
            unflushed: report.unflushed.len(),
            failed,
            errors,
            items: Box::new((report.unflushed, batches)),
        }
    }
}

fn default_weight<T>(_: &T) -> usize {
    size_of::<T>()
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can leave the state half-changed runs under these locks, so a panic
    // elsewhere (the poison) does not make the state unusable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Assembles a [`BufferedStore`]: `BufferedStore::builder(name, sink)`, then settings, then
/// [`BufferBuilder::start`] (or `build` and start later, or register with an engine).
pub struct BufferBuilder<T: Send + Sync + 'static> {
    name: String,
    sink: DynSink<T>,
    config: BufferConfig,
    weigh: Weigher<T>,
    dead_letter: DeadLetter<T>,
    spool: Option<SpoolOptions<T>>,
    limit: Option<Arc<Semaphore>>,
}

struct SpoolOptions<T> {
    dir: PathBuf,
    compact_bytes: u64,
    codec: Codec<T>,
}

/// Spool files are compacted once they grow past this size (and are mostly flushed).
const DEFAULT_COMPACT_BYTES: u64 = 64 << 20;

impl<T: Send + Sync + 'static> fmt::Debug for BufferBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferBuilder")
            .field("name", &self.name)
            .field("sink", &self.sink)
            .field("config", &self.config)
            .field("dead_letter", &self.dead_letter)
            .field("spool", &self.spool.as_ref().map(|s| &s.dir))
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static> BufferBuilder<T> {
    /// The store's name, used in errors, logs and the `store` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replace every setting at once.
    pub fn config(mut self, config: BufferConfig) -> Self {
        self.config = config;
        self
    }

    /// Flush as soon as `items` are buffered; also the largest batch.
    pub fn max_batch(mut self, items: usize) -> Self {
        self.config.max_batch = items;
        self
    }

    /// Flush when `interval` has passed since the first item of the pending batch.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// Hold at most `items` items and `bytes` bytes at once.
    pub fn capacity(mut self, items: usize, bytes: usize) -> Self {
        self.config.capacity_items = items;
        self.config.capacity_bytes = bytes;
        self
    }

    /// What a write does at capacity.
    pub fn when_full(mut self, policy: FullPolicy) -> Self {
        self.config.when_full = policy;
        self
    }

    /// Backoff between attempts of a failed flush.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// How long `close` may spend on the final flush.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.config.close_timeout = timeout;
        self
    }

    /// Measure items with `weigh` instead of `size_of::<T>()` (which ignores heap data: give
    /// items with strings or vectors a weigher, or the byte capacity means little).
    pub fn weigh(mut self, weigh: Weigher<T>) -> Self {
        self.weigh = weigh;
        self
    }

    /// Where batches the sink refuses for good go (default [`DeadLetter::Keep`]).
    pub fn dead_letter(mut self, dead_letter: DeadLetter<T>) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    pub(crate) fn flush_limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Build the store without starting its flusher: writes are accepted (up to capacity) and
    /// flushed once [`BufferedStore::start`] runs (or at `close`). With a spool, the spool is
    /// opened, recovered and its unflushed items queued again here.
    pub fn build(self) -> Result<BufferedStore<T>, BufferError> {
        self.config.validate()?;
        if self.name.is_empty() {
            return Err(BufferError::Config("a buffered store needs a name".into()));
        }
        let mut state = State {
            buf: VecDeque::new(),
            front_seq: 1,
            next_seq: 1,
            used_items: 0,
            used_bytes: 0,
            first_at: None,
            flush_to: 0,
            closed: false,
            close_deadline: None,
            failed: Vec::new(),
            failed_items: 0,
            failed_bytes: 0,
            spool: SpoolQueue {
                records: Vec::new(),
                last: 0,
                marker: None,
                durable: u64::MAX,
                idle: false,
                stop: false,
                broken: None,
            },
        };
        let mut spool_file = None;
        let mut spool = None;
        if let Some(options) = self.spool {
            let opened = SpoolFile::open(&options.dir, options.compact_bytes)
                .map_err(|(message, e)| BufferError::spool(&self.name, message, e))?;
            // Buffer positions stand for sequence numbers, so a gap would misnumber items.
            let first = opened
                .items
                .first()
                .map_or(opened.last_seq + 1, |(s, _)| *s);
            if opened
                .items
                .iter()
                .enumerate()
                .any(|(i, (seq, _))| *seq != first + i as u64)
            {
                return Err(BufferError::Spool {
                    store: self.name.clone(),
                    message: "the spool's unflushed items are not numbered consecutively".into(),
                    source: None,
                });
            }
            // Replayed items are queued again even past capacity: they were acknowledged.
            for (seq, payload) in &opened.items {
                let item = (options.codec.decode)(payload).map_err(|e| BufferError::Spool {
                    store: self.name.clone(),
                    message: format!("item seq {seq} in the spool cannot be decoded: {e}"),
                    source: None,
                })?;
                state.used_bytes += (self.weigh)(&item);
                state.used_items += 1;
                state.buf.push_back(item);
            }
            state.front_seq = first;
            state.next_seq = opened.last_seq + 1;
            state.spool.durable = opened.last_seq;
            state.spool.last = opened.last_seq;
            if !state.buf.is_empty() {
                state.first_at = Some(Instant::now());
                debug!(store = %self.name, items = state.buf.len(), from = first, "replaying the spool");
            }
            spool = Some(SpoolShared {
                codec: options.codec,
                wake: Condvar::new(),
                progress: watch::channel(Progress {
                    durable: opened.last_seq,
                    marker: opened.flushed,
                    broken: false,
                    stopped: false,
                })
                .0,
            });
            spool_file = Some(opened.file);
        }
        let settled = state.front_seq - 1;
        let core = Arc::new(Core {
            metrics: Metrics::new(&self.name),
            name: self.name,
            config: self.config,
            weigh: self.weigh,
            sink: self.sink,
            dead_letter: self.dead_letter,
            limit: self.limit,
            state: Mutex::new(state),
            space: Notify::new(),
            wake: Notify::new(),
            settled: watch::channel(settled).0,
            spool,
            counters: Counters::default(),
            close_started: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            finished: CancellationToken::new(),
            closed_done: CancellationToken::new(),
            task: Mutex::new(Task::Idle),
        });
        core.metrics
            .buffered
            .set(lock(&core.state).used_items as f64);
        if let Some(file) = spool_file {
            let thread_core = core.clone();
            std::thread::Builder::new()
                .name(format!("spool-{}", core.name))
                .spawn(move || spool_thread(thread_core, file))
                .map_err(|e| BufferError::spool(&core.name, "starting the spool thread", e))?;
        }
        Ok(BufferedStore {
            handle: Arc::new(Handle { core }),
        })
    }

    /// Build the store and start its flusher on the current tokio runtime.
    pub fn start(self) -> Result<BufferedStore<T>, BufferError> {
        let store = self.build()?;
        store.start()?;
        Ok(store)
    }
}

impl<T> BufferBuilder<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    /// Spool every item to an append-only file in `dir` before its write returns.
    ///
    /// What holds: an acknowledged write survives a crash (the file is synced first), and after
    /// a restart only items not yet flushed are queued again, with the sequence numbers they
    /// had. The flushed-up-to marker is synced after each successful sink write, so a crash
    /// between the sink's write and that sync delivers that batch again: a sink is handed it
    /// with the same sequence numbers, and one that skips items it already has (see
    /// [`Batch::items_after`], or an [`crate::EventStoreSink`], idempotent by event id)
    /// receives every item exactly once. Items refused for good and kept in memory
    /// ([`DeadLetter::Keep`]) are past the marker and are not replayed: configure a dead-letter
    /// sink to keep them durably.
    ///
    /// One store at a time may use a directory: a lock file guards it, and `build` waits up to
    /// 2 s for it before failing. Items are stored as JSON.
    pub fn durable(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool = Some(SpoolOptions {
            dir: dir.into(),
            compact_bytes: DEFAULT_COMPACT_BYTES,
            codec: Codec::json(),
        });
        self
    }

    /// Compact the spool file once it grows past `bytes` (default 64 MiB). Needs `durable`.
    pub fn spool_compact_bytes(mut self, bytes: u64) -> Self {
        if let Some(spool) = &mut self.spool {
            spool.compact_bytes = bytes;
        }
        self
    }
}

/// A typed buffer in front of a [`crate::Sink`]: batches by size and time, bounds memory, and
/// retries failed flushes in order. Cheap to clone; clones share one store. Dropping the last
/// clone without `close` stops the flusher and loses what was buffered (a durable store keeps
/// it in its spool).
pub struct BufferedStore<T: Send + Sync + 'static> {
    handle: Arc<Handle<T>>,
}

impl<T: Send + Sync + 'static> Clone for BufferedStore<T> {
    fn clone(&self) -> Self {
        BufferedStore {
            handle: self.handle.clone(),
        }
    }
}

impl<T: Send + Sync + 'static> fmt::Debug for BufferedStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferedStore")
            .field("name", &self.handle.core.name)
            .field("sink", &self.handle.core.sink)
            .finish_non_exhaustive()
    }
}

/// Owned by the user's clones; dropping the last one stops the store's task and thread.
struct Handle<T: Send + Sync + 'static> {
    core: Arc<Core<T>>,
}

impl<T: Send + Sync + 'static> Drop for Handle<T> {
    fn drop(&mut self) {
        let core = &self.core;
        core.shutdown.cancel();
        let held = {
            let mut st = lock(&core.state);
            st.spool.stop = true;
            if st.closed { 0 } else { st.used_items }
        };
        if let Some(spool) = &core.spool {
            spool.wake.notify_one();
        }
        if held > 0 {
            warn!(store = %core.name, items = held, "buffered store dropped without close");
        }
    }
}

struct Core<T: Send + Sync + 'static> {
    name: String,
    config: BufferConfig,
    weigh: Weigher<T>,
    sink: DynSink<T>,
    dead_letter: DeadLetter<T>,
    limit: Option<Arc<Semaphore>>,
    state: Mutex<State<T>>,
    /// Room was freed: blocked writers look again.
    space: Notify,
    /// Something for the flusher: a full batch, a first item, durability, a close.
    wake: Notify,
    /// Items settled (written or dead-lettered) up to this sequence number.
    settled: watch::Sender<u64>,
    spool: Option<SpoolShared<T>>,
    counters: Counters,
    metrics: Metrics,
    /// Cancelled when close begins (its deadline is then in the state).
    close_started: CancellationToken,
    /// Cancelled when the last handle is dropped: stop at once.
    shutdown: CancellationToken,
    /// Cancelled when the flusher has returned.
    finished: CancellationToken,
    /// Cancelled when the first close has finished.
    closed_done: CancellationToken,
    task: Mutex<Task<T>>,
}

enum Task<T> {
    Idle,
    Running(JoinHandle<Leftovers<T>>),
    Closing,
}

struct SpoolShared<T> {
    codec: Codec<T>,
    /// Wakes the spool thread (which waits on the state's lock).
    wake: Condvar,
    progress: watch::Sender<Progress>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    durable: u64,
    marker: u64,
    broken: bool,
    stopped: bool,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    flushed: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    dead_lettered: AtomicU64,
}

struct State<T> {
    /// Items not yet taken by the flusher, numbered `front_seq..next_seq`.
    buf: VecDeque<T>,
    front_seq: u64,
    next_seq: u64,
    /// Held: buffered, being written, and kept in `failed`.
    used_items: usize,
    used_bytes: usize,
    /// When the oldest item of `buf` may have arrived (the time trigger's start).
    first_at: Option<Instant>,
    /// `flush()` asked for everything up to here.
    flush_to: u64,
    closed: bool,
    close_deadline: Option<Instant>,
    failed: Vec<FailedBatch<T>>,
    failed_items: usize,
    failed_bytes: usize,
    spool: SpoolQueue,
}

/// Work for the spool thread, under the state's lock so that sequence numbers, buffer order
/// and file order agree.
struct SpoolQueue {
    /// Framed item records not yet written.
    records: Vec<u8>,
    /// The sequence number of the last framed record.
    last: u64,
    /// A flushed-up-to marker to write.
    marker: Option<u64>,
    /// Items durable up to here (`u64::MAX` without a spool, so everything is takeable).
    durable: u64,
    /// The thread waits for work.
    idle: bool,
    /// The thread should finish its work and exit.
    stop: bool,
    /// The spool failed; nothing more is acknowledged.
    broken: Option<String>,
}

impl<T> State<T> {
    /// Items at the front of `buf` that may be written (durable, with a spool).
    fn takeable(&self) -> usize {
        let durable = self
            .spool
            .durable
            .saturating_add(1)
            .saturating_sub(self.front_seq);
        usize::try_from(durable).map_or(self.buf.len(), |d| d.min(self.buf.len()))
    }
}

/// What the flusher leaves when it stops.
struct Leftovers<T> {
    unflushed: Vec<T>,
    error: Option<BufferError>,
}

/// Payloads of the items of one write, encoded before taking the lock.
struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

impl<T: Send + Sync + 'static> BufferedStore<T> {
    /// Start assembling a store that flushes into `sink`.
    pub fn builder(name: impl Into<String>, sink: DynSink<T>) -> BufferBuilder<T> {
        BufferBuilder {
            name: name.into(),
            sink,
            config: BufferConfig::default(),
            weigh: default_weight::<T>,
            dead_letter: DeadLetter::Keep,
            spool: None,
            limit: None,
        }
    }

    fn core(&self) -> &Arc<Core<T>> {
        &self.handle.core
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.core().name
    }

    /// The store's settings.
    pub fn config(&self) -> &BufferConfig {
        &self.core().config
    }

    /// Start the background flusher on the current tokio runtime. Idempotent while running;
    /// an error after close.
    pub fn start(&self) -> Result<(), BufferError> {
        let core = self.core();
        let mut task = lock(&core.task);
        match *task {
            Task::Idle => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    BufferError::Config("a buffered store needs a running tokio runtime".into())
                })?;
                *task = Task::Running(runtime.spawn(run_flusher(core.clone())));
                Ok(())
            }
            Task::Running(_) => Ok(()),
            Task::Closing => Err(BufferError::closed(&core.name)),
        }
    }

    /// Buffer one item. Returns once the item is accepted (durable first, with a spool); at
    /// capacity, does what the [`FullPolicy`] says. Never waits for the sink below capacity.
    pub async fn write(&self, item: T) -> Result<(), BufferError> {
        let core = self.core();
        if core.spool.is_none() {
            let weight = (core.weigh)(&item);
            let mut st = lock(&core.state);
            if !st.closed
                && st.used_items < core.config.capacity_items
                && weight <= core.config.capacity_bytes.saturating_sub(st.used_bytes)
            {
                let wake = core.accept(&mut st, std::iter::once(item), 1, weight, None, 0);
                drop(st);
                core.accepted(1, wake);
                return Ok(());
            }
        }
        self.write_many(vec![item]).await.map(|_| ())
    }

    /// Buffer several items, in order; returns how many were accepted (fewer than given only
    /// under [`FullPolicy::DropNewest`], which counts the rest as dropped). Under
    /// [`FullPolicy::Reject`] the write is taken whole or not at all. Under
    /// [`FullPolicy::Block`] items are taken as room appears; if the store closes meanwhile,
    /// the error comes after some of them may have been accepted (and will be flushed).
    pub async fn write_many(&self, items: Vec<T>) -> Result<usize, BufferError> {
        self.core().push(items).await
    }

    /// Write everything accepted before this call to the sink (or the dead letter), and wait
    /// for it. Waits for `start` when the flusher is not running.
    pub async fn flush(&self) -> Result<(), BufferError> {
        let core = self.core();
        let target = {
            let mut st = lock(&core.state);
            let target = st.next_seq - 1;
            st.flush_to = st.flush_to.max(target);
            target
        };
        core.wake.notify_one();
        let mut settled = core.settled.subscribe();
        tokio::select! {
            _ = settled.wait_for(|s| *s >= target) => Ok(()),
            _ = core.finished.cancelled() => {
                if *core.settled.borrow() >= target {
                    Ok(())
                } else {
                    Err(BufferError::closed(&core.name))
                }
            }
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BufferStats {
        self.core().stats()
    }

    /// Take the batches kept after a permanent failure (see [`DeadLetter::Keep`]), freeing
    /// their room.
    pub fn take_failed(&self) -> Vec<FailedBatch<T>> {
        let core = self.core();
        let failed = {
            let mut st = lock(&core.state);
            st.used_items -= st.failed_items;
            st.used_bytes -= st.failed_bytes;
            st.failed_items = 0;
            st.failed_bytes = 0;
            std::mem::take(&mut st.failed)
        };
        core.space.notify_waiters();
        failed
    }

    /// Close with the configured [`BufferConfig::close_timeout`].
    pub async fn close(&self) -> CloseReport<T> {
        self.close_within(self.core().config.close_timeout).await
    }

    /// Stop accepting writes (later ones fail with [`BufferError::Closed`], blocked ones too),
    /// flush what is held within `timeout` from now, stop the flusher and the spool, and report
    /// what could not be delivered. Only the first call gets the items; later calls wait for it
    /// and report the counters.
    pub async fn close_within(&self, timeout: Duration) -> CloseReport<T> {
        let core = self.core();
        {
            let mut st = lock(&core.state);
            if !st.closed {
                st.closed = true;
                st.close_deadline = Some(Instant::now() + timeout);
            }
        }
        // After the deadline is in the state: whoever wakes on this reads it.
        core.close_started.cancel();
        core.space.notify_waiters();
        core.wake.notify_one();
        let task = std::mem::replace(&mut *lock(&core.task), Task::Closing);
        let leftovers = match task {
            Task::Running(handle) => match handle.await {
                Ok(leftovers) => leftovers,
                Err(e) => Leftovers {
                    unflushed: Vec::new(),
                    error: Some(BufferError::Sink {
                        store: core.name.clone(),
                        source: SinkError::internal(format!("the flusher task failed: {e}")),
                    }),
                },
            },
            Task::Idle => run_flusher(core.clone()).await,
            Task::Closing => {
                core.closed_done.cancelled().await;
                return CloseReport {
                    stats: core.stats(),
                    unflushed: Vec::new(),
                    failed: Vec::new(),
                    error: None,
                };
            }
        };
        core.stop_spool().await;
        let failed = {
            let mut st = lock(&core.state);
            st.used_items = st.used_items.saturating_sub(st.failed_items);
            st.used_bytes = st.used_bytes.saturating_sub(st.failed_bytes);
            st.failed_items = 0;
            st.failed_bytes = 0;
            std::mem::take(&mut st.failed)
        };
        core.metrics.buffered.set(0.0);
        core.closed_done.cancel();
        let report = CloseReport {
            stats: core.stats(),
            unflushed: leftovers.unflushed,
            failed,
            error: leftovers.error,
        };
        if !report.is_clean() {
            warn!(
                store = %core.name,
                unflushed = report.unflushed.len(),
                failed = report.failed.len(),
                "buffered store closed with undelivered items"
            );
        }
        report
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.core().state).closed
    }
}

impl<T: Send + Sync + 'static> Core<T> {
    fn stats(&self) -> BufferStats {
        let (held_items, held_bytes, failed_items, closed) = {
            let st = lock(&self.state);
            (st.used_items, st.used_bytes, st.failed_items, st.closed)
        };
        let c = &self.counters;
        BufferStats {
            name: self.name.clone(),
            queued: c.queued.load(Ordering::Relaxed),
            flushed: c.flushed.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            failed_attempts: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            held_items,
            held_bytes,
            failed_items,
            closed,
        }
    }

    /// Put `count` items weighing `bytes` at the end of the buffer (and their records in the
    /// spool queue); returns whether the flusher should be woken.
    fn accept(
        &self,
        st: &mut State<T>,
        items: impl Iterator<Item = T>,
        count: usize,
        bytes: usize,
        encoded: Option<&Encoded>,
        encoded_from: usize,
    ) -> bool {
        let first = st.next_seq;
        let before = st.buf.len();
        st.buf.extend(items);
        st.next_seq += count as u64;
        st.used_items += count;
        st.used_bytes += bytes;
        if before == 0 {
            st.first_at = Some(Instant::now());
        }
        self.metrics.buffered.set(st.used_items as f64);
        if let (Some(encoded), Some(spool)) = (encoded, &self.spool) {
            for i in 0..count {
                spool::frame_item(
                    &mut st.spool.records,
                    first + i as u64,
                    encoded.payload(encoded_from + i),
                );
            }
            st.spool.last = st.next_seq - 1;
            if st.spool.idle {
                spool.wake.notify_one();
            }
            // The spool thread wakes the flusher once the items are durable.
            return false;
        }
        let max = self.config.max_batch;
        before == 0 || (before < max && st.buf.len() >= max)
    }

    /// Count accepted items (outside the lock) and wake the flusher if asked.
    fn accepted(&self, count: usize, wake: bool) {
        self.counters
            .queued
            .fetch_add(count as u64, Ordering::Relaxed);
        self.metrics.queued.increment(count as u64);
        if wake {
            self.wake.notify_one();
        }
    }

    fn encode(&self, items: &[T]) -> Result<Option<Encoded>, BufferError> {
        let Some(spool) = &self.spool else {
            return Ok(None);
        };
        let mut encoded = Encoded {
            bytes: Vec::new(),
            ends: Vec::with_capacity(items.len()),
        };
        for item in items {
            let start = encoded.bytes.len();
            (spool.codec.encode)(item, &mut encoded.bytes).map_err(|e| BufferError::Spool {
                store: self.name.clone(),
                message: format!("an item cannot be encoded: {e}"),
                source: None,
            })?;
            let len = encoded.bytes.len() - start;
            if !spool::payload_fits(len) {
                return Err(BufferError::TooLarge {
                    store: self.name.clone(),
                    what: "encoded item bytes",
                    size: len,
                    capacity: 1 << 30,
                });
            }
            encoded.ends.push(encoded.bytes.len());
        }
        Ok(Some(encoded))
    }

    async fn push(&self, items: Vec<T>) -> Result<usize, BufferError> {
        let n = items.len();
        if n == 0 {
            return Ok(0);
        }
        let cfg = &self.config;
        let (mut rest_bytes, largest) = items.iter().fold((0usize, 0usize), |(sum, max), item| {
            let w = (self.weigh)(item);
            (sum.saturating_add(w), max.max(w))
        });
        if largest > cfg.capacity_bytes {
            return Err(BufferError::TooLarge {
                store: self.name.clone(),
                what: "item bytes",
                size: largest,
                capacity: cfg.capacity_bytes,
            });
        }
        if cfg.when_full == FullPolicy::Reject && n > cfg.capacity_items {
            return Err(BufferError::TooLarge {
                store: self.name.clone(),
                what: "write items",
                size: n,
                capacity: cfg.capacity_items,
            });
        }
        if cfg.when_full == FullPolicy::Reject && rest_bytes > cfg.capacity_bytes {
            return Err(BufferError::TooLarge {
                store: self.name.clone(),
                what: "write bytes",
                size: rest_bytes,
                capacity: cfg.capacity_bytes,
            });
        }
        let encoded = self.encode(&items)?;
        let mut rest = items.into_iter();
        let mut accepted = 0;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut wake = false;
            let mut taken = 0;
            let mut dropped = 0;
            {
                let mut st = lock(&self.state);
                if st.closed {
                    return Err(BufferError::closed(&self.name));
                }
                if let Some(reason) = &st.spool.broken {
                    return Err(BufferError::Spool {
                        store: self.name.clone(),
                        message: format!("the spool failed earlier: {reason}"),
                        source: None,
                    });
                }
                let free_items = cfg.capacity_items.saturating_sub(st.used_items);
                let free_bytes = cfg.capacity_bytes.saturating_sub(st.used_bytes);
                let remaining = n - accepted;
                let (count, bytes) = if remaining <= free_items && rest_bytes <= free_bytes {
                    (remaining, rest_bytes)
                } else if cfg.when_full == FullPolicy::Reject {
                    let (items, bytes) = (st.used_items, st.used_bytes);
                    drop(st);
                    self.counters
                        .rejected
                        .fetch_add(remaining as u64, Ordering::Relaxed);
                    self.metrics.rejected.increment(remaining as u64);
                    return Err(BufferError::Full {
                        store: self.name.clone(),
                        items,
                        bytes,
                    });
                } else {
                    fitting_prefix(rest.as_slice(), free_items, free_bytes, self.weigh)
                };
                if count > 0 {
                    wake = self.accept(
                        &mut st,
                        rest.by_ref().take(count),
                        count,
                        bytes,
                        encoded.as_ref(),
                        accepted,
                    );
                    accepted += count;
                    taken = count;
                    rest_bytes -= bytes;
                }
                if accepted < n && cfg.when_full == FullPolicy::DropNewest {
                    dropped = n - accepted;
                }
            }
            if taken > 0 {
                self.accepted(taken, wake);
            }
            if dropped > 0 {
                self.counters
                    .dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                self.metrics.dropped.increment(dropped as u64);
                break;
            }
            if accepted == n {
                break;
            }
            // Backpressure: wait until a flush (or `take_failed`, or close) frees room.
            notified.await;
        }
        if let Some(spool) = &self.spool
            && accepted > 0
        {
            let last = lock(&self.state).spool.last;
            let mut progress = spool.progress.subscribe();
            let reached = progress
                .wait_for(|p| p.durable >= last || p.broken || p.stopped)
                .await
                .map(|p| p.durable >= last)
                .unwrap_or(false);
            if !reached {
                return Err(BufferError::Spool {
                    store: self.name.clone(),
                    message: "the spool failed before the write was durable".into(),
                    source: None,
                });
            }
        }
        Ok(accepted)
    }

    /// Run `fut` until it finishes, the close deadline passes, or the store is dropped. A close
    /// that begins meanwhile sets the deadline.
    async fn bounded<F: Future>(&self, fut: F) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let deadline = lock(&self.state).close_deadline;
            tokio::select! {
                out = &mut fut => return Some(out),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return None;
                }
                _ = self.close_started.cancelled(), if deadline.is_none() => {}
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// Wait until the flusher has a batch to write and move it into `out`; `None` when the
    /// flusher should stop.
    async fn next_batch(&self, out: &mut Vec<T>) -> Option<u64> {
        let max = self.config.max_batch;
        loop {
            let mut wait = None;
            {
                let mut st = lock(&self.state);
                let now = Instant::now();
                if st.close_deadline.is_some_and(|d| now >= d) {
                    return None;
                }
                let takeable = st.takeable();
                if takeable > 0 {
                    let interval_due = st
                        .first_at
                        .is_some_and(|t| now >= t + self.config.flush_interval);
                    if takeable >= max || st.closed || st.flush_to >= st.front_seq || interval_due {
                        let count = takeable.min(max);
                        out.extend(st.buf.drain(..count));
                        let first = st.front_seq;
                        st.front_seq += count as u64;
                        // The items left are no older than the first was: keep its time so
                        // none of them waits longer than the interval.
                        if st.buf.is_empty() {
                            st.first_at = None;
                        }
                        return Some(first);
                    }
                    wait = st.first_at.map(|t| t + self.config.flush_interval);
                } else if st.closed && (st.buf.is_empty() || st.spool.broken.is_some()) {
                    return None;
                }
                if let Some(deadline) = st.close_deadline {
                    wait = Some(wait.map_or(deadline, |w: Instant| w.min(deadline)));
                }
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = sleep_until(wait.unwrap_or_else(Instant::now)), if wait.is_some() => {}
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    /// One sink write, within the engine's flush limit and the close deadline. `Err(None)`:
    /// the deadline passed (or the store was dropped).
    async fn write_once(&self, batch: &Batch<T>) -> Result<(), Option<SinkError>> {
        let _permit = match &self.limit {
            Some(limit) => match self.bounded(limit.acquire()).await {
                None => return Err(None),
                Some(permit) => permit.ok(),
            },
            None => None,
        };
        let started = Instant::now();
        let result = match self.config.write_timeout {
            Some(limit) => self
                .bounded(tokio::time::timeout(limit, self.sink.write(batch)))
                .await
                .map(|r| {
                    r.unwrap_or_else(|_| {
                        Err(SinkError::new(
                            synckit_types::ErrorKind::Timeout,
                            format!("sink write took longer than {limit:?}"),
                        ))
                    })
                }),
            None => self.bounded(self.sink.write(batch)).await,
        };
        self.metrics.write(batch.len(), started.elapsed());
        match result {
            None => Err(None),
            Some(r) => r.map_err(Some),
        }
    }

    /// Write `batch` until it succeeds, is refused for good (then dead-lettered), or the close
    /// deadline passes (then handed back with the last error).
    async fn deliver(
        &self,
        batch: Batch<T>,
        bytes: usize,
    ) -> Result<Option<Vec<T>>, (Batch<T>, Option<SinkError>)> {
        let retry: &RetryPolicy = &self.config.retry;
        let mut failures = 0u32;
        let mut last_error = None;
        loop {
            let error = match self.write_once(&batch).await {
                Ok(()) => {
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .flushed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.metrics.flushed.increment(batch.len() as u64);
                    self.release(batch.len(), bytes, batch.last_seq()).await;
                    return Ok(Some(batch.into_items()));
                }
                Err(None) => return Err((batch, last_error)),
                Err(Some(error)) => error,
            };
            failures += 1;
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
            self.metrics.failed.increment(1);
            if !error.is_retryable() || retry.exhausted(failures) {
                warn!(store = %self.name, first_seq = batch.first_seq(), items = batch.len(),
                    %error, "sink refused a batch for good");
                self.dead_letter(batch, bytes, error).await;
                return Ok(None);
            }
            let wait = retry.backoff(failures);
            debug!(store = %self.name, first_seq = batch.first_seq(), failures, ?wait, %error,
                "sink write failed; retrying");
            last_error = Some(error);
            if self.bounded(tokio::time::sleep(wait)).await.is_none() {
                return Err((batch, last_error));
            }
        }
    }

    async fn dead_letter(&self, batch: Batch<T>, bytes: usize, error: SinkError) {
        let (count, last) = (batch.len(), batch.last_seq());
        self.counters
            .dead_lettered
            .fetch_add(count as u64, Ordering::Relaxed);
        self.metrics.dead_lettered.increment(count as u64);
        let error = match &self.dead_letter {
            DeadLetter::Keep => error,
            DeadLetter::Sink(sink) => {
                let write = sink.write(&batch);
                let outcome = match self.config.write_timeout {
                    Some(limit) => tokio::time::timeout(limit, write)
                        .await
                        .unwrap_or_else(|_| Err(SinkError::unavailable("dead-letter timeout"))),
                    None => write.await,
                };
                match outcome {
                    Ok(()) => {
                        self.release(count, bytes, last).await;
                        return;
                    }
                    Err(dead_letter_error) => {
                        error!(store = %self.name, %dead_letter_error,
                            "dead-letter sink failed; keeping the batch");
                        error
                    }
                }
            }
            DeadLetter::Callback(callback) => {
                callback(FailedBatch { batch, error });
                self.release(count, bytes, last).await;
                return;
            }
        };
        {
            let mut st = lock(&self.state);
            st.failed_items += count;
            st.failed_bytes += bytes;
            st.failed.push(FailedBatch { batch, error });
        }
        self.settle(last).await;
    }

    /// The sink (or a dead letter) took a batch: free its room and settle it.
    async fn release(&self, count: usize, bytes: usize, last: u64) {
        let held = {
            let mut st = lock(&self.state);
            st.used_items -= count;
            st.used_bytes -= bytes;
            st.used_items
        };
        self.metrics.buffered.set(held as f64);
        self.space.notify_waiters();
        self.settle(last).await;
    }

    /// Mark everything up to `last` settled; with a spool, record it durably before the next
    /// batch, so a restart replays at most this batch.
    async fn settle(&self, last: u64) {
        self.settled.send_replace(last);
        let Some(spool) = &self.spool else {
            return;
        };
        {
            let mut st = lock(&self.state);
            if st.spool.broken.is_some() {
                return;
            }
            st.spool.marker = Some(last);
            if st.spool.idle {
                spool.wake.notify_one();
            }
        }
        let mut progress = spool.progress.subscribe();
        let _ = progress
            .wait_for(|p| p.marker >= last || p.broken || p.stopped)
            .await;
    }

    /// Ask the spool thread to finish its work and exit, and wait for it.
    async fn stop_spool(&self) {
        let Some(spool) = &self.spool else {
            return;
        };
        lock(&self.state).spool.stop = true;
        spool.wake.notify_one();
        let mut progress = spool.progress.subscribe();
        let _ = progress.wait_for(|p| p.stopped).await;
    }
}

/// How many of `items` fit in `free_items` and `free_bytes`, and their weight.
fn fitting_prefix<T>(
    items: &[T],
    free_items: usize,
    free_bytes: usize,
    weigh: Weigher<T>,
) -> (usize, usize) {
    let mut bytes = 0usize;
    let mut count = 0;
    for item in items.iter().take(free_items) {
        let w = weigh(item);
        if bytes + w > free_bytes {
            break;
        }
        bytes += w;
        count += 1;
    }
    (count, bytes)
}

/// The flusher: take batches in order and deliver each before the next, until closed and
/// drained, the close deadline passes, or the store is dropped.
async fn run_flusher<T: Send + Sync + 'static>(core: Arc<Core<T>>) -> Leftovers<T> {
    let weigh = core.weigh;
    let mut items: Vec<T> = Vec::new();
    let mut gave_up = None;
    while let Some(first_seq) = core.next_batch(&mut items).await {
        let batch = Batch::new(first_seq, std::mem::take(&mut items));
        let bytes = batch.items().iter().map(weigh).sum();
        match core.deliver(batch, bytes).await {
            Ok(reusable) => {
                if let Some(mut reusable) = reusable {
                    reusable.clear();
                    items = reusable;
                }
            }
            Err(stopped) => {
                gave_up = Some(stopped);
                break;
            }
        }
    }
    let mut unflushed = Vec::new();
    let mut last_error = None;
    if let Some((batch, error)) = gave_up {
        unflushed = batch.into_items();
        last_error = error;
    }
    let (rest, spool_error) = {
        let mut st = lock(&core.state);
        let rest: Vec<T> = st.buf.drain(..).collect();
        st.front_seq = st.next_seq;
        (rest, st.spool.broken.clone())
    };
    unflushed.extend(rest);
    core.finished.cancel();
    let error = if unflushed.is_empty() {
        None
    } else if let Some(reason) = spool_error {
        Some(BufferError::Spool {
            store: core.name.clone(),
            message: format!("the spool failed; items not yet durable were not flushed: {reason}"),
            source: None,
        })
    } else {
        Some(BufferError::Unflushed {
            store: core.name.clone(),
            items: unflushed.len(),
            last_error,
        })
    };
    Leftovers { unflushed, error }
}

/// The spool thread: write queued records and markers, sync, then publish how far is durable.
/// Group commit falls out of it: whatever writers queued while a sync ran goes in the next one.
fn spool_thread<T: Send + Sync + 'static>(core: Arc<Core<T>>, file: SpoolFile) {
    let Some(spool) = &core.spool else {
        return;
    };
    /// Publishes `stopped` however the thread ends.
    struct Stopped<'a>(&'a watch::Sender<Progress>);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.send_modify(|p| p.stopped = true);
        }
    }
    let _stopped = Stopped(&spool.progress);
    // The file (and its lock) is closed before `stopped` is published, so a store reopened
    // right after `close` finds the directory free.
    spool_loop(&core, spool, file);
}

fn spool_loop<T: Send + Sync + 'static>(
    core: &Core<T>,
    spool: &SpoolShared<T>,
    mut file: SpoolFile,
) {
    let mut records = Vec::new();
    loop {
        let (last, marker) = {
            let mut st = lock(&core.state);
            loop {
                let q = &st.spool;
                if q.broken.is_none() && (!q.records.is_empty() || q.marker.is_some()) {
                    break;
                }
                if q.stop {
                    return;
                }
                st.spool.idle = true;
                st = spool.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
                st.spool.idle = false;
            }
            std::mem::swap(&mut records, &mut st.spool.records);
            (st.spool.last, st.spool.marker.take())
        };
        let result = file.commit(&records, last, marker);
        records.clear();
        match result {
            Ok(()) => {
                lock(&core.state).spool.durable = last;
                spool.progress.send_modify(|p| {
                    p.durable = last;
                    if let Some(marker) = marker {
                        p.marker = p.marker.max(marker);
                    }
                });
            }
            Err(e) => {
                error!(store = %core.name, error = %e, "the spool failed; writes are refused");
                lock(&core.state).spool.broken = Some(e.to_string());
                spool.progress.send_modify(|p| p.broken = true);
            }
        }
        core.wake.notify_one();
    }
}

/// A store seen without its item type, as the engine holds it.
pub trait BufferHandle: Send + Sync + fmt::Debug + 'static {
    /// The store's name.
    fn name(&self) -> &str;

    /// A snapshot of the counters.
    fn stats(&self) -> BufferStats;

    /// Start the background flusher (idempotent while running).
    fn start(&self) -> Result<(), BufferError>;

    /// Close and report, type-erased (see [`BufferedStore::close`]).
    fn close_report(&self) -> futures::future::BoxFuture<'_, StoreReport>;
}

impl<T: Send + Sync + 'static> BufferHandle for BufferedStore<T> {
    fn name(&self) -> &str {
        BufferedStore::name(self)
    }

    fn stats(&self) -> BufferStats {
        BufferedStore::stats(self)
    }

    fn start(&self) -> Result<(), BufferError> {
        BufferedStore::start(self)
    }

    fn close_report(&self) -> futures::future::BoxFuture<'_, StoreReport> {
        Box::pin(async move { StoreReport::from(self.close().await) })
    }
}
