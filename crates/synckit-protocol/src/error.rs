//! Error bodies and the mapping between error kinds and HTTP status codes.

use synckit_types::{Error, ErrorKind};

/// `{"error": {"code": "...", "message": "..."}}`, the body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// A snake_case code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorObject {
    /// Stable, snake_case: `invalid_query`, `unauthorized`, `payload_too_large`, ...
    pub code: String,
    /// Human detail.
    pub message: String,
}

impl ErrorBody {
    /// An error body with `code` and `message`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: code.into(),
                message: message.into(),
            },
        }
    }

    /// The client-side error for an answer with this body and HTTP `status`.
    pub fn into_error(self, status: u16) -> Error {
        Error::new(
            error_kind_for(status),
            format!(
                "hub answered {status} {}: {}",
                self.error.code, self.error.message
            ),
        )
    }
}

/// The HTTP status a hub answers for an error of `kind`.
pub fn status_for(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::InvalidInput | ErrorKind::Protocol => 400,
        ErrorKind::Unauthorized => 401,
        ErrorKind::Forbidden => 403,
        ErrorKind::NotFound => 404,
        ErrorKind::Conflict => 409,
        ErrorKind::LimitExceeded => 413,
        ErrorKind::Unsupported => 415,
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Closed | ErrorKind::Cancelled => {
            503
        }
        _ => 500,
    }
}

/// The error kind a client reports for an HTTP error `status`. 429 and 5xx are retryable.
pub fn error_kind_for(status: u16) -> ErrorKind {
    match status {
        400 | 405 | 415 => ErrorKind::InvalidInput,
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        413 | 429 => ErrorKind::LimitExceeded,
        408 | 503 | 502 | 504 => ErrorKind::Unavailable,
        _ if status >= 500 => ErrorKind::Unavailable,
        _ => ErrorKind::Protocol,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_back_to_kinds_with_the_right_retry_behaviour() {
        assert!(ErrorBody::new("x", "y").into_error(503).is_retryable());
        assert!(ErrorBody::new("x", "y").into_error(429).is_retryable());
        assert!(!ErrorBody::new("x", "y").into_error(400).is_retryable());
        assert_eq!(status_for(ErrorKind::Forbidden), 403);
        assert_eq!(
            error_kind_for(status_for(ErrorKind::NotFound)),
            ErrorKind::NotFound
        );
    }
}
