//! `synckit serve`: open the chosen store and run the hub until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use synckit::server::{Hub, HubConfig, Limits, RateLimit, TlsFiles, TokenGrant};
use synckit::{
    DynEventStore, MemoryStore, PostgresConfig, PostgresStore, SledConfig, SledStore, SqliteStore,
};

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
    /// PostgreSQL schema of the hub's tables (default `synckit`), so several hubs can share a
    /// database.
    #[arg(long, value_name = "NAME")]
    postgres_schema: Option<String>,
    /// Accept this token: SECRET=TENANT:ROLE (role read, write or admin). Repeatable.
    #[arg(long = "token", value_name = "SECRET=TENANT:ROLE")]
    tokens: Vec<String>,
    /// Allow a hub without tokens on a non-loopback address.
    #[arg(long)]
    allow_anonymous: bool,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

pub async fn run(args: ServeArgs, file: ServeFile) -> anyhow::Result<()> {
    let limits = limits(&file);
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
        "sled" => {
            let mut config = SledConfig::new(&data);
            if let Some(mib) = file.sled_cache_mib {
                config = config.cache_capacity(mib.saturating_mul(1 << 20));
            }
            Arc::new(SledStore::open_with(config)?)
        }
        "sqlite" => {
            std::fs::create_dir_all(&data)
                .with_context(|| format!("cannot create the data directory {}", data.display()))?;
            Arc::new(SqliteStore::open(data.join("hub.sqlite3"))?)
        }
        "postgres" => {
            let url = args.postgres_url.or(file.postgres_url).context(
                "--store postgres needs --postgres-url (or postgres_url in the config file)",
            )?;
            let mut config = PostgresConfig::new(url);
            if let Some(schema) = args.postgres_schema.or(file.postgres_schema) {
                config = config.with_schema(schema);
            }
            Arc::new(PostgresStore::connect(config).await?)
        }
        "memory" => Arc::new(MemoryStore::new()),
        other => bail!("unknown store {other:?}; expected sled, sqlite, postgres or memory"),
    };

    let tls = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => bail!("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"),
    };
    let config = HubConfig {
        listen,
        tokens,
        allow_anonymous: args.allow_anonymous || file.allow_anonymous.unwrap_or(false),
        limits,
        tls,
    };
    let hub = Hub::new(store, config)?.start().await?;
    println!("synckit hub listening on {}", hub.url());
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    hub.shutdown().await?;
    Ok(())
}

/// The hub's limits: the config file's where given, the defaults elsewhere.
fn limits(file: &ServeFile) -> Limits {
    let d = Limits::default();
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let rate_limit = match (file.rate_limit_per_second, file.rate_limit_burst) {
        (Some(0.0), _) => None,
        (None, None) => d.rate_limit,
        (per_second, burst) => {
            let default = d.rate_limit.unwrap_or_default();
            Some(RateLimit {
                per_second: per_second.unwrap_or(default.per_second),
                burst: burst.unwrap_or(default.burst),
            })
        }
    };
    Limits {
        max_batch: file.max_batch.unwrap_or(d.max_batch),
        max_body: file.max_body.unwrap_or(d.max_body),
        max_decompressed: file.max_decompressed.unwrap_or(d.max_decompressed),
        header_read_timeout: ms(file.header_read_timeout_ms, d.header_read_timeout),
        body_read_timeout: ms(file.body_read_timeout_ms, d.body_read_timeout),
        max_header_bytes: file.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_connections: file.max_connections.unwrap_or(d.max_connections),
        max_subscribers_per_tenant: file
            .max_subscribers_per_tenant
            .unwrap_or(d.max_subscribers_per_tenant),
        rate_limit,
        max_metadata_bytes: file.max_metadata_bytes.unwrap_or(d.max_metadata_bytes),
        max_json_depth: file.max_json_depth.unwrap_or(d.max_json_depth),
        max_clock_drift: ms(file.max_clock_drift_ms, d.max_clock_drift),
        ..d
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_file_or_the_defaults() {
        let file: ServeFile = toml::from_str(
            "header_read_timeout_ms = 1500\nmax_connections = 7\nrate_limit_burst = 9\n\
             max_json_depth = 5\nmax_clock_drift_ms = 1000",
        )
        .unwrap();
        let l = limits(&file);
        let d = Limits::default();
        assert_eq!(l.header_read_timeout, Duration::from_millis(1500));
        assert_eq!(l.max_connections, 7);
        assert_eq!(l.max_json_depth, 5);
        assert_eq!(l.max_clock_drift, Duration::from_secs(1));
        let rate = l.rate_limit.unwrap();
        assert_eq!(
            (rate.per_second, rate.burst),
            (d.rate_limit.unwrap().per_second, 9)
        );
        assert_eq!(l.body_read_timeout, d.body_read_timeout);
        let off: ServeFile = toml::from_str("rate_limit_per_second = 0").unwrap();
        assert_eq!(limits(&off).rate_limit, None);
        assert_eq!(limits(&ServeFile::default()), d);
    }
}
