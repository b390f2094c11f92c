//! The node role: one node per schema; every `commit(NodeWrite)` is one transaction that checks
//! the whole write against the stored state, then applies it, as `synckit-store-memory` does.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use synckit_types::{
    AggregateHead, AggregateId, AuditQuery, AuditRecord, CommitSummary, Error, ErrorKind, Event,
    Hlc, NodeId, NodeState, NodeWrite, PendingEvent, Result, ReviewEntry, Seq, StoredEvent,
};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use crate::error::{corrupted, limit_i64, pg, stored_u64, to_i64};
use crate::hub::decode_stored;
use crate::store::PostgresStore;

/// Audit records returned when a query's limit is 0.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// The locked `node_state` row.
struct Stored {
    node_id: Option<String>,
    hlc: Hlc,
    cursor: u64,
    next_ordinal: i64,
    next_review: i64,
    next_audit: i64,
    pending_count: i64,
    review_count: i64,
}

/// What the tables hold about the ids and seqs a write touches.
#[derive(Default)]
struct Lookups {
    /// Confirmed id -> seq, for ids the write puts in the outbox or confirms.
    confirmed_ids: HashMap<String, i64>,
    /// Confirmed seq -> id, for the seqs the write confirms at.
    confirmed_seqs: HashMap<i64, String>,
    /// Pending id -> ordinal, for ids the write removes, puts or confirms.
    pending: HashMap<String, i64>,
    /// Existing review ids among those the write adds or removes.
    reviews: HashSet<String>,
    /// Existing audit ids among those the write adds.
    audit: HashSet<String>,
}

/// One outbox slot while a write is applied.
struct Slot<'a> {
    ordinal: i64,
    /// Whether the table has a row for this id at `ordinal`.
    in_table: bool,
    /// The event to (re)write at `ordinal`, when the write puts it.
    put: Option<(&'a Event, &'a str)>,
}

impl PostgresStore {
    /// `NodeStore::state`: one row plus the confirmed log's highest `seq` (an index seek).
    pub(crate) async fn node_state(&self) -> Result<NodeState> {
        let ctx = "reading the node state";
        let client = self.client(ctx).await?;
        let stmt = client
            .prepare_cached(&self.sql.node_state)
            .await
            .map_err(|e| pg(ctx, e))?;
        let row = client
            .query_opt(&stmt, &[])
            .await
            .map_err(|e| pg(ctx, e))?
            .ok_or_else(|| corrupted(format!("{ctx}: the node_state row is missing")))?;
        let get_i64 = |i: usize| row.try_get::<_, i64>(i).map_err(|e| pg(ctx, e));
        let node_id: Option<String> = row.try_get(0).map_err(|e| pg(ctx, e))?;
        let hlc: String = row.try_get(1).map_err(|e| pg(ctx, e))?;
        let head: Option<i64> = row.try_get(5).map_err(|e| pg(ctx, e))?;
        Ok(NodeState {
            node_id: node_id.map(|id| parse_node_id(ctx, id)).transpose()?,
            hlc: parse_hlc(ctx, &hlc)?,
            cursor: Seq(stored_u64("the pull cursor", get_i64(2)?)?),
            pending: stored_u64("the outbox count", get_i64(3)?)?,
            reviews: stored_u64("the review count", get_i64(4)?)?,
            confirmed_head: Seq(stored_u64("the confirmed head", head.unwrap_or(0))?),
        })
    }

