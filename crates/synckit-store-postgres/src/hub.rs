//! The hub role: append under the tenant's row lock (gap-free `seq` across hubs), paged reads
//! in one snapshot, O(1) head.
//!
//! Why the order is gap-free with any number of hubs over one database: every append
//! transaction first locks its tenant's row in `tenants` (`SELECT ... FOR UPDATE`) and holds it
//! until it commits. It assigns `seq = head + 1 ..` from that row and writes the new head back.
//! So appends of one tenant run one after another, and each commits before the next one can
//! read the head: `seq` order is commit order. A read is one statement, so it sees one snapshot,
//! and a snapshot that sees an append's commit sees every earlier append of the tenant (those
//! committed before it took the lock). A reader that got up to `seq` N has therefore seen every
//! event with `seq <= N`, and any later event gets a larger `seq`.
//!
//! The transaction runs at READ COMMITTED: each statement after the lock takes a fresh snapshot,
//! so the idempotency and version lookups see every append committed before the lock was
//! granted. (At REPEATABLE READ the snapshot would predate the lock wait and the lock itself
//! would fail with a serialization error.)

use std::collections::{HashMap, HashSet};

use synckit_types::{
    AggregateId, AppendOutcome, AppendReport, AppendResult, Error, Event, Page, ReadRequest,
    RejectCode, Result, Seq, StoredEvent, TenantId,
};
use tokio_postgres::IsolationLevel;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::error::{corrupted, limit_i64, pg, stored_u64, to_i64};
use crate::store::PostgresStore;

/// What the log already holds under an event id.
struct Known {
    seq: Seq,
    aggregate_version: u64,
    recorded_at: u64,
    event: Event,
}

/// An accepted event waiting to be inserted.
struct Staged<'a> {
    seq: Seq,
    aggregate_version: u64,
    event: &'a Event,
    body: &'a str,
}

impl PostgresStore {
    /// `EventStore::append`: one transaction under the tenant's row lock.
    ///
    /// Optimistic first: most batches hold only new ids, so the ids are not looked up; the
    /// unique index on `(tenant_key, id)` checks them as the events are inserted. A batch with
    /// a known id (a retry) fails that insert, rolls back and runs again with the lookup. A
    /// batch whose optimistic outcome has a conflict is looked up at once, because a known id
    /// must answer `duplicate` before any version check.
    pub(crate) async fn hub_append(
        &self,
        tenant: &TenantId,
        events: &[Event],
    ) -> Result<AppendReport> {
        let ctx = format!("appending {} events to tenant {tenant}", events.len());
        let ctx = ctx.as_str();
        let mut client = self.client(ctx).await?;
        if events.is_empty() {
            // Answer without creating a row for a tenant that never wrote.
            let head = self.head_with(&client, tenant, ctx).await?;
            return Ok(AppendReport {
                results: Vec::new(),
                head,
            });
        }
        // Encode before taking the lock: other hubs wait for it.
        let bodies = events
            .iter()
            .map(|event| match event.validate() {
                Ok(()) => serde_json::to_string(event).map(Some).map_err(|e| {
                    Error::internal(format!("{ctx}: encoding event {}: {e}", event.id))
                        .with_source(e)
                }),
                Err(_) => Ok(None),
            })
            .collect::<Result<Vec<Option<String>>>>()?;
        match self
            .append_once(&mut client, tenant, events, &bodies, false, ctx)
            .await?
        {
            Some(report) => Ok(report),
            None => self
                .append_once(&mut client, tenant, events, &bodies, true, ctx)
                .await?
                .ok_or_else(|| {
                    Error::internal(format!("{ctx}: a known id was missed by the id lookup"))
                }),
        }
    }

