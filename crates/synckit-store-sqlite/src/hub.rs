//! The hub role in SQL: append a batch inside one write transaction (the rules of
//! `EventStore`, as the memory store applies them), and read pages, heads and versions.
//!
//! An event's row key is its *position*, `tenant << 40 | seq`: all of a tenant's events sit in
//! one contiguous range of the table's integer B-tree, in `seq` order. That gives each tenant
//! up to 2^40 - 1 (about 10^12) events and the store up to 2^23 - 1 (about 8 million) tenants;
//! past either limit an append fails with `LimitExceeded`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use synckit_types::{
    AggregateId, AppendOutcome, AppendReport, AppendResult, Error, ErrorKind, Event, EventId, Page,
    ReadRequest, RejectCode, Result, Seq, StoredEvent, TenantId,
};

use crate::codec::{decode_event, encode_event};
use crate::error::{SqlContext, to_i64, to_u64};
use crate::postings;

/// Bits of a position that hold the `seq`.
const SEQ_BITS: u32 = 40;
/// The largest `seq` a tenant can reach.
pub(crate) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
/// The largest tenant key (positions stay below `i64::MAX`).
pub(crate) const MAX_TENANT_KEY: i64 = i64::MAX >> SEQ_BITS;

pub(crate) const SELECT_TENANT: &str = "SELECT tenant, head FROM tenants WHERE name = ?1";
const INSERT_TENANT: &str = "INSERT INTO tenants (name, head) VALUES (?1, 0)";
const UPDATE_HEAD: &str = "UPDATE tenants SET head = ?2 WHERE tenant = ?1";
pub(crate) const SELECT_BY_ID: &str = "SELECT position, aggregate_version, recorded_at, body \
     FROM events WHERE id = ?1 AND tenant = ?2";
pub(crate) const SELECT_AGGREGATE: &str =
    "SELECT aggregate, version FROM aggregates WHERE name = ?1 AND tenant = ?2";
const INSERT_AGGREGATE: &str = "INSERT INTO aggregates (tenant, name, version) VALUES (?1, ?2, 0)";
const UPDATE_VERSION: &str = "UPDATE aggregates SET version = ?2 WHERE aggregate = ?1";
pub(crate) const SELECT_KIND: &str = "SELECT kind FROM kinds WHERE name = ?1 AND tenant = ?2";
const INSERT_KIND: &str = "INSERT INTO kinds (tenant, name) VALUES (?1, ?2)";
/// Inserts unless the id is already stored (then nothing changes and the caller looks it up).
const INSERT_EVENT: &str = "INSERT INTO events \
     (position, tenant, id, aggregate, aggregate_version, kind, recorded_at, body) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id, tenant) DO NOTHING";

/// The columns [`stored_event`] decodes, in order.
macro_rules! event_columns {
    () => {
        "position, aggregate_version, recorded_at, id, body"
    };
}

/// One page of the whole log: a range of positions.
pub(crate) const PAGE: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position LIMIT ?3"
);
/// The posting rows of one aggregate that end after a cursor, in order.
pub(crate) const AGGREGATE_POSTINGS: &str =
    "SELECT runs FROM aggregate_postings WHERE aggregate = ?1 AND last > ?2 ORDER BY last";
/// The posting rows of one kind that end after a cursor, in order.
pub(crate) const KIND_POSTINGS: &str =
    "SELECT runs FROM kind_postings WHERE kind = ?1 AND last > ?2 ORDER BY last";
const INSERT_AGGREGATE_POSTING: &str =
    "INSERT INTO aggregate_postings (aggregate, last, runs) VALUES (?1, ?2, ?3)";
const INSERT_KIND_POSTING: &str =
    "INSERT INTO kind_postings (kind, last, runs) VALUES (?1, ?2, ?3)";
/// One event by position, with its kind.
pub(crate) const EVENT_AT: &str = concat!(
    "SELECT ",
    event_columns!(),
    ", kind FROM events WHERE position = ?1"
);
pub(crate) const AGGREGATE_VERSION: &str = "SELECT a.version FROM aggregates a JOIN tenants t \
     ON a.tenant = t.tenant WHERE t.name = ?1 AND a.name = ?2";