    /// `NodeStore::commit`: lock the state row, check the whole write, apply it, commit.
    pub(crate) async fn node_commit(&self, write: NodeWrite) -> Result<CommitSummary> {
        let ctx = "committing a node write";
        let mut client = self.client(ctx).await?;
        if write.is_empty() {
            return Ok(CommitSummary::default());
        }
        // Encode before the transaction; checks come later, in the contract's order.
        let pending_bodies = encode_all(ctx, &write.put_pending)?;
        let confirm_bodies = encode_all(
            ctx,
            &write.confirm.iter().map(|s| &s.event).collect::<Vec<_>>(),
        )?;
        let review_bodies = encode_all(ctx, &write.put_reviews)?;
        let audit_bodies = encode_all(ctx, &write.audit)?;

        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(|e| pg(ctx, e))?;
        let sql = &self.sql;
        let lock = tx
            .prepare_cached(&sql.lock_node)
            .await
            .map_err(|e| pg(ctx, e))?;
        let row = tx
            .query_opt(&lock, &[])
            .await
            .map_err(|e| pg(format!("{ctx}: locking the node state"), e))?
            .ok_or_else(|| corrupted(format!("{ctx}: the node_state row is missing")))?;
        let get_i64 = |i: usize| row.try_get::<_, i64>(i).map_err(|e| pg(ctx, e));
        let hlc_text: String = row.try_get(1).map_err(|e| pg(ctx, e))?;
        let stored = Stored {
            node_id: row.try_get(0).map_err(|e| pg(ctx, e))?,
            hlc: parse_hlc(ctx, &hlc_text)?,
            cursor: stored_u64("the pull cursor", get_i64(2)?)?,
            next_ordinal: get_i64(3)?,
            next_review: get_i64(4)?,
            next_audit: get_i64(5)?,
            pending_count: get_i64(6)?,
            review_count: get_i64(7)?,
        };

        // Lookups, after the lock: each statement sees every commit made before it.
        let mut look = Lookups::default();
        let put_or_confirm: Vec<&str> = write
            .put_pending
            .iter()
            .map(|e| e.id.as_str())
            .chain(write.confirm.iter().map(|s| s.event.id.as_str()))
            .collect();
        let touched_pending: Vec<&str> = write
            .remove_pending
            .iter()
            .map(|id| id.as_str())
            .chain(put_or_confirm.iter().copied())
            .collect();
        let confirm_seqs: Vec<i64> = write
            .confirm
            .iter()
            .filter_map(|s| i64::try_from(s.seq.get()).ok())
            .collect();
        let review_ids: Vec<&str> = write
            .put_reviews
            .iter()
            .map(|r| r.id.as_str())
            .chain(write.remove_reviews.iter().map(String::as_str))
            .collect();
        let audit_ids: Vec<&str> = write.audit.iter().map(|r| r.id.as_str()).collect();
        let lookup = |what: &'static str| format!("{ctx}: looking up {what}");
        if !put_or_confirm.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.confirmed_ids)
                .await
                .map_err(|e| pg(ctx, e))?;
            for row in tx
                .query(&stmt, &[&put_or_confirm])
                .await
                .map_err(|e| pg(lookup("confirmed ids"), e))?
            {
                look.confirmed_ids.insert(
                    row.try_get(0).map_err(|e| pg(ctx, e))?,
                    row.try_get(1).map_err(|e| pg(ctx, e))?,
                );
            }
        }
        if !confirm_seqs.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.confirmed_seqs)
                .await
                .map_err(|e| pg(ctx, e))?;
            for row in tx
                .query(&stmt, &[&confirm_seqs])
                .await
                .map_err(|e| pg(lookup("confirmed seqs"), e))?
            {
                look.confirmed_seqs.insert(
                    row.try_get(0).map_err(|e| pg(ctx, e))?,
                    row.try_get(1).map_err(|e| pg(ctx, e))?,
                );
            }
        }
        if !touched_pending.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.pending_ids)
                .await
                .map_err(|e| pg(ctx, e))?;
            for row in tx
                .query(&stmt, &[&touched_pending])
                .await
                .map_err(|e| pg(lookup("pending ids"), e))?
            {
                look.pending.insert(
                    row.try_get(0).map_err(|e| pg(ctx, e))?,
                    row.try_get(1).map_err(|e| pg(ctx, e))?,
                );
            }
        }
        if !review_ids.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.review_ids)
                .await
                .map_err(|e| pg(ctx, e))?;
            for row in tx
                .query(&stmt, &[&review_ids])
                .await
                .map_err(|e| pg(lookup("review ids"), e))?
            {
                look.reviews.insert(row.try_get(0).map_err(|e| pg(ctx, e))?);
            }
        }
        if !audit_ids.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.audit_ids)
                .await
                .map_err(|e| pg(ctx, e))?;
            for row in tx
                .query(&stmt, &[&audit_ids])
                .await
                .map_err(|e| pg(lookup("audit ids"), e))?
            {
                look.audit.insert(row.try_get(0).map_err(|e| pg(ctx, e))?);
            }
        }

        // A refused write returns here; dropping `tx` rolls it back, so nothing is applied.
        check(&write, &stored, &look)?;
        let plan = plan(
            &write,
            &stored,
            &look,
            &pending_bodies,
            &confirm_bodies,
            &review_bodies,
            &audit_bodies,
        )?;

        let run = |stmt: &'static str| format!("{ctx}: {stmt}");
        if !plan.delete_pending.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.delete_pending)
                .await
                .map_err(|e| pg(ctx, e))?;
            tx.execute(&stmt, &[&plan.delete_pending])
                .await
                .map_err(|e| pg(run("removing outbox events"), e))?;
        }
        if !plan.pending.ordinals.is_empty() {
            let p = &plan.pending;
            let stmt = tx
                .prepare_cached(&sql.insert_pending)
                .await
                .map_err(|e| pg(ctx, e))?;
            tx.execute(&stmt, &[&p.ordinals, &p.ids, &p.aggregates, &p.bodies])
                .await
                .map_err(|e| pg(run("writing outbox events"), e))?;
        }
        if !plan.confirmed.seqs.is_empty() {
            let c = &plan.confirmed;
            let stmt = tx
                .prepare_cached(&sql.insert_confirmed)
                .await
                .map_err(|e| pg(ctx, e))?;
            let params: [&(dyn ToSql + Sync); 6] = [
                &c.seqs,
                &c.ids,
                &c.aggregates,
                &c.versions,
                &c.recorded_at,
                &c.bodies,
            ];
            tx.execute(&stmt, &params)
                .await
                .map_err(|e| pg(run("writing confirmed events"), e))?;
        }
        if !plan.reviews.numbers.is_empty() {
            let r = &plan.reviews;
            let stmt = tx
                .prepare_cached(&sql.insert_reviews)
                .await
                .map_err(|e| pg(ctx, e))?;
            tx.execute(&stmt, &[&r.numbers, &r.ids, &r.bodies])
                .await
                .map_err(|e| pg(run("writing review entries"), e))?;
        }
        if !write.remove_reviews.is_empty() {
            let stmt = tx
                .prepare_cached(&sql.delete_reviews)
                .await
                .map_err(|e| pg(ctx, e))?;
            tx.execute(&stmt, &[&write.remove_reviews])
                .await
                .map_err(|e| pg(run("removing review entries"), e))?;
        }
        if !plan.audit.numbers.is_empty() {
            let a = &plan.audit;
            let stmt = tx
                .prepare_cached(&sql.insert_audit)
                .await
                .map_err(|e| pg(ctx, e))?;
            tx.execute(&stmt, &[&a.numbers, &a.ids, &a.aggregates, &a.bodies])
                .await
                .map_err(|e| pg(run("writing audit records"), e))?;
        }
        let stmt = tx
            .prepare_cached(&sql.update_node)
            .await
            .map_err(|e| pg(ctx, e))?;
        let hlc = plan.hlc.to_string();
        let params: [&(dyn ToSql + Sync); 8] = [
            &plan.node_id,
            &hlc,
            &plan.cursor,
            &plan.next_ordinal,
            &plan.next_review,
            &plan.next_audit,
            &plan.pending_count,
            &plan.review_count,
        ];
        tx.execute(&stmt, &params)
            .await
            .map_err(|e| pg(run("updating the node state"), e))?;
        // Acknowledged only once committed (synchronous_commit=on: flushed to the WAL).
        tx.commit()
            .await
            .map_err(|e| pg(format!("{ctx}: committing"), e))?;
        Ok(CommitSummary {
            newly_confirmed: plan.newly_confirmed,
        })
    }

    /// `NodeStore::pending`: a page of the outbox by ordinal.
    pub(crate) async fn node_pending(&self, after: u64, limit: usize) -> Result<Vec<PendingEvent>> {
        let ctx = "reading the outbox";
        let client = self.client(ctx).await?;
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stmt = client
            .prepare_cached(&self.sql.pending_page)
            .await
            .map_err(|e| pg(ctx, e))?;
        let rows = client
            .query(&stmt, &[&after, &limit_i64(limit)])
            .await
            .map_err(|e| pg(ctx, e))?;
        rows.iter().map(|row| pending_row(ctx, row)).collect()
    }

    /// `NodeStore::pending_for`: one aggregate's outbox events, by index.
    pub(crate) async fn node_pending_for(
        &self,
        aggregate_id: &AggregateId,
    ) -> Result<Vec<PendingEvent>> {
        let ctx = format!("reading the outbox of aggregate {aggregate_id}");
        let ctx = ctx.as_str();
        let client = self.client(ctx).await?;
        let stmt = client
            .prepare_cached(&self.sql.pending_for)
            .await
            .map_err(|e| pg(ctx, e))?;
        let rows = client
            .query(&stmt, &[&aggregate_id.as_str()])
            .await
            .map_err(|e| pg(ctx, e))?;
        rows.iter().map(|row| pending_row(ctx, row)).collect()
    }

    /// `NodeStore::confirmed`: a page of the confirmed log by `seq`.
    pub(crate) async fn node_confirmed(
        &self,
        after: Seq,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let ctx = "reading the confirmed log";
        let client = self.client(ctx).await?;
        let Ok(after) = i64::try_from(after.get()) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stmt = client
            .prepare_cached(&self.sql.confirmed_page)
            .await
            .map_err(|e| pg(ctx, e))?;
        let rows = client
            .query(&stmt, &[&after, &limit_i64(limit)])
            .await
            .map_err(|e| pg(ctx, e))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0).map_err(|e| pg(ctx, e))?;
                let version: i64 = row.try_get(1).map_err(|e| pg(ctx, e))?;
                let recorded_at: i64 = row.try_get(2).map_err(|e| pg(ctx, e))?;
                let id: &str = row.try_get(3).map_err(|e| pg(ctx, e))?;
                let body: &str = row.try_get(4).map_err(|e| pg(ctx, e))?;
                let what = format!("{ctx}: the event at seq {seq}");
                decode_stored(&what, seq, version, recorded_at, id, body)
            })
            .collect()
    }

    /// `NodeStore::aggregate_head`: two index lookups in one statement.
    pub(crate) async fn node_aggregate_head(
        &self,
        aggregate_id: &AggregateId,
    ) -> Result<AggregateHead> {
        let ctx = format!("reading the local head of aggregate {aggregate_id}");
        let ctx = ctx.as_str();
        let client = self.client(ctx).await?;
        let stmt = client
            .prepare_cached(&self.sql.aggregate_head)
            .await
            .map_err(|e| pg(ctx, e))?;
        let row = client
            .query_one(&stmt, &[&aggregate_id.as_str()])
            .await
            .map_err(|e| pg(ctx, e))?;
        let confirmed: Option<i64> = row.try_get(0).map_err(|e| pg(ctx, e))?;
        let pending: i64 = row.try_get(1).map_err(|e| pg(ctx, e))?;
        Ok(AggregateHead {
            confirmed_version: stored_u64(ctx, confirmed.unwrap_or(0))?,
            pending: stored_u64(ctx, pending)?,
        })
    }

    /// `NodeStore::reviews`: the oldest entries of the review queue.
    pub(crate) async fn node_reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
        let ctx = "reading the review queue";
        let client = self.client(ctx).await?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stmt = client
            .prepare_cached(&self.sql.reviews)
            .await
            .map_err(|e| pg(ctx, e))?;
        let rows = client
            .query(&stmt, &[&limit_i64(limit)])
            .await
            .map_err(|e| pg(ctx, e))?;
        rows.iter().map(|row| decode_body(ctx, row)).collect()
    }

    /// `NodeStore::review`: one entry by id.
    pub(crate) async fn node_review(&self, id: &str) -> Result<Option<ReviewEntry>> {
        let ctx = format!("reading review entry {id}");
        let ctx = ctx.as_str();
        let client = self.client(ctx).await?;
        let stmt = client
            .prepare_cached(&self.sql.review)
            .await
            .map_err(|e| pg(ctx, e))?;
        let row = client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(|e| pg(ctx, e))?;
        row.map(|row| decode_body(ctx, &row)).transpose()
    }

    /// `NodeStore::audit`: a page of the audit trail, oldest first, optionally by aggregate.
    pub(crate) async fn node_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let ctx = "reading the audit trail";
        let client = self.client(ctx).await?;
        let limit = limit_i64(if query.limit == 0 {
            DEFAULT_AUDIT_LIMIT
        } else {
            query.limit
        });
        let after = match &query.after {
            None => 0_i64,
            Some(id) => {
                let stmt = client
                    .prepare_cached(&self.sql.audit_number)
                    .await
                    .map_err(|e| pg(ctx, e))?;
                let row = client
                    .query_opt(&stmt, &[&id.as_str()])
                    .await
                    .map_err(|e| pg(ctx, e))?;
                // Records are never removed, so an unknown cursor was not handed out here.
                let row = row.ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("audit record {id} (the `after` cursor) is not in the trail"),
                    )
                })?;
                row.try_get(0).map_err(|e| pg(ctx, e))?
            }
        };
        let rows = match &query.aggregate_id {
            None => {
                let stmt = client
                    .prepare_cached(&self.sql.audit_page)
                    .await
                    .map_err(|e| pg(ctx, e))?;
                client.query(&stmt, &[&after, &limit]).await
            }
            Some(aggregate) => {
                let stmt = client
                    .prepare_cached(&self.sql.audit_page_aggregate)
                    .await
                    .map_err(|e| pg(ctx, e))?;
                client
                    .query(&stmt, &[&aggregate.as_str(), &after, &limit])
                    .await
            }
        }
        .map_err(|e| pg(ctx, e))?;
        rows.iter().map(|row| decode_body(ctx, row)).collect()
    }
}

