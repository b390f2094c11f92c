//! The node's API contract: auto-sync, close, retries, configuration errors, subscribers, the
//! observable state, the per-sync timeout and pull filters.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use synckit::prelude::*;
use synckit::{NodeStoreExt, RetryPolicy, SyncOutcome};
use synckit_tests::{Probe, TestHub, node};
use tokio::sync::broadcast::error::TryRecvError;

fn edit(aggregate: &str) -> EventBuilder {
    Event::builder("Edited", aggregate).data(json!({"v": 1}))
}

async fn probed(
    hub: &TestHub,
    delay: Duration,
    config: Config,
) -> (Node, Arc<Probe<MemoryTransport>>) {
    let probe = Arc::new(Probe::new(hub.transport(), delay));
    let n = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .transport(probe.clone())
        .config(config)
        .open()
        .await
        .unwrap();
    *probe.state_source.lock().unwrap() = Some(n.watch_sync_state());
    (n, probe)
}

#[tokio::test(start_paused = true)]
async fn auto_sync_runs_one_loop_and_a_zero_interval_is_a_config_error() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let err = a.node.start_auto_sync(Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(!a.node.auto_sync_running());

    let mut results = a.node.subscribe();
    let interval = Duration::from_secs(10);
    a.node.start_auto_sync(interval).unwrap();
    a.node.start_auto_sync(interval).unwrap();
    assert!(a.node.auto_sync_running());
    // The first run starts at once; then one per interval. Two loops would give two each time.
    results.recv().await.unwrap();
    for _ in 0..5 {
        tokio::time::advance(interval).await;
        results.recv().await.unwrap();
        tokio::task::yield_now().await;
        assert!(
            matches!(results.try_recv(), Err(TryRecvError::Empty)),
            "one loop only"
        );
    }
    a.node.append(edit("x")).await.unwrap();
    tokio::time::advance(interval).await;
    assert_eq!(
        results.recv().await.unwrap().pushed,
        1,
        "auto-sync pushes new appends"
    );

    a.node.stop_auto_sync().await;
    assert!(!a.node.auto_sync_running());
    tokio::time::advance(interval * 3).await;
    tokio::task::yield_now().await;
    assert!(
        matches!(results.try_recv(), Err(TryRecvError::Empty)),
        "stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn sync_runs_never_overlap() {
    let hub = TestHub::new();
    let (n, probe) = probed(&hub, Duration::from_millis(20), Config::default()).await;
    for i in 0..5 {
        n.append(edit(&format!("a{i}"))).await.unwrap();
    }
    n.start_auto_sync(Duration::from_millis(7)).unwrap();
    let (a, b, c) = tokio::join!(n.sync(), n.sync(), n.push());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    n.stop_auto_sync().await;
    let (now, max) = *probe.in_flight.lock().unwrap();
    assert_eq!(now, 0);
    assert_eq!(
        max, 1,
        "at most one hub call in flight: runs never overlapped"
    );
    assert_eq!(hub.log().await.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn close_is_idempotent_and_later_calls_fail_closed() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    a.node.start_auto_sync(Duration::from_secs(1)).unwrap();
    a.node.close().await.unwrap();
    a.node.close().await.unwrap();
    assert!(!a.node.auto_sync_running());
    for err in [
        a.node.append(edit("x")).await.unwrap_err(),
        a.node.sync().await.unwrap_err(),
        a.node.push().await.unwrap_err(),
        a.node.pull().await.unwrap_err(),
        a.node.status().await.unwrap_err(),
        a.node.reviews(1).await.unwrap_err(),
        a.node.start_auto_sync(Duration::from_secs(1)).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_and_permanent_ones_are_not() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await; // 3 attempts
    a.node.append(edit("x")).await.unwrap();
    a.transport.faults().fail_next(2);
    let before = a.transport.faults().calls();
    let r = a.node.push().await.unwrap();
    assert_eq!(r.pushed, 1);
    assert_eq!(
        a.transport.faults().calls() - before,
        3,
        "two failures, then success"
    );

    a.node.append(edit("y")).await.unwrap();
    a.transport.faults().fail_next(3);
    let err = a.node.push().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.to_string().contains("after 3 attempt"), "{err}");

    let (n, probe) = probed(&hub, Duration::ZERO, Config::default()).await;
    n.append(edit("z")).await.unwrap();
    *probe.push_error.lock().unwrap() = Some(|| Error::invalid_input("bad request"));
    let err = n.push().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        probe.batches.lock().unwrap().len(),
        1,
        "a permanent error is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_during_back_off_returns_at_once() {
    let hub = TestHub::new();
    let config = Config {
        retry: RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(3600),
            cap: Duration::from_secs(3600),
            jitter: 0.0,
        },
        ..Config::default()
    };
    let (n, probe) = probed(&hub, Duration::ZERO, config).await;
    n.append(edit("x")).await.unwrap();
    *probe.push_error.lock().unwrap() = Some(|| Error::unavailable("down"));
    let started = tokio::time::Instant::now();
    let mut sync = pin!(n.sync());
    assert!(
        matches!(futures::poll!(sync.as_mut()), Poll::Pending),
        "backing off"
    );
    assert_eq!(probe.batches.lock().unwrap().len(), 1);
    n.cancel_sync();
    let err = sync.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no back-off was waited out"
    );
    assert_eq!(n.sync_state(), SyncState::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn push_only_and_pull_only() {
    let hub = TestHub::new();
    let both = Config {
        push_only: true,
        pull_only: true,
        ..Config::default()
    };
    let err = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .transport(Arc::new(hub.transport()))
        .config(both)
        .open()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);

    let other = node(&hub, "o", 1_000).await;
    other.node.append(edit("o")).await.unwrap();
    other.node.sync().await.unwrap();

    let (pusher, probe) = probed(
        &hub,
        Duration::ZERO,
        Config::builder().push_only(true).build().unwrap(),
    )
    .await;
    pusher.append(edit("p")).await.unwrap();
    let r = pusher.sync().await.unwrap();
    assert_eq!((r.pushed, r.pulled), (1, 0));
    assert_eq!(*probe.pulls.lock().unwrap(), 0);
    assert_eq!(pusher.pull().await.unwrap_err().kind(), ErrorKind::Config);

    let (puller, probe) = probed(
        &hub,
        Duration::ZERO,
        Config::builder().pull_only(true).build().unwrap(),
    )
    .await;
    puller.append(edit("q")).await.unwrap();
    let r = puller.sync().await.unwrap();
    assert_eq!((r.pushed, r.pulled), (0, 2));
    assert!(probe.batches.lock().unwrap().is_empty());
    assert_eq!(puller.status().await.unwrap().pending, 1, "kept for later");
    assert_eq!(puller.push().await.unwrap_err().kind(), ErrorKind::Config);
}

#[tokio::test(start_paused = true)]
async fn subscribers_get_every_result_and_the_state_is_observable() {
    let hub = TestHub::new();
    let (n, probe) = probed(&hub, Duration::ZERO, Config::default()).await;
    assert_eq!(n.sync_state(), SyncState::Idle);
    let mut results = n.subscribe();
    n.append(edit("x")).await.unwrap();
    n.sync().await.unwrap();
    *probe.push_error.lock().unwrap() = Some(|| Error::invalid_input("nope"));
    n.append(edit("y")).await.unwrap();
    assert!(n.sync().await.is_err());
    assert_eq!(n.sync_state(), SyncState::Failed);

    let first = results.recv().await.unwrap();
    assert_eq!((first.outcome, first.pushed), (SyncOutcome::Completed, 1));
    assert_eq!(first.hub_head, Some(Seq(1)));
    assert_eq!(first.local_head, Seq(1));
    let second = results.recv().await.unwrap();
    assert_eq!(second.outcome, SyncOutcome::Failed);
    assert_eq!(second.errors.last().unwrap().code, "invalid_input");
    let seen = probe.states.lock().unwrap().clone();
    assert_eq!(seen[..2], [SyncState::Pushing, SyncState::Pulling]);
}

#[tokio::test(start_paused = true)]
async fn a_sync_past_its_timeout_fails_and_the_next_one_recovers() {
    let hub = TestHub::new();
    let config = Config::builder()
        .sync_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (n, _) = probed(&hub, Duration::from_secs(5), config).await;
    n.append(edit("x")).await.unwrap();
    let err = n.sync().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(n.sync_state(), SyncState::Failed);
    assert_eq!(n.status().await.unwrap().pending, 1, "nothing lost");
}

#[tokio::test(start_paused = true)]
async fn a_filtered_node_reads_past_what_it_skips() {
    let hub = TestHub::new();
    let w = node(&hub, "w", 1_000).await;
    for i in 0..10 {
        let kind = if i % 2 == 0 { "Wanted" } else { "Other" };
        w.node
            .append(Event::builder(kind, format!("a{i}")).data(json!(i)))
            .await
            .unwrap();
    }
    w.node.sync().await.unwrap();
    let filter = Filter {
        aggregate_id: None,
        kinds: BTreeSet::from(["Wanted".to_owned()]),
    };
    let config = Config::builder()
        .page_size(2)
        .filter(filter)
        .build()
        .unwrap();
    let (n, _) = probed(&hub, Duration::ZERO, config).await;
    let r = n.sync().await.unwrap();
    assert_eq!(r.pulled, 5);
    assert_eq!(r.local_head, Seq(10), "filtered events count as read");
    let local = n.store().confirmed_all().await.unwrap();
    assert!(local.iter().all(|e| e.event.kind == "Wanted"));
}

#[tokio::test(start_paused = true)]
async fn appends_stamp_the_event_and_reject_bad_input() {
    let hub = TestHub::new();
    let a = node(&hub, "a", 1_000).await;
    let first = a.node.append(edit("t")).await.unwrap();
    let second = a.node.append(edit("t")).await.unwrap();
    assert_eq!(first.origin.as_str(), "a");
    assert!(second.hlc > first.hlc);
    assert_eq!(
        (first.expected_version, second.expected_version),
        (Some(0), Some(1))
    );
    let unchecked = a.node.append(edit("t").unchecked()).await.unwrap();
    assert_eq!(unchecked.expected_version, None);
    let exact = a.node.append(edit("u").expected_version(7)).await.unwrap();
    assert_eq!(exact.expected_version, Some(7));

    let before = a.store.pending_all().await.unwrap();
    for bad in [
        Event::builder("", "t"),
        Event::builder("K", ""),
        edit("t").origin("someone-else"),
        edit("t").id(first.id.as_str()),
        edit("t").id(""),
    ] {
        assert!(a.node.append(bad).await.is_err());
    }
    assert_eq!(
        a.store.pending_all().await.unwrap(),
        before,
        "bad input changes nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_reopens_with_its_identity_and_refuses_another() {
    let hub = TestHub::new();
    let store = Arc::new(MemoryStore::new());
    let open = |id: Option<&str>| {
        let config = Config {
            node_id: id.map(|s| NodeId::new(s).unwrap()),
            ..Config::default()
        };
        Node::builder()
            .store(store.clone())
            .transport(Arc::new(hub.transport()))
            .config(config)
            .open()
    };
    let first = open(None).await.unwrap();
    let id = first.id().clone();
    drop(first);
    assert_eq!(open(None).await.unwrap().id(), &id);
    assert_eq!(
        open(Some("impostor")).await.unwrap_err().kind(),
        ErrorKind::Config
    );
}

#[tokio::test(start_paused = true)]
async fn watch_syncs_on_notification_and_recovers_when_the_stream_drops() {
    let hub = TestHub::new();
    let w = node(&hub, "w", 1_000).await;
    let other = node(&hub, "o", 1_000).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut results = w.node.subscribe();
    let watcher = tokio::spawn({
        let n = w.node.clone();
        let stop = stop.clone();
        async move {
            n.watch(stop, Duration::from_secs(1), Duration::from_secs(8))
                .await
        }
    });
    results.recv().await.unwrap(); // the catch-up sync when the stream opens

    other.node.append(edit("a")).await.unwrap();
    other.node.push().await.unwrap();
    assert_eq!(
        results.recv().await.unwrap().pulled,
        1,
        "synced on notification"
    );

    // The stream drops; the watcher polls and subscribes again, and still gets new events.
    w.transport.faults().disconnect_subscriptions();
    other.node.append(edit("b")).await.unwrap();
    other.node.push().await.unwrap();
    let mut pulled = 0;
    for _ in 0..10 {
        pulled += results.recv().await.unwrap().pulled;
        if pulled == 1 {
            break;
        }
    }
    assert_eq!(pulled, 1);
    assert_eq!(w.store.confirmed_all().await.unwrap(), hub.log().await);
    stop.cancel();
    watcher.await.unwrap().unwrap();
    let err = w
        .node
        .watch(stop.clone(), Duration::ZERO, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}
