//! `Coordinator`: one runner task per job that waits for the job's next due time or a manual
//! trigger, takes the job's lease, asks `should_sync`, runs `perform_sync` under a timeout
//! while renewing the lease, records the outcome in the job's status and persists it.
//!
//! One task per job is what keeps runs of a job from overlapping (the task runs them one after
//! the other) and keeps a slow, failing or "nothing to do" job from delaying any other job.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::future::OptionFuture;
use synckit_types::{DynClock, SystemClock};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout, timeout_at};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::jitter;
use crate::error::{CoordinatorError, Result};
use crate::job::{DynJob, JobConfig, JobContext, MAX_DURATION, RunOutcome, RunTrigger};
use crate::status::{
    ABANDONED_ERROR, INTERRUPTED_ERROR, JobStatus, MAX_MESSAGE_LEN, Phase, Report, Skip, truncate,
};
use crate::store::{DynStatusStore, after};

/// Lease time-to-live when none is configured.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);
/// Bound on each status store call when none is configured.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest lease holder id, in bytes.
pub const MAX_HOLDER_LEN: usize = 200;

/// Every job's status, by job name.
pub type StatusSnapshot = BTreeMap<String, JobStatus>;

/// What a `sync_now` caller is answered.
type Reply = std::result::Result<RunOutcome, NoRun>;

/// Why a requested run did not happen.
#[derive(Debug, Clone)]
enum NoRun {
    /// The status store failed (message, retryable).
    Store(String, bool),
    /// The coordinator stopped first.
    Stopped,
}

/// Builds a [`Coordinator`]: the status store, the jobs, and optional clock, holder id,
/// lease TTL and store timeout.
#[derive(Debug)]
pub struct CoordinatorBuilder {
    store: DynStatusStore,
    clock: DynClock,
    holder: Option<String>,
    lease_ttl: Duration,
    store_timeout: Duration,
    jobs: Vec<(JobConfig, DynJob)>,
}

impl CoordinatorBuilder {
    /// Take wall-clock times for statuses from `clock` (default: the system clock). Waiting
    /// always uses tokio's timer, so tests can pause and advance it.
    pub fn clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }

    /// Hold leases as `holder` (default: a random id with the process id). Coordinators that
    /// share a status store need distinct ids.
    pub fn holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = Some(holder.into());
        self
    }

    /// How long a lease lasts without renewal (default 30 s): how long a crashed process
    /// keeps its jobs from running elsewhere. Leases are renewed every third of it.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Bound on each status store call (default 10 s). Final status writes at `stop` get a
    /// fresh bound of this length, whatever deadline `stop` was given.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Register `job` under `config`.
    pub fn job(mut self, config: JobConfig, job: DynJob) -> Self {
        self.jobs.push((config, job));
        self
    }

    /// Check the settings and build the coordinator (nothing runs before `start`).
    pub fn build(self) -> Result<Coordinator> {
        let holder = self.holder.unwrap_or_else(|| {
            format!(
                "coordinator-{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            )
        });
        if holder.is_empty()
            || holder.len() > MAX_HOLDER_LEN
            || holder.chars().any(char::is_control)
        {
            return Err(CoordinatorError::config(format!(
                "holder id {holder:?} must be 1 to {MAX_HOLDER_LEN} bytes without control \
                 characters"
            )));
        }
        if self.lease_ttl < Duration::from_millis(30)
            || self.lease_ttl > Duration::from_secs(86_400)
        {
            return Err(CoordinatorError::config(format!(
                "lease TTL {:?} is out of range 30 ms ..= 1 day",
                self.lease_ttl
            )));
        }
        if self.store_timeout.is_zero() || self.store_timeout > MAX_DURATION {
            return Err(CoordinatorError::config(format!(
                "store timeout {:?} is out of range (0, {MAX_DURATION:?}]",
                self.store_timeout
            )));
        }
        let mut slots = BTreeMap::new();
        for (config, job) in self.jobs {
            config.validate()?;
            let name = config.name.clone();
            let slot = Arc::new(Slot {
                config,
                job,
                requests: Mutex::new(Requests::default()),
                wake: Notify::new(),
            });
            if slots.insert(name.clone(), slot).is_some() {
                return Err(CoordinatorError::config(format!(
                    "job {name:?} is registered twice"
                )));
            }
        }
        let snapshot: StatusSnapshot = slots
            .keys()
            .map(|name| (name.clone(), JobStatus::new(name.clone())))
            .collect();
        Ok(Coordinator {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                holder,
                lease_ttl: self.lease_ttl,
                store_timeout: self.store_timeout,
                slots,
                state: Mutex::new(State::New),
                shutdown: CancellationToken::new(),
                abort: CancellationToken::new(),
                snapshot: watch::Sender::new(snapshot),
                stop_report: Mutex::new(StopReport::default()),
                unsaved: Mutex::new(Vec::new()),
            }),
            tasks: tokio::sync::Mutex::new(Vec::new()),
        })
    }
}

