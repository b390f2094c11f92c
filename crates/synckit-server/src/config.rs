//! Hub configuration: listen address, bearer tokens with tenant and role, and limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use synckit_types::{Error, Result, TenantId};

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Pull, head, aggregates, stream.
    Read,
    /// Also push.
    Write,
    /// Everything, including administration.
    Admin,
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(Error::config(format!(
                "unknown role {other:?}; expected read, write or admin"
            ))),
        }
    }
}

/// One accepted bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The secret the client sends as `Authorization: Bearer <secret>`.
    pub secret: String,
    /// The tenant every request with this token works on.
    pub tenant: TenantId,
    /// What the token may do.
    pub role: Role,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGrant")
            .field("secret", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("role", &self.role)
            .finish()
    }
}

impl FromStr for TokenGrant {
    type Err = Error;

    /// `SECRET=TENANT:ROLE`, as given to `synckit serve --token`.
    fn from_str(s: &str) -> Result<TokenGrant> {
        let bad = || {
            Error::config(format!(
                "token {:?} is not of the form SECRET=TENANT:ROLE",
                redact(s)
            ))
        };
        let (secret, rest) = s.split_once('=').ok_or_else(bad)?;
        let (tenant, role) = rest.rsplit_once(':').ok_or_else(bad)?;
        if secret.is_empty() {
            return Err(bad());
        }
        Ok(TokenGrant {
            secret: secret.to_owned(),
            tenant: TenantId::new(tenant).map_err(|e| e.context("token tenant"))?,
            role: role.parse()?,
        })
    }
}

fn redact(s: &str) -> String {
    match s.split_once('=') {
        Some((_, rest)) => format!("***={rest}"),
        None => "***".to_owned(),
    }
}

/// Limits, each answered with a clear error when reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Events per push (default 1,000).
    pub max_batch: usize,
    /// Bytes of a request body as sent (default 16 MiB).
    pub max_body: usize,
    /// Bytes of a request body after decompression (default 64 MiB).
    pub max_decompressed: usize,
    /// Interval of SSE heartbeats on idle streams (default 15 s): an idle stream gets one
    /// within two intervals of its last frame, then one per interval.
    pub heartbeat: Duration,
    /// Frames queued for one subscriber before it counts as slow (default 1,024).
    pub subscriber_queue: usize,
    /// How long a full subscriber queue may stay full before the subscriber is disconnected
    /// (default 10 s).
    pub slow_subscriber: Duration,
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection is kept; a slowloris client is cut off after this (default 10 s).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request body (default 30 s); then 408.
    pub body_read_timeout: Duration,
    /// Bytes of a request line and headers; larger answers 431 (default 16 KiB, at least 8 KiB).
    pub max_header_bytes: usize,
    /// Open connections; one more is answered 503 and closed (default 10,000).
    pub max_connections: usize,
    /// Live subscriptions (SSE and WebSocket) per tenant; one more answers 429
    /// (default 10,000).
    pub max_subscribers_per_tenant: usize,
    /// Requests per token, as a token bucket; over it answers 429 with `Retry-After`.
    /// `None` turns the limit off. Anonymous hubs are not rate limited.
    pub rate_limit: Option<RateLimit>,
    /// Bytes of one event's `metadata` as JSON; larger is rejected `too_large` (default 64 KiB).
    pub max_metadata_bytes: usize,
    /// Nesting depth of one event's JSON; deeper is rejected `too_deep` (default 32).
    pub max_json_depth: usize,
    /// How far ahead of the hub's clock a client's `hlc` may be; further is rejected
    /// `clock_drift` (default 5 minutes).
    pub max_clock_drift: Duration,
}

/// A per-token request budget: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after an idle spell.
    pub burst: u32,
}

impl Eq for RateLimit {}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit {
            per_second: 1_000.0,
            burst: 2_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_batch: synckit_protocol::MAX_PUSH_EVENTS,
            max_body: 16 << 20,
            max_decompressed: 64 << 20,
            heartbeat: Duration::from_secs(15),
            subscriber_queue: 1_024,
            slow_subscriber: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 << 10,
            max_connections: 10_000,
            max_subscribers_per_tenant: 10_000,
            rate_limit: Some(RateLimit::default()),
            max_metadata_bytes: 64 << 10,
            max_json_depth: 32,
            max_clock_drift: Duration::from_millis(synckit_types::DEFAULT_MAX_DRIFT_MS),
        }
    }
}

