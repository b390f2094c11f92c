//! `SledStore`: opening and checking the database, and the `EventStore` and `NodeStore`
//! implementations that run sled's blocking calls off the async executor.

use std::collections::HashMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use synckit_types::{
    AggregateHead, AggregateId, AppendReport, AuditQuery, AuditRecord, CommitSummary, Error,
    ErrorKind, Event, EventStore, NodeState, NodeStore, NodeWrite, Page, PendingEvent, ReadRequest,
    Result, ReviewEntry, Seq, StoredEvent, TenantId,
};
use tokio::sync::{OwnedRwLockReadGuard, OwnedSemaphorePermit, RwLock as AsyncRwLock, Semaphore};

use crate::codec::{
    FORMAT, FORMAT_KEY, HUB_TREE, META_TREE, NODE_TREE, SCHEMA_KEY, SCHEMA_VERSION,
};
use crate::config::SledConfig;
use crate::error::{corrupted, sled_error};
use crate::hub::{self, TenantKeys};
use crate::marker::{self, MARKER_FILE, Marker};
use crate::node::{self, NodeMeta};

/// A durable hub and node store in one sled database directory.
///
/// As an [`EventStore`] it keeps one log per tenant; as a [`NodeStore`] it keeps one node's
/// state. Both roles live in the same database and are closed together by `close` from either
/// trait. Share it as `Arc<SledStore>` (or as `DynEventStore` / `DynNodeStore`). sled allows one
/// open database per directory: a second `open` of the same path, from this process or another,
/// fails with a `Storage` error until the first store is closed.
///
/// Appends to one tenant are serialized, and each is one atomic sled batch that is flushed
/// (fsync) before the call returns, under the default [`crate::FlushPolicy::EveryWrite`]. Reads
/// run concurrently with each other and see only what has been acknowledged.
///
/// Where the `NodeStore` contract leaves a case open, this store refuses the whole write as the
/// memory store does: a review entry or audit record whose id already exists is a `Conflict`, as
/// is confirming a new event at a `seq` that holds another one; a confirmed event with `seq` or
/// aggregate version 0, or a malformed event, is `InvalidInput`; an audit query whose `after` id
/// is not in the trail is `NotFound`. Outbox ordinals start at 1.
pub struct SledStore {
    config: SledConfig,
    flush_each_write: bool,
    /// The open database; `None` once closed.
    handles: RwLock<Option<Handles>>,
    closed: AtomicBool,
    /// Set when a write failed after it started changing the tree: the in-memory view may no
    /// longer match the files, so writes are refused until the store is reopened.
    poisoned: Arc<Poison>,
    tenants: Mutex<HashMap<TenantId, Arc<Tenant>>>,
    node: Arc<AsyncRwLock<NodeMeta>>,
    /// Reads running on the blocking pool at once. Callers past it wait here, in async code,
    /// rather than each parking a blocking thread (a thousand concurrent pulls would otherwise
    /// start hundreds of threads, each with its stack and allocator caches).
    reads: Arc<Semaphore>,
}

/// Concurrent reads on the blocking pool: twice the cores, at least 4.
fn read_concurrency() -> usize {
    std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4))
}

/// A shared gate and a read permit, held together for the length of one read.
struct ReadGuard<T> {
    _permit: OwnedSemaphorePermit,
    gate: OwnedRwLockReadGuard<T>,
}

#[derive(Clone)]
struct Handles {
    db: sled::Db,
    hub: sled::Tree,
    node: sled::Tree,
}

/// One tenant's log state.
struct Tenant {
    keys: TenantKeys,
    /// Held exclusively by an append from before its first read of the tree until its batch
    /// is durable and the head published; shared by reads. A read therefore never sees a
    /// half-finished append, nor misses one whose caller dropped its future.
    gate: Arc<AsyncRwLock<()>>,
    /// The highest acknowledged (durable) `seq`. Readers never look past it.
    head: AtomicU64,
}

#[derive(Default)]
struct Poison {
    flag: AtomicBool,
    reason: Mutex<String>,
}