/// Runs named [`Job`](crate::Job)s on their schedules, one run at a time per job, and keeps
/// their [`JobStatus`] in a [`StatusStore`](crate::StatusStore).
///
/// Lifecycle: [`Coordinator::builder`], [`start`](Coordinator::start) (loads the statuses and
/// starts one runner task per job), [`trigger`](Coordinator::trigger) /
/// [`sync_now`](Coordinator::sync_now) at will, [`stop`](Coordinator::stop) (the runner tasks
/// are owned by the coordinator and joined there). Dropping a coordinator without `stop`
/// abandons running jobs at once; their runners still record that before they exit.
///
/// Per job, each run:
/// 1. takes the job's lease in the status store (another coordinator holding it: the job is
///    skipped here and tried again later; other jobs are not affected);
/// 2. reloads the status (a store shared by several processes may have a newer one) and, if a
///    crash or kill left it `syncing`, marks it failed with "interrupted by a crash or kill";
/// 3. asks `should_sync` (not for manual triggers): "no" records a skip;
/// 4. persists phase `syncing`, calls `perform_sync` under the job's timeout while renewing the
///    lease, records success (next run after the interval) or failure (next run after the
///    backoff), persists the status and releases the lease.
#[derive(Debug)]
pub struct Coordinator {
    inner: Arc<Inner>,
    tasks: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// What [`Coordinator::stop`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Jobs whose run was still going at the deadline: abandoned and recorded as failed.
    pub abandoned: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Starting,
    Running,
    Stopped,
}

#[derive(Debug)]
struct Inner {
    store: DynStatusStore,
    clock: DynClock,
    holder: String,
    lease_ttl: Duration,
    store_timeout: Duration,
    slots: BTreeMap<String, Arc<Slot>>,
    state: Mutex<State>,
    /// Cancelled by `stop`: runners start nothing new.
    shutdown: CancellationToken,
    /// Cancelled when the stop deadline passes (or on drop): running calls are abandoned.
    abort: CancellationToken,
    snapshot: watch::Sender<StatusSnapshot>,
    /// Filled by runners as they exit; collected by `stop`.
    stop_report: Mutex<StopReport>,
    /// Jobs whose final status could not be saved; collected by `stop`.
    unsaved: Mutex<Vec<String>>,
}

impl Inner {
    /// `call` bounded by the store timeout, fresh for every call.
    async fn store_call<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
        match timeout(self.store_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CoordinatorError::Timeout {
                what: format!("status store: {what}"),
                after: self.store_timeout,
            }),
        }
    }
}

