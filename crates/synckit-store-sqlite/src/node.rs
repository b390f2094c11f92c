//! The node role in SQL: `commit` applies a `NodeWrite` inside one write transaction with the
//! refusals of the `NodeStore` contract (as the memory store applies them), and the queries
//! read the confirmed log, outbox, review queue and audit trail.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, Row, params};
use synckit_types::{
    AggregateHead, AggregateId, AuditQuery, AuditRecord, CommitSummary, Error, ErrorKind, Event,
    EventId, Hlc, NodeId, NodeState, NodeWrite, PendingEvent, Result, ReviewEntry, Seq,
    StoredEvent,
};

use crate::codec::{decode_event, encode_event};
use crate::error::{SqlContext, check_same, decode, encode, to_i64, to_u64};
use crate::hub::{SeqColumn, body, stored_event};

/// Page size of an audit query with `limit: 0`.
const DEFAULT_AUDIT_LIMIT: usize = 100;

const SELECT_STATE: &str = "SELECT node_id, hlc, cursor, next_ordinal, pending, reviews \
     FROM node_state WHERE singleton = 1";
const UPDATE_STATE: &str = "UPDATE node_state SET node_id = ?1, hlc = ?2, cursor = ?3, \
     next_ordinal = ?4, pending = ?5, reviews = ?6 WHERE singleton = 1";
pub(crate) const CONFIRMED_HEAD: &str = "SELECT max(seq) FROM confirmed";
const DELETE_PENDING: &str = "DELETE FROM outbox WHERE id = ?1";
const PENDING_ORDINAL: &str = "SELECT ordinal FROM outbox WHERE id = ?1";
const REPLACE_PENDING: &str = "UPDATE outbox SET aggregate_id = ?2, body = ?3 WHERE ordinal = ?1";
const INSERT_PENDING: &str =
    "INSERT INTO outbox (ordinal, id, aggregate_id, body) VALUES (?1, ?2, ?3, ?4)";
const IS_CONFIRMED: &str = "SELECT 1 FROM confirmed WHERE id = ?1";
const CONFIRMED_AT: &str = "SELECT id FROM confirmed WHERE seq = ?1";
const INSERT_CONFIRMED: &str = "INSERT INTO confirmed \
     (seq, id, aggregate_id, aggregate_version, recorded_at, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const RAISE_VERSION: &str = "INSERT INTO confirmed_versions (aggregate_id, version) VALUES (?1, ?2) \
     ON CONFLICT (aggregate_id) DO UPDATE SET version = max(version, excluded.version)";
const REVIEW_EXISTS: &str = "SELECT 1 FROM reviews WHERE id = ?1";
const INSERT_REVIEW: &str = "INSERT INTO reviews (id, body) VALUES (?1, ?2)";
const DELETE_REVIEW: &str = "DELETE FROM reviews WHERE id = ?1";
const AUDIT_EXISTS: &str = "SELECT 1 FROM audit WHERE id = ?1";
const INSERT_AUDIT: &str = "INSERT INTO audit (id, aggregate_id, body) VALUES (?1, ?2, ?3)";

pub(crate) const PENDING_PAGE: &str =
    "SELECT ordinal, id, body FROM outbox WHERE ordinal > ?1 ORDER BY ordinal LIMIT ?2";
pub(crate) const PENDING_FOR: &str =
    "SELECT ordinal, id, body FROM outbox WHERE aggregate_id = ?1 ORDER BY ordinal";
const PENDING_COUNT_FOR: &str = "SELECT count(*) FROM outbox WHERE aggregate_id = ?1";
const CONFIRMED_VERSION: &str = "SELECT version FROM confirmed_versions WHERE aggregate_id = ?1";
pub(crate) const CONFIRMED_PAGE: &str = "SELECT seq, aggregate_version, recorded_at, id, body \
     FROM confirmed WHERE seq > ?1 ORDER BY seq LIMIT ?2";
