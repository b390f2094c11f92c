//! The store conformance suite: every `EventStore` and `NodeStore` backend runs it.
//!
//! A backend's integration test calls [`event_store_suite`] and [`node_store_suite`] with a
//! function that opens a fresh, empty store; each check then runs on its own store. The checks
//! are public too, so a backend can run one alone while chasing a failure:
//!
//! ```
//! use std::sync::Arc;
//! use synckit_store_memory::MemoryStore;
//! use synckit_testkit::store_suite::{check_tenant_isolation, event_store_suite};
//! use synckit_types::DynEventStore;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In a backend's tests/, under #[tokio::test(flavor = "multi_thread", worker_threads = 2)]:
//! event_store_suite(|| async { Arc::new(MemoryStore::new()) as DynEventStore }).await;
//! // One check alone:
//! check_tenant_isolation(Arc::new(MemoryStore::new())).await;
//! # }
//! ```
//!
//! Every check panics with a message naming what broke. None of them sleeps or assumes a runtime
//! flavor: concurrency comes from `tokio::spawn` and `yield_now`, so the checks run on a
//! current-thread runtime as well as a multi-thread one (which finds more races).

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use serde_json::{Value, json};
use synckit_types::{
    AggregateHead, AggregateId, AppendOutcome, AppendReport, AuditQuery, AuditRecord, Conflict,
    DecisionKind, DynEventStore, DynNodeStore, ErrorKind, Event, EventId, EventStoreExt, Filter,
    Hlc, MAX_KIND_LEN, MAX_PAGE_SIZE, NodeId, NodeState, NodeStoreExt, NodeWrite, Page,
    PendingEvent, ReadRequest, RejectCode, ResolutionContext, Result, ReviewEntry, Seq,
    StoredEvent, TenantId,
};
use tokio::task::yield_now;

// ---------------------------------------------------------------------------------------------
// Suites
// ---------------------------------------------------------------------------------------------

macro_rules! run_checks {
    ($new_store:ident: $($check:ident),+ $(,)?) => {
        $(
            eprintln!("store suite: {}", stringify!($check));
            $check($new_store().await).await;
        )+
    };
}

/// Run every `EventStore` check, each on a fresh store from `new_store`.
pub async fn event_store_suite<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynEventStore>,
{
    run_checks!(new_store:
        check_append_assigns_positions,
        check_idempotent_append,
        check_id_conflict,
        check_expected_version,
        check_batch_failure_blocks_aggregate,
        check_mixed_batch_outcomes,
        check_concurrent_expected_version,
        check_read_paging,
        check_read_filters,
        check_readers_never_skip,
        check_tenant_isolation,
        check_head_and_aggregate_version,
        check_append_cancellation,
        check_event_store_closed,
    );
}

/// Run every `NodeStore` check, each on a fresh store from `new_store`.
pub async fn node_store_suite<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = DynNodeStore>,
{
    run_checks!(new_store:
        check_node_initial_state,
        check_node_id_assignment,
        check_commit_is_atomic,
        check_cursor_moves_forward_only,
        check_outbox_order_and_replace,
        check_confirm_leaves_outbox,
        check_confirm_idempotent,
        check_put_pending_of_confirmed_fails,
        check_aggregate_head,
        check_review_queue,
        check_audit_trail,
        check_hlc_only_moves_forward,
        check_pending_paging,
        check_confirmed_paging,
        check_node_store_closed,
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn agg(name: &str) -> AggregateId {
    AggregateId::new(name).unwrap()
}

fn eid(id: &str) -> EventId {
    EventId::new(id).unwrap()
}

/// An event of kind `TaskRenamed` with `data`, without a version check.
fn event_data(id: &str, aggregate: &str, data: Value) -> Event {
    Event::builder("TaskRenamed", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(data)
        .build()
        .unwrap()
}

/// An event whose payload names its id, without a version check.
fn event(id: &str, aggregate: &str) -> Event {
    event_data(id, aggregate, json!({ "id": id }))
}

/// An event of `kind`, without a version check.
fn event_kind(id: &str, aggregate: &str, kind: &str) -> Event {
    Event::builder(kind, aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id }))
        .build()
        .unwrap()
}

/// An event that expects its aggregate at `version`.
fn checked(id: &str, aggregate: &str, version: u64) -> Event {
    Event::builder("TaskRenamed", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id }))
        .expected_version(version)
        .build()
        .unwrap()
}

fn ids(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.id.as_str()).collect()
}

fn seqs(page: &Page) -> Vec<u64> {
    page.events.iter().map(|e| e.seq.get()).collect()
}

fn outcomes(report: &AppendReport) -> Vec<&AppendOutcome> {
    report.results.iter().map(|r| &r.outcome).collect()
}

/// Check an append answered one result per event, in order, and return it.
fn one_per_event(report: AppendReport, events: &[Event], what: &str) -> AppendReport {
    let sent: Vec<&EventId> = events.iter().map(|e| &e.id).collect();
    let answered: Vec<&EventId> = report.results.iter().map(|r| &r.id).collect();
    assert_eq!(
        answered, sent,
        "{what}: the append must answer one result per event, in batch order"
    );
    report
}

async fn append(store: &DynEventStore, t: &TenantId, events: &[Event], what: &str) -> AppendReport {
    let report = store
        .append(t, events)
        .await
        .unwrap_or_else(|e| panic!("{what}: append failed: {e}"));
    one_per_event(report, events, what)
}

/// `(seq, aggregate_version)` of an accepted outcome.
#[track_caller]
fn accepted(outcome: &AppendOutcome, what: &str) -> (u64, u64) {
    match outcome {
        AppendOutcome::Accepted {
            seq,
            aggregate_version,
            ..
        } => (seq.get(), *aggregate_version),
        other => panic!("{what}: expected accepted, got {other:?}"),
    }
}

/// `(seq, aggregate_version)` of a duplicate outcome.
#[track_caller]
fn duplicate(outcome: &AppendOutcome, what: &str) -> (u64, u64) {
    match outcome {
        AppendOutcome::Duplicate {
            seq,
            aggregate_version,
            ..
        } => (seq.get(), *aggregate_version),
        other => panic!("{what}: expected duplicate, got {other:?}"),
    }
}

#[track_caller]
fn conflict(outcome: &AppendOutcome, current: u64, what: &str) {
    match outcome {
        AppendOutcome::Conflict { current_version } => assert_eq!(
            *current_version, current,
            "{what}: conflict must report the aggregate's current version"
        ),
        other => panic!("{what}: expected conflict (current {current}), got {other:?}"),
    }
}

#[track_caller]
fn rejected(outcome: &AppendOutcome, code: RejectCode, what: &str) {
    match outcome {
        AppendOutcome::Rejected { code: got, .. } => {
            assert_eq!(*got, code, "{what}: wrong rejection code")
        }
        other => panic!("{what}: expected rejected ({code:?}), got {other:?}"),
    }
}

#[track_caller]
fn expect_kind<T: Debug>(result: Result<T>, kind: ErrorKind, what: &str) {
    match result {
        Ok(value) => panic!("{what}: expected a {kind} error, got Ok({value:?})"),
        Err(e) => assert_eq!(e.kind(), kind, "{what}: wrong error kind: {e}"),
    }
}

async fn read(store: &DynEventStore, t: &TenantId, request: ReadRequest) -> Page {
    store
        .read(t, &request)
        .await
        .unwrap_or_else(|e| panic!("read {request:?} failed: {e}"))
}

async fn log(store: &DynEventStore, t: &TenantId) -> Vec<StoredEvent> {
    store.read_all(t).await.unwrap()
}

#[track_caller]
fn page_is(page: &Page, seqs_: &[u64], next: u64, has_more: bool, head: u64, what: &str) {
    assert_eq!(seqs(page), seqs_, "{what}: events of the page");
    assert_eq!(page.next, Seq(next), "{what}: next cursor");
    assert_eq!(page.has_more, has_more, "{what}: has_more");
    assert_eq!(page.head, Seq(head), "{what}: head");
}

/// Page through `filter` with `limit`, checking the cursor rules on every page.
async fn walk(store: &DynEventStore, t: &TenantId, filter: &Filter, limit: usize) -> Vec<u64> {
    let mut after = Seq::ZERO;
    let mut out = Vec::new();
    loop {
        let request = ReadRequest::after(after, limit).with_filter(filter.clone());
        let page = read(store, t, request).await;
        let what = format!("paging {filter:?} by {limit} after {after}");
        assert!(page.events.len() <= limit, "{what}: page over the limit");
        for e in &page.events {
            assert!(filter.matches(&e.event), "{what}: {e:?} does not match");
            assert!(
                e.seq > after && e.seq <= page.next,
                "{what}: seq out of (after, next]"
            );
        }
        assert!(
            page.events.windows(2).all(|w| w[0].seq < w[1].seq),
            "{what}: not in seq order"
        );
        assert!(page.next >= after, "{what}: next went backwards");
        assert_eq!(
            page.has_more,
            page.next < page.head,
            "{what}: has_more != next < head"
        );
        out.extend(seqs(&page));
        if !page.has_more {
            return out;
        }
        assert!(page.next > after, "{what}: has_more but no progress");
        after = page.next;
    }
}

