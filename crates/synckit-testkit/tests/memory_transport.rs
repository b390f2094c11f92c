//! Runs the transport conformance suite on `MemoryHub` over `MemoryStore`, tests the memory
//! transport's fault injection, and shows that every suite check fails on a broken transport.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use proptest::prelude::*;
use synckit_store_memory::MemoryStore;
use synckit_testkit::transport_suite::{self, TransportFixture, transport_suite};
use synckit_transport_memory::{MemoryHub, MemoryTransport};
use synckit_types::{
    AppendOutcome, AppendReport, DynEventStore, Event, EventStoreExt, Filter, Hlc, Page,
    ReadRequest, Result, Seq, Subscription, TenantId, Transport,
};

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

async fn memory_fixture() -> TransportFixture {
    let hub = MemoryHub::new(Arc::new(MemoryStore::new()));
    TransportFixture {
        a: Arc::new(hub.transport(tenant("a"))),
        a_again: Arc::new(hub.transport(tenant("a"))),
        b: Arc::new(hub.transport(tenant("b"))),
    }
}

#[tokio::test]
async fn memory_transport_passes_the_suite() {
    transport_suite(memory_fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_transport_passes_the_suite_on_many_threads() {
    transport_suite(memory_fixture).await;
}

// ---- fault injection ----

fn event(id: &str) -> Event {
    Event::builder("Noted", "agg-1")
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1, 0))
        .build()
        .unwrap()
}

fn hub_with_store() -> (DynEventStore, MemoryHub, MemoryTransport) {
    let store: DynEventStore = Arc::new(MemoryStore::new());
    let hub = MemoryHub::new(store.clone());
    let transport = hub.transport(tenant("a"));
    (store, hub, transport)
}

#[tokio::test]
async fn a_lost_response_still_wakes_subscribers() {
    let (_store, hub, t) = hub_with_store();
    let mut sub = hub
        .transport(tenant("a"))
        .subscribe(Seq::ZERO)
        .await
        .unwrap();
    t.faults().lose_next_responses(1);
    assert!(t.push(&[event("e1")]).await.is_err());
    let got = tokio::time::timeout(transport_suite::WAIT, sub.next())
        .await
        .expect("the committed event must be delivered")
        .unwrap()
        .unwrap();
    assert_eq!(got.event.id.as_str(), "e1");
}

/// One attempt's fault: none, fail before the hub, or lose the response after it.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    Fail,
    Lose,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![Just(Fault::None), Just(Fault::Fail), Just(Fault::Lose)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A client that retries every batch until it gets an answer ends with each event stored
    /// exactly once, in order, whatever faults hit its attempts.
    #[test]
    fn retrying_through_faults_stores_each_event_once(
        batches in proptest::collection::vec(1usize..5, 1..6),
        faults in proptest::collection::vec(fault(), 0..30),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (store, _hub, t) = hub_with_store();
            let mut faults = faults.into_iter();
            let mut sent = Vec::new();
            for (b, size) in batches.iter().enumerate() {
                let batch: Vec<Event> = (0..*size).map(|i| event(&format!("b{b}-{i}"))).collect();
                sent.extend(batch.iter().map(|e| e.id.to_string()));
                loop {
                    match faults.next().unwrap_or(Fault::None) {
                        Fault::None => {}
                        Fault::Fail => t.faults().fail_next(1),
                        Fault::Lose => t.faults().lose_next_responses(1),
                    }
                    match t.push(&batch).await {
                        Ok(report) => {
                            assert!(report.results.iter().all(|r| r.outcome.is_stored()));
                            break;
                        }
                        Err(error) => assert!(error.is_retryable(), "{error}"),
                    }
                }
            }
            let stored: Vec<String> = store
                .read_all(&tenant("a"))
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event.id.to_string())
                .collect();
            assert_eq!(stored, sent);
        });
    }
}

// ---- every check can fail ----

/// A deliberate bug, one per check.
#[derive(Debug, Clone, Copy)]
enum Bug {
    /// Reports duplicates as newly accepted.
    DuplicateAsAccepted,
    /// Reports a head one behind.
    HeadLags,
    /// Never says there is more to read.
    NeverHasMore,
    /// Drops the filter of a pull.
    IgnoresFilter,
    /// Clamps an out-of-range limit instead of refusing it.
    ClampsLimit,
    /// Delivers every subscribed event twice.
    DeliversTwice,
    /// Resumes a subscription at the cursor instead of after it.
    ResumesAtCursor,
}

