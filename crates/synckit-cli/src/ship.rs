//! `synckit ship`: ship the JSON-lines files of a directory to a hub as events, with secrets
//! redacted, through a local node; once (`--once`) or as a daemon until SIGINT/SIGTERM.
//!
//! Each new line of a `*.jsonl` file becomes one event: kind `--kind` (default `LogLine`),
//! aggregate = the file name, data = the parsed line with secrets redacted, metadata = file,
//! line number and generation. Event ids are the pipeline's deterministic record ids under the
//! node's id as namespace, so a line sent again after a crash is the same event, which the node
//! and the hub keep once. Watermarks live beside the node (`ship-watermarks.json` in the data
//! directory, or `--state FILE`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_trait::async_trait;
use clap::Args;
use serde_json::json;
use synckit::{
    BoxError, Config, DynTransport, ErrorKind, Event, EventBuilder, Hlc, Node, NodeStore, Seq,
    SledStore,
};
use synckit_coordinator::{
    Daemon, DaemonConfig, DaemonWork, DirSource, Pipeline, PipelineConfig, Record, Redactor,
    RunReport, Sink, WorkReport, record_id,
};

use crate::config::NodeFile;
use crate::serve::shutdown_signal;

/// Version of how `ship` turns lines into events (kind, aggregate, data, metadata). Raising it
/// makes every file ship again from line 1, under new event ids.
const SHIP_FORMAT_VERSION: u32 = 1;

/// The extension of the files shipped.
const EXTENSION: &str = "jsonl";

/// Options of `synckit ship`.
#[derive(Debug, Args)]
pub struct ShipArgs {
    /// The directory whose `*.jsonl` files are shipped (not its subdirectories).
    #[arg(long, value_name = "DIR")]
    watch: PathBuf,
    /// The hub, e.g. http://127.0.0.1:7700.
    #[arg(long, value_name = "URL")]
    hub: Option<String>,
    /// Bearer token for the hub.
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Trust the certificate authorities in this PEM file for an https hub.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The node's data directory (default ./synckit-node).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// The event kind of shipped lines.
    #[arg(long, default_value = "LogLine")]
    kind: String,
    /// The watermark file (default: ship-watermarks.json in the data directory).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Ship what is new once, push it, and exit.
    #[arg(long)]
    once: bool,
    /// Quiet time after a file change before a pass starts, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    debounce_ms: u64,
    /// How often to rescan the directory for changes the file watcher missed, in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    rescan_secs: u64,
    /// Print each pass as a JSON line.
    #[arg(long)]
    json: bool,
}

/// Writes records into the node's outbox as events, keeping one copy per id.
#[derive(Debug)]
struct NodeSink {
    node: Node,
    kind: String,
}

impl NodeSink {
    fn event(&self, record: &Record) -> EventBuilder {
        Event::builder(self.kind.clone(), aggregate_for(&record.source))
            .id(record.id.clone())
            .data(record.value.clone())
            .metadata("file", json!(record.source))
            .metadata("line", json!(record.ordinal))
            .metadata("generation", json!(record.generation))
            // An append-only stream: no concurrency check, so lines never conflict.
            .unchecked()
    }