fn stored(event: Event, seq: u64, version: u64) -> StoredEvent {
    StoredEvent {
        event,
        seq: Seq(seq),
        aggregate_version: version,
        recorded_at: 1_700_000_000_000 + seq,
    }
}

fn stored_id(id: &str, aggregate: &str, seq: u64, version: u64) -> StoredEvent {
    stored(event(id, aggregate), seq, version)
}

fn conflict_on(aggregate: &str) -> Conflict {
    Conflict {
        aggregate_id: agg(aggregate),
        base_version: 1,
        current_version: 2,
        local: vec![event_data(
            "local-1",
            aggregate,
            json!({"title": "mine", "n": 1}),
        )],
        remote: vec![stored(
            event_data("remote-1", aggregate, json!({"title": "theirs"})),
            2,
            2,
        )],
    }
}

fn review(id: &str, aggregate: &str) -> ReviewEntry {
    ReviewEntry {
        id: id.to_owned(),
        conflict: conflict_on(aggregate),
        reason: format!("parked {id}"),
        strategy: "manual".to_owned(),
        rule: Some("rule-1".to_owned()),
        created_at: 1_700_000_000_000,
    }
}

fn audit_record(id: &str, aggregate: &str) -> AuditRecord {
    AuditRecord {
        id: id.to_owned(),
        at: 1_700_000_000_000,
        decision: DecisionKind::Merge,
        strategy: "merge_fields".to_owned(),
        rule: Some("orders.merge_totals".to_owned()),
        group: Some("orders".to_owned()),
        reason: format!("decided {id}"),
        kind: "OrderUpdated".to_owned(),
        changed_fields: vec!["title".to_owned()],
        context: ResolutionContext {
            node_id: Some(NodeId::new("node-a").unwrap()),
            user: Some("ada".to_owned()),
            session: Some("s-1".to_owned()),
            origin: Some("sync".to_owned()),
        },
        conflict: conflict_on(aggregate),
        result: vec![event_data("merged-1", aggregate, json!({"title": "both"}))],
        decided_by: "resolver".to_owned(),
        duration_us: 42,
    }
}

async fn commit(store: &DynNodeStore, write: NodeWrite, what: &str) -> u64 {
    store
        .commit(write)
        .await
        .unwrap_or_else(|e| panic!("{what}: commit failed: {e}"))
        .newly_confirmed
}

fn pending_ids(pending: &[PendingEvent]) -> Vec<&str> {
    pending.iter().map(|p| p.event.id.as_str()).collect()
}

fn review_ids(reviews: &[ReviewEntry]) -> Vec<&str> {
    reviews.iter().map(|r| r.id.as_str()).collect()
}

fn audit_ids(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

/// Everything a node store shows, to prove a failed commit changed nothing.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: NodeState,
    confirmed: Vec<StoredEvent>,
    pending: Vec<PendingEvent>,
    reviews: Vec<ReviewEntry>,
    audit: Vec<AuditRecord>,
}

async fn snapshot(store: &DynNodeStore) -> Snapshot {
    Snapshot {
        state: store.state().await.unwrap(),
        confirmed: store.confirmed_all().await.unwrap(),
        pending: store.pending_all().await.unwrap(),
        reviews: store.reviews(MAX_PAGE_SIZE).await.unwrap(),
        audit: store
            .audit(&AuditQuery {
                limit: MAX_PAGE_SIZE,
                ..AuditQuery::default()
            })
            .await
            .unwrap(),
    }
}

/// Commit `write`, expect it to fail with `kind`, and expect the store unchanged.
async fn commit_fails(store: &DynNodeStore, write: NodeWrite, kind: ErrorKind, what: &str) {
    let before = snapshot(store).await;
    expect_kind(store.commit(write).await, kind, what);
    let after = snapshot(store).await;
    assert_eq!(after, before, "{what}: a failed commit must change nothing");
}

// ---------------------------------------------------------------------------------------------
// EventStore checks
// ---------------------------------------------------------------------------------------------

/// Accepted events get `seq` 1, 2, ... and per-aggregate versions, and read back field for field.
pub async fn check_append_assigns_positions(store: DynEventStore) {
    let t = tenant("t1");
    assert_eq!(store.head(&t).await.unwrap(), Seq::ZERO, "empty store head");
    let first = Event::builder("TaskCreated", "task-1")
        .id("e1")
        .origin("node-a")
        .hlc(Hlc::new(1_700_000_000_123, 7))
        .data(json!({"title": "write docs", "tags": ["a", "b"], "n": 3, "nested": {"ok": true}}))
        .metadata("trace", json!("abc"))
        .metadata("user", json!({"id": 9}))
        .build()
        .unwrap();
    let batch = vec![first, event("e2", "task-2"), checked("e3", "task-1", 1)];
    let report = append(&store, &t, &batch, "first batch").await;
    let got: Vec<(u64, u64)> = outcomes(&report)
        .iter()
        .map(|o| accepted(o, "first batch"))
        .collect();
    assert_eq!(got, [(1, 1), (2, 1), (3, 2)], "seq and aggregate versions");
    assert_eq!(report.head, Seq(3), "report head");
    assert_eq!(store.head(&t).await.unwrap(), Seq(3), "head()");

    let stored = log(&store, &t).await;
    assert_eq!(stored.len(), 3, "log length");
    for (i, (s, sent)) in stored.iter().zip(&batch).enumerate() {
        assert_eq!(&s.event, sent, "event {i} must read back exactly as sent");
        assert_eq!(s.seq, Seq(got[i].0), "event {i} seq");
        assert_eq!(s.aggregate_version, got[i].1, "event {i} aggregate version");
        match &report.results[i].outcome {
            AppendOutcome::Accepted { recorded_at, .. } => assert_eq!(
                s.recorded_at, *recorded_at,
                "event {i}: recorded_at must match the append outcome"
            ),
            other => panic!("event {i}: {other:?}"),
        }
    }

    let report = append(&store, &t, &[event("e4", "task-2")], "second batch").await;
    assert_eq!(accepted(&report.results[0].outcome, "second batch"), (4, 2));
    assert_eq!(report.head, Seq(4));

    let report = store.append(&t, &[]).await.unwrap();
    assert!(report.results.is_empty(), "empty batch: no results");
    assert_eq!(report.head, Seq(4), "empty batch reports the head");
}

/// The same batch appended twice: duplicates with the original positions, the log unchanged.
pub async fn check_idempotent_append(store: DynEventStore) {
    let t = tenant("t1");
    let batch = vec![event("e1", "a"), event("e2", "b"), checked("e3", "a", 1)];
    let first = append(&store, &t, &batch, "first append").await;
    let before = log(&store, &t).await;

    let second = append(&store, &t, &batch, "retried append").await;
    for (i, (a, b)) in first.results.iter().zip(&second.results).enumerate() {
        match (&a.outcome, &b.outcome) {
            (
                AppendOutcome::Accepted {
                    seq,
                    aggregate_version,
                    recorded_at,
                },
                AppendOutcome::Duplicate {
                    seq: dseq,
                    aggregate_version: dversion,
                    recorded_at: drecorded,
                },
            ) => {
                assert_eq!((seq, aggregate_version), (dseq, dversion), "event {i}");
                assert_eq!(recorded_at, drecorded, "event {i}: original recorded_at");
            }
            other => panic!("event {i}: expected accepted then duplicate, got {other:?}"),
        }
    }
    assert_eq!(second.head, Seq(3), "a retry must not move the head");
    assert_eq!(
        log(&store, &t).await,
        before,
        "a retry must not change the log"
    );

    // Clock stamp, origin and expected version are not content: still a duplicate.
    let mut restamped = batch[0].clone();
    restamped.origin = NodeId::new("other-node").unwrap();
    restamped.hlc = Hlc::new(9_999, 3);
    restamped.expected_version = Some(7);
    let report = append(&store, &t, &[restamped], "restamped retry").await;
    assert_eq!(
        duplicate(&report.results[0].outcome, "restamped retry"),
        (1, 1)
    );

    // Inside one batch, and mixed with new events.
    let batch = vec![
        event("e4", "c"),
        event("e4", "c"),
        event("e1", "a"),
        event("e5", "a"),
    ];
    let report = append(&store, &t, &batch, "batch with repeats").await;
    let o = outcomes(&report);
    assert_eq!(accepted(o[0], "new e4"), (4, 1));
    assert_eq!(duplicate(o[1], "e4 again in the same batch"), (4, 1));
    assert_eq!(duplicate(o[2], "old e1"), (1, 1));
    assert_eq!(accepted(o[3], "new e5"), (5, 3));
    let all = log(&store, &t).await;
    assert_eq!(
        ids(&all),
        ["e1", "e2", "e3", "e4", "e5"],
        "each id stored once"
    );
}

