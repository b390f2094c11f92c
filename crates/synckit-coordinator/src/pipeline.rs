//! The record pipeline: a [`Source`] of line-oriented items (say, the JSON-lines files of a
//! directory), [`Transform`]s, and a [`Sink`], with a [`Watermark`] per item so that each run
//! sends only the records appended since the last one.
//!
//! # Exactly once, as the sink sees it
//! Each record gets a deterministic id: a hash of the pipeline's namespace, the item id, the
//! format versions, the item's generation, the record's ordinal (line number) and the hash of
//! the line's bytes (see [`record_id`]). A run writes a batch to the sink and only then saves
//! the watermark. A crash between the two leaves the watermark behind the sink; the next run
//! reads the same lines again and sends records with the same ids, and the sink drops them
//! because **a sink must be idempotent by record id**. The synckit hub and node are: an event id
//! that is already stored is answered `duplicate` and never stored twice. A crash before the
//! sink write loses nothing either: the watermark had not moved. So every line ends up in the
//! sink exactly once.
//!
//! # Rewritten items
//! The watermark keeps the SHA-256 of the consumed prefix. When an item is shorter than the
//! consumed prefix, or its first `offset` bytes hash differently, it was rewritten (truncated,
//! replaced, rotated under the same name): it becomes a new *generation* and is read again
//! from line 1. The generation is part of every record id, so the new lines never collide with
//! the records of the earlier generation, which stay in the sink (sinks are append-only). A
//! rewrite is counted in [`RunReport::rewrites`]. The watermark of an item that disappears is
//! kept: if it comes back with the same prefix it continues, otherwise it is a rewrite.
//!
//! # Versions and resync
//! [`PIPELINE_FORMAT_VERSION`] (this crate's record and id format) and
//! [`PipelineConfig::format_version`] (the application's) are saved with the watermarks. When
//! either differs from the running code, or the namespace changed, every watermark is dropped
//! and every item is read from line 1: a full resync. Both versions are part of record ids, so
//! the resynced records are new records in the new format, not duplicates the sink would drop.
//! [`Pipeline::force_resync`] instead re-reads everything under the *same* ids: a repair that
//! restores what a sink lost while the sink drops what it still has.
//!
//! # Lines
//! A line is consumed only once it ends with `\n`: a last line still being written waits for
//! the next run. A trailing `\r` is dropped. Empty lines are skipped. In
//! [`LineFormat::JsonLines`], a line that is not JSON is counted as malformed, logged as a
//! warning and skipped (it is consumed: it will not be retried). A line longer than
//! [`PipelineConfig::max_line_bytes`] is skipped the same way without being held in memory.

use std::collections::HashSet;
use std::fmt::{self, Debug};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use synckit_types::BoxError;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::daemon::{DaemonWork, WorkReport};
use crate::redact::RedactionCounts;
use crate::watermark::{Watermark, WatermarkError, WatermarkSet, WatermarkStore, write_atomic};

/// Version of this crate's record and id format. Raising it makes every pipeline resync from
/// the first line, under new record ids.
pub const PIPELINE_FORMAT_VERSION: u32 = 1;

/// One item of a source, e.g. a file. Its id is stable across runs: watermarks and record ids
/// are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    /// Stable id, e.g. the file name relative to the watched directory.
    pub id: String,
    /// Size in bytes, when known (lets unchanged items be skipped).
    pub size: Option<u64>,
    /// Modification time in nanoseconds since the Unix epoch, when known.
    pub modified_ns: Option<u64>,
}

/// Where records come from: a list of items, each read as bytes from its start.
///
/// Both methods block (file I/O); the pipeline calls them off the async runtime's threads.
pub trait Source: Send + Sync + Debug + 'static {
    /// The items to read now, in a stable order.
    fn items(&self) -> io::Result<Vec<SourceItem>>;

    /// Open `item` for reading from its first byte.
    fn open(&self, item: &SourceItem) -> io::Result<Box<dyn Read + Send>>;
}

/// The files of one directory (not its subdirectories), optionally only those with an
/// extension. Item ids are the file names; names that are not UTF-8 are skipped with a warning.
#[derive(Debug, Clone)]
pub struct DirSource {
    dir: PathBuf,
    extension: Option<String>,
}

impl DirSource {
    /// Every file of `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DirSource {
            dir: dir.into(),
            extension: None,
        }
    }

    /// Only files whose name ends in `.{extension}` (e.g. `"jsonl"`).
    pub fn extension(mut self, extension: impl Into<String>) -> Self {
        self.extension = Some(extension.into());
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `path` names a file this source would list (by its name only).
    pub fn accepts(&self, path: &Path) -> bool {
        match &self.extension {
            None => true,
            Some(ext) => path
                .extension()
                .is_some_and(|e| e.to_str() == Some(ext.as_str())),
        }
    }
}