impl Poison {
    fn set(&self, reason: &Error) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_empty()
        {
            *r = reason.to_string();
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    fn check(&self) -> Result<()> {
        if !self.flag.load(Ordering::SeqCst) {
            return Ok(());
        }
        let reason = self
            .reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "unknown".to_owned());
        Err(Error::storage(format!(
            "sled store refuses writes: an earlier write failed after it started ({reason}); \
             close the store, fix the cause and open it again"
        )))
    }
}

/// How long `open` waits for a lock that a store closed in this process may still hold.
const LOCK_HANDOFF: std::time::Duration = std::time::Duration::from_secs(2);

impl SledStore {
    /// Open (or create) the store in the directory `path` with the default configuration.
    ///
    /// Blocking: call it at start-up, or through `spawn_blocking` from async code.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore> {
        SledStore::open_with(SledConfig::new(path.as_ref()))
    }

    /// Open (or create) the store described by `config`.
    ///
    /// Fails with `Config` for invalid settings or a path under a file, `Corrupted` for a
    /// store written by a newer schema version, a database that is not a synckit store, or
    /// damaged files, and `Storage` for I/O failures (permission denied, disk full, the
    /// directory locked by another process). Blocking, like [`SledStore::open`].
    pub fn open_with(config: SledConfig) -> Result<SledStore> {
        config.validate()?;
        let path = config.path.clone();
        let what = format!("opening sled store at {}", path.display());
        // A directory closed a moment ago in this process can stay locked until sled's
        // background flusher lets go of it, so a lock held here is waited out, briefly.
        let deadline = std::time::Instant::now() + LOCK_HANDOFF;
        let mut pause = std::time::Duration::from_millis(5);
        let opened = loop {
            let opened = std::panic::catch_unwind(AssertUnwindSafe(|| open_checked(&config)))
                .unwrap_or_else(|panic| {
                    Err(Error::new(
                        ErrorKind::Corrupted,
                        format!(
                            "sled panicked while recovering the files ({}); they are probably \
                             damaged",
                            panic_message(&*panic)
                        ),
                    ))
                });
            match &opened {
                Err(e)
                    if e.message().contains(crate::error::IN_USE)
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                _ => break opened,
            }
        };
        let (handles, heads, meta) = opened.map_err(|e| e.context(&what))?;
        let tenants = heads
            .into_iter()
            .map(|(tenant, head)| {
                let keys = TenantKeys::new(&tenant)?;
                Ok((tenant, Arc::new(Tenant::new(keys, head))))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        tracing::debug!(path = %path.display(), tenants = tenants.len(), "opened sled store");
        Ok(SledStore {
            flush_each_write: config.flush_each_write(),
            config,
            handles: RwLock::new(Some(handles)),
            closed: AtomicBool::new(false),
            poisoned: Arc::new(Poison::default()),
            tenants: Mutex::new(tenants),
            node: Arc::new(AsyncRwLock::new(meta)),
            reads: Arc::new(Semaphore::new(read_concurrency())),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &SledConfig {
        &self.config
    }

    /// Bytes the database takes on disk.
    pub async fn size_on_disk(&self) -> Result<u64> {
        let handles = self.handles()?;
        blocking("measuring the sled store", move || {
            handles
                .db
                .size_on_disk()
                .map_err(|e| sled_error("measuring the sled store", e))
        })
        .await
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::closed("sled store"));
        }
        Ok(())
    }

    /// Clones of the open trees, or `Closed`.
    fn handles(&self) -> Result<Handles> {
        self.check_open()?;
        let guard = self
            .handles
            .read()
            .map_err(|_| Error::internal("sled store handle lock is poisoned"))?;
        guard.clone().ok_or_else(|| Error::closed("sled store"))
    }

    fn tenants(&self) -> Result<MutexGuard<'_, HashMap<TenantId, Arc<Tenant>>>> {
        self.tenants
            .lock()
            .map_err(|_| Error::internal("sled store tenant map lock is poisoned"))
    }

    fn tenant(&self, tenant: &TenantId) -> Result<Option<Arc<Tenant>>> {
        Ok(self.tenants()?.get(tenant).cloned())
    }

    fn tenant_or_new(&self, tenant: &TenantId) -> Result<Arc<Tenant>> {
        let mut tenants = self.tenants()?;
        if let Some(t) = tenants.get(tenant) {
            return Ok(t.clone());
        }
        let t = Arc::new(Tenant::new(TenantKeys::new(tenant)?, Seq::ZERO));
        tenants.insert(tenant.clone(), t.clone());
        Ok(t)
    }

    /// A tenant's state with its gate held shared, and the open trees.
    async fn read_tenant(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(Arc<Tenant>, ReadGuard<()>, Handles)>> {
        self.check_open()?;
        let Some(t) = self.tenant(tenant)? else {
            return Ok(None);
        };
        let permit = self.read_permit().await?;
        let gate = t.gate.clone().read_owned().await;
        let handles = self.handles()?;
        Ok(Some((
            t,
            ReadGuard {
                _permit: permit,
                gate,
            },
            handles,
        )))
    }

    /// A place among the reads allowed on the blocking pool at once.
    async fn read_permit(&self) -> Result<OwnedSemaphorePermit> {
        self.reads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the sled read limiter was closed"))
    }

    /// The node meta held shared, and the open trees.
    async fn read_node(&self) -> Result<(ReadGuard<NodeMeta>, Handles)> {
        self.check_open()?;
        let permit = self.read_permit().await?;
        let gate = self.node.clone().read_owned().await;
        let handles = self.handles()?;
        Ok((
            ReadGuard {
                _permit: permit,
                gate,
            },
            handles,
        ))
    }

    /// Close both roles: refuse new calls, wait for running writes, flush, record the
    /// progress in the marker file and release the database so the directory can be opened
    /// again. Idempotent.
    async fn close_all(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        // Writers hold these exclusively while they work: taking them all waits for running
        // writes, and holding them until the handles are gone keeps waiting ones out.
        let tenants: Vec<Arc<Tenant>> = self.tenants()?.values().cloned().collect();
        let mut gates = Vec::with_capacity(tenants.len());
        for t in &tenants {
            gates.push(t.gate.clone().write_owned().await);
        }
        let node = self.node.write().await;
        let handles = self
            .handles
            .write()
            .map_err(|_| Error::internal("sled store handle lock is poisoned"))?
            .take();
        let Some(handles) = handles else {
            return Ok(());
        };
        let mut progress = Marker::empty();
        for t in &tenants {
            let head = t.head().get();
            if head > 0 {
                progress.heads.insert(t.keys.tenant().to_string(), head);
            }
        }
        let state = node.state();
        progress.node_cursor = state.cursor.get();
        progress.node_confirmed_head = state.confirmed_head.get();
        drop(node);
        drop(gates);
        let path = self.config.path.clone();
        blocking("closing the sled store", move || {
            let flushed = handles
                .db
                .flush()
                .map_err(|e| sled_error("flushing the sled store on close", e));
            drop(handles);
            flushed?;
            // Only what is durable is recorded: the log never goes below it again.
            marker::write(&path, &progress)?;
            tracing::debug!(path = %path.display(), "closed sled store");
            Ok(())
        })
        .await
    }
}

impl Tenant {
    fn new(keys: TenantKeys, head: Seq) -> Tenant {
        Tenant {
            keys,
            gate: Arc::new(AsyncRwLock::new(())),
            head: AtomicU64::new(head.get()),
        }
    }

    fn head(&self) -> Seq {
        Seq(self.head.load(Ordering::SeqCst))
    }
}

/// An opened database with the tenant heads and the node meta it holds.
type Opened = (Handles, Vec<(TenantId, Seq)>, NodeMeta);

/// Check the marker file, open sled, check its schema marker, load the tenant heads and the
/// node meta, and check them against the progress the marker file records.
fn open_checked(config: &SledConfig) -> Result<Opened> {
    let dir = config.path.as_path();
    // Before sled touches the files: a newer schema must not be opened by this build.
    let marker = marker::read(dir)?;
    if let Some(marker) = &marker {
        marker.check_version()?;
    }
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(config.cache_capacity)
        .flush_every_ms(config.flush_every_ms())
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| sled_error("opening the sled database", e))?;

    let fresh = !db
        .tree_names()
        .iter()
        .any(|name| name.as_ref() == META_TREE.as_bytes());
    if fresh {
        if marker.is_some() {
            return Err(Error::new(
                ErrorKind::Corrupted,
                format!(
                    "the directory holds a synckit store ({MARKER_FILE} exists), but sled \
                     recovered an empty database: its files are damaged or were removed; the \
                     store was not opened and wrote nothing: restore the directory from a \
                     backup, or move it away to start empty"
                ),
            ));
        }
        // A database without our marker must be empty, or it belongs to someone else.
        let foreign = db
            .tree_names()
            .iter()
            .any(|name| name.as_ref() != b"__sled__default")
            || !db.is_empty();
        if foreign {
            return Err(corrupted(
                "the directory holds a sled database that is not a synckit store \
                 (it has data but no synckit schema marker)",
            ));
        }
    }
    let meta_tree = db
        .open_tree(META_TREE)
        .map_err(|e| sled_error("opening the meta tree", e))?;
    let version = if fresh {
        let mut batch = sled::Batch::default();
        batch.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()[..]);
        batch.insert(FORMAT_KEY, FORMAT);
        meta_tree
            .apply_batch(batch)
            .map_err(|e| sled_error("writing the schema marker", e))?;
        db.flush()
            .map_err(|e| sled_error("flushing the schema marker", e))?;
        SCHEMA_VERSION
    } else {
        check_schema(&meta_tree)?
    };
    let hub = db
        .open_tree(HUB_TREE)
        .map_err(|e| sled_error("opening the hub tree", e))?;
    let node = db
        .open_tree(NODE_TREE)
        .map_err(|e| sled_error("opening the node tree", e))?;
    let heads = hub::load_heads(&hub)?;
    if version < SCHEMA_VERSION {
        upgrade(&db, &meta_tree, &hub, &node, &heads, version)?;
    }
    let meta = node::load_meta(&node)?;
    match &marker {
        Some(marker) => {
            let state = meta.state();
            marker.check_progress(
                heads.iter().map(|(t, h)| (t.as_str(), h.get())),
                state.cursor.get(),
                state.confirmed_head.get(),
            )?;
        }
        // A new store, or one whose marker was removed: record that a store lives here.
        None => marker::write(dir, &Marker::empty())?,
    }
    Ok((Handles { db, hub, node }, heads, meta))
}

