//! Conflict resolvers for synckit. The node hands every conflict to a [`ConflictResolver`]; the
//! strategies here are deterministic functions of the conflict, so every machine decides alike.
//!
//! | strategy | decides |
//! |---|---|
//! | [`LastWriteWins`] | the side with the latest event wins (by HLC, ties by node id) |
//! | [`FirstWriteWins`] | the side with the earliest event wins: the mirror image |
//! | [`AdditiveMerge`] | keep both: the local events are rebased after the remote ones |
//! | [`ManualReview`] | park the local events in the review queue for the application |
//!
//! "The local side wins" means the local events are rebased and pushed after the remote ones,
//! so their effect is the final state; "the remote side wins" drops the local events, recorded
//! in the audit trail.

mod strategies;

pub use strategies::{AdditiveMerge, FirstWriteWins, LastWriteWins, ManualReview, by_name};
pub use synckit_types::{
    Conflict, ConflictResolver, Decision, DynResolver, Resolution, ResolutionContext,
};
