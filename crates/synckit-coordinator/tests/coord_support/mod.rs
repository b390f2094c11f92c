//! Shared support for the coordinator's tests: a clock that follows tokio's (paused) time, a
//! scriptable job that records every call and how many ran at once, a slow status store, and
//! waiting for a status condition without sleeping.
#![allow(dead_code)] // each test binary uses a different part of this module.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use synckit_coordinator::{
    BoxError, Coordinator, Job, JobContext, JobStatus, Report, RunTrigger, ShouldSync,
    StatusSnapshot, StatusStore,
};
use synckit_types::{Clock, DynClock};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Wall-clock milliseconds that advance with tokio's clock, so statuses written under paused
/// time carry the logical times the schedule used.
#[derive(Debug)]
pub struct TokioClock {
    base_ms: u64,
    start: Instant,
}

impl TokioClock {
    pub fn shared() -> Arc<TokioClock> {
        Arc::new(TokioClock {
            base_ms: 1_700_000_000_000,
            start: Instant::now(),
        })
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        self.base_ms + u64::try_from(self.start.elapsed().as_millis()).unwrap()
    }
}

/// What the scripted job does on its n-th `perform_sync` call.
#[derive(Debug, Clone)]
pub enum Step {
    Succeed,
    Fail(&'static str),
    Sleep(Duration),
    Hang,
    Panic,
}

/// One `perform_sync` call, as the job saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub at_ms: u64,
    pub trigger: RunTrigger,
    pub before: JobStatus,
}

type Plan = Box<dyn Fn(usize) -> Step + Send + Sync>;

/// A job that follows a script and records its calls.
pub struct Scripted {
    clock: DynClock,
    /// `Some(reason)`: `should_sync` says no.
    skip: Option<String>,
    /// How long `should_sync` takes.
    check_delay: Duration,
    plan: Plan,
    pub calls: Mutex<Vec<Call>>,
    pub checks: AtomicUsize,
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// `perform_sync` futures dropped before they finished.
    pub abandoned: AtomicUsize,
    /// Notified (one permit) whenever a `perform_sync` call starts.
    pub started: Notify,
}

impl fmt::Debug for Scripted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scripted")
            .field("skip", &self.skip)
            .field("calls", &self.calls.lock().unwrap().len())
            .finish_non_exhaustive()
    }
}

impl Scripted {
    pub fn new(clock: DynClock, plan: impl Fn(usize) -> Step + Send + Sync + 'static) -> Self {
        Scripted {
            clock,
            skip: None,
            check_delay: Duration::ZERO,
            plan: Box::new(plan),
            calls: Mutex::new(Vec::new()),
            checks: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            started: Notify::new(),
        }
    }

    pub fn succeeding(clock: DynClock) -> Self {
        Scripted::new(clock, |_| Step::Succeed)
    }

    pub fn skipping(mut self, reason: &str) -> Self {
        self.skip = Some(reason.to_owned());
        self
    }

    pub fn checking_for(mut self, delay: Duration) -> Self {
        self.check_delay = delay;
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a call out of `in_flight`, and as abandoned when dropped before it finished.
struct InFlight<'a> {
    job: &'a Scripted,
    finished: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.job.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.job.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl Job for Scripted {
    async fn should_sync(&self, _ctx: &JobContext) -> Result<ShouldSync, BoxError> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        if !self.check_delay.is_zero() {
            tokio::time::sleep(self.check_delay).await;
        }
        Ok(match &self.skip {
            Some(reason) => ShouldSync::no(reason.clone()),
            None => ShouldSync::yes("scripted"),
        })
    }

    async fn perform_sync(&self, ctx: &JobContext) -> Result<Report, BoxError> {
        let index = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Call {
                at_ms: self.clock.now_ms(),
                trigger: ctx.trigger(),
                before: ctx.status().clone(),
            });
            calls.len() - 1
        };
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut guard = InFlight {
            job: self,
            finished: false,
        };
        self.started.notify_one();
        let result = match (self.plan)(index) {
            Step::Succeed => Ok(Report::new().count("call", index as u64)),
            Step::Fail(message) => Err(message.into()),
            Step::Sleep(duration) => {
                tokio::time::sleep(duration).await;
                Ok(Report::new().count("call", index as u64))
            }
            Step::Hang => std::future::pending().await,
            Step::Panic => panic!("scripted panic in call {index}"),
        };
        guard.finished = true;
        result
    }
}

/// Wait (without sleeping) until the coordinator's statuses satisfy `condition`; fail after
/// `limit` of tokio time (logical time when paused).
pub async fn wait_until(
    coordinator: &Coordinator,
    what: &str,
    limit: Duration,
    mut condition: impl FnMut(&StatusSnapshot) -> bool,
) -> StatusSnapshot {
    let mut receiver = coordinator.subscribe();
    match tokio::time::timeout(limit, receiver.wait_for(|s| condition(s))).await {
        Ok(Ok(snapshot)) => snapshot.clone(),
        _ => panic!(
            "gave up waiting for {what} after {limit:?}; statuses: {:#?}",
            coordinator.status()
        ),
    }
}

/// A status store in front of another whose saves take `delay` first (a remote database).
#[derive(Debug)]
pub struct SlowSaves<S> {
    pub inner: S,
    pub delay: Duration,
}

#[async_trait]
impl<S: StatusStore> StatusStore for SlowSaves<S> {
    async fn load_all(&self) -> synckit_coordinator::Result<Vec<JobStatus>> {
        self.inner.load_all().await
    }

    async fn load(&self, job: &str) -> synckit_coordinator::Result<Option<JobStatus>> {
        self.inner.load(job).await
    }

    async fn save(&self, status: &JobStatus) -> synckit_coordinator::Result<()> {
        tokio::time::sleep(self.delay).await;
        self.inner.save(status).await
    }

    async fn try_acquire(
        &self,
        job: &str,
        holder: &str,
        ttl: Duration,
    ) -> synckit_coordinator::Result<bool> {
        self.inner.try_acquire(job, holder, ttl).await
    }

    async fn renew(
        &self,
        job: &str,
        holder: &str,
        ttl: Duration,
    ) -> synckit_coordinator::Result<bool> {
        self.inner.renew(job, holder, ttl).await
    }

    async fn release(&self, job: &str, holder: &str) -> synckit_coordinator::Result<()> {
        self.inner.release(job, holder).await
    }
}
