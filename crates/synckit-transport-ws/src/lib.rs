//! The WebSocket transport of synckit: push, pull and head share one connection, matched by
//! request id; each subscription reads its own connection (protocol v1 allows one subscription
//! per connection). A broken connection fails the calls in flight with a retryable error and is
//! opened again by the next call.

mod transport;

pub use transport::{WsConfig, WsTransport};
