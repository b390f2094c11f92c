//! `synckit serve`: open the chosen store and run the hub until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use synckit::server::{Hub, HubConfig, Limits, TokenGrant};
use synckit::{DynEventStore, MemoryStore, PostgresStore, SledStore, SqliteStore};

use crate::config::ServeFile;

/// Options of `synckit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:7700; port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the sled or SQLite store (default ./synckit-data).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Store: sled (default), sqlite, postgres or memory.
    #[arg(long, value_name = "KIND")]
    store: Option<String>,
    /// PostgreSQL URL for --store postgres.
    #[arg(long, value_name = "URL")]
    postgres_url: Option<String>,
    /// Accept this token: SECRET=TENANT:ROLE (role read, write or admin). Repeatable.
    #[arg(long = "token", value_name = "SECRET=TENANT:ROLE")]
    tokens: Vec<String>,
    /// Allow a hub without tokens on a non-loopback address.
    #[arg(long)]
    allow_anonymous: bool,
}

pub async fn run(args: ServeArgs, file: ServeFile) -> anyhow::Result<()> {
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| "127.0.0.1:7700".to_owned());
    let listen: SocketAddr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?} is not an address like 127.0.0.1:7700"))?;
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from("./synckit-data"));
    let kind = args
        .store
        .or(file.store)
        .unwrap_or_else(|| "sled".to_owned());
    let tokens = if args.tokens.is_empty() {
        file.tokens
    } else {
        args.tokens
    };
    let tokens = tokens
        .iter()
        .map(|t| t.parse::<TokenGrant>())
        .collect::<Result<Vec<_>, _>>()?;
    let store: DynEventStore = match kind.as_str() {
        "sled" => Arc::new(SledStore::open(&data)?),
        "sqlite" => {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("cannot create the data directory {}", data.display()))?;
            Arc::new(SqliteStore::open(data.join("hub.sqlite3"))?)
        }
        "postgres" => {
            let url = args.postgres_url.or(file.postgres_url).context(
                "--store postgres needs --postgres-url (or postgres_url in the config file)",
            )?;
            Arc::new(PostgresStore::connect_url(url).await?)
        }
        "memory" => Arc::new(MemoryStore::new()),
        other => bail!("unknown store {other:?}; expected sled, sqlite, postgres or memory"),
    };
    let defaults = Limits::default();
    let limits = Limits {
        max_batch: file.max_batch.unwrap_or(defaults.max_batch),
        max_body: file.max_body.unwrap_or(defaults.max_body),
        max_decompressed: file.max_decompressed.unwrap_or(defaults.max_decompressed),
        ..defaults
    };
    let config = HubConfig {
        listen,
        tokens,
        allow_anonymous: args.allow_anonymous || file.allow_anonymous.unwrap_or(false),
        limits,
    };
    let hub = Hub::new(store, config)?.start().await?;
    println!("synckit hub listening on {}", hub.url());
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    hub.shutdown().await?;
    Ok(())
}

/// SIGINT or SIGTERM (Ctrl-C elsewhere): how `serve` and the `ship` daemon are told to stop.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
