//! A deterministic multi-node simulation: one in-process hub, N nodes with manual clocks, fault
//! injection, restarts and interrupted syncs, and checks of DESIGN.md's invariants.
//!
//! Drive it from a current-thread tokio runtime with paused time (`start_paused(true)`), so
//! retries and injected delays cost no wall time and every run with the same operations takes
//! the same path.

use std::collections::{HashMap, HashSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use synckit_node::{Config, Node, RetryPolicy};
use synckit_store_memory::MemoryStore;
use synckit_transport_memory::{MemoryHub, MemoryTransport};
use synckit_types::{
    AuditQuery, DecisionKind, DynResolver, Event, EventId, EventStoreExt, ManualClock, NodeStore,
    NodeStoreExt, ResolutionContext, StoredEvent, TenantId,
};

/// One step of a simulation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Node `node` appends an event to aggregate `agg-{aggregate}`; with `checked` the node
    /// fills in `expected_version`, without it the event is append-only.
    Append {
        /// Index of the node.
        node: usize,
        /// Aggregate number.
        aggregate: u8,
        /// Whether the event carries an expected version.
        checked: bool,
    },
    /// Full sync.
    Sync(usize),
    /// Push only.
    Push(usize),
    /// Pull only.
    Pull(usize),
    /// The node's next `n` hub calls fail before reaching the hub.
    FailNext(usize, u8),
    /// The node's next push is committed by the hub but its answer is lost.
    LoseResponse(usize),
    /// Drop the node without closing it and open it again from its store (a crash).
    Restart(usize),
    /// Start a sync, let it make `polls` steps of progress, then crash the node mid-sync.
    Interrupt(usize, u8),
    /// Advance every node's clock by this many milliseconds.
    Tick(u16),
}

/// A node in the simulation.
#[derive(Debug)]
pub struct SimNode {
    /// The node's local store (survives restarts).
    pub store: Arc<MemoryStore>,
    /// The node's connection, with its fault switches.
    pub transport: MemoryTransport,
    /// The node's clock.
    pub clock: ManualClock,
    /// The running node.
    pub node: Node,
}

/// The simulated system.
#[derive(Debug)]
pub struct Sim {
    /// The hub's store.
    pub hub_store: Arc<MemoryStore>,
    /// The hub.
    pub hub: MemoryHub,
    /// The one tenant every node belongs to.
    pub tenant: TenantId,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    /// Every event id a node's `append` returned.
    pub appended: Vec<EventId>,
    resolver: DynResolver,
    config: Config,
}

/// The node configuration used by simulations: small batches and pages, so paging and
/// batching are exercised, and fast retries.
pub fn sim_config() -> Config {
    Config::builder()
        .batch_size(3)
        .page_size(4)
        .retry(RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
            jitter: 0.5,
        })
        .build()
        .expect("simulation config is valid")
}

impl Sim {
    /// A hub and `nodes` nodes using `resolver`, each with a clock skewed by a few hundred ms.
    pub async fn new(nodes: usize, resolver: DynResolver) -> Sim {
        let hub_store = Arc::new(MemoryStore::new());
        let hub = MemoryHub::new(hub_store.clone());
        let tenant = TenantId::new("sim").unwrap();
        let mut sim = Sim {
            hub_store,
            hub,
            tenant,
            nodes: Vec::new(),
            appended: Vec::new(),
            resolver,
            config: sim_config(),
        };
        for i in 0..nodes {
            let clock = ManualClock::new(1_700_000_000_000 + (i as u64 * 137) % 400);
            let store = Arc::new(MemoryStore::new());
            let transport = sim.hub.transport(sim.tenant.clone());
            let node = sim.open(i, &store, &transport, &clock).await;
            sim.nodes.push(SimNode {
                store,
                transport,
                clock,
                node,
            });
        }
        sim
    }

    async fn open(
        &self,
        index: usize,
        store: &Arc<MemoryStore>,
        transport: &MemoryTransport,
        clock: &ManualClock,
    ) -> Node {
        let config = Config {
            node_id: Some(synckit_types::NodeId::new(format!("node-{index}")).unwrap()),
            ..self.config.clone()
        };
        Node::builder()
            .store(store.clone())
            .transport(Arc::new(transport.clone()))
            .resolver(self.resolver.clone())
            .clock(Arc::new(clock.clone()))
            .config(config)
            .open()
            .await
            .expect("node opens from its store")
    }