impl Source for DirSource {
    fn items(&self) -> io::Result<Vec<SourceItem>> {
        let mut items = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let path = entry.path();
            if !self.accepts(&path) {
                continue;
            }
            // Follows symbolic links, so a link to a log file is read like the file.
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // Removed between the listing and now: nothing to read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if !meta.is_file() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                warn!(path = %path.display(), "file name is not UTF-8; skipped");
                continue;
            };
            items.push(SourceItem {
                id: name,
                size: Some(meta.len()),
                modified_ns: modified_ns(&meta),
            });
        }
        items.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(items)
    }

    fn open(&self, item: &SourceItem) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(self.dir.join(&item.id))?))
    }
}

/// A file's modification time in nanoseconds since the Unix epoch, when the platform has one.
pub(crate) fn modified_ns(meta: &fs::Metadata) -> Option<u64> {
    let since = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

/// One record on its way from a source to the sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Deterministic id (see [`record_id`]); the sink's idempotency key.
    pub id: String,
    /// The id of the item it was read from.
    pub source: String,
    /// The item's generation (raised each time the item was found rewritten).
    pub generation: u64,
    /// The line number within the item's generation, 1-based.
    pub ordinal: u64,
    /// The parsed line (a JSON value, or a string in [`LineFormat::Text`]).
    pub value: Value,
}

/// Counters that transforms add to; they reach [`RunReport`] and [`PipelineStatus`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransformStats {
    /// Secrets redacted, per kind.
    pub redactions: RedactionCounts,
}

/// A step between source and sink. Must be deterministic: a record read again after a crash
/// must come out the same, or the sink sees the same id with other content.
pub trait Transform: Send + Sync + Debug + 'static {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Change `record`, or drop it (`Ok(None)`). An error skips the record (counted and logged);
    /// the run goes on.
    fn apply(&self, record: Record, stats: &mut TransformStats)
    -> Result<Option<Record>, BoxError>;
}

/// Where records go.
///
/// **Must be idempotent by [`Record::id`]**: writing a record whose id it already holds is a
/// no-op, not a second copy. The pipeline relies on it after a crash between a write and the
/// watermark save (see the module docs).
#[async_trait]
pub trait Sink: Send + Sync + Debug + 'static {
    /// Write `records`, in order. An error fails the run; the watermark stays where it was, so
    /// the next run sends the same records again.
    async fn write(&self, records: &[Record]) -> Result<(), BoxError>;
}

/// An in-memory sink that keeps one copy per record id, for tests and examples.
#[derive(Debug, Default)]
pub struct MemorySink {
    state: Mutex<MemorySinkState>,
}

#[derive(Debug, Default)]
struct MemorySinkState {
    records: Vec<Record>,
    ids: HashSet<String>,
    offered: u64,
    duplicates: u64,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        MemorySink::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemorySinkState> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records held, one per id, in the order first written.
    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Records offered by `write`, duplicates included.
    pub fn offered(&self) -> u64 {
        self.lock().offered
    }

    /// Records offered whose id was already held (and so were dropped).
    pub fn duplicates(&self) -> u64 {
        self.lock().duplicates
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn write(&self, records: &[Record]) -> Result<(), BoxError> {
        let mut state = self.lock();
        for record in records {
            state.offered += 1;
            if state.ids.insert(record.id.clone()) {
                state.records.push(record.clone());
            } else {
                state.duplicates += 1;
            }
        }
        Ok(())
    }
}

/// How the lines of an item become record values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineFormat {
    /// Each line is one JSON value; a line that is not JSON is malformed and skipped.
    #[default]
    JsonLines,
    /// Each line is a string value (invalid UTF-8 is replaced with U+FFFD).
    Text,
}