/// The position of `seq` in the log of tenant `key` (`seq <= MAX_SEQ`, `key <= MAX_TENANT_KEY`).
fn position(key: i64, seq: u64) -> i64 {
    let seq = i64::try_from(seq.min(MAX_SEQ)).unwrap_or(0);
    (key << SEQ_BITS) | seq
}

/// The `seq` of a stored position.
fn seq_of(position: i64) -> Result<Seq> {
    Ok(Seq(to_u64("position", position)? & MAX_SEQ))
}

/// A tenant's row: its key in the other tables and its head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tenant {
    key: i64,
    head: Seq,
}

/// The tenant's row, if it ever stored an event.
pub(crate) fn tenant(conn: &Connection, tenant: &TenantId) -> Result<Option<Tenant>> {
    let found = conn
        .prepare_cached(SELECT_TENANT)
        .and_then(|mut stmt| {
            stmt.query_row([tenant.as_str()], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()
        })
        .with_ctx(|| format!("reading the head of tenant {tenant}"))?;
    found
        .map(|(key, head)| {
            let head = to_u64("head", head)?;
            if !(1..=MAX_TENANT_KEY).contains(&key) || head > MAX_SEQ {
                return Err(Error::new(
                    ErrorKind::Corrupted,
                    format!("the row of tenant {tenant} is damaged (key {key}, head {head})"),
                ));
            }
            Ok(Tenant {
                key,
                head: Seq(head),
            })
        })
        .transpose()
}

/// Create the row of a tenant that stores its first event.
fn create_tenant(conn: &Connection, tenant: &TenantId) -> Result<Tenant> {
    conn.prepare_cached(INSERT_TENANT)
        .and_then(|mut stmt| stmt.execute([tenant.as_str()]))
        .with_ctx(|| format!("creating the log of tenant {tenant}"))?;
    let key = conn.last_insert_rowid();
    if key > MAX_TENANT_KEY {
        return Err(Error::new(
            ErrorKind::LimitExceeded,
            format!("the SQLite store holds its maximum of {MAX_TENANT_KEY} tenants"),
        )
        .with_retryable(false));
    }
    Ok(Tenant {
        key,
        head: Seq::ZERO,
    })
}

/// The highest committed `seq` of `tenant`.
pub(crate) fn head(conn: &Connection, t: &TenantId) -> Result<Seq> {
    Ok(tenant(conn, t)?.map_or(Seq::ZERO, |t| t.head))
}

/// The current version of an aggregate (0 when it has no events).
pub(crate) fn aggregate_version(
    conn: &Connection,
    tenant: &TenantId,
    aggregate_id: &AggregateId,
) -> Result<u64> {
    let version: Option<i64> = conn
        .prepare_cached(AGGREGATE_VERSION)
        .and_then(|mut stmt| {
            stmt.query_row([tenant.as_str(), aggregate_id.as_str()], |row| row.get(0))
                .optional()
        })
        .with_ctx(|| {
            format!("reading the version of aggregate {aggregate_id} of tenant {tenant}")
        })?;
    version.map_or(Ok(0), |v| to_u64("aggregate version", v))
}

/// What the log already holds under an event id.
struct Known {
    seq: Seq,
    aggregate_version: u64,
    recorded_at: u64,
    same_content: bool,
}

impl Known {
    /// The outcome for an event whose id is known: duplicate, or rejected with `id_conflict`.
    fn outcome(self, id: &EventId) -> AppendOutcome {
        if self.same_content {
            AppendOutcome::Duplicate {
                seq: self.seq,
                aggregate_version: self.aggregate_version,
                recorded_at: self.recorded_at,
            }
        } else {
            AppendOutcome::Rejected {
                code: RejectCode::IdConflict,
                message: format!(
                    "event id {id} is already stored at seq {} with different content",
                    self.seq
                ),
            }
        }
    }
}

/// One aggregate as this batch sees it.
#[derive(Debug, Clone, Copy)]
struct Aggregate {
    /// Its key in `aggregates`, once it has a row.
    key: Option<i64>,
    /// Its version, including events accepted by this batch.
    version: u64,
    /// Whether this batch accepted an event on it (its row needs the new version).
    touched: bool,
    /// Whether an earlier event of this batch on it was not stored.
    blocked: bool,
}

/// Append a batch under the rules of `EventStore`, inside the caller's write transaction.
///
/// Outcomes are decided event by event in batch order, exactly as the memory store does. An
/// event that passes the version checks is inserted at once with `ON CONFLICT (id, tenant) DO
/// NOTHING`, so the unique index that enforces idempotency answers "is this id new?" in the
/// same descent that stores it; only a known id costs a second lookup (and an event on an
/// aggregate or of a kind the tenant never used is looked up first, so that a refused event
/// creates no key). The aggregate versions and the head are written at the end. The caller's
/// transaction makes it all-or-nothing, and SQLite's write lock, held from `BEGIN IMMEDIATE`
/// to `COMMIT`, makes seq assignment serial and gap-free.
pub(crate) fn append(
    conn: &Connection,
    tenant_id: &TenantId,
    events: &[Event],
    now_ms: u64,
) -> Result<AppendReport> {
    let at = || format!("appending {} events to tenant {tenant_id}", events.len());
    let mut tenant = tenant(conn, tenant_id)?;
    let recorded_at = to_i64("recorded_at", now_ms)?;
    let mut insert = conn.prepare_cached(INSERT_EVENT).with_ctx(at)?;
    let mut aggregates: HashMap<&AggregateId, Aggregate> = HashMap::new();
    let mut kinds: HashMap<&str, i64> = HashMap::new();
    let mut head = tenant.map_or(Seq::ZERO, |t| t.head);
    let mut results = Vec::with_capacity(events.len());
    let mut body = Vec::new();
    // The positions this batch adds, per aggregate key and per kind key.
    let mut aggregate_postings: HashMap<i64, postings::Builder> = HashMap::new();
    let mut kind_postings: HashMap<i64, postings::Builder> = HashMap::new();

    for event in events {
        let state = match aggregates.entry(&event.aggregate_id) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let (key, version) = match tenant {
                    Some(t) => aggregate_key(conn, tenant_id, t.key, &event.aggregate_id)?,
                    None => (None, 0),
                };
                entry.insert(Aggregate {
                    key,
                    version,
                    touched: false,
                    blocked: false,
                })
            }
        };
        let outcome = if let Err(error) = event.validate() {
            AppendOutcome::Rejected {
                code: RejectCode::InvalidEvent,
                message: error.message().to_owned(),
            }
        } else {
            let current = state.version;
            // An event written after one of this batch that was not stored must not overtake
            // it, so it conflicts too, checked or not.
            let stale = state.blocked
                || event
                    .expected_version
                    .is_some_and(|expected| expected != current);
            let kind = match kinds.get(event.kind.as_str()) {
                Some(&k) => Some(k),
                None => {
                    let found = match tenant {
                        Some(t) => kind_key(conn, tenant_id, t.key, &event.kind)?,
                        None => None,
                    };
                    if let Some(k) = found {
                        kinds.insert(&event.kind, k);
                    }
                    found
                }
            };
            // A known id answers duplicate or id_conflict before any version check.
            let known_first = if stale || state.key.is_none() || kind.is_none() {
                match tenant {
                    Some(t) => known(conn, tenant_id, t.key, event)?,
                    None => None,
                }
            } else {
                None
            };
            if let Some(known) = known_first {
                known.outcome(&event.id)
            } else if stale {
                AppendOutcome::Conflict {
                    current_version: current,
                }
            } else {
                let seq = head.next()?;
                if seq.get() > MAX_SEQ {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "tenant {tenant_id} holds the SQLite store's maximum of {MAX_SEQ} events"
                        ),
                    )
                    .with_retryable(false));
                }
                let t = match tenant {
                    Some(t) => t,
                    None => *tenant.insert(create_tenant(conn, tenant_id)?),
                };
                let aggregate = match state.key {
                    Some(key) => key,
                    None => *state.key.insert(insert_key(
                        conn,
                        INSERT_AGGREGATE,
                        t.key,
                        event.aggregate_id.as_str(),
                    )?),
                };
                let kind = match kind {
                    Some(key) => key,
                    None => {
                        let key = insert_key(conn, INSERT_KIND, t.key, &event.kind)?;
                        kinds.insert(&event.kind, key);
                        key
                    }
                };
                let aggregate_version = current.checked_add(1).ok_or_else(|| {
                    Error::internal(format!("aggregate {} version overflow", event.aggregate_id))
                })?;
                encode_event(event, &mut body)?;
                let at_position = position(t.key, seq.get());
                let inserted = insert
                    .execute(params![
                        at_position,
                        t.key,
                        event.id.as_str(),
                        aggregate,
                        to_i64("aggregate version", aggregate_version)?,
                        kind,
                        recorded_at,
                        body.as_slice(),
                    ])
                    .with_ctx(at)?;
                if inserted == 1 {
                    head = seq;
                    state.version = aggregate_version;
                    state.touched = true;
                    aggregate_postings
                        .entry(aggregate)
                        .or_default()
                        .push(at_position);
                    kind_postings.entry(kind).or_default().push(at_position);
                    AppendOutcome::Accepted {
                        seq,
                        aggregate_version,
                        recorded_at: now_ms,
                    }
                } else {
                    known(conn, tenant_id, t.key, event)?
                        .ok_or_else(|| {
                            Error::internal(format!(
                                "inserting event {} of tenant {tenant_id} changed nothing, \
                                 yet its id is not stored",
                                event.id
                            ))
                        })?
                        .outcome(&event.id)
                }
            }
        };
        if !matches!(
            outcome,
            AppendOutcome::Accepted { .. } | AppendOutcome::Duplicate { .. }
        ) {
            state.blocked = true;
        }
        results.push(AppendResult {
            id: event.id.clone(),
            outcome,
        });
    }

    if let Some(t) = tenant.filter(|t| head > t.head) {
        let mut update = conn.prepare_cached(UPDATE_VERSION).with_ctx(at)?;
        for state in aggregates.values().filter(|a| a.touched) {
            let version = to_i64("aggregate version", state.version)?;
            update.execute(params![state.key, version]).with_ctx(at)?;
        }
        for (sql, lists) in [
            (INSERT_AGGREGATE_POSTING, aggregate_postings),
            (INSERT_KIND_POSTING, kind_postings),
        ] {
            let mut insert = conn.prepare_cached(sql).with_ctx(at)?;
            for (key, list) in lists {
                for chunk in list.finish() {
                    insert
                        .execute(params![key, chunk.last, chunk.runs])
                        .with_ctx(at)?;
                }
            }
        }
        let head_sql = to_i64("seq", head.get())?;
        conn.prepare_cached(UPDATE_HEAD)
            .and_then(|mut stmt| stmt.execute(params![t.key, head_sql]))
            .with_ctx(at)?;
    }
    Ok(AppendReport { results, head })
}

