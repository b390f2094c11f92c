//! The crate's one error: what went wrong in a buffer, and whether trying again may help.

use synckit_types::{Error, ErrorKind};

/// What a [`crate::Sink`] returns when a write fails: synckit's shared error, whose
/// [`Error::is_retryable`] flag decides between a retry with backoff and the dead letter.
pub type SinkError = Error;

/// Why a buffer refused a write, or could not deliver what it held.
///
/// [`BufferError::is_retryable`] tells a caller whether the same call may succeed later (a full
/// buffer, a sink that is down for now) or never will (closed, too large, refused for good).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// The buffer was closed; it accepts no more items.
    #[error("buffer {store} is closed")]
    Closed {
        /// The buffer's name.
        store: String,
    },
    /// The buffer is at capacity and its [`crate::FullPolicy`] is `Reject`. Retryable.
    #[error("buffer {store} is full ({items} items, {bytes} bytes held)")]
    Full {
        /// The buffer's name.
        store: String,
        /// Items held when the write was refused.
        items: usize,
        /// Bytes held when the write was refused.
        bytes: usize,
    },
    /// The write could never fit, even into an empty buffer.
    #[error("{what} can never fit in buffer {store}: {size} against a capacity of {capacity}")]
    TooLarge {
        /// The buffer's name.
        store: String,
        /// `item bytes` or `write items`.
        what: &'static str,
        /// The size of the write.
        size: usize,
        /// The capacity it was measured against.
        capacity: usize,
    },
    /// The sink failed. Retryable when the sink said so.
    #[error("sink of buffer {store} failed: {source}")]
    Sink {
        /// The buffer's name.
        store: String,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
    /// The sink refused a batch for good and it was kept in the buffer's failed list (the
    /// default dead letter); the batch itself is in the close report.
    #[error("sink of buffer {store} refused {items} item(s) from seq {first_seq}: {source}")]
    Refused {
        /// The buffer's name.
        store: String,
        /// The first sequence number of the refused batch.
        first_seq: u64,
        /// Items in the refused batch.
        items: usize,
        /// The sink's error.
        #[source]
        source: SinkError,
    },
    /// Items were still unwritten when the close deadline passed; they are in the close report.
    #[error("buffer {store} could not flush {items} item(s) before its close deadline{}",
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Unflushed {
        /// The buffer's name.
        store: String,
        /// Items left unwritten.
        items: usize,
        /// The last error of the sink, if a write failed (none when time simply ran out).
        last_error: Option<SinkError>,
    },
    /// The durable spool failed: a file could not be read, written or synced, or holds a
    /// record this version cannot decode.
    #[error("spool of buffer {store}: {message}")]
    Spool {
        /// The buffer's name.
        store: String,
        /// What was being done.
        message: String,
        /// The I/O error, when there is one.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A configuration value is out of range or needs something that is missing (a runtime).
    #[error("invalid buffer configuration: {0}")]
    Config(String),
}

impl BufferError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            BufferError::Full { .. } => true,
            BufferError::Sink { source, .. } => source.is_retryable(),
            BufferError::Unflushed { last_error, .. } => {
                last_error.as_ref().is_none_or(Error::is_retryable)
            }
            BufferError::Closed { .. }
            | BufferError::TooLarge { .. }
            | BufferError::Refused { .. }
            | BufferError::Spool { .. }
            | BufferError::Config(_) => false,
        }
    }

    /// The synckit [`ErrorKind`] this error maps to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BufferError::Closed { .. } => ErrorKind::Closed,
            BufferError::Full { .. } | BufferError::TooLarge { .. } => ErrorKind::LimitExceeded,
            BufferError::Sink { source, .. } | BufferError::Refused { source, .. } => source.kind(),
            BufferError::Unflushed { .. } => ErrorKind::Timeout,
            BufferError::Spool { .. } => ErrorKind::Storage,
            BufferError::Config(_) => ErrorKind::Config,
        }
    }

    pub(crate) fn closed(store: &str) -> Self {
        BufferError::Closed {
            store: store.to_owned(),
        }
    }

    pub(crate) fn spool(store: &str, message: impl Into<String>, source: std::io::Error) -> Self {
        BufferError::Spool {
            store: store.to_owned(),
            message: message.into(),
            source: Some(source),
        }
    }
}

impl From<BufferError> for Error {
    fn from(error: BufferError) -> Self {
        let kind = error.kind();
        let retryable = error.is_retryable();
        Error::new(kind, error.to_string())
            .with_retryable(retryable)
            .with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_the_cause() {
        let full = BufferError::Full {
            store: "s".into(),
            items: 1,
            bytes: 1,
        };
        assert!(full.is_retryable());
        assert!(!BufferError::closed("s").is_retryable());
        let down = BufferError::Sink {
            store: "s".into(),
            source: Error::unavailable("down"),
        };
        assert!(down.is_retryable());
        let bad = BufferError::Sink {
            store: "s".into(),
            source: Error::invalid_input("bad"),
        };
        assert!(!bad.is_retryable());
        let mapped: Error = down.into();
        assert_eq!(mapped.kind(), ErrorKind::Unavailable);
        assert!(mapped.is_retryable());
        assert_eq!(
            Error::from(BufferError::closed("s")).kind(),
            ErrorKind::Closed
        );
    }
}
