//! The boundary between rusqlite and synckit: SQLite errors become `synckit_types::Error` with
//! context, and stored values are converted and decoded with damage reported as `Corrupted`.

use std::fmt::Display;

use rusqlite::ErrorCode;
use synckit_types::{Error, ErrorKind, Result};

/// Map a rusqlite error into synckit's error, saying what was being done.
///
/// Only lock contention with another process (`SQLITE_BUSY`/`SQLITE_LOCKED` after the busy
/// timeout) is retryable; a full disk, a permission problem or damage needs a person.
pub(crate) fn sql(context: impl Display, error: rusqlite::Error) -> Error {
    let (kind, what) = classify(&error);
    let retryable = kind == ErrorKind::Unavailable;
    Error::new(kind, format!("{context}: {what}: {error}"))
        .with_retryable(retryable)
        .with_source(error)
}

/// The kind and a plain-words reason for a rusqlite error.
fn classify(error: &rusqlite::Error) -> (ErrorKind, &'static str) {
    use rusqlite::Error as E;
    match error {
        E::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => (
                ErrorKind::Unavailable,
                "the database is locked by another connection or process",
            ),
            ErrorCode::DatabaseCorrupt => (ErrorKind::Corrupted, "the database file is damaged"),
            ErrorCode::NotADatabase => (
                ErrorKind::Corrupted,
                "the file is not a SQLite database (or its header is damaged)",
            ),
            ErrorCode::DiskFull => (
                ErrorKind::Storage,
                "the disk is full (or a file size limit was reached)",
            ),
            ErrorCode::CannotOpen => (
                ErrorKind::Storage,
                "cannot open the database file; check that its directory exists and is writable",
            ),
            ErrorCode::PermissionDenied | ErrorCode::AuthorizationForStatementDenied => (
                ErrorKind::Storage,
                "permission denied; check the ownership and mode of the database file",
            ),
            ErrorCode::ReadOnly => (
                ErrorKind::Storage,
                "the database is read-only for this process; check the permissions of the file, \
                 its -wal and -shm files and their directory",
            ),
            ErrorCode::SystemIoFailure => (
                ErrorKind::Storage,
                "an I/O error occurred (a full disk or file size limit, or a failing device)",
            ),
            ErrorCode::TooBig => (ErrorKind::Storage, "a value exceeds SQLite's size limit"),
            ErrorCode::OutOfMemory => (ErrorKind::Storage, "SQLite ran out of memory"),
            ErrorCode::ConstraintViolation => (
                ErrorKind::Internal,
                "a constraint the store maintains did not hold",
            ),
            _ => (ErrorKind::Storage, "SQLite failed"),
        },
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnType(..)
        | E::Utf8Error(..) => (
            ErrorKind::Corrupted,
            "a stored value does not have the type the store wrote",
        ),
        E::ToSqlConversionFailure(_) => (
            ErrorKind::InvalidInput,
            "a value cannot be stored in SQLite",
        ),
        _ => (ErrorKind::Storage, "SQLite failed"),
    }
}

/// Extension to map rusqlite results with context in one call.
pub(crate) trait SqlContext<T> {
    /// Map the error with `context` (a `&str` or anything `Display`).
    fn ctx(self, context: impl Display) -> Result<T>;
    /// Map the error with a context built only on failure.
    fn with_ctx<D: Display>(self, context: impl FnOnce() -> D) -> Result<T>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, context: impl Display) -> Result<T> {
        self.map_err(|e| sql(context, e))
    }

    fn with_ctx<D: Display>(self, context: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| sql(context(), e))
    }
}

/// A `u64` (seq, version, time, ordinal) as SQLite's signed 64-bit integer.
pub(crate) fn to_i64(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| {
        Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "{what} {value} is larger than the largest value the SQLite store keeps ({})",
                i64::MAX
            ),
        )
        .with_retryable(false)
    })
}

/// A stored integer back as `u64`; a negative one means the row is damaged.
pub(crate) fn to_u64(what: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| {
        Error::new(
            ErrorKind::Corrupted,
            format!("stored {what} is negative ({value}); the database is damaged"),
        )
    })
}

/// A count as `u64` (lossless: `usize` is at most 64 bits on every supported target).
pub(crate) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// Encode a value as the JSON stored in a body column.
pub(crate) fn encode<T: serde::Serialize>(what: impl Display, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::invalid_input(format!("{what} cannot be encoded as JSON: {e}")).with_source(e)
    })
}

/// Decode a stored JSON body; a body that does not decode means the row is damaged.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: impl Display, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::Corrupted,
            format!("{what} is damaged: its stored body does not decode: {e}"),
        )
        .with_source(e)
    })
}

/// Refuse a stored row whose key column and decoded body disagree.
pub(crate) fn check_same(what: impl Display, column: &str, body: &str) -> Result<()> {
    if column == body {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Corrupted,
            format!("{what} is damaged: its key says {column:?} but its body says {body:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_retryable_and_corruption_is_not() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let e = sql("appending", busy);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert!(e.to_string().starts_with("unavailable: appending: "), "{e}");

        let corrupt = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            None,
        );
        let e = sql("reading", corrupt);
        assert_eq!(e.kind(), ErrorKind::Corrupted);
        assert!(!e.is_retryable());
        assert!(std::error::Error::source(&e).is_some(), "source attached");

        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = sql("committing", full);
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("disk is full"), "{e}");
    }

    #[test]
    fn conversions_are_checked() {
        assert_eq!(to_i64("seq", 5).unwrap(), 5);
        let e = to_i64("seq", u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LimitExceeded);
        assert!(!e.is_retryable());
        assert_eq!(to_u64("seq", -1).unwrap_err().kind(), ErrorKind::Corrupted);
        let e = decode::<serde_json::Value>("event at seq 3", b"{not json").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupted);
        assert!(e.to_string().contains("event at seq 3"), "{e}");
    }
}