/// A known id with other content is rejected with `id_conflict`; the original stays.
pub async fn check_id_conflict(store: DynEventStore) {
    let t = tenant("t1");
    let original = event_data("e1", "a", json!({"title": "original"}));
    append(&store, &t, std::slice::from_ref(&original), "original").await;

    let mut other_data = original.clone();
    other_data.data = json!({"title": "changed"});
    let mut other_kind = original.clone();
    other_kind.kind = "TaskDeleted".to_owned();
    let mut other_aggregate = original.clone();
    other_aggregate.aggregate_id = agg("b");
    let mut other_metadata = original.clone();
    other_metadata.metadata.insert("k".to_owned(), json!(1));
    for (name, variant) in [
        ("data", other_data),
        ("kind", other_kind),
        ("aggregate", other_aggregate),
        ("metadata", other_metadata),
    ] {
        let what = format!("same id, other {name}");
        let report = append(&store, &t, &[variant], &what).await;
        rejected(&report.results[0].outcome, RejectCode::IdConflict, &what);
        assert_eq!(report.head, Seq(1), "{what}: head");
    }
    assert_eq!(
        log(&store, &t).await.len(),
        1,
        "nothing stored by conflicts"
    );
    assert_eq!(
        log(&store, &t).await[0].event,
        original,
        "the original is untouched"
    );
    assert_eq!(store.aggregate_version(&t, &agg("a")).await.unwrap(), 1);
    assert_eq!(store.aggregate_version(&t, &agg("b")).await.unwrap(), 0);

    // Inside one batch.
    let batch = vec![
        event_data("e2", "a", json!(1)),
        event_data("e2", "a", json!(2)),
    ];
    let report = append(&store, &t, &batch, "conflict within a batch").await;
    accepted(&report.results[0].outcome, "first e2");
    rejected(
        &report.results[1].outcome,
        RejectCode::IdConflict,
        "second e2",
    );
    let all = log(&store, &t).await;
    assert_eq!(ids(&all), ["e1", "e2"]);
    assert_eq!(all[1].event.data, json!(1), "the first e2 is kept");
}

/// `expected_version`: the right one is accepted, a wrong one conflicts, `None` skips the check.
pub async fn check_expected_version(store: DynEventStore) {
    let t = tenant("t1");
    let a = "a";
    let expect = |e: Event| {
        let store = store.clone();
        let t = t.clone();
        async move { append(&store, &t, &[e], "expected version").await }
    };
    let r = expect(checked("e1", a, 0)).await;
    assert_eq!(
        accepted(&r.results[0].outcome, "v0 on a new aggregate"),
        (1, 1)
    );
    let r = expect(checked("e2", a, 0)).await;
    conflict(&r.results[0].outcome, 1, "stale version 0");
    let r = expect(checked("e3", a, 5)).await;
    conflict(&r.results[0].outcome, 1, "future version 5");
    let r = expect(checked("e4", a, 1)).await;
    assert_eq!(accepted(&r.results[0].outcome, "right version 1"), (2, 2));
    let r = expect(event("e5", a)).await;
    assert_eq!(accepted(&r.results[0].outcome, "no expectation"), (3, 3));
    let r = expect(checked("b1", "b", 1)).await;
    conflict(&r.results[0].outcome, 0, "version 1 on an empty aggregate");

    assert_eq!(store.aggregate_version(&t, &agg(a)).await.unwrap(), 3);
    assert_eq!(
        store.head(&t).await.unwrap(),
        Seq(3),
        "conflicts are not stored"
    );
    assert_eq!(ids(&log(&store, &t).await), ["e1", "e4", "e5"]);

    // A conflicted event was not stored, so its id is free for a rebased retry.
    let r = expect(checked("e2", a, 3)).await;
    assert_eq!(accepted(&r.results[0].outcome, "rebased e2"), (4, 4));
}

/// In one batch, every event after a failed one on the same aggregate conflicts, checked or
/// not (a writer's events never overtake each other); other aggregates and events after a
/// duplicate are not affected.
pub async fn check_batch_failure_blocks_aggregate(store: DynEventStore) {
    let t = tenant("t1");
    append(&store, &t, &[event("a0", "a"), event("c0", "c")], "setup").await;

    let batch = vec![
        checked("a1", "a", 1), // accepted, a -> 2
        checked("a2", "a", 9), // conflict
        checked("a3", "a", 2), // right version, but after a failure in this batch
        checked("b1", "b", 0), // other aggregate: accepted
        event("a4", "a"),      // unchecked, but must not overtake a2
        checked("a5", "a", 2), // still blocked
        checked("b2", "b", 1), // accepted
        event("a0", "a"),      // already stored: a duplicate comes before any conflict
    ];
    let report = append(&store, &t, &batch, "blocking batch").await;
    let o = outcomes(&report);
    assert_eq!(accepted(o[0], "a1"), (3, 2));
    conflict(o[1], 2, "a2 (wrong version)");
    conflict(o[2], 2, "a3 after a failed event on a");
    assert_eq!(accepted(o[3], "b1"), (4, 1));
    conflict(o[4], 2, "a4 (unchecked) after a failed event on a");
    conflict(o[5], 2, "a5 after a failed event on a");
    assert_eq!(accepted(o[6], "b2"), (5, 2));
    assert_eq!(duplicate(o[7], "a0 after a failed event on a"), (1, 1));
    assert_eq!(store.aggregate_version(&t, &agg("a")).await.unwrap(), 2);

    // The block lasts for one batch only.
    let report = append(&store, &t, &[event("a4", "a")], "a4 alone").await;
    assert_eq!(
        accepted(&report.results[0].outcome, "a4 in its own batch"),
        (6, 3)
    );

    // A rejected event blocks too: id conflict ...
    let mut c0_changed = event("c0", "c");
    c0_changed.data = json!("changed");
    let batch = vec![c0_changed, checked("c1", "c", 1), event("c9", "c")];
    let report = append(&store, &t, &batch, "id conflict then more").await;
    rejected(
        &report.results[0].outcome,
        RejectCode::IdConflict,
        "c0 changed",
    );
    conflict(
        &report.results[1].outcome,
        1,
        "c1 after a rejected event on c",
    );
    conflict(
        &report.results[2].outcome,
        1,
        "c9 (unchecked) after a rejected event on c",
    );

    // ... and an invalid event.
    let mut bad = event("d0", "d");
    bad.kind = String::new();
    let batch = vec![bad, checked("d1", "d", 0), event("d2", "d")];
    let report = append(&store, &t, &batch, "invalid then checked").await;
    rejected(
        &report.results[0].outcome,
        RejectCode::InvalidEvent,
        "d0 without kind",
    );
    conflict(
        &report.results[1].outcome,
        0,
        "d1 after a rejected event on d",
    );
    conflict(
        &report.results[2].outcome,
        0,
        "d2 (unchecked) after a rejected event on d",
    );

    // A duplicate is stored, so it does not block.
    let batch = vec![event("c0", "c"), checked("c2", "c", 1), event("c3", "c")];
    let report = append(&store, &t, &batch, "duplicate then more").await;
    duplicate(&report.results[0].outcome, "c0 again");
    assert_eq!(
        accepted(&report.results[1].outcome, "c2 after a duplicate"),
        (7, 2)
    );
    assert_eq!(accepted(&report.results[2].outcome, "c3 unchecked"), (8, 3));
    assert_eq!(store.head(&t).await.unwrap(), Seq(8));
}

/// A batch mixing every outcome answers each event, in order, and stores only the accepted.
pub async fn check_mixed_batch_outcomes(store: DynEventStore) {
    let t = tenant("t1");
    append(&store, &t, &[event("p1", "a")], "setup").await;
    let mut id_conflict = event("p1", "a");
    id_conflict.data = json!("other");
    let mut no_kind = event("n3", "d");
    no_kind.kind = String::new();
    let mut control_kind = event("n4", "e");
    control_kind.kind = "Bad\nKind".to_owned();
    let mut long_kind = event("n5", "f");
    long_kind.kind = "K".repeat(MAX_KIND_LEN + 1);
    let batch = vec![
        event("n1", "a"),
        event("p1", "a"),
        id_conflict,
        checked("n2", "b", 3),
        no_kind,
        control_kind,
        long_kind,
        event("n6", "c"),
        event("n7", "a"),
    ];
    let report = append(&store, &t, &batch, "mixed batch").await;
    assert_eq!(report.results.len(), batch.len(), "nothing dropped");
    let o = outcomes(&report);
    assert_eq!(accepted(o[0], "n1"), (2, 2));
    assert_eq!(duplicate(o[1], "p1"), (1, 1));
    rejected(o[2], RejectCode::IdConflict, "p1 with other data");
    conflict(o[3], 0, "n2 with a wrong version");
    rejected(o[4], RejectCode::InvalidEvent, "empty kind");
    rejected(o[5], RejectCode::InvalidEvent, "control character in kind");
    rejected(o[6], RejectCode::InvalidEvent, "kind too long");
    assert_eq!(accepted(o[7], "n6"), (3, 1));
    conflict(o[8], 2, "n7 after the rejected p1 on a");
    assert_eq!(report.head, Seq(3));
    assert_eq!(ids(&log(&store, &t).await), ["p1", "n1", "n6"]);
}

