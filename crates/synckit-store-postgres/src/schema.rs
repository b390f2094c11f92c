//! The store's tables and their versioned migrations, applied at open under an advisory lock.
//!
//! Tables at version 2 (all tables live in the configured schema):
//!
//! | table | key | holds |
//! |---|---|---|
//! | `schema_migrations` | `version` | one row per applied migration, with `applied_at` |
//! | `tenants` | `tenant_key` (identity), unique `name` | each tenant's `head`: the append lock and O(1) head |
//! | `events` | `(tenant_key, seq)` | the hub logs; unique `(tenant_key, id)`, index `(tenant_key, aggregate_id, seq)` |
//! | `node_state` | single row | node id, clock, pull cursor, ordinal and number counters, outbox and review counts |
//! | `node_confirmed` | `seq`, unique `id` | the node's confirmed log; index `(aggregate_id, aggregate_version)` |
//! | `node_pending` | `ordinal`, unique `id` | the outbox; index `(aggregate_id, ordinal)` |
//! | `node_reviews` | `number`, unique `id` | the review queue |
//! | `node_audit` | `number`, unique `id` | the audit trail; index `(aggregate_id, number)` |
//!
//! Migrations: 1 creates the tables; 2 drops the `(tenant_key, kind, seq)` index that version 1
//! kept, because its upkeep cost a third of append throughput, while a kind filter reads a
//! bounded window of the log instead (see `Sql::read_kinds`).
//!
//! Event, review and audit bodies are the serde_json text of the contract types, in `TEXT`
//! columns: a body that does not decode is reported as `Corrupted`, never trusted. Identifier
//! columns use the "C" collation: byte order, no locale cost in the indexes.

use synckit_types::{Error, ErrorKind, Result};
use tokio_postgres::IsolationLevel;
use tracing::info;

use crate::error::pg;

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

/// Class id of the advisory lock that serializes migrations ("synk"); the object id is the
/// hash of the schema name, so stores over different schemas do not wait for each other.
const MIGRATION_LOCK_CLASS: i32 = 0x7379_6e6b;

/// Migration `n` is `MIGRATIONS[n - 1]`; `{s}` stands for the quoted schema name.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE {s}.tenants (
    tenant_key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    head BIGINT NOT NULL DEFAULT 0 CHECK (head >= 0)
);
CREATE TABLE {s}.events (
    tenant_key BIGINT NOT NULL,
    seq BIGINT NOT NULL CHECK (seq > 0),
    id TEXT COLLATE "C" NOT NULL,
    aggregate_id TEXT COLLATE "C" NOT NULL,
    aggregate_version BIGINT NOT NULL CHECK (aggregate_version > 0),
    kind TEXT COLLATE "C" NOT NULL,
    recorded_at BIGINT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (tenant_key, seq)
);
CREATE UNIQUE INDEX events_id ON {s}.events (tenant_key, id);
CREATE INDEX events_aggregate ON {s}.events (tenant_key, aggregate_id, seq);
CREATE INDEX events_kind ON {s}.events (tenant_key, kind, seq);

CREATE TABLE {s}.node_state (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    node_id TEXT,
    hlc TEXT NOT NULL DEFAULT '0000000000000000-00000000',
    pull_cursor BIGINT NOT NULL DEFAULT 0,
    next_ordinal BIGINT NOT NULL DEFAULT 1,
    next_review BIGINT NOT NULL DEFAULT 1,
    next_audit BIGINT NOT NULL DEFAULT 1,
    pending_count BIGINT NOT NULL DEFAULT 0,
    review_count BIGINT NOT NULL DEFAULT 0
);
INSERT INTO {s}.node_state DEFAULT VALUES;
CREATE TABLE {s}.node_confirmed (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    aggregate_id TEXT COLLATE "C" NOT NULL,
    aggregate_version BIGINT NOT NULL CHECK (aggregate_version > 0),
    recorded_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX node_confirmed_aggregate ON {s}.node_confirmed (aggregate_id, aggregate_version);
CREATE TABLE {s}.node_pending (
    ordinal BIGINT PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    aggregate_id TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX node_pending_aggregate ON {s}.node_pending (aggregate_id, ordinal);
CREATE TABLE {s}.node_reviews (
    number BIGINT PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE {s}.node_audit (
    number BIGINT PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    aggregate_id TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX node_audit_aggregate ON {s}.node_audit (aggregate_id, number);
"#,
    r#"
DROP INDEX IF EXISTS {s}.events_kind;
"#,
];

/// The schema name as a quoted SQL identifier (it is validated to be a plain identifier).
pub(crate) fn quote(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

/// Bring `schema` to [`SCHEMA_VERSION`] in one transaction, or refuse a newer one.
///
/// Two stores opening together wait for each other on a transaction-scoped advisory lock, so
/// each migration runs once. A store whose schema is already current needs no DDL privilege:
/// a role with only table privileges can open it.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<()> {
    let q = quote(schema);
    let ctx = |step: &str| format!("opening schema {schema}: {step}");
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(|e| pg(ctx("starting the migration transaction"), e))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&MIGRATION_LOCK_CLASS, &schema],
    )
    .await
    .map_err(|e| pg(ctx("taking the migration lock"), e))?;

    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await
        .map_err(|e| pg(ctx("looking the schema up"), e))?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {q}"))
            .await
            .map_err(|e| pg(ctx("creating the schema"), e))?;
    }
    let table = format!("{q}.schema_migrations");
    let has_table = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .map_err(|e| pg(ctx("looking for schema_migrations"), e))?
        .try_get::<_, bool>(0)
        .map_err(|e| pg(ctx("looking for schema_migrations"), e))?;
    if !has_table {
        tx.batch_execute(&format!(
            "CREATE TABLE {table} (
                version BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )"
        ))
        .await
        .map_err(|e| pg(ctx("creating schema_migrations"), e))?;
    }
    let current: i64 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {table}"),
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| pg(ctx("reading the schema version"), e))?;
    if current > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!(
                "schema {schema} is at version {current}, newer than version {SCHEMA_VERSION} \
                 that this synckit-store-postgres knows; upgrade synckit, or open another schema"
            ),
        ));
    }
    if current < 0 {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!("schema {schema} records the impossible version {current}"),
        ));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        tx.batch_execute(&migration.replace("{s}", &q))
            .await
            .map_err(|e| pg(ctx(&format!("applying migration {version}")), e))?;
        tx.execute(
            &format!("INSERT INTO {table} (version) VALUES ($1)"),
            &[&version],
        )
        .await
        .map_err(|e| pg(ctx(&format!("recording migration {version}")), e))?;
        info!(schema, version, "applied synckit-store-postgres migration");
    }
    tx.commit()
        .await
        .map_err(|e| pg(ctx("committing the migrations"), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_match_the_version() {
        assert_eq!(i64::try_from(MIGRATIONS.len()).unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("synckit"), "\"synckit\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
