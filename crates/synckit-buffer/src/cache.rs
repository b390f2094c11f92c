//! `DirtyCache`: periodic persistence of keyed in-memory state. `set` marks a key dirty; a
//! flush writes the dirty entries to a `Sink<(K, V)>`; a newer value always wins over an older
//! one that failed to flush.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::RetryPolicy;
use crate::error::{BufferError, SinkError};
use crate::observe::Metrics;
use crate::sink::{Batch, DynSink};
use crate::store::{BufferHandle, BufferStats, CloseReport, StoreReport};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only map updates happen under these locks; a poison leaves the map usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Assembles a [`DirtyCache`].
pub struct DirtyCacheBuilder<K, V> {
    name: String,
    sink: DynSink<(K, V)>,
    flush_interval: Duration,
    max_batch: usize,
    write_timeout: Option<Duration>,
    close_timeout: Duration,
    retry: RetryPolicy,
    limit: Option<Arc<Semaphore>>,
}

impl<K, V> fmt::Debug for DirtyCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirtyCacheBuilder")
            .field("name", &self.name)
            .field("flush_interval", &self.flush_interval)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<K, V> DirtyCacheBuilder<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// The cache's name, used in errors, logs and the `store` metric label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Flush the dirty entries this often (default 1 s).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Write at most this many entries per sink write (default 1000).
    pub fn max_batch(mut self, entries: usize) -> Self {
        self.max_batch = entries;
        self
    }

    /// How long one sink write may take (default 30 s; `None`: no limit).
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How long `close` may spend on the final flush (default 10 s).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Backoff between attempts of the final flush in `close`.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub(crate) fn flush_limit(mut self, limit: Arc<Semaphore>) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Build the cache without starting its periodic flush.
    pub fn build(self) -> Result<DirtyCache<K, V>, BufferError> {
        if self.name.is_empty() {
            return Err(BufferError::Config("a dirty cache needs a name".into()));
        }
        if self.flush_interval.is_zero() || self.max_batch == 0 {
            return Err(BufferError::Config(
                "a dirty cache needs a flush_interval above zero and max_batch of at least 1"
                    .into(),
            ));
        }
        let core = Arc::new(Core {
            metrics: Metrics::new(&self.name),
            name: self.name,
            sink: self.sink,
            flush_interval: self.flush_interval,
            max_batch: self.max_batch,
            write_timeout: self.write_timeout,
            close_timeout: self.close_timeout,
            retry: self.retry,
            limit: self.limit,
            state: Mutex::new(State {
                dirty: HashMap::new(),
                next_seq: 1,
                closed: false,
                close_deadline: None,
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            close_started: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            task: Mutex::new(Task::Idle),
        });
        Ok(DirtyCache {
            handle: Arc::new(Handle { core }),
        })
    }

    /// Build the cache and start its periodic flush on the current tokio runtime.
    pub fn start(self) -> Result<DirtyCache<K, V>, BufferError> {
        let cache = self.build()?;
        cache.start()?;
        Ok(cache)
    }
}

/// Keyed state persisted periodically: [`DirtyCache::set`] marks a key dirty with its newest
/// value, and every flush interval the dirty entries are written to the sink.
///
/// A flush takes the dirty entries out and writes them without holding the lock `set` uses.
/// If the write fails, only the keys not set again since are put back, so a value set during a
/// failed flush wins over the older one being retried. A sink that keeps failing keeps the
/// entries dirty (retried at each interval) until `close` reports them. Memory grows with the
/// number of distinct dirty keys. Cheap to clone; clones share one cache.
pub struct DirtyCache<K, V> {
    handle: Arc<Handle<K, V>>,
}

impl<K, V> Clone for DirtyCache<K, V> {
    fn clone(&self) -> Self {
        DirtyCache {
            handle: self.handle.clone(),
        }
    }
}

impl<K, V> fmt::Debug for DirtyCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirtyCache")
            .field("name", &self.handle.core.name)
            .finish_non_exhaustive()
    }
}

struct Handle<K, V> {
    core: Arc<Core<K, V>>,
}

impl<K, V> Drop for Handle<K, V> {
    fn drop(&mut self) {
        self.core.shutdown.cancel();
    }
}