/// Tasks racing on one aggregate with `expected_version`: exactly one winner per version.
pub async fn check_concurrent_expected_version(store: DynEventStore) {
    const TASKS: usize = 8;
    const VERSIONS: u64 = 24;
    let t = tenant("t1");
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let store = store.clone();
        let t = t.clone();
        handles.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut version = 0;
            while version < VERSIONS {
                let e = checked(&format!("t{task}-v{version}"), "hot", version);
                let report = store.append(&t, std::slice::from_ref(&e)).await.unwrap();
                match &report.results[0].outcome {
                    AppendOutcome::Accepted {
                        aggregate_version, ..
                    } => {
                        assert_eq!(
                            *aggregate_version,
                            version + 1,
                            "task {task}: accepted at expected {version} must become the next version"
                        );
                        won.push(*aggregate_version);
                        version += 1;
                    }
                    AppendOutcome::Conflict { current_version } => {
                        // Versions never go back, and this task saw `version` as current.
                        assert!(
                            *current_version > version,
                            "task {task}: conflict at {version} reports current {current_version}"
                        );
                        version = *current_version;
                    }
                    other => panic!("task {task}: unexpected {other:?}"),
                }
                yield_now().await;
            }
            won
        }));
    }
    let mut won = Vec::new();
    for handle in handles {
        won.extend(handle.await.unwrap());
    }
    won.sort_unstable();
    let expected: Vec<u64> = (1..=VERSIONS).collect();
    assert_eq!(won, expected, "exactly one winner per aggregate version");
    assert_eq!(
        store.aggregate_version(&t, &agg("hot")).await.unwrap(),
        VERSIONS
    );
    let all = log(&store, &t).await;
    assert_eq!(all.len() as u64, VERSIONS, "only winners are stored");
    for (i, e) in all.iter().enumerate() {
        let version = i as u64 + 1;
        assert_eq!(e.seq, Seq(version), "contiguous seqs");
        assert_eq!(e.aggregate_version, version, "contiguous versions");
        assert_eq!(
            e.event.expected_version,
            Some(version - 1),
            "winner of version {version}"
        );
    }
}

/// `after` paging: exact page boundaries, `next`, `has_more`, `head`, limit validation.
pub async fn check_read_paging(store: DynEventStore) {
    let t = tenant("t1");
    let page = read(&store, &t, ReadRequest::after(Seq::ZERO, 10)).await;
    page_is(&page, &[], 0, false, 0, "empty log");

    let first: Vec<Event> = (1..=6).map(|i| event(&format!("e{i:02}"), "a")).collect();
    let second: Vec<Event> = (7..=10).map(|i| event(&format!("e{i:02}"), "b")).collect();
    append(&store, &t, &first, "first").await;
    append(&store, &t, &second, "second").await;

    let r = |after: u64, limit: usize| read(&store, &t, ReadRequest::after(Seq(after), limit));
    page_is(&r(0, 3).await, &[1, 2, 3], 3, true, 10, "after 0 limit 3");
    page_is(&r(3, 3).await, &[4, 5, 6], 6, true, 10, "after 3 limit 3");
    page_is(&r(7, 3).await, &[8, 9, 10], 10, false, 10, "last full page");
    page_is(&r(9, 3).await, &[10], 10, false, 10, "short last page");
    page_is(&r(10, 3).await, &[], 10, false, 10, "after = head");
    page_is(&r(25, 3).await, &[], 25, false, 10, "after beyond head");
    let all: Vec<u64> = (1..=10).collect();
    page_is(&r(0, MAX_PAGE_SIZE).await, &all, 10, false, 10, "max page");
    page_is(&r(0, 1).await, &[1], 1, true, 10, "limit 1");

    for limit in [0, MAX_PAGE_SIZE + 1] {
        expect_kind(
            store.read(&t, &ReadRequest::after(Seq::ZERO, limit)).await,
            ErrorKind::InvalidInput,
            &format!("read with limit {limit}"),
        );
    }
    for limit in [1, 3, 4, 10, 11] {
        let walked = walk(&store, &t, &Filter::all(), limit).await;
        assert_eq!(walked, all, "paging by {limit} returns every event once");
    }
}

/// Filters by aggregate and kind, with the cursor semantics of `Page`.
pub async fn check_read_filters(store: DynEventStore) {
    let t = tenant("t1");
    // seq i: aggregate a (1,4,7,10), b (2,5,8,11), c (3,6,9,12); kind Even or Odd.
    let batch: Vec<Event> = (1..=12usize)
        .map(|i| {
            let aggregate = ["a", "b", "c"][(i - 1) % 3];
            let kind = if i % 2 == 0 { "Even" } else { "Odd" };
            event_kind(&format!("e{i:02}"), aggregate, kind)
        })
        .collect();
    append(&store, &t, &batch, "setup").await;

    let kinds = |ks: &[&str]| -> BTreeSet<String> { ks.iter().map(|k| (*k).to_owned()).collect() };
    let by_agg = |a: &str| Filter::aggregate(agg(a));
    let by_kind = |ks: &[&str]| Filter {
        aggregate_id: None,
        kinds: kinds(ks),
    };
    let r = |after: u64, limit: usize, filter: Filter| {
        read(
            &store,
            &t,
            ReadRequest::after(Seq(after), limit).with_filter(filter),
        )
    };

    page_is(
        &r(0, 10, by_agg("a")).await,
        &[1, 4, 7, 10],
        12,
        false,
        12,
        "aggregate a",
    );
    page_is(
        &r(0, 2, by_agg("a")).await,
        &[1, 4],
        4,
        true,
        12,
        "aggregate a, limit hit",
    );
    page_is(
        &r(4, 2, by_agg("a")).await,
        &[7, 10],
        10,
        true,
        12,
        "aggregate a, second page",
    );
    page_is(
        &r(10, 2, by_agg("a")).await,
        &[],
        12,
        false,
        12,
        "aggregate a, drained",
    );
    page_is(
        &r(5, 10, by_agg("b")).await,
        &[8, 11],
        12,
        false,
        12,
        "aggregate b after 5",
    );
    page_is(
        &r(0, 10, by_agg("zz")).await,
        &[],
        12,
        false,
        12,
        "unknown aggregate",
    );
    page_is(
        &r(0, 4, by_kind(&["Even"])).await,
        &[2, 4, 6, 8],
        8,
        true,
        12,
        "kind Even",
    );
    page_is(
        &r(8, 4, by_kind(&["Even"])).await,
        &[10, 12],
        12,
        false,
        12,
        "kind Even, rest",
    );
    page_is(
        &r(0, 20, by_kind(&["Nope"])).await,
        &[],
        12,
        false,
        12,
        "unknown kind",
    );
    let all: Vec<u64> = (1..=12).collect();
    page_is(
        &r(0, 20, by_kind(&["Even", "Odd"])).await,
        &all,
        12,
        false,
        12,
        "both kinds",
    );
    let both = Filter {
        aggregate_id: Some(agg("a")),
        kinds: kinds(&["Even"]),
    };
    page_is(
        &r(0, 20, both.clone()).await,
        &[4, 10],
        12,
        false,
        12,
        "aggregate and kind",
    );
    page_is(
        &r(30, 20, both.clone()).await,
        &[],
        30,
        false,
        12,
        "filter, after beyond head",
    );

    let full = log(&store, &t).await;
    for filter in [
        by_agg("a"),
        by_agg("c"),
        by_kind(&["Odd"]),
        by_kind(&["Even", "Odd"]),
        both,
    ] {
        let expected: Vec<u64> = full
            .iter()
            .filter(|e| filter.matches(&e.event))
            .map(|e| e.seq.get())
            .collect();
        for limit in [1, 2, 3, 5, 100] {
            let walked = walk(&store, &t, &filter, limit).await;
            assert_eq!(walked, expected, "paging {filter:?} by {limit}");
        }
    }
}

/// Readers polling `after = last seen` while writers append never skip an event.
pub async fn check_readers_never_skip(store: DynEventStore) {
    check_readers_never_skip_across(vec![store]).await;
}

