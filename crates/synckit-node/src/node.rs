//! The `Node`: local appends, the sync run (push, pull, resolve), retries, auto-sync and close.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use synckit_resolve::LastWriteWins;
use synckit_types::{
    AggregateId, AuditQuery, AuditRecord, Conflict, Decision, DynClock, DynNodeStore, DynResolver,
    DynTransport, Error, ErrorKind, ErrorSummary, Event, EventBuilder, EventId, Expect, Filter,
    HlcState, NodeId, NodeState, NodeStoreExt, NodeWrite, PreparedPush, ReadRequest, Resolution,
    ResolutionContext, Result, ReviewEntry, Seq, StoredEvent, SystemClock,
};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::plan::{self, ResolutionInputs};
use crate::report::{DecisionSummary, SyncOutcome, SyncProgress, SyncResult, SyncState};

/// Most remote events handed to a resolver per conflict (the newest are kept), so a long
/// aggregate history cannot exhaust memory.
const MAX_REMOTE_EVENTS: usize = 1_000;

/// How many sync results a slow subscriber may fall behind before it misses some.
const RESULT_CHANNEL_CAPACITY: usize = 64;

/// What the application decides for a parked conflict.
#[derive(Debug, Clone)]
pub enum ReviewChoice {
    /// Put the local events back in the outbox, after the remote ones.
    KeepLocal,
    /// Drop the local events (recorded in the audit trail).
    KeepRemote,
    /// Replace the local events with these (stamped and rebased by the node).
    Merge(Vec<EventBuilder>),
}

/// Assembles a [`Node`].
#[derive(Debug, Default)]
pub struct NodeBuilder {
    store: Option<DynNodeStore>,
    transport: Option<DynTransport>,
    resolver: Option<DynResolver>,
    clock: Option<DynClock>,
    config: Config,
}

