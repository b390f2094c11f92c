//! Mapping of driver and pool errors into `synckit_types::Error`, with context and source.

use std::error::Error as _;
use std::fmt::Display;
use std::io;

use deadpool_postgres::{PoolError, TimeoutType};
use synckit_types::{Error, ErrorKind};
use tokio_postgres::error::SqlState;

/// Map a driver error met while doing `context`.
///
/// Retryable: connection loss and refusal, server shutdown or overload, statement and lock
/// timeouts, serialization failures and deadlocks. Everything else is permanent.
pub(crate) fn pg(context: impl Display, err: tokio_postgres::Error) -> Error {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        let (kind, retryable) = classify(code);
        let mut message = format!("{context}: {} (SQLSTATE {})", db.message(), code.code());
        if let Some(detail) = db.detail() {
            message.push_str(&format!("; detail: {detail}"));
        }
        if let Some(hint) = db.hint() {
            message.push_str(&format!("; hint: {hint}"));
        }
        return Error::new(kind, message)
            .with_retryable(retryable)
            .with_source(err);
    }
    let io_source = err
        .source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some();
    if err.is_closed() || io_source {
        let mut message = format!("{context}: PostgreSQL is unreachable: {err}");
        if let Some(source) = err.source() {
            message.push_str(&format!(": {source}"));
        }
        return Error::new(ErrorKind::Unavailable, message)
            .with_retryable(true)
            .with_source(err);
    }
    // Conversion and protocol errors: the data or the server is not what the store expects.
    let mut message = format!("{context}: {err}");
    if let Some(source) = err.source() {
        message.push_str(&format!(": {source}"));
    }
    Error::new(ErrorKind::Storage, message).with_source(err)
}

/// Kind and retryability of a server error code.
fn classify(code: &SqlState) -> (ErrorKind, bool) {
    let class = code.code().get(..2).unwrap_or("");
    match code {
        c if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
            (ErrorKind::Storage, true)
        }
        c if *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE => {
            (ErrorKind::Timeout, true)
        }
        c if *c == SqlState::ADMIN_SHUTDOWN
            || *c == SqlState::CRASH_SHUTDOWN
            || *c == SqlState::CANNOT_CONNECT_NOW
            || *c == SqlState::TOO_MANY_CONNECTIONS
            || *c == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            (ErrorKind::Unavailable, true)
        }
        c if *c == SqlState::INSUFFICIENT_PRIVILEGE => (ErrorKind::Forbidden, false),
        c if *c == SqlState::INVALID_PASSWORD
            || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION =>
        {
            (ErrorKind::Unauthorized, false)
        }
        c if *c == SqlState::INVALID_CATALOG_NAME => (ErrorKind::Config, false),
        c if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
            (ErrorKind::Corrupted, false)
        }
        c if *c == SqlState::UNIQUE_VIOLATION => (ErrorKind::Conflict, false),
        _ if class == "08" => (ErrorKind::Unavailable, true),
        _ => (ErrorKind::Storage, false),
    }
}

/// Map a pool error met while getting a connection for `context`.
pub(crate) fn pool(context: impl Display, err: PoolError) -> Error {
    match err {
        PoolError::Backend(e) => pg(format!("{context}: connecting to PostgreSQL"), e),
        PoolError::Timeout(TimeoutType::Wait) => Error::new(
            ErrorKind::Timeout,
            format!("{context}: no pooled PostgreSQL connection became free in time"),
        )
        .with_retryable(true),
        PoolError::Timeout(TimeoutType::Create) => Error::new(
            ErrorKind::Unavailable,
            format!(
                "{context}: PostgreSQL did not complete the connection start-up in time \
                 (connect timeout)"
            ),
        )
        .with_retryable(true),
        PoolError::Timeout(TimeoutType::Recycle) => Error::new(
            ErrorKind::Unavailable,
            format!("{context}: checking a pooled PostgreSQL connection timed out"),
        )
        .with_retryable(true),
        PoolError::Closed => Error::closed("postgres store"),
        PoolError::NoRuntimeSpecified => Error::internal(format!(
            "{context}: the connection pool has no async runtime"
        )),
        PoolError::PostCreateHook(e) => {
            Error::storage(format!("{context}: setting up a new connection: {e}"))
        }
    }
}

/// Stored data that does not decode: the store cannot trust it.
pub(crate) fn corrupted(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupted, message)
}

/// A stored number that does not fit the contract's `u64`.
pub(crate) fn stored_u64(what: impl Display, value: i64) -> Result<u64, Error> {
    u64::try_from(value).map_err(|_| corrupted(format!("{what} is negative ({value})")))
}

/// A contract number (`seq`, version, ordinal) as PostgreSQL's BIGINT.
pub(crate) fn to_i64(what: impl Display, value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| {
        Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "{what} {value} is larger than {} (PostgreSQL's BIGINT)",
                i64::MAX
            ),
        )
        .with_retryable(false)
    })
}

/// A count or limit as BIGINT, saturating (a limit past `i64::MAX` means "all").
pub(crate) fn limit_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(
            classify(&SqlState::T_R_SERIALIZATION_FAILURE),
            (ErrorKind::Storage, true)
        );
        assert_eq!(
            classify(&SqlState::QUERY_CANCELED),
            (ErrorKind::Timeout, true)
        );
        assert_eq!(
            classify(&SqlState::CONNECTION_FAILURE),
            (ErrorKind::Unavailable, true)
        );
        assert_eq!(
            classify(&SqlState::INSUFFICIENT_PRIVILEGE),
            (ErrorKind::Forbidden, false)
        );
        assert_eq!(classify(&SqlState::DISK_FULL), (ErrorKind::Storage, false));
        assert_eq!(
            classify(&SqlState::SYNTAX_ERROR),
            (ErrorKind::Storage, false)
        );
    }

    #[test]
    fn pool_errors_are_classified() {
        let e = pool("reading", PoolError::Timeout(TimeoutType::Wait));
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.is_retryable());
        let e = pool("reading", PoolError::Timeout(TimeoutType::Create));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(pool("reading", PoolError::Closed).kind(), ErrorKind::Closed);
    }

    #[test]
    fn numbers_convert_with_clear_errors() {
        assert_eq!(to_i64("seq", 5).unwrap(), 5);
        let e = to_i64("seq", u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert!(e.to_string().contains("seq"));
        assert_eq!(stored_u64("head", 3).unwrap(), 3);
        assert_eq!(
            stored_u64("head", -1).unwrap_err().kind(),
            ErrorKind::Corrupted
        );
        assert_eq!(limit_i64(usize::MAX), i64::MAX);
    }
}
