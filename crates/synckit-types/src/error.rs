//! The one error type of synckit's contracts: a kind, a message, a retryable flag and a source.

use std::fmt;

/// Boxed source error carried by [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with synckit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely. Retry loops and protocol mappings match on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller sent something malformed: a bad id, cursor, version or event.
    InvalidInput,
    /// A configuration value is out of range or two settings contradict each other.
    Config,
    /// The thing asked for does not exist.
    NotFound,
    /// A concurrency or identity conflict (for example a different event under a known id).
    Conflict,
    /// The component was closed; it accepts no more calls.
    Closed,
    /// The operation was cancelled by its caller.
    Cancelled,
    /// The operation ran past its deadline.
    Timeout,
    /// The peer or the network is unavailable for now; trying again may work.
    Unavailable,
    /// The storage backend failed.
    Storage,
    /// Stored data is damaged or was written by an incompatible version.
    Corrupted,
    /// The backend or transport does not support this call.
    Unsupported,
    /// The peer answered something that breaks the protocol.
    Protocol,
    /// Credentials are missing or unknown.
    Unauthorized,
    /// Credentials are valid but do not allow this.
    Forbidden,
    /// A configured limit was reached (size, rate, capacity).
    LimitExceeded,
    /// A clock stamp is further in the future than the accepted drift.
    ClockDrift,
    /// A bug in synckit: an internal invariant did not hold.
    Internal,
}

impl ErrorKind {
    /// Whether errors of this kind are worth retrying by default.
    pub fn is_retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::LimitExceeded
        )
    }

    /// A stable snake_case name, used in logs, metrics and wire error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Config => "config",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Closed => "closed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Storage => "storage",
            ErrorKind::Corrupted => "corrupted",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::ClockDrift => "clock_drift",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every synckit contract.
///
/// Carries a [`ErrorKind`], a human message with context, whether retrying may help, and the
/// underlying error when there is one (sled, rusqlite, hyper, ... are mapped at the boundary).
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`; retryable as the kind suggests.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            retryable: kind.is_retryable_by_default(),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Override whether the error is worth retrying.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Prefix the message with context, keeping kind and source.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a retry loop should try again.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// Shorthand for [`ErrorKind::Closed`].
    pub fn closed(what: &str) -> Self {
        Error::new(ErrorKind::Closed, format!("{what} is closed"))
    }

    /// Shorthand for [`ErrorKind::Unsupported`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`] (retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for [`ErrorKind::Storage`].
    pub fn storage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Storage, message)
    }

    /// Shorthand for [`ErrorKind::Protocol`].
    pub fn protocol(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Protocol, message)
    }

    /// Shorthand for [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }
}

/// A cloneable summary of an [`Error`], for reports that are shared with many subscribers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorSummary {
    /// The snake_case kind (see [`ErrorKind::as_str`]) or a per-event rejection code.
    pub code: String,
    /// The full message.
    pub message: String,
    /// The event this error is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl From<&Error> for ErrorSummary {
    fn from(error: &Error) -> Self {
        ErrorSummary {
            code: error.kind().as_str().to_owned(),
            message: error.to_string(),
            event_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_kind_unless_overridden() {
        assert!(Error::unavailable("down").is_retryable());
        assert!(!Error::invalid_input("bad").is_retryable());
        assert!(
            !Error::unavailable("down")
                .with_retryable(false)
                .is_retryable()
        );
    }

    #[test]
    fn display_has_kind_and_context() {
        let e = Error::storage("disk full").context("appending 3 events");
        assert_eq!(e.to_string(), "storage: appending 3 events: disk full");
    }
}