    /// One append transaction. `None`: the optimistic insert met a known id (the transaction
    /// was rolled back); run again with `look_up_ids`.
    async fn append_once(
        &self,
        client: &mut deadpool_postgres::Object,
        tenant: &TenantId,
        events: &[Event],
        bodies: &[Option<String>],
        look_up_ids: bool,
        ctx: &str,
    ) -> Result<Option<AppendReport>> {
        let mut aggregates: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        aggregates.sort_unstable();
        aggregates.dedup();
        let name = tenant.as_str();
        let sql = &self.sql;

        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(|e| pg(ctx, e))?;
        let (lock, versions_stmt) = tokio::try_join!(
            tx.prepare_cached(&sql.lock_tenant),
            tx.prepare_cached(&sql.versions)
        )
        .map_err(|e| pg(ctx, e))?;
        // The version lookup is a statement of its own after the lock, so it sees every
        // append committed before the lock was granted. Sent together: one round trip.
        let version_params: [&(dyn ToSql + Sync); 2] = [&name, &aggregates];
        let lock_params: [&(dyn ToSql + Sync); 1] = [&name];
        let (mut row, mut version_rows) = in_order(tokio::join!(
            tx.query_opt(&lock, &lock_params),
            tx.query(&versions_stmt, &version_params)
        ))
        .map_err(|e| pg(format!("{ctx}: locking the tenant"), e))?;
        if row.is_none() {
            let create = tx
                .prepare_cached(&sql.create_tenant)
                .await
                .map_err(|e| pg(ctx, e))?;
            tx.execute(&create, &[&name])
                .await
                .map_err(|e| pg(format!("{ctx}: creating the tenant"), e))?;
            // Another hub may have created it, and appended, meanwhile: read again.
            (row, version_rows) = in_order(tokio::join!(
                tx.query_opt(&lock, &lock_params),
                tx.query(&versions_stmt, &version_params)
            ))
            .map_err(|e| pg(format!("{ctx}: locking the tenant"), e))?;
        }
        let row = row.ok_or_else(|| {
            Error::internal(format!("{ctx}: the tenant row is missing after its insert"))
        })?;
        let tenant_key: i64 = row.try_get(0).map_err(|e| pg(ctx, e))?;
        let head = Seq(stored_u64(
            format!("tenant {tenant}'s head"),
            row.try_get(1).map_err(|e| pg(ctx, e))?,
        )?);
        let mut versions: HashMap<String, u64> = HashMap::with_capacity(version_rows.len());
        for row in &version_rows {
            let aggregate: String = row.try_get(0).map_err(|e| pg(ctx, e))?;
            let version: Option<i64> = row.try_get(1).map_err(|e| pg(ctx, e))?;
            let version = match version {
                Some(v) => stored_u64(format!("the version of aggregate {aggregate}"), v)?,
                None => 0,
            };
            versions.insert(aggregate, version);
        }

        let now_ms = self.clock.now_ms();
        let mut known = HashMap::new();
        let mut decided = None;
        if !look_up_ids {
            let attempt = decide(events, bodies, &known, &versions, head, now_ms)?;
            let conflicted = attempt
                .0
                .iter()
                .any(|r| matches!(r.outcome, AppendOutcome::Conflict { .. }));
            if !conflicted {
                decided = Some(attempt);
            }
        }
        let (results, staged, new_head) = match decided {
            Some(decided) => decided,
            None => {
                let mut ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                ids.sort_unstable();
                ids.dedup();
                let stmt = tx
                    .prepare_cached(&sql.known_ids)
                    .await
                    .map_err(|e| pg(ctx, e))?;
                let id_params: [&(dyn ToSql + Sync); 2] = [&tenant_key, &ids];
                let rows = tx
                    .query(&stmt, &id_params)
                    .await
                    .map_err(|e| pg(format!("{ctx}: looking up ids"), e))?;
                for row in &rows {
                    let (id, k) = known_row(tenant, row)?;
                    known.insert(id, k);
                }
                decide(events, bodies, &known, &versions, head, now_ms)?
            }
        };

        if !staged.is_empty() {
            let mut seqs = Vec::with_capacity(staged.len());
            let mut staged_ids = Vec::with_capacity(staged.len());
            let mut staged_aggregates = Vec::with_capacity(staged.len());
            let mut staged_versions = Vec::with_capacity(staged.len());
            let mut kinds = Vec::with_capacity(staged.len());
            let mut staged_bodies = Vec::with_capacity(staged.len());
            for s in &staged {
                seqs.push(to_i64("seq", s.seq.get())?);
                staged_ids.push(s.event.id.as_str());
                staged_aggregates.push(s.event.aggregate_id.as_str());
                staged_versions.push(to_i64("aggregate version", s.aggregate_version)?);
                kinds.push(s.event.kind.as_str());
                staged_bodies.push(s.body);
            }
            let recorded_at = to_i64("recorded_at", now_ms)?;
            let new_head_i64 = to_i64("seq", new_head.get())?;
            let write = tx
                .prepare_cached(&sql.write_events)
                .await
                .map_err(|e| pg(ctx, e))?;
            let params: [&(dyn ToSql + Sync); 9] = [
                &tenant_key,
                &recorded_at,
                &new_head_i64,
                &seqs,
                &staged_ids,
                &staged_aggregates,
                &staged_versions,
                &kinds,
                &staged_bodies,
            ];
            if let Err(e) = tx.execute(&write, &params).await {
                if !look_up_ids && e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    // A known id: dropping `tx` rolls the attempt back.
                    return Ok(None);
                }
                return Err(pg(format!("{ctx}: writing the events"), e));
            }
        }
        // Acknowledged only once committed (synchronous_commit=on: flushed to the WAL).
        tx.commit()
            .await
            .map_err(|e| pg(format!("{ctx}: committing"), e))?;
        Ok(Some(AppendReport {
            results,
            head: new_head,
        }))
    }

    /// `EventStore::read`: one statement, so the page and the head come from one snapshot.
    pub(crate) async fn hub_read(&self, tenant: &TenantId, request: &ReadRequest) -> Result<Page> {
        self.check_open()?;
        request.validate()?;
        let ctx = format!("reading tenant {tenant} after {}", request.after);
        let ctx = ctx.as_str();
        let client = self.client(ctx).await?;
        let Ok(after) = i64::try_from(request.after.get()) else {
            // Past any seq PostgreSQL can hold, so past the head.
            let head = self.head_with(&client, tenant, ctx).await?;
            return Ok(Page {
                events: Vec::new(),
                next: request.after,
                has_more: false,
                head,
            });
        };
        let limit = limit_i64(request.limit);
        let name = tenant.as_str();
        let filter = &request.filter;
        let kinds: Vec<&str> = filter.kinds.iter().map(String::as_str).collect();
        let rows = if let Some(aggregate) = &filter.aggregate_id {
            let stmt = client
                .prepare_cached(&self.sql.read_aggregate)
                .await
                .map_err(|e| pg(ctx, e))?;
            client
                .query(&stmt, &[&name, &after, &limit, &aggregate.as_str(), &kinds])
                .await
        } else if !kinds.is_empty() {
            let stmt = client
                .prepare_cached(&self.sql.read_kinds)
                .await
                .map_err(|e| pg(ctx, e))?;
            let upper = after.saturating_add(kind_window(limit));
            client
                .query(&stmt, &[&name, &after, &limit, &kinds, &upper])
                .await
        } else {
            let stmt = client
                .prepare_cached(&self.sql.read_all)
                .await
                .map_err(|e| pg(ctx, e))?;
            let upper = after.saturating_add(limit);
            client.query(&stmt, &[&name, &after, &limit, &upper]).await
        }
        .map_err(|e| pg(ctx, e))?;

        let mut head = Seq::ZERO;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            head = Seq(stored_u64(
                format!("tenant {tenant}'s head"),
                row.try_get(0).map_err(|e| pg(ctx, e))?,
            )?);
            let seq: Option<i64> = row.try_get(1).map_err(|e| pg(ctx, e))?;
            if let Some(seq) = seq {
                events.push(stored_row(tenant, seq, row, 2)?);
            }
        }
        // The plan returns seq order; sorting sorted input is linear, and the contract needs it.
        events.sort_by_key(|e| e.seq);
        if request.after >= head {
            return Ok(Page {
                events: Vec::new(),
                next: request.after,
                has_more: false,
                head,
            });
        }
        let window_end = |upper: i64| Seq(u64::try_from(upper).unwrap_or(u64::MAX)).min(head);
        let next = if filter.is_all() {
            // The range read was (after, after + limit]: every event in it is in the page,
            // even if rows were removed behind the store's back (a gap is not skipped over).
            window_end(after.saturating_add(limit))
        } else if filter.aggregate_id.is_none() {
            // Kinds only: the window (after, after + window] was read whole unless the page
            // filled first.
            match events.last() {
                Some(last) if events.len() == request.limit => last.seq,
                _ => window_end(after.saturating_add(kind_window(limit))),
            }
        } else {
            match events.last() {
                Some(last) if events.len() == request.limit => last.seq,
                _ => head,
            }
        };
        Ok(Page {
            events,
            next,
            has_more: next < head,
            head,
        })
    }

    /// `EventStore::head`: one row of `tenants`.
    pub(crate) async fn hub_head(&self, tenant: &TenantId) -> Result<Seq> {
        let ctx = format!("reading the head of tenant {tenant}");
        let client = self.client(&ctx).await?;
        self.head_with(&client, tenant, &ctx).await
    }

    async fn head_with(
        &self,
        client: &deadpool_postgres::Object,
        tenant: &TenantId,
        ctx: &str,
    ) -> Result<Seq> {
        let stmt = client
            .prepare_cached(&self.sql.head)
            .await
            .map_err(|e| pg(ctx, e))?;
        let row = client
            .query_opt(&stmt, &[&tenant.as_str()])
            .await
            .map_err(|e| pg(ctx, e))?;
        match row {
            None => Ok(Seq::ZERO),
            Some(row) => Ok(Seq(stored_u64(
                format!("tenant {tenant}'s head"),
                row.try_get(0).map_err(|e| pg(ctx, e))?,
            )?)),
        }
    }

    /// `EventStore::aggregate_version`: the newest event of the aggregate, one index seek.
    pub(crate) async fn hub_aggregate_version(
        &self,
        tenant: &TenantId,
        aggregate_id: &AggregateId,
    ) -> Result<u64> {
        let ctx = format!("reading the version of aggregate {aggregate_id} of tenant {tenant}");
        let ctx = ctx.as_str();
        let client = self.client(ctx).await?;
        let stmt = client
            .prepare_cached(&self.sql.aggregate_version)
            .await
            .map_err(|e| pg(ctx, e))?;
        let row = client
            .query_opt(&stmt, &[&tenant.as_str(), &aggregate_id.as_str()])
            .await
            .map_err(|e| pg(ctx, e))?;
        let version: Option<i64> = match row {
            None => None,
            Some(row) => row.try_get(0).map_err(|e| pg(ctx, e))?,
        };
        stored_u64(ctx, version.unwrap_or(0))
    }
}