/// Bring a store of an older schema to [`SCHEMA_VERSION`]. Each step is atomic and can be
/// run again, so a crash during the upgrade leaves a store the next open finishes upgrading.
fn upgrade(
    db: &sled::Db,
    meta: &sled::Tree,
    hub: &sled::Tree,
    node: &sled::Tree,
    heads: &[(TenantId, Seq)],
    from: u32,
) -> Result<()> {
    // 1 -> 2: the id indexes (the hub's, the node's confirmed ids) move from one key per
    // event to sorted runs.
    let moved = if from < 2 {
        hub::migrate_id_index(hub, heads)? + node::migrate_confirmed_ids(node)?
    } else {
        0
    };
    // 2 -> 3: each aggregate's pending count is stored, so an append need not count them,
    // and the node's outbox, outbox index and confirmed log move from one key per event into
    // chunks.
    let (aggregates, chunked) = if from < 3 {
        (
            node::migrate_outbox_counts(node)?,
            node::migrate_to_chunks(node)?,
        )
    } else {
        (0, 0)
    };
    // 3 -> 4: the outbox ids move from one key per pending event into sorted runs. After the
    // steps above, which read them.
    let outbox_ids = node::migrate_outbox_ids(node)?;
    meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes()[..])
        .map_err(|e| sled_error("writing the schema marker", e))?;
    db.flush()
        .map_err(|e| sled_error("flushing the upgraded store", e))?;
    tracing::info!(
        from,
        to = SCHEMA_VERSION,
        ids = moved,
        aggregates,
        chunked,
        outbox_ids,
        "upgraded the sled store's schema"
    );
    Ok(())
}