struct Core<K, V> {
    name: String,
    sink: DynSink<(K, V)>,
    flush_interval: Duration,
    max_batch: usize,
    write_timeout: Option<Duration>,
    close_timeout: Duration,
    retry: RetryPolicy,
    limit: Option<Arc<Semaphore>>,
    state: Mutex<State<K, V>>,
    /// One flush at a time, so a retry never overtakes a newer write of the same key.
    flush_lock: tokio::sync::Mutex<()>,
    counters: Counters,
    metrics: Metrics,
    close_started: CancellationToken,
    shutdown: CancellationToken,
    task: Mutex<Task>,
}

enum Task {
    Idle,
    Running(JoinHandle<()>),
    Closed,
}

struct State<K, V> {
    dirty: HashMap<K, V>,
    next_seq: u64,
    closed: bool,
    close_deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct Counters {
    sets: AtomicU64,
    flushed: AtomicU64,
    batches: AtomicU64,
    failed: AtomicU64,
}

impl<K, V> DirtyCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Start assembling a cache that flushes into `sink`.
    pub fn builder(name: impl Into<String>, sink: DynSink<(K, V)>) -> DirtyCacheBuilder<K, V> {
        DirtyCacheBuilder {
            name: name.into(),
            sink,
            flush_interval: Duration::from_secs(1),
            max_batch: 1_000,
            write_timeout: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            limit: None,
        }
    }

    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.handle.core.name
    }

    /// Start the periodic flush on the current tokio runtime. Idempotent while running.
    pub fn start(&self) -> Result<(), BufferError> {
        let core = &self.handle.core;
        let mut task = lock(&core.task);
        match *task {
            Task::Idle => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    BufferError::Config("a dirty cache needs a running tokio runtime".into())
                })?;
                *task = Task::Running(runtime.spawn(run_periodic(core.clone())));
                Ok(())
            }
            Task::Running(_) => Ok(()),
            Task::Closed => Err(BufferError::closed(&core.name)),
        }
    }

    /// Set `key` to `value` and mark it dirty (replacing a dirty value not yet flushed).
    pub fn set(&self, key: K, value: V) -> Result<(), BufferError> {
        let core = &self.handle.core;
        let held = {
            let mut st = lock(&core.state);
            if st.closed {
                return Err(BufferError::closed(&core.name));
            }
            st.dirty.insert(key, value);
            st.dirty.len()
        };
        core.counters.sets.fetch_add(1, Ordering::Relaxed);
        core.metrics.queued.increment(1);
        core.metrics.buffered.set(held as f64);
        Ok(())
    }

    /// Number of dirty keys.
    pub fn dirty_len(&self) -> usize {
        lock(&self.handle.core.state).dirty.len()
    }

    /// Write the dirty entries now; returns how many were written. On failure the entries not
    /// set again meanwhile stay dirty.
    pub async fn flush(&self) -> Result<usize, BufferError> {
        let core = &self.handle.core;
        let _one = core.flush_lock.lock().await;
        core.flush_once().await
    }

    /// A snapshot of the counters (`queued` counts `set` calls, `held_items` dirty keys).
    pub fn stats(&self) -> BufferStats {
        self.handle.core.stats()
    }

    /// Close with the configured close timeout.
    pub async fn close(&self) -> CloseReport<(K, V)> {
        self.close_within(self.handle.core.close_timeout).await
    }

    /// Refuse later `set`s, stop the periodic flush, flush what is dirty within `timeout` from
    /// now (retrying retryable failures with backoff), and report what stayed dirty.
    pub async fn close_within(&self, timeout: Duration) -> CloseReport<(K, V)> {
        let core = &self.handle.core;
        let deadline = {
            let mut st = lock(&core.state);
            st.closed = true;
            *st.close_deadline
                .get_or_insert_with(|| Instant::now() + timeout)
        };
        core.close_started.cancel();
        let task = std::mem::replace(&mut *lock(&core.task), Task::Closed);
        if let Task::Running(handle) = task {
            let _ = handle.await;
        }
        let _one = core.flush_lock.lock().await;
        let mut failures = 0;
        let mut last_error = None;
        while !lock(&core.state).dirty.is_empty() && Instant::now() < deadline {
            match core.flush_once().await {
                Ok(_) => {}
                Err(BufferError::Sink { source, .. }) if source.is_retryable() => {
                    failures += 1;
                    last_error = Some(source);
                    sleep_until(deadline.min(Instant::now() + core.retry.backoff(failures))).await;
                }
                Err(BufferError::Sink { source, .. }) => {
                    last_error = Some(source);
                    break;
                }
                Err(_) => break,
            }
        }
        let unflushed: Vec<(K, V)> = lock(&core.state).dirty.drain().collect();
        core.metrics.buffered.set(0.0);
        let error = (!unflushed.is_empty()).then(|| BufferError::Unflushed {
            store: core.name.clone(),
            items: unflushed.len(),
            last_error,
        });
        CloseReport {
            stats: core.stats(),
            unflushed,
            failed: Vec::new(),
            error,
        }
    }
}