/// The results of two pipelined statements, or the error of the first that failed: a failed
/// statement aborts the transaction, so the second then fails only because of the first.
fn in_order<A, B, E>(results: (Result<A, E>, Result<B, E>)) -> Result<(A, B), E> {
    let (a, b) = results;
    Ok((a?, b?))
}

/// Decide every event of a batch, in order, as `synckit-store-memory`'s hub does: the outcomes,
/// the events to insert and the new head. `bodies[i]` is `None` for an invalid event.
fn decide<'a>(
    events: &'a [Event],
    bodies: &'a [Option<String>],
    known: &HashMap<String, Known>,
    versions: &HashMap<String, u64>,
    mut head: Seq,
    now_ms: u64,
) -> Result<(Vec<AppendResult>, Vec<Staged<'a>>, Seq)> {
    let mut staged: Vec<Staged<'a>> = Vec::new();
    let mut staged_ids: HashMap<&str, usize> = HashMap::new();
    // Versions of aggregates this batch has appended to, including the staged events.
    let mut batch_versions: HashMap<&AggregateId, u64> = HashMap::new();
    // Aggregates where an earlier event of this batch was not stored.
    let mut blocked: HashSet<&AggregateId> = HashSet::new();
    let mut results = Vec::with_capacity(events.len());

    for (event, body) in events.iter().zip(bodies) {
        let aggregate = &event.aggregate_id;
        let id = event.id.as_str();
        // (seq, version, recorded_at, same content)
        let seen = known
            .get(id)
            .map(|k| {
                (
                    k.seq,
                    k.aggregate_version,
                    k.recorded_at,
                    k.event.same_content(event),
                )
            })
            .or_else(|| {
                staged_ids.get(id).and_then(|&i| staged.get(i)).map(|s| {
                    (
                        s.seq,
                        s.aggregate_version,
                        now_ms,
                        s.event.same_content(event),
                    )
                })
            });
        let outcome = match (body, seen) {
            (None, _) => {
                blocked.insert(aggregate);
                let message = event
                    .validate()
                    .err()
                    .map_or_else(|| "invalid event".to_owned(), |e| e.message().to_owned());
                AppendOutcome::Rejected {
                    code: RejectCode::InvalidEvent,
                    message,
                }
            }
            (Some(_), Some((seq, aggregate_version, recorded_at, true))) => {
                AppendOutcome::Duplicate {
                    seq,
                    aggregate_version,
                    recorded_at,
                }
            }
            (Some(_), Some((seq, _, _, false))) => {
                blocked.insert(aggregate);
                AppendOutcome::Rejected {
                    code: RejectCode::IdConflict,
                    message: format!(
                        "event id {id} is already stored at seq {seq} with different content"
                    ),
                }
            }
            (Some(body), None) => {
                let current = match batch_versions.get(aggregate) {
                    Some(&v) => v,
                    None => versions.get(aggregate.as_str()).copied().unwrap_or(0),
                };
                // An event written after one of this batch that was not stored must not
                // overtake it, so it conflicts too, checked or not.
                let stale = event
                    .expected_version
                    .is_some_and(|expected| expected != current);
                if stale || blocked.contains(aggregate) {
                    blocked.insert(aggregate);
                    AppendOutcome::Conflict {
                        current_version: current,
                    }
                } else {
                    head = head.next()?;
                    let aggregate_version = current.checked_add(1).ok_or_else(|| {
                        Error::internal(format!("aggregate {aggregate} version overflow"))
                    })?;
                    batch_versions.insert(aggregate, aggregate_version);
                    staged_ids.insert(id, staged.len());
                    staged.push(Staged {
                        seq: head,
                        aggregate_version,
                        event,
                        body,
                    });
                    AppendOutcome::Accepted {
                        seq: head,
                        aggregate_version,
                        recorded_at: now_ms,
                    }
                }
            }
        };
        results.push(AppendResult {
            id: event.id.clone(),
            outcome,
        });
    }
    Ok((results, staged, head))
}