/// Validate `write` against the stored state, in the order the write is applied, with the
/// errors `synckit-store-memory` gives; nothing has been written yet.
fn check(write: &NodeWrite, stored: &Stored, look: &Lookups) -> Result<()> {
    if let (Some(new), Some(old)) = (&write.node_id, &stored.node_id)
        && new.as_str() != old
    {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!("node id is already {old}; it cannot change to {new}"),
        ));
    }

    // Outbox additions.
    let removed: HashSet<&str> = write.remove_pending.iter().map(|id| id.as_str()).collect();
    let confirming: HashSet<&str> = write.confirm.iter().map(|e| e.event.id.as_str()).collect();
    let mut new_pending: HashSet<&str> = HashSet::new();
    for event in &write.put_pending {
        let id = event.id.as_str();
        event
            .validate()
            .map_err(|e| e.context(format!("pending event {id}")))?;
        if look.confirmed_ids.contains_key(id) || confirming.contains(id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("event {id} is confirmed; it cannot go back to the outbox"),
            ));
        }
        let still_pending = look.pending.contains_key(id) && !removed.contains(id);
        if !still_pending {
            new_pending.insert(id);
        }
    }
    i64::try_from(new_pending.len())
        .ok()
        .and_then(|n| stored.next_ordinal.checked_add(n))
        .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "outbox ordinals exhausted"))?;

    // Confirmed events: the ones that will be recorded must not clash on `seq`.
    let mut confirm_ids: HashSet<&str> = HashSet::new();
    let mut confirm_seqs: HashMap<i64, &str> = HashMap::new();
    for stored_event in &write.confirm {
        let id = stored_event.event.id.as_str();
        stored_event
            .event
            .validate()
            .map_err(|e| e.context(format!("confirmed event {id}")))?;
        if stored_event.seq == Seq::ZERO || stored_event.aggregate_version == 0 {
            return Err(Error::invalid_input(format!(
                "confirmed event {id} has seq {} and aggregate version {}; both start at 1",
                stored_event.seq, stored_event.aggregate_version
            )));
        }
        let seq = to_i64(format!("confirmed event {id}: seq"), stored_event.seq.get())?;
        to_i64(
            format!("confirmed event {id}: aggregate version"),
            stored_event.aggregate_version,
        )?;
        to_i64(
            format!("confirmed event {id}: recorded_at"),
            stored_event.recorded_at,
        )?;
        if look.confirmed_ids.contains_key(id) || !confirm_ids.insert(id) {
            continue; // skipped when applied
        }
        let holder = look
            .confirmed_seqs
            .get(&seq)
            .map(String::as_str)
            .or_else(|| confirm_seqs.get(&seq).copied());
        if let Some(holder) = holder {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("cannot confirm event {id} at seq {seq}: event {holder} is already there"),
            ));
        }
        confirm_seqs.insert(seq, id);
    }

    if let Some(cursor) = write.cursor {
        if cursor.get() < stored.cursor {
            return Err(Error::invalid_input(format!(
                "the pull cursor cannot move backwards from {} to {cursor}",
                stored.cursor
            )));
        }
        to_i64("the pull cursor", cursor.get())?;
    }

    // Review queue: additions, then removals (which may remove an entry added just before).
    let mut new_reviews: HashSet<&str> = HashSet::new();
    for entry in &write.put_reviews {
        if entry.id.is_empty() {
            return Err(Error::invalid_input("review entry id must not be empty"));
        }
        if look.reviews.contains(&entry.id) || !new_reviews.insert(&entry.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("review entry {} already exists", entry.id),
            ));
        }
    }
    i64::try_from(new_reviews.len())
        .ok()
        .and_then(|n| stored.next_review.checked_add(n))
        .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "review numbers exhausted"))?;
    let mut removed_reviews: HashSet<&str> = HashSet::new();
    for id in &write.remove_reviews {
        let exists = look.reviews.contains(id) || new_reviews.contains(id.as_str());
        if !exists || !removed_reviews.insert(id) {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("review entry {id} is not in the review queue"),
            ));
        }
    }

    let mut new_audit: HashSet<&str> = HashSet::new();
    for record in &write.audit {
        if record.id.is_empty() {
            return Err(Error::invalid_input("audit record id must not be empty"));
        }
        if look.audit.contains(&record.id) || !new_audit.insert(&record.id) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("audit record {} already exists", record.id),
            ));
        }
    }
    i64::try_from(new_audit.len())
        .ok()
        .and_then(|n| stored.next_audit.checked_add(n))
        .ok_or_else(|| Error::new(ErrorKind::LimitExceeded, "audit numbers exhausted"))?;
    Ok(())
}