/// What the log holds under `event`'s id (committed, or inserted by this transaction).
fn known(conn: &Connection, tenant: &TenantId, key: i64, event: &Event) -> Result<Option<Known>> {
    let at = || format!("looking up event {} of tenant {tenant}", event.id);
    let mut stmt = conn.prepare_cached(SELECT_BY_ID).with_ctx(at)?;
    let mut rows = stmt.query(params![event.id.as_str(), key]).with_ctx(at)?;
    let Some(row) = rows.next().with_ctx(at)? else {
        return Ok(None);
    };
    let seq = seq_of(row.get(0).with_ctx(at)?)?;
    let what = format_args!("event {} at seq {seq} of tenant {tenant}", event.id);
    let stored = decode_event(what, event.id.as_str(), body(row, 3).with_ctx(at)?)?;
    Ok(Some(Known {
        seq,
        aggregate_version: to_u64("aggregate version", row.get(1).with_ctx(at)?)?,
        recorded_at: to_u64("recorded_at", row.get(2).with_ctx(at)?)?,
        same_content: stored.same_content(event),
    }))
}

/// The key and version of an aggregate of tenant `key`, if it has a row.
fn aggregate_key(
    conn: &Connection,
    tenant: &TenantId,
    key: i64,
    aggregate: &AggregateId,
) -> Result<(Option<i64>, u64)> {
    let found: Option<(i64, i64)> = conn
        .prepare_cached(SELECT_AGGREGATE)
        .and_then(|mut stmt| {
            stmt.query_row(params![aggregate.as_str(), key], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .with_ctx(|| format!("reading aggregate {aggregate} of tenant {tenant}"))?;
    match found {
        Some((k, version)) => Ok((Some(k), to_u64("aggregate version", version)?)),
        None => Ok((None, 0)),
    }
}

/// The key of a kind of tenant `key`, if it has a row.
fn kind_key(conn: &Connection, tenant: &TenantId, key: i64, kind: &str) -> Result<Option<i64>> {
    conn.prepare_cached(SELECT_KIND)
        .and_then(|mut stmt| {
            stmt.query_row(params![kind, key], |row| row.get(0))
                .optional()
        })
        .with_ctx(|| format!("reading kind {kind:?} of tenant {tenant}"))
}

/// Add an aggregate or kind row for tenant `key`; its new key.
fn insert_key(conn: &Connection, sql: &str, tenant: i64, name: &str) -> Result<i64> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute(params![tenant, name]))
        .with_ctx(|| format!("registering {name:?}"))?;
    Ok(conn.last_insert_rowid())
}

/// The bytes of a body column (stored as a BLOB; TEXT is read too).
pub(crate) fn body<'r>(row: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r [u8]> {
    row.get_ref(index)?
        .as_bytes()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Blob, e.into()))
}