/// [`check_readers_never_skip`] with writers and readers spread over several instances of one
/// store (for example two hubs over one database): 8 writers, 8 readers.
pub async fn check_readers_never_skip_across(stores: Vec<DynEventStore>) {
    assert!(!stores.is_empty(), "at least one store instance");
    let pick = |i: usize| stores[i % stores.len()].clone();
    let store = pick(0);
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 40;
    const TOTAL: usize = WRITERS * PER_WRITER;
    let t = tenant("t1");
    let writers_done = Arc::new(AtomicUsize::new(0));

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, t, done) = (pick(w), t.clone(), writers_done.clone());
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut i = 0;
            while i < PER_WRITER {
                let size = (i % 3 + 1).min(PER_WRITER - i);
                let batch: Vec<Event> = (i..i + size)
                    .map(|j| event(&format!("w{w}-{j:03}"), &format!("w{w}")))
                    .collect();
                let report = store.append(&t, &batch).await.unwrap();
                for r in &report.results {
                    seqs.push(accepted(&r.outcome, "concurrent writer").0);
                }
                i += size;
                yield_now().await;
            }
            done.fetch_add(1, Ordering::SeqCst);
            seqs
        }));
    }

    let mut readers = Vec::new();
    for (r, limit) in [1usize, 2, 3, 5, 7, 11, 13, 50].into_iter().enumerate() {
        let (store, t, done) = (pick(r + 1), t.clone(), writers_done.clone());
        readers.push(tokio::spawn(async move {
            let mut last = Seq::ZERO;
            let mut seen: Vec<String> = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst) == WRITERS;
                let page = store
                    .read(&t, &ReadRequest::after(last, limit))
                    .await
                    .unwrap();
                for e in &page.events {
                    assert_eq!(
                        e.seq.get(),
                        last.get() + 1,
                        "reader {r} (limit {limit}): after {last} came {}: skipped or reordered",
                        e.seq
                    );
                    last = e.seq;
                    seen.push(e.event.id.to_string());
                }
                assert_eq!(
                    page.next, last,
                    "reader {r}: unfiltered next must be the last seq"
                );
                assert!(page.head >= page.next, "reader {r}: head behind next");
                if finished && !page.has_more {
                    break;
                }
                yield_now().await;
            }
            assert_eq!(
                seen.len(),
                TOTAL,
                "reader {r} (limit {limit}) must see every event"
            );
            seen
        }));
    }

    // A filtered reader: per-aggregate order, nothing skipped.
    let filtered = {
        let (store, t, done) = (store.clone(), t.clone(), writers_done.clone());
        tokio::spawn(async move {
            let mut after = Seq::ZERO;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(Ordering::SeqCst) == WRITERS;
                let request =
                    ReadRequest::after(after, 2).with_filter(Filter::aggregate(agg("w0")));
                let page = store.read(&t, &request).await.unwrap();
                for e in &page.events {
                    assert!(
                        e.seq > after,
                        "filtered reader: {} not after {after}",
                        e.seq
                    );
                    after = e.seq;
                    seen.push(e.event.id.to_string());
                }
                assert!(
                    page.next >= after,
                    "filtered reader: next behind the last event"
                );
                after = page.next;
                if finished && !page.has_more {
                    break;
                }
                yield_now().await;
            }
            seen
        })
    };

    let mut written = Vec::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    written.sort_unstable();
    let expected: Vec<u64> = (1..=TOTAL as u64).collect();
    assert_eq!(
        written, expected,
        "accepted seqs must be 1..=total, each once"
    );

    let all = log(&store, &t).await;
    let all_ids: Vec<String> = all.iter().map(|e| e.event.id.to_string()).collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            all_ids,
            "a reader saw the log differently"
        );
    }
    let w0: Vec<String> = (0..PER_WRITER).map(|j| format!("w0-{j:03}")).collect();
    assert_eq!(
        filtered.await.unwrap(),
        w0,
        "filtered reader: every w0 event, in order"
    );
}

/// Tenants never see each other's events; the same id lives independently in two tenants.
pub async fn check_tenant_isolation(store: DynEventStore) {
    let (ta, tb) = (tenant("tenant-a"), tenant("tenant-b"));
    let a_events = vec![
        event_data("e1", "x", json!("a's e1")),
        event("e2", "x"),
        event("e3", "y"),
    ];
    append(&store, &ta, &a_events, "tenant a").await;

    assert_eq!(store.head(&tb).await.unwrap(), Seq::ZERO, "b's head");
    let page = read(&store, &tb, ReadRequest::after(Seq::ZERO, 10)).await;
    page_is(&page, &[], 0, false, 0, "b's log before it wrote");
    assert_eq!(store.aggregate_version(&tb, &agg("x")).await.unwrap(), 0);

    let b_events = vec![
        event_data("e1", "x", json!("b's e1")), // other content: not an id conflict across tenants
        event("e2", "x"),                       // same content: not a duplicate across tenants
        checked("e4", "y", 0),                  // a's y is at 1, b's at 0
    ];
    let report = append(&store, &tb, &b_events, "tenant b").await;
    let o = outcomes(&report);
    assert_eq!(accepted(o[0], "b's e1"), (1, 1));
    assert_eq!(accepted(o[1], "b's e2"), (2, 2));
    assert_eq!(accepted(o[2], "b's e4"), (3, 1));

    let a_log = log(&store, &ta).await;
    assert_eq!(ids(&a_log), ["e1", "e2", "e3"], "a's log");
    assert_eq!(a_log[0].event.data, json!("a's e1"), "a's e1 untouched");
    let b_log = log(&store, &tb).await;
    assert_eq!(ids(&b_log), ["e1", "e2", "e4"], "b's log");
    assert_eq!(b_log[0].event.data, json!("b's e1"));

    let page = read(
        &store,
        &tb,
        ReadRequest::after(Seq::ZERO, 10).with_filter(Filter::aggregate(agg("x"))),
    )
    .await;
    assert_eq!(ids(&page.events), ["e1", "e2"], "b's aggregate x");
    assert_eq!(page.head, Seq(3), "b's head in b's page");

    let report = append(
        &store,
        &ta,
        &[event_data("e1", "x", json!("a's e1"))],
        "a retry",
    )
    .await;
    assert_eq!(duplicate(&report.results[0].outcome, "a's retry"), (1, 1));
    assert_eq!(store.head(&ta).await.unwrap(), Seq(3));
    assert_eq!(store.head(&tb).await.unwrap(), Seq(3));
    assert_eq!(store.aggregate_version(&ta, &agg("y")).await.unwrap(), 1);
    assert_eq!(store.aggregate_version(&tb, &agg("y")).await.unwrap(), 1);
    assert_eq!(store.aggregate_version(&tb, &agg("x")).await.unwrap(), 2);
}

/// `head` and `aggregate_version` follow accepted events only.
pub async fn check_head_and_aggregate_version(store: DynEventStore) {
    let t = tenant("t1");
    assert_eq!(store.head(&t).await.unwrap(), Seq::ZERO);
    assert_eq!(store.aggregate_version(&t, &agg("a")).await.unwrap(), 0);
    let batch = vec![
        event("a1", "a"),
        event("b1", "b"),
        event("a2", "a"),
        event("a3", "a"),
        event("b2", "b"),
    ];
    let report = append(&store, &t, &batch, "setup").await;
    assert_eq!(report.head, Seq(5));
    assert_eq!(store.head(&t).await.unwrap(), Seq(5));
    assert_eq!(store.aggregate_version(&t, &agg("a")).await.unwrap(), 3);
    assert_eq!(store.aggregate_version(&t, &agg("b")).await.unwrap(), 2);

    let mut changed = event("a1", "a");
    changed.data = json!("changed");
    let refused = vec![
        event("a1", "a"),
        changed,
        checked("a9", "a", 0),
        checked("c1", "c", 4),
    ];
    let report = append(&store, &t, &refused, "nothing new").await;
    assert!(
        report
            .results
            .iter()
            .all(|r| !matches!(r.outcome, AppendOutcome::Accepted { .. })),
        "nothing in this batch may be accepted: {report:?}"
    );
    assert_eq!(report.head, Seq(5), "report head when nothing was accepted");
    assert_eq!(store.head(&t).await.unwrap(), Seq(5));
    assert_eq!(store.aggregate_version(&t, &agg("a")).await.unwrap(), 3);
    assert_eq!(store.aggregate_version(&t, &agg("c")).await.unwrap(), 0);

    let report = append(&store, &t, &[checked("c1", "c", 0)], "c").await;
    assert_eq!(report.head, Seq(6));
    assert_eq!(store.head(&t).await.unwrap(), Seq(6));
    assert_eq!(store.aggregate_version(&t, &agg("c")).await.unwrap(), 1);
}

/// An append cancelled at any point leaves its batch wholly present or wholly absent, and the
/// store usable.
pub async fn check_append_cancellation(store: DynEventStore) {
    const EVENTS: usize = 2_000;
    let batch_for = |round: usize| -> Vec<Event> {
        (0..EVENTS)
            .map(|i| event(&format!("c{round}-{i:05}"), &format!("agg-{}", i % 7)))
            .collect()
    };

    // Aborted tasks, at different points.
    for (round, yields) in [0usize, 1, 2, 5, 20].into_iter().enumerate() {
        let t = tenant(&format!("abort-{round}"));
        let batch = batch_for(round);
        let handle = {
            let (store, t, batch) = (store.clone(), t.clone(), batch.clone());
            tokio::spawn(async move { store.append(&t, &batch).await })
        };
        for _ in 0..yields {
            yield_now().await;
        }
        handle.abort();
        match handle.await {
            Ok(result) => {
                result.unwrap();
            }
            Err(e) => assert!(e.is_cancelled(), "append task failed: {e}"),
        }
        all_or_nothing(&store, &t, &batch, &format!("abort after {yields} yields")).await;
    }

    // Futures dropped after a number of polls.
    for (round, polls) in [1usize, 2, 3].into_iter().enumerate() {
        let t = tenant(&format!("drop-{round}"));
        let batch = batch_for(100 + round);
        {
            let mut future = store.append(&t, &batch);
            for _ in 0..polls {
                if poll_once(&mut future).await {
                    break;
                }
            }
        }
        all_or_nothing(&store, &t, &batch, &format!("dropped after {polls} polls")).await;
    }
}