pub(crate) const REVIEWS_PAGE: &str = "SELECT id, body FROM reviews ORDER BY number LIMIT ?1";
const REVIEW_BY_ID: &str = "SELECT id, body FROM reviews WHERE id = ?1";
const AUDIT_NUMBER: &str = "SELECT number FROM audit WHERE id = ?1";
pub(crate) const AUDIT_PAGE: &str =
    "SELECT id, body FROM audit WHERE number > ?1 ORDER BY number LIMIT ?2";
pub(crate) const AUDIT_PAGE_AGGREGATE: &str = "SELECT id, body FROM audit \
     WHERE aggregate_id = ?1 AND number > ?2 ORDER BY number LIMIT ?3";

/// The `node_state` row.
#[derive(Debug, Clone)]
struct Meta {
    node_id: Option<NodeId>,
    hlc: Hlc,
    cursor: Seq,
    next_ordinal: u64,
    pending: u64,
    reviews: u64,
}

fn meta(conn: &Connection) -> Result<Meta> {
    let at = "reading the node state";
    let (node_id, hlc, cursor, next_ordinal, pending, reviews) = conn
        .prepare_cached(SELECT_STATE)
        .and_then(|mut stmt| {
            stmt.query_row([], |row| {
                Ok((
                    row.get::<_, Option<String>>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })
        })
        .ctx(at)?;
    let damaged = |what: &str, e: Error| {
        Error::new(
            ErrorKind::Corrupted,
            format!(
                "the stored node state is damaged: its {what} is invalid: {}",
                e.message()
            ),
        )
        .with_source(e)
    };
    Ok(Meta {
        node_id: node_id
            .map(NodeId::new)
            .transpose()
            .map_err(|e| damaged("node id", e))?,
        hlc: hlc.parse().map_err(|e| damaged("clock", e))?,
        cursor: Seq(to_u64("cursor", cursor)?),
        next_ordinal: to_u64("next ordinal", next_ordinal)?,
        pending: to_u64("pending count", pending)?,
        reviews: to_u64("review count", reviews)?,
    })
}

fn confirmed_head(conn: &Connection) -> Result<Seq> {
    let head: Option<i64> = conn
        .prepare_cached(CONFIRMED_HEAD)
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .ctx("reading the confirmed head")?;
    Ok(Seq(head.map_or(Ok(0), |h| to_u64("confirmed seq", h))?))
}

/// A snapshot of the node's state.
pub(crate) fn state(conn: &Connection) -> Result<NodeState> {
    let meta = meta(conn)?;
    Ok(NodeState {
        node_id: meta.node_id,
        hlc: meta.hlc,
        cursor: meta.cursor,
        pending: meta.pending,
        reviews: meta.reviews,
        confirmed_head: confirmed_head(conn)?,
    })
}

/// Whether a statement with one `?1` parameter returns a row.
fn exists(conn: &Connection, sql: &str, key: &str, at: &dyn Fn() -> String) -> Result<bool> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.exists([key]))
        .with_ctx(at)
}

