//! PostgreSQL-backed EventStore and NodeStore for synckit: the hub store for teams that run PostgreSQL.
