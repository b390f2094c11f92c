//! The transport conformance suite: every `Transport` runs it against a live hub.
//!
//! A transport crate calls [`transport_suite`] with a function that builds a fresh
//! [`TransportFixture`]: two connections to one empty tenant and one connection to another empty
//! tenant, all to the same hub. Each `check_*` function is public too, so a transport can run one
//! check alone while it is being debugged. Every check panics with a message that says what the
//! transport did wrong.
//!
//! The checks assume only what the protocol promises: `seq`s increase but need not be
//! contiguous or start at 1, and a hub may stamp `origin` and `hlc`, so events are compared by id
//! and content ([`Event::same_content`]).

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use synckit_types::{
    AppendOutcome, AppendReport, Clock, DynTransport, ErrorKind, Event, Filter, Hlc, MAX_PAGE_SIZE,
    Page, ReadRequest, RejectCode, Seq, StoredEvent, Subscription, SystemClock, Transport,
};

/// How long a check waits for one subscription item before it fails.
///
/// A guard against a hung transport only: checks never wait for time to pass to synchronise;
/// they wait for the events they expect, and prove that nothing extra arrived by pushing a
/// sentinel event and checking that it is the next one.
pub const WAIT: Duration = Duration::from_secs(10);

/// Connections to one hub for one check. Each tenant must be empty when the fixture is built.
#[derive(Debug, Clone)]
pub struct TransportFixture {
    /// A connection to tenant A.
    pub a: DynTransport,
    /// A second, independent connection to tenant A (another node of the same tenant).
    pub a_again: DynTransport,
    /// A connection to tenant B, which must never see tenant A's events.
    pub b: DynTransport,
}