impl NodeBuilder {
    /// The node's local store (required).
    pub fn store(mut self, store: DynNodeStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The connection to the hub (required).
    pub fn transport(mut self, transport: DynTransport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The conflict resolver; last-write-wins when not set.
    pub fn resolver(mut self, resolver: DynResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// The clock used for stamps; the system clock when not set.
    pub fn clock(mut self, clock: DynClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The configuration; `Config::default()` when not set.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Validate the configuration, load or assign the node id, and open the node.
    pub async fn open(self) -> Result<Node> {
        self.config.validate()?;
        let store = self
            .store
            .ok_or_else(|| Error::config("a node needs a store"))?;
        let transport = self
            .transport
            .ok_or_else(|| Error::config("a node needs a transport"))?;
        let state = store.state().await?;
        let node_id = match (&self.config.node_id, &state.node_id) {
            (Some(configured), Some(stored)) if configured != stored => {
                return Err(Error::config(format!(
                    "configured node id {configured} differs from the id {stored} this store \
                     belongs to"
                )));
            }
            (_, Some(stored)) => stored.clone(),
            (Some(configured), None) => configured.clone(),
            (None, None) => NodeId::generate(),
        };
        if state.node_id.is_none() {
            store
                .commit(NodeWrite {
                    node_id: Some(node_id.clone()),
                    ..NodeWrite::default()
                })
                .await?;
        }
        let hlc = HlcState::new(state.hlc, self.config.max_clock_drift_ms);
        let (state_tx, _) = watch::channel(SyncState::Idle);
        let (results_tx, _) = broadcast::channel(RESULT_CHANNEL_CAPACITY);
        info!(node = %node_id, cursor = %state.cursor, pending = state.pending, "node opened");
        Ok(Node {
            inner: Arc::new(Inner {
                store,
                transport,
                resolver: self.resolver.unwrap_or_else(|| Arc::new(LastWriteWins)),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                config: self.config,
                node_id,
                hlc: Mutex::new(hlc),
                append_lock: tokio::sync::Mutex::new(()),
                sync_lock: tokio::sync::Mutex::new(()),
                state: state_tx,
                progress: watch::channel(SyncProgress::default()).0,
                results: results_tx,
                closed: AtomicBool::new(false),
                shutdown: CancellationToken::new(),
                current: Mutex::new(None),
                auto: Mutex::new(None),
            }),
        })
    }
}

/// An offline-first node. Cheap to clone; clones share one engine.
///
/// Appends go to the local outbox at once, with no network. [`Node::sync`] pushes the outbox in
/// batches, pulls pages after the cursor until the hub has no more, and resolves conflicts.
/// Sync runs never overlap; appends may run while a sync does.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: DynNodeStore,
    transport: DynTransport,
    resolver: DynResolver,
    clock: DynClock,
    config: Config,
    node_id: NodeId,
    hlc: Mutex<HlcState>,
    /// Serializes appends and conflict resolutions, which both compute aggregate heads.
    append_lock: tokio::sync::Mutex<()>,
    /// Serializes sync runs.
    sync_lock: tokio::sync::Mutex<()>,
    state: watch::Sender<SyncState>,
    progress: watch::Sender<SyncProgress>,
    results: broadcast::Sender<SyncResult>,
    closed: AtomicBool,
    /// Cancelled by `close` and when the last handle is dropped; parent of every run's token.
    shutdown: CancellationToken,
    current: Mutex<Option<CancellationToken>>,
    auto: Mutex<Option<AutoSync>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug)]
struct AutoSync {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Counters of one run, turned into a [`SyncResult`] at the end.
#[derive(Debug, Default)]
struct Tally {
    pushed: u64,
    pulled: u64,
    conflicts: u64,
    decisions: Vec<DecisionSummary>,
    errors: Vec<ErrorSummary>,
    cursor: Seq,
    hub_head: Option<Seq>,
    rounds: u32,
}

impl Tally {
    fn saw_head(&mut self, head: Seq) {
        self.hub_head = Some(self.hub_head.map_or(head, |h| h.max(head)));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex
        .lock()
        .map_err(|_| Error::internal("a node lock was poisoned by a panic"))
}

impl Node {
    /// Start assembling a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's id (the `origin` of its events).
    pub fn id(&self) -> &NodeId {
        &self.inner.node_id
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The local store, for reading the confirmed log, the outbox and the audit trail.
    pub fn store(&self) -> &DynNodeStore {
        &self.inner.store
    }

    /// Cursor, outbox and review-queue sizes, from the store.
    pub async fn status(&self) -> Result<NodeState> {
        self.check_open()?;
        self.inner.store.state().await
    }

    /// The sync engine's current state.
    pub fn sync_state(&self) -> SyncState {
        *self.inner.state.borrow()
    }

    /// Watch the sync engine's state change.
    pub fn watch_sync_state(&self) -> watch::Receiver<SyncState> {
        self.inner.state.subscribe()
    }

    /// Watch the progress of the running sync (for progress bars).
    pub fn watch_progress(&self) -> watch::Receiver<SyncProgress> {
        self.inner.progress.subscribe()
    }

    fn report_progress(&self, tally: &Tally) {
        self.inner.progress.send_modify(|p| {
            p.pushed = tally.pushed;
            p.pulled = tally.pulled;
            p.cursor = tally.cursor;
            p.hub_head = tally.hub_head;
        });
    }

    /// Receive the result of every later sync, push or pull, whatever its outcome. A receiver
    /// that falls more than 64 results behind gets `Lagged` and continues with newer ones.
    pub fn subscribe(&self) -> broadcast::Receiver<SyncResult> {
        self.inner.results.subscribe()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::SeqCst) {
            Err(Error::closed("node"))
        } else {
            Ok(())
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Append one event to the outbox. The node sets id (unless given), origin, clock stamp and,
    /// unless told otherwise, `expected_version` = its local head of the aggregate.
    pub async fn append(&self, event: EventBuilder) -> Result<Event> {
        self.append_batch(vec![event])
            .await?
            .pop()
            .ok_or_else(|| Error::internal("append produced no event"))
    }

    /// Append several events atomically, in order.
    pub async fn append_batch(&self, events: Vec<EventBuilder>) -> Result<Vec<Event>> {
        self.check_open()?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let _append = self.inner.append_lock.lock().await;
        self.check_open()?;
        let explicit_ids = if events.iter().any(EventBuilder::has_id) {
            self.pending_ids().await?
        } else {
            HashSet::new()
        };
        let now = self.now_ms();
        let mut heads: HashMap<AggregateId, u64> = HashMap::new();
        let mut built = Vec::with_capacity(events.len());
        let mut batch_ids = HashSet::new();
        let mut hlc = lock(&self.inner.hlc)?.clone();
        for builder in events {
            if builder.has_origin() || builder.has_hlc() {
                return Err(Error::invalid_input(
                    "the node sets origin and clock stamp of its events; leave them unset",
                ));
            }
            let expect = builder.expectation();
            let mut event = builder
                .origin(self.inner.node_id.as_str())
                .hlc(hlc.tick(now)?)
                .build()?;
            if explicit_ids.contains(&event.id) || !batch_ids.insert(event.id.clone()) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("event id {} is already in the outbox", event.id),
                ));
            }
            let head = match heads.get(&event.aggregate_id) {
                Some(head) => *head,
                None => {
                    let h = self.inner.store.aggregate_head(&event.aggregate_id).await?;
                    h.confirmed_version + h.pending
                }
            };
            event.expected_version = match expect {
                Expect::Auto => Some(head),
                Expect::Exactly(v) => Some(v),
                Expect::Unchecked => None,
            };
            heads.insert(event.aggregate_id.clone(), head + 1);
            built.push(event);
        }
        self.inner
            .store
            .commit(NodeWrite {
                hlc: Some(hlc.last()),
                put_pending: built.clone(),
                ..NodeWrite::default()
            })
            .await?;
        *lock(&self.inner.hlc)? = hlc;
        debug!(node = %self.inner.node_id, count = built.len(), "appended");
        Ok(built)
    }

    async fn pending_ids(&self) -> Result<HashSet<EventId>> {
        Ok(self
            .inner
            .store
            .pending_all()
            .await?
            .into_iter()
            .map(|p| p.event.id)
            .collect())
    }

    /// Push the outbox, pull until the hub has no more, and resolve conflicts, in rounds (see
    /// [`Config::max_rounds`]). Honours `push_only` and `pull_only`.
    pub async fn sync(&self) -> Result<SyncResult> {
        let push = !self.inner.config.pull_only;
        let pull = !self.inner.config.push_only;
        self.run_exclusive(push, pull).await
    }

    /// Push the outbox and resolve conflicts; pull nothing.
    pub async fn push(&self) -> Result<SyncResult> {
        if self.inner.config.pull_only {
            return Err(Error::config("this node is configured pull-only"));
        }
        self.run_exclusive(true, false).await
    }

    /// Pull until the hub has no more; push nothing.
    pub async fn pull(&self) -> Result<SyncResult> {
        if self.inner.config.push_only {
            return Err(Error::config("this node is configured push-only"));
        }
        self.run_exclusive(false, true).await
    }

    /// Cancel the sync that is running, if any. It stops at once; everything it stored so far
    /// is consistent, and the next sync finishes the work.
    pub fn cancel_sync(&self) {
        if let Ok(current) = lock(&self.inner.current)
            && let Some(token) = current.as_ref()
        {
            token.cancel();
        }
    }

    fn set_state(&self, state: SyncState) {
        self.inner.state.send_replace(state);
    }

    async fn run_exclusive(&self, push: bool, pull: bool) -> Result<SyncResult> {
        self.check_open()?;
        let _sync = self.inner.sync_lock.lock().await;
        self.check_open()?;
        let token = self.inner.shutdown.child_token();
        *lock(&self.inner.current)? = Some(token.clone());
        let started = Instant::now();
        let timeout = self.inner.config.sync_timeout;
        let start = self.inner.store.state().await?;
        let mut tally = Tally {
            cursor: start.cursor,
            ..Tally::default()
        };
        self.inner.progress.send_replace(SyncProgress {
            pending_at_start: start.pending,
            cursor: start.cursor,
            ..SyncProgress::default()
        });
        let outcome = tokio::select! {
            biased;
            _ = token.cancelled() => Err(Error::new(ErrorKind::Cancelled, "sync cancelled")),
            run = tokio::time::timeout(timeout, self.run(push, pull, &token, &mut tally)) => {
                run.unwrap_or_else(|_| Err(Error::new(
                    ErrorKind::Timeout,
                    format!("sync did not finish within {timeout:?}"),
                )))
            }
        };
        *lock(&self.inner.current)? = None;
        let (state, sync_outcome) = match &outcome {
            Ok(()) => (SyncState::Completed, SyncOutcome::Completed),
            Err(e) if e.kind() == ErrorKind::Cancelled => {
                (SyncState::Cancelled, SyncOutcome::Cancelled)
            }
            Err(_) => (SyncState::Failed, SyncOutcome::Failed),
        };
        if let Err(e) = &outcome {
            tally.errors.push(ErrorSummary::from(e));
        }
        let result = SyncResult {
            outcome: sync_outcome,
            pushed: tally.pushed,
            pulled: tally.pulled,
            conflicts: tally.conflicts,
            decisions: tally.decisions,
            errors: tally.errors,
            duration: started.elapsed(),
            local_head: tally.cursor,
            hub_head: tally.hub_head,
            rounds: tally.rounds,
        };
        self.set_state(state);
        info!(
            node = %self.inner.node_id,
            outcome = ?result.outcome,
            pushed = result.pushed,
            pulled = result.pulled,
            conflicts = result.conflicts,
            "sync finished"
        );
        // No subscriber is not an error.
        let _ = self.inner.results.send(result.clone());
        outcome.map(|()| result)
    }

    async fn run(
        &self,
        push: bool,
        pull: bool,
        token: &CancellationToken,
        tally: &mut Tally,
    ) -> Result<()> {
        loop {
            tally.rounds += 1;
            let conflicts = if push {
                self.set_state(SyncState::Pushing);
                self.push_outbox(token, tally).await?
            } else {
                BTreeMap::new()
            };
            if pull {
                self.set_state(SyncState::Pulling);
                self.pull_pages(token, tally).await?;
            }
            if conflicts.is_empty() {
                return Ok(());
            }
            tally.conflicts += conflicts.len() as u64;
            if tally.rounds >= self.inner.config.max_rounds {
                tally.errors.push(ErrorSummary {
                    code: "unresolved_conflicts".to_owned(),
                    message: format!(
                        "{} aggregate(s) still in conflict after {} rounds; the next sync \
                         continues",
                        conflicts.len(),
                        tally.rounds
                    ),
                    event_id: None,
                });
                return Ok(());
            }
            self.set_state(SyncState::Resolving);
            self.resolve_conflicts(conflicts, token, tally).await?;
        }
    }

    /// Push the outbox in batches. Returns the aggregates that conflicted, with the hub's
    /// version; later events of those aggregates are held back for the resolver.
    ///
    /// Pipelined: while batch k+1 is sent, batch k's results are committed, then the page
    /// after k+1 is read and encoded for the wire (when the transport encodes), so the hub's
    /// work on k+1 overlaps the node's on k and k+2. Batches still reach the hub one after
    /// another, in outbox order (k+1 is sent only once the hub answered k), and a page read
    /// ahead is filtered only when its turn to be sent comes, after the answer to k+1 named
    /// its conflicts (a filtered page is encoded again). A commit that fails stops the run
    /// after the push in flight; the hub then holds events the outbox still lists, which the
    /// next push confirms as duplicates.
    async fn push_outbox(
        &self,
        token: &CancellationToken,
        tally: &mut Tally,
    ) -> Result<BTreeMap<AggregateId, u64>> {
        let inner = &self.inner;
        let mut conflicts: BTreeMap<AggregateId, u64> = BTreeMap::new();
        let mut after = 0;
        let mut committing: Option<plan::PushPlan> = None;
        let context = self.resolution_context();
        let floor = inner.store.state().await?.cursor;
        let mut page = self.next_push_page(&mut after).await;
        let mut encoded: Option<PreparedPush> = None;
        loop {
            // The next batch: the page read ahead, without the events of aggregates that
            // conflicted so far. A failed read still lets the commit below run.
            let next = self.next_push_batch(page, &mut after, &conflicts).await;
            // The page's encoding fits only if nothing was held back from it.
            let ready = match (&next, encoded.take()) {
                (Ok(Some((batch, true))), Some(body)) if body.events() == batch.len() => Some(body),
                _ => None,
            };
            let more = matches!(next, Ok(Some(_)));
            let send = async {
                let Some((batch, _)) = next? else {
                    return Ok(None);
                };
                let report = self
                    .call(token, "push", || match &ready {
                        Some(body) => inner.transport.push_prepared(&batch, body),
                        None => inner.transport.push(&batch),
                    })
                    .await?;
                Ok::<_, Error>(Some((batch, report)))
            };
            // The page after this batch is read once batch k is committed (a store may hold
            // reads back while a commit runs), then encoded. An encoding error is left for
            // the push of that page to report.
            let commit_then_read = async {
                let committed = match committing.take() {
                    Some(plan) => {
                        inner.store.commit(plan.write).await?;
                        Some((plan.stored, plan.rejections))
                    }
                    None => None,
                };
                let ahead = if more {
                    self.next_push_page(&mut after).await
                } else {
                    Ok(None)
                };
                let ahead_encoded = match &ahead {
                    Ok(Some(events)) => inner.transport.prepare_push(events).ok().flatten(),
                    _ => None,
                };
                Ok::<_, Error>((committed, ahead, ahead_encoded))
            };
            // Both run to the end, so a finished push is never left uncommitted by the
            // other's error. The send is polled first: it sends batch k+1, and while the hub
            // works on it a store that commits on the calling thread (the memory store)
            // commits batch k instead of holding the request back.
            let (sent, committed) = tokio::join!(send, commit_then_read);
            let (committed, ahead, ahead_encoded) = committed?;
            if let Some((stored, rejections)) = committed {
                tally.pushed += stored;
                tally.errors.extend(rejections);
                self.report_progress(tally);
            }
            let Some((batch, report)) = sent? else {
                return Ok(conflicts);
            };
            tally.saw_head(report.head);
            let plan = plan::plan_push(&batch, &report, floor, &context, self.now_ms())?;
            for (aggregate, version) in &plan.conflicts {
                let entry = conflicts.entry(aggregate.clone()).or_insert(0);
                *entry = (*entry).max(*version);
            }
            debug!(node = %inner.node_id, batch = batch.len(), stored = plan.stored, "pushed");
            committing = Some(plan);
            page = ahead;
            encoded = ahead_encoded;
        }
    }

    /// The next page of the outbox after ordinal `after` (which it advances); `None` when
    /// the outbox is done.
    async fn next_push_page(&self, after: &mut u64) -> Result<Option<Vec<Event>>> {
        let inner = &self.inner;
        let page = inner.store.pending(*after, inner.config.batch_size).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        *after = last.ordinal;
        Ok(Some(page.into_iter().map(|p| p.event).collect()))
    }

    /// The batch to send from `page`: its events of aggregates that did not conflict in this
    /// push, and whether that is the whole of `page`. A page left empty is followed by the
    /// next one; `None` when the outbox is done.
    async fn next_push_batch(
        &self,
        mut page: Result<Option<Vec<Event>>>,
        after: &mut u64,
        conflicts: &BTreeMap<AggregateId, u64>,
    ) -> Result<Option<(Vec<Event>, bool)>> {
        let mut whole = true;
        loop {
            let Some(events) = page? else {
                return Ok(None);
            };
            let read = events.len();
            let batch: Vec<Event> = events
                .into_iter()
                .filter(|e| !conflicts.contains_key(&e.aggregate_id))
                .collect();
            whole &= batch.len() == read;
            if !batch.is_empty() {
                return Ok(Some((batch, whole)));
            }
            page = self.next_push_page(after).await;
        }
    }

    /// Pull pages after the cursor until the hub has no more; each page is stored atomically
    /// with the cursor that follows it. Pipelined: the next page is fetched while this one is
    /// committed (a fetched page is only stored after the one before it).
    async fn pull_pages(&self, token: &CancellationToken, tally: &mut Tally) -> Result<()> {
        let inner = &self.inner;
        let mut cursor = inner.store.state().await?.cursor;
        let fetch = |after: Seq| {
            let request = ReadRequest {
                after,
                limit: inner.config.page_size,
                filter: inner.config.filter.clone(),
            };
            async move {
                self.call(token, "pull", || inner.transport.pull(&request))
                    .await
            }
        };
        let mut page = fetch(cursor).await?;
        loop {
            tally.saw_head(page.head);
            if page.head < cursor {
                return Err(Error::protocol(format!(
                    "the hub's head {} is behind this node's cursor {cursor}: is this the \
                     right hub, or did it lose data?",
                    page.head
                )));
            }
            let mut write = plan::plan_page(cursor, &inner.config.filter, &page)?;
            if let Some(latest) = page.events.iter().map(|e| e.event.hlc).max() {
                let mut hlc = lock(&inner.hlc)?;
                match hlc.observe(latest, self.now_ms()) {
                    Ok(stamp) => write.hlc = Some(stamp),
                    // The hub accepted the event; it is stored, but our clock does not jump.
                    Err(e) => warn!(node = %inner.node_id, error = %e, "remote clock ignored"),
                }
            }
            let received = page.events.len();
            let (next_cursor, has_more) = (page.next, page.has_more);
            let (summary, next) = if has_more {
                let (summary, next) = tokio::join!(inner.store.commit(write), fetch(next_cursor));
                (summary?, Some(next))
            } else {
                (inner.store.commit(write).await?, None)
            };
            tally.pulled += summary.newly_confirmed;
            cursor = next_cursor;
            tally.cursor = cursor;
            self.report_progress(tally);
            debug!(node = %inner.node_id, %cursor, received, "pulled");
            match next {
                None => return Ok(()),
                Some(next) => page = next?,
            }
        }
    }

    /// The hub's events on `aggregate` after version `base` (the newest
    /// [`MAX_REMOTE_EVENTS`]).
    async fn remote_events(
        &self,
        aggregate: &AggregateId,
        base: u64,
        token: &CancellationToken,
    ) -> Result<Vec<StoredEvent>> {
        let filter = Filter::aggregate(aggregate.clone());
        let mut after = Seq::ZERO;
        let mut remote: Vec<StoredEvent> = Vec::new();
        loop {
            let request = ReadRequest {
                after,
                limit: self.inner.config.page_size,
                filter: filter.clone(),
            };
            let page = self
                .call(token, "read conflicting aggregate", || {
                    self.inner.transport.pull(&request)
                })
                .await?;
            plan::plan_page(after, &filter, &page)?;
            remote.extend(
                page.events
                    .into_iter()
                    .filter(|e| e.aggregate_version > base),
            );
            if remote.len() > MAX_REMOTE_EVENTS {
                remote.drain(..remote.len() - MAX_REMOTE_EVENTS);
            }
            after = page.next;
            if !page.has_more {
                return Ok(remote);
            }
        }
    }

    async fn resolve_conflicts(
        &self,
        conflicts: BTreeMap<AggregateId, u64>,
        token: &CancellationToken,
        tally: &mut Tally,
    ) -> Result<()> {
        let inner = &self.inner;
        let context = self.resolution_context();
        for (aggregate, reported) in conflicts {
            // The base cannot move while we fetch: appends only add after it, and only this
            // (exclusive) sync run confirms or rebases pending events. So the hub is read
            // without holding up appends, and the local side is read again under the lock.
            let Some(base) = base_version(&inner.store.pending_for(&aggregate).await?) else {
                continue;
            };
            let remote = self
                .remote_events(&aggregate, base.unwrap_or(reported), token)
                .await?;
            let _append = inner.append_lock.lock().await;
            let local: Vec<Event> = inner
                .store
                .pending_for(&aggregate)
                .await?
                .into_iter()
                .map(|p| p.event)
                .collect();
            if local.is_empty() {
                continue;
            }
            let base = base.unwrap_or(reported);
            let head = inner.store.aggregate_head(&aggregate).await?;
            let current = reported
                .max(head.confirmed_version)
                .max(remote.last().map_or(0, |e| e.aggregate_version));
            let conflict = Conflict {
                aggregate_id: aggregate.clone(),
                base_version: base,
                current_version: current,
                local,
                remote,
            };
            let started = Instant::now();
            let resolution = match inner.resolver.resolve(&conflict, &context).await {
                Ok(resolution) => resolution,
                Err(e) => {
                    warn!(node = %inner.node_id, %aggregate, error = %e, "resolver failed");
                    Resolution::new(
                        Decision::Review,
                        "resolver_error",
                        format!("the resolver failed, parked for review: {e}"),
                    )
                }
            };
            let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let (write, resolution) =
                self.plan_or_park(&conflict, resolution, duration_us, &context)?;
            inner.store.commit(write).await?;
            info!(
                node = %inner.node_id,
                %aggregate,
                decision = resolution.decision.kind().as_str(),
                strategy = %resolution.strategy,
                "conflict resolved"
            );
            tally.decisions.push(DecisionSummary {
                aggregate_id: aggregate,
                decision: resolution.decision.kind(),
                strategy: resolution.strategy,
                rule: resolution.rule,
                reason: resolution.reason,
                local_events: conflict.local.len(),
                remote_events: conflict.remote.len(),
            });
        }
        Ok(())
    }

    /// Node, user, session and origin recorded with each decision this node makes.
    fn resolution_context(&self) -> ResolutionContext {
        let config = &self.inner.config;
        ResolutionContext {
            node_id: Some(self.inner.node_id.clone()),
            user: config.user.clone(),
            session: config.session.clone(),
            origin: config.origin.clone(),
        }
    }

    /// Plan `resolution`; a decision that cannot be carried out (say, a merge that produced an
    /// event for another aggregate) parks the conflict for review instead.
    fn plan_or_park(
        &self,
        conflict: &Conflict,
        resolution: Resolution,
        duration_us: u64,
        context: &ResolutionContext,
    ) -> Result<(NodeWrite, Resolution)> {
        let mut hlc = lock(&self.inner.hlc)?;
        let now = self.now_ms();
        let node = &self.inner.node_id;
        let first = plan::plan_resolution(
            conflict,
            &resolution,
            ResolutionInputs {
                node,
                hlc: &mut hlc,
                now_ms: now,
                duration_us,
                decided_by: node.as_str(),
                context,
            },
        );
        match first {
            Ok(write) => Ok((write, resolution)),
            Err(e) => {
                let parked = Resolution {
                    decision: Decision::Review,
                    reason: format!("decision could not be applied, parked for review: {e}"),
                    ..resolution
                };
                let write = plan::plan_resolution(
                    conflict,
                    &parked,
                    ResolutionInputs {
                        node,
                        hlc: &mut hlc,
                        now_ms: now,
                        duration_us,
                        decided_by: node.as_str(),
                        context,
                    },
                )?;
                Ok((write, parked))
            }
        }
    }

    /// Run one hub call with the retry policy. Retryable errors are retried with exponential
    /// back-off and jitter; cancellation ends a call or a back-off at once.
    async fn call<T, F, Fut>(&self, token: &CancellationToken, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = &self.inner.config.retry;
        let mut attempt = 1;
        loop {
            let result = tokio::select! {
                biased;
                _ = token.cancelled() => {
                    return Err(Error::new(ErrorKind::Cancelled, format!("{what} cancelled")));
                }
                result = call() => result,
            };
            match result {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                    let delay = policy.backoff_with_jitter(attempt, fastrand::f64());
                    warn!(
                        node = %self.inner.node_id, what, attempt, ?delay, error = %e,
                        "hub call failed; retrying"
                    );
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => {
                            return Err(Error::new(
                                ErrorKind::Cancelled,
                                format!("{what} cancelled during back-off"),
                            ));
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
                Err(e) => {
                    return Err(e.context(format!("{what} failed after {attempt} attempt(s)")));
                }
            }
        }
    }

    /// Review-queue entries, oldest first (at most `limit`).
    pub async fn reviews(&self, limit: usize) -> Result<Vec<ReviewEntry>> {
        self.check_open()?;
        self.inner.store.reviews(limit).await
    }

    /// Audit records of resolver and application decisions.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        self.check_open()?;
        self.inner.store.audit(query).await
    }

    /// Decide a parked conflict. The chosen events go back to the outbox, after any events of
    /// the aggregate appended since, and sync with the next push. Recorded in the audit trail
    /// as decided by `application`.
    pub async fn resolve_review(&self, id: &str, choice: ReviewChoice) -> Result<()> {
        self.check_open()?;
        let inner = &self.inner;
        let _append = inner.append_lock.lock().await;
        let entry = inner
            .store
            .review(id)
            .await?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no review entry {id}")))?;
        let head = inner
            .store
            .aggregate_head(&entry.conflict.aggregate_id)
            .await?;
        let mut conflict = entry.conflict.clone();
        conflict.current_version =
            conflict.current_version.max(head.confirmed_version) + head.pending;
        let decision = match choice {
            ReviewChoice::KeepLocal => Decision::KeepLocal,
            ReviewChoice::KeepRemote => Decision::KeepRemote,
            ReviewChoice::Merge(builders) => {
                let mut events = Vec::with_capacity(builders.len());
                let mut hlc = lock(&inner.hlc)?;
                let now = self.now_ms();
                for builder in builders {
                    events.push(
                        builder
                            .origin(inner.node_id.as_str())
                            .hlc(hlc.tick(now)?)
                            .build()?,
                    );
                }
                Decision::Merge(events)
            }
        };
        let resolution = Resolution::new(
            decision,
            "application",
            format!(
                "resolved from the review queue (parked because: {})",
                entry.reason
            ),
        );
        let context = self.resolution_context();
        let mut write = {
            let mut hlc = lock(&inner.hlc)?;
            plan::plan_resolution(
                &conflict,
                &resolution,
                ResolutionInputs {
                    node: &inner.node_id,
                    hlc: &mut hlc,
                    now_ms: self.now_ms(),
                    duration_us: 0,
                    decided_by: "application",
                    context: &context,
                },
            )?
        };
        write.remove_reviews.push(entry.id);
        inner.store.commit(write).await?;
        Ok(())
    }

    /// Sync every `interval` in the background until [`Node::stop_auto_sync`] or
    /// [`Node::close`]. Starting it again while it runs keeps the one loop (and its interval).
    /// Runs never overlap with each other or with manual syncs. Results reach
    /// [`Node::subscribe`]rs. Needs a running tokio runtime.
    pub fn start_auto_sync(&self, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::config(
                "the auto-sync interval must be greater than zero",
            ));
        }
        self.check_open()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("auto-sync needs a running tokio runtime"))?;
        let mut auto = lock(&self.inner.auto)?;
        if auto.as_ref().is_some_and(|a| !a.handle.is_finished()) {
            return Ok(());
        }
        let stop = self.inner.shutdown.child_token();
        let handle = runtime.spawn(auto_sync_loop(
            Arc::downgrade(&self.inner),
            interval,
            stop.clone(),
        ));
        *auto = Some(AutoSync { stop, handle });
        Ok(())
    }

