//! `PostgresConfig`: where the store connects, which schema it owns, pool size and timeouts.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use synckit_types::{DynClock, Error, Result, SystemClock};
use tokio_postgres::config::SslMode;

/// Settings every store session starts with (before the URL's own `options`).
const SESSION_OPTIONS: &str = "-c synchronous_commit=on -c enable_bitmapscan=off";

/// The schema a store uses when none is configured.
pub const DEFAULT_SCHEMA: &str = "synckit";
/// Connections per store when none is configured.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// The largest pool a store accepts.
pub const MAX_POOL_SIZE: usize = 1_024;
/// How long one statement may run (lock waits included) when none is configured.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long opening one connection may take when none is configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call waits for a free pooled connection when none is configured.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach PostgreSQL and how the store uses it.
///
/// Build one with [`PostgresConfig::new`] and the `with_*` methods; [`PostgresStore::connect`]
/// validates it. `Debug` never shows the password.
///
/// Connections are plain TCP (or a Unix socket): TLS is not supported yet, so a URL with
/// `sslmode=require` is refused, and `sslmode=prefer` (the default) connects without TLS.
///
/// [`PostgresStore::connect`]: crate::PostgresStore::connect
#[derive(Clone)]
#[non_exhaustive]
pub struct PostgresConfig {
    /// A libpq-style URL (`postgres://user:password@host:5432/dbname?options`) or key-value
    /// string (`host=... user=... dbname=...`), parsed by `tokio_postgres::Config`.
    pub url: String,
    /// The schema holding the store's tables (created at open when missing): lower-case ASCII
    /// letters, digits and `_`, starting with a letter or `_`, at most 63 bytes.
    pub schema: String,
    /// Most connections the store's pool opens (1 to [`MAX_POOL_SIZE`]).
    pub pool_size: usize,
    /// The `statement_timeout` of every session, lock waits included; `None` keeps the
    /// server's. A statement that runs past it fails with a retryable `Timeout` error.
    pub statement_timeout: Option<Duration>,
    /// How long opening one connection (TCP and start-up) may take.
    pub connect_timeout: Duration,
    /// How long a call waits for a free pooled connection before a retryable `Timeout`.
    pub acquire_timeout: Duration,
    /// Where the hub's `recorded_at` stamps come from.
    pub clock: DynClock,
}

impl PostgresConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: DEFAULT_POOL_SIZE,
            statement_timeout: Some(DEFAULT_STATEMENT_TIMEOUT),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }

    /// Use `schema` for the store's tables.
    pub fn with_schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Open at most `pool_size` connections.
    pub fn with_pool_size(mut self, pool_size: usize) -> Self {
        self.pool_size = pool_size;
        self
    }

    /// Set the sessions' `statement_timeout` (`None`: the server's setting).
    pub fn with_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Bound the time to open one connection.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound the wait for a free pooled connection.
    pub fn with_acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Stamp `recorded_at` from `clock` (a `ManualClock` in tests).
    pub fn with_clock(mut self, clock: DynClock) -> Self {
        self.clock = clock;
        self
    }

    /// Check every setting and build the driver configuration the pool connects with.
    pub(crate) fn validate(&self) -> Result<tokio_postgres::Config> {
        validate_schema(&self.schema)?;
        if self.pool_size == 0 || self.pool_size > MAX_POOL_SIZE {
            return Err(Error::config(format!(
                "pool size {} is out of range 1..={MAX_POOL_SIZE}",
                self.pool_size
            )));
        }
        if let Some(timeout) = self.statement_timeout
            && timeout < Duration::from_millis(1)
        {
            return Err(Error::config(
                "statement timeout must be at least 1 ms (use None for the server's setting)",
            ));
        }
        for (what, timeout) in [
            ("connect timeout", self.connect_timeout),
            ("acquire timeout", self.acquire_timeout),
        ] {
            if timeout < Duration::from_millis(1) {
                return Err(Error::config(format!("{what} must be at least 1 ms")));
            }
        }

        // The driver's parse errors never quote the URL, so no password reaches a log.
        let mut pg = tokio_postgres::Config::from_str(&self.url).map_err(|e| {
            Error::config(format!("the PostgreSQL URL is not valid: {e}")).with_source(e)
        })?;
        if pg.get_ssl_mode() == SslMode::Require {
            return Err(Error::config(
                "the PostgreSQL URL asks for sslmode=require, but this store does not support \
                 TLS yet; use a local or tunnelled connection",
            ));
        }
        if pg.get_user().is_none() {
            return Err(Error::config("the PostgreSQL URL names no user"));
        }
        if pg.get_hosts().is_empty() {
            return Err(Error::config("the PostgreSQL URL names no host"));
        }
        // The URL's own connect_timeout wins when it sets one.
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(self.connect_timeout);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("synckit");
        }
        // Acknowledged means durable: force a synchronous commit unless the URL's own options
        // (which come later, and so win) choose otherwise. Every statement of the store is an
        // ordered index seek with a LIMIT; without statistics (a fresh or bulk-loaded table)
        // PostgreSQL would rather bitmap-scan and sort every row after the cursor, so bitmap
        // scans are off for the store's sessions. The configured statement timeout comes
        // last, so it wins over the URL's.
        let mut options = String::from(SESSION_OPTIONS);
        if let Some(user) = pg.get_options() {
            options.push(' ');
            options.push_str(user);
        }
        if let Some(timeout) = self.statement_timeout {
            options.push_str(&format!(" -c statement_timeout={}", timeout.as_millis()));
        }
        pg.options(options);
        Ok(pg)
    }
}