/// A `known_ids` row: `seq, aggregate_version, recorded_at, id, body`.
fn known_row(tenant: &TenantId, row: &Row) -> Result<(String, Known)> {
    let seq: i64 = row
        .try_get(0)
        .map_err(|e| pg(format!("reading stored ids of tenant {tenant}"), e))?;
    let stored = stored_row(tenant, seq, row, 1)?;
    Ok((
        stored.event.id.to_string(),
        Known {
            seq: stored.seq,
            aggregate_version: stored.aggregate_version,
            recorded_at: stored.recorded_at,
            event: stored.event,
        },
    ))
}

/// Build a stored event from `seq` and the columns `aggregate_version, recorded_at, id, body`
/// starting at `first`. A body that does not decode, or names another id, is `Corrupted`.
pub(crate) fn stored_row(
    tenant: &TenantId,
    seq: i64,
    row: &Row,
    first: usize,
) -> Result<StoredEvent> {
    let ctx = || format!("reading the event at seq {seq} of tenant {tenant}");
    let version: i64 = row.try_get(first).map_err(|e| pg(ctx(), e))?;
    let recorded_at: i64 = row.try_get(first + 1).map_err(|e| pg(ctx(), e))?;
    let id: &str = row.try_get(first + 2).map_err(|e| pg(ctx(), e))?;
    let body: &str = row.try_get(first + 3).map_err(|e| pg(ctx(), e))?;
    decode_stored(&ctx(), seq, version, recorded_at, id, body)
}

