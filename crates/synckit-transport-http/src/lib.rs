//! The HTTP transport of synckit: a node talks to a hub over protocol v1. Push, pull and head
//! use pooled keep-alive connections; subscribe reads the hub's Server-Sent Events stream.
//! `https://` hubs are reached over rustls, trusting Mozilla's roots and any extra authorities
//! of [`HttpConfig::ca_file`].
//!
//! ```no_run
//! # fn demo() -> synckit_types::Result<()> {
//! use synckit_transport_http::HttpTransport;
//! let hub = HttpTransport::new("http://127.0.0.1:7700", Some("s3cret".to_owned()))?;
//! # Ok(()) }
//! ```

mod config;
mod tls;
mod transport;

pub use config::HttpConfig;
pub use transport::HttpTransport;
