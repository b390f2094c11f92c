//! `PostgresStatusStore` (feature `postgres`): statuses and leases in two tables of a
//! configurable schema, created at open, shared by every coordinator process on that schema.
//!
//! | table | key | holds |
//! |---|---|---|
//! | `coordinator_status` | `job` | the status JSON (`jsonb`) and when it was written |
//! | `coordinator_leases` | `job` | the holder id, when it took the lease and when it expires |
//!
//! Lease times come from the database's clock (`clock_timestamp()`), so processes whose own
//! clocks disagree still agree on who holds a lease.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, Object, Pool, PoolError, Runtime, TimeoutType};
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;

use crate::error::{CoordinatorError, Result};
use crate::status::JobStatus;
use crate::store::{StatusStore, decode, encode};

/// The schema used when none is configured (the one the PostgreSQL event store uses too; the
/// coordinator's tables have their own names).
pub const DEFAULT_SCHEMA: &str = "synckit";

/// Class id of the advisory lock that serializes table creation ("coor"); the object id is
/// the hash of the schema name.
const CREATE_LOCK_CLASS: i32 = 0x636f_6f72;

/// Where the PostgreSQL status store connects and which schema it uses.
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresStatusConfig {
    /// A libpq-style URL or key-value string, parsed by `tokio_postgres::Config`.
    pub url: String,
    /// The schema of the tables (created when missing): lower-case ASCII letters, digits and
    /// `_`, starting with a letter or `_`, at most 63 bytes, not starting with `pg_`.
    pub schema: String,
    /// Most connections the pool opens (1 to 64).
    pub pool_size: usize,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection.
    pub acquire_timeout: Duration,
    /// The sessions' `statement_timeout` (`None`: the server's).
    pub statement_timeout: Option<Duration>,
}

impl PostgresStatusConfig {
    /// A configuration for `url` with the default schema, a pool of 4 and 5 s / 10 s / 30 s
    /// connect, acquire and statement timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresStatusConfig {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Some(Duration::from_secs(30)),
        }
    }

    /// Use `schema` for the tables.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Open at most `pool_size` connections.
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Bound the time to open one connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound the wait for a free pooled connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Set the sessions' `statement_timeout`.
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    fn validate(&self) -> Result<tokio_postgres::Config> {
        validate_schema(&self.schema)?;
        if !(1..=64).contains(&self.pool_size) {
            return Err(CoordinatorError::config(format!(
                "PostgreSQL status store: pool size {} is out of range 1..=64",
                self.pool_size
            )));
        }
        let too_short = |d: Duration| d < Duration::from_millis(1);
        if too_short(self.connect_timeout)
            || too_short(self.acquire_timeout)
            || self.statement_timeout.is_some_and(too_short)
        {
            return Err(CoordinatorError::config(
                "PostgreSQL status store: timeouts must be at least 1 ms",
            ));
        }
        // The driver's parse errors never quote the URL, so no password reaches a log.
        let mut pg = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            CoordinatorError::config(format!(
                "PostgreSQL status store: the URL is not valid: {e}"
            ))
        })?;
        if pg.get_ssl_mode() == SslMode::Require {
            return Err(CoordinatorError::config(
                "PostgreSQL status store: the URL asks for sslmode=require, but TLS is not \
                 supported yet; use a local or tunnelled connection",
            ));
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("synckit-coordinator");
        }
        if let Some(timeout) = self.statement_timeout {
            let mut options = pg.get_options().map(str::to_owned).unwrap_or_default();
            options.push_str(&format!(" -c statement_timeout={}", timeout.as_millis()));
            pg.options(options.trim_start());
        }
        Ok(pg)
    }
}

impl fmt::Debug for PostgresStatusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: it is left out.
        f.debug_struct("PostgresStatusConfig")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

/// The schema name is spliced into SQL (always double-quoted): only plain identifiers.
fn validate_schema(schema: &str) -> Result<()> {
    let plain = schema.len() <= 63
        && schema
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.starts_with("pg_");
    if plain {
        Ok(())
    } else {
        Err(CoordinatorError::config(format!(
            "schema name {schema:?}: use 1 to 63 lower-case ASCII letters, digits and '_', \
             starting with a letter or '_' (not pg_)"
        )))
    }
}

/// The statements, with the schema spliced in.
#[derive(Debug)]
struct Sql {
    load: String,
    load_all: String,
    save: String,
    acquire: String,
    renew: String,
    release: String,
}

