//! The TOML configuration file: every command-line option can also be set here.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:7700"
//! data = "./synckit-data"
//! store = "sled"              # sled | sqlite | postgres | memory
//! postgres_url = "postgres://postgres@127.0.0.1:5432/synckit"
//! postgres_schema = "synckit"  # schema of the hub's tables
//! sled_cache_mib = 256        # sled's page cache, in MiB
//! tokens = ["s3cret=acme:write"]
//! allow_anonymous = false
//! tls_cert = "./hub.crt"      # serve HTTPS with this PEM certificate chain ...
//! tls_key = "./hub.key"       # ... and its PEM private key
//! max_batch = 1000            # events per push
//! max_body = 16777216         # bytes of a request body as sent (16 MiB)
//! max_decompressed = 67108864 # bytes of a gzip or zstd body once decompressed (64 MiB)
//! header_read_timeout_ms = 10000  # headers (and idle keep-alive) must arrive within this
//! body_read_timeout_ms = 30000    # a body must arrive within this, else 408
//! max_header_bytes = 16384    # request line and headers, else 431 (at least 8192)
//! max_connections = 10000     # open connections; one more is answered 503
//! max_subscribers_per_tenant = 10000  # live SSE and WebSocket subscriptions, else 429
//! rate_limit_per_second = 1000 # requests per token, refilled per second; 0 turns it off
//! rate_limit_burst = 2000      # requests per token at once
//! max_metadata_bytes = 65536  # an event's metadata as JSON, else rejected too_large
//! max_json_depth = 32         # an event's nesting, else rejected too_deep
//! max_clock_drift_ms = 300000 # how far ahead a client's hlc may be, else clock_drift
//!
//! [node]
//! data = "./synckit-node"
//! hub = "http://127.0.0.1:7700"
//! token = "s3cret"
//! ca_file = "./ca.crt"        # extra certificate authorities to trust for an https hub
//! request_timeout_ms = 30000  # deadline of one hub call, answer included
//! resolver = "lww"            # lww | fww | merge | review
//! rules = "./rules.yaml"      # a rules file instead of one resolver (see synckit-resolve)
//! batch_size = 100
//! page_size = 500
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[serve]`.
    #[serde(default)]
    pub serve: ServeFile,
    /// `[node]`.
    #[serde(default)]
    pub node: NodeFile,
}

/// `[serve]` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeFile {
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    pub store: Option<String>,
    pub postgres_url: Option<String>,
    pub postgres_schema: Option<String>,
    /// sled's page cache in MiB (default 256).
    pub sled_cache_mib: Option<u64>,
    #[serde(default)]
    pub tokens: Vec<String>,
    pub allow_anonymous: Option<bool>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Events per push; a larger push answers 413 (default 1,000).
    pub max_batch: Option<usize>,
    /// Bytes of a request body as sent; a larger body answers 413 (default 16 MiB).
    pub max_body: Option<usize>,
    /// Bytes of a request body after gzip or zstd decompression, counted while decompressing;
    /// a larger body answers 413 (default 64 MiB, at least `max_body`).
    pub max_decompressed: Option<usize>,
    /// Milliseconds a client may take to send request headers (also the keep-alive idle limit).
    pub header_read_timeout_ms: Option<u64>,
    /// Milliseconds a client may take to send a request body; then 408.
    pub body_read_timeout_ms: Option<u64>,
    /// Bytes of request line and headers; larger answers 431.
    pub max_header_bytes: Option<usize>,
    /// Open connections; one more is answered 503 and closed.
    pub max_connections: Option<usize>,
    /// Live subscriptions per tenant; one more answers 429.
    pub max_subscribers_per_tenant: Option<usize>,
    /// Requests per second per token (0 turns the rate limit off).
    pub rate_limit_per_second: Option<f64>,
    /// Requests per token at once.
    pub rate_limit_burst: Option<u32>,
    /// Bytes of one event's metadata.
    pub max_metadata_bytes: Option<usize>,
    /// Nesting depth of one event.
    pub max_json_depth: Option<usize>,
    /// Milliseconds a client's clock stamp may be ahead of the hub's.
    pub max_clock_drift_ms: Option<u64>,
}

/// `[node]` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub data: Option<PathBuf>,
    pub hub: Option<String>,
    pub token: Option<String>,
    /// Extra certificate authorities (PEM) to trust for an https hub.
    pub ca_file: Option<PathBuf>,
    /// Deadline of one hub call in milliseconds, answer included (default 30,000).
    pub request_timeout_ms: Option<u64>,
    pub resolver: Option<String>,
    pub rules: Option<PathBuf>,
    pub batch_size: Option<usize>,
    pub page_size: Option<usize>,
}

impl FileConfig {
    /// Read `path`, or the defaults when no file is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<FileConfig> {
        let Some(path) = path else {
            return Ok(FileConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "config file {}: {}",
                path.display(),
                e.to_string().replace('\n', " ").trim()
            )
        })
    }
}