/// Settings of a [`Pipeline`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    /// Mixed into every record id, so two pipelines that read items of the same name (two
    /// machines shipping `app.jsonl`) never produce the same ids. Use something stable and
    /// unique per writer, such as a node id. Changing it resyncs everything.
    pub namespace: String,
    /// The application's record format version; raise it to resync everything under new ids.
    pub format_version: u32,
    /// How lines become values.
    pub line_format: LineFormat,
    /// Most records per sink write (and per watermark save). Default 500.
    pub batch_records: usize,
    /// Most line bytes read per batch, so a batch of long lines stays small. Default 4 MiB.
    pub batch_bytes: usize,
    /// Longest line accepted; longer ones are skipped as malformed. Default 1 MiB.
    pub max_line_bytes: usize,
    /// Skip items whose size and modification time are those of their last complete read.
    /// Saves re-hashing unchanged files on every run; an in-place rewrite that keeps both the
    /// same is then only seen at the item's next change. Default true.
    pub skip_unchanged: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            namespace: String::new(),
            format_version: 1,
            line_format: LineFormat::JsonLines,
            batch_records: 500,
            batch_bytes: 4 << 20,
            max_line_bytes: 1 << 20,
            skip_unchanged: true,
        }
    }
}

/// A point in a run where a [`CheckpointHook`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checkpoint<'a> {
    /// A batch was written to the sink; its watermark is not saved yet.
    SinkWritten {
        /// The item the batch came from.
        item: &'a str,
        /// Records written.
        records: usize,
        /// Ordinal of the last line the batch covers.
        ordinal: u64,
    },
    /// The watermark after a batch was saved.
    WatermarkSaved {
        /// The item.
        item: &'a str,
        /// The saved ordinal.
        ordinal: u64,
    },
}

/// Called at each [`Checkpoint`]; an `Err` stops the run right there, as a crash would (for
/// fault-injection tests and progress probes).
pub type CheckpointHook = Arc<dyn Fn(&Checkpoint<'_>) -> Result<(), String> + Send + Sync>;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source could not list its items.
    #[error("listing the source's items: {0}")]
    Source(#[source] io::Error),
    /// The watermark file could not be read or written.
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// The sink failed; the watermark did not move, so the records are sent again next run.
    #[error("the sink failed to write {records} record(s) of {item}: {error}")]
    Sink {
        /// The item the records came from.
        item: String,
        /// How many records the failed write held.
        records: usize,
        /// The sink's error.
        #[source]
        error: BoxError,
    },
    /// A [`CheckpointHook`] stopped the run.
    #[error("run stopped at a checkpoint: {0}")]
    Interrupted(String),
    /// The configuration is unusable.
    #[error("invalid pipeline configuration: {0}")]
    Config(String),
    /// A bug: a background reader panicked.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunReport {
    /// Items the source listed.
    pub items: u64,
    /// Items read (the others were unchanged since their last complete read).
    pub items_read: u64,
    /// Complete lines consumed, empty and malformed ones included.
    pub lines: u64,
    /// Records written to the sink.
    pub records: u64,
    /// Lines skipped because they were not JSON or too long.
    pub malformed: u64,
    /// Records dropped by a transform.
    pub dropped: u64,
    /// Records skipped because a transform failed on them.
    pub transform_errors: u64,
    /// Items found rewritten (a new generation, read from line 1).
    pub rewrites: u64,
    /// Whether every item was read from the start because a version or the namespace changed.
    pub resynced: bool,
    /// Secrets redacted by transforms, per kind.
    pub redactions: RedactionCounts,
    /// Items that could not be read this run, with the reason; the other items were read.
    pub item_errors: Vec<String>,
}

/// The pipeline's totals since it was opened, and how its last run went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// A run is in progress.
    pub running: bool,
    /// Runs finished, failed ones included.
    pub runs: u64,
    /// Runs that failed.
    pub failed_runs: u64,
    /// Records written.
    pub records: u64,
    /// Lines consumed.
    pub lines: u64,
    /// Malformed lines skipped.
    pub malformed: u64,
    /// Records dropped by transforms.
    pub dropped: u64,
    /// Records skipped because a transform failed.
    pub transform_errors: u64,
    /// Rewritten items seen.
    pub rewrites: u64,
    /// Full resyncs (version or namespace change, or [`Pipeline::force_resync`]).
    pub resyncs: u64,
    /// Secrets redacted, per kind.
    pub redactions: RedactionCounts,
    /// The last run's report (also for a failed run: what it did before failing).
    pub last_run: Option<RunReport>,
    /// The last run's error, or the last item error; cleared by a clean run.
    pub last_error: Option<String>,
}

impl PipelineStatus {
    fn absorb(&mut self, report: &RunReport, error: Option<String>) {
        self.runs += 1;
        self.records += report.records;
        self.lines += report.lines;
        self.malformed += report.malformed;
        self.dropped += report.dropped;
        self.transform_errors += report.transform_errors;
        self.rewrites += report.rewrites;
        self.resyncs += u64::from(report.resynced);
        self.redactions.merge(&report.redactions);
        if error.is_some() {
            self.failed_runs += 1;
        }
        self.last_error = error.or_else(|| report.item_errors.last().cloned());
        self.last_run = Some(report.clone());
    }
}

