//! Core types and contracts of synckit: the event envelope, ids, `Seq`, the hybrid logical clock,
//! vector clocks, filters and pages, per-event append outcomes, the error type, and the traits
//! every other crate plugs into: [`EventStore`], [`NodeStore`], [`Transport`],
//! [`ConflictResolver`] and [`Clock`].
//!
//! This crate has no async runtime, network or database dependency; `cargo xtask ci` checks it.
//!
//! # Stability
//! Stable in 0.1: the envelope fields and their JSON form, `Seq`, the `Hlc` string form, append
//! outcomes, and the trait method sets. Not yet stable: [`NodeWrite`] and the audit record fields
//! (the rule engine will add to them), and the `ErrorKind` list (it is `#[non_exhaustive]`).

mod clock;
mod error;
mod event;
mod hlc;
mod id;
mod outcome;
mod query;
mod resolve;
mod seq;
mod store;
mod transport;
mod vclock;

pub use clock::{Clock, DynClock, ManualClock, SystemClock};
pub use error::{BoxError, Error, ErrorKind, ErrorSummary, Result};
pub use event::{Event, EventBuilder, Expect, MAX_KIND_LEN, Metadata, StoredEvent};
pub use hlc::{DEFAULT_MAX_DRIFT_MS, Hlc, HlcState};
pub use id::{AggregateId, EventId, MAX_ID_LEN, NodeId, TenantId, new_record_id};
pub use outcome::{AppendOutcome, AppendReport, AppendResult, RejectCode};
pub use query::{Filter, MAX_PAGE_SIZE, Page, ReadRequest};
pub use resolve::{
    Conflict, ConflictResolver, Decision, DecisionKind, DynResolver, Resolution, ResolutionContext,
};
pub use seq::{Seq, parse_u64};
pub use store::{
    AggregateHead, AuditQuery, AuditRecord, CommitSummary, DynEventStore, DynNodeStore, EventStore,
    EventStoreExt, NodeState, NodeStore, NodeStoreExt, NodeWrite, PendingEvent, ReviewEntry,
    ReviewId,
};
pub use transport::{DynTransport, PreparedPush, Subscription, Transport};
pub use vclock::{Causality, VectorClock};
