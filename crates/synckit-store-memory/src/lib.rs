//! In-memory `EventStore` and `NodeStore`.
