//! `SqliteStore`: one writer connection and a small pool of readers, driven from async code
//! through `spawn_blocking`, implementing `EventStore` and `NodeStore`.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, TransactionBehavior};
use synckit_types::{
    AggregateHead, AggregateId, AppendReport, AuditQuery, AuditRecord, CommitSummary, Error,
    ErrorKind, Event, EventStore, NodeState, NodeStore, NodeWrite, Page, PendingEvent, ReadRequest,
    Result, ReviewEntry, Seq, StoredEvent, TenantId,
};
use tokio::sync::Semaphore;
use tokio::task::JoinError;

use crate::config::SqliteConfig;
use crate::error::SqlContext;
use crate::schema::{self, Role};
use crate::{hub, node};

/// A SQLite-backed hub and node store.
///
/// As an [`EventStore`] it keeps one log per tenant; as a [`NodeStore`] it keeps one node's
/// state; both in one database file, closed together by `close` from either trait (or the
/// inherent [`SqliteStore::close`]). Share it as `Arc<SqliteStore>`, `DynEventStore` or
/// `DynNodeStore`.
///
/// Every append and commit is one SQLite transaction on the single writer connection, begun
/// with `BEGIN IMMEDIATE` (the write lock is taken before anything is read) and acknowledged
/// only after `COMMIT` returns, so under the default `synchronous = FULL` it is on disk before
/// the caller hears of it. Reads run on reader connections, each in one read transaction (one
/// consistent snapshot), concurrently with the writer.
///
/// Calls run the SQLite work off the async worker threads, so they need a tokio runtime
/// (either flavor): on tokio's blocking pool, except an append on a multi-thread runtime,
/// which runs in `block_in_place` so that it can borrow its batch instead of copying it (other
/// tasks of that worker move to another thread meanwhile). A dropped call future is
/// all-or-nothing: if the drop comes before `COMMIT`, the transaction is rolled back; a drop
/// that races with `COMMIT` waits for it (one fsync), so once the drop returns the outcome is
/// settled and visible to the next read.
///
/// Where the `NodeStore` contract leaves a case open this store refuses as the memory store
/// does. Values that SQLite's signed 64-bit integers cannot hold (a `seq`, version, cursor or
/// time above `i64::MAX`) are refused with `LimitExceeded`.
pub struct SqliteStore {
    shared: Arc<Shared>,
}

/// What the store and its blocking tasks share.
struct Shared {
    config: SqliteConfig,
    closed: AtomicBool,
    /// The one connection that writes; `None` once closed.
    writer: Mutex<Option<Connection>>,
    /// Idle reader connections.
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection, so at most `config.readers` are open.
    reader_permits: Arc<Semaphore>,
    /// One permit for the writer: waiting writes queue here, in async code, instead of each
    /// parking a blocking thread on the writer's mutex.
    writer_permit: Arc<Semaphore>,
}

/// Whether a write may still commit: its caller's future decides `Cancelled` when dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    Waiting,
    Cancelled,
    Finished,
}

/// Decides, under one lock, between a write's `COMMIT` and its caller giving up.
#[derive(Debug)]
struct Gate(Mutex<GateState>);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Held by the caller's future; dropping it before the write finished cancels the write.
struct CancelOnDrop(Arc<Gate>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // Blocks only while a COMMIT is running: then the write is done when this returns.
        let mut state = self.0.lock();
        if *state == GateState::Waiting {
            *state = GateState::Cancelled;
        }
    }
}

/// Whether `block_in_place` may run here: on a multi-thread runtime it hands this worker's
/// other tasks to another thread; on a current-thread runtime it would panic.
fn on_multi_thread_runtime() -> bool {
    matches!(
        tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        Ok(tokio::runtime::RuntimeFlavor::MultiThread)
    )
}

/// Make a newly created file's directory entry durable. SQLite syncs the directory of the WAL
/// when it creates it, but not that of the database file.
fn sync_parent(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."), // a bare file name lives in the current directory
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            Error::storage(format!(
                "syncing the directory of the new SQLite store {}: {e}",
                path.display()
            ))
            .with_source(e)
        })
}

fn closed() -> Error {
    Error::closed("sqlite store")
}

fn cancelled() -> Error {
    Error::new(
        ErrorKind::Cancelled,
        "sqlite store: the caller gave up before the write committed; nothing was written",
    )
}

fn joined<T>(result: std::result::Result<Result<T>, JoinError>) -> Result<T> {
    match result {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(Error::internal(format!(
            "sqlite store: a blocking task panicked: {e}"
        ))),
        Err(_) => Err(Error::new(
            ErrorKind::Cancelled,
            "sqlite store: the runtime shut down before the call finished",
        )),
    }
}