/// Apply `write` inside the caller's write transaction, in the documented order; the first
/// refusal returns an error and the caller rolls everything back.
///
/// Checking each part as it is applied refuses the same writes as the memory store's
/// check-then-apply: each check sees the state that the earlier parts of the write left, which
/// is what the memory store's checks compute (a pending id confirmed by the same write is
/// checked against the write's `confirm` list, as there).
pub(crate) fn commit(conn: &Connection, write: &NodeWrite) -> Result<CommitSummary> {
    let mut meta = meta(conn)?;
    let mut summary = CommitSummary::default();

    if let Some(new) = &write.node_id {
        match &meta.node_id {
            Some(old) if old != new => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("node id is already {old}; it cannot change to {new}"),
                ));
            }
            _ => meta.node_id = Some(new.clone()),
        }
    }
    if let Some(hlc) = write.hlc {
        meta.hlc = meta.hlc.max(hlc);
    }

    for id in &write.remove_pending {
        meta.pending = meta.pending.saturating_sub(delete(
            conn,
            DELETE_PENDING,
            id.as_str(),
            "removing a pending event",
        )?);
    }

    let confirming: HashSet<&EventId> = write.confirm.iter().map(|e| &e.event.id).collect();
    for event in &write.put_pending {
        put_pending(conn, &mut meta, event, &confirming)?;
    }

    for stored in &write.confirm {
        if confirm(conn, &mut meta, stored)? {
            summary.newly_confirmed = summary.newly_confirmed.saturating_add(1);
        }
    }

    if let Some(cursor) = write.cursor {
        if cursor < meta.cursor {
            return Err(Error::invalid_input(format!(
                "the pull cursor cannot move backwards from {} to {cursor}",
                meta.cursor
            )));
        }
        to_i64("cursor", cursor.get())?;
        meta.cursor = cursor;
    }

    for entry in &write.put_reviews {
        put_review(conn, &mut meta, entry)?;
    }
    for id in &write.remove_reviews {
        if delete(conn, DELETE_REVIEW, id, "removing a review entry")? == 0 {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("review entry {id} is not in the review queue"),
            ));
        }
        meta.reviews = meta.reviews.saturating_sub(1);
    }

    for record in &write.audit {
        put_audit(conn, record)?;
    }

    let cursor = to_i64("cursor", meta.cursor.get())?;
    let next_ordinal = to_i64("next ordinal", meta.next_ordinal)?;
    let pending = to_i64("pending count", meta.pending)?;
    let reviews = to_i64("review count", meta.reviews)?;
    conn.prepare_cached(UPDATE_STATE)
        .and_then(|mut stmt| {
            stmt.execute(params![
                meta.node_id.as_ref().map(NodeId::as_str),
                meta.hlc.to_string(),
                cursor,
                next_ordinal,
                pending,
                reviews,
            ])
        })
        .ctx("saving the node state")?;
    Ok(summary)
}

/// Delete by id; how many rows went (0 or 1).
fn delete(conn: &Connection, sql: &str, id: &str, what: &str) -> Result<u64> {
    let n = conn
        .prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([id]))
        .with_ctx(|| format!("{what} {id}"))?;
    Ok(crate::error::len_u64(n))
}

fn put_pending(
    conn: &Connection,
    meta: &mut Meta,
    event: &Event,
    confirming: &HashSet<&EventId>,
) -> Result<()> {
    let id = event.id.as_str();
    event
        .validate()
        .map_err(|e| e.context(format!("pending event {id}")))?;
    let at = || format!("putting event {id} in the outbox");
    if confirming.contains(&event.id) || exists(conn, IS_CONFIRMED, id, &at)? {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("event {id} is confirmed; it cannot go back to the outbox"),
        ));
    }
    let mut body = Vec::new();
    encode_event(event, &mut body)?;
    let ordinal: Option<i64> = conn
        .prepare_cached(PENDING_ORDINAL)
        .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
        .with_ctx(at)?;
    match ordinal {
        Some(ordinal) => {
            conn.prepare_cached(REPLACE_PENDING)
                .and_then(|mut stmt| {
                    stmt.execute(params![ordinal, event.aggregate_id.as_str(), body])
                })
                .with_ctx(at)?;
        }
        None => {
            let ordinal = meta.next_ordinal;
            meta.next_ordinal = ordinal
                .checked_add(1)
                .filter(|next| i64::try_from(*next).is_ok())
                .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "outbox ordinals exhausted"))?;
            let ordinal = to_i64("ordinal", ordinal)?;
            conn.prepare_cached(INSERT_PENDING)
                .and_then(|mut stmt| {
                    stmt.execute(params![ordinal, id, event.aggregate_id.as_str(), body])
                })
                .with_ctx(at)?;
            meta.pending = meta.pending.saturating_add(1);
        }
    }
    Ok(())
}