/// Poll `future` once; whether it finished.
async fn poll_once<T>(future: &mut Pin<Box<dyn Future<Output = T> + Send + '_>>) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

async fn all_or_nothing(store: &DynEventStore, t: &TenantId, batch: &[Event], what: &str) {
    let stored = log(store, t).await;
    assert!(
        stored.is_empty() || stored.len() == batch.len(),
        "{what}: batch partially applied: {} of {} events",
        stored.len(),
        batch.len()
    );
    let present = !stored.is_empty();
    if present {
        let sent: Vec<&str> = batch.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids(&stored), sent, "{what}: stored batch out of order");
    }
    assert_eq!(
        store.head(t).await.unwrap().get(),
        stored.len() as u64,
        "{what}: head"
    );

    // The store is usable, and a retry completes the batch exactly once.
    let report = append(store, t, batch, what).await;
    for r in &report.results {
        match (&r.outcome, present) {
            (AppendOutcome::Duplicate { .. }, true) | (AppendOutcome::Accepted { .. }, false) => {}
            (other, _) => panic!(
                "{what}: retry of {} gave {other:?} (present: {present})",
                r.id
            ),
        }
    }
    assert_eq!(
        log(store, t).await.len(),
        batch.len(),
        "{what}: after the retry"
    );
}

/// After `close`, every call fails with `Closed`; closing again is fine.
pub async fn check_event_store_closed(store: DynEventStore) {
    let t = tenant("t1");
    append(&store, &t, &[event("e1", "a")], "before close").await;
    store.close().await.unwrap();
    store.close().await.expect("closing twice must succeed");
    expect_kind(
        store.append(&t, &[event("e2", "a")]).await,
        ErrorKind::Closed,
        "append",
    );
    expect_kind(
        store.append(&t, &[]).await,
        ErrorKind::Closed,
        "append of nothing",
    );
    expect_kind(
        store.read(&t, &ReadRequest::after(Seq::ZERO, 10)).await,
        ErrorKind::Closed,
        "read",
    );
    expect_kind(store.head(&t).await, ErrorKind::Closed, "head");
    expect_kind(
        store.aggregate_version(&t, &agg("a")).await,
        ErrorKind::Closed,
        "aggregate_version",
    );
}

// ---------------------------------------------------------------------------------------------
// NodeStore checks
// ---------------------------------------------------------------------------------------------

/// A fresh node store is empty, and an empty commit changes nothing.
pub async fn check_node_initial_state(store: DynNodeStore) {
    assert_eq!(
        store.state().await.unwrap(),
        NodeState::default(),
        "fresh state"
    );
    let before = snapshot(&store).await;
    assert!(before.confirmed.is_empty() && before.pending.is_empty());
    assert!(before.reviews.is_empty() && before.audit.is_empty());
    assert_eq!(
        store.aggregate_head(&agg("a")).await.unwrap(),
        AggregateHead::default()
    );
    assert!(store.pending_for(&agg("a")).await.unwrap().is_empty());
    assert_eq!(store.review("r1").await.unwrap(), None);
    assert_eq!(commit(&store, NodeWrite::default(), "empty write").await, 0);
    assert_eq!(
        snapshot(&store).await,
        before,
        "an empty write changes nothing"
    );
}

/// The node id is set once; a different one is a `Conflict` and the write is not applied.
pub async fn check_node_id_assignment(store: DynNodeStore) {
    let n1 = NodeId::new("n1").unwrap();
    let set = |id: &NodeId| NodeWrite {
        node_id: Some(id.clone()),
        ..NodeWrite::default()
    };
    commit(&store, set(&n1), "assign n1").await;
    assert_eq!(store.state().await.unwrap().node_id, Some(n1.clone()));
    commit(&store, set(&n1), "assign n1 again").await;
    commit_fails(
        &store,
        NodeWrite {
            node_id: Some(NodeId::new("n2").unwrap()),
            cursor: Some(Seq(5)),
            put_pending: vec![event("p1", "a")],
            ..NodeWrite::default()
        },
        ErrorKind::Conflict,
        "change the node id",
    )
    .await;
    commit(
        &store,
        NodeWrite {
            cursor: Some(Seq(1)),
            ..NodeWrite::default()
        },
        "write without a node id",
    )
    .await;
    let state = store.state().await.unwrap();
    assert_eq!(state.node_id, Some(n1), "the id stays");
    assert_eq!(state.cursor, Seq(1));
}

/// Confirmed events and cursor move together; a write that fails validation changes nothing.
pub async fn check_commit_is_atomic(store: DynNodeStore) {
    let newly = commit(
        &store,
        NodeWrite {
            confirm: vec![
                stored_id("e1", "a", 1, 1),
                stored_id("e2", "a", 2, 2),
                stored_id("e3", "b", 3, 1),
            ],
            cursor: Some(Seq(3)),
            ..NodeWrite::default()
        },
        "confirm with cursor",
    )
    .await;
    assert_eq!(newly, 3, "newly confirmed");
    let state = store.state().await.unwrap();
    assert_eq!((state.cursor, state.confirmed_head), (Seq(3), Seq(3)));
    assert_eq!(
        ids(&store.confirmed_all().await.unwrap()),
        ["e1", "e2", "e3"]
    );
    commit(
        &store,
        NodeWrite {
            put_pending: vec![event("p1", "a")],
            put_reviews: vec![review("r1", "a")],
            audit: vec![audit_record("x1", "a")],
            ..NodeWrite::default()
        },
        "local state",
    )
    .await;

    // Every part of a write that is valid on its own, plus one invalid part.
    let busy = || NodeWrite {
        node_id: Some(NodeId::new("n1").unwrap()),
        hlc: Some(Hlc::new(5_000, 0)),
        remove_pending: vec![eid("p1")],
        put_pending: vec![event("p2", "b")],
        confirm: vec![stored_id("e4", "a", 4, 3), stored_id("e5", "c", 5, 1)],
        cursor: Some(Seq(5)),
        put_reviews: vec![review("r2", "b")],
        remove_reviews: vec!["r1".to_owned()],
        audit: vec![audit_record("x2", "b")],
    };
    commit_fails(
        &store,
        NodeWrite {
            cursor: Some(Seq(1)),
            ..busy()
        },
        ErrorKind::InvalidInput,
        "cursor backwards",
    )
    .await;
    commit_fails(
        &store,
        NodeWrite {
            remove_reviews: vec!["missing".to_owned()],
            ..busy()
        },
        ErrorKind::NotFound,
        "remove an unknown review",
    )
    .await;
    commit_fails(
        &store,
        NodeWrite {
            put_pending: vec![event("p2", "b"), event("e2", "a")],
            ..busy()
        },
        ErrorKind::Conflict,
        "pending event already confirmed",
    )
    .await;

    // Without the invalid part, all of it applies.
    let newly = commit(&store, busy(), "the valid busy write").await;
    assert_eq!(newly, 2, "newly confirmed");
    let after = snapshot(&store).await;
    assert_eq!(after.state.node_id, Some(NodeId::new("n1").unwrap()));
    assert_eq!(after.state.hlc, Hlc::new(5_000, 0));
    assert_eq!(after.state.cursor, Seq(5));
    assert_eq!(after.state.confirmed_head, Seq(5));
    assert_eq!(ids(&after.confirmed), ["e1", "e2", "e3", "e4", "e5"]);
    assert_eq!(pending_ids(&after.pending), ["p2"]);
    assert_eq!(review_ids(&after.reviews), ["r2"]);
    assert_eq!(audit_ids(&after.audit), ["x1", "x2"]);
}

/// The cursor moves forward or stays; backwards is `InvalidInput`.
pub async fn check_cursor_moves_forward_only(store: DynNodeStore) {
    let to = |seq: u64| NodeWrite {
        cursor: Some(Seq(seq)),
        ..NodeWrite::default()
    };
    commit(&store, to(5), "cursor to 5").await;
    commit(&store, to(5), "cursor stays at 5").await;
    commit_fails(&store, to(4), ErrorKind::InvalidInput, "cursor back to 4").await;
    assert_eq!(store.state().await.unwrap().cursor, Seq(5));
    // A node with a filter moves its cursor past events it never stores.
    commit(&store, to(9), "cursor to 9").await;
    let state = store.state().await.unwrap();
    assert_eq!((state.cursor, state.confirmed_head), (Seq(9), Seq::ZERO));
}