/// Source, transforms and sink with persisted watermarks. Cheap to clone; clones share one
/// pipeline, and runs never overlap (one writer).
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn Source>,
    transforms: Vec<Arc<dyn Transform>>,
    sink: Arc<dyn Sink>,
    config: PipelineConfig,
    /// Held for a whole run: the single-writer lock, and the watermarks as last saved.
    store: tokio::sync::Mutex<WatermarkStore>,
    status: watch::Sender<PipelineStatus>,
    hook: Option<CheckpointHook>,
}

impl Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("source", &self.source)
            .field("transforms", &self.transforms)
            .field("sink", &self.sink)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Assembles a [`Pipeline`].
pub struct PipelineBuilder {
    source: Arc<dyn Source>,
    sink: Arc<dyn Sink>,
    watermarks: PathBuf,
    transforms: Vec<Arc<dyn Transform>>,
    config: PipelineConfig,
    hook: Option<CheckpointHook>,
}

impl Debug for PipelineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("source", &self.source)
            .field("sink", &self.sink)
            .field("watermarks", &self.watermarks)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PipelineBuilder {
    /// Add a transform; transforms run in the order added.
    pub fn transform(mut self, transform: Arc<dyn Transform>) -> Self {
        self.transforms.push(transform);
        self
    }

    /// The settings; `PipelineConfig::default()` when not set.
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Call `hook` at each [`Checkpoint`] of every run.
    pub fn checkpoint_hook(mut self, hook: CheckpointHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Validate the settings and load the watermark file (a missing file means nothing was
    /// consumed yet). Blocking: reads one small file.
    pub fn open(self) -> Result<Pipeline, PipelineError> {
        let c = &self.config;
        if c.batch_records == 0 || c.batch_bytes == 0 || c.max_line_bytes == 0 {
            return Err(PipelineError::Config(
                "batch_records, batch_bytes and max_line_bytes must be greater than zero".into(),
            ));
        }
        let store = WatermarkStore::open(self.watermarks)?;
        Ok(Pipeline {
            inner: Arc::new(Inner {
                source: self.source,
                transforms: self.transforms,
                sink: self.sink,
                config: self.config,
                store: tokio::sync::Mutex::new(store),
                status: watch::channel(PipelineStatus::default()).0,
                hook: self.hook,
            }),
        })
    }
}

/// Marks the pipeline idle again however a run ends, a dropped (cancelled) run included.
struct RunningGuard<'a>(&'a watch::Sender<PipelineStatus>);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|s| s.running = false);
    }
}

/// An item-level failure (the run goes on with the next item) or a run-level one.
enum Failure {
    Item(String),
    Run(PipelineError),
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        Failure::Run(e)
    }
}