impl Sql {
    fn new(schema: &str) -> Sql {
        let s = format!("\"{schema}\"");
        // Lease TTLs are passed in milliseconds and added to the database's clock.
        let expiry = "clock_timestamp() + $3::bigint * interval '1 millisecond'";
        Sql {
            load: format!("SELECT status::text FROM {s}.coordinator_status WHERE job = $1"),
            load_all: format!("SELECT job, status::text FROM {s}.coordinator_status ORDER BY job"),
            save: format!(
                "INSERT INTO {s}.coordinator_status (job, status, updated_at) \
                 VALUES ($1, $2::text::jsonb, clock_timestamp()) \
                 ON CONFLICT (job) DO UPDATE \
                 SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at"
            ),
            // One statement: insert a free lease, or take over an expired one, or extend our
            // own. ON CONFLICT locks the row and re-checks the WHERE on its latest version, so
            // of two processes racing for one lease exactly one gets a row back.
            acquire: format!(
                "INSERT INTO {s}.coordinator_leases AS l (job, holder, acquired_at, expires_at) \
                 VALUES ($1, $2, clock_timestamp(), {expiry}) \
                 ON CONFLICT (job) DO UPDATE \
                 SET holder = EXCLUDED.holder, \
                     acquired_at = CASE WHEN l.holder = EXCLUDED.holder \
                                        THEN l.acquired_at ELSE EXCLUDED.acquired_at END, \
                     expires_at = EXCLUDED.expires_at \
                 WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() \
                 RETURNING 1"
            ),
            renew: format!(
                "UPDATE {s}.coordinator_leases SET expires_at = {expiry} \
                 WHERE job = $1 AND holder = $2 AND expires_at > clock_timestamp()"
            ),
            release: format!("DELETE FROM {s}.coordinator_leases WHERE job = $1 AND holder = $2"),
        }
    }
}

/// Statuses and leases in PostgreSQL, shared by every coordinator on the schema.
pub struct PostgresStatusStore {
    pool: Pool,
    schema: String,
    sql: Sql,
}

impl PostgresStatusStore {
    /// Connect, and create the schema and the two tables when they are missing (under an
    /// advisory lock, so processes opening together do not race).
    ///
    /// Fails with `Config` for a bad setting and `Store` (retryable when PostgreSQL could
    /// not be reached) otherwise.
    pub async fn connect(config: PostgresStatusConfig) -> Result<PostgresStatusStore> {
        let pg = config.validate()?;
        let pool = Pool::builder(Manager::new(pg, NoTls))
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| {
                CoordinatorError::config(format!(
                    "PostgreSQL status store: building the connection pool: {e}"
                ))
            })?;
        let store = PostgresStatusStore {
            pool,
            sql: Sql::new(&config.schema),
            schema: config.schema,
        };
        if let Err(e) = store.create_tables().await {
            store.pool.close();
            return Err(e);
        }
        Ok(store)
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    async fn create_tables(&self) -> Result<()> {
        let s = format!("\"{}\"", self.schema);
        let what = format!("creating the coordinator tables in schema {}", self.schema);
        let mut client = self.client(&what).await?;
        let tx = client.transaction().await.map_err(|e| pg_error(&what, e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&CREATE_LOCK_CLASS, &self.schema],
        )
        .await
        .map_err(|e| pg_error(&what, e))?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.coordinator_status (
                 job TEXT COLLATE \"C\" PRIMARY KEY,
                 status JSONB NOT NULL,
                 updated_at TIMESTAMPTZ NOT NULL
             );
             CREATE TABLE IF NOT EXISTS {s}.coordinator_leases (
                 job TEXT COLLATE \"C\" PRIMARY KEY,
                 holder TEXT NOT NULL,
                 acquired_at TIMESTAMPTZ NOT NULL,
                 expires_at TIMESTAMPTZ NOT NULL
             );"
        ))
        .await
        .map_err(|e| pg_error(&what, e))?;
        tx.commit().await.map_err(|e| pg_error(&what, e))
    }

    async fn client(&self, what: &str) -> Result<Object> {
        self.pool.get().await.map_err(|e| pool_error(what, e))
    }
}

impl fmt::Debug for PostgresStatusStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStatusStore")
            .field("schema", &self.schema)
            .field("pool_size", &status.size)
            .field("pool_available", &status.available)
            .finish()
    }
}

#[async_trait]
impl StatusStore for PostgresStatusStore {
    async fn load_all(&self) -> Result<Vec<JobStatus>> {
        let what = "loading job statuses";
        let client = self.client(what).await?;
        let rows = client
            .query(&self.sql.load_all, &[])
            .await
            .map_err(|e| pg_error(what, e))?;
        rows.iter()
            .map(|row| {
                let job: String = row.try_get(0).map_err(|e| pg_error(what, e))?;
                let text: String = row.try_get(1).map_err(|e| pg_error(what, e))?;
                let status = decode(text.as_bytes(), &format!("the status row of job {job:?}"))?;
                if status.job != job {
                    return Err(CoordinatorError::corrupted(
                        format!(
                            "the status row {job:?} holds the status of job {:?}",
                            status.job
                        ),
                        None,
                    ));
                }
                Ok(status)
            })
            .collect()
    }

