//! `PostgresStore`: the connection pool, open and close, and the `EventStore` / `NodeStore`
//! impls (the hub logic is in `hub.rs`, the node logic in `node.rs`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use deadpool_postgres::{Manager, Object, Pool, Runtime};
use synckit_types::{
    AggregateHead, AggregateId, AppendReport, AuditQuery, AuditRecord, CommitSummary, DynClock,
    Error, Event, EventStore, NodeState, NodeStore, NodeWrite, Page, PendingEvent, ReadRequest,
    Result, ReviewEntry, Seq, StoredEvent, TenantId,
};
use tokio_postgres::NoTls;

use crate::config::PostgresConfig;
use crate::error::pool as pool_error;
use crate::schema::{migrate, quote};
use crate::sql::Sql;

/// A hub and node store in one PostgreSQL schema.
///
/// As an [`EventStore`] it keeps one log per tenant; several stores (several hub processes)
/// may share one schema and still hand out one gap-free order per tenant. As a [`NodeStore`]
/// it keeps one node's state per schema. Both roles are closed together by `close` from either
/// trait. Share it as `Arc<PostgresStore>` (or as `DynEventStore` / `DynNodeStore`).
///
/// Every call takes a pooled connection; every change is one transaction that returns only
/// after PostgreSQL committed it (`synchronous_commit=on`).
pub struct PostgresStore {
    pub(crate) pool: Pool,
    pub(crate) sql: Sql,
    pub(crate) clock: DynClock,
    schema: String,
    closed: AtomicBool,
}

impl PostgresStore {
    /// Connect, create the schema if it is missing, and apply pending migrations.
    ///
    /// Fails with `Config` for a bad setting, `Unavailable` (retryable) when PostgreSQL
    /// cannot be reached within the connect timeout, `Unauthorized` or `Forbidden` when the
    /// role may not log in or use the schema, and `Corrupted` when the schema was written by
    /// a newer version of this crate.
    pub async fn connect(config: PostgresConfig) -> Result<PostgresStore> {
        let pg = config.validate()?;
        let manager = Manager::new(pg, NoTls);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| {
                Error::config(format!("building the PostgreSQL connection pool: {e}"))
                    .with_source(e)
            })?;
        let opening = format!("opening the postgres store in schema {}", config.schema);
        let mut client = pool.get().await.map_err(|e| pool_error(&opening, e))?;
        if let Err(e) = migrate(&mut client, &config.schema).await {
            drop(client);
            pool.close();
            return Err(e);
        }
        drop(client);
        Ok(PostgresStore {
            pool,
            sql: Sql::new(&quote(&config.schema)),
            clock: config.clock,
            schema: config.schema,
            closed: AtomicBool::new(false),
        })
    }

    /// [`PostgresStore::connect`] with every setting but the URL at its default.
    pub async fn connect_url(url: impl Into<String>) -> Result<PostgresStore> {
        PostgresStore::connect(PostgresConfig::new(url)).await
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A pooled connection for `what`, unless the store is closed.
    pub(crate) async fn client(&self, what: &str) -> Result<Object> {
        self.check_open()?;
        self.pool.get().await.map_err(|e| pool_error(what, e))
    }

    /// Fail with `Closed` once the store is closed.
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed("postgres store"));
        }
        Ok(())
    }

    /// Close both roles and the pool; idempotent.
    fn close_all(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.pool.close();
        }
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .field("closed", &self.closed.load(Ordering::Acquire))
            .field("pool_max_size", &status.max_size)
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .field("clock", &self.clock)
            .finish()
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, tenant: &TenantId, events: &[Event]) -> Result<AppendReport> {
        self.hub_append(tenant, events).await
    }

    async fn read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
        self.hub_read(tenant, request).await
    }

    async fn head(&self, tenant: &TenantId) -> Result<Seq> {
        self.hub_head(tenant).await
    }

    async fn aggregate_version(
        &self,
        tenant: &TenantId,
        aggregate_id: &AggregateId,
    ) -> Result<u64> {
        self.hub_aggregate_version(tenant, aggregate_id).await
    }

    async fn close(&self) -> Result<()> {
        self.close_all();
        Ok(())
    }
}

#[async_trait]
impl NodeStore for PostgresStore {
    async fn state(&self) -> Result<NodeState> {
        self.node_state().await
    }

    async fn commit(&self, write: NodeWrite) -> Result<CommitSummary> {
        self.node_commit(write).await
    }

    async fn pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
        self.node_pending(after, limit).await
    }

    async fn pending_for(&self, aggregate_id: &AggregateId) -> Result<Vec<PendingEvent>> {
        self.node_pending_for(aggregate_id).await
    }

    async fn confirmed(&self, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
        self.node_confirmed(after, limit).await
    }

    async fn aggregate_head(&self, aggregate_id: &AggregateId) -> Result<AggregateHead> {
        self.node_aggregate_head(aggregate_id).await
    }

    async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
        self.node_reviews(limit).await
    }

    async fn review(&self, id: &str) -> Result<Option<ReviewEntry>> {
        self.node_review(id).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.node_audit(query).await
    }

    async fn close(&self) -> Result<()> {
        self.close_all();
        Ok(())
    }
}
