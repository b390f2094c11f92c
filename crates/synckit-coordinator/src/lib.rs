//! synckit-coordinator: runs named sync jobs on schedules and triggers, one run at a time each.
//!
//! A [`Coordinator`] runs many named [`Job`]s. Each job is asked [`Job::should_sync`] ("yes" or
//! "no", with a reason) and, on "yes", told [`Job::perform_sync`], which returns a [`Report`].
//! Jobs run once at start, then every [`JobConfig::interval`] (plus jitter), and on
//! [`Coordinator::sync_now`]. Runs of one job never overlap; a job that says "no", fails or
//! hangs never delays another job; consecutive failures back off exponentially up to a cap
//! ([`Backoff`]); each call has a timeout; [`Coordinator::stop`] lets running jobs finish until
//! a deadline and then writes every final status under a fresh, bounded store deadline.
//!
//! Each job has a [`JobStatus`] (phase, last attempt, last success, last error, consecutive
//! failures, last report, next run, counters), readable at any time through
//! [`Coordinator::status`] / [`Coordinator::job_status`] and persisted through a
//! [`StatusStore`]:
//!
//! | store | feature | statuses | leases |
//! |---|---|---|---|
//! | [`MemoryStatusStore`] | | memory | this process |
//! | [`FileStatusStore`] | | one JSON file, replaced atomically | this process |
//! | `SledStatusStore` | `sled` | a sled tree of JSON values | this process |
//! | `PostgresStatusStore` | `postgres` | a table in a configurable schema | a table: every process on the schema |
//!
//! A status still `syncing` at start was left by a crash or kill: it is recorded as failed
//! ("interrupted by a crash or kill") and the job runs at once. With the PostgreSQL store,
//! coordinators in several processes share the jobs: a job runs only under its lease (holder
//! id and expiry, taken in one statement, renewed during long runs, released at the end), a
//! process that cannot take a lease skips that job and keeps running the others, and a
//! crashed holder's lease frees itself after the lease TTL.
//!
//! Wall-clock times in statuses come from an injected [`synckit_types::Clock`]; waiting uses
//! tokio's timer, so tests can pause and advance time.
//!
//! # Disk and database access
//! DESIGN.md keeps disk and database access in the store crates. The coordinator's status
//! stores are the one exception: they persist only the coordinator's own bookkeeping, sit
//! behind the [`StatusStore`] trait (an application may pass any implementation), and the
//! sled and PostgreSQL ones are behind the optional `sled` and `postgres` features. The
//! coordinator depends on no `synckit-store-*` crate.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use synckit_coordinator::{
//!     BoxError, Coordinator, Job, JobConfig, JobContext, MemoryStatusStore, Phase, Report,
//!     RunOutcome, ShouldSync,
//! };
//!
//! #[derive(Debug)]
//! struct MirrorOrders;
//!
//! #[async_trait]
//! impl Job for MirrorOrders {
//!     async fn should_sync(&self, _ctx: &JobContext) -> Result<ShouldSync, BoxError> {
//!         Ok(ShouldSync::yes("the remote head moved"))
//!     }
//!
//!     async fn perform_sync(&self, _ctx: &JobContext) -> Result<Report, BoxError> {
//!         Ok(Report::new().count("pulled", 3).message("mirrored up to seq 42"))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
//!     .job(
//!         JobConfig::new("orders", Duration::from_secs(60)).with_run_on_start(false),
//!         Arc::new(MirrorOrders),
//!     )
//!     .build()?;
//! coordinator.start().await?;
//!
//! let outcome = coordinator.sync_now("orders").await?;
//! assert!(matches!(outcome, RunOutcome::Completed(ref r) if r.counts["pulled"] == 3));
//! let status = coordinator.job_status("orders").ok_or("no status")?;
//! assert_eq!(status.phase, Phase::Complete);
//! assert_eq!(status.runs, 1);
//!
//! coordinator.stop(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod coordinator;
mod error;
mod job;
mod status;
mod store;

pub use backoff::Backoff;
pub use coordinator::{
    Coordinator, CoordinatorBuilder, DEFAULT_LEASE_TTL, DEFAULT_STORE_TIMEOUT, MAX_HOLDER_LEN,
    StatusSnapshot, StopReport,
};
pub use error::{CoordinatorError, Result};
pub use job::{
    DEFAULT_TIMEOUT, DynJob, Job, JobConfig, JobContext, MAX_DURATION, MAX_JOB_NAME_LEN,
    RunOutcome, RunTrigger, ShouldSync,
};
pub use status::{
    ABANDONED_ERROR, INTERRUPTED_ERROR, JobStatus, MAX_MESSAGE_LEN, MAX_REPORT_LEN, Phase, Report,
    Skip,
};
pub use store::file::FileStatusStore;
pub use store::memory::MemoryStatusStore;
#[cfg(feature = "postgres")]
pub use store::postgres::{DEFAULT_SCHEMA, PostgresStatusConfig, PostgresStatusStore};
#[cfg(feature = "sled")]
pub use store::sled::{DEFAULT_TREE, SledStatusStore};
pub use store::{DynStatusStore, StatusStore};
/// The error type jobs return (any `std::error::Error + Send + Sync`), from `synckit-types`.
pub use synckit_types::BoxError;

pub mod daemon;
pub mod pipeline;
pub mod redact;
pub mod watermark;

pub use daemon::{
    Daemon, DaemonBuilder, DaemonConfig, DaemonError, DaemonStatus, DaemonTrigger, DaemonWork,
    PathFilter, WorkReport, work_fn,
};
pub use pipeline::{
    Checkpoint, CheckpointHook, DirSource, LineFormat, MemorySink, PIPELINE_FORMAT_VERSION,
    Pipeline, PipelineBuilder, PipelineConfig, PipelineError, PipelineStatus, Record, RunReport,
    Sink, Source, SourceItem, Transform, TransformStats, record_id,
};
pub use redact::{RedactionCounts, Redactor, SecretKind};
pub use watermark::{Watermark, WatermarkError, WatermarkSet, WatermarkStore};