/// Run every check, each on a fresh fixture from `new_fixture`.
pub async fn transport_suite<F, Fut>(new_fixture: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = TransportFixture>,
{
    eprintln!("transport suite: check_push_outcomes");
    check_push_outcomes(new_fixture().await).await;
    eprintln!("transport suite: check_prepared_push");
    check_prepared_push(new_fixture().await).await;
    eprintln!("transport suite: check_head");
    check_head(new_fixture().await).await;
    eprintln!("transport suite: check_pull_paging");
    check_pull_paging(new_fixture().await).await;
    eprintln!("transport suite: check_pull_filter");
    check_pull_filter(new_fixture().await).await;
    eprintln!("transport suite: check_pull_invalid_limit");
    check_pull_invalid_limit(new_fixture().await).await;
    eprintln!("transport suite: check_subscribe_existing_then_live");
    check_subscribe_existing_then_live(new_fixture().await).await;
    eprintln!("transport suite: check_subscribe_resumes_after");
    check_subscribe_resumes_after(new_fixture().await).await;
    eprintln!("transport suite: check_subscribe_during_concurrent_pushes");
    check_subscribe_during_concurrent_pushes(new_fixture().await).await;
    eprintln!("transport suite: check_tenant_isolation");
    check_tenant_isolation(new_fixture().await).await;
}

/// Push outcomes: accepted (with `seq` and aggregate version), duplicate on a resend from any
/// connection (with the original position), `id_conflict` for a reused id with other content,
/// conflict with the current version for a stale `expected_version`; the report's head; and
/// only accepted events stored.
pub async fn check_push_outcomes(fixture: TransportFixture) {
    let TransportFixture { a, a_again, .. } = fixture;
    assert_empty(&a, "push outcomes").await;

    let first = vec![
        event_on("push-1", "task-1", 1).expected_version(0),
        event_on("push-2", "task-1", 2).expected_version(1),
        event_on("push-3", "note-1", 3).unchecked(),
    ]
    .into_iter()
    .map(|b| b.build().unwrap())
    .collect::<Vec<_>>();
    let report = push(&a, &first, "three new events").await;
    let positions = accepted(&report, "three new events");
    assert_eq!(
        positions.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![1, 2, 1],
        "aggregate versions of task-1, task-1, note-1 must be 1, 2, 1"
    );
    assert_increasing(&positions.iter().map(|p| p.0).collect::<Vec<_>>(), "push");
    assert_eq!(
        report.head, positions[2].0,
        "the report's head must be the last accepted seq"
    );

    // The same event again, from the other connection: a duplicate at its original position.
    let resend = push(&a_again, &first[..1], "a resend of push-1").await;
    match &resend.results[0].outcome {
        AppendOutcome::Duplicate {
            seq,
            aggregate_version,
            recorded_at,
        } => {
            assert_eq!(
                (*seq, *aggregate_version),
                positions[0],
                "a duplicate must report the original seq and aggregate version"
            );
            assert_eq!(
                *recorded_at,
                recorded_times(&report)[0],
                "a duplicate must report the original append time"
            );
        }
        other => panic!("a resend of push-1 must be a duplicate, got {other:?}"),
    }
    assert_eq!(
        resend.head, report.head,
        "a duplicate must not move the head"
    );

    // The same id with other content: rejected for good.
    let mut changed = first[1].clone();
    changed.data = json!({"changed": true});
    let rejected = push(&a, &[changed], "push-2 with other content").await;
    match &rejected.results[0].outcome {
        AppendOutcome::Rejected { code, .. } => assert_eq!(
            *code,
            RejectCode::IdConflict,
            "a reused id with other content must be rejected as id_conflict"
        ),
        other => panic!("a reused id with other content must be rejected, got {other:?}"),
    }

    // A stale expected version: a conflict that names the current version.
    let stale = event_on("push-4", "task-1", 4)
        .expected_version(1)
        .build()
        .unwrap();
    let conflict = push(&a, &[stale], "push-4 expecting task-1 at version 1").await;
    assert_eq!(
        conflict.results[0].outcome,
        AppendOutcome::Conflict { current_version: 2 },
        "an event expecting version 1 of an aggregate at version 2 must conflict"
    );
    assert_eq!(
        conflict.head, report.head,
        "a conflict must not move the head"
    );

    // A mixed batch gets one result per event, in order.
    let mixed = vec![
        first[2].clone(),
        event_on("push-5", "note-1", 5)
            .expected_version(1)
            .build()
            .unwrap(),
        event_on("push-6", "task-1", 6)
            .expected_version(0)
            .build()
            .unwrap(),
    ];
    let mixed_report = push(&a_again, &mixed, "a mixed batch").await;
    assert!(
        matches!(mixed_report.results[0].outcome, AppendOutcome::Duplicate { seq, .. } if seq == positions[2].0),
        "mixed batch: push-3 must be a duplicate at its original seq, got {:?}",
        mixed_report.results[0].outcome
    );
    let push5 = match &mixed_report.results[1].outcome {
        AppendOutcome::Accepted {
            seq,
            aggregate_version,
            ..
        } => {
            assert_eq!(*aggregate_version, 2, "mixed batch: push-5 is note-1's 2nd");
            assert!(
                *seq > report.head,
                "mixed batch: push-5 must get a seq after {}, got {seq}",
                report.head
            );
            *seq
        }
        other => panic!("mixed batch: push-5 must be accepted, got {other:?}"),
    };
    assert_eq!(
        mixed_report.results[2].outcome,
        AppendOutcome::Conflict { current_version: 2 },
        "mixed batch: push-6 expecting task-1 at version 0 must conflict"
    );
    assert_eq!(
        mixed_report.head, push5,
        "the report's head must be push-5's seq"
    );

    // Only accepted events are stored, each once, in order.
    let log = pull_all(&a, Filter::all()).await;
    assert_eq!(
        ids(&log),
        vec!["push-1", "push-2", "push-3", "push-5"],
        "the log must hold exactly the accepted events, in order"
    );
    assert!(
        log[1].event.same_content(&first[1]),
        "a rejected id_conflict must not overwrite the stored event"
    );
    assert_eq!(
        log[..3].iter().map(|e| e.recorded_at).collect::<Vec<_>>(),
        recorded_times(&report),
        "pulled events must carry the recorded_at their push reported"
    );
}

/// Head: zero for an empty tenant, the last accepted `seq` after pushes, the same on every
/// connection, unmoved by duplicates and conflicts.
pub async fn check_head(fixture: TransportFixture) {
    let TransportFixture { a, a_again, .. } = fixture;
    assert_eq!(
        a.head().await.expect("head"),
        Seq::ZERO,
        "head of an empty tenant"
    );
    let events = events("head", 0..3);
    let report = push(&a, &events, "three events").await;
    let last = accepted(&report, "three events")[2].0;
    assert_eq!(
        a.head().await.expect("head"),
        last,
        "head must be the last accepted seq"
    );
    assert_eq!(
        a_again.head().await.expect("head"),
        last,
        "every connection of a tenant must see the same head"
    );
    push(&a_again, &events, "duplicates").await;
    let stale = event_on("head-x", "head-agg-0", 9)
        .expected_version(0)
        .build()
        .unwrap();
    let conflict = push(&a_again, &[stale], "a stale event").await;
    assert!(
        matches!(conflict.results[0].outcome, AppendOutcome::Conflict { .. }),
        "an event expecting version 0 of an aggregate with events must conflict, got {:?}",
        conflict.results[0].outcome
    );
    assert_eq!(
        a.head().await.expect("head"),
        last,
        "duplicates and conflicts must not move the head"
    );
}

/// A push prepared ahead (`prepare_push`, then `push_prepared`) answers and stores exactly
/// what a plain push of the same events does, and sending it again gives duplicates.
pub async fn check_prepared_push(fixture: TransportFixture) {
    let TransportFixture { a, a_again, .. } = fixture;
    assert_empty(&a, "prepared push").await;
    let events = events("prepared", 0..20);
    let (first, rest) = events.split_at(10);
    let prepared = a.prepare_push(first).expect("preparing a push");
    let report = match &prepared {
        Some(body) => a.push_prepared(first, body).await,
        None => a.push(first).await,
    }
    .expect("a prepared push");
    let positions = accepted(&report, "a prepared push");
    let plain = accepted(&push(&a_again, rest, "a plain push").await, "a plain push");
    let seqs: Vec<Seq> = positions.iter().chain(&plain).map(|p| p.0).collect();
    assert_increasing(&seqs, "a prepared push and a plain push after it");
    let stored = pull_all(&a, Filter::all()).await;
    assert_eq!(stored.len(), events.len(), "every event is stored once");
    for (stored, sent) in stored.iter().zip(&events) {
        assert!(
            stored.event.same_content(sent),
            "{} must be stored as it was sent",
            sent.id
        );
    }
    if let Some(body) = &prepared {
        let again = a
            .push_prepared(first, body)
            .await
            .expect("a prepared push sent again");
        for result in &again.results {
            assert!(
                matches!(result.outcome, AppendOutcome::Duplicate { .. }),
                "a prepared push sent again must be duplicates, got {:?}",
                result.outcome
            );
        }
    }
}

/// Pull paging: 250 events read 100 at a time come back as pages of 100, 100 and 50 with
/// `next`, `has_more` and `head` right, in order, with their content intact; a read at the head
/// is empty.
pub async fn check_pull_paging(fixture: TransportFixture) {
    let a = fixture.a;
    let all = events("page", 0..250);
    let mut seqs = Vec::new();
    for chunk in all.chunks(50) {
        let report = push(&a, chunk, "a batch of 50").await;
        seqs.extend(accepted(&report, "a batch of 50").into_iter().map(|p| p.0));
    }
    assert_increasing(&seqs, "push");
    let head = seqs[249];

    let mut after = Seq::ZERO;
    for (number, range, has_more) in [(1, 0..100, true), (2, 100..200, true), (3, 200..250, false)]
    {
        let page = pull(&a, after, 100).await;
        let what = format!("page {number} (after {after}, limit 100)");
        assert_eq!(page.events.len(), range.len(), "{what}: number of events");
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            seqs[range.clone()].to_vec(),
            "{what}: seqs"
        );
        for (stored, sent) in page.events.iter().zip(&all[range.clone()]) {
            assert_same_event(stored, sent, &what);
        }
        assert_eq!(
            page.next,
            seqs[range.end - 1],
            "{what}: next must be the last seq of the page"
        );
        assert_eq!(page.has_more, has_more, "{what}: has_more");
        assert_eq!(page.head, head, "{what}: head");
        after = page.next;
    }
    let page = pull(&a, after, 100).await;
    assert!(
        page.events.is_empty(),
        "a pull after the head must be empty, got {} events",
        page.events.len()
    );
    assert!(!page.has_more, "a pull after the head: has_more");
    assert_eq!(
        page.next, head,
        "a pull after the head: next stays at the head"
    );
    assert_eq!(page.head, head, "a pull after the head: head");
}