/// A memory transport with one bug.
#[derive(Debug)]
struct Broken {
    inner: MemoryTransport,
    bug: Bug,
}

#[async_trait]
impl Transport for Broken {
    async fn push(&self, events: &[Event]) -> Result<AppendReport> {
        let mut report = self.inner.push(events).await?;
        if let Bug::DuplicateAsAccepted = self.bug {
            for result in &mut report.results {
                if let AppendOutcome::Duplicate {
                    seq,
                    aggregate_version,
                    recorded_at,
                } = result.outcome
                {
                    result.outcome = AppendOutcome::Accepted {
                        seq,
                        aggregate_version,
                        recorded_at,
                    };
                }
            }
        }
        Ok(report)
    }

    async fn pull(&self, request: &ReadRequest) -> Result<Page> {
        let mut request = request.clone();
        match self.bug {
            Bug::IgnoresFilter => request.filter = Filter::all(),
            Bug::ClampsLimit => request.limit = request.limit.clamp(1, 100),
            _ => {}
        }
        let mut page = self.inner.pull(&request).await?;
        if let Bug::NeverHasMore = self.bug {
            page.has_more = false;
        }
        Ok(page)
    }

    async fn head(&self) -> Result<Seq> {
        let head = self.inner.head().await?;
        Ok(match self.bug {
            Bug::HeadLags => Seq(head.get().saturating_sub(1)),
            _ => head,
        })
    }

    async fn subscribe(&self, after: Seq) -> Result<Subscription> {
        match self.bug {
            Bug::ResumesAtCursor => {
                self.inner
                    .subscribe(Seq(after.get().saturating_sub(1)))
                    .await
            }
            Bug::DeliversTwice => {
                let sub = self.inner.subscribe(after).await?;
                Ok(Box::pin(sub.flat_map(|item| {
                    let again = match &item {
                        Ok(event) => Ok(event.clone()),
                        Err(error) => Err(synckit_types::Error::new(error.kind(), error.message())),
                    };
                    futures::stream::iter([item, again])
                })))
            }
            _ => self.inner.subscribe(after).await,
        }
    }
}

async fn broken_fixture(bug: Bug) -> TransportFixture {
    let hub = MemoryHub::new(Arc::new(MemoryStore::new()));
    let broken = |name: &str| -> Arc<Broken> {
        Arc::new(Broken {
            inner: hub.transport(tenant(name)),
            bug,
        })
    };
    TransportFixture {
        a: broken("a"),
        a_again: broken("a"),
        b: broken("b"),
    }
}

/// Run `check` and require it to panic.
async fn must_fail<Fut: std::future::Future<Output = ()>>(name: &str, check: Fut) {
    let outcome = AssertUnwindSafe(check).catch_unwind().await;
    assert!(outcome.is_err(), "{name} passed on a broken transport");
}

#[tokio::test]
async fn every_check_fails_on_a_broken_transport() {
    use transport_suite::*;

    must_fail(
        "check_push_outcomes",
        check_push_outcomes(broken_fixture(Bug::DuplicateAsAccepted).await),
    )
    .await;
    must_fail(
        "check_head",
        check_head(broken_fixture(Bug::HeadLags).await),
    )
    .await;
    must_fail(
        "check_pull_paging",
        check_pull_paging(broken_fixture(Bug::NeverHasMore).await),
    )
    .await;
    must_fail(
        "check_pull_filter",
        check_pull_filter(broken_fixture(Bug::IgnoresFilter).await),
    )
    .await;
    must_fail(
        "check_pull_invalid_limit",
        check_pull_invalid_limit(broken_fixture(Bug::ClampsLimit).await),
    )
    .await;
    must_fail(
        "check_subscribe_existing_then_live",
        check_subscribe_existing_then_live(broken_fixture(Bug::DeliversTwice).await),
    )
    .await;
    must_fail(
        "check_subscribe_resumes_after",
        check_subscribe_resumes_after(broken_fixture(Bug::ResumesAtCursor).await),
    )
    .await;
    must_fail(
        "check_subscribe_during_concurrent_pushes",
        check_subscribe_during_concurrent_pushes(broken_fixture(Bug::DeliversTwice).await),
    )
    .await;

    // Isolation: tenant B's connection is really tenant A's.
    let mut leaky = memory_fixture().await;
    leaky.b = leaky.a_again.clone();
    must_fail("check_tenant_isolation", check_tenant_isolation(leaky)).await;
}