    /// Whether the auto-sync loop is running.
    pub fn auto_sync_running(&self) -> bool {
        lock(&self.inner.auto)
            .map(|a| a.as_ref().is_some_and(|a| !a.handle.is_finished()))
            .unwrap_or(false)
    }

    /// Stop the auto-sync loop; a sync it is running finishes first.
    pub async fn stop_auto_sync(&self) {
        let auto = lock(&self.inner.auto).ok().and_then(|mut a| a.take());
        if let Some(auto) = auto {
            auto.stop.cancel();
            let _ = auto.handle.await;
        }
    }

    /// Stop auto-sync, cancel a running sync, and close the store. Idempotent; every later call
    /// on the node fails with a `closed` error.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.shutdown.cancel();
        self.stop_auto_sync().await;
        let _sync = self.inner.sync_lock.lock().await;
        let _append = self.inner.append_lock.lock().await;
        info!(node = %self.inner.node_id, "node closed");
        self.inner.store.close().await
    }
}

/// The aggregate version the pending events were written against: `None` when there are no
/// pending events, `Some(None)` when none of them carries an expected version.
fn base_version(pending: &[synckit_types::PendingEvent]) -> Option<Option<u64>> {
    if pending.is_empty() {
        return None;
    }
    Some(
        pending
            .iter()
            .enumerate()
            .find_map(|(i, p)| p.event.expected_version.map(|v| v.saturating_sub(i as u64))),
    )
}