/// Record one confirmed event; whether it was new.
fn confirm(conn: &Connection, meta: &mut Meta, stored: &StoredEvent) -> Result<bool> {
    let id = stored.event.id.as_str();
    stored
        .event
        .validate()
        .map_err(|e| e.context(format!("confirmed event {id}")))?;
    if stored.seq == Seq::ZERO || stored.aggregate_version == 0 {
        return Err(Error::invalid_input(format!(
            "confirmed event {id} has seq {} and aggregate version {}; both start at 1",
            stored.seq, stored.aggregate_version
        )));
    }
    let at = || format!("confirming event {id} at seq {}", stored.seq);
    if exists(conn, IS_CONFIRMED, id, &at)? {
        return Ok(false); // already confirmed (before, or earlier in this write): skipped
    }
    let seq = to_i64("seq", stored.seq.get())?;
    let version = to_i64("aggregate version", stored.aggregate_version)?;
    let recorded_at = to_i64("recorded_at", stored.recorded_at)?;
    let holder: Option<String> = conn
        .prepare_cached(CONFIRMED_AT)
        .and_then(|mut stmt| stmt.query_row([seq], |row| row.get(0)).optional())
        .with_ctx(at)?;
    if let Some(holder) = holder {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "cannot confirm event {id} at seq {}: event {holder} is already there",
                stored.seq
            ),
        ));
    }
    meta.pending = meta.pending.saturating_sub(delete(
        conn,
        DELETE_PENDING,
        id,
        "confirming pending event",
    )?);
    let aggregate = stored.event.aggregate_id.as_str();
    conn.prepare_cached(RAISE_VERSION)
        .and_then(|mut stmt| stmt.execute(params![aggregate, version]))
        .with_ctx(at)?;
    let mut body = Vec::new();
    encode_event(&stored.event, &mut body)?;
    conn.prepare_cached(INSERT_CONFIRMED)
        .and_then(|mut stmt| stmt.execute(params![seq, id, aggregate, version, recorded_at, body]))
        .with_ctx(at)?;
    Ok(true)
}

fn put_review(conn: &Connection, meta: &mut Meta, entry: &ReviewEntry) -> Result<()> {
    let id = entry.id.as_str();
    if id.is_empty() {
        return Err(Error::invalid_input("review entry id must not be empty"));
    }
    let at = || format!("adding review entry {id}");
    if exists(conn, REVIEW_EXISTS, id, &at)? {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("review entry {id} already exists"),
        ));
    }
    let body = encode(format_args!("review entry {id}"), entry)?;
    // Numbers come from the rowid: always above every entry still queued, so oldest first.
    conn.prepare_cached(INSERT_REVIEW)
        .and_then(|mut stmt| stmt.execute(params![id, body]))
        .with_ctx(at)?;
    meta.reviews = meta.reviews.saturating_add(1);
    Ok(())
}

fn put_audit(conn: &Connection, record: &AuditRecord) -> Result<()> {
    let id = record.id.as_str();
    if id.is_empty() {
        return Err(Error::invalid_input("audit record id must not be empty"));
    }
    let at = || format!("appending audit record {id}");
    if exists(conn, AUDIT_EXISTS, id, &at)? {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("audit record {id} already exists"),
        ));
    }
    let body = encode(format_args!("audit record {id}"), record)?;
    // Records are never removed, so rowid numbers follow insertion order.
    conn.prepare_cached(INSERT_AUDIT)
        .and_then(|mut stmt| stmt.execute(params![id, record.conflict.aggregate_id.as_str(), body]))
        .with_ctx(at)?;
    Ok(())
}

/// A clamp for `LIMIT`: a larger page than `i64::MAX` rows is all of them.
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// A cursor past `i64::MAX` is past everything stored.
fn sql_after(after: u64) -> i64 {
    i64::try_from(after).unwrap_or(i64::MAX)
}

fn pending_row(row: &Row<'_>) -> Result<PendingEvent> {
    let at = "reading the outbox";
    let ordinal = to_u64("ordinal", row.get(0).ctx(at)?)?;
    let id: String = row.get(1).ctx(at)?;
    let what = format_args!("pending event {id} (ordinal {ordinal})");
    let event = decode_event(what, &id, body(row, 2).ctx(at)?)?;
    Ok(PendingEvent { ordinal, event })
}

fn collect<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    at: &str,
    decode_row: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).ctx(at)?;
    let mut rows = stmt.query(params).ctx(at)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx(at)? {
        out.push(decode_row(row)?);
    }
    Ok(out)
}

/// Pending events with `ordinal > after`, at most `limit`.
pub(crate) fn pending(conn: &Connection, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
    collect(
        conn,
        PENDING_PAGE,
        params![sql_after(after), sql_limit(limit)],
        "reading the outbox",
        pending_row,
    )
}