/// Refuse a store of another format or a newer schema; the schema version otherwise.
fn check_schema(meta: &sled::Tree) -> Result<u32> {
    let format = meta
        .get(FORMAT_KEY)
        .map_err(|e| sled_error("reading the format marker", e))?;
    if format.as_deref() != Some(FORMAT) {
        return Err(corrupted(
            "the directory holds a sled database that is not a synckit store (wrong format marker)",
        ));
    }
    let version = meta
        .get(SCHEMA_KEY)
        .map_err(|e| sled_error("reading the schema version", e))?
        .ok_or_else(|| corrupted("the schema version marker is missing"))?;
    let version = <[u8; 4]>::try_from(version.as_ref())
        .map(u32::from_be_bytes)
        .map_err(|_| corrupted("the schema version marker is malformed"))?;
    marker::check_schema_version(version)?;
    Ok(version)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// Run blocking sled work off the async executor; a panic becomes an `Internal` error.
///
/// Without a tokio runtime (another executor) the work runs in place.
async fn blocking<T, F>(what: &'static str, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            Err(Error::internal(format!(
                "{what}: panicked: {}",
                panic_message(&*panic)
            )))
        });
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(Error::internal(format!(
            "{what}: panicked: {}",
            panic_message(&*e.into_panic())
        ))),
        Err(e) => Err(Error::new(
            ErrorKind::Cancelled,
            format!("{what}: the runtime is shutting down"),
        )
        .with_source(e)),
    }
}