/// Check a schema name: it is spliced into SQL (always double-quoted), so only plain
/// identifiers are accepted.
fn validate_schema(schema: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::config(format!(
            "schema name {schema:?} {why}; use lower-case ASCII letters, digits and '_', \
             starting with a letter or '_', at most 63 bytes"
        )))
    };
    let Some(first) = schema.bytes().next() else {
        return bad("is empty");
    };
    if schema.len() > 63 {
        return bad("is too long");
    }
    if !(first.is_ascii_lowercase() || first == b'_') {
        return bad("does not start with a letter or '_'");
    }
    if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("has a character other than a-z, 0-9 and '_'");
    }
    if schema.starts_with("pg_") {
        return bad("starts with pg_, which PostgreSQL reserves");
    }
    Ok(())
}

/// The URL with its password (if any) replaced by `***`, for `Debug` and messages.
pub(crate) fn redact_url(url: &str) -> String {
    // postgres://user:password@host/... ; key-value strings carry `password=...`.
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        return url.to_owned();
    }
    url.split(' ')
        .map(|part| {
            if part.starts_with("password=") {
                "password=***"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("clock", &self.clock)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synckit_types::ErrorKind;

    const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn kind(config: &PostgresConfig) -> ErrorKind {
        config.validate().unwrap_err().kind()
    }

    #[test]
    fn defaults_validate() {
        let config = PostgresConfig::new(URL);
        assert_eq!(config.schema, "synckit");
        let pg = config.validate().unwrap();
        assert_eq!(pg.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(pg.get_application_name(), Some("synckit"));
        assert_eq!(
            pg.get_options(),
            Some("-c synchronous_commit=on -c enable_bitmapscan=off -c statement_timeout=30000")
        );
    }

    #[test]
    fn url_options_are_kept_and_statement_timeout_wins() {
        let config = PostgresConfig::new(format!("{URL}?options=-c%20work_mem%3D8MB"))
            .with_statement_timeout(Some(Duration::from_millis(1500)));
        let pg = config.validate().unwrap();
        assert_eq!(
            pg.get_options(),
            Some(
                "-c synchronous_commit=on -c enable_bitmapscan=off -c work_mem=8MB \
                 -c statement_timeout=1500"
            )
        );
        let pg = PostgresConfig::new(URL)
            .with_statement_timeout(None)
            .validate()
            .unwrap();
        assert_eq!(pg.get_options(), Some(SESSION_OPTIONS));
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let base = || PostgresConfig::new(URL);
        for schema in [
            "",
            "Synckit",
            "1abc",
            "a-b",
            "a\"; drop table x; --",
            "pg_mine",
            &"a".repeat(64),
        ] {
            assert_eq!(
                kind(&base().with_schema(schema)),
                ErrorKind::Config,
                "{schema:?}"
            );
        }
        for ok in ["_x", "synckit_2", &"a".repeat(63)] {
            base().with_schema(ok).validate().unwrap();
        }
        assert_eq!(kind(&base().with_pool_size(0)), ErrorKind::Config);
        assert_eq!(
            kind(&base().with_pool_size(MAX_POOL_SIZE + 1)),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&base().with_statement_timeout(Some(Duration::ZERO))),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&base().with_connect_timeout(Duration::ZERO)),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&base().with_acquire_timeout(Duration::ZERO)),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&PostgresConfig::new("mysql://nope")),
            ErrorKind::Config
        );
        assert_eq!(
            kind(&PostgresConfig::new("postgres://127.0.0.1/test")),
            ErrorKind::Config,
            "no user"
        );
        let tls = PostgresConfig::new(format!("{URL}?sslmode=require"));
        let err = tls.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("TLS"), "{err}");
    }

    #[test]
    fn debug_hides_the_password() {
        let config = PostgresConfig::new("postgres://app:s3cret@db.internal:5432/hub");
        let text = format!("{config:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("app:***@db.internal:5432/hub"), "{text}");
        let kv = PostgresConfig::new("host=db user=app password=s3cret dbname=hub");
        let text = format!("{kv:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("password=***"), "{text}");
        let bad = PostgresConfig::new("postgres://app:s3cret@db:notaport/hub");
        let err = bad.validate().unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