impl<K, V> Core<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn stats(&self) -> BufferStats {
        let (held, closed) = {
            let st = lock(&self.state);
            (st.dirty.len(), st.closed)
        };
        let c = &self.counters;
        BufferStats {
            name: self.name.clone(),
            queued: c.sets.load(Ordering::Relaxed),
            flushed: c.flushed.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            failed_attempts: c.failed.load(Ordering::Relaxed),
            held_items: held,
            closed,
            ..BufferStats::default()
        }
    }

    /// Run `fut` until it finishes, the close deadline passes, or the cache is dropped.
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

    async fn write(&self, batch: &Batch<(K, V)>) -> Result<(), SinkError> {
        let cut_off = || SinkError::new(synckit_types::ErrorKind::Timeout, "close deadline");
        let _permit = match &self.limit {
            Some(limit) => self
                .bounded(limit.acquire())
                .await
                .ok_or_else(cut_off)?
                .ok(),
            None => None,
        };
        let started = Instant::now();
        let write = self.sink.write(batch);
        let result = match self.write_timeout {
            Some(limit) => match self.bounded(tokio::time::timeout(limit, write)).await {
                Some(Ok(result)) => result,
                Some(Err(_)) => Err(SinkError::new(
                    synckit_types::ErrorKind::Timeout,
                    format!("sink write took longer than {limit:?}"),
                )),
                None => Err(cut_off()),
            },
            None => self.bounded(write).await.unwrap_or_else(|| Err(cut_off())),
        };
        self.metrics.write(batch.len(), started.elapsed());
        result
    }

    /// Write every dirty entry; the caller holds `flush_lock`.
    async fn flush_once(&self) -> Result<usize, BufferError> {
        let entries: Vec<(K, V)> = lock(&self.state).dirty.drain().collect();
        let mut rest = entries.into_iter();
        let mut written = 0;
        loop {
            let chunk: Vec<(K, V)> = rest.by_ref().take(self.max_batch).collect();
            if chunk.is_empty() {
                return Ok(written);
            }
            let first_seq = {
                let mut st = lock(&self.state);
                let first = st.next_seq;
                st.next_seq += chunk.len() as u64;
                first
            };
            let batch = Batch::new(first_seq, chunk);
            match self.write(&batch).await {
                Ok(()) => {
                    written += batch.len();
                    self.counters.batches.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .flushed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    self.metrics.flushed.increment(batch.len() as u64);
                }
                Err(error) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    self.metrics.failed.increment(1);
                    let held = {
                        let mut st = lock(&self.state);
                        // A key set since the take holds a newer value: it wins.
                        for (key, value) in batch.into_items().into_iter().chain(rest) {
                            st.dirty.entry(key).or_insert(value);
                        }
                        st.dirty.len()
                    };
                    self.metrics.buffered.set(held as f64);
                    return Err(BufferError::Sink {
                        store: self.name.clone(),
                        source: error,
                    });
                }
            }
        }
    }
}

async fn run_periodic<K, V>(core: Arc<Core<K, V>>)
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut ticks =
        tokio::time::interval_at(Instant::now() + core.flush_interval, core.flush_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = core.close_started.cancelled() => return,
            _ = core.shutdown.cancelled() => return,
        }
        let _one = core.flush_lock.lock().await;
        if let Err(error) = core.flush_once().await {
            warn!(cache = %core.name, %error, "dirty-cache flush failed; retrying next interval");
        }
    }
}

impl<K, V> BufferHandle for DirtyCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn name(&self) -> &str {
        DirtyCache::name(self)
    }

    fn stats(&self) -> BufferStats {
        DirtyCache::stats(self)
    }

    fn start(&self) -> Result<(), BufferError> {
        DirtyCache::start(self)
    }

    fn close_report(&self) -> futures::future::BoxFuture<'_, StoreReport> {
        Box::pin(async move { StoreReport::from(self.close().await) })
    }
}