/// Apply a prepared batch and make it durable; on failure, poison the store's writes.
fn write_batch(
    tree: &sled::Tree,
    batch: sled::Batch,
    flush: bool,
    poison: &Poison,
    what: &str,
) -> Result<()> {
    let result = tree
        .apply_batch(batch)
        .map_err(|e| sled_error(format!("{what}: writing"), e))
        .and_then(|()| {
            if flush {
                tree.flush()
                    .map(|_| ())
                    .map_err(|e| sled_error(format!("{what}: flushing to disk"), e))
            } else {
                Ok(())
            }
        });
    if let Err(e) = &result {
        poison.set(e);
    }
    result
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must not block, nor deadlock when the caller holds the lock.
        let mut d = f.debug_struct("SledStore");
        d.field("path", &self.config.path)
            .field("flush", &self.config.flush)
            .field("closed", &self.closed.load(Ordering::SeqCst))
            .field("poisoned", &self.poisoned.flag.load(Ordering::SeqCst));
        match self.tenants.try_lock() {
            Ok(tenants) => d.field("tenants", &tenants.len()),
            Err(_) => d.field("tenants", &"<busy>"),
        };
        match self.node.try_read() {
            Ok(meta) => d.field("node", &meta.state()),
            Err(_) => d.field("node", &"<busy>"),
        };
        d.finish()
    }
}

#[async_trait]
impl EventStore for SledStore {
    async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport> {
        self.check_open()?;
        if events.is_empty() {
            let head = self.tenant(tenant)?.map_or(Seq::ZERO, |t| t.head());
            return Ok(AppendReport {
                results: Vec::new(),
                head,
            });
        }
        self.poisoned.check()?;
        let t = self.tenant_or_new(tenant)?;
        let gate = t.gate.clone().write_owned().await;
        let handles = self.handles()?;
        self.poisoned.check()?;
        let events = events.to_vec();
        let (clock, poison, flush) = (
            self.config.clock.clone(),
            self.poisoned.clone(),
            self.flush_each_write,
        );
        blocking("appending to the sled store", move || {
            let _gate = gate;
            let head = t.head();
            let prepared =
                hub::prepare_append(&handles.hub, &t.keys, head, &events, clock.now_ms())
                    .map_err(|e| e.context(format!("appending to tenant {}", tenant_name(&t))))?;
            if let Some(batch) = prepared.batch {
                let what = format!(
                    "appending {} events to tenant {}",
                    events.len(),
                    tenant_name(&t)
                );
                write_batch(&handles.hub, batch, flush, &poison, &what)?;
                // Published only now: readers never see a seq that is not durable.
                t.head.store(prepared.report.head.get(), Ordering::SeqCst);
            }
            Ok(prepared.report)
        })
        .await
    }