impl Pipeline {
    /// Start assembling a pipeline that reads `source`, writes `sink` and keeps its watermarks
    /// in the JSON file `watermarks`.
    pub fn builder(
        source: Arc<dyn Source>,
        sink: Arc<dyn Sink>,
        watermarks: impl Into<PathBuf>,
    ) -> PipelineBuilder {
        PipelineBuilder {
            source,
            sink,
            watermarks: watermarks.into(),
            transforms: Vec::new(),
            config: PipelineConfig::default(),
            hook: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &PipelineConfig {
        &self.inner.config
    }

    /// A snapshot of the totals and the last run.
    pub fn status(&self) -> PipelineStatus {
        self.inner.status.borrow().clone()
    }

    /// Watch the status change.
    pub fn subscribe(&self) -> watch::Receiver<PipelineStatus> {
        self.inner.status.subscribe()
    }

    /// The watermarks as last saved (waits for a running run to finish).
    pub async fn watermarks(&self) -> Option<WatermarkSet> {
        self.inner.store.lock().await.set().cloned()
    }

    /// Read every item from its watermark on, send the new records to the sink, and save the
    /// watermarks after each batch. Waits for a run in progress to finish first. An item that
    /// cannot be read is reported in [`RunReport::item_errors`] and the other items are still
    /// read; a sink or watermark failure ends the run with an error.
    pub async fn run(&self) -> Result<RunReport, PipelineError> {
        let mut store = self.inner.store.lock().await;
        self.inner.status.send_modify(|s| s.running = true);
        let _idle = RunningGuard(&self.inner.status);
        let mut report = RunReport::default();
        let result = self.run_locked(&mut store, &mut report).await;
        let error = result.as_ref().err().map(ToString::to_string);
        self.inner
            .status
            .send_modify(|s| s.absorb(&report, error.clone()));
        match result {
            Ok(()) => {
                debug!(
                    items = report.items,
                    records = report.records,
                    malformed = report.malformed,
                    "pipeline run finished"
                );
                Ok(report)
            }
            Err(e) => {
                warn!(error = %e, "pipeline run failed");
                Err(e)
            }
        }
    }

    /// Read every item again from line 1 on the next run, under the same record ids (each
    /// item keeps its generation): the sink drops what it holds and gets back what it lost.
    /// Saved at once, so it holds across a crash. To re-send in a new format, raise
    /// [`PipelineConfig::format_version`] instead.
    pub async fn force_resync(&self) -> Result<(), PipelineError> {
        let mut store = self.inner.store.lock().await;
        let mut set = self.current_set(&store);
        for mark in set.sources.values_mut() {
            *mark = Watermark {
                generation: mark.generation,
                ..start_of(0)
            };
        }
        self.save(&mut store, set).await?;
        self.inner.status.send_modify(|s| s.resyncs += 1);
        info!("pipeline watermarks reset; the next run reads everything again");
        Ok(())
    }

    /// The saved set if it was written under the running versions and namespace, else a new
    /// empty one.
    fn current_set(&self, store: &WatermarkStore) -> WatermarkSet {
        let c = &self.inner.config;
        match store.set() {
            Some(set)
                if set.pipeline_version == PIPELINE_FORMAT_VERSION
                    && set.format_version == c.format_version
                    && set.namespace == c.namespace =>
            {
                set.clone()
            }
            _ => WatermarkSet::new(PIPELINE_FORMAT_VERSION, c.format_version, &c.namespace),
        }
    }

    async fn save(
        &self,
        store: &mut WatermarkStore,
        set: WatermarkSet,
    ) -> Result<(), WatermarkError> {
        let mut next = store.clone();
        next.replace(set);
        let bytes = next.to_bytes()?;
        let path = next.path().to_path_buf();
        let written = blocking(move || write_atomic(&path, &bytes)).await;
        match written {
            Ok(Ok(())) => {
                // Memory follows the disk only once the file is written: a run cancelled in
                // between re-reads one batch, which the sink drops.
                *store = next;
                Ok(())
            }
            Ok(Err(source)) => Err(WatermarkError::Io {
                path: store.path().to_path_buf(),
                source,
            }),
            Err(e) => Err(WatermarkError::Io {
                path: store.path().to_path_buf(),
                source: io::Error::other(e.to_string()),
            }),
        }
    }

    async fn run_locked(
        &self,
        store: &mut WatermarkStore,
        report: &mut RunReport,
    ) -> Result<(), PipelineError> {
        let set = self.current_set(store);
        if store.set().is_some_and(|saved| saved != &set) {
            let saved = store.set().map(|s| (s.pipeline_version, s.format_version));
            info!(
                ?saved,
                running = ?(PIPELINE_FORMAT_VERSION, self.inner.config.format_version),
                "pipeline format or namespace changed; resyncing every item from line 1"
            );
            report.resynced = true;
            self.save(store, set).await?;
        } else if store.set().is_none() {
            self.save(store, set).await?;
        }
        let source = Arc::clone(&self.inner.source);
        let items = blocking(move || source.items())
            .await?
            .map_err(PipelineError::Source)?;
        for item in items {
            report.items += 1;
            match self.read_item(store, &item, report).await {
                Ok(()) => {}
                Err(Failure::Item(message)) => {
                    warn!(item = %item.id, error = %message, "item skipped this run");
                    report.item_errors.push(format!("{}: {message}", item.id));
                }
                Err(Failure::Run(e)) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read_item(
        &self,
        store: &mut WatermarkStore,
        item: &SourceItem,
        report: &mut RunReport,
    ) -> Result<(), Failure> {
        let c = &self.inner.config;
        let previous = store.get(&item.id).cloned();
        if c.skip_unchanged
            && let Some(mark) = &previous
            && item.size.is_some()
            && item.modified_ns.is_some()
            && mark.size == item.size
            && mark.modified_ns == item.modified_ns
        {
            return Ok(());
        }
        report.items_read += 1;
        let opened = {
            let source = Arc::clone(&self.inner.source);
            let item = item.clone();
            blocking(move || Cursor::open(&*source, &item, previous.as_ref())).await?
        };
        let mut cursor = opened.map_err(|e| Failure::Item(format!("cannot read: {e}")))?;
        if cursor.rewritten {
            report.rewrites += 1;
            info!(
                item = %item.id,
                generation = cursor.generation,
                "item was rewritten; reading its new generation from line 1"
            );
        }
        loop {
            let inner = Arc::clone(&self.inner);
            let item_id = item.id.clone();
            let (back, batch) = blocking(move || {
                let batch = cursor.read_batch(&inner.config).map(|lines| {
                    let built = build_records(&inner, &item_id, cursor.generation, lines);
                    (built, cursor.eof)
                });
                (cursor, batch)
            })
            .await?;
            cursor = back;
            let (built, eof) = batch.map_err(|e| Failure::Item(format!("read failed: {e}")))?;
            report.lines += built.lines;
            report.malformed += built.malformed;
            report.dropped += built.dropped;
            report.transform_errors += built.transform_errors;
            report.redactions.merge(&built.stats.redactions);
            if !built.records.is_empty() {
                let n = built.records.len();
                self.inner
                    .sink
                    .write(&built.records)
                    .await
                    .map_err(|error| PipelineError::Sink {
                        item: item.id.clone(),
                        records: n,
                        error,
                    })?;
                report.records += n as u64;
                self.checkpoint(&Checkpoint::SinkWritten {
                    item: &item.id,
                    records: n,
                    ordinal: cursor.ordinal,
                })?;
            }
            let mut mark = cursor.watermark();
            if eof {
                // Only a complete read lets the next run skip the item while it is unchanged.
                mark.size = item.size;
                mark.modified_ns = item.modified_ns;
            }
            if store.get(&item.id) != Some(&mark) {
                let mut set = self.current_set(store);
                set.sources.insert(item.id.clone(), mark);
                self.save(store, set).await.map_err(PipelineError::from)?;
                self.checkpoint(&Checkpoint::WatermarkSaved {
                    item: &item.id,
                    ordinal: cursor.ordinal,
                })?;
            }
            if eof {
                return Ok(());
            }
        }
    }

    fn checkpoint(&self, at: &Checkpoint<'_>) -> Result<(), PipelineError> {
        match &self.inner.hook {
            Some(hook) => hook(at).map_err(PipelineError::Interrupted),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl DaemonWork for Pipeline {
    async fn run(&self) -> Result<WorkReport, BoxError> {
        let report = Pipeline::run(self).await?;
        Ok(WorkReport {
            records: report.records,
            errors: report.malformed + report.transform_errors + report.item_errors.len() as u64,
        })
    }
}

/// Run blocking work (file I/O, hashing, parsing) off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PipelineError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PipelineError::Internal(format!("a background reader failed: {e}")))
}

/// The deterministic id of a record: `r-` and 32 hex digits of a SHA-256 over the namespace,
/// the item id, [`PIPELINE_FORMAT_VERSION`], the application's format version, the item's
/// generation, the line number and the line's bytes (without its line ending). The same line
/// read again gets the same id; anything that makes it a different record changes the id.
pub fn record_id(
    namespace: &str,
    item: &str,
    format_version: u32,
    generation: u64,
    ordinal: u64,
    line: &[u8],
) -> String {
    let line_hash = Sha256::digest(line);
    let mut h = Sha256::new();
    for part in [namespace.as_bytes(), item.as_bytes()] {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(PIPELINE_FORMAT_VERSION.to_be_bytes());
    h.update(format_version.to_be_bytes());
    h.update(generation.to_be_bytes());
    h.update(ordinal.to_be_bytes());
    h.update(line_hash);
    let digest = h.finalize();
    format!("r-{}", hex(digest.get(..16).unwrap_or_default()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// SHA-256 of nothing: the prefix hash of an item read from its start.
fn empty_sha256() -> String {
    hex(&Sha256::digest(b""))
}

fn start_of(generation: u64) -> Watermark {
    Watermark {
        generation,
        offset: 0,
        ordinal: 0,
        prefix_sha256: empty_sha256(),
        size: None,
        modified_ns: None,
    }
}

/// Feeds bytes written to it into a hash.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A complete line of an item.
enum Line {
    Text { ordinal: u64, bytes: Vec<u8> },
    TooLong { ordinal: u64, len: u64 },
}

/// Reading position in one item: what was consumed, and the hash of it.
struct Cursor {
    reader: BufReader<Box<dyn Read + Send>>,
    prefix: Sha256,
    offset: u64,
    ordinal: u64,
    generation: u64,
    rewritten: bool,
    eof: bool,
}

impl Cursor {
    /// Open `item` after its watermark: verify that the consumed prefix is unchanged, or start
    /// a new generation from the first byte when it is not.
    fn open(
        source: &dyn Source,
        item: &SourceItem,
        previous: Option<&Watermark>,
    ) -> io::Result<Self> {
        let mut reader = BufReader::with_capacity(64 << 10, source.open(item)?);
        let Some(mark) = previous else {
            return Ok(Cursor::fresh(reader, 0, false));
        };
        let mut prefix = Sha256::new();
        let copied = io::copy(
            &mut (&mut reader).take(mark.offset),
            &mut HashWriter(&mut prefix),
        )?;
        if copied == mark.offset && hex(&prefix.clone().finalize()) == mark.prefix_sha256 {
            return Ok(Cursor {
                reader,
                prefix,
                offset: mark.offset,
                ordinal: mark.ordinal,
                generation: mark.generation,
                rewritten: false,
                eof: false,
            });
        }
        let reader = BufReader::with_capacity(64 << 10, source.open(item)?);
        Ok(Cursor::fresh(reader, mark.generation + 1, true))
    }

    fn fresh(reader: BufReader<Box<dyn Read + Send>>, generation: u64, rewritten: bool) -> Self {
        Cursor {
            reader,
            prefix: Sha256::new(),
            offset: 0,
            ordinal: 0,
            generation,
            rewritten,
            eof: false,
        }
    }

    fn watermark(&self) -> Watermark {
        Watermark {
            generation: self.generation,
            offset: self.offset,
            ordinal: self.ordinal,
            prefix_sha256: hex(&self.prefix.clone().finalize()),
            size: None,
            modified_ns: None,
        }
    }

    /// The next complete lines, up to the batch limits; sets `eof` when the item has no more
    /// complete line.
    fn read_batch(&mut self, config: &PipelineConfig) -> io::Result<Vec<Line>> {
        let mut lines = Vec::new();
        let mut bytes = 0usize;
        while lines.len() < config.batch_records && bytes < config.batch_bytes {
            match self.next_line(config.max_line_bytes)? {
                Some(line) => {
                    bytes += match &line {
                        Line::Text { bytes, .. } => bytes.len(),
                        Line::TooLong { .. } => 0,
                    };
                    lines.push(line);
                }
                None => {
                    self.eof = true;
                    break;
                }
            }
        }
        Ok(lines)
    }

    /// The next line that ends in `\n`, or `None` at the end of the item. A last line without
    /// `\n` is left unconsumed: it may still be being written.
    fn next_line(&mut self, max_line: usize) -> io::Result<Option<Line>> {
        let mut hash = self.prefix.clone();
        let mut buf = Vec::new();
        let mut len = 0u64;
        let mut too_long = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(None);
            }
            let (take, complete) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (available.len(), false),
            };
            let chunk = &available[..take];
            hash.update(chunk);
            len += take as u64;
            if !too_long {
                // The limit counts the line without its `\n`.
                if buf.len() + take > max_line.saturating_add(1) {
                    too_long = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(chunk);
                }
            }
            self.reader.consume(take);
            if complete {
                break;
            }
        }
        self.prefix = hash;
        self.offset += len;
        self.ordinal += 1;
        if too_long {
            return Ok(Some(Line::TooLong {
                ordinal: self.ordinal,
                len,
            }));
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(Some(Line::Text {
            ordinal: self.ordinal,
            bytes: buf,
        }))
    }
}

/// Records of one batch, and what happened to the other lines.
#[derive(Default)]
struct Built {
    records: Vec<Record>,
    lines: u64,
    malformed: u64,
    dropped: u64,
    transform_errors: u64,
    stats: TransformStats,
}

fn build_records(inner: &Inner, item: &str, generation: u64, lines: Vec<Line>) -> Built {
    let c = &inner.config;
    let mut built = Built::default();
    'lines: for line in lines {
        built.lines += 1;
        let (ordinal, bytes) = match line {
            Line::TooLong { ordinal, len } => {
                built.malformed += 1;
                warn!(
                    item,
                    line = ordinal,
                    bytes = len,
                    limit = c.max_line_bytes,
                    "line is longer than the limit; skipped"
                );
                continue;
            }
            Line::Text { ordinal, bytes } => (ordinal, bytes),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value = match c.line_format {
            LineFormat::JsonLines => match serde_json::from_slice::<Value>(&bytes) {
                Ok(value) => value,
                Err(e) => {
                    built.malformed += 1;
                    warn!(item, line = ordinal, error = %e, "line is not JSON; skipped");
                    continue;
                }
            },
            LineFormat::Text => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
        };
        let mut record = Record {
            id: record_id(
                &c.namespace,
                item,
                c.format_version,
                generation,
                ordinal,
                &bytes,
            ),
            source: item.to_owned(),
            generation,
            ordinal,
            value,
        };
        for transform in &inner.transforms {
            record = match transform.apply(record, &mut built.stats) {
                Ok(Some(record)) => record,
                Ok(None) => {
                    built.dropped += 1;
                    continue 'lines;
                }
                Err(e) => {
                    built.transform_errors += 1;
                    warn!(
                        item,
                        line = ordinal,
                        transform = transform.name(),
                        error = %e,
                        "transform failed; record skipped"
                    );
                    continue 'lines;
                }
            };
        }
        built.records.push(record);
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_deterministic_and_separate_every_input() {
        let base = record_id("ns", "a.jsonl", 1, 0, 1, b"{}");
        assert_eq!(base, record_id("ns", "a.jsonl", 1, 0, 1, b"{}"));
        assert!(base.starts_with("r-") && base.len() == 34, "{base}");
        let others = [
            record_id("ns2", "a.jsonl", 1, 0, 1, b"{}"),
            record_id("ns", "b.jsonl", 1, 0, 1, b"{}"),
            record_id("ns", "a.jsonl", 2, 0, 1, b"{}"),
            record_id("ns", "a.jsonl", 1, 1, 1, b"{}"),
            record_id("ns", "a.jsonl", 1, 0, 2, b"{}"),
            record_id("ns", "a.jsonl", 1, 0, 1, b"[]"),
            record_id("n", "sa.jsonl", 1, 0, 1, b"{}"),
        ];
        let distinct: HashSet<_> = others.iter().chain([&base]).collect();
        assert_eq!(distinct.len(), others.len() + 1);
    }

    struct Bytes(Vec<u8>);

    impl Debug for Bytes {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Bytes({})", self.0.len())
        }
    }

    impl Source for Bytes {
        fn items(&self) -> io::Result<Vec<SourceItem>> {
            Ok(vec![SourceItem {
                id: "x".into(),
                size: None,
                modified_ns: None,
            }])
        }
        fn open(&self, _: &SourceItem) -> io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(io::Cursor::new(self.0.clone())))
        }
    }

    fn lines_of(bytes: &[u8], config: &PipelineConfig) -> (Vec<String>, Cursor) {
        let source = Bytes(bytes.to_vec());
        let item = source.items().unwrap().remove(0);
        let mut cursor = Cursor::open(&source, &item, None).unwrap();
        let mut out = Vec::new();
        while !cursor.eof {
            for line in cursor.read_batch(config).unwrap() {
                out.push(match line {
                    Line::Text { ordinal, bytes } => {
                        format!("{ordinal}:{}", String::from_utf8(bytes).unwrap())
                    }
                    Line::TooLong { ordinal, len } => format!("{ordinal}:too long ({len})"),
                });
            }
        }
        (out, cursor)
    }

    #[test]
    fn only_terminated_lines_are_consumed() {
        let config = PipelineConfig {
            batch_records: 2,
            max_line_bytes: 5,
            ..PipelineConfig::default()
        };
        let (lines, cursor) = lines_of(b"a\r\n\nabcde\nabcdef\nxyz\npartial", &config);
        assert_eq!(lines, ["1:a", "2:", "3:abcde", "4:too long (7)", "5:xyz"]);
        assert_eq!(cursor.ordinal, 5);
        assert_eq!(cursor.offset, 21);
        assert_eq!(
            cursor.watermark().prefix_sha256,
            hex(&Sha256::digest(b"a\r\n\nabcde\nabcdef\nxyz\n"))
        );
    }

    #[test]
    fn a_watermark_resumes_or_detects_a_rewrite() {
        let config = PipelineConfig::default();
        let (_, cursor) = lines_of(b"one\ntwo\n", &config);
        let mark = cursor.watermark();
        let item = Bytes(vec![]).items().unwrap().remove(0);

        let grown = Bytes(b"one\ntwo\nthree\n".to_vec());
        let mut resumed = Cursor::open(&grown, &item, Some(&mark)).unwrap();
        assert!(!resumed.rewritten);
        let lines = resumed.read_batch(&config).unwrap();
        assert!(matches!(&lines[..], [Line::Text { ordinal: 3, bytes }] if bytes == b"three"));

        for rewritten in [&b"one\n"[..], b"uno\ntwo\nthree\n"] {
            let source = Bytes(rewritten.to_vec());
            let cursor = Cursor::open(&source, &item, Some(&mark)).unwrap();
            assert!(cursor.rewritten);
            assert_eq!((cursor.generation, cursor.offset), (1, 0));
        }
    }
}
