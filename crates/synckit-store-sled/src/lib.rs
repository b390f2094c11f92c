//! sled-backed EventStore and NodeStore for synckit: the embedded default.