    async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
        self.check_open()?;
        request.validate()?;
        let Some((t, guard, handles)) = self.read_tenant(tenant).await? else {
            // A tenant that never wrote reads as an empty log.
            return Ok(Page {
                events: Vec::new(),
                next: request.after,
                has_more: false,
                head: Seq::ZERO,
            });
        };
        let request = request.clone();
        blocking("reading the sled store", move || {
            let _guard = guard;
            hub::read(&handles.hub, &t.keys, t.head(), &request)
                .map_err(|e| e.context(format!("reading tenant {}", tenant_name(&t))))
        })
        .await
    }

    async fn head(&self, tenant: &TenantId) -> Result<Seq> {
        self.check_open()?;
        Ok(self.tenant(tenant)?.map_or(Seq::ZERO, |t| t.head()))
    }

    async fn aggregate_version(
        &self,
        tenant: &TenantId,
        aggregate_id: &AggregateId,
    ) -> Result<u64> {
        let Some((t, guard, handles)) = self.read_tenant(tenant).await? else {
            return Ok(0);
        };
        let aggregate = aggregate_id.clone();
        blocking("reading an aggregate version", move || {
            let _guard = guard;
            hub::aggregate_version(&handles.hub, &t.keys, &aggregate, t.head())
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.close_all().await
    }
}

fn tenant_name(t: &Tenant) -> &TenantId {
    t.keys.tenant()
}

/// Run a node query with the meta held shared.
async fn node_query<T, F>(store: &SledStore, what: &'static str, query: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&sled::Tree, &NodeMeta) -> Result<T> + Send + 'static,
{
    let (guard, handles) = store.read_node().await?;
    blocking(what, move || query(&handles.node, &guard.gate)).await
}

#[async_trait]
impl NodeStore for SledStore {
    async fn state(&self) -> Result<NodeState> {
        self.check_open()?;
        let meta = self.node.read().await;
        self.check_open()?;
        Ok(meta.state())
    }

    async fn commit(&self, write: NodeWrite) -> Result<CommitSummary> {
        self.check_open()?;
        if write.is_empty() {
            return Ok(CommitSummary::default());
        }
        self.poisoned.check()?;
        let mut meta = self.node.clone().write_owned().await;
        let handles = self.handles()?;
        self.poisoned.check()?;
        let (poison, flush) = (self.poisoned.clone(), self.flush_each_write);
        blocking("committing to the sled store", move || {
            let prepared = node::prepare_commit(&handles.node, &meta, &write)?;
            write_batch(
                &handles.node,
                prepared.batch,
                flush,
                &poison,
                "committing a node write",
            )?;
            *meta = prepared.meta;
            Ok(prepared.summary)
        })
        .await
    }

    async fn pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
        node_query(self, "reading the outbox", move |tree, _| {
            node::pending(tree, after, limit)
        })
        .await
    }

    async fn pending_for(&self, aggregate_id: &AggregateId) -> Result<Vec<PendingEvent>> {
        let aggregate = aggregate_id.clone();
        node_query(self, "reading the outbox", move |tree, _| {
            node::pending_for(tree, &aggregate)
        })
        .await
    }

    async fn confirmed(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        node_query(self, "reading the confirmed log", move |tree, _| {
            node::confirmed(tree, after, limit)
        })
        .await
    }

    async fn aggregate_head(&self, aggregate_id: &AggregateId) -> Result<AggregateHead> {
        let aggregate = aggregate_id.clone();
        node_query(self, "reading an aggregate head", move |tree, _| {
            node::aggregate_head(tree, &aggregate)
        })
        .await
    }

    async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
        node_query(self, "reading the review queue", move |tree, _| {
            node::reviews(tree, limit)
        })
        .await
    }

    async fn review(&self, id: &str) -> Result<Option<ReviewEntry>> {
        let id = id.to_owned();
        node_query(self, "reading a review entry", move |tree, _| {
            node::review(tree, &id)
        })
        .await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let query = query.clone();
        node_query(self, "reading the audit trail", move |tree, _| {
            node::audit(tree, &query)
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        self.close_all().await
    }
}
