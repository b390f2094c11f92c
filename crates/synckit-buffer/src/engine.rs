//! `BufferEngine`: runs many buffered stores (and dirty caches) of different item types, with
//! one limit on concurrent flushes across them, started and stopped together.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;

use crate::cache::{DirtyCache, DirtyCacheBuilder};
use crate::error::BufferError;
use crate::store::{BufferBuilder, BufferHandle, BufferStats, BufferedStore, StoreReport};

/// Runs buffered stores of any item types under one limit on concurrent sink writes.
///
/// Stores registered before [`BufferEngine::start`] accept writes at once and flush from
/// `start` on; stores registered after it start right away. Each keeps its own batch size and
/// interval. A store waiting between retries holds no flush slot, so a failing sink never
/// delays another store's flushes (a sink that hangs holds its slot until the store's
/// `write_timeout`). Cheap to clone; clones share one engine.
#[derive(Clone)]
pub struct BufferEngine {
    inner: Arc<Inner>,
}

struct Inner {
    limit: Arc<Semaphore>,
    max_concurrent_flushes: usize,
    state: Mutex<EngineState>,
}

#[derive(Default)]
struct EngineState {
    stores: Vec<Arc<dyn BufferHandle>>,
    started: bool,
    stopped: bool,
}

impl fmt::Debug for BufferEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        let names: Vec<&str> = state.stores.iter().map(|s| s.name()).collect();
        f.debug_struct("BufferEngine")
            .field("max_concurrent_flushes", &self.inner.max_concurrent_flushes)
            .field("stores", &names)
            .field("started", &state.started)
            .field("stopped", &state.stopped)
            .finish()
    }
}

/// What [`BufferEngine::stop`] found: one report per store, in registration order.
#[derive(Debug)]
pub struct EngineReport {
    /// The stores' close reports.
    pub stores: Vec<StoreReport>,
}

impl EngineReport {
    /// Whether every store delivered everything.
    pub fn is_clean(&self) -> bool {
        self.stores.iter().all(StoreReport::is_clean)
    }

    /// Every error of every store, with the store's name.
    pub fn errors(&self) -> impl Iterator<Item = (&str, &BufferError)> {
        self.stores
            .iter()
            .flat_map(|s| s.errors.iter().map(move |e| (s.name(), e)))
    }

    /// The report of the store named `name`.
    pub fn store(&self, name: &str) -> Option<&StoreReport> {
        self.stores.iter().find(|s| s.name() == name)
    }
}

impl BufferEngine {
    /// An engine that lets at most `max_concurrent_flushes` sink writes run at once.
    pub fn new(max_concurrent_flushes: usize) -> Result<Self, BufferError> {
        if max_concurrent_flushes == 0 {
            return Err(BufferError::Config(
                "max_concurrent_flushes must be at least 1".into(),
            ));
        }
        Ok(BufferEngine {
            inner: Arc::new(Inner {
                limit: Arc::new(Semaphore::new(max_concurrent_flushes)),
                max_concurrent_flushes,
                state: Mutex::new(EngineState::default()),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, EngineState> {
        // Only pushes and flag changes happen under this lock; a poison leaves it consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Build a store from `builder` under this engine's flush limit and manage it; it starts
    /// now if the engine runs. Names must be unique within the engine.
    pub fn register<T: Send + Sync + 'static>(
        &self,
        builder: BufferBuilder<T>,
    ) -> Result<BufferedStore<T>, BufferError> {
        let mut state = self.state();
        Self::check_name(&state, builder.name())?;
        let store = builder.flush_limit(self.inner.limit.clone()).build()?;
        if state.started {
            store.start()?;
        }
        state.stores.push(Arc::new(store.clone()));
        Ok(store)
    }

    /// Build a dirty cache from `builder` under this engine's flush limit and manage it.
    pub fn register_cache<K, V>(
        &self,
        builder: DirtyCacheBuilder<K, V>,
    ) -> Result<DirtyCache<K, V>, BufferError>
    where
        K: Eq + std::hash::Hash + Send + Sync + 'static,
        V: Send + Sync + 'static,
    {
        let mut state = self.state();
        Self::check_name(&state, builder.name())?;
        let cache = builder.flush_limit(self.inner.limit.clone()).build()?;
        if state.started {
            cache.start()?;
        }
        state.stores.push(Arc::new(cache.clone()));
        Ok(cache)
    }

    fn check_name(state: &EngineState, name: &str) -> Result<(), BufferError> {
        if state.stopped {
            return Err(BufferError::closed("engine"));
        }
        if state.stores.iter().any(|s| s.name() == name) {
            return Err(BufferError::Config(format!(
                "a store named {name} is already registered"
            )));
        }
        Ok(())
    }

    /// Start every registered store's flusher (and those registered later). Needs a running
    /// tokio runtime. Idempotent; an error after `stop`.
    pub fn start(&self) -> Result<(), BufferError> {
        let mut state = self.state();
        if state.stopped {
            return Err(BufferError::closed("engine"));
        }
        for store in &state.stores {
            store.start()?;
        }
        state.started = true;
        Ok(())
    }

    /// Close every store at once (each flushes under its own close deadline) and return every
    /// store's report, errors included. Later registrations fail; a second call returns the
    /// counters only.
    pub async fn stop(&self) -> EngineReport {
        let stores = {
            let mut state = self.state();
            state.stopped = true;
            state.stores.clone()
        };
        let reports = futures::future::join_all(stores.iter().map(|s| s.close_report())).await;
        EngineReport { stores: reports }
    }

    /// A snapshot of every store's counters.
    pub fn stats(&self) -> Vec<BufferStats> {
        self.state().stores.iter().map(|s| s.stats()).collect()
    }

    /// Every managed store, type-erased.
    pub fn stores(&self) -> Vec<Arc<dyn BufferHandle>> {
        self.state().stores.clone()
    }
}