/// Rows for `node_pending` inserts.
#[derive(Default)]
struct PendingRows<'a> {
    ordinals: Vec<i64>,
    ids: Vec<&'a str>,
    aggregates: Vec<&'a str>,
    bodies: Vec<&'a str>,
}

/// Rows for `node_confirmed` inserts.
#[derive(Default)]
struct ConfirmedRows<'a> {
    seqs: Vec<i64>,
    ids: Vec<&'a str>,
    aggregates: Vec<&'a str>,
    versions: Vec<i64>,
    recorded_at: Vec<i64>,
    bodies: Vec<&'a str>,
}

/// Rows for `node_reviews` inserts.
#[derive(Default)]
struct ReviewRows<'a> {
    numbers: Vec<i64>,
    ids: Vec<&'a str>,
    bodies: Vec<&'a str>,
}

/// Rows for `node_audit` inserts.
#[derive(Default)]
struct AuditRows<'a> {
    numbers: Vec<i64>,
    ids: Vec<&'a str>,
    aggregates: Vec<&'a str>,
    bodies: Vec<&'a str>,
}

/// Everything a checked write changes, as rows and new counters.
struct Plan<'a> {
    node_id: Option<String>,
    hlc: Hlc,
    cursor: i64,
    next_ordinal: i64,
    next_review: i64,
    next_audit: i64,
    pending_count: i64,
    review_count: i64,
    delete_pending: Vec<&'a str>,
    pending: PendingRows<'a>,
    confirmed: ConfirmedRows<'a>,
    reviews: ReviewRows<'a>,
    audit: AuditRows<'a>,
    newly_confirmed: u64,
}