    /// Crash node `i` (drop without close) and open it again from its store.
    pub async fn restart(&mut self, i: usize) {
        let (store, transport, clock) = {
            let n = &self.nodes[i];
            (n.store.clone(), n.transport.clone(), n.clock.clone())
        };
        let node = self.open(i, &store, &transport, &clock).await;
        self.nodes[i].node = node;
    }

    /// Apply one operation. Sync failures are expected under injected faults and ignored; the
    /// invariants are checked afterwards.
    pub async fn apply(&mut self, op: &Op) {
        let count = self.nodes.len();
        match *op {
            Op::Append {
                node,
                aggregate,
                checked,
            } => {
                let n = &self.nodes[node % count];
                let mut builder = Event::builder("Edited", format!("agg-{aggregate}"))
                    .data(serde_json::json!({ "by": node % count, "n": self.appended.len() }));
                if !checked {
                    builder = builder.unchecked();
                }
                let event = n.node.append(builder).await.expect("local append succeeds");
                self.appended.push(event.id);
            }
            Op::Sync(i) => {
                let _ = self.nodes[i % count].node.sync().await;
            }
            Op::Push(i) => {
                let _ = self.nodes[i % count].node.push().await;
            }
            Op::Pull(i) => {
                let _ = self.nodes[i % count].node.pull().await;
            }
            Op::FailNext(i, n) => self.nodes[i % count].transport.faults().fail_next(n.into()),
            Op::LoseResponse(i) => self.nodes[i % count]
                .transport
                .faults()
                .lose_next_responses(1),
            Op::Restart(i) => self.restart(i % count).await,
            Op::Interrupt(i, polls) => {
                let i = i % count;
                let faults = self.nodes[i].transport.faults();
                faults.set_delay(Duration::from_millis(1));
                {
                    let node = self.nodes[i].node.clone();
                    let mut sync = pin!(node.sync());
                    for _ in 0..polls {
                        if futures::poll!(sync.as_mut()).is_ready() {
                            break;
                        }
                        tokio::time::advance(Duration::from_millis(1)).await;
                    }
                }
                self.nodes[i].transport.faults().set_delay(Duration::ZERO);
                self.restart(i).await;
            }
            Op::Tick(ms) => {
                for n in &self.nodes {
                    n.clock.advance(ms.into());
                }
            }
        }
    }

    /// Clear every fault and sync every node, round after round, until nothing changes.
    /// Panics if the system does not settle within 12 rounds or a sync fails without faults.
    pub async fn quiesce(&mut self) {
        for n in &self.nodes {
            n.transport.faults().clear();
        }
        for _round in 0..12 {
            for n in &self.nodes {
                n.node.sync().await.expect("sync without faults succeeds");
            }
            if self.settled().await {
                return;
            }
        }
        panic!("the simulation did not settle within 12 quiet rounds");
    }

    async fn settled(&self) -> bool {
        let head = self.hub_store.read_all(&self.tenant).await.unwrap().len() as u64;
        for n in &self.nodes {
            let state = n.store.state().await.unwrap();
            if state.pending > 0 || state.cursor.get() != head {
                return false;
            }
        }
        true
    }