/// Every pending event of one aggregate, in outbox order.
pub(crate) fn pending_for(conn: &Connection, aggregate: &AggregateId) -> Result<Vec<PendingEvent>> {
    collect(
        conn,
        PENDING_FOR,
        [aggregate.as_str()],
        "reading the outbox of an aggregate",
        pending_row,
    )
}

/// Confirmed events with `seq > after`, at most `limit`.
pub(crate) fn confirmed(conn: &Connection, after: Seq, limit: usize) -> Result<Vec<StoredEvent>> {
    let what = |seq: u64| format!("reading the confirmed log (at seq {seq})");
    collect(
        conn,
        CONFIRMED_PAGE,
        params![sql_after(after.get()), sql_limit(limit)],
        "reading the confirmed log",
        |row| stored_event(row, SeqColumn::Seq, &what),
    )
}

/// Confirmed version and pending count of one aggregate.
pub(crate) fn aggregate_head(conn: &Connection, aggregate: &AggregateId) -> Result<AggregateHead> {
    let at = || format!("reading the local head of aggregate {aggregate}");
    let version: Option<i64> = conn
        .prepare_cached(CONFIRMED_VERSION)
        .and_then(|mut stmt| {
            stmt.query_row([aggregate.as_str()], |row| row.get(0))
                .optional()
        })
        .with_ctx(at)?;
    let pending: i64 = conn
        .prepare_cached(PENDING_COUNT_FOR)
        .and_then(|mut stmt| stmt.query_row([aggregate.as_str()], |row| row.get(0)))
        .with_ctx(at)?;
    Ok(AggregateHead {
        confirmed_version: version.map_or(Ok(0), |v| to_u64("confirmed version", v))?,
        pending: to_u64("pending count", pending)?,
    })
}

fn json_row<T: serde::de::DeserializeOwned>(
    what: &str,
    id_of: impl Fn(&T) -> &str,
) -> impl Fn(&Row<'_>) -> Result<T> {
    move |row| {
        let at = || format!("reading {what}");
        let id: String = row.get(0).with_ctx(at)?;
        let label = format!("{what} {id}");
        let value: T = decode(&label, body(row, 1).with_ctx(at)?)?;
        check_same(&label, &id, id_of(&value))?;
        Ok(value)
    }
}

/// Review-queue entries, oldest first, at most `limit`.
pub(crate) fn reviews(conn: &Connection, limit: usize) -> Result<Vec<ReviewEntry>> {
    collect(
        conn,
        REVIEWS_PAGE,
        [sql_limit(limit)],
        "reading the review queue",
        json_row("review entry", |r: &ReviewEntry| r.id.as_str()),
    )
}

/// One review-queue entry.
pub(crate) fn review(conn: &Connection, id: &str) -> Result<Option<ReviewEntry>> {
    let mut found = collect(
        conn,
        REVIEW_BY_ID,
        [id],
        "reading a review entry",
        json_row("review entry", |r: &ReviewEntry| r.id.as_str()),
    )?;
    Ok(found.pop())
}

/// Audit records, oldest first. An `after` id that is not in the trail is `NotFound`: it cannot
/// be a cursor this store handed out, as records are never removed.
pub(crate) fn audit(conn: &Connection, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
    let limit = sql_limit(if query.limit == 0 {
        DEFAULT_AUDIT_LIMIT
    } else {
        query.limit
    });
    let at = "reading the audit trail";
    let after = match &query.after {
        None => 0,
        Some(id) => conn
            .prepare_cached(AUDIT_NUMBER)
            .and_then(|mut stmt| stmt.query_row([id], |row| row.get::<_, i64>(0)).optional())
            .ctx(at)?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("audit record {id} (the `after` cursor) is not in the trail"),
                )
            })?,
    };
    let decode_row = json_row("audit record", |r: &AuditRecord| r.id.as_str());
    match &query.aggregate_id {
        None => collect(conn, AUDIT_PAGE, params![after, limit], at, decode_row),
        Some(aggregate) => collect(
            conn,
            AUDIT_PAGE_AGGREGATE,
            params![aggregate.as_str(), after, limit],
            at,
            decode_row,
        ),
    }
}