/// Turn a write that [`check`] accepted into rows, in the documented order of application.
fn plan<'a>(
    write: &'a NodeWrite,
    stored: &Stored,
    look: &Lookups,
    pending_bodies: &'a [String],
    confirm_bodies: &'a [String],
    review_bodies: &'a [String],
    audit_bodies: &'a [String],
) -> Result<Plan<'a>> {
    let overflow = |what: &str| Error::new(ErrorKind::LimitExceeded, format!("{what} exhausted"));
    let mut next_ordinal = stored.next_ordinal;
    let mut pending_count = stored.pending_count;
    let mut delete_pending: Vec<&'a str> = Vec::new();
    // The outbox slots this write touches: the table's rows, then the write's changes.
    let mut slots: HashMap<&'a str, Slot<'a>> = HashMap::new();
    for id in write
        .remove_pending
        .iter()
        .map(|id| id.as_str())
        .chain(write.put_pending.iter().map(|e| e.id.as_str()))
        .chain(write.confirm.iter().map(|s| s.event.id.as_str()))
    {
        if let Some(&ordinal) = look.pending.get(id) {
            slots.entry(id).or_insert(Slot {
                ordinal,
                in_table: true,
                put: None,
            });
        }
    }
    let mut leave = |slots: &mut HashMap<&'a str, Slot<'a>>, id: &'a str, count: &mut i64| {
        if let Some(slot) = slots.remove(id) {
            *count -= 1;
            if slot.in_table {
                delete_pending.push(id);
            }
        }
    };
    for id in &write.remove_pending {
        leave(&mut slots, id.as_str(), &mut pending_count);
    }
    for (event, body) in write.put_pending.iter().zip(pending_bodies) {
        let id = event.id.as_str();
        match slots.get_mut(id) {
            // Replaced in place: same ordinal.
            Some(slot) => slot.put = Some((event, body.as_str())),
            None => {
                let ordinal = next_ordinal;
                next_ordinal = next_ordinal
                    .checked_add(1)
                    .ok_or_else(|| overflow("outbox ordinals"))?;
                slots.insert(
                    id,
                    Slot {
                        ordinal,
                        in_table: false,
                        put: Some((event, body.as_str())),
                    },
                );
                pending_count += 1;
            }
        }
    }

    let mut confirmed = ConfirmedRows::default();
    let mut confirmed_now: HashSet<&str> = HashSet::new();
    for (stored_event, body) in write.confirm.iter().zip(confirm_bodies) {
        let id = stored_event.event.id.as_str();
        if look.confirmed_ids.contains_key(id) || !confirmed_now.insert(id) {
            continue;
        }
        leave(&mut slots, id, &mut pending_count);
        confirmed.seqs.push(to_i64("seq", stored_event.seq.get())?);
        confirmed.ids.push(id);
        confirmed
            .aggregates
            .push(stored_event.event.aggregate_id.as_str());
        confirmed
            .versions
            .push(to_i64("aggregate version", stored_event.aggregate_version)?);
        confirmed
            .recorded_at
            .push(to_i64("recorded_at", stored_event.recorded_at)?);
        confirmed.bodies.push(body.as_str());
    }

    // What is left to write: new slots, and table rows whose event was replaced (rewritten
    // at the same ordinal, after the delete).
    let mut pending = PendingRows::default();
    let mut rewritten: Vec<(&'a str, &Slot<'a>)> = slots
        .iter()
        .filter(|(_, slot)| slot.put.is_some())
        .map(|(id, slot)| (*id, slot))
        .collect();
    rewritten.sort_by_key(|(_, slot)| slot.ordinal);
    for (id, slot) in rewritten {
        let Some((event, body)) = slot.put else {
            continue;
        };
        if slot.in_table {
            delete_pending.push(id);
        }
        pending.ordinals.push(slot.ordinal);
        pending.ids.push(id);
        pending.aggregates.push(event.aggregate_id.as_str());
        pending.bodies.push(body);
    }

    let mut next_review = stored.next_review;
    let mut reviews = ReviewRows::default();
    for (entry, body) in write.put_reviews.iter().zip(review_bodies) {
        reviews.numbers.push(next_review);
        next_review = next_review
            .checked_add(1)
            .ok_or_else(|| overflow("review numbers"))?;
        reviews.ids.push(entry.id.as_str());
        reviews.bodies.push(body.as_str());
    }
    let review_count = stored.review_count + i64::try_from(write.put_reviews.len()).unwrap_or(0)
        - i64::try_from(write.remove_reviews.len()).unwrap_or(0);

    let mut next_audit = stored.next_audit;
    let mut audit = AuditRows::default();
    for (record, body) in write.audit.iter().zip(audit_bodies) {
        audit.numbers.push(next_audit);
        next_audit = next_audit
            .checked_add(1)
            .ok_or_else(|| overflow("audit numbers"))?;
        audit.ids.push(record.id.as_str());
        audit.aggregates.push(record.conflict.aggregate_id.as_str());
        audit.bodies.push(body.as_str());
    }

    let cursor = match write.cursor {
        Some(cursor) => cursor.get(),
        None => stored.cursor,
    };
    let newly_confirmed = u64::try_from(confirmed.seqs.len()).unwrap_or(u64::MAX);
    Ok(Plan {
        node_id: write
            .node_id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .or_else(|| stored.node_id.clone()),
        hlc: write.hlc.map_or(stored.hlc, |hlc| stored.hlc.max(hlc)),
        cursor: to_i64("the pull cursor", cursor)?,
        next_ordinal,
        next_review,
        next_audit,
        pending_count,
        review_count,
        delete_pending,
        pending,
        confirmed,
        reviews,
        audit,
        newly_confirmed,
    })
}

