//! Mapping sled and I/O failures into synckit's `Error`, with what was being done as context.

use std::fmt::Display;
use std::io;

use synckit_types::{Error, ErrorKind};

/// A sled failure while doing `what`.
pub(crate) fn sled_error(what: impl Display, error: sled::Error) -> Error {
    let (kind, detail) = match &error {
        sled::Error::Io(io) => return io_error(what, clone_io(io)).with_source(error),
        sled::Error::Corruption { at, .. } => (
            ErrorKind::Corrupted,
            match at {
                Some(at) => format!("sled found corrupted data in its files (at {at:?})"),
                None => "sled found corrupted data in its files".to_owned(),
            },
        ),
        sled::Error::Unsupported(message) => (
            ErrorKind::Unsupported,
            format!("sled refused the operation: {message}"),
        ),
        sled::Error::ReportableBug(message) => (
            ErrorKind::Internal,
            format!("sled hit an internal bug: {message}"),
        ),
        sled::Error::CollectionNotFound(name) => (
            ErrorKind::Internal,
            format!("sled tree {:?} vanished", String::from_utf8_lossy(name)),
        ),
    };
    Error::new(kind, format!("{what}: {detail}"))
        .with_retryable(false)
        .with_source(error)
}

/// An I/O failure while doing `what`, with a message that says what to fix.
pub(crate) fn io_error(what: impl Display, error: io::Error) -> Error {
    let detail = match error.kind() {
        io::ErrorKind::PermissionDenied => {
            "permission denied: the process may not read or write the store's directory".to_owned()
        }
        io::ErrorKind::NotADirectory => {
            return Error::config(format!(
                "{what}: a component of the store path is a file, not a directory ({error})"
            ))
            .with_source(error);
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
            format!("the disk is full or a file size limit was reached ({error})")
        }
        io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".to_owned(),
        _ if is_lock_error(&error) => IN_USE.to_owned(),
        _ => match error.raw_os_error() {
            Some(code) if code == ENOSPC || code == EFBIG || code == EDQUOT => {
                format!("the disk is full or a file size limit was reached ({error})")
            }
            _ => format!("I/O error: {error}"),
        },
    };
    Error::storage(format!("{what}: {detail}"))
        .with_retryable(false)
        .with_source(error)
}

/// The message of a lock held by another process or another open store.
pub(crate) const IN_USE: &str =
    "the store is in use: another process or another open SledStore holds its lock";

// Linux errno values, so the mapping does not need libc.
const ENOSPC: i32 = 28;
const EFBIG: i32 = 27;
const EDQUOT: i32 = 122;

/// sled reports a held file lock as an `Other` error with this text.
fn is_lock_error(error: &io::Error) -> bool {
    error.to_string().contains("could not acquire lock")
}

/// `io::Error` is not `Clone`; keep its kind, OS code and text.
fn clone_io(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

/// Stored bytes that do not decode: the store is damaged.
pub(crate) fn corrupted(what: impl Display) -> Error {
    Error::new(ErrorKind::Corrupted, format!("sled store: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_map_to_clear_errors() {
        let denied = io_error("opening", io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.kind(), ErrorKind::Storage);
        assert!(denied.to_string().contains("permission denied"), "{denied}");

        let full = io_error("appending", io::Error::from_raw_os_error(EFBIG));
        assert_eq!(full.kind(), ErrorKind::Storage);
        assert!(full.to_string().contains("disk is full"), "{full}");
        assert!(!full.is_retryable());

        let enospc = io_error("appending", io::Error::from_raw_os_error(ENOSPC));
        assert!(enospc.to_string().contains("disk is full"), "{enospc}");

        let notdir = io_error("opening", io::Error::from(io::ErrorKind::NotADirectory));
        assert_eq!(notdir.kind(), ErrorKind::Config);

        let locked = io_error(
            "opening",
            io::Error::other("could not acquire lock on \"x/db\": busy"),
        );
        assert!(locked.to_string().contains("in use"), "{locked}");
    }

    #[test]
    fn sled_errors_keep_kind_context_and_source() {
        let e = sled_error("reading", sled::Error::Unsupported("nope".into()));
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("reading"));
        assert!(std::error::Error::source(&e).is_some());
        let e = sled_error(
            "opening",
            sled::Error::Io(io::Error::from_raw_os_error(ENOSPC)),
        );
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert!(e.to_string().contains("disk is full"), "{e}");
    }
}
