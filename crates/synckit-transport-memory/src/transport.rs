//! `MemoryTransport`: the client `Transport` of a [`MemoryHub`](crate::MemoryHub), and its live
//! subscriptions.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use synckit_types::{
    AppendOutcome, AppendReport, DynEventStore, Error, Event, Page, ReadRequest, Result, Seq,
    StoredEvent, Subscription, TenantId, Transport,
};
use tokio::sync::watch;

use crate::faults::Faults;
use crate::hub::bump;

/// How many events a live subscription reads from the store at a time; it holds at most one
/// such page in memory.
pub const SUBSCRIPTION_PAGE_SIZE: usize = 500;

/// A client connection to a [`MemoryHub`](crate::MemoryHub), bound to one tenant.
///
/// Calls go straight to the hub's store, through the connection's [`Faults`]. Clones share the
/// connection, and so its faults and counters.
#[derive(Debug, Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: DynEventStore,
    tenant: TenantId,
    /// The tenant's generation counter at the hub.
    notify: Arc<watch::Sender<u64>>,
    faults: Faults,
}

impl MemoryTransport {
    pub(crate) fn new(
        store: DynEventStore,
        tenant: TenantId,
        notify: Arc<watch::Sender<u64>>,
    ) -> MemoryTransport {
        MemoryTransport {
            inner: Arc::new(Inner {
                store,
                tenant,
                notify,
                faults: Faults::default(),
            }),
        }
    }

    /// The tenant this connection reads and writes.
    pub fn tenant(&self) -> &TenantId {
        &self.inner.tenant
    }

    /// The faults injected into this connection's calls (see [`Faults`]).
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn push(&self, events: &[Event]) -> Result<AppendReport> {
        let inner = &*self.inner;
        inner.faults.before_call("push").await?;
        let report = inner.store.append(&inner.tenant, events).await?;
        if report
            .results
            .iter()
            .any(|r| matches!(r.outcome, AppendOutcome::Accepted { .. }))
        {
            // Committed: wake subscribers even if the response is about to be lost.
            bump(&inner.notify);
        }
        inner.faults.after_call("push")?;
        Ok(report)
    }

    async fn pull(&self, request: &ReadRequest) -> Result<Page> {
        let inner = &*self.inner;
        inner.faults.before_call("pull").await?;
        request.validate()?;
        let page = inner.store.read(&inner.tenant, request).await?;
        inner.faults.after_call("pull")?;
        Ok(page)
    }

    async fn head(&self) -> Result<Seq> {
        let inner = &*self.inner;
        inner.faults.before_call("head").await?;
        let head = inner.store.head(&inner.tenant).await?;
        inner.faults.after_call("head")?;
        Ok(head)
    }

    async fn subscribe(&self, after: Seq) -> Result<Subscription> {
        let inner = &self.inner;
        inner.faults.before_call("subscribe").await?;
        // Watch before the first read: an append that commits after the read bumps a generation
        // this receiver has not seen yet, so it cannot slip between the read and the wait.
        let live = inner.notify.subscribe();
        let disconnects = inner.faults.disconnects();
        let mut state = LiveState {
            inner: Arc::clone(inner),
            live,
            disconnects,
            cursor: after,
            buffer: VecDeque::new(),
            caught_up: false,
            ended: false,
        };
        // The first page is read here so that a failing store fails the call itself.
        state.read_page().await?;
        inner.faults.after_call("subscribe")?;
        Ok(Box::pin(futures::stream::unfold(state, LiveState::next)))
    }
}

/// The state of one live subscription: a cursor, at most one page of events, and the two
/// receivers it waits on when caught up.
struct LiveState {
    inner: Arc<Inner>,
    /// The tenant's generation counter: changes after every append that stored something.
    live: watch::Receiver<u64>,
    /// Changes when a disconnect is injected.
    disconnects: watch::Receiver<u64>,
    /// Every event with `seq <= cursor` was read (and is in `buffer` or was yielded).
    cursor: Seq,
    buffer: VecDeque<StoredEvent>,
    /// The last read found nothing after `cursor`: wait for an append before reading again.
    caught_up: bool,
    ended: bool,
}

