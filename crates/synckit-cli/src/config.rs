//! The TOML configuration file: every command-line option can also be set here.
//!
//! ```toml
//! [serve]
//! listen = "127.0.0.1:7700"
//! data = "./synckit-data"
//! store = "sled"              # sled | sqlite | postgres | memory
//! postgres_url = "postgres://postgres@127.0.0.1:5432/synckit"
//! tokens = ["s3cret=acme:write"]
//! allow_anonymous = false
//! max_batch = 1000            # events per push
//! max_body = 16777216         # bytes of a request body as sent (16 MiB)
//! max_decompressed = 67108864 # bytes of a gzip or zstd body once decompressed (64 MiB)
//!
//! [node]
//! data = "./synckit-node"
//! hub = "http://127.0.0.1:7700"
//! token = "s3cret"
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
    #[serde(default)]
    pub tokens: Vec<String>,
    pub allow_anonymous: Option<bool>,
    /// Events per push; a larger push answers 413 (default 1,000).
    pub max_batch: Option<usize>,
    /// Bytes of a request body as sent; a larger body answers 413 (default 16 MiB).
    pub max_body: Option<usize>,
    /// Bytes of a request body after gzip or zstd decompression, counted while decompressing;
    /// a larger body answers 413 (default 64 MiB, at least `max_body`).
    pub max_decompressed: Option<usize>,
}

/// `[node]` options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub data: Option<PathBuf>,
    pub hub: Option<String>,
    pub token: Option<String>,
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
