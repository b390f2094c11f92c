//! `CoordinatorError`: the one public error of the coordinator crate, with a retryable flag and
//! a mapping into the contracts' `synckit_types::Error`.

use std::time::Duration;

use synckit_types::{BoxError, ErrorKind};

/// `Result` with [`CoordinatorError`].
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Everything the coordinator, its status stores and its leases can fail with.
///
/// Job failures are not errors of the coordinator: they are recorded in the job's status (see
/// [`JobStatus::last_error`](crate::JobStatus::last_error)) and answered as
/// [`RunOutcome::Failed`](crate::RunOutcome::Failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// A setting is out of range, or two settings contradict each other.
    #[error("invalid coordinator configuration: {message}")]
    Config {
        /// What is wrong, and what is accepted.
        message: String,
    },
    /// No job of that name is registered with this coordinator.
    #[error("no job named {job:?} is registered")]
    UnknownJob {
        /// The name asked for.
        job: String,
    },
    /// `start` was called on a coordinator that is running.
    #[error("the coordinator is already running")]
    AlreadyStarted,
    /// The call needs a running coordinator, and this one was never started.
    #[error("the coordinator is not started")]
    NotStarted,
    /// The coordinator was stopped; it runs nothing more (build a new one to start again).
    #[error("the coordinator is stopped")]
    Stopped,
    /// A status store failed: I/O, the database, or a lease statement.
    #[error("status store: {message}")]
    Store {
        /// What was being done and what failed.
        message: String,
        /// Whether trying again may work (the database was unreachable, a lock timed out).
        retryable: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A stored status does not decode: the store was damaged or written by something else.
    #[error("stored coordinator status is damaged: {message}")]
    Corrupted {
        /// Where, and what does not decode.
        message: String,
        /// The decoding error.
        #[source]
        source: Option<BoxError>,
    },
    /// A status store call ran past its deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// The operation that did not finish.
        what: String,
        /// The deadline it was given.
        after: Duration,
    },
}

impl CoordinatorError {
    /// A [`CoordinatorError::Config`] error.
    pub fn config(message: impl Into<String>) -> Self {
        CoordinatorError::Config {
            message: message.into(),
        }
    }

    /// A permanent [`CoordinatorError::Store`] error with its source.
    pub fn store(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        CoordinatorError::Store {
            message: message.into(),
            retryable: false,
            source: Some(source.into()),
        }
    }

    /// A [`CoordinatorError::Store`] error that is worth retrying (the backend is unavailable).
    pub fn store_unavailable(message: impl Into<String>, source: Option<BoxError>) -> Self {
        CoordinatorError::Store {
            message: message.into(),
            retryable: true,
            source,
        }
    }

    /// A [`CoordinatorError::Corrupted`] error with its source.
    pub fn corrupted(message: impl Into<String>, source: Option<BoxError>) -> Self {
        CoordinatorError::Corrupted {
            message: message.into(),
            source,
        }
    }

    /// Whether trying the same call again may work.
    pub fn is_retryable(&self) -> bool {
        match self {
            CoordinatorError::Store { retryable, .. } => *retryable,
            CoordinatorError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// The closest [`ErrorKind`] of the contracts, for callers that speak `synckit_types`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CoordinatorError::Config { .. } => ErrorKind::Config,
            CoordinatorError::UnknownJob { .. } => ErrorKind::NotFound,
            CoordinatorError::AlreadyStarted => ErrorKind::Conflict,
            CoordinatorError::NotStarted | CoordinatorError::Stopped => ErrorKind::Closed,
            CoordinatorError::Store {
                retryable: true, ..
            } => ErrorKind::Unavailable,
            CoordinatorError::Store { .. } => ErrorKind::Storage,
            CoordinatorError::Corrupted { .. } => ErrorKind::Corrupted,
            CoordinatorError::Timeout { .. } => ErrorKind::Timeout,
        }
    }
}

impl From<CoordinatorError> for synckit_types::Error {
    fn from(error: CoordinatorError) -> Self {
        let retryable = error.is_retryable();
        synckit_types::Error::new(error.kind(), error.to_string())
            .with_retryable(retryable)
            .with_source(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_retryability() {
        let e = CoordinatorError::store_unavailable("connecting", None);
        assert!(e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = CoordinatorError::store("writing", std::io::Error::other("disk full"));
        assert!(!e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert_eq!(e.to_string(), "status store: writing");
        let e: synckit_types::Error = CoordinatorError::UnknownJob { job: "x".into() }.into();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("\"x\""), "{e}");
    }
}