    async fn load(&self, job: &str) -> Result<Option<JobStatus>> {
        let what = format!("loading the status of job {job:?}");
        let client = self.client(&what).await?;
        let row = client
            .query_opt(&self.sql.load, &[&job])
            .await
            .map_err(|e| pg_error(&what, e))?;
        match row {
            Some(row) => {
                let text: String = row.try_get(0).map_err(|e| pg_error(&what, e))?;
                decode(text.as_bytes(), &format!("the status row of job {job:?}")).map(Some)
            }
            None => Ok(None),
        }
    }

    async fn save(&self, status: &JobStatus) -> Result<()> {
        let what = format!("saving the status of job {:?}", status.job);
        let text = String::from_utf8(encode(status)?)
            .map_err(|e| CoordinatorError::store(what.clone(), e))?;
        let client = self.client(&what).await?;
        client
            .execute(&self.sql.save, &[&status.job, &text])
            .await
            .map_err(|e| pg_error(&what, e))?;
        Ok(())
    }

    async fn try_acquire(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let what = format!("taking the lease on job {job:?}");
        let client = self.client(&what).await?;
        let row = client
            .query_opt(&self.sql.acquire, &[&job, &holder, &ttl_ms(ttl)])
            .await
            .map_err(|e| pg_error(&what, e))?;
        Ok(row.is_some())
    }

    async fn renew(&self, job: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let what = format!("renewing the lease on job {job:?}");
        let client = self.client(&what).await?;
        let updated = client
            .execute(&self.sql.renew, &[&job, &holder, &ttl_ms(ttl)])
            .await
            .map_err(|e| pg_error(&what, e))?;
        Ok(updated == 1)
    }

    async fn release(&self, job: &str, holder: &str) -> Result<()> {
        let what = format!("releasing the lease on job {job:?}");
        let client = self.client(&what).await?;
        client
            .execute(&self.sql.release, &[&job, &holder])
            .await
            .map_err(|e| pg_error(&what, e))?;
        Ok(())
    }
}

/// A TTL as BIGINT milliseconds (at least 1: a zero TTL would expire as it is taken).
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Map a driver error met while doing `what`: connection loss, shutdowns, timeouts, lock and
/// serialization failures are retryable; the rest is permanent.
fn pg_error(what: &str, error: tokio_postgres::Error) -> CoordinatorError {
    let retryable = match error.as_db_error() {
        Some(db) => {
            let code = db.code();
            code.code().starts_with("08")
                || [
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                    SqlState::QUERY_CANCELED,
                    SqlState::LOCK_NOT_AVAILABLE,
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                ]
                .contains(code)
        }
        None => true,
    };
    let message = match error.as_db_error() {
        Some(db) => format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => format!("{what}: PostgreSQL is unreachable or broke the protocol: {error}"),
    };
    CoordinatorError::Store {
        message,
        retryable,
        source: Some(error.into()),
    }
}

fn pool_error(what: &str, error: PoolError) -> CoordinatorError {
    match error {
        PoolError::Backend(e) => pg_error(&format!("{what}: connecting to PostgreSQL"), e),
        PoolError::Timeout(TimeoutType::Wait) => CoordinatorError::store_unavailable(
            format!("{what}: no pooled PostgreSQL connection became free in time"),
            None,
        ),
        PoolError::Timeout(_) => CoordinatorError::store_unavailable(
            format!("{what}: connecting to PostgreSQL timed out"),
            None,
        ),
        other => CoordinatorError::store(format!("{what}: {other}"), other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_config_errors() {
        let base = || PostgresStatusConfig::new("postgres://u@127.0.0.1/db");
        base().validate().unwrap();
        for schema in ["", "A", "1a", "a-b", "a\"b", "pg_x", &"a".repeat(64)] {
            assert!(
                matches!(
                    base().with_schema(schema).validate(),
                    Err(CoordinatorError::Config { .. })
                ),
                "{schema:?}"
            );
        }
        assert!(base().with_pool_size(0).validate().is_err());
        assert!(
            base()
                .with_connect_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
        assert!(
            PostgresStatusConfig::new("postgres://u@h/db?sslmode=require")
                .validate()
                .is_err()
        );
        let pg = base()
            .with_statement_timeout(Some(Duration::from_millis(1500)))
            .validate()
            .unwrap();
        assert_eq!(pg.get_options(), Some("-c statement_timeout=1500"));
    }

    #[test]
    fn debug_hides_the_url() {
        let config = PostgresStatusConfig::new("postgres://app:s3cret@db/hub");
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn ttl_is_positive_milliseconds() {
        assert_eq!(ttl_ms(Duration::from_micros(10)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(2)), 2_000);
        assert_eq!(ttl_ms(Duration::MAX), i64::MAX);
    }
}
