//! HTTP transport settings: hub URL, token, timeouts, the answer size limit and extra trusted
//! certificate authorities for https hubs.

use std::path::PathBuf;
use std::time::Duration;

use synckit_types::{Error, Result};

/// How to reach a hub over HTTP.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http://HOST:PORT` or `https://HOST:PORT` of the hub (a trailing `/` is ignored).
    pub url: String,
    /// Bearer token; none for an anonymous hub.
    pub token: Option<String>,
    /// Deadline of one request, answer included (default 30 s). Streams have none.
    pub request_timeout: Duration,
    /// Deadline to open a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Largest answer accepted, in bytes (default 256 MiB).
    pub max_response: usize,
    /// Largest Server-Sent Events frame accepted, in bytes (default 16 MiB).
    pub max_frame: usize,
    /// A PEM file of certificate authorities to trust for https, beside Mozilla's roots (for a
    /// hub with a private or self-signed certificate).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_response", &self.max_response)
            .field("max_frame", &self.max_frame)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl HttpConfig {
    /// Defaults for `url` and `token`.
    pub fn new(url: impl Into<String>, token: Option<String>) -> HttpConfig {
        HttpConfig {
            url: url.into(),
            token,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_response: 256 << 20,
            max_frame: 16 << 20,
            ca_file: None,
        }
    }

    /// Check the URL and limits.
    pub fn validate(&self) -> Result<()> {
        let uri: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| Error::config(format!("hub URL {:?} is not a URL: {e}", self.url)))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(Error::config(format!(
                    "hub URL {:?} must start with http:// or https://",
                    self.url
                )));
            }
        }
        if uri.host().is_none() {
            return Err(Error::config(format!("hub URL {:?} has no host", self.url)));
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config("timeouts must be greater than zero"));
        }
        if self
            .token
            .as_deref()
            .is_some_and(|t| t.is_empty() || t.contains(['\r', '\n']))
        {
            return Err(Error::config("the token is empty or contains a line break"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(
            HttpConfig::new("http://127.0.0.1:7700", None)
                .validate()
                .is_ok()
        );
        assert!(
            HttpConfig::new("https://hub.example", None)
                .validate()
                .is_ok()
        );
        for bad in [
            "",
            "127.0.0.1:7700",
            "ftp://x",
            "http://",
            "https://",
            "ws://x",
        ] {
            assert!(HttpConfig::new(bad, None).validate().is_err(), "{bad}");
        }
        assert!(
            HttpConfig::new("http://x", Some("a\nb".into()))
                .validate()
                .is_err()
        );
        assert!(
            !format!("{:?}", HttpConfig::new("http://x", Some("s3cret".into()))).contains("s3cret")
        );
    }
}
