//! Every statement the store runs, with the schema spliced in once at open.
//!
//! The texts are fixed per store, so each pooled connection prepares each one once (deadpool's
//! statement cache) and reuses it. Every hub statement filters by tenant; every paged read seeks
//! through an index and stops at its `LIMIT`.

/// The statements of one store.
#[derive(Debug)]
pub(crate) struct Sql {
    // --- hub ---
    /// `$1` name -> `head`.
    pub head: String,
    /// `$1` name, `$2` aggregate -> the aggregate's latest version (no row: unknown tenant;
    /// NULL: no event).
    pub aggregate_version: String,
    /// `$1` name, `$2` after, `$3` limit, `$4` after + limit -> `head, seq, aggregate_version,
    /// recorded_at, id, body`.
    pub read_all: String,
    /// `$1` name, `$2` after, `$3` limit, `$4` aggregate, `$5` kinds (empty: any kind) -> as
    /// `read_all`.
    pub read_aggregate: String,
    /// `$1` name, `$2` after, `$3` limit, `$4` kinds (not empty), `$5` the window's upper seq
    /// -> as `read_all`.
    pub read_kinds: String,
    /// `$1` name -> `tenant_key, head`, locking the row until commit.
    pub lock_tenant: String,
    /// `$1` name: create the tenant row if missing.
    pub create_tenant: String,
    /// `$1` tenant key, `$2` ids -> `seq, aggregate_version, recorded_at, id, body`.
    pub known_ids: String,
    /// `$1` name, `$2` aggregates -> `aggregate, version` (NULL when new).
    pub versions: String,
    /// `$1` tenant key, `$2` recorded_at, `$3` new head, `$4..$9` arrays of seq, id,
    /// aggregate, version, kind, body: the events and the head, in one statement.
    pub write_events: String,
    // --- node ---
    /// -> `node_id, hlc, pull_cursor, pending_count, review_count, confirmed head`.
    pub node_state: String,
    /// -> the state row's counters, locked until commit.
    pub lock_node: String,
    /// `$1` ids -> `id, seq` of confirmed events.
    pub confirmed_ids: String,
    /// `$1` seqs -> `seq, id` of confirmed events.
    pub confirmed_seqs: String,
    /// `$1` ids -> `id, ordinal` of pending events.
    pub pending_ids: String,
    /// `$1` ids -> existing review ids.
    pub review_ids: String,
    /// `$1` ids -> existing audit ids.
    pub audit_ids: String,
    /// `$1` ids: delete pending events.
    pub delete_pending: String,
    /// `$1..$4` arrays of ordinal, id, aggregate, body.
    pub insert_pending: String,
    /// `$1..$6` arrays of seq, id, aggregate, version, recorded_at, body.
    pub insert_confirmed: String,
    /// `$1..$3` arrays of number, id, body.
    pub insert_reviews: String,
    /// `$1` ids: delete review entries.
    pub delete_reviews: String,
    /// `$1..$4` arrays of number, id, aggregate, body.
    pub insert_audit: String,
    /// `$1` node id, `$2` hlc, `$3` cursor, `$4` next ordinal, `$5` next review,
    /// `$6` next audit, `$7` pending count, `$8` review count.
    pub update_node: String,
    /// `$1` after ordinal, `$2` limit -> `ordinal, body`.
    pub pending_page: String,
    /// `$1` aggregate -> `ordinal, body`.
    pub pending_for: String,
    /// `$1` after seq, `$2` limit -> `seq, aggregate_version, recorded_at, id, body`.
    pub confirmed_page: String,
    /// `$1` aggregate -> confirmed version, pending count.
    pub aggregate_head: String,
    /// `$1` limit -> review bodies, oldest first.
    pub reviews: String,
    /// `$1` id -> a review body.
    pub review: String,
    /// `$1` id -> an audit record's number.
    pub audit_number: String,
    /// `$1` after number, `$2` limit -> `body`.
    pub audit_page: String,
    /// `$1` aggregate, `$2` after number, `$3` limit -> `body`.
    pub audit_page_aggregate: String,
}

