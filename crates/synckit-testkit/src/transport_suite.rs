//! The transport conformance suite: every `Transport` runs it against a live hub.