/// Everything a hub is configured by.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where to listen (default 127.0.0.1:7700).
    pub listen: SocketAddr,
    /// Accepted tokens. None means an anonymous hub: tenant `default`, full rights.
    pub tokens: Vec<TokenGrant>,
    /// Allow an anonymous hub on a non-loopback address.
    pub allow_anonymous: bool,
    /// Limits.
    pub limits: Limits,
    /// Serve HTTPS with this certificate and key; `None` serves plain HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            tokens: Vec::new(),
            allow_anonymous: false,
            limits: Limits::default(),
            tls: None,
        }
    }
}

impl HubConfig {
    /// Check the configuration against the address the hub will really listen on.
    pub fn validate(&self, listen: SocketAddr) -> Result<()> {
        if self.tokens.is_empty() && !listen.ip().is_loopback() && !self.allow_anonymous {
            return Err(Error::config(format!(
                "refusing to start an anonymous hub (no --token) on the non-loopback address \
                 {listen}; give tokens, listen on 127.0.0.1, or pass --allow-anonymous"
            )));
        }
        let mut seen = BTreeMap::new();
        for grant in &self.tokens {
            if seen.insert(grant.secret.as_str(), ()).is_some() {
                return Err(Error::config("the same token secret is given twice"));
            }
        }
        let l = &self.limits;
        if l.max_batch == 0 || l.max_body == 0 || l.max_decompressed < l.max_body {
            return Err(Error::config(
                "limits: max_batch and max_body must be positive and max_decompressed at least \
                 max_body",
            ));
        }
        if l.heartbeat.is_zero() || l.subscriber_queue == 0 || l.slow_subscriber.is_zero() {
            return Err(Error::config(
                "limits: heartbeat, subscriber_queue and slow_subscriber must be positive",
            ));
        }
        if l.header_read_timeout.is_zero() || l.body_read_timeout.is_zero() {
            return Err(Error::config(
                "limits: header_read_timeout and body_read_timeout must be positive",
            ));
        }
        if l.max_header_bytes < MIN_HEADER_BYTES {
            return Err(Error::config(format!(
                "limits: max_header_bytes must be at least {MIN_HEADER_BYTES}"
            )));
        }
        if l.max_connections == 0
            || l.max_subscribers_per_tenant == 0
            || l.max_metadata_bytes == 0
            || l.max_json_depth == 0
        {
            return Err(Error::config(
                "limits: max_connections, max_subscribers_per_tenant, max_metadata_bytes and \
                 max_json_depth must be positive",
            ));
        }
        if let Some(rate) = l.rate_limit
            && (!(rate.per_second.is_finite() && rate.per_second > 0.0) || rate.burst == 0)
        {
            return Err(Error::config(
                "limits: a rate limit needs a positive per_second and burst",
            ));
        }
        Ok(())
    }
}

/// The smallest header limit hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse() {
        let g: TokenGrant = "s3cret=acme:write".parse().unwrap();
        assert_eq!((g.tenant.as_str(), g.role), ("acme", Role::Write));
        assert!(!format!("{g:?}").contains("s3cret"));
        for bad in ["", "s", "=t:read", "s=t", "s=t:owner", "s=:read"] {
            let err = bad.parse::<TokenGrant>().unwrap_err();
            assert!(!err.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn anonymous_hubs_stay_on_loopback_unless_allowed() {
        let public: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        let mut config = HubConfig::default();
        assert!(config.validate(config.listen).is_ok());
        assert!(config.validate(public).is_err());
        config.allow_anonymous = true;
        assert!(config.validate(public).is_ok());
        config.allow_anonymous = false;
        config.tokens.push("a=t:read".parse().unwrap());
        assert!(config.validate(public).is_ok());
        config.tokens.push("a=u:write".parse().unwrap());
        assert!(config.validate(public).is_err(), "duplicate secret");
    }
}
