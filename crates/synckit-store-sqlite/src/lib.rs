//! SQLite-backed EventStore and NodeStore for synckit (rusqlite, bundled SQLite, WAL).