/// Pull filters: by aggregate and by kind, paged with a small limit, return exactly the
/// matching events in order, and `next` never moves backwards.
pub async fn check_pull_filter(fixture: TransportFixture) {
    let a = fixture.a;
    let all: Vec<Event> = (0..30)
        .map(|i| {
            let aggregate = if i % 2 == 0 {
                "filter-even"
            } else {
                "filter-odd"
            };
            let kind = if i % 3 == 0 { "Renamed" } else { "Noted" };
            Event::builder(kind, aggregate)
                .id(format!("filter-{i}"))
                .origin("suite-node")
                .hlc(stamp(i))
                .data(json!({ "i": i }))
                .build()
                .unwrap()
        })
        .collect();
    push(&a, &all, "30 events").await;

    let by_aggregate = Filter::aggregate("filter-odd".try_into().unwrap());
    let mut by_kind = Filter::all();
    by_kind.kinds = BTreeSet::from(["Renamed".to_owned()]);
    for (name, filter) in [
        ("aggregate filter-odd", by_aggregate),
        ("kind Renamed", by_kind),
    ] {
        let expected: Vec<&str> = all
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| e.id.as_str())
            .collect();
        let got = pull_all_with_limit(&a, filter.clone(), 4).await;
        assert_eq!(ids(&got), expected, "pull with {name}, 4 at a time");
    }
}