impl LiveState {
    async fn read_page(&mut self) -> Result<()> {
        let request = ReadRequest::after(self.cursor, SUBSCRIPTION_PAGE_SIZE);
        let page = self.inner.store.read(&self.inner.tenant, &request).await?;
        if page.has_more && page.next <= self.cursor {
            // A store that says "more" without moving on would make this loop forever.
            return Err(Error::internal(format!(
                "store read after {} reported more events but no progress",
                self.cursor
            )));
        }
        // Never move backwards, even if a store answers `next` below the requested cursor.
        self.cursor = self.cursor.max(page.next);
        self.caught_up = !page.has_more;
        self.buffer = page.events.into();
        Ok(())
    }

    fn disconnected(&self) -> bool {
        // An error means the faults are gone, which only happens when the transport is: stop.
        !matches!(self.disconnects.has_changed(), Ok(false))
    }

    /// The next event, or the error that ends the stream.
    async fn next(mut self) -> Option<(Result<StoredEvent>, LiveState)> {
        if self.ended {
            return None;
        }
        loop {
            if self.disconnected() {
                return self.end(Error::unavailable(
                    "injected fault: subscription disconnected; subscribe again after the last seq received",
                ));
            }
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            if self.caught_up {
                tokio::select! {
                    changed = self.live.changed() => {
                        if changed.is_err() {
                            return self.end(Error::closed("memory hub"));
                        }
                    }
                    // Checked at the top of the loop.
                    _ = self.disconnects.changed() => continue,
                }
            }
            if let Err(error) = self.read_page().await {
                return self.end(error.context("memory subscription"));
            }
        }
    }

    fn end(mut self, error: Error) -> Option<(Result<StoredEvent>, LiveState)> {
        self.ended = true;
        self.buffer.clear();
        Some((Err(error), self))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use synckit_store_memory::MemoryStore;
    use synckit_types::{ErrorKind, EventStore, Hlc};

    use super::*;
    use crate::MemoryHub;

    fn event(id: &str) -> Event {
        Event::builder("Noted", "agg-1")
            .id(id)
            .origin("n1")
            .hlc(Hlc::new(1, 0))
            .build()
            .unwrap()
    }

    fn tenant() -> TenantId {
        TenantId::new("t1").unwrap()
    }

    fn setup() -> (DynEventStore, MemoryHub, MemoryTransport) {
        let store: DynEventStore = Arc::new(MemoryStore::new());
        let hub = MemoryHub::new(store.clone());
        let transport = hub.transport(tenant());
        (store, hub, transport)
    }

    async fn next_event(sub: &mut Subscription) -> Result<StoredEvent> {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("no event within 10 s")
            .expect("subscription ended")
    }

    #[tokio::test]
    async fn calls_reach_the_store() {
        let (store, _hub, t) = setup();
        let report = t.push(&[event("e1"), event("e2")]).await.unwrap();
        assert_eq!(report.head, Seq(2));
        assert_eq!(store.head(&tenant()).await.unwrap(), Seq(2));
        assert_eq!(t.head().await.unwrap(), Seq(2));
        let page = t.pull(&ReadRequest::after(Seq(1), 10)).await.unwrap();
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.events[0].event.id.as_str(), "e2");
        assert_eq!(t.faults().calls(), 3);
        assert_eq!(t.faults().injected(), 0);
        assert_eq!(t.tenant(), &tenant());
    }

