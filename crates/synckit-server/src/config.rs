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
    /// Interval of SSE heartbeats on idle streams (default 15 s).
    pub heartbeat: Duration,
    /// Frames queued for one subscriber before it counts as slow (default 1,024).
    pub subscriber_queue: usize,
    /// How long a full subscriber queue may stay full before the subscriber is disconnected
    /// (default 10 s).
    pub slow_subscriber: Duration,
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
}

impl Default for HubConfig {
    fn default() -> HubConfig {
        HubConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            tokens: Vec::new(),
            allow_anonymous: false,
            limits: Limits::default(),
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
        Ok(())
    }
}

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