/// A text column without copying it.
fn text<'r>(row: &'r Row<'_>, index: usize) -> rusqlite::Result<&'r str> {
    row.get_ref(index)?
        .as_str()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(index, Type::Text, e.into()))
}

/// How the first column of an event row holds its `seq`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SeqColumn {
    /// A hub position (`tenant << 40 | seq`).
    Position,
    /// The `seq` itself (the node's confirmed log).
    Seq,
}

/// Decode a row of `(position or seq, aggregate_version, recorded_at, id, body)` into a stored
/// event.
pub(crate) fn stored_event(
    row: &Row<'_>,
    column: SeqColumn,
    what: &dyn Fn(u64) -> String,
) -> Result<StoredEvent> {
    let at = || what(0);
    let first: i64 = row.get(0).with_ctx(at)?;
    let seq = match column {
        SeqColumn::Position => seq_of(first)?,
        SeqColumn::Seq => Seq(to_u64("seq", first)?),
    };
    let at = || what(seq.get());
    let aggregate_version = to_u64("aggregate version", row.get(1).with_ctx(at)?)?;
    let recorded_at = to_u64("recorded_at", row.get(2).with_ctx(at)?)?;
    let id = text(row, 3).with_ctx(at)?;
    let event = decode_event(at(), id, body(row, 4).with_ctx(at)?)?;
    Ok(StoredEvent {
        event,
        seq,
        aggregate_version,
        recorded_at,
    })
}