/// The outbox keeps insertion order; a pending id put again is replaced in place (same
/// ordinal); ordinals are never reused.
pub async fn check_outbox_order_and_replace(store: DynNodeStore) {
    let put = |events: Vec<Event>| NodeWrite {
        put_pending: events,
        ..NodeWrite::default()
    };
    commit(
        &store,
        put(vec![event("p1", "a"), event("p2", "b"), event("p3", "a")]),
        "three pending",
    )
    .await;
    let first = store.pending_all().await.unwrap();
    assert_eq!(pending_ids(&first), ["p1", "p2", "p3"]);
    assert!(
        first.windows(2).all(|w| w[0].ordinal < w[1].ordinal),
        "ordinals increase: {first:?}"
    );
    assert_eq!(store.state().await.unwrap().pending, 3);

    let mut rebased = event_data("p2", "b", json!({"rebased": true}));
    rebased.expected_version = Some(4);
    commit(&store, put(vec![rebased.clone()]), "replace p2").await;
    let replaced = store.pending_all().await.unwrap();
    assert_eq!(pending_ids(&replaced), ["p1", "p2", "p3"], "order kept");
    assert_eq!(
        replaced[1].ordinal, first[1].ordinal,
        "same ordinal after replacement"
    );
    assert_eq!(replaced[1].event, rebased, "the replacement is stored");
    assert_eq!(
        store.state().await.unwrap().pending,
        3,
        "replacement adds nothing"
    );

    commit(
        &store,
        NodeWrite {
            remove_pending: vec![eid("p1"), eid("unknown")],
            ..NodeWrite::default()
        },
        "remove p1 and an unknown id",
    )
    .await;
    assert_eq!(
        pending_ids(&store.pending_all().await.unwrap()),
        ["p2", "p3"]
    );

    commit(&store, put(vec![event("p4", "a")]), "p4").await;
    commit(&store, put(vec![event("p1", "a")]), "p1 back").await;
    let last = store.pending_all().await.unwrap();
    assert_eq!(pending_ids(&last), ["p2", "p3", "p4", "p1"]);
    assert!(
        last[2].ordinal > first[2].ordinal,
        "a new event gets a new ordinal"
    );
    assert!(
        last[3].ordinal > last[2].ordinal,
        "a removed ordinal is never reused"
    );
    assert_eq!(
        pending_ids(&store.pending_for(&agg("a")).await.unwrap()),
        ["p3", "p4", "p1"]
    );
    assert_eq!(
        pending_ids(&store.pending_for(&agg("b")).await.unwrap()),
        ["p2"]
    );
    assert!(store.pending_for(&agg("zz")).await.unwrap().is_empty());
}

/// Confirming a pending event moves it from the outbox to the confirmed log.
pub async fn check_confirm_leaves_outbox(store: DynNodeStore) {
    let p1 = checked("p1", "a", 0);
    commit(
        &store,
        NodeWrite {
            put_pending: vec![p1.clone(), checked("p2", "a", 1), event("p3", "b")],
            ..NodeWrite::default()
        },
        "pending",
    )
    .await;
    assert_eq!(
        store.aggregate_head(&agg("a")).await.unwrap(),
        AggregateHead {
            confirmed_version: 0,
            pending: 2
        }
    );
    let newly = commit(
        &store,
        NodeWrite {
            confirm: vec![stored(p1, 1, 1)],
            cursor: Some(Seq(1)),
            ..NodeWrite::default()
        },
        "confirm p1",
    )
    .await;
    assert_eq!(newly, 1);
    assert_eq!(
        pending_ids(&store.pending_all().await.unwrap()),
        ["p2", "p3"]
    );
    assert_eq!(ids(&store.confirmed_all().await.unwrap()), ["p1"]);
    let state = store.state().await.unwrap();
    assert_eq!(
        (state.pending, state.confirmed_head, state.cursor),
        (2, Seq(1), Seq(1))
    );
    assert_eq!(
        store.aggregate_head(&agg("a")).await.unwrap(),
        AggregateHead {
            confirmed_version: 1,
            pending: 1
        }
    );
}

/// Confirming the same events again stores them once.
pub async fn check_confirm_idempotent(store: DynNodeStore) {
    let confirm = |events: Vec<StoredEvent>| NodeWrite {
        confirm: events,
        ..NodeWrite::default()
    };
    let s1 = stored_id("e1", "a", 1, 1);
    let s2 = stored_id("e2", "a", 2, 2);
    let s3 = stored_id("e3", "b", 3, 1);
    let s4 = stored_id("e4", "b", 4, 2);
    assert_eq!(
        commit(&store, confirm(vec![s1.clone(), s2.clone()]), "first").await,
        2
    );
    assert_eq!(
        commit(&store, confirm(vec![s1.clone(), s2.clone()]), "again").await,
        0
    );
    assert_eq!(
        commit(&store, confirm(vec![s2.clone(), s3.clone()]), "overlap").await,
        1
    );
    assert_eq!(
        commit(
            &store,
            confirm(vec![s4.clone(), s4.clone()]),
            "twice in one"
        )
        .await,
        1
    );
    assert_eq!(
        store.confirmed_all().await.unwrap(),
        [s1, s2, s3, s4],
        "each event once"
    );
    assert_eq!(store.state().await.unwrap().confirmed_head, Seq(4));
}

/// `put_pending` of a confirmed id (stored, or confirmed by the same write) is a `Conflict`.
pub async fn check_put_pending_of_confirmed_fails(store: DynNodeStore) {
    commit(
        &store,
        NodeWrite {
            confirm: vec![stored_id("e1", "a", 1, 1)],
            ..NodeWrite::default()
        },
        "confirm e1",
    )
    .await;
    commit_fails(
        &store,
        NodeWrite {
            put_pending: vec![event("p1", "a"), event("e1", "a")],
            cursor: Some(Seq(1)),
            ..NodeWrite::default()
        },
        ErrorKind::Conflict,
        "put a confirmed id back in the outbox",
    )
    .await;
    commit_fails(
        &store,
        NodeWrite {
            put_pending: vec![event("e2", "a")],
            confirm: vec![stored_id("e2", "a", 2, 2)],
            ..NodeWrite::default()
        },
        ErrorKind::Conflict,
        "put an id the same write confirms",
    )
    .await;
    let state = store.state().await.unwrap();
    assert_eq!(
        (state.pending, state.cursor, state.confirmed_head),
        (0, Seq::ZERO, Seq(1))
    );
}

/// `aggregate_head`: highest confirmed version and number of pending events.
pub async fn check_aggregate_head(store: DynNodeStore) {
    let head = |c: u64, p: u64| AggregateHead {
        confirmed_version: c,
        pending: p,
    };
    assert_eq!(store.aggregate_head(&agg("a")).await.unwrap(), head(0, 0));
    commit(
        &store,
        NodeWrite {
            confirm: vec![
                stored_id("a1", "a", 1, 1),
                stored_id("b1", "b", 2, 1),
                stored_id("a2", "a", 3, 2),
            ],
            put_pending: vec![event("pa1", "a"), event("pc1", "c"), event("pa2", "a")],
            ..NodeWrite::default()
        },
        "setup",
    )
    .await;
    assert_eq!(store.aggregate_head(&agg("a")).await.unwrap(), head(2, 2));
    assert_eq!(store.aggregate_head(&agg("b")).await.unwrap(), head(1, 0));
    assert_eq!(store.aggregate_head(&agg("c")).await.unwrap(), head(0, 1));
    commit(
        &store,
        NodeWrite {
            confirm: vec![stored(event("pa1", "a"), 4, 3)],
            ..NodeWrite::default()
        },
        "confirm pa1",
    )
    .await;
    assert_eq!(store.aggregate_head(&agg("a")).await.unwrap(), head(3, 1));
    assert_eq!(store.aggregate_head(&agg("zz")).await.unwrap(), head(0, 0));

    // A node confirms pushed events when the hub answers and pulled ones page by page, so a
    // lower version can arrive after a higher one: the head is the highest.
    commit(
        &store,
        NodeWrite {
            confirm: vec![stored_id("d3", "d", 9, 3)],
            ..NodeWrite::default()
        },
        "d at version 3",
    )
    .await;
    commit(
        &store,
        NodeWrite {
            confirm: vec![stored_id("d2", "d", 7, 2)],
            ..NodeWrite::default()
        },
        "d at version 2, later",
    )
    .await;
    assert_eq!(store.aggregate_head(&agg("d")).await.unwrap(), head(3, 0));
}

/// Review queue: add, list oldest first, get, remove; removing an unknown id is `NotFound`.
pub async fn check_review_queue(store: DynNodeStore) {
    let put = |entries: Vec<ReviewEntry>| NodeWrite {
        put_reviews: entries,
        ..NodeWrite::default()
    };
    let remove = |ids: &[&str]| NodeWrite {
        remove_reviews: ids.iter().map(|id| (*id).to_owned()).collect(),
        ..NodeWrite::default()
    };
    commit(
        &store,
        put(vec![review("r1", "a"), review("r2", "b")]),
        "r1, r2",
    )
    .await;
    commit(&store, put(vec![review("r3", "a")]), "r3").await;
    assert_eq!(
        review_ids(&store.reviews(10).await.unwrap()),
        ["r1", "r2", "r3"]
    );
    assert_eq!(review_ids(&store.reviews(2).await.unwrap()), ["r1", "r2"]);
    assert_eq!(store.state().await.unwrap().reviews, 3);
    assert_eq!(
        store.review("r2").await.unwrap(),
        Some(review("r2", "b")),
        "round trip"
    );
    assert_eq!(store.review("nope").await.unwrap(), None);

    commit(&store, remove(&["r2"]), "remove r2").await;
    assert_eq!(review_ids(&store.reviews(10).await.unwrap()), ["r1", "r3"]);
    assert_eq!(store.review("r2").await.unwrap(), None);
    assert_eq!(store.state().await.unwrap().reviews, 2);

    commit_fails(
        &store,
        remove(&["nope"]),
        ErrorKind::NotFound,
        "remove unknown",
    )
    .await;
    commit_fails(
        &store,
        remove(&["r2"]),
        ErrorKind::NotFound,
        "remove r2 again",
    )
    .await;
    commit_fails(
        &store,
        NodeWrite {
            put_reviews: vec![review("r4", "a")],
            remove_reviews: vec!["r1".to_owned(), "nope".to_owned()],
            cursor: Some(Seq(5)),
            ..NodeWrite::default()
        },
        ErrorKind::NotFound,
        "remove unknown with other changes",
    )
    .await;
    assert_eq!(review_ids(&store.reviews(10).await.unwrap()), ["r1", "r3"]);
}