    /// Invariant 5 at any instant: each node's cursor is at most the hub's head, and every hub
    /// event at or below the cursor is in the node's confirmed log. Also invariant 3 locally:
    /// no id twice, and no id both confirmed and pending.
    pub async fn check_progress(&self) {
        let hub = self.hub_store.read_all(&self.tenant).await.unwrap();
        let head = hub.last().map_or(0, |e| e.seq.get());
        for (i, n) in self.nodes.iter().enumerate() {
            let state = n.store.state().await.unwrap();
            assert!(
                state.cursor.get() <= head,
                "node {i}: cursor {} past hub head {head}",
                state.cursor
            );
            let confirmed = n.store.confirmed_all().await.unwrap();
            let by_seq: HashMap<u64, &StoredEvent> =
                confirmed.iter().map(|e| (e.seq.get(), e)).collect();
            for event in hub.iter().take_while(|e| e.seq <= state.cursor) {
                let local = by_seq.get(&event.seq.get()).unwrap_or_else(|| {
                    panic!(
                        "node {i}: cursor {} but hub event {} is missing locally",
                        state.cursor, event.seq
                    )
                });
                assert_eq!(
                    *local, event,
                    "node {i}: event at seq {} differs",
                    event.seq
                );
            }
            let mut ids = HashSet::new();
            for e in &confirmed {
                assert!(
                    ids.insert(&e.event.id),
                    "node {i}: {} confirmed twice",
                    e.event.id
                );
            }
            for p in n.store.pending_all().await.unwrap() {
                assert!(
                    !ids.contains(&p.event.id),
                    "node {i}: {} both pending and confirmed",
                    p.event.id
                );
            }
        }
    }

    /// Check invariants 1, 2, 3, 5 and 6 after [`Sim::quiesce`].
    pub async fn check_invariants(&self) {
        self.check_progress().await;
        let hub = self.hub_store.read_all(&self.tenant).await.unwrap();

        // 3. No duplicates in the hub's log, and seqs are 1..=n without gaps.
        let mut hub_ids = HashSet::new();
        for (i, e) in hub.iter().enumerate() {
            assert!(
                hub_ids.insert(e.event.id.clone()),
                "hub stored {} twice",
                e.event.id
            );
            assert_eq!(e.seq.get(), i as u64 + 1, "hub seqs have a gap");
        }

        // Local order: a node's events on one aggregate reach the hub in the order it wrote
        // them (its clock stamps increase with every append).
        let mut last: HashMap<(&str, &str), synckit_types::Hlc> = HashMap::new();
        for e in &hub {
            let key = (e.event.origin.as_str(), e.event.aggregate_id.as_str());
            if let Some(previous) = last.insert(key, e.event.hlc) {
                assert!(
                    previous < e.event.hlc,
                    "{} wrote {} on {} after an event the hub placed later",
                    e.event.origin,
                    e.event.id,
                    e.event.aggregate_id
                );
            }
        }

        // 1. Convergence: every node's confirmed log is the hub's log, event for event.
        for (i, n) in self.nodes.iter().enumerate() {
            let local = n.store.confirmed_all().await.unwrap();
            assert_eq!(
                local.len(),
                hub.len(),
                "node {i} has a different number of events"
            );
            assert_eq!(local, hub, "node {i} diverged from the hub");
            assert_eq!(
                n.store.state().await.unwrap().pending,
                0,
                "node {i} still has pending"
            );
        }

        // 2. No silent loss: each appended event is in the hub's log, dropped by a recorded
        // decision, or parked for review.
        let mut dropped = HashSet::new();
        let mut parked = HashSet::new();
        for n in &self.nodes {
            let audit = n
                .store
                .audit(&AuditQuery {
                    limit: 100_000,
                    ..AuditQuery::default()
                })
                .await
                .unwrap();
            for record in &audit {
                if matches!(
                    record.decision,
                    DecisionKind::KeepRemote | DecisionKind::Merge
                ) {
                    let kept: HashSet<_> = record.result.iter().map(|e| &e.id).collect();
                    for e in &record.conflict.local {
                        if !kept.contains(&e.id) {
                            dropped.insert(e.id.clone());
                        }
                    }
                }
                // 6. Determinism: the resolver decides the recorded conflict the same way again.
                if record.decided_by != "application" && record.strategy != "hub_rejection" {
                    let again = self
                        .resolver
                        .resolve(&record.conflict, &ResolutionContext::default())
                        .await
                        .unwrap();
                    assert_eq!(
                        again.decision.kind(),
                        record.decision,
                        "resolver is not deterministic"
                    );
                }
            }
            for entry in n.store.reviews(100_000).await.unwrap() {
                for e in &entry.conflict.local {
                    parked.insert(e.id.clone());
                }
            }
        }
        for id in &self.appended {
            assert!(
                hub_ids.contains(id) || dropped.contains(id) || parked.contains(id),
                "event {id} was lost silently"
            );
        }
    }
}