/// One page of `tenant`'s log; `request` is already validated.
pub(crate) fn read(conn: &Connection, tenant_id: &TenantId, request: &ReadRequest) -> Result<Page> {
    let tenant = tenant(conn, tenant_id)?;
    let after = request.after;
    let Some(Tenant { key, head }) = tenant.filter(|t| after < t.head) else {
        return Ok(Page {
            events: Vec::new(),
            next: after,
            has_more: false,
            head: tenant.map_or(Seq::ZERO, |t| t.head),
        });
    };
    let limit = request.limit;
    let sql_limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // `after < head <= MAX_SEQ`: the positions stay inside this tenant's range.
    let from = position(key, after.get());
    let filter = &request.filter;
    let what = |seq: u64| format!("reading events of tenant {tenant_id} (at seq {seq})");
    let at = || what(after.get());
    let mut events = Vec::new();
    let push_rows = |events: &mut Vec<StoredEvent>, mut rows: rusqlite::Rows<'_>| -> Result<()> {
        while let Some(row) = rows.next().with_ctx(at)? {
            events.push(stored_event(row, SeqColumn::Position, &what)?);
        }
        Ok(())
    };
    // Kinds the tenant never used match nothing; `None` means "any kind".
    let kinds: Option<HashSet<i64>> = if filter.kinds.is_empty() {
        None
    } else {
        let mut keys = HashSet::new();
        for kind in &filter.kinds {
            keys.extend(kind_key(conn, tenant_id, key, kind)?);
        }
        Some(keys)
    };
    if let Some(aggregate) = &filter.aggregate_id {
        let Some(aggregate) = aggregate_key(conn, tenant_id, key, aggregate)?.0 else {
            return Ok(page(events, limit, head));
        };
        if kinds.as_ref().is_some_and(HashSet::is_empty) {
            return Ok(page(events, limit, head));
        }
        // The aggregate's positions in order; with kinds, each event's kind is checked before
        // its body is decoded, and the walk stops at a full page.
        let mut stmt = conn.prepare_cached(AGGREGATE_POSTINGS).with_ctx(at)?;
        let mut rows = stmt.query(params![aggregate, from]).with_ctx(at)?;
        let mut at_event = conn.prepare_cached(EVENT_AT).with_ctx(at)?;
        let mut positions = Vec::new();
        while events.len() < limit {
            let Some(row) = rows.next().with_ctx(at)? else {
                break;
            };
            positions.clear();
            // Without kinds every position is a match: decode only as many as the page needs.
            let needed = if kinds.is_some() {
                usize::MAX
            } else {
                limit - events.len()
            };
            let runs = body(row, 0).with_ctx(at)?;
            postings::decode_after(runs, from, needed, &mut positions, &|| {
                format!("a posting row of aggregate key {aggregate} of tenant {tenant_id}")
            })?;
            for &p in &positions {
                let mut found = at_event.query([p]).with_ctx(at)?;
                let row = found
                    .next()
                    .with_ctx(at)?
                    .ok_or_else(|| missing(tenant_id, p))?;
                let wanted = match &kinds {
                    None => true,
                    Some(kinds) => kinds.contains(&row.get::<_, i64>(5).with_ctx(at)?),
                };
                if wanted {
                    events.push(stored_event(row, SeqColumn::Position, &what)?);
                    if events.len() == limit {
                        break;
                    }
                }
            }
        }
    } else if let Some(kinds) = kinds {
        // The first `limit` matches overall are among the first `limit` of each kind.
        let mut positions: Vec<i64> = Vec::new();
        let mut stmt = conn.prepare_cached(KIND_POSTINGS).with_ctx(at)?;
        for kind in kinds {
            let mut of_kind = Vec::new();
            let mut rows = stmt.query(params![kind, from]).with_ctx(at)?;
            while of_kind.len() < limit {
                let Some(row) = rows.next().with_ctx(at)? else {
                    break;
                };
                postings::decode_after(
                    body(row, 0).with_ctx(at)?,
                    from,
                    limit,
                    &mut of_kind,
                    &|| format!("a posting row of kind key {kind} of tenant {tenant_id}"),
                )?;
            }
            positions.extend(of_kind);
        }
        positions.sort_unstable();
        positions.truncate(limit);
        let mut stmt = conn.prepare_cached(EVENT_AT).with_ctx(at)?;
        for p in positions {
            let mut found = stmt.query([p]).with_ctx(at)?;
            let row = found
                .next()
                .with_ctx(at)?
                .ok_or_else(|| missing(tenant_id, p))?;
            events.push(stored_event(row, SeqColumn::Position, &what)?);
        }
    } else {
        let mut stmt = conn.prepare_cached(PAGE).with_ctx(at)?;
        push_rows(
            &mut events,
            stmt.query(params![from, position(key, head.get()), sql_limit])
                .with_ctx(at)?,
        )?;
    }
    Ok(page(events, limit, head))
}

