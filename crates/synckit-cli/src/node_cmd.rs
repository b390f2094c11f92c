//! The node commands: append, sync/push/pull, log, status, watch, conflicts, audit.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use offline::OfflineTransport;
use serde_json::{Value, json};
use synckit::resolve::audit::{self, AuditFilter, Dependency};
use synckit::resolve::{ReloadingResolver, RulesLoader, StrategyRegistry};
use synckit::{
    AggregateId, AuditRecord, Config, DynResolver, DynTransport, Event, HttpConfig, HttpTransport,
    Node, NodeStoreExt, ReviewChoice, SledStore, SyncResult,
};

use crate::config::NodeFile;

/// Options every node command shares.
#[derive(Debug, Args)]
pub struct NodeOptions {
    /// The node's data directory (default ./synckit-node).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

/// Options of `synckit append`.
#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    node: NodeOptions,
    /// The aggregate (entity) the event belongs to.
    #[arg(long)]
    aggregate: String,
    /// The event kind, e.g. TaskRenamed.
    #[arg(long)]
    kind: String,
    /// The JSON payload (default null).
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Expect the aggregate at exactly this version (default: the node's local head).
    #[arg(long, value_name = "N", conflicts_with = "no_expect")]
    expect: Option<u64>,
    /// No concurrency check (append-only streams).
    #[arg(long)]
    no_expect: bool,
    /// Append this many events at once (one id per line), e.g. to seed test data.
    #[arg(long, value_name = "N", default_value_t = 1)]
    repeat: usize,
}

/// Options of `synckit sync`, `push` and `pull`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    node: NodeOptions,
    #[command(flatten)]
    hub: HubOptions,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// How to reach the hub.
#[derive(Debug, Args)]
pub struct HubOptions {
    /// The hub, e.g. http://127.0.0.1:7700.
    #[arg(long, value_name = "URL")]
    hub: Option<String>,
    /// Bearer token for the hub.
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Trust the certificate authorities in this PEM file for an https hub.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Conflict resolver: lww (default), fww, merge or review.
    #[arg(long, value_name = "NAME", conflicts_with = "rules")]
    resolver: Option<String>,
    /// Decide conflicts by this YAML or JSON rules file (see synckit-resolve's RULES.md);
    /// `watch` reloads it when it changes.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
}

/// Options of `synckit log` and `synckit status`.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    node: NodeOptions,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Options of `synckit watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    node: NodeOptions,
    #[command(flatten)]
    hub: HubOptions,
    /// Print each sync result as a JSON line.
    #[arg(long)]
    json: bool,
}

/// `synckit conflicts ...`.
#[derive(Debug, Subcommand)]
pub enum ConflictsCommand {
    /// List parked conflicts.
    List(LogArgs),
    /// Decide a parked conflict.
    Resolve(ResolveArgs),
}

/// Options of `synckit conflicts resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    node: NodeOptions,
    /// The review entry id (see `synckit conflicts list`).
    id: String,
    /// Keep the local events (they sync next) or the remote ones (the local ones are dropped).
    #[arg(long, value_parser = ["local", "remote"])]
    keep: String,
}

/// Options of `synckit audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    node: NodeOptions,
    /// Only decisions about this aggregate.
    #[arg(long, value_name = "ID")]
    aggregate: Option<String>,
    /// Only decisions by this rule (full `group.rule` name).
    #[arg(long, value_name = "NAME")]
    rule: Option<String>,
    /// Only decisions in this rule group or its subgroups.
    #[arg(long, value_name = "PATH")]
    group: Option<String>,
    /// Only decisions at or after this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    since: Option<u64>,
    /// Only decisions before this time (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS")]
    until: Option<u64>,
    /// Start after this decision id (the `next` of a previous page).
    #[arg(long, value_name = "ID")]
    after: Option<String>,
    /// At most this many decisions (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    limit: usize,
    /// Instead of listing, show which later decisions depend on this one (rollback analysis).
    #[arg(long, value_name = "ID", conflicts_with_all = ["aggregate", "rule", "group", "since", "until", "after"])]
    dependents: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Which way a sync goes.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    Both,
    Push,
    Pull,
}

mod offline {
    //! A transport for commands that never talk to the hub.
    use synckit::{
        AppendReport, Error, Event, Page, ReadRequest, Result, Seq, Subscription, Transport,
    };

    #[derive(Debug)]
    pub struct OfflineTransport;

    fn offline() -> Error {
        Error::config("this command needs --hub URL")
    }

