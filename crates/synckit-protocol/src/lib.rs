//! synckit hub protocol v1: the messages a hub and its clients exchange, and their JSON
//! encoding. docs/PROTOCOL.md is the specification; this crate is its Rust form, shared by the
//! hub (`synckit-server`) and the transports (`synckit-transport-http`, `synckit-transport-ws`).
//!
//! No I/O here: encoding, decoding and validation only.

mod error;
mod push;
mod query;
pub mod sse;
pub mod ws;

pub use error::{ErrorBody, ErrorObject, error_kind_for, status_for};
pub use push::{
    AggregateResponse, DecodedEvent, HeadResponse, PushLimits, PushRequest, PushResponse, Status,
    WireEvent, WireResult, decode_push, decode_push_with, json_depth,
};
pub use query::{DEFAULT_LIMIT, parse_pull_query, pull_query_string};

/// The protocol version this crate speaks; the first path segment of every call (`/v1/...`).
pub const VERSION: &str = "v1";

/// Largest number of events in one push.
pub const MAX_PUSH_EVENTS: usize = 1_000;