impl Shared {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Run `work` in one `BEGIN IMMEDIATE` transaction on the writer; commit unless the caller
    /// gave up first.
    fn write<T>(&self, gate: &Gate, work: impl FnOnce(&Connection, u64) -> Result<T>) -> Result<T> {
        if *gate.lock() == GateState::Cancelled {
            return Err(cancelled());
        }
        // A panic inside `work` poisons the lock, but the transaction it held was rolled back
        // when it unwound, so the connection is consistent and usable.
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // The caller may have given up while this waited for the writer.
        if *gate.lock() == GateState::Cancelled {
            return Err(cancelled());
        }
        let conn = writer.as_mut().ok_or_else(closed)?;
        if !conn.is_autocommit() {
            conn.execute_batch("ROLLBACK")
                .ctx("rolling back a transaction left open")?;
        }
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("starting a write transaction")?;
        let value = work(&tx, self.config.clock.now_ms())?;
        let mut state = gate.lock();
        if *state == GateState::Cancelled {
            drop(tx); // rolls back
            return Err(cancelled());
        }
        let committed = tx.commit().ctx("committing a write transaction");
        *state = GateState::Finished;
        committed.map(|()| value)
    }

    /// Run `work` in one read transaction (one snapshot) on a reader connection.
    fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.take_reader()?;
        let result = (|| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .ctx("starting a read transaction")?;
            let value = work(&tx)?;
            tx.commit().ctx("ending a read transaction")?;
            Ok(value)
        })();
        self.put_reader(conn);
        result
    }

    fn take_reader(&self) -> Result<Connection> {
        {
            let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
            if self.is_closed() {
                return Err(closed());
            }
            if let Some(conn) = idle.pop() {
                return Ok(conn);
            }
        }
        schema::open(&self.config, Role::Reader)
    }

    fn put_reader(&self, conn: Connection) {
        let mut idle = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.is_closed() {
            idle.push(conn);
        }
    }

    /// Close every connection: readers first, so the writer's close checkpoints the WAL.
    fn close(&self) -> Result<()> {
        let readers =
            std::mem::take(&mut *self.readers.lock().unwrap_or_else(PoisonError::into_inner));
        drop(readers);
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(conn) = writer {
            conn.close().map_err(|(_, e)| {
                crate::error::sql(
                    format!("closing the SQLite store at {}", self.config.path.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }
}

impl SqliteStore {
    /// Open (or create) the store at `path` with the default configuration
    /// (`synchronous = FULL`, see [`SqliteConfig`]).
    ///
    /// Opening does file I/O and may migrate the schema: in async code, call it once at start-up
    /// or inside `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        SqliteStore::open_with(SqliteConfig::new(path.as_ref()))
    }

    /// Open (or create) the store described by `config`.
    ///
    /// Fails with `Config` for an invalid configuration or a SQLite file that is not a synckit
    /// store, `Corrupted` for a damaged file or one written by a newer schema version (the file
    /// is left unchanged), and `Storage` when the file cannot be opened or written.
    pub fn open_with(config: SqliteConfig) -> Result<SqliteStore> {
        config.validate()?;
        let created = !config.path.exists();
        let writer = schema::open(&config, Role::Writer)?;
        if created {
            sync_parent(&config.path)?;
        }
        // One reader now, so a problem reading shows at open rather than at the first read.
        let reader = schema::open(&config, Role::Reader)?;
        tracing::debug!(path = %config.path.display(), synchronous = ?config.synchronous, "opened sqlite store");
        let permits = config.readers;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                config,
                closed: AtomicBool::new(false),
                writer: Mutex::new(Some(writer)),
                readers: Mutex::new(vec![reader]),
                reader_permits: Arc::new(Semaphore::new(permits)),
                writer_permit: Arc::new(Semaphore::new(1)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.config.path
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.shared.config
    }

    /// Close the store: later calls fail with `Closed`. Waits for a write in progress, then
    /// closes every connection (SQLite checkpoints the WAL). Idempotent.
    pub async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.shared.reader_permits.close();
        self.shared.writer_permit.close();
        let shared = self.shared.clone();
        joined(tokio::task::spawn_blocking(move || shared.close()).await)
    }

    /// Run SQLite's `PRAGMA integrity_check` over the whole file: `Corrupted`, listing the first
    /// problems, when it finds damage. Reads every page: for tools and tests, not hot paths.
    pub async fn integrity_check(&self) -> Result<()> {
        let path = self.shared.config.path.clone();
        self.run_read(move |conn| {
            let at = || format!("checking the integrity of {}", path.display());
            let mut stmt = conn.prepare("PRAGMA integrity_check(20)").with_ctx(at)?;
            let problems: Vec<String> = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .with_ctx(at)?
                .collect::<rusqlite::Result<_>>()
                .with_ctx(at)?;
            if problems.len() == 1 && problems[0] == "ok" {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Corrupted,
                    format!("{}: {}", at(), problems.join("; ")),
                ))
            }
        })
        .await
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.is_closed() {
            Err(closed())
        } else {
            Ok(())
        }
    }

    /// Run a write transaction on the blocking pool (see [`Shared::write`]).
    async fn run_write<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, u64) -> Result<T> + Send + 'static,
    {
        self.check_open()?;
        let permit = self
            .shared
            .writer_permit
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let gate = Arc::new(Gate(Mutex::new(GateState::Waiting)));
        let _cancel_on_drop = CancelOnDrop(gate.clone());
        let shared = self.shared.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                shared.write(&gate, work)
            })
            .await,
        )
    }

    /// Run a read transaction on the blocking pool (see [`Shared::read`]).
    async fn run_read<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.check_open()?;
        let permit = self
            .shared
            .reader_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let shared = self.shared.clone();
        joined(
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                shared.read(work)
            })
            .await,
        )
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.shared.config;
        f.debug_struct("SqliteStore")
            .field("path", &config.path)
            .field("synchronous", &config.synchronous)
            .field("readers", &config.readers)
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport> {
        self.check_open()?;
        let tenant = tenant.clone();
        if events.is_empty() {
            return self
                .run_read(move |conn| {
                    Ok(AppendReport {
                        results: Vec::new(),
                        head: hub::head(conn, &tenant)?,
                    })
                })
                .await;
        }
        if on_multi_thread_runtime() {
            // Borrow the batch rather than copy it for the blocking pool (the copy costs as
            // much as a tenth of an append). The write runs to completion inside this poll, so
            // it cannot be cancelled half-way either.
            let gate = Gate(Mutex::new(GateState::Waiting));
            return tokio::task::block_in_place(|| {
                self.shared.write(&gate, |conn, now_ms| {
                    hub::append(conn, &tenant, events, now_ms)
                })
            });
        }
        let events = events.to_vec();
        self.run_write(move |conn, now_ms| hub::append(conn, &tenant, &events, now_ms))
            .await
    }

    async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
        self.check_open()?;
        request.validate()?;
        let (tenant, request) = (tenant.clone(), request.clone());
        self.run_read(move |conn| hub::read(conn, &tenant, &request))
            .await
    }

    async fn head(&self, tenant: &TenantId) -> Result<Seq> {
        let tenant = tenant.clone();
        self.run_read(move |conn| hub::head(conn, &tenant)).await
    }

    async fn aggregate_version(
        &self,
        tenant: &TenantId,
        aggregate_id: &AggregateId,
    ) -> Result<u64> {
        let (tenant, aggregate_id) = (tenant.clone(), aggregate_id.clone());
        self.run_read(move |conn| hub::aggregate_version(conn, &tenant, &aggregate_id))
            .await
    }

    async fn close(&self) -> Result<()> {
        SqliteStore::close(self).await
    }
}

