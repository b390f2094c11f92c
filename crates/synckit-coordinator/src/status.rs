//! What the coordinator knows and persists about each job: `JobStatus`, its `Phase`, the
//! `Report` of the last successful run and the `Skip` of the last "nothing to do" answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest error message or skip reason kept in a status, in bytes; longer ones are cut at a
/// character boundary (a status is rewritten after every run, so it must stay small).
pub const MAX_MESSAGE_LEN: usize = 4 * 1024;
/// Largest [`Report`] kept in a status, as JSON bytes; a larger one loses its `detail` first
/// and its message next, and says so in its message.
pub const MAX_REPORT_LEN: usize = 64 * 1024;

/// The error recorded for a run that a crash or kill left in [`Phase::Syncing`].
pub const INTERRUPTED_ERROR: &str = "interrupted by a crash or kill";
/// The error recorded for a run that `stop` abandoned at its deadline.
pub const ABANDONED_ERROR: &str = "abandoned: the coordinator stopped before the run finished";

/// Where a job is in its cycle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Never run (or only ever skipped) since its status was created.
    #[default]
    Idle,
    /// A run is in progress. Persisted before the run starts, so a status still `Syncing` when
    /// nobody holds the job's lease was left by a crash, and is recovered at the next start.
    Syncing,
    /// The last run succeeded.
    Complete,
    /// The last run failed, timed out, was abandoned or was interrupted.
    Failed,
}

impl Phase {
    /// A stable snake_case name, as in the stored JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Syncing => "syncing",
            Phase::Complete => "complete",
            Phase::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a successful run did: named counts, a message and optional free-form detail.
///
/// ```
/// use synckit_coordinator::Report;
/// let report = Report::new()
///     .count("pulled", 12)
///     .count("pushed", 3)
///     .message("mirrored orders up to seq 1042");
/// assert_eq!(report.counts["pulled"], 12);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// Named counts (events pulled, rows written, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// A one-line summary for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Anything else the job wants to keep (JSON `null` when unused).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Report::default()
    }

    /// Set the count `name` to `value`.
    pub fn count(mut self, name: impl Into<String>, value: u64) -> Self {
        self.counts.insert(name.into(), value);
        self
    }

    /// Set the message.
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Set the free-form detail.
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    /// The report cut down to [`MAX_REPORT_LEN`] JSON bytes: detail first, then the message,
    /// then the counts, each loss stated in the message.
    pub(crate) fn bounded(mut self) -> Report {
        let size = |r: &Report| serde_json::to_vec(r).map(|v| v.len()).unwrap_or(usize::MAX);
        let original = size(&self);
        if original <= MAX_REPORT_LEN {
            return self;
        }
        self.detail = serde_json::Value::Null;
        let note = format!(" [report cut: {original} JSON bytes, over the {MAX_REPORT_LEN} limit]");
        if size(&self) > MAX_REPORT_LEN {
            self.message = truncate(&self.message, MAX_MESSAGE_LEN);
        }
        if size(&self) > MAX_REPORT_LEN {
            self.counts.clear();
        }
        self.message.push_str(&note);
        self
    }
}

impl From<serde_json::Value> for Report {
    /// A report that only carries `detail`.
    fn from(detail: serde_json::Value) -> Self {
        Report::new().detail(detail)
    }
}

/// The last time a job answered "nothing to do", and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Skip {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The job's reason (for example "unchanged since seq 1042").
    pub reason: String,
}

impl Skip {
    /// A skip at `at_ms` for `reason`.
    pub fn new(at_ms: u64, reason: impl Into<String>) -> Self {
        Skip {
            at_ms,
            reason: truncate(&reason.into(), MAX_MESSAGE_LEN),
        }
    }
}

/// The persisted status of one job. Times are milliseconds since the Unix epoch, taken from
/// the coordinator's [`Clock`](synckit_types::Clock).
///
/// Build one with [`JobStatus::new`] (tests and custom stores may then set fields directly).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// Where the job is.
    pub phase: Phase,
    /// Bumped by every change; a status store shared by several coordinators uses it to tell
    /// a status another process wrote from its own.
    pub revision: u64,
    /// When the last run (or crash recovery) started.
    pub last_attempt_ms: Option<u64>,
    /// When the last successful run ended.
    pub last_success_ms: Option<u64>,
    /// When the last failure was recorded.
    pub last_failure_ms: Option<u64>,
    /// The last failure's message. Kept after a later success, as history: `phase` says
    /// whether the job is failing now.
    pub last_error: Option<String>,
    /// Failures since the last success; the backoff grows with it.
    pub consecutive_failures: u32,
    /// Runs that ended (successes and failures; skips not included).
    pub runs: u64,
    /// Runs that failed (crash and shutdown interruptions included).
    pub failures: u64,
    /// Times the job answered "nothing to do".
    pub skips: u64,
    /// The report of the last successful run.
    pub last_report: Option<Report>,
    /// The last "nothing to do" answer.
    pub last_skip: Option<Skip>,
    /// When the job is due next (a hint: `sync_now` and restarts may run it sooner).
    pub next_run_ms: Option<u64>,
    /// The coordinator (lease holder id) that wrote this status.
    pub holder: Option<String>,
    /// When this status was written.
    pub updated_ms: u64,
}

impl JobStatus {
    /// The status of a job that never ran.
    pub fn new(job: impl Into<String>) -> Self {
        JobStatus {
            job: job.into(),
            ..JobStatus::default()
        }
    }

    /// Runs that succeeded.
    pub fn successes(&self) -> u64 {
        self.runs.saturating_sub(self.failures)
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked with "…" when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_json_round_trips_and_tolerates_missing_fields() {
        let mut status = JobStatus::new("orders");
        status.phase = Phase::Failed;
        status.last_error = Some("boom".into());
        status.consecutive_failures = 2;
        status.last_report = Some(Report::new().count("n", 1).message("ok"));
        let text = serde_json::to_string(&status).unwrap();
        assert!(text.contains("\"phase\":\"failed\""), "{text}");
        let back: JobStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, status);
        let old: JobStatus = serde_json::from_str(r#"{"job":"a","phase":"syncing"}"#).unwrap();
        assert_eq!(old.phase, Phase::Syncing);
        assert_eq!(old.runs, 0);
        assert!(serde_json::from_str::<JobStatus>(r#"{"job":"a","phase":"dancing"}"#).is_err());
    }

    #[test]
    fn long_texts_are_cut_at_char_boundaries() {
        let text = "é".repeat(MAX_MESSAGE_LEN);
        let cut = truncate(&text, MAX_MESSAGE_LEN);
        assert!(cut.len() <= MAX_MESSAGE_LEN);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(
            Skip::new(1, "x".repeat(10_000)).reason.len(),
            MAX_MESSAGE_LEN
        );
    }

    #[test]
    fn big_reports_are_bounded() {
        let small = Report::new().message("ok").count("a", 1);
        assert_eq!(small.clone().bounded(), small);
        let big = Report::new()
            .message("m".repeat(100_000))
            .count("a", 1)
            .detail(serde_json::json!({ "blob": "x".repeat(100_000) }));
        let cut = big.bounded();
        assert!(serde_json::to_vec(&cut).unwrap().len() <= MAX_REPORT_LEN + 200);
        assert!(cut.detail.is_null());
        assert_eq!(cut.counts["a"], 1);
        assert!(cut.message.contains("report cut"), "{}", cut.message);
    }
}