    #[tokio::test]
    async fn failed_calls_do_not_reach_the_store() {
        let (store, _hub, t) = setup();
        t.faults().fail_next(3);
        for _ in 0..2 {
            let err = t.push(&[event("e1")]).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert!(err.is_retryable());
        }
        assert_eq!(t.head().await.unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(store.head(&tenant()).await.unwrap(), Seq::ZERO);
        let report = t.push(&[event("e1")]).await.unwrap();
        assert!(matches!(
            report.results[0].outcome,
            AppendOutcome::Accepted { seq: Seq(1), .. }
        ));
        assert_eq!(t.faults().calls(), 4);
        assert_eq!(t.faults().injected(), 3);
    }

    #[tokio::test]
    async fn lost_responses_are_committed() {
        let (store, _hub, t) = setup();
        t.faults().lose_next_responses(2);
        let err = t.push(&[event("e1")]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
        assert_eq!(store.head(&tenant()).await.unwrap(), Seq(1));
        // The pull is served, then its answer thrown away.
        assert!(t.pull(&ReadRequest::after(Seq::ZERO, 10)).await.is_err());
        let retry = t.push(&[event("e1")]).await.unwrap();
        assert!(matches!(
            retry.results[0].outcome,
            AppendOutcome::Duplicate { seq: Seq(1), .. }
        ));
        assert_eq!(store.head(&tenant()).await.unwrap(), Seq(1));
    }

    #[tokio::test]
    async fn a_store_failure_does_not_use_up_a_lost_response() {
        let (store, _hub, t) = setup();
        t.faults().lose_next_responses(1);
        // Rejected by validation before the store: the count stays.
        let err = t.pull(&ReadRequest::after(Seq::ZERO, 0)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(t.head().await.is_err());
        assert!(t.head().await.is_ok());
        store.close().await.unwrap();
        assert_eq!(t.head().await.unwrap_err().kind(), ErrorKind::Closed);
        assert_eq!(
            t.subscribe(Seq::ZERO).await.err().unwrap().kind(),
            ErrorKind::Closed
        );
    }

    #[tokio::test]
    async fn faults_are_shared_by_clones_only() {
        let (_store, hub, t) = setup();
        let clone = t.clone();
        let other = hub.transport(tenant());
        t.faults().fail_next(1);
        assert!(clone.head().await.is_err());
        t.faults().fail_next(1);
        assert!(other.head().await.is_ok());
        assert!(t.head().await.is_err());
        assert_eq!(t.faults().calls(), 2);
        assert_eq!(other.faults().calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_applies_to_every_call() {
        let (_store, _hub, t) = setup();
        t.faults().set_delay(Duration::from_millis(250));
        let start = tokio::time::Instant::now();
        t.head().await.unwrap();
        t.push(&[event("e1")]).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        t.faults().set_delay(Duration::ZERO);
        t.head().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }

    #[tokio::test]
    async fn subscriptions_follow_pushes_from_other_connections() {
        let (_store, hub, t) = setup();
        t.push(&[event("e1")]).await.unwrap();
        let mut sub = t.subscribe(Seq::ZERO).await.unwrap();
        assert_eq!(next_event(&mut sub).await.unwrap().seq, Seq(1));
        let writer = hub.transport(tenant());
        writer.push(&[event("e2"), event("e3")]).await.unwrap();
        assert_eq!(next_event(&mut sub).await.unwrap().seq, Seq(2));
        assert_eq!(next_event(&mut sub).await.unwrap().seq, Seq(3));
    }

    #[tokio::test]
    async fn notify_wakes_subscribers_for_direct_appends() {
        let (store, hub, t) = setup();
        let mut sub = t.subscribe(Seq::ZERO).await.unwrap();
        store.append(&tenant(), &[event("e1")]).await.unwrap();
        hub.notify(&tenant());
        assert_eq!(next_event(&mut sub).await.unwrap().seq, Seq(1));
    }

    #[tokio::test]
    async fn disconnects_end_live_subscriptions_with_a_retryable_error() {
        let (_store, _hub, t) = setup();
        t.push(&[event("e1")]).await.unwrap();
        let mut waiting = t.subscribe(Seq(1)).await.unwrap();
        let mut unread = t.subscribe(Seq::ZERO).await.unwrap();
        t.faults().disconnect_subscriptions();
        let err = next_event(&mut waiting).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.is_retryable());
        assert!(
            waiting.next().await.is_none(),
            "the stream ends after its error"
        );
        assert!(next_event(&mut unread).await.is_err());
        // A new subscription is not affected.
        let mut again = t.subscribe(Seq::ZERO).await.unwrap();
        assert_eq!(next_event(&mut again).await.unwrap().seq, Seq(1));
    }

    #[tokio::test]
    async fn subscriptions_page_through_long_logs() {
        let (_store, _hub, t) = setup();
        let total = SUBSCRIPTION_PAGE_SIZE * 2 + 7;
        let events: Vec<Event> = (0..total).map(|i| event(&format!("e{i}"))).collect();
        t.push(&events).await.unwrap();
        let mut sub = t.subscribe(Seq(3)).await.unwrap();
        for expected in 4..=total as u64 {
            assert_eq!(next_event(&mut sub).await.unwrap().seq, Seq(expected));
        }
    }
}
