//! The `Job` contract (asked `should_sync`, then told `perform_sync`), what a run is told
//! (`JobContext`), how a job is scheduled (`JobConfig`) and what a run ended with (`RunOutcome`).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use synckit_types::BoxError;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::{CoordinatorError, Result};
use crate::status::{JobStatus, Report};

/// Longest job name, in bytes.
pub const MAX_JOB_NAME_LEN: usize = 128;
/// Run timeout of a job configured without one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest interval, timeout or backoff accepted (a year): longer ones are configuration
/// mistakes, and they would overflow the timer arithmetic.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// A named unit of background sync work run by a [`Coordinator`](crate::Coordinator).
///
/// The coordinator never runs two runs of one job at once (in one process, and across
/// processes with a shared status store), bounds each call by the job's timeout, and records
/// every outcome in the job's [`JobStatus`]. A call past its timeout, or still running when
/// `stop` gives up, is dropped at its next `.await`: write jobs so that stopping at any await
/// point is safe (for example, move a watermark only after the data it covers is stored).
#[async_trait]
pub trait Job: Send + Sync + Debug + 'static {
    /// Whether there is anything to do, and why. Asked before every scheduled run (not before
    /// [`Coordinator::sync_now`](crate::Coordinator::sync_now), which always runs); a "no" is
    /// recorded as a skip and the job is asked again after its interval. An error counts as a
    /// failed run.
    async fn should_sync(&self, ctx: &JobContext) -> Result<ShouldSync, BoxError>;

    /// Do the work and report what was done. An error (or a panic) counts as a failed run.
    async fn perform_sync(&self, ctx: &JobContext) -> Result<Report, BoxError>;
}

/// A shared job.
pub type DynJob = Arc<dyn Job>;

#[async_trait]
impl<T: Job + ?Sized> Job for Arc<T> {
    async fn should_sync(&self, ctx: &JobContext) -> Result<ShouldSync, BoxError> {
        (**self).should_sync(ctx).await
    }

    async fn perform_sync(&self, ctx: &JobContext) -> Result<Report, BoxError> {
        (**self).perform_sync(ctx).await
    }
}

#[async_trait]
impl<T: Job + ?Sized> Job for Box<T> {
    async fn should_sync(&self, ctx: &JobContext) -> Result<ShouldSync, BoxError> {
        (**self).should_sync(ctx).await
    }

    async fn perform_sync(&self, ctx: &JobContext) -> Result<Report, BoxError> {
        (**self).perform_sync(ctx).await
    }
}

/// A job's answer to [`Job::should_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShouldSync {
    /// Whether to run now.
    pub sync: bool,
    /// Why, for the status and the logs.
    pub reason: String,
}

impl ShouldSync {
    /// Run now, because of `reason`.
    pub fn yes(reason: impl Into<String>) -> Self {
        ShouldSync {
            sync: true,
            reason: reason.into(),
        }
    }