/// Pull limits: 0 and more than [`MAX_PAGE_SIZE`] are refused with a permanent `InvalidInput`
/// error.
pub async fn check_pull_invalid_limit(fixture: TransportFixture) {
    let a = fixture.a;
    push(&a, &events("limit", 0..2), "two events").await;
    for limit in [0, MAX_PAGE_SIZE + 1] {
        match a.pull(&ReadRequest::after(Seq::ZERO, limit)).await {
            Ok(page) => panic!(
                "a pull with limit {limit} must fail with invalid_input, got a page of {} events",
                page.events.len()
            ),
            Err(error) => {
                assert_eq!(
                    error.kind(),
                    ErrorKind::InvalidInput,
                    "a pull with limit {limit}: {error}"
                );
                assert!(
                    !error.is_retryable(),
                    "a pull with limit {limit} must not be retryable: {error}"
                );
            }
        }
    }
}

/// Subscribe from 0: two subscribers (one per connection) receive the existing events, then
/// events pushed live from the other connection, each exactly once and in order.
pub async fn check_subscribe_existing_then_live(fixture: TransportFixture) {
    let TransportFixture { a, a_again, .. } = fixture;
    let existing = events("sub", 0..5);
    push(&a, &existing, "five events").await;
    let mut subs = [
        subscribe(&a, Seq::ZERO).await,
        subscribe(&a_again, Seq::ZERO).await,
    ];
    for (n, sub) in subs.iter_mut().enumerate() {
        let got = next_events(
            sub,
            existing.len(),
            &format!("subscriber {n}: existing events"),
        )
        .await;
        assert_events(&got, &existing, &format!("subscriber {n}: existing events"));
    }
    let live = events("sub", 5..8);
    push(&a_again, &live, "three live events").await;
    for (n, sub) in subs.iter_mut().enumerate() {
        let got = next_events(sub, live.len(), &format!("subscriber {n}: live events")).await;
        assert_events(&got, &live, &format!("subscriber {n}: live events"));
    }
    let sentinel = events("sub-sentinel", 0..1);
    push(&a, &sentinel, "a sentinel").await;
    for (n, sub) in subs.iter_mut().enumerate() {
        let got = next_events(sub, 1, &format!("subscriber {n}: sentinel")).await;
        assert_events(
            &got,
            &sentinel,
            &format!("subscriber {n}: nothing may arrive between the live events and the sentinel"),
        );
    }
}

