//! Hot reload: a resolver that follows a rules file, swapping in each valid new version
//! atomically and keeping the old rule set, with a report, when a new version is invalid.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use synckit_types::{Conflict, ConflictResolver, Resolution, ResolutionContext, Result};

use crate::config::{RulesLoader, read_file};
use crate::engine::CompositeResolver;
use crate::error::{RulesError, RulesErrorKind};

/// The default quiet period after a file event before the file is read again.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// What a reload did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ReloadReport {
    /// The new version is valid and now in use.
    Reloaded {
        /// The rules file.
        path: PathBuf,
        /// The rule set's `name`.
        name: String,
        /// How many rules it holds.
        rules: usize,
    },
    /// The new version was refused; the previous rule set stays in use.
    Rejected {
        /// The rules file.
        path: PathBuf,
        /// Why, with the file position when there is one.
        error: Arc<RulesError>,
    },
}

type ReportFn = dyn Fn(&ReloadReport) + Send + Sync;

struct Shared {
    current: ArcSwap<CompositeResolver>,
    loader: RulesLoader,
    path: PathBuf,
    on_report: Option<Arc<ReportFn>>,
    /// Held across read, build and swap, so reloads never interleave; holds the text last
    /// tried (valid or not), so repeated file events for one save are reported once.
    last_text: Mutex<Option<String>>,
}

impl Shared {
    /// Read the file and swap in its rule set when valid. `None` when the text is the one
    /// last tried and `force` is false.
    fn reload(&self, force: bool) -> Option<ReloadReport> {
        let report = {
            let mut last = self
                .last_text
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match read_file(&self.path) {
                Err(error) => {
                    *last = None;
                    self.rejected(error)
                }
                Ok((text, format)) => {
                    if !force && last.as_deref() == Some(text.as_str()) {
                        return None;
                    }
                    let built = self
                        .loader
                        .load_str(&text, format)
                        .map_err(|e| e.in_file(&self.path));
                    *last = Some(text);
                    match built {
                        Ok(resolver) => {
                            let report = ReloadReport::Reloaded {
                                path: self.path.clone(),
                                name: resolver.name().to_owned(),
                                rules: resolver.rule_names().len(),
                            };
                            self.current.store(Arc::new(resolver));
                            report
                        }
                        Err(error) => self.rejected(error),
                    }
                }
            }
        };
        match &report {
            ReloadReport::Reloaded { path, name, rules } => {
                tracing::info!(path = %path.display(), %name, rules, "rules reloaded");
            }
            ReloadReport::Rejected { path, error } => {
                tracing::warn!(path = %path.display(), %error, "rules file rejected; the previous rules stay in use");
            }
        }
        if let Some(on_report) = &self.on_report {
            on_report(&report);
        }
        Some(report)
    }

    fn rejected(&self, error: RulesError) -> ReloadReport {
        ReloadReport::Rejected {
            path: self.path.clone(),
            error: Arc::new(error),
        }
    }
}

/// The file watcher and the thread that reloads after each burst of events.
struct Watching {
    watcher: RecommendedWatcher,
    worker: JoinHandle<()>,
}

/// A resolver that follows a rules file.
///
/// Each resolution uses one complete rule set, taken atomically when it starts: a reload that
/// happens meanwhile affects only later resolutions. When watching, a file system watcher
/// (the `notify` crate; inotify on Linux) on the file's directory triggers a reload after
/// [`debounce`](ReloadingResolverBuilder::debounce) of quiet, so that a save written in
/// several steps is read once. A valid new version replaces the rule set; an invalid one
/// (or an unreadable file) keeps the previous one. Either way the outcome is logged through
/// `tracing` and given to the [`on_report`](ReloadingResolverBuilder::on_report) callback;
/// saving the same text again reports nothing.
///
/// Watching runs a `notify` thread and one reload thread; both stop when the resolver is
/// dropped or [`stop_watching`](Self::stop_watching) is called. Editors that save by writing
/// a temporary file and renaming it over the rules file are followed, since the directory is
/// watched rather than the file.
pub struct ReloadingResolver {
    shared: Arc<Shared>,
    watching: Mutex<Option<Watching>>,
}

/// Builds a [`ReloadingResolver`].
pub struct ReloadingResolverBuilder {
    loader: RulesLoader,
    path: PathBuf,
    on_report: Option<Arc<ReportFn>>,
    debounce: Duration,
    watch: bool,
}