    /// Nothing to do, because of `reason` (for example "unchanged since seq 1042").
    pub fn no(reason: impl Into<String>) -> Self {
        ShouldSync {
            sync: false,
            reason: reason.into(),
        }
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RunTrigger {
    /// The initial run when the coordinator starts.
    Start,
    /// The job's interval elapsed.
    Schedule,
    /// A backoff delay after a failure elapsed.
    Retry,
    /// [`Coordinator::sync_now`](crate::Coordinator::sync_now) or
    /// [`Coordinator::trigger`](crate::Coordinator::trigger); `should_sync` is not asked.
    Manual,
    /// The job's status was left `syncing` by a crash or kill; it was marked failed and the
    /// job runs again at once.
    Recovery,
}

/// What a run is told: which job, why it runs, its status before the run, and whether the
/// coordinator is stopping.
#[derive(Debug, Clone)]
pub struct JobContext {
    name: String,
    trigger: RunTrigger,
    status: JobStatus,
    stopping: CancellationToken,
}

impl JobContext {
    /// A context for calling a job outside a coordinator (in its own unit tests).
    pub fn new(name: impl Into<String>, trigger: RunTrigger, status: JobStatus) -> Self {
        JobContext {
            name: name.into(),
            trigger,
            status,
            stopping: CancellationToken::new(),
        }
    }

    pub(crate) fn with_stopping(mut self, stopping: CancellationToken) -> Self {
        self.stopping = stopping;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why this run started.
    pub fn trigger(&self) -> RunTrigger {
        self.trigger
    }

    /// The job's status just before this run (after crash recovery): last success, last
    /// report, consecutive failures...
    pub fn status(&self) -> &JobStatus {
        &self.status
    }

    /// Whether the coordinator is stopping: a long run may finish early at a safe point.
    pub fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    /// Resolves when the coordinator starts stopping.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }
}

/// How one job is scheduled.
///
/// ```
/// use std::time::Duration;
/// use synckit_coordinator::{Backoff, JobConfig};
/// let config = JobConfig::new("orders", Duration::from_secs(60))
///     .with_jitter(Duration::from_secs(5))
///     .with_timeout(Duration::from_secs(120))
///     .with_backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(600)));
/// assert!(config.run_on_start);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobConfig {
    /// The job's name: its key in the status store, 1 to [`MAX_JOB_NAME_LEN`] bytes, no
    /// control characters.
    pub name: String,
    /// Time from the end of one run (or skip) to the next.
    pub interval: Duration,
    /// A random delay up to this much is added to every wait (default: a tenth of the
    /// interval), so coordinators started together spread their runs.
    pub jitter: Duration,
    /// Longest time one `should_sync` or `perform_sync` call may take before it is abandoned
    /// and recorded as failed.
    pub timeout: Duration,
    /// Retry delays while the job fails.
    pub backoff: Backoff,
    /// Run once as soon as the coordinator starts (default), rather than when the persisted
    /// `next_run` falls due.
    pub run_on_start: bool,
}

impl JobConfig {
    /// Run `name` every `interval`, with the default jitter, timeout and backoff.
    pub fn new(name: impl Into<String>, interval: Duration) -> Self {
        JobConfig {
            name: name.into(),
            interval,
            jitter: interval / 10,
            timeout: DEFAULT_TIMEOUT,
            backoff: Backoff::default(),
            run_on_start: true,
        }
    }

    /// Add a random delay up to `jitter` to every wait (`Duration::ZERO`: none).
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Abandon a call that runs longer than `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retry failures with `backoff`.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether to run once at start.
    pub fn with_run_on_start(mut self, run_on_start: bool) -> Self {
        self.run_on_start = run_on_start;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let name = &self.name;
        for (what, value) in [
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("initial backoff", self.backoff.initial),
        ] {
            if value.is_zero() {
                return Err(CoordinatorError::config(format!(
                    "job {name:?}: the {what} must be longer than zero"
                )));
            }
        }
        for (what, value) in [
            ("interval", self.interval),
            ("jitter", self.jitter),
            ("timeout", self.timeout),
            ("maximum backoff", self.backoff.max),
        ] {
            if value > MAX_DURATION {
                return Err(CoordinatorError::config(format!(
                    "job {name:?}: the {what} {value:?} is longer than {MAX_DURATION:?}"
                )));
            }
        }
        self.backoff.validate(name)
    }
}

/// Check a job name: it is a key in files, sled trees and SQL rows.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_JOB_NAME_LEN {
        return Err(CoordinatorError::config(format!(
            "job name {name:?} must be 1 to {MAX_JOB_NAME_LEN} bytes long"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CoordinatorError::config(format!(
            "job name {name:?} has a control character"
        )));
    }
    Ok(())
}

/// How one run ended, as answered to [`Coordinator::sync_now`](crate::Coordinator::sync_now).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RunOutcome {
    /// `perform_sync` succeeded with this report.
    Completed(Report),
    /// `should_sync` said there was nothing to do.
    Skipped {
        /// The job's reason.
        reason: String,
    },
    /// The run failed, timed out, panicked, lost its lease or was abandoned at stop.
    Failed {
        /// What went wrong (as recorded in `last_error`).
        error: String,
    },
    /// Another coordinator holds the job's lease and is running it; nothing was run here.
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Nop;

    #[async_trait]
    impl Job for Nop {
        async fn should_sync(&self, _ctx: &JobContext) -> Result<ShouldSync, BoxError> {
            Ok(ShouldSync::no("never"))
        }

        async fn perform_sync(&self, _ctx: &JobContext) -> Result<Report, BoxError> {
            Ok(Report::new())
        }
    }

    #[tokio::test]
    async fn job_is_object_safe_and_forwarded() {
        let job: DynJob = Arc::new(Nop);
        let as_ref: &dyn Job = &*job;
        let ctx = JobContext::new("nop", RunTrigger::Manual, JobStatus::new("nop"));
        assert!(!as_ref.should_sync(&ctx).await.unwrap().sync);
        let boxed: Box<dyn Job> = Box::new(Arc::clone(&job));
        assert_eq!(boxed.perform_sync(&ctx).await.unwrap(), Report::new());
        assert_eq!(ctx.name(), "nop");
        assert!(!ctx.is_stopping());
    }

    #[test]
    fn config_validation() {
        let ok = JobConfig::new("a", Duration::from_secs(1));
        ok.validate().unwrap();
        assert_eq!(ok.jitter, Duration::from_millis(100));
        for bad in [
            JobConfig::new("", Duration::from_secs(1)),
            JobConfig::new("a\nb", Duration::from_secs(1)),
            JobConfig::new("x".repeat(MAX_JOB_NAME_LEN + 1), Duration::from_secs(1)),
            JobConfig::new("a", Duration::ZERO),
            ok.clone().with_timeout(Duration::ZERO),
            ok.clone().with_jitter(MAX_DURATION * 2),
            ok.clone()
                .with_backoff(Backoff::new(Duration::from_secs(2), Duration::from_secs(1))),
        ] {
            assert!(
                matches!(bad.validate(), Err(CoordinatorError::Config { .. })),
                "{bad:?}"
            );
        }
        JobConfig::new("x".repeat(MAX_JOB_NAME_LEN), Duration::from_secs(1))
            .validate()
            .unwrap();
    }
}