/// Audit trail: appended records read back oldest first, by aggregate, paged by `after`.
pub async fn check_audit_trail(store: DynNodeStore) {
    // Ids sort in insertion order, as time-ordered ids do.
    let id = |i: usize| format!("audit-{i:04}");
    let records: Vec<AuditRecord> = (0..12)
        .map(|i| audit_record(&id(i), if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    commit(
        &store,
        NodeWrite {
            audit: records[..7].to_vec(),
            ..NodeWrite::default()
        },
        "first records",
    )
    .await;
    commit(
        &store,
        NodeWrite {
            audit: records[7..].to_vec(),
            ..NodeWrite::default()
        },
        "more records",
    )
    .await;

    let query = |aggregate: Option<&str>, after: Option<String>, limit: usize| AuditQuery {
        aggregate_id: aggregate.map(agg),
        after,
        limit,
    };
    let all = store.audit(&query(None, None, 0)).await.unwrap();
    assert_eq!(all, records, "every record, oldest first, field for field");

    let evens: Vec<String> = (0..12).step_by(2).map(id).collect();
    let got = store.audit(&query(Some("a"), None, 0)).await.unwrap();
    assert_eq!(audit_ids(&got), evens, "records of aggregate a");

    for (aggregate, limit) in [(None, 5), (Some("b"), 2), (Some("a"), 4), (Some("zz"), 3)] {
        let expected: Vec<&str> = records
            .iter()
            .filter(|r| aggregate.is_none_or(|a| r.conflict.aggregate_id.as_str() == a))
            .map(|r| r.id.as_str())
            .collect();
        let mut after = None;
        let mut got: Vec<String> = Vec::new();
        loop {
            let page = store
                .audit(&query(aggregate, after.clone(), limit))
                .await
                .unwrap();
            assert!(page.len() <= limit, "audit page over its limit");
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            got.extend(page.into_iter().map(|r| r.id));
            assert!(got.len() <= expected.len(), "audit paging does not end");
        }
        assert_eq!(got, expected, "paging audit of {aggregate:?} by {limit}");
    }

    // Limit 0 means 100.
    let more: Vec<AuditRecord> = (12..120).map(|i| audit_record(&id(i), "c")).collect();
    commit(
        &store,
        NodeWrite {
            audit: more,
            ..NodeWrite::default()
        },
        "many records",
    )
    .await;
    let page = store.audit(&query(None, None, 0)).await.unwrap();
    assert_eq!(page.len(), 100, "limit 0 returns 100 records");
    assert_eq!(page[99].id, id(99));
    let rest = store.audit(&query(None, Some(id(99)), 0)).await.unwrap();
    assert_eq!(rest.len(), 20, "the remaining records");
    assert_eq!(rest[0].id, id(100));
}

/// The stored clock only moves forward.
pub async fn check_hlc_only_moves_forward(store: DynNodeStore) {
    let set = |wall: u64, counter: u32| NodeWrite {
        hlc: Some(Hlc::new(wall, counter)),
        ..NodeWrite::default()
    };
    for ((wall, counter), expected) in [
        ((10, 0), Hlc::new(10, 0)),
        ((5, 7), Hlc::new(10, 0)),
        ((10, 0), Hlc::new(10, 0)),
        ((10, 1), Hlc::new(10, 1)),
        ((9, 99), Hlc::new(10, 1)),
        ((11, 0), Hlc::new(11, 0)),
    ] {
        commit(&store, set(wall, counter), "hlc").await;
        assert_eq!(
            store.state().await.unwrap().hlc,
            expected,
            "after offering Hlc({wall}.{counter})"
        );
    }
}

/// `pending(after, limit)` pages the outbox by ordinal.
pub async fn check_pending_paging(store: DynNodeStore) {
    let events: Vec<Event> = (1..=7).map(|i| event(&format!("p{i}"), "a")).collect();
    commit(
        &store,
        NodeWrite {
            put_pending: events,
            ..NodeWrite::default()
        },
        "seven pending",
    )
    .await;
    let all = store.pending_all().await.unwrap();
    assert_eq!(
        pending_ids(&all),
        ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]
    );
    let o: Vec<u64> = all.iter().map(|p| p.ordinal).collect();
    let page = |after: u64, limit: usize| {
        let store = store.clone();
        async move { store.pending(after, limit).await.unwrap() }
    };
    assert_eq!(pending_ids(&page(0, 3).await), ["p1", "p2", "p3"]);
    assert_eq!(pending_ids(&page(o[2], 3).await), ["p4", "p5", "p6"]);
    assert_eq!(pending_ids(&page(o[5], 3).await), ["p7"]);
    assert!(page(o[6], 3).await.is_empty());
    assert_eq!(page(0, 100).await, all);

    commit(
        &store,
        NodeWrite {
            remove_pending: vec![eid("p2"), eid("p3")],
            ..NodeWrite::default()
        },
        "remove p2 and p3",
    )
    .await;
    assert_eq!(
        pending_ids(&page(o[0], 2).await),
        ["p4", "p5"],
        "paging over a gap"
    );
    assert_eq!(
        pending_ids(&page(o[1], 1).await),
        ["p4"],
        "after a removed ordinal"
    );
}

/// `confirmed(after, limit)` pages the confirmed log by `seq`, whatever order events came in.
pub async fn check_confirmed_paging(store: DynNodeStore) {
    let confirm = |events: Vec<StoredEvent>| NodeWrite {
        confirm: events,
        ..NodeWrite::default()
    };
    // A filtered node has gaps; pushes and pulls confirm in either order.
    commit(
        &store,
        confirm(vec![stored_id("e5", "a", 5, 2), stored_id("e2", "a", 2, 1)]),
        "first",
    )
    .await;
    commit(
        &store,
        confirm(vec![
            stored_id("e12", "b", 12, 2),
            stored_id("e4", "b", 4, 1),
            stored_id("e9", "a", 9, 3),
        ]),
        "second",
    )
    .await;
    let page = |after: u64, limit: usize| {
        let store = store.clone();
        async move {
            store
                .confirmed(Seq(after), limit)
                .await
                .unwrap()
                .iter()
                .map(|e| e.seq.get())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0, 2).await, [2, 4]);
    assert_eq!(page(4, 2).await, [5, 9]);
    assert_eq!(page(9, 2).await, [12]);
    assert!(page(12, 2).await.is_empty());
    assert_eq!(page(3, 10).await, [4, 5, 9, 12]);
    assert_eq!(page(6, 1).await, [9], "after a seq the node does not hold");
    assert_eq!(store.state().await.unwrap().confirmed_head, Seq(12));
    let all = store.confirmed_all().await.unwrap();
    assert_eq!(ids(&all), ["e2", "e4", "e5", "e9", "e12"]);
    assert_eq!(all[3], stored_id("e9", "a", 9, 3), "field for field");
}

/// After `close`, every call fails with `Closed`; closing again is fine.
pub async fn check_node_store_closed(store: DynNodeStore) {
    commit(
        &store,
        NodeWrite {
            put_pending: vec![event("p1", "a")],
            ..NodeWrite::default()
        },
        "before close",
    )
    .await;
    store.close().await.unwrap();
    store.close().await.expect("closing twice must succeed");
    let closed = ErrorKind::Closed;
    expect_kind(store.state().await, closed, "state");
    expect_kind(
        store.commit(NodeWrite::default()).await,
        closed,
        "empty commit",
    );
    expect_kind(
        store
            .commit(NodeWrite {
                cursor: Some(Seq(1)),
                ..NodeWrite::default()
            })
            .await,
        closed,
        "commit",
    );
    expect_kind(store.pending(0, 10).await, closed, "pending");
    expect_kind(store.pending_for(&agg("a")).await, closed, "pending_for");
    expect_kind(store.confirmed(Seq::ZERO, 10).await, closed, "confirmed");
    expect_kind(
        store.aggregate_head(&agg("a")).await,
        closed,
        "aggregate_head",
    );
    expect_kind(store.reviews(10).await, closed, "reviews");
    expect_kind(store.review("r1").await, closed, "review");
    expect_kind(store.audit(&AuditQuery::default()).await, closed, "audit");
}