impl ReloadingResolverBuilder {
    /// Call `callback` with every reload's outcome (from the reload thread when watching).
    /// Keep it short; it may forward to a channel.
    pub fn on_report(mut self, callback: impl Fn(&ReloadReport) + Send + Sync + 'static) -> Self {
        self.on_report = Some(Arc::new(callback));
        self
    }

    /// The quiet period after a file event before reading the file (default
    /// [`DEFAULT_DEBOUNCE`]).
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Whether to watch the file (default true). Without watching, only
    /// [`reload`](ReloadingResolver::reload) reads it again.
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// Load the file (it must be valid now) and start watching it.
    pub fn build(self) -> Result<ReloadingResolver, RulesError> {
        let (text, format) = read_file(&self.path)?;
        let resolver = self
            .loader
            .load_str(&text, format)
            .map_err(|e| e.in_file(&self.path))?;
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(resolver),
            loader: self.loader,
            path: self.path,
            on_report: self.on_report,
            last_text: Mutex::new(Some(text)),
        });
        let watching = if self.watch {
            Some(watch(&shared, self.debounce)?)
        } else {
            None
        };
        Ok(ReloadingResolver {
            shared,
            watching: Mutex::new(watching),
        })
    }
}

fn watch(shared: &Arc<Shared>, debounce: Duration) -> Result<Watching, RulesError> {
    let path = &shared.path;
    let failed = |what: &str, e: &dyn fmt::Display| {
        RulesError::new(
            RulesErrorKind::Io,
            format!("cannot watch the rules file: {what}: {e}"),
        )
        .in_file(path)
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| failed("no file name", &"the path ends in '..' or '/'"))?
        .to_owned();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                // Opening and reading the file (our own reloads included) changes nothing.
                let read_only = matches!(
                    event.kind,
                    EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write)
                );
                if !read_only
                    && event
                        .paths
                        .iter()
                        .any(|p| p.file_name() == Some(file_name.as_os_str()))
                {
                    let _ = tx.send(());
                }
            }
            Err(error) => tracing::warn!(%error, "watching the rules file failed"),
        }
    })
    .map_err(|e| failed("starting the watcher", &e))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| failed(&dir.display().to_string(), &e))?;
    let worker_shared = Arc::clone(shared);
    let worker = std::thread::Builder::new()
        .name("synckit-rules-reload".to_owned())
        .spawn(move || {
            // Ends when the watcher, and with it the sender, is dropped.
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                worker_shared.reload(false);
            }
        })
        .map_err(|e| failed("starting the reload thread", &e))?;
    Ok(Watching { watcher, worker })
}

impl ReloadingResolver {
    /// Start building a resolver that follows the file at `path` (`.yaml`, `.yml` or `.json`),
    /// compiled by `loader`.
    pub fn builder(loader: RulesLoader, path: impl Into<PathBuf>) -> ReloadingResolverBuilder {
        ReloadingResolverBuilder {
            loader,
            path: path.into(),
            on_report: None,
            debounce: DEFAULT_DEBOUNCE,
            watch: true,
        }
    }

    /// The rule set in use now.
    pub fn current(&self) -> Arc<CompositeResolver> {
        self.shared.current.load_full()
    }

    /// The rules file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Read the file now and swap in its rule set when valid (even when the text did not
    /// change); the report also goes to the callback.
    pub fn reload(&self) -> ReloadReport {
        match self.shared.reload(true) {
            Some(report) => report,
            // Unreachable with force = true; answer honestly all the same.
            None => ReloadReport::Reloaded {
                path: self.shared.path.clone(),
                name: self.current().name().to_owned(),
                rules: self.current().rule_names().len(),
            },
        }
    }

    /// Whether the file is being watched.
    pub fn is_watching(&self) -> bool {
        self.watching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Stop watching and wait for the reload thread to finish. Must not be called from the
    /// report callback.
    pub fn stop_watching(&self) {
        let watching = self
            .watching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Watching { watcher, worker }) = watching {
            drop(watcher);
            if worker.join().is_err() {
                tracing::warn!("the rules reload thread panicked");
            }
        }
    }
}

impl fmt::Debug for ReloadingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolver")
            .field("path", &self.shared.path)
            .field("watching", &self.is_watching())
            .field("current", &self.current().name())
            .finish()
    }
}

impl fmt::Debug for ReloadingResolverBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingResolverBuilder")
            .field("path", &self.path)
            .field("debounce", &self.debounce)
            .field("watch", &self.watch)
            .finish()
    }
}

#[async_trait]
impl ConflictResolver for ReloadingResolver {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> Result<Resolution> {
        let current = self.shared.current.load_full();
        current.resolve(conflict, context).await
    }
}