    #[async_trait::async_trait]
    impl Transport for OfflineTransport {
        async fn push(&self, _: &[Event]) -> Result<AppendReport> {
            Err(offline())
        }
        async fn pull(&self, _: &ReadRequest) -> Result<Page> {
            Err(offline())
        }
        async fn head(&self) -> Result<Seq> {
            Err(offline())
        }
        async fn subscribe(&self, _: Seq) -> Result<Subscription> {
            Err(offline())
        }
    }
}

fn data_dir(options: &NodeOptions, file: &NodeFile) -> PathBuf {
    options
        .data
        .clone()
        .or_else(|| file.data.clone())
        .unwrap_or_else(|| PathBuf::from("./synckit-node"))
}

/// The HTTP transport to `url`, trusting the extra authorities of `ca_file` for https, with
/// the request deadline of the config file.
pub(crate) fn http_transport(
    url: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    file: &NodeFile,
) -> anyhow::Result<HttpTransport> {
    let defaults = HttpConfig::new(url, token);
    let config = HttpConfig {
        ca_file,
        request_timeout: file
            .request_timeout_ms
            .map_or(defaults.request_timeout, std::time::Duration::from_millis),
        ..defaults
    };
    Ok(HttpTransport::with_config(config)?)
}

async fn open(
    options: &NodeOptions,
    hub: Option<&HubOptions>,
    file: &NodeFile,
) -> anyhow::Result<Node> {
    open_with(options, hub, file, false).await
}

/// [`open`], following the rules file for changes when `follow_rules`.
async fn open_with(
    options: &NodeOptions,
    hub: Option<&HubOptions>,
    file: &NodeFile,
    follow_rules: bool,
) -> anyhow::Result<Node> {
    let dir = data_dir(options, file);
    let store = Arc::new(
        SledStore::open(&dir)
            .with_context(|| format!("opening the node store in {}", dir.display()))?,
    );
    let transport: DynTransport = match hub {
        Some(h) => {
            let url = h
                .hub
                .clone()
                .or_else(|| file.hub.clone())
                .context("this command needs --hub URL (or hub in the config file)")?;
            let token = h.token.clone().or_else(|| file.token.clone());
            let ca_file = h.ca_file.clone().or_else(|| file.ca_file.clone());
            Arc::new(http_transport(url, token, ca_file, file)?)
        }
        None => Arc::new(OfflineTransport),
    };
    let resolver = resolver(hub, file, follow_rules)?;
    let mut config = Config {
        origin: Some("cli".to_owned()),
        ..Config::default()
    };
    if let Some(n) = file.batch_size {
        config.batch_size = n;
    }
    if let Some(n) = file.page_size {
        config.page_size = n;
    }
    Ok(Node::builder()
        .store(store)
        .transport(transport)
        .resolver(resolver)
        .config(config)
        .open()
        .await?)
}

/// The resolver the options name: a rules file (reloaded on change when `follow`), or a
/// built-in strategy (lww by default).
fn resolver(
    hub: Option<&HubOptions>,
    file: &NodeFile,
    follow: bool,
) -> anyhow::Result<DynResolver> {
    let rules = hub.and_then(|h| h.rules.clone()).or_else(|| {
        // A resolver named on the command line wins over rules named in the file.
        hub.and_then(|h| h.resolver.as_ref())
            .is_none()
            .then(|| file.rules.clone())
            .flatten()
    });
    if let Some(path) = rules {
        let loader = RulesLoader::new(StrategyRegistry::new());
        if follow {
            // Reloads are logged by the resolver: a refused version at warn level.
            let reloading = ReloadingResolver::builder(loader, &path).build()?;
            return Ok(Arc::new(reloading));
        }
        return Ok(Arc::new(loader.load_file(&path)?));
    }
    let name = hub
        .and_then(|h| h.resolver.clone())
        .or_else(|| file.resolver.clone())
        .unwrap_or_else(|| "lww".to_owned());
    Ok(synckit::resolve::by_name(&name)?)
}

pub async fn append(args: AppendArgs, file: NodeFile) -> anyhow::Result<()> {
    let node = open(&args.node, None, &file).await?;
    let data: Value = match &args.payload {
        Some(text) => {
            serde_json::from_str(text).with_context(|| format!("--payload is not JSON: {text}"))?
        }
        None => Value::Null,
    };
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let builders = (0..args.repeat)
        .map(|_| {
            let builder =
                Event::builder(args.kind.clone(), args.aggregate.clone()).data(data.clone());
            if let Some(version) = args.expect {
                builder.expected_version(version)
            } else if args.no_expect {
                builder.unchecked()
            } else {
                builder
            }
        })
        .collect();
    let appended = node.append_batch(builders).await;
    node.close().await?;
    for event in appended? {
        println!("{}", event.id);
    }
    Ok(())
}