/// One registered job and the manual requests waiting for its runner.
#[derive(Debug)]
struct Slot {
    config: JobConfig,
    job: DynJob,
    requests: Mutex<Requests>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Requests {
    /// A manual run was asked for and has not started yet.
    manual: bool,
    /// `sync_now` callers waiting for that run.
    waiters: Vec<oneshot::Sender<Reply>>,
    /// The runner exited: no run will start any more.
    closed: bool,
}

impl Slot {
    /// Take the pending manual request and its waiters, together, for the run about to start.
    fn take_requests(&self) -> (bool, Vec<oneshot::Sender<Reply>>) {
        let mut requests = lock(&self.requests);
        (
            std::mem::take(&mut requests.manual),
            std::mem::take(&mut requests.waiters),
        )
    }

    /// Refuse further requests; the waiters are dropped, which answers them "stopped".
    fn close(&self) {
        let mut requests = lock(&self.requests);
        requests.closed = true;
        requests.manual = false;
        requests.waiters.clear();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Coordinator {
    /// A builder over `store`.
    pub fn builder(store: DynStatusStore) -> CoordinatorBuilder {
        CoordinatorBuilder {
            store,
            clock: Arc::new(SystemClock),
            holder: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            jobs: Vec::new(),
        }
    }

    /// Load the persisted statuses and start one runner task per job.
    ///
    /// Each job runs at once if its config says `run_on_start` or if its status was left
    /// `syncing` by a crash; otherwise when its persisted `next_run` falls due. Fails (and
    /// may be called again) when the statuses cannot be loaded; fails with `AlreadyStarted`
    /// or `Stopped` when called twice or after `stop`. Must be called inside a tokio runtime.
    pub async fn start(&self) -> Result<()> {
        {
            let mut state = lock(&self.inner.state);
            match *state {
                State::New => *state = State::Starting,
                State::Starting | State::Running => return Err(CoordinatorError::AlreadyStarted),
                State::Stopped => return Err(CoordinatorError::Stopped),
            }
        }
        let inner = &self.inner;
        let loaded = match inner
            .store_call("loading job statuses", inner.store.load_all())
            .await
        {
            Ok(loaded) => loaded,
            Err(e) => {
                let mut state = lock(&inner.state);
                if *state == State::Starting {
                    *state = State::New;
                }
                return Err(e);
            }
        };
        let mut loaded: BTreeMap<String, JobStatus> =
            loaded.into_iter().map(|s| (s.job.clone(), s)).collect();
        let mut tasks = self.tasks.lock().await;
        if *lock(&inner.state) == State::Stopped {
            return Err(CoordinatorError::Stopped);
        }
        for (name, slot) in &inner.slots {
            let status = loaded
                .remove(name)
                .unwrap_or_else(|| JobStatus::new(name.clone()));
            let runner = Runner {
                inner: Arc::clone(inner),
                slot: Arc::clone(slot),
                status,
                dirty: false,
                next_delay: Duration::ZERO,
            };
            runner.publish();
            tasks.push(tokio::spawn(runner.run()));
        }
        let mut state = lock(&inner.state);
        if *state == State::Starting {
            *state = State::Running;
        }
        info!(
            holder = %inner.holder,
            jobs = inner.slots.len(),
            "sync coordinator started"
        );
        Ok(())
    }

    /// Every job's status as this coordinator last saw it (written or loaded).
    pub fn status(&self) -> StatusSnapshot {
        self.inner.snapshot.borrow().clone()
    }

    /// One job's status, or `None` for a name that is not registered.
    pub fn job_status(&self, name: &str) -> Option<JobStatus> {
        self.inner.snapshot.borrow().get(name).cloned()
    }

    /// A receiver that sees every status change (for a UI, or to wait for a condition).
    pub fn subscribe(&self) -> watch::Receiver<StatusSnapshot> {
        self.inner.snapshot.subscribe()
    }

    /// The registered job names, sorted.
    pub fn jobs(&self) -> Vec<String> {
        self.inner.slots.keys().cloned().collect()
    }

    /// The id this coordinator holds leases as.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// Ask for a run of `name` as soon as possible, without waiting for it. A run in
    /// progress is not interrupted: the requested run starts after it. Requests made before
    /// a run starts are served by that one run. `should_sync` is not asked.
    pub fn trigger(&self, name: &str) -> Result<()> {
        self.request(name, None)
    }

    /// Run `name` now (after the run in progress, if any) and answer how it ended.
    /// `should_sync` is not asked. Answers [`RunOutcome::Busy`] when another coordinator
    /// holds the job's lease, and fails with `Stopped` when the coordinator stops first.
    pub async fn sync_now(&self, name: &str) -> Result<RunOutcome> {
        let (sender, receiver) = oneshot::channel();
        self.request(name, Some(sender))?;
        match receiver.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(NoRun::Store(message, retryable))) => Err(CoordinatorError::Store {
                message: format!("running job {name:?}: {message}"),
                retryable,
                source: None,
            }),
            Ok(Err(NoRun::Stopped)) | Err(_) => Err(CoordinatorError::Stopped),
        }
    }

