//! The `synckit` command: `synckit serve` runs a hub; the node commands append, sync and inspect
//! a local node. Errors are one line on stderr and a non-zero exit, never a panic.

mod config;
mod node_cmd;
mod serve;
mod ship;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the hub and nodes allocate many short-lived
/// buffers (request bodies, decoded events), where glibc's malloc spends its time in page
/// faults and free-list upkeep.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Offline-first event sync: run a hub, or drive a node.
#[derive(Debug, Parser)]
#[command(name = "synckit", version, about, long_about = None)]
struct Cli {
    /// Read options from this TOML file (command-line options win).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log more (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a hub.
    Serve(serve::ServeArgs),
    /// Append an event to the local node's outbox (works offline); prints the event id.
    Append(node_cmd::AppendArgs),
    /// Push the outbox, pull from the hub, resolve conflicts.
    Sync(node_cmd::SyncArgs),
    /// Push the outbox only.
    Push(node_cmd::SyncArgs),
    /// Pull from the hub only.
    Pull(node_cmd::SyncArgs),
    /// Print the confirmed events in hub order, then the pending ones.
    Log(node_cmd::LogArgs),
    /// Print the node's id, cursor, outbox and review-queue sizes.
    Status(node_cmd::LogArgs),
    /// Sync whenever the hub announces new events, until interrupted.
    Watch(node_cmd::WatchArgs),
    /// List or decide conflicts parked for review.
    #[command(subcommand)]
    Conflicts(node_cmd::ConflictsCommand),
    /// List recorded conflict decisions, or what depends on one.
    Audit(node_cmd::AuditArgs),
    /// Ship new lines of a directory's *.jsonl files to the hub as events, secrets redacted.
    Ship(ship::ShipArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match (cli.verbose, &cli.command) {
        (0, Command::Serve(_)) => "info",
        (0, _) => "warn",
        (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = config::FileConfig::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => serve::run(args, file.serve).await,
        Command::Append(args) => node_cmd::append(args, file.node).await,
        Command::Sync(args) => node_cmd::sync(args, file.node, node_cmd::Direction::Both).await,
        Command::Push(args) => node_cmd::sync(args, file.node, node_cmd::Direction::Push).await,
        Command::Pull(args) => node_cmd::sync(args, file.node, node_cmd::Direction::Pull).await,
        Command::Log(args) => node_cmd::log(args, file.node).await,
        Command::Status(args) => node_cmd::status(args, file.node).await,
        Command::Watch(args) => node_cmd::watch(args, file.node).await,
        Command::Conflicts(command) => node_cmd::conflicts(command, file.node).await,
        Command::Audit(args) => node_cmd::audit(args, file.node).await,
        Command::Ship(args) => ship::run(args, file.node).await,
    }
}