/// Subscribe after N: delivery resumes exactly after N (N not repeated, nothing skipped), and a
/// subscription at the head delivers only later events.
pub async fn check_subscribe_resumes_after(fixture: TransportFixture) {
    let TransportFixture { a, a_again, .. } = fixture;
    let all = events("resume", 0..10);
    let report = push(&a, &all, "ten events").await;
    let seqs: Vec<Seq> = accepted(&report, "ten events")
        .into_iter()
        .map(|p| p.0)
        .collect();

    let mut sub = subscribe(&a_again, seqs[3]).await;
    let got = next_events(&mut sub, 6, "subscription after the 4th event").await;
    assert_events(&got, &all[4..], "subscription after the 4th event");

    let mut at_head = subscribe(&a, report.head).await;
    let later = events("resume-later", 0..1);
    push(&a_again, &later, "an event after the head").await;
    for (name, sub) in [
        ("after the 4th event", &mut sub),
        ("at the head", &mut at_head),
    ] {
        let got = next_events(sub, 1, &format!("subscription {name}: the next event")).await;
        assert_events(
            &got,
            &later,
            &format!("subscription {name}: only events after the cursor"),
        );
    }
}

/// Subscribe while two connections push concurrently: every event is delivered exactly once, in
/// `seq` order, in the same order as the log.
pub async fn check_subscribe_during_concurrent_pushes(fixture: TransportFixture) {
    let TransportFixture { a, a_again, .. } = fixture;
    push(&a, &events("race-pre", 0..20), "20 events").await;
    let pushers: Vec<_> = [("race-x", a.clone()), ("race-y", a_again.clone())]
        .into_iter()
        .map(|(prefix, transport)| {
            tokio::spawn(async move {
                for batch in 0..10 {
                    let chunk = events(prefix, batch * 10..batch * 10 + 10);
                    push(&transport, &chunk, "a concurrent batch").await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    let mut sub = subscribe(&a, Seq::ZERO).await;
    let total = 20 + 2 * 100;
    let got = next_events(&mut sub, total, "events pushed while subscribing").await;
    for pusher in pushers {
        pusher.await.expect("a pusher task panicked");
    }
    let sentinel = events("race-sentinel", 0..1);
    push(&a_again, &sentinel, "a sentinel").await;
    let last = next_events(&mut sub, 1, "the sentinel").await;
    assert_events(
        &last,
        &sentinel,
        "nothing may arrive after all pushed events but the sentinel",
    );

    let mut seen = HashSet::new();
    for event in &got {
        assert!(
            seen.insert(event.event.id.as_str()),
            "event {} was delivered twice",
            event.event.id
        );
    }
    assert_increasing(
        &got.iter().map(|e| e.seq).collect::<Vec<_>>(),
        "subscription",
    );
    let log = pull_all(&a, Filter::all()).await;
    assert_eq!(
        ids(&got),
        ids(&log[..total]),
        "the subscription must deliver the log's events in the log's order"
    );
}

/// Tenant isolation: B sees none of A's events on pull, head or subscribe; A sees none of B's;
/// an id used in A is a new event in B, whatever its content.
pub async fn check_tenant_isolation(fixture: TransportFixture) {
    let TransportFixture { a, b, .. } = fixture;
    assert_empty(&b, "tenant isolation").await;
    let a_events = events("iso", 0..3);
    let a_report = push(&a, &a_events, "three events in A").await;

    assert_eq!(
        b.head().await.expect("head"),
        Seq::ZERO,
        "B's head must not move when A pushes"
    );
    let page = pull(&b, Seq::ZERO, 100).await;
    assert!(
        page.events.is_empty(),
        "B must not pull A's events, got {:?}",
        ids(&page.events)
    );
    assert_eq!(page.head, Seq::ZERO, "B's pull must report B's head");
    assert!(
        !page.has_more,
        "B's pull must not report A's events as more"
    );

    let mut b_sub = subscribe(&b, Seq::ZERO).await;
    let mut a_sub = subscribe(&a, a_report.head).await;
    push(&a, &events("iso", 3..4), "a live event in A").await;

    // The same ids in B: one with other content, one with the same content. Both are new there.
    let mut reused = a_events[0].clone();
    reused.data = json!({"tenant": "b"});
    let b_events = vec![reused, a_events[1].clone()];
    let b_report = push(&b, &b_events, "A's ids in B").await;
    accepted(&b_report, "A's ids in B (ids are scoped per tenant)");
    let got = next_events(&mut b_sub, 2, "B's subscription").await;
    assert_events(&got, &b_events, "B's subscription must see only B's events");

    let a_next = next_events(&mut a_sub, 1, "A's subscription").await;
    assert_events(
        &a_next,
        &events("iso", 3..4),
        "A's subscription must see only A's events",
    );
    let a_log = pull_all(&a, Filter::all()).await;
    assert_eq!(
        ids(&a_log),
        vec!["iso-0", "iso-1", "iso-2", "iso-3"],
        "A's log must hold only A's events"
    );
    assert!(
        a_log[0].event.same_content(&a_events[0]),
        "B's push of a reused id must not change A's event"
    );
}

// ---- helpers ----

fn stamp(n: u64) -> Hlc {
    Hlc::new(SystemClock.now_ms(), u32::try_from(n % 1_000).unwrap())
}

fn event_on(id: &str, aggregate: &str, n: u64) -> synckit_types::EventBuilder {
    Event::builder("Noted", aggregate)
        .id(id)
        .origin("suite-node")
        .hlc(stamp(n))
        .data(json!({"n": n, "text": "unicode ✓ ü", "nested": {"list": [1, 2.5, null, true]}}))
        .metadata("trace", json!(format!("trace-{n}")))
}

/// Events `{prefix}-{i}` for `i` in `range`, without expected versions, spread over three
/// aggregates.
fn events(prefix: &str, range: std::ops::Range<u64>) -> Vec<Event> {
    range
        .map(|i| {
            event_on(
                &format!("{prefix}-{i}"),
                &format!("{prefix}-agg-{}", i % 3),
                i,
            )
            .unchecked()
            .build()
            .unwrap()
        })
        .collect()
}

fn ids(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.id.as_str()).collect()
}

async fn assert_empty(transport: &DynTransport, check: &str) {
    let head = transport.head().await.expect("head");
    assert_eq!(
        head,
        Seq::ZERO,
        "{check}: the fixture must give empty tenants, but the head is {head}"
    );
}

async fn push(transport: &DynTransport, events: &[Event], what: &str) -> AppendReport {
    let report = transport
        .push(events)
        .await
        .unwrap_or_else(|e| panic!("push of {what} failed: {e}"));
    let sent: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let got: Vec<&str> = report.results.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(got, sent, "push of {what}: one result per event, in order");
    report
}

/// The `(seq, aggregate_version)` of every result; panics unless all were accepted.
#[track_caller]
fn accepted(report: &AppendReport, what: &str) -> Vec<(Seq, u64)> {
    report
        .results
        .iter()
        .map(|r| match &r.outcome {
            AppendOutcome::Accepted {
                seq,
                aggregate_version,
                ..
            } => (*seq, *aggregate_version),
            other => panic!("push of {what}: {} must be accepted, got {other:?}", r.id),
        })
        .collect()
}

/// The `recorded_at` of every accepted or duplicate result (0 for the others).
fn recorded_times(report: &AppendReport) -> Vec<u64> {
    report
        .results
        .iter()
        .map(|r| match r.outcome {
            AppendOutcome::Accepted { recorded_at, .. }
            | AppendOutcome::Duplicate { recorded_at, .. } => recorded_at,
            _ => 0,
        })
        .collect()
}

#[track_caller]
fn assert_increasing(seqs: &[Seq], what: &str) {
    for pair in seqs.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{what}: seqs must increase, got {} then {}",
            pair[0],
            pair[1]
        );
    }
}

#[track_caller]
fn assert_same_event(stored: &StoredEvent, sent: &Event, what: &str) {
    assert_eq!(stored.event.id, sent.id, "{what}: event id");
    assert!(
        stored.event.same_content(sent),
        "{what}: event {} came back with other content:\n  sent {sent:?}\n  got  {:?}",
        sent.id,
        stored.event
    );
}

#[track_caller]
fn assert_events(got: &[StoredEvent], sent: &[Event], what: &str) {
    assert_eq!(
        ids(got),
        sent.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        "{what}: events, in order"
    );
    for (stored, sent) in got.iter().zip(sent) {
        assert_same_event(stored, sent, what);
    }
}

async fn pull(transport: &DynTransport, after: Seq, limit: usize) -> Page {
    transport
        .pull(&ReadRequest::after(after, limit))
        .await
        .unwrap_or_else(|e| panic!("pull after {after} limit {limit} failed: {e}"))
}

async fn pull_all(transport: &DynTransport, filter: Filter) -> Vec<StoredEvent> {
    pull_all_with_limit(transport, filter, MAX_PAGE_SIZE).await
}

async fn pull_all_with_limit(
    transport: &DynTransport,
    filter: Filter,
    limit: usize,
) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut after = Seq::ZERO;
    loop {
        let request = ReadRequest::after(after, limit).with_filter(filter.clone());
        let page = transport
            .pull(&request)
            .await
            .unwrap_or_else(|e| panic!("pull {request:?} failed: {e}"));
        assert!(
            page.events.len() <= limit,
            "pull {request:?}: {} events, more than the limit",
            page.events.len()
        );
        assert!(
            page.next >= after,
            "pull {request:?}: next {} moved backwards",
            page.next
        );
        assert!(
            page.has_more || page.next == page.head,
            "pull {request:?}: has_more is false but next {} is not the head {}",
            page.next,
            page.head
        );
        if page.has_more {
            assert!(
                page.next > after,
                "pull {request:?}: has_more without progress"
            );
        }
        for event in &page.events {
            assert!(
                event.seq > after && event.seq <= page.next,
                "pull {request:?}: event at seq {} is outside (after, next = {}]",
                event.seq,
                page.next
            );
            assert!(
                filter.matches(&event.event),
                "pull {request:?}: event {} does not match the filter",
                event.event.id
            );
        }
        out.extend(page.events);
        after = page.next;
        if !page.has_more {
            return out;
        }
    }
}

async fn subscribe(transport: &DynTransport, after: Seq) -> Subscription {
    transport
        .subscribe(after)
        .await
        .unwrap_or_else(|e| panic!("subscribe after {after} failed: {e}"))
}

/// The next `n` events of `sub`; panics on an error, the end of the stream, or [`WAIT`] without
/// an event.
async fn next_events(sub: &mut Subscription, n: usize, what: &str) -> Vec<StoredEvent> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let item = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{what}: no event within {WAIT:?} after {} of {n} (ids so far {:?})",
                    out.len(),
                    ids(&out)
                )
            });
        match item {
            Some(Ok(event)) => out.push(event),
            Some(Err(e)) => panic!(
                "{what}: the subscription failed after {} of {n}: {e}",
                out.len()
            ),
            None => panic!("{what}: the subscription ended after {} of {n}", out.len()),
        }
    }
    out
}