    fn request(&self, name: &str, waiter: Option<oneshot::Sender<Reply>>) -> Result<()> {
        let slot = self
            .inner
            .slots
            .get(name)
            .ok_or_else(|| CoordinatorError::UnknownJob {
                job: name.to_owned(),
            })?;
        match *lock(&self.inner.state) {
            State::New => return Err(CoordinatorError::NotStarted),
            State::Stopped => return Err(CoordinatorError::Stopped),
            State::Starting | State::Running => {}
        }
        {
            let mut requests = lock(&slot.requests);
            if requests.closed {
                return Err(CoordinatorError::Stopped);
            }
            requests.manual = true;
            requests.waiters.extend(waiter);
        }
        slot.wake.notify_one();
        Ok(())
    }

    /// [`Coordinator::stop_by`] with a deadline `grace` from now.
    pub async fn stop(&self, grace: Duration) -> Result<StopReport> {
        self.stop_by(after(Instant::now(), grace)).await
    }

    /// Stop: start no new run, let runs in progress finish until `deadline`, then abandon the
    /// rest (recorded as failed with "abandoned: ..."), write each job's final status and
    /// release its lease, and join every runner task.
    ///
    /// Final status writes are bounded by the store timeout counted from when each is made,
    /// never by `deadline`: a deadline that has already passed abandons the runs at once but
    /// still records them. Fails with `Store` when some final status could not be saved (the
    /// job then shows `syncing` at the next start, and is recovered then). Calling it again
    /// (for example after a caller's timeout dropped the first call) finishes the joining.
    pub async fn stop_by(&self, deadline: Instant) -> Result<StopReport> {
        *lock(&self.inner.state) = State::Stopped;
        self.inner.shutdown.cancel();
        let mut tasks = self.tasks.lock().await;
        if timeout_at(deadline, join_all(&mut tasks)).await.is_err() {
            self.inner.abort.cancel();
            join_all(&mut tasks).await;
        }
        let report = std::mem::take(&mut *lock(&self.inner.stop_report));
        let unsaved = std::mem::take(&mut *lock(&self.inner.unsaved));
        if !unsaved.is_empty() {
            return Err(CoordinatorError::store_unavailable(
                format!("the final status of jobs {unsaved:?} could not be saved"),
                None,
            ));
        }
        info!(holder = %self.inner.holder, abandoned = ?report.abandoned, "sync coordinator stopped");
        Ok(report)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        // The runner tasks own clones of `inner`: tell them to finish now, recording what
        // they abandon, rather than run on with nobody to stop them.
        self.inner.shutdown.cancel();
        self.inner.abort.cancel();
    }
}

/// Await every task, removing each once it ended (so a dropped call leaves the rest).
async fn join_all(tasks: &mut Vec<JoinHandle<()>>) {
    while let Some(task) = tasks.last_mut() {
        if let Err(e) = task.await
            && e.is_panic()
        {
            error!("a sync coordinator runner panicked; its job stopped running");
        }
        tasks.pop();
    }
}

/// How a guarded job call ended early.
#[derive(Debug)]
enum Interrupted {
    TimedOut,
    Panicked(String),
    LeaseLost(&'static str),
    Abandoned,
}

impl Interrupted {
    fn describe(&self, call: &str, limit: Duration) -> String {
        match self {
            Interrupted::TimedOut => format!("{call} timed out after {limit:?} and was abandoned"),
            Interrupted::Panicked(message) => format!("{call} panicked: {message}"),
            Interrupted::LeaseLost(why) => format!("{call} was abandoned: {why}"),
            Interrupted::Abandoned => ABANDONED_ERROR.to_owned(),
        }
    }
}

/// What one attempt at running a job came to.
enum Attempt {
    /// The job was asked and ran (or skipped, or failed); the status records it.
    Ran(RunOutcome),
    /// Another coordinator holds the lease.
    Busy,
    /// Another coordinator ran the job since this one last looked; it is due after `delay`.
    NotDue { delay: Duration },
    /// The status store could not be asked for the lease.
    StoreFailed(CoordinatorError),
    /// `stop` abandoned the `should_sync` call; nothing was recorded.
    Stopped,
}

/// The lease held during one attempt, as this process reckons it: valid until `ttl` after the
/// last successful renewal was *sent*, so it never outlives the store's own expiry.
struct Lease {
    valid_until: Instant,
    next_renew: Instant,
}

impl Lease {
    fn new(sent: Instant, ttl: Duration) -> Lease {
        Lease {
            valid_until: after(sent, ttl),
            next_renew: after(sent, ttl / 3),
        }
    }
}

type Renewal<'a> = Pin<Box<dyn Future<Output = (Instant, Result<bool>)> + Send + 'a>>;

/// The task that runs one job; owns the job's status.
struct Runner {
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    status: JobStatus,
    /// The last save failed: the store is behind `status`.
    dirty: bool,
    /// Wait before the next run, as planned with `status.next_run_ms`.
    next_delay: Duration,
}

impl Runner {
    fn name(&self) -> &str {
        &self.slot.config.name
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    async fn run(mut self) {
        let (mut delay, mut trigger) = self.first_due();
        loop {
            let due = after(Instant::now(), delay);
            let fired = tokio::select! {
                biased;
                () = self.inner.shutdown.cancelled() => break,
                () = self.slot.wake.notified() => None,
                () = sleep_until(due) => Some(trigger),
            };
            let (manual, waiters) = self.slot.take_requests();
            let this_trigger = match (manual, fired) {
                (true, _) => RunTrigger::Manual,
                (false, Some(fired)) => fired,
                // A wake-up for a request an earlier run already served.
                (false, None) => {
                    delay = due.saturating_duration_since(Instant::now());
                    continue;
                }
            };
            let attempt = self.attempt(this_trigger).await;
            let reply: Reply = match &attempt {
                Attempt::Ran(outcome) => Ok(outcome.clone()),
                Attempt::Busy | Attempt::NotDue { .. } => Ok(RunOutcome::Busy),
                Attempt::StoreFailed(e) => Err(NoRun::Store(e.to_string(), e.is_retryable())),
                Attempt::Stopped => Err(NoRun::Stopped),
            };
            for waiter in waiters {
                let _ = waiter.send(reply.clone());
            }
            (delay, trigger) = match attempt {
                Attempt::Ran(RunOutcome::Failed { .. }) => (self.next_delay, RunTrigger::Retry),
                Attempt::Ran(_) => (self.next_delay, RunTrigger::Schedule),
                Attempt::NotDue { delay } => (delay, RunTrigger::Schedule),
                Attempt::Busy | Attempt::StoreFailed(_) | Attempt::Stopped => {
                    // Try again well within the holder's lease TTL, so a crashed holder's
                    // job is picked up soon after its lease expires; the jitter is bounded
                    // by that wait too (the interval's jitter may be far longer).
                    let config = &self.slot.config;
                    let base = config.interval.min(self.inner.lease_ttl / 2);
                    let retry = base + jitter(config.jitter.min(base));
                    self.plan(retry);
                    self.publish();
                    (retry, RunTrigger::Schedule)
                }
            };
        }
        self.finish().await;
    }

    /// The first wait and why it ends.
    fn first_due(&mut self) -> (Duration, RunTrigger) {
        let config = &self.slot.config;
        if self.status.phase == Phase::Syncing {
            (Duration::ZERO, RunTrigger::Recovery)
        } else if config.run_on_start {
            (Duration::ZERO, RunTrigger::Start)
        } else if let Some(at) = self.status.next_run_ms {
            let wait = Duration::from_millis(at.saturating_sub(self.now_ms()));
            (wait, RunTrigger::Schedule)
        } else {
            (
                config.interval + jitter(config.jitter),
                RunTrigger::Schedule,
            )
        }
    }

    /// Take the lease, run under it, release it.
    async fn attempt(&mut self, trigger: RunTrigger) -> Attempt {
        let inner = Arc::clone(&self.inner);
        let name = self.name().to_owned();
        let sent = Instant::now();
        let acquired = inner
            .store_call(
                "taking a job lease",
                inner
                    .store
                    .try_acquire(&name, &inner.holder, inner.lease_ttl),
            )
            .await;
        match acquired {
            Ok(true) => {}
            Ok(false) => {
                debug!(job = %name, "another coordinator holds the job's lease; not run here");
                return Attempt::Busy;
            }
            Err(e) => {
                warn!(job = %name, error = %e, "could not take the job's lease; not run");
                return Attempt::StoreFailed(e);
            }
        }
        let mut lease = Lease::new(sent, inner.lease_ttl);
        let attempt = self.leased(trigger, &mut lease).await;
        if let Err(e) = inner
            .store_call(
                "releasing a job lease",
                inner.store.release(&name, &inner.holder),
            )
            .await
        {
            // The lease expires on its own after its TTL.
            warn!(job = %name, error = %e, "could not release the job's lease");
        }
        attempt
    }

    /// Everything done while holding the lease.
    async fn leased(&mut self, mut trigger: RunTrigger, lease: &mut Lease) -> Attempt {
        let inner = Arc::clone(&self.inner);
        let name = self.name().to_owned();
        let mut changed_elsewhere = false;
        match inner
            .store_call("loading a job status", inner.store.load(&name))
            .await
        {
            Ok(Some(stored)) => changed_elsewhere = self.adopt(stored),
            Ok(None) => {}
            Err(e) => warn!(job = %name, error = %e, "could not reload the job's status"),
        }
        if self.status.phase == Phase::Syncing {
            // We hold the lease, so nobody is running the job: a crash or kill left this.
            self.recover();
            self.save().await;
            if trigger != RunTrigger::Manual {
                trigger = RunTrigger::Recovery;
            }
        } else if changed_elsewhere && matches!(trigger, RunTrigger::Schedule | RunTrigger::Retry) {
            let now = self.now_ms();
            if let Some(at) = self.status.next_run_ms
                && at > now
            {
                return Attempt::NotDue {
                    delay: Duration::from_millis(at - now),
                };
            }
        }

        self.status.last_attempt_ms = Some(self.now_ms());
        let ctx = JobContext::new(name.clone(), trigger, self.status.clone())
            .with_stopping(inner.shutdown.clone());
        let job = Arc::clone(&self.slot.job);
        let limit = self.slot.config.timeout;

        if trigger != RunTrigger::Manual {
            match self.guarded(job.should_sync(&ctx), lease).await {
                Ok(Ok(answer)) if answer.sync => {
                    debug!(job = %name, reason = %answer.reason, ?trigger, "job has work to do");
                }
                Ok(Ok(answer)) => {
                    debug!(job = %name, reason = %answer.reason, "job has nothing to do");
                    let reason = self.record_skip(answer.reason);
                    self.save().await;
                    return Attempt::Ran(RunOutcome::Skipped { reason });
                }
                Ok(Err(e)) => {
                    return self
                        .fail(format!("should_sync failed: {}", error_chain(&*e)))
                        .await;
                }
                Err(Interrupted::Abandoned) => return Attempt::Stopped,
                Err(interrupted) => {
                    return self.fail(interrupted.describe("should_sync", limit)).await;
                }
            }
        }

        self.mark_syncing();
        self.save().await;
        match self.guarded(job.perform_sync(&ctx), lease).await {
            Ok(Ok(report)) => {
                let report = self.record_success(report);
                self.save().await;
                Attempt::Ran(RunOutcome::Completed(report))
            }
            Ok(Err(e)) => self.fail(error_chain(&*e)).await,
            Err(interrupted) => {
                if matches!(interrupted, Interrupted::Abandoned) {
                    lock(&inner.stop_report).abandoned.push(name);
                }
                self.fail(interrupted.describe("perform_sync", limit)).await
            }
        }
    }

    /// Run a job call under the job's timeout, catching panics, renewing the lease, and
    /// giving up when the lease is lost or `stop` abandons running calls.
    async fn guarded<T>(
        &self,
        call: impl Future<Output = T>,
        lease: &mut Lease,
    ) -> std::result::Result<T, Interrupted> {
        let inner = &*self.inner;
        let ttl = inner.lease_ttl;
        let name = self.name();
        let call = timeout(
            self.slot.config.timeout,
            AssertUnwindSafe(call).catch_unwind(),
        );
        tokio::pin!(call);
        let mut renewing: Option<Renewal<'_>> = None;
        loop {
            tokio::select! {
                biased;
                out = &mut call => {
                    return match out {
                        Ok(Ok(value)) => Ok(value),
                        Ok(Err(panic)) => Err(Interrupted::Panicked(panic_message(&*panic))),
                        Err(_) => Err(Interrupted::TimedOut),
                    };
                }
                () = inner.abort.cancelled() => return Err(Interrupted::Abandoned),
                () = sleep_until(lease.valid_until) => {
                    return Err(Interrupted::LeaseLost(
                        "the job's lease could not be renewed before it expired",
                    ));
                }
                Some((sent, renewed)) = OptionFuture::from(renewing.as_mut()), if renewing.is_some() => {
                    renewing = None;
                    match renewed {
                        Ok(true) => *lease = Lease::new(sent, ttl),
                        Ok(false) => {
                            return Err(Interrupted::LeaseLost(
                                "the job's lease expired and could not be renewed",
                            ));
                        }
                        Err(e) => {
                            warn!(job = %name, error = %e, "could not renew the job's lease; retrying");
                            lease.next_renew = after(Instant::now(), ttl / 10);
                        }
                    }
                }
                () = sleep_until(lease.next_renew), if renewing.is_none() => {
                    let sent = Instant::now();
                    renewing = Some(Box::pin(async move {
                        let renewed = inner
                            .store_call("renewing a job lease", inner.store.renew(name, &inner.holder, ttl))
                            .await;
                        (sent, renewed)
                    }));
                }
            }
        }
    }

    /// Take a status read from the store if it is newer; whether another coordinator wrote it.
    fn adopt(&mut self, stored: JobStatus) -> bool {
        let elsewhere = stored.revision > self.status.revision
            || (stored.revision == self.status.revision
                && stored.holder != self.status.holder
                && stored != self.status);
        if elsewhere || (!self.dirty && stored != self.status) {
            self.status = stored;
            self.publish();
        }
        elsewhere
    }

    fn recover(&mut self) {
        warn!(
            job = %self.name(),
            holder = ?self.status.holder,
            "job status was left syncing by a crash or kill; recording it as failed"
        );
        let now = self.now_ms();
        let status = &mut self.status;
        status.phase = Phase::Failed;
        status.last_error = Some(INTERRUPTED_ERROR.to_owned());
        status.last_failure_ms = Some(now);
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        status.runs = status.runs.saturating_add(1);
        status.failures = status.failures.saturating_add(1);
        self.plan(Duration::ZERO);
        self.touch();
    }

    fn mark_syncing(&mut self) {
        self.status.phase = Phase::Syncing;
        self.touch();
    }

    fn record_skip(&mut self, reason: String) -> String {
        let skip = Skip::new(self.now_ms(), reason);
        let reason = skip.reason.clone();
        self.status.skips = self.status.skips.saturating_add(1);
        self.status.last_skip = Some(skip);
        let config = &self.slot.config;
        self.plan(config.interval + jitter(config.jitter));
        self.touch();
        reason
    }

    fn record_success(&mut self, report: Report) -> Report {
        let report = report.bounded();
        let now = self.now_ms();
        let status = &mut self.status;
        status.phase = Phase::Complete;
        status.last_success_ms = Some(now);
        status.consecutive_failures = 0;
        status.runs = status.runs.saturating_add(1);
        status.last_report = Some(report.clone());
        let config = &self.slot.config;
        self.plan(config.interval + jitter(config.jitter));
        self.touch();
        debug!(job = %self.name(), "job run completed");
        report
    }

    /// Record a failure, persist it, and answer it.
    async fn fail(&mut self, error: String) -> Attempt {
        let error = truncate(&error, MAX_MESSAGE_LEN);
        let now = self.now_ms();
        let status = &mut self.status;
        status.phase = Phase::Failed;
        status.last_error = Some(error.clone());
        status.last_failure_ms = Some(now);
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        status.runs = status.runs.saturating_add(1);
        status.failures = status.failures.saturating_add(1);
        let failures = status.consecutive_failures;
        let config = &self.slot.config;
        let delay = config.backoff.delay(failures) + jitter(config.jitter);
        self.plan(delay);
        self.touch();
        info!(
            job = %self.name(),
            consecutive_failures = failures,
            retry_in = ?delay,
            error = %error,
            "job run failed"
        );
        self.save().await;
        Attempt::Ran(RunOutcome::Failed { error })
    }

    /// Set the next run `delay` from now.
    fn plan(&mut self, delay: Duration) {
        self.status.next_run_ms = Some(self.now_ms().saturating_add(millis(delay)));
        self.next_delay = delay;
    }

    /// Stamp a change and publish it.
    fn touch(&mut self) {
        self.status.revision = self.status.revision.saturating_add(1);
        self.status.updated_ms = self.now_ms();
        self.status.holder = Some(self.inner.holder.clone());
        self.publish();
    }

    fn publish(&self) {
        let status = self.status.clone();
        self.inner.snapshot.send_modify(|snapshot| {
            snapshot.insert(status.job.clone(), status);
        });
    }

    /// Persist the status, under a fresh store deadline.
    async fn save(&mut self) {
        let inner = Arc::clone(&self.inner);
        match inner
            .store_call("saving a job status", inner.store.save(&self.status))
            .await
        {
            Ok(()) => self.dirty = false,
            Err(e) => {
                self.dirty = true;
                warn!(job = %self.name(), error = %e, "could not save the job's status");
            }
        }
    }

    /// After the loop: refuse requests, and retry a status save that failed earlier.
    async fn finish(mut self) {
        self.slot.close();
        if !self.dirty {
            return;
        }
        // Only under the lease: another coordinator may have written a newer status since.
        let inner = Arc::clone(&self.inner);
        let name = self.name().to_owned();
        let acquired = inner
            .store_call(
                "taking a job lease",
                inner
                    .store
                    .try_acquire(&name, &inner.holder, inner.lease_ttl),
            )
            .await;
        if let Ok(true) = acquired {
            self.save().await;
            let _ = inner
                .store_call(
                    "releasing a job lease",
                    inner.store.release(&name, &inner.holder),
                )
                .await;
        }
        if self.dirty {
            lock(&inner.unsaved).push(name);
        }
    }
}

/// An error and its sources, "outer: inner: innermost".
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}