#[async_trait]
impl NodeStore for SqliteStore {
    async fn state(&self) -> Result<NodeState> {
        self.run_read(node::state).await
    }

    async fn commit(&self, write: NodeWrite) -> Result<CommitSummary> {
        self.check_open()?;
        if write.is_empty() {
            return Ok(CommitSummary::default());
        }
        self.run_write(move |conn, _| node::commit(conn, &write))
            .await
    }

    async fn pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
        self.check_open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run_read(move |conn| node::pending(conn, after, limit))
            .await
    }

    async fn pending_for(&self, aggregate_id: &AggregateId) -> Result<Vec<PendingEvent>> {
        let aggregate_id = aggregate_id.clone();
        self.run_read(move |conn| node::pending_for(conn, &aggregate_id))
            .await
    }

    async fn confirmed(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        self.check_open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run_read(move |conn| node::confirmed(conn, after, limit))
            .await
    }

    async fn aggregate_head(&self, aggregate_id: &AggregateId) -> Result<AggregateHead> {
        let aggregate_id = aggregate_id.clone();
        self.run_read(move |conn| node::aggregate_head(conn, &aggregate_id))
            .await
    }

    async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
        self.check_open()?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run_read(move |conn| node::reviews(conn, limit)).await
    }

    async fn review(&self, id: &str) -> Result<Option<ReviewEntry>> {
        let id = id.to_owned();
        self.run_read(move |conn| node::review(conn, &id)).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let query = query.clone();
        self.run_read(move |conn| node::audit(conn, &query)).await
    }

    async fn close(&self) -> Result<()> {
        SqliteStore::close(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hub, node};

    fn open_temp() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    /// `EXPLAIN QUERY PLAN` of `sql`, one detail line per step.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let count = stmt.parameter_count();
        let params: Vec<rusqlite::types::Value> = (0..count)
            .map(|_| rusqlite::types::Value::Integer(1))
            .collect();
        stmt.query_map(rusqlite::params_from_iter(params), |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
    }

    #[test]
    fn every_paged_read_seeks_through_an_index() {
        let (_dir, store) = open_temp();
        let writer = store.shared.writer.lock().unwrap();
        let conn = writer.as_ref().unwrap();
        // Each query, and the index each of its steps seeks through (in order).
        let seeks: [(&str, &[&str]); 15] = [
            (hub::PAGE, &["INTEGER PRIMARY KEY"]),
            (hub::AGGREGATE_POSTINGS, &["PRIMARY KEY"]),
            (hub::KIND_POSTINGS, &["PRIMARY KEY"]),
            (hub::EVENT_AT, &["INTEGER PRIMARY KEY"]),
            (hub::SELECT_BY_ID, &["events_by_id"]),
            (hub::SELECT_AGGREGATE, &["aggregates_by_name"]),
            (hub::SELECT_KIND, &["kinds_by_name"]),
            (hub::SELECT_TENANT, &["sqlite_autoindex_tenants"]),
            (
                hub::AGGREGATE_VERSION,
                &["sqlite_autoindex_tenants", "aggregates_by_name"],
            ),
            (node::PENDING_PAGE, &["INTEGER PRIMARY KEY"]),
            (node::PENDING_FOR, &["outbox_by_aggregate"]),
            (node::CONFIRMED_PAGE, &["INTEGER PRIMARY KEY"]),
            (node::CONFIRMED_HEAD, &["SEARCH confirmed"]),
            (node::AUDIT_PAGE, &["INTEGER PRIMARY KEY"]),
            (node::AUDIT_PAGE_AGGREGATE, &["audit_by_aggregate"]),
        ];
        for (sql, indexes) in seeks {
            let steps = plan(conn, sql);
            assert!(
                steps.len() == indexes.len()
                    && steps
                        .iter()
                        .zip(indexes)
                        .all(|(s, index)| s.starts_with("SEARCH") && s.contains(index)),
                "{sql}\nmust seek through {indexes:?}, but its plan is {steps:?}"
            );
        }
        // The oldest reviews are the start of the table: a scan that stops at the limit,
        // in key order (no sort).
        let steps = plan(conn, node::REVIEWS_PAGE);
        assert_eq!(steps, ["SCAN reviews"], "{}", node::REVIEWS_PAGE);
    }

    fn events(ids: std::ops::Range<usize>, kind: &str) -> Vec<synckit_types::Event> {
        ids.map(|i| {
            synckit_types::Event::builder(kind, format!("agg-{}", i % 3))
                .id(format!("e{i}"))
                .origin("n1")
                .hlc(synckit_types::Hlc::new(1, 0))
                .build()
                .unwrap()
        })
        .collect()
    }

    #[tokio::test]
    async fn filters_cost_rows_per_append_not_per_event() {
        let (_dir, store) = open_temp();
        let t = TenantId::default_tenant();
        let count = |store: &SqliteStore, sql: &str| -> i64 {
            let writer = store.shared.writer.lock().unwrap();
            writer
                .as_ref()
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap()
        };
        // Five batches of 200 events of one kind over three aggregates.
        for b in 0..5 {
            store
                .append(&t, &events(b * 200..b * 200 + 200, "A"))
                .await
                .unwrap();
        }
        assert_eq!(count(&store, "SELECT count(*) FROM kind_postings"), 5);
        let aggregate_rows = count(&store, "SELECT count(*) FROM aggregate_postings");
        assert!(
            (15..=30).contains(&aggregate_rows),
            "a few rows per aggregate and batch, not one per event: {aggregate_rows}"
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events'"
            ),
            1,
            "the only per-event index is the idempotency index"
        );
    }

    #[test]
    fn writer_is_wal_and_synchronous_full() {
        let (_dir, store) = open_temp();
        let writer = store.shared.writer.lock().unwrap();
        let conn = writer.as_ref().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(
            sync,
            crate::Synchronous::Full.pragma_number(),
            "FULL by default"
        );
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::SCHEMA_VERSION);
    }

    #[test]
    fn synchronous_setting_reaches_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let config =
            SqliteConfig::new(dir.path().join("t.db")).synchronous(crate::Synchronous::Normal);
        let store = SqliteStore::open_with(config).unwrap();
        let writer = store.shared.writer.lock().unwrap();
        let sync: i64 = writer
            .as_ref()
            .unwrap()
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }

    #[test]
    fn debug_names_the_file_and_never_blocks() {
        let (_dir, store) = open_temp();
        let _writer = store.shared.writer.lock().unwrap();
        let text = format!("{store:?}");
        assert!(
            text.contains("t.db") && text.contains("closed: false"),
            "{text}"
        );
    }
}
