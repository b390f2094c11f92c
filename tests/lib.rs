//! Shared helpers of the whole-system tests: node and hub set-up, and probing transports.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use synckit::prelude::*;
use synckit::{
    AppendReport, DynResolver, ManualClock, Page, ReadRequest, RetryPolicy, Subscription,
};

/// A hub over a memory store, for one tenant.
pub struct TestHub {
    /// The hub's store.
    pub store: Arc<MemoryStore>,
    /// The hub.
    pub hub: MemoryHub,
    /// The tenant of every node.
    pub tenant: TenantId,
}

impl TestHub {
    /// A new, empty hub.
    pub fn new() -> TestHub {
        let store = Arc::new(MemoryStore::new());
        TestHub {
            hub: MemoryHub::new(store.clone()),
            store,
            tenant: TenantId::new("t").unwrap(),
        }
    }

    /// A connection for a node.
    pub fn transport(&self) -> MemoryTransport {
        self.hub.transport(self.tenant.clone())
    }

    /// The hub's whole log.
    pub async fn log(&self) -> Vec<StoredEvent> {
        use synckit::EventStoreExt;
        self.store.read_all(&self.tenant).await.unwrap()
    }
}

impl Default for TestHub {
    fn default() -> Self {
        TestHub::new()
    }
}

/// A node's parts, kept so tests can inspect and restart it.
pub struct TestNode {
    /// The node.
    pub node: Node,
    /// Its store.
    pub store: Arc<MemoryStore>,
    /// Its connection (fault switches).
    pub transport: MemoryTransport,
    /// Its clock.
    pub clock: ManualClock,
}

/// Fast retries so paused-time tests run instantly.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(50),
        jitter: 0.0,
    }
}

/// Open node `name` on `hub` with `resolver` and `config` (node id and retry are filled in).
pub async fn node_with(
    hub: &TestHub,
    name: &str,
    resolver: DynResolver,
    config: Config,
    clock_ms: u64,
) -> TestNode {
    let store = Arc::new(MemoryStore::new());
    let transport = hub.transport();
    let clock = ManualClock::new(clock_ms);
    let node = Node::builder()
        .store(store.clone())
        .transport(Arc::new(transport.clone()))
        .resolver(resolver)
        .clock(Arc::new(clock.clone()))
        .config(Config {
            node_id: Some(NodeId::new(name).unwrap()),
            ..config
        })
        .open()
        .await
        .unwrap();
    TestNode {
        node,
        store,
        transport,
        clock,
    }
}

/// Open node `name` with defaults, last-write-wins and quick retries.
pub async fn node(hub: &TestHub, name: &str, clock_ms: u64) -> TestNode {
    let config = Config {
        retry: quick_retry(),
        ..Config::default()
    };
    node_with(hub, name, Arc::new(LastWriteWins), config, clock_ms).await
}

/// A transport wrapper that records what passes through it.
#[derive(Debug)]
pub struct Probe<T> {
    inner: T,
    /// Length of every push batch, in order.
    pub batches: Mutex<Vec<usize>>,
    /// Number of pull calls.
    pub pulls: Mutex<usize>,
    /// Calls in flight now, and the most ever in flight at once.
    pub in_flight: Mutex<(usize, usize)>,
    /// The node's sync state seen at each call (set once the node exists).
    pub states: Mutex<Vec<SyncState>>,
    /// Where to read the sync state from.
    pub state_source: Mutex<Option<tokio::sync::watch::Receiver<SyncState>>>,
    /// Delay of every call.
    pub delay: Duration,
    /// An error every push returns instead of reaching the hub.
    pub push_error: Mutex<Option<fn() -> Error>>,
}

impl<T> Probe<T> {
    /// Wrap `inner`, delaying each call by `delay`.
    pub fn new(inner: T, delay: Duration) -> Probe<T> {
        Probe {
            inner,
            batches: Mutex::default(),
            pulls: Mutex::default(),
            in_flight: Mutex::default(),
            states: Mutex::default(),
            state_source: Mutex::default(),
            delay,
            push_error: Mutex::default(),
        }
    }

    async fn enter(&self) {
        {
            let mut f = self.in_flight.lock().unwrap();
            f.0 += 1;
            f.1 = f.1.max(f.0);
        }
        if let Some(rx) = self.state_source.lock().unwrap().as_ref() {
            self.states.lock().unwrap().push(*rx.borrow());
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    fn leave(&self) {
        self.in_flight.lock().unwrap().0 -= 1;
    }
}

#[async_trait]
impl<T: Transport> Transport for Probe<T> {
    async fn push(&self, events: &[Event]) -> Result<AppendReport> {
        self.batches.lock().unwrap().push(events.len());
        self.enter().await;
        let injected = *self.push_error.lock().unwrap();
        let r = match injected {
            Some(make) => Err(make()),
            None => self.inner.push(events).await,
        };
        self.leave();
        r
    }
    async fn pull(&self, request: &ReadRequest) -> Result<Page> {
        *self.pulls.lock().unwrap() += 1;
        self.enter().await;
        let r = self.inner.pull(request).await;
        self.leave();
        r
    }
    async fn head(&self) -> Result<Seq> {
        self.inner.head().await
    }
    async fn subscribe(&self, after: Seq) -> Result<Subscription> {
        self.inner.subscribe(after).await
    }
}