    /// Which of `records` the node already holds, pending or confirmed. Reads the whole outbox
    /// and confirmed log page by page: only needed after a crash, so cost beats bookkeeping.
    async fn known(&self, records: &[Record]) -> Result<HashSet<String>, BoxError> {
        let wanted: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let store = self.node.store();
        let mut known = HashSet::new();
        let mut after = 0;
        loop {
            let page = store.pending(after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = last.ordinal;
            known.extend(
                page.iter()
                    .map(|p| p.event.id.as_str())
                    .filter(|id| wanted.contains(id))
                    .map(str::to_owned),
            );
        }
        let mut after = Seq::ZERO;
        loop {
            let page = store.confirmed(after, 1_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            known.extend(
                page.iter()
                    .map(|e| e.event.id.as_str())
                    .filter(|id| wanted.contains(id))
                    .map(str::to_owned),
            );
        }
        Ok(known)
    }
}

#[async_trait]
impl Sink for NodeSink {
    async fn write(&self, records: &[Record]) -> Result<(), BoxError> {
        let events = records.iter().map(|r| self.event(r)).collect();
        match self.node.append_batch(events).await {
            Ok(_) => Ok(()),
            // Some ids are already in the node: a replay after a crash between this append and
            // the watermark save. Append only the others; the rest is the same event.
            Err(e) if e.kind() == ErrorKind::Conflict => {
                let known = self.known(records).await?;
                let rest: Vec<EventBuilder> = records
                    .iter()
                    .filter(|r| !known.contains(&r.id))
                    .map(|r| self.event(r))
                    .collect();
                if rest.len() == records.len() {
                    return Err(e.into());
                }
                if !rest.is_empty() {
                    self.node.append_batch(rest).await?;
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The aggregate id of a file: its name, made valid (1 to 128 bytes, no control characters).
fn aggregate_for(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if clean.len() <= synckit::MAX_ID_LEN {
        return clean;
    }
    // Too long: a prefix plus a stable hash of the whole name keeps long names apart.
    let mut end = 90;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let hash = record_id("", name, 0, 0, 0, b"");
    format!("{}~{hash}", &clean[..end])
}

/// One pass: read what is new into the outbox, then push the outbox.
#[derive(Debug)]
struct Shipper {
    node: Node,
    pipeline: Pipeline,
    json: bool,
    /// Print nothing for a pass that found nothing (daemon mode: reruns on unrelated changes).
    quiet_when_idle: bool,
}

impl Shipper {
    async fn pass(&self) -> anyhow::Result<RunReport> {
        let report = self.pipeline.run().await?;
        let pushed = self.push().await;
        // The lines are safe in the outbox even when the push failed: say what was read.
        self.print(&report, *pushed.as_ref().unwrap_or(&0))?;
        pushed?;
        Ok(report)
    }

    /// Push whatever waits in the outbox, also what an earlier failed pass left there.
    async fn push(&self) -> anyhow::Result<u64> {
        if self.node.status().await?.pending == 0 {
            return Ok(0);
        }
        let result = self.node.push().await.context("pushing to the hub")?;
        for e in &result.errors {
            eprintln!("warning: {}: {}", e.code, e.message);
        }
        Ok(result.pushed)
    }

    fn print(&self, report: &RunReport, pushed: u64) -> anyhow::Result<()> {
        let idle = report.records == 0
            && pushed == 0
            && report.malformed == 0
            && report.item_errors.is_empty();
        if idle && self.quiet_when_idle {
            return Ok(());
        }
        if self.json {
            println!(
                "{}",
                json!({
                    "files": report.items,
                    "files_read": report.items_read,
                    "lines": report.lines,
                    "shipped": report.records,
                    "pushed": pushed,
                    "malformed": report.malformed,
                    "rewritten_files": report.rewrites,
                    "resynced": report.resynced,
                    "redactions": report.redactions,
                    "file_errors": report.item_errors,
                })
            );
            return Ok(());
        }
        let mut line = format!(
            "shipped {} new line(s) from {} file(s), pushed {pushed} event(s)",
            report.records, report.items
        );
        if !report.redactions.is_empty() {
            line.push_str(&format!(
                "; redacted {} secret(s) ({})",
                report.redactions.total(),
                report.redactions
            ));
        }
        if report.malformed > 0 {
            line.push_str(&format!("; skipped {} malformed line(s)", report.malformed));
        }
        if report.rewrites > 0 {
            line.push_str(&format!(
                "; {} rewritten file(s) shipped again from line 1",
                report.rewrites
            ));
        }
        println!("{line}");
        for e in &report.item_errors {
            eprintln!("warning: {e}");
        }
        Ok(())
    }
}

#[async_trait]
impl DaemonWork for Shipper {
    async fn run(&self) -> Result<WorkReport, BoxError> {
        let report = self.pass().await.map_err(|e| format!("{e:#}"))?;
        Ok(WorkReport {
            records: report.records,
            errors: report.malformed + report.item_errors.len() as u64,
        })
    }
}

async fn open_node(args: &ShipArgs, file: &NodeFile) -> anyhow::Result<(Node, PathBuf)> {
    let dir = args
        .data
        .clone()
        .or_else(|| file.data.clone())
        .unwrap_or_else(|| PathBuf::from("./synckit-node"));
    let url = args
        .hub
        .clone()
        .or_else(|| file.hub.clone())
        .context("ship needs --hub URL (or hub in the config file)")?;
    let token = args.token.clone().or_else(|| file.token.clone());
    let store = Arc::new(
        SledStore::open(&dir)
            .with_context(|| format!("opening the node store in {}", dir.display()))?,
    );
    let ca_file = args.ca_file.clone().or_else(|| file.ca_file.clone());
    let transport: DynTransport =
        Arc::new(crate::node_cmd::http_transport(url, token, ca_file, file)?);
    let mut config = Config::default();
    if let Some(n) = file.batch_size {
        config.batch_size = n;
    }
    let node = Node::builder()
        .store(store)
        .transport(transport)
        .config(config)
        .open()
        .await?;
    Ok((node, dir))
}

fn check_kind(kind: &str) -> anyhow::Result<()> {
    Event::builder(kind, "check")
        .origin("check")
        .hlc(Hlc::default())
        .build()
        .map(drop)
        .with_context(|| format!("--kind {kind:?} is not a valid event kind"))
}

fn is_shipped(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == EXTENSION)
}

pub async fn run(args: ShipArgs, file: NodeFile) -> anyhow::Result<()> {
    check_kind(&args.kind)?;
    if !args.watch.is_dir() {
        bail!("--watch {} is not a directory", args.watch.display());
    }
    let (node, data) = open_node(&args, &file).await?;
    let outcome = ship(&args, &node, &data).await;
    let closed = node.close().await;
    outcome?;
    closed?;
    Ok(())
}

async fn ship(args: &ShipArgs, node: &Node, data: &Path) -> anyhow::Result<()> {
    let state = args
        .state
        .clone()
        .unwrap_or_else(|| data.join("ship-watermarks.json"));
    let sink = Arc::new(NodeSink {
        node: node.clone(),
        kind: args.kind.clone(),
    });
    let pipeline = Pipeline::builder(
        Arc::new(DirSource::new(&args.watch).extension(EXTENSION)),
        sink,
        &state,
    )
    .transform(Arc::new(Redactor::new()))
    .config(PipelineConfig {
        // Unique per node, stable across restarts: two machines shipping `app.jsonl` never
        // produce the same event ids.
        namespace: node.id().to_string(),
        format_version: SHIP_FORMAT_VERSION,
        ..PipelineConfig::default()
    })
    .open()?;
    let shipper = Arc::new(Shipper {
        node: node.clone(),
        pipeline,
        json: args.json,
        quiet_when_idle: !args.once,
    });
    if args.once {
        shipper.pass().await?;
        return Ok(());
    }
    let debounce = Duration::from_millis(args.debounce_ms);
    let config = DaemonConfig {
        debounce,
        max_delay: debounce.max(Duration::from_secs(10)),
        reconcile_interval: (args.rescan_secs > 0).then(|| Duration::from_secs(args.rescan_secs)),
        ..DaemonConfig::default()
    };
    let daemon = Daemon::builder(shipper)
        .config(config)
        .path(&args.watch, false)
        .filter(is_shipped)
        .start()?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing the pass in progress (signal again to stop now)");
    tokio::select! {
        status = daemon.stop() => tracing::info!(
            passes = status.runs,
            shipped = status.records,
            failures = status.failures,
            "ship stopped"
        ),
        // Dropping the daemon cancels the pass: safe, its lines are shipped again next time
        // under the same ids.
        () = shutdown_signal() => tracing::warn!("stopped during a pass"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_ids_are_valid_for_any_file_name() {
        assert_eq!(aggregate_for("app.jsonl"), "app.jsonl");
        assert_eq!(aggregate_for("a\nb.jsonl"), "a\u{fffd}b.jsonl");
        let long = format!("{}.jsonl", "é".repeat(100));
        let other = format!("{}x.jsonl", "é".repeat(100));
        let (a, b) = (aggregate_for(&long), aggregate_for(&other));
        assert!(a.len() <= synckit::MAX_ID_LEN, "{}", a.len());
        assert_ne!(a, b);
        assert_eq!(a, aggregate_for(&long));
    }
}
