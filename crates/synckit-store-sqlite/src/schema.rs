//! The on-disk layout: connection set-up (WAL, synchronous, timeouts), the versioned schema
//! migrations applied at open, and the checks that refuse a newer or foreign database.

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use synckit_types::{Error, ErrorKind, Result};

use crate::config::SqliteConfig;
use crate::error::SqlContext;

/// The schema version this build writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// Marks the file as a synckit store (`PRAGMA application_id`): ASCII "SYNK".
pub const APPLICATION_ID: i64 = 0x5359_4E4B;

/// Prepared statements kept per connection; more than the store uses, so none is re-prepared.
const STATEMENT_CACHE: usize = 64;

/// Size the WAL is truncated to after a checkpoint, in bytes.
const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// The migrations, in order: migration `i` takes the schema from version `i` to `i + 1`.
/// A released migration is never edited; a change is a new entry.
const MIGRATIONS: &[&str] = &[V1];

/// Version 1: hub logs and node state.
///
/// Hub: `tenants` keeps each tenant's head (so `head` is one row read); `aggregates` and
/// `kinds` give each tenant's aggregate ids and kinds a small integer key (and keep each
/// aggregate's version); `events` holds the logs. An event's row key `position` is
/// `tenant << 40 | seq` (see [`crate::hub`]): one integer B-tree orders every tenant's log by
/// `seq`, so an unfiltered page is a range of the table itself. The unique index `(id, tenant)`
/// enforces idempotency (the id first keeps comparisons cheap). Pages of one aggregate or of
/// some kinds read `aggregate_postings` and `kind_postings` (see [`crate::postings`]): each
/// append adds, per aggregate and per kind it touched, a few rows listing the positions it
/// added, keyed by `(key, last position)`, instead of an index entry per event.
///
/// Node: one `node_state` row (node id, clock, cursor, counters), `confirmed` keyed by hub
/// `seq`, `confirmed_versions`, the `outbox` keyed by ordinal, `reviews` and `audit` in
/// insertion order.
const V1: &str = "
CREATE TABLE tenants (
    tenant INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    head INTEGER NOT NULL
);
CREATE TABLE aggregates (
    aggregate INTEGER PRIMARY KEY,
    tenant INTEGER NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE UNIQUE INDEX aggregates_by_name ON aggregates (name, tenant);
CREATE TABLE kinds (
    kind INTEGER PRIMARY KEY,
    tenant INTEGER NOT NULL,
    name TEXT NOT NULL
);
CREATE UNIQUE INDEX kinds_by_name ON kinds (name, tenant);
CREATE TABLE events (
    position INTEGER PRIMARY KEY,
    tenant INTEGER NOT NULL,
    id TEXT NOT NULL,
    aggregate INTEGER NOT NULL,
    aggregate_version INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE UNIQUE INDEX events_by_id ON events (id, tenant);
CREATE TABLE aggregate_postings (
    aggregate INTEGER NOT NULL,
    last INTEGER NOT NULL,
    runs BLOB NOT NULL,
    PRIMARY KEY (aggregate, last)
) WITHOUT ROWID;
CREATE TABLE kind_postings (
    kind INTEGER NOT NULL,
    last INTEGER NOT NULL,
    runs BLOB NOT NULL,
    PRIMARY KEY (kind, last)
) WITHOUT ROWID;

CREATE TABLE node_state (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    node_id TEXT,
    hlc TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    next_ordinal INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    reviews INTEGER NOT NULL
);
INSERT INTO node_state VALUES (1, NULL, '0000000000000000-00000000', 0, 1, 0, 0);
CREATE TABLE confirmed (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE confirmed_versions (
    aggregate_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE outbox (
    ordinal INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX outbox_by_aggregate ON outbox (aggregate_id, ordinal);
CREATE TABLE reviews (
    number INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL
);
CREATE TABLE audit (
    number INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX audit_by_aggregate ON audit (aggregate_id, number);
";

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The one connection that writes; creates the file and runs the migrations.
    Writer,
    /// A read-only connection (`query_only`), opened after the writer.
    Reader,
}

/// Open and configure one connection. The writer also switches the file to WAL and migrates it.
pub(crate) fn open(config: &SqliteConfig, role: Role) -> Result<Connection> {
    let path = &config.path;
    let at = || format!("opening the SQLite store at {}", path.display());
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if role == Role::Writer {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).with_ctx(at)?;
    conn.busy_timeout(config.busy_timeout).with_ctx(at)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // SQLite falls back to read-only silently when the file is not writable; say so now rather
    // than at the first append.
    if conn.is_readonly(rusqlite::MAIN_DB).with_ctx(at)? {
        return Err(Error::storage(format!(
            "{}: the database file is read-only for this process; check its permissions",
            at()
        )));
    }
    // A negative cache size is in KiB.
    conn.pragma_update(None, "cache_size", -i64::from(config.cache_size_kib))
        .with_ctx(at)?;
    match role {
        Role::Writer => {
            // Read the markers before anything writes: a damaged, foreign or newer file is
            // refused here and left exactly as it was.
            check_version(&conn, config)?;
            let mode: String = conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .with_ctx(|| format!("{}: switching to WAL mode", at()))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(Error::storage(format!(
                    "{}: SQLite refused WAL mode (journal mode is {mode}); the store needs a \
                     local file system that supports shared memory",
                    at()
                )));
            }
            conn.pragma_update(None, "synchronous", config.synchronous.pragma_value())
                .with_ctx(at)?;
            // A burst of writes under long reads can grow the WAL; give the disk back after
            // the next checkpoint.
            conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
                .with_ctx(at)?;
            migrate(&mut conn, config)?;
        }
        Role::Reader => {
            conn.pragma_update(None, "query_only", true).with_ctx(at)?;
            check_version(&conn, config)?;
        }
    }
    Ok(conn)
}

/// Read `(user_version, application_id)`.
fn markers(conn: &Connection, config: &SqliteConfig) -> Result<(i64, i64)> {
    let at = || {
        format!(
            "reading the schema version of the SQLite store at {}",
            config.path.display()
        )
    };
    let version = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .with_ctx(at)?;
    let application = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .with_ctx(at)?;
    Ok((version, application))
}

/// Refuse a file this build cannot read: a newer schema, or another application's database.
/// Returns the file's schema version.
fn check_version(conn: &Connection, config: &SqliteConfig) -> Result<i64> {
    let (version, application) = markers(conn, config)?;
    let path = config.path.display();
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!(
                "the SQLite store at {path} has schema version {version}, written by a newer \
                 synckit; this build knows schema versions up to {SCHEMA_VERSION}. Upgrade \
                 synckit-store-sqlite; the file was not changed"
            ),
        ));
    }
    if application != APPLICATION_ID {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
                [],
                |row| row.get(0),
            )
            .with_ctx(|| format!("inspecting the SQLite file at {path}"))?;
        if application != 0 || version != 0 || tables != 0 {
            return Err(Error::config(format!(
                "the SQLite file at {path} is not a synckit store (application_id {application:#x}, \
                 user_version {version}, {tables} tables); give the store a file of its own"
            )));
        }
    }
    Ok(version)
}

/// Bring the schema to [`SCHEMA_VERSION`], all steps in one transaction.
fn migrate(conn: &mut Connection, config: &SqliteConfig) -> Result<()> {
    let at = || format!("migrating the SQLite store at {}", config.path.display());
    // Checked again under the write lock: another process may be migrating the same file.
    check_version(conn, config)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .with_ctx(at)?;
    let from = check_version(&tx, config)?;
    if from == SCHEMA_VERSION {
        return Ok(());
    }
    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let to = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1);
        if to <= from {
            continue;
        }
        tracing::info!(path = %config.path.display(), from = to - 1, to, "migrating sqlite store schema");
        tx.execute_batch(sql)
            .with_ctx(|| format!("{}: applying schema version {to}", at()))?;
        tx.pragma_update(None, "user_version", to).with_ctx(at)?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .with_ctx(at)?;
    tx.commit().with_ctx(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_reach_the_schema_version() {
        assert_eq!(
            i64::try_from(MIGRATIONS.len()).unwrap(),
            SCHEMA_VERSION,
            "one migration per schema version"
        );
    }
}