pub async fn sync(args: SyncArgs, file: NodeFile, direction: Direction) -> anyhow::Result<()> {
    let node = open(&args.node, Some(&args.hub), &file).await?;
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| progress(&node));
    let outcome = match direction {
        Direction::Both => node.sync().await,
        Direction::Push => node.push().await,
        Direction::Pull => node.pull().await,
    };
    if let Some((bar, task)) = bar {
        task.abort();
        bar.finish_and_clear();
    }
    let closed = node.close().await;
    let result = outcome?;
    closed?;
    print_result(&result, args.json)?;
    Ok(())
}

fn progress(node: &Node) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut watch = node.watch_progress();
    let b = bar.clone();
    let task = tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let p = *watch.borrow();
            let head = p.hub_head.map_or("?".to_owned(), |h| h.to_string());
            b.set_message(format!(
                "pushed {}/{}, pulled {} (cursor {} of {head})",
                p.pushed, p.pending_at_start, p.pulled, p.cursor
            ));
        }
    });
    (bar, task)
}

fn print_result(result: &SyncResult, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(result)?);
        return Ok(());
    }
    let hub_head = result.hub_head.map_or("?".to_owned(), |h| h.to_string());
    println!(
        "pushed {}, pulled {}, conflicts {}; local head {}, hub head {hub_head} ({} ms)",
        result.pushed,
        result.pulled,
        result.conflicts,
        result.local_head,
        result.duration.as_millis()
    );
    for d in &result.decisions {
        println!(
            "  conflict on {}: {} by {}{}",
            d.aggregate_id,
            d.decision.as_str(),
            d.strategy,
            d.rule
                .as_ref()
                .map(|r| format!(" (rule {r})"))
                .unwrap_or_default()
        );
    }
    for e in &result.errors {
        eprintln!(
            "  {}: {}{}",
            e.code,
            e.message,
            e.event_id
                .as_ref()
                .map(|id| format!(" (event {id})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub async fn log(args: LogArgs, file: NodeFile) -> anyhow::Result<()> {
    let node = open(&args.node, None, &file).await?;
    let confirmed = node.store().confirmed_all().await?;
    let pending = node.store().pending_all().await?;
    node.close().await?;
    if args.json {
        let mut rows = Vec::with_capacity(confirmed.len() + pending.len());
        for e in &confirmed {
            let mut row = serde_json::to_value(e)?;
            row["status"] = json!("confirmed");
            rows.push(row);
        }
        for p in &pending {
            let mut row = serde_json::to_value(&p.event)?;
            row["status"] = json!("pending");
            rows.push(row);
        }
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    for e in &confirmed {
        println!(
            "{:>8}  {:<16} {:<20} {}  {}",
            e.seq, e.event.aggregate_id, e.event.kind, e.event.id, e.event.data
        );
    }
    for p in &pending {
        println!(
            "{:>8}  {:<16} {:<20} {}  {}",
            "pending", p.event.aggregate_id, p.event.kind, p.event.id, p.event.data
        );
    }
    Ok(())
}

pub async fn status(args: LogArgs, file: NodeFile) -> anyhow::Result<()> {
    let node = open(&args.node, None, &file).await?;
    let state = node.status().await?;
    node.close().await?;
    if args.json {
        println!(
            "{}",
            json!({
                "node_id": node.id().as_str(),
                "cursor": state.cursor,
                "confirmed_head": state.confirmed_head,
                "pending": state.pending,
                "reviews": state.reviews,
            })
        );
    } else {
        println!("node      {}", node.id());
        println!("cursor    {}", state.cursor);
        println!("pending   {}", state.pending);
        println!("conflicts {}", state.reviews);
    }
    Ok(())
}

pub async fn watch(args: WatchArgs, file: NodeFile) -> anyhow::Result<()> {
    let node = open_with(&args.node, Some(&args.hub), &file, true).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut results = node.subscribe();
    let json = args.json;
    let printer = tokio::spawn(async move {
        while let Ok(result) = results.recv().await {
            let _ = print_result(&result, json);
        }
    });
    let watcher = {
        let node = node.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            node.watch(stop, Duration::from_secs(1), Duration::from_secs(30))
                .await
        })
    };
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
    let watched = watcher.await.context("the watch task failed")?;
    printer.abort();
    node.close().await?;
    watched?;
    Ok(())
}

pub async fn conflicts(command: ConflictsCommand, file: NodeFile) -> anyhow::Result<()> {
    match command {
        ConflictsCommand::List(args) => {
            let node = open(&args.node, None, &file).await?;
            let reviews = node.reviews(10_000).await?;
            node.close().await?;
            if args.json {
                println!("{}", serde_json::to_string(&reviews)?);
                return Ok(());
            }
            if reviews.is_empty() {
                println!("no conflicts await review");
            }
            for r in &reviews {
                println!(
                    "{}  {}  {} local / {} remote event(s)  {}{}: {}",
                    r.id,
                    r.conflict.aggregate_id,
                    r.conflict.local.len(),
                    r.conflict.remote.len(),
                    r.strategy,
                    r.rule
                        .as_ref()
                        .map(|x| format!(" rule {x}"))
                        .unwrap_or_default(),
                    r.reason
                );
            }
            Ok(())
        }
        ConflictsCommand::Resolve(args) => {
            let node = open(&args.node, None, &file).await?;
            let choice = match args.keep.as_str() {
                "local" => ReviewChoice::KeepLocal,
                "remote" => ReviewChoice::KeepRemote,
                other => bail!("--keep must be local or remote, not {other}"),
            };
            let resolved = node.resolve_review(&args.id, choice).await;
            node.close().await?;
            resolved?;
            println!("resolved {}: kept {}", args.id, args.keep);
            Ok(())
        }
    }
}

pub async fn audit(args: AuditArgs, file: NodeFile) -> anyhow::Result<()> {
    let node = open(&args.node, None, &file).await?;
    let listed = list_audit(&node, &args).await;
    node.close().await?;
    listed
}

async fn list_audit(node: &Node, args: &AuditArgs) -> anyhow::Result<()> {
    let store = node.store();
    if let Some(id) = &args.dependents {
        let analysis = audit::rollback_analysis(&**store, id).await?;
        if args.json {
            let dependents: Vec<Value> = analysis
                .dependents
                .iter()
                .map(|d| {
                    let (by, events) = match &d.dependency {
                        Dependency::Events(ids) => ("events", ids.clone()),
                        Dependency::State => ("state", Vec::new()),
                    };
                    json!({ "record": d.record, "depends_by": by, "events": events })
                })
                .collect();
            println!(
                "{}",
                json!({ "decision": analysis.decision, "dependents": dependents })
            );
            return Ok(());
        }
        println!("{}", audit_line(&analysis.decision));
        if analysis.dependents.is_empty() {
            println!("no later decision depends on it");
        }
        for d in &analysis.dependents {
            let why = match &d.dependency {
                Dependency::Events(ids) => format!(
                    "decided about event(s) it wrote: {}",
                    ids.iter()
                        .map(|i| i.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Dependency::State => "decided later on the state it left".to_owned(),
            };
            println!("  depends: {}  ({why})", audit_line(&d.record));
        }
        return Ok(());
    }
    let filter = AuditFilter {
        aggregate_id: args
            .aggregate
            .as_deref()
            .map(AggregateId::new)
            .transpose()?,
        from_ms: args.since,
        to_ms: args.until,
        rule: args.rule.clone(),
        group: args.group.clone(),
    };
    let page = audit::query(&**store, &filter, args.after.clone(), args.limit).await?;
    if args.json {
        println!("{}", json!({ "records": page.records, "next": page.next }));
        return Ok(());
    }
    if page.records.is_empty() {
        println!("no decisions recorded");
    }
    for record in &page.records {
        println!("{}", audit_line(record));
    }
    if let Some(next) = page.next {
        println!("more: --after {next}");
    }
    Ok(())
}

/// One decision on one line: id, time, aggregate, decision, strategy, rule or fallback, why.
fn audit_line(r: &AuditRecord) -> String {
    let by = match (&r.rule, &r.group) {
        (Some(rule), _) => format!(" rule {rule}"),
        (None, Some(group)) => format!(" group {group} fallback"),
        (None, None) => String::new(),
    };
    format!(
        "{}  at {}  {}  {} by {}{}: {}",
        r.id,
        r.at,
        r.conflict.aggregate_id,
        r.decision.as_str(),
        r.strategy,
        by,
        r.reason
    )
}