/// Decode one stored event's body and check it against its columns.
pub(crate) fn decode_stored(
    ctx: &str,
    seq: i64,
    version: i64,
    recorded_at: i64,
    id: &str,
    body: &str,
) -> Result<StoredEvent> {
    let event: Event = serde_json::from_str(body).map_err(|e| {
        corrupted(format!("{ctx}: the stored body is not a valid event: {e}")).with_source(e)
    })?;
    if event.id.as_str() != id {
        return Err(corrupted(format!(
            "{ctx}: the stored body names event {} but the row is event {id}",
            event.id
        )));
    }
    Ok(StoredEvent {
        event,
        seq: Seq(stored_u64(format!("{ctx}: seq"), seq)?),
        aggregate_version: stored_u64(format!("{ctx}: aggregate version"), version)?,
        recorded_at: stored_u64(format!("{ctx}: recorded_at"), recorded_at)?,
    })
}

/// Seqs a page filtered by kinds alone scans: at least [`KIND_WINDOW`], and never fewer
/// than the page holds.
fn kind_window(limit: i64) -> i64 {
    limit.max(KIND_WINDOW)
}

/// The smallest seq window a kind-filtered page reads (see `Sql::read_kinds`): a rare kind
/// costs a reader one page per window instead of a scan of the whole log.
const KIND_WINDOW: i64 = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use synckit_types::{ErrorKind, Hlc};

    fn event(id: &str, aggregate: &str) -> Event {
        Event::builder("TaskRenamed", aggregate)
            .id(id)
            .origin("n1")
            .hlc(Hlc::new(1, 0))
            .data(json!({ "id": id }))
            .build()
            .unwrap()
    }

    #[test]
    fn decide_follows_the_memory_rules() {
        let mut bad = event("bad", "b");
        bad.kind = String::new();
        let mut stored = event("old", "a");
        let events = vec![
            event("n1", "a"),
            stored.clone(),
            bad,
            event("n2", "b"),
            event("n1", "a"),
        ];
        let bodies: Vec<Option<String>> = events
            .iter()
            .map(|e| {
                e.validate()
                    .ok()
                    .map(|()| serde_json::to_string(e).unwrap())
            })
            .collect();
        stored.origin = synckit_types::NodeId::new("elsewhere").unwrap();
        let known = HashMap::from([(
            "old".to_owned(),
            Known {
                seq: Seq(1),
                aggregate_version: 1,
                recorded_at: 7,
                event: stored,
            },
        )]);
        let versions = HashMap::from([("a".to_owned(), 1)]);
        let (results, staged, head) =
            decide(&events, &bodies, &known, &versions, Seq(1), 99).unwrap();
        let outcomes: Vec<&AppendOutcome> = results.iter().map(|r| &r.outcome).collect();
        assert_eq!(
            outcomes,
            [
                &AppendOutcome::Accepted {
                    seq: Seq(2),
                    aggregate_version: 2,
                    recorded_at: 99
                },
                &AppendOutcome::Duplicate {
                    seq: Seq(1),
                    aggregate_version: 1,
                    recorded_at: 7
                },
                &AppendOutcome::Rejected {
                    code: RejectCode::InvalidEvent,
                    message: "event kind must not be empty".to_owned()
                },
                &AppendOutcome::Conflict { current_version: 0 },
                &AppendOutcome::Duplicate {
                    seq: Seq(2),
                    aggregate_version: 2,
                    recorded_at: 99
                },
            ]
        );
        assert_eq!(staged.len(), 1);
        assert_eq!(head, Seq(2));
    }

    #[test]
    fn corrupted_bodies_are_reported() {
        let e = decode_stored("ctx", 1, 1, 0, "e1", "{not json").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted);
        let body = serde_json::to_string(&event("e2", "a")).unwrap();
        let e = decode_stored("ctx", 1, 1, 0, "e1", &body).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted);
        assert!(e.to_string().contains("e2"), "{e}");
        let e = decode_stored("ctx", -1, 1, 0, "e2", &body).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted);
        assert!(decode_stored("ctx", 1, 1, 0, "e2", &body).is_ok());
    }
}