/// Encode each item as serde_json text.
fn encode_all<T: serde::Serialize>(ctx: &str, items: &[T]) -> Result<Vec<String>> {
    items
        .iter()
        .map(|item| {
            serde_json::to_string(item).map_err(|e| {
                Error::internal(format!("{ctx}: encoding a record: {e}")).with_source(e)
            })
        })
        .collect()
}

/// A `node_pending` row: `ordinal, body`.
fn pending_row(ctx: &str, row: &tokio_postgres::Row) -> Result<PendingEvent> {
    let ordinal: i64 = row.try_get(0).map_err(|e| pg(ctx, e))?;
    let body: &str = row.try_get(1).map_err(|e| pg(ctx, e))?;
    let event: Event = serde_json::from_str(body).map_err(|e| {
        corrupted(format!(
            "{ctx}: the outbox event at ordinal {ordinal} does not decode: {e}"
        ))
        .with_source(e)
    })?;
    Ok(PendingEvent {
        ordinal: stored_u64(format!("{ctx}: ordinal"), ordinal)?,
        event,
    })
}

/// A row whose first column is a serde_json body.
fn decode_body<T: serde::de::DeserializeOwned>(ctx: &str, row: &tokio_postgres::Row) -> Result<T> {
    let body: &str = row.try_get(0).map_err(|e| pg(ctx, e))?;
    serde_json::from_str(body).map_err(|e| {
        corrupted(format!("{ctx}: a stored record does not decode: {e}")).with_source(e)
    })
}

fn parse_hlc(ctx: &str, text: &str) -> Result<Hlc> {
    Hlc::from_str(text).map_err(|e| corrupted(format!("{ctx}: the stored clock: {}", e.message())))
}

fn parse_node_id(ctx: &str, id: String) -> Result<NodeId> {
    NodeId::new(id).map_err(|e| corrupted(format!("{ctx}: the stored node id: {}", e.message())))
}