impl Sql {
    /// The statements over the tables of `schema` (already quoted).
    pub(crate) fn new(s: &str) -> Sql {
        Sql {
            head: format!("SELECT head FROM {s}.tenants WHERE name = $1"),
            // A scalar subquery, so the newest event is one backward index seek (a join here
            // plans as a sort of the whole aggregate).
            aggregate_version: format!(
                "SELECT (
                     SELECT e.aggregate_version FROM {s}.events e
                     WHERE e.tenant_key = t.tenant_key AND e.aggregate_id = $2
                     ORDER BY e.seq DESC LIMIT 1
                 ) FROM {s}.tenants t WHERE t.name = $1"
            ),
            // A tenant's seqs are dense (1..=head, never deleted), so the page is the range
            // (after, after + limit]: bounded whatever plan PostgreSQL picks.
            read_all: format!(
                "SELECT t.head, e.seq, e.aggregate_version, e.recorded_at, e.id, e.body
                 FROM {s}.tenants t
                 LEFT JOIN LATERAL (
                     SELECT seq, aggregate_version, recorded_at, id, body FROM {s}.events
                     WHERE tenant_key = t.tenant_key AND seq > $2 AND seq <= $4
                     ORDER BY seq LIMIT $3
                 ) e ON TRUE
                 WHERE t.name = $1"
            ),
            read_aggregate: format!(
                "SELECT t.head, e.seq, e.aggregate_version, e.recorded_at, e.id, e.body
                 FROM {s}.tenants t
                 LEFT JOIN LATERAL (
                     SELECT seq, aggregate_version, recorded_at, id, body FROM {s}.events
                     WHERE tenant_key = t.tenant_key AND aggregate_id = $4 AND seq > $2
                       AND (cardinality($5::text[]) = 0 OR kind = ANY($5))
                     ORDER BY seq LIMIT $3
                 ) e ON TRUE
                 WHERE t.name = $1"
            ),
            // No kind index (it cost a third of append throughput): a page of kinds reads the
            // seq window (after, $4] through the primary key and keeps what matches, so a page
            // costs at most one window of rows whatever the kinds' frequency.
            read_kinds: format!(
                "SELECT t.head, e.seq, e.aggregate_version, e.recorded_at, e.id, e.body
                 FROM {s}.tenants t
                 LEFT JOIN LATERAL (
                     SELECT seq, aggregate_version, recorded_at, id, body FROM {s}.events
                     WHERE tenant_key = t.tenant_key AND seq > $2 AND seq <= $5
                       AND kind = ANY($4)
                     ORDER BY seq LIMIT $3
                 ) e ON TRUE
                 WHERE t.name = $1"
            ),
            lock_tenant: format!(
                "SELECT tenant_key, head FROM {s}.tenants WHERE name = $1 FOR UPDATE"
            ),
            create_tenant: format!(
                "INSERT INTO {s}.tenants (name) VALUES ($1) ON CONFLICT (name) DO NOTHING"
            ),
            known_ids: format!(
                "SELECT seq, aggregate_version, recorded_at, id, body FROM {s}.events
                 WHERE tenant_key = $1 AND id = ANY($2::text[])"
            ),
            // By tenant name, so that it can be sent with the lock, in one round trip.
            versions: format!(
                "SELECT a.aggregate_id, (
                     SELECT e.aggregate_version FROM {s}.events e
                     WHERE e.tenant_key = (SELECT tenant_key FROM {s}.tenants WHERE name = $1)
                       AND e.aggregate_id = a.aggregate_id
                     ORDER BY e.seq DESC LIMIT 1
                 ) FROM unnest($2::text[]) AS a(aggregate_id)"
            ),
            // The events and the new head in one statement: one round trip, one array parse.
            write_events: format!(
                "WITH ev AS (
                     INSERT INTO {s}.events (tenant_key, seq, id, aggregate_id,
                                             aggregate_version, kind, recorded_at, body)
                     SELECT $1, u.seq, u.id, u.aggregate_id, u.version, u.kind, $2, u.body
                     FROM unnest($4::bigint[], $5::text[], $6::text[], $7::bigint[],
                                 $8::text[], $9::text[])
                         AS u(seq, id, aggregate_id, version, kind, body)
                 )
                 UPDATE {s}.tenants SET head = $3 WHERE tenant_key = $1"
            ),

            node_state: format!(
                "SELECT node_id, hlc, pull_cursor, pending_count, review_count,
                        (SELECT max(seq) FROM {s}.node_confirmed)
                 FROM {s}.node_state"
            ),
            lock_node: format!(
                "SELECT node_id, hlc, pull_cursor, next_ordinal, next_review, next_audit,
                        pending_count, review_count
                 FROM {s}.node_state FOR UPDATE"
            ),
            confirmed_ids: format!(
                "SELECT id, seq FROM {s}.node_confirmed WHERE id = ANY($1::text[])"
            ),
            confirmed_seqs: format!(
                "SELECT seq, id FROM {s}.node_confirmed WHERE seq = ANY($1::bigint[])"
            ),
            pending_ids: format!(
                "SELECT id, ordinal FROM {s}.node_pending WHERE id = ANY($1::text[])"
            ),
            review_ids: format!("SELECT id FROM {s}.node_reviews WHERE id = ANY($1::text[])"),
            audit_ids: format!("SELECT id FROM {s}.node_audit WHERE id = ANY($1::text[])"),
            delete_pending: format!("DELETE FROM {s}.node_pending WHERE id = ANY($1::text[])"),
            insert_pending: format!(
                "INSERT INTO {s}.node_pending (ordinal, id, aggregate_id, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])"
            ),
            insert_confirmed: format!(
                "INSERT INTO {s}.node_confirmed
                     (seq, id, aggregate_id, aggregate_version, recorded_at, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[],
                                      $5::bigint[], $6::text[])"
            ),
            insert_reviews: format!(
                "INSERT INTO {s}.node_reviews (number, id, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])"
            ),
            delete_reviews: format!("DELETE FROM {s}.node_reviews WHERE id = ANY($1::text[])"),
            insert_audit: format!(
                "INSERT INTO {s}.node_audit (number, id, aggregate_id, body)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])"
            ),
            update_node: format!(
                "UPDATE {s}.node_state SET node_id = $1, hlc = $2, pull_cursor = $3,
                     next_ordinal = $4, next_review = $5, next_audit = $6,
                     pending_count = $7, review_count = $8"
            ),
            pending_page: format!(
                "SELECT ordinal, body FROM {s}.node_pending WHERE ordinal > $1
                 ORDER BY ordinal LIMIT $2"
            ),
            pending_for: format!(
                "SELECT ordinal, body FROM {s}.node_pending WHERE aggregate_id = $1
                 ORDER BY ordinal"
            ),
            confirmed_page: format!(
                "SELECT seq, aggregate_version, recorded_at, id, body FROM {s}.node_confirmed
                 WHERE seq > $1 ORDER BY seq LIMIT $2"
            ),
            aggregate_head: format!(
                "SELECT (SELECT max(aggregate_version) FROM {s}.node_confirmed
                         WHERE aggregate_id = $1),
                        (SELECT count(*) FROM {s}.node_pending WHERE aggregate_id = $1)"
            ),
            reviews: format!("SELECT body FROM {s}.node_reviews ORDER BY number LIMIT $1"),
            review: format!("SELECT body FROM {s}.node_reviews WHERE id = $1"),
            audit_number: format!("SELECT number FROM {s}.node_audit WHERE id = $1"),
            audit_page: format!(
                "SELECT body FROM {s}.node_audit WHERE number > $1 ORDER BY number LIMIT $2"
            ),
            audit_page_aggregate: format!(
                "SELECT body FROM {s}.node_audit WHERE aggregate_id = $1 AND number > $2
                 ORDER BY number LIMIT $3"
            ),
        }
    }
}