/// The page of `events`: `next` is the last event's seq when the page is full, else the head.
fn page(events: Vec<StoredEvent>, limit: usize, head: Seq) -> Page {
    let next = match events.last() {
        Some(last) if events.len() == limit => last.seq,
        _ => head,
    };
    Page {
        events,
        next,
        has_more: next < head,
        head,
    }
}

/// A posting list names a position the log does not hold.
fn missing(tenant: &TenantId, position: i64) -> Error {
    let seq = seq_of(position).map_or(0, Seq::get);
    Error::new(
        ErrorKind::Corrupted,
        format!(
            "a posting list of tenant {tenant} names seq {seq}, which the log does not hold; \
             the database is damaged"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_each_tenant_by_seq_in_its_own_range() {
        assert_eq!(seq_of(position(1, 5)).unwrap(), Seq(5));
        assert_eq!(seq_of(position(7, MAX_SEQ)).unwrap(), Seq(MAX_SEQ));
        assert!(position(1, MAX_SEQ) < position(2, 0));
        assert!(position(2, 1) < position(2, 2));
        assert_eq!(
            position(MAX_TENANT_KEY, MAX_SEQ),
            i64::MAX,
            "the last position is the largest key"
        );
        assert!(position(MAX_TENANT_KEY, MAX_SEQ) > 0);
    }
}
