//! The synckit hub: protocol v1 over HTTP, Server-Sent Events and WebSocket, on any
//! `EventStore`. Bearer tokens map to one tenant and a role; the tenant always comes from the
//! token. Limits answer with clear errors; `/metrics` speaks Prometheus text.
//!
//! ```no_run
//! # async fn demo(store: synckit_types::DynEventStore) -> synckit_types::Result<()> {
//! use synckit_server::{Hub, HubConfig};
//! let config = HubConfig {
//!     tokens: vec!["s3cret=acme:write".parse()?],
//!     ..HubConfig::default()
//! };
//! let hub = Hub::new(store, config)?.start().await?;
//! println!("synckit hub listening on {}", hub.url());
//! hub.shutdown().await?;
//! # Ok(()) }
//! ```

mod auth;
mod body;
mod config;
mod error;
mod guard;
mod hub;
mod metrics;
mod notify;
mod routes;
mod server;
mod stream;
mod tls;
mod ws;

pub use auth::{Principal, TENANT_HEADER};
pub use config::{HubConfig, Limits, MIN_HEADER_BYTES, RateLimit, Role, TokenGrant};
pub use error::ApiError;
pub use guard::{RateLimiter, SubscriberSlot, SubscriberSlots};
pub use hub::{HubState, SharedHub};
pub use metrics::HubMetrics;
pub use server::{Hub, RunningHub};
pub use tls::TlsFiles;
