//! Test services from the environment: the PostgreSQL URL gate every suite that needs a real
//! database goes through, so a missing database fails CI and is skipped loudly elsewhere.

use std::io::Write;

/// The variable that names the test database, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "SYNCKIT_TEST_POSTGRES_URL";

/// The test database URL from [`POSTGRES_URL_VAR`].
///
/// When it is unset: under CI (`CI` set) the calling test fails, since CI must provide
/// PostgreSQL; elsewhere a `SKIPPED` line naming `test` goes straight to stderr (libtest
/// captures `eprintln!`, and a skip must be seen) and the result is `None`.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: {POSTGRES_URL_VAR} is not set, and CI is: CI must provide PostgreSQL \
                 (e.g. postgres://postgres@127.0.0.1:5432/test)"
            );
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED: {test}: {POSTGRES_URL_VAR} is not set \
                 (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n"
            );
            None
        }
    }
}
