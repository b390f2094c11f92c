//! The store conformance suite: every `EventStore` and `NodeStore` backend runs it.