impl Node {
    /// Sync whenever the hub announces new events, until `stop` is cancelled or the node
    /// closes. Subscribes to the hub's stream after the local cursor; each notification (a
    /// burst counts once) runs a sync. While the stream is down it syncs by polling, waiting
    /// `poll` and doubling up to `max_poll`, and tries to subscribe again each time.
    pub async fn watch(
        &self,
        stop: CancellationToken,
        poll: Duration,
        max_poll: Duration,
    ) -> Result<()> {
        use futures::StreamExt;
        if poll.is_zero() || max_poll < poll {
            return Err(Error::config(
                "watch: poll must be positive and at most max_poll",
            ));
        }
        self.check_open()?;
        let stop = stop.child_token();
        let shutdown = self.inner.shutdown.clone();
        let mut backoff = poll;
        loop {
            let cursor = self.inner.store.state().await?.cursor;
            if let Ok(mut stream) = self.inner.transport.subscribe(cursor).await {
                backoff = poll;
                info!(node = %self.inner.node_id, %cursor, "watching the hub's stream");
                let _ = self.sync().await;
                loop {
                    let item = tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = shutdown.cancelled() => return Ok(()),
                        item = stream.next() => item,
                    };
                    match item {
                        Some(Ok(event)) => {
                            let local = self.inner.store.state().await?.cursor;
                            if event.seq > local {
                                let _ = self.sync().await;
                            }
                        }
                        Some(Err(e)) => {
                            warn!(node = %self.inner.node_id, error = %e, "hub stream down; polling");
                            break;
                        }
                        None => break,
                    }
                }
            }
            let _ = self.sync().await;
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max_poll);
        }
    }
}

async fn auto_sync_loop(inner: Weak<Inner>, interval: Duration, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let node = Node { inner };
        // Failures reach subscribers through the sync result; the loop keeps going.
        let _ = node.sync().await;
    }
}
