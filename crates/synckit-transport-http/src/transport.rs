//! `HttpTransport`: the `Transport` contract over protocol v1 HTTP calls and SSE.

use std::collections::VecDeque;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use synckit_protocol::sse::Parser;
use synckit_protocol::{ErrorBody, HeadResponse, PushRequest, PushResponse, pull_query_string};
use synckit_types::{
    AppendReport, Error, Event, Page, PreparedPush, ReadRequest, Result, Seq, StoredEvent,
    Subscription, Transport,
};

use crate::config::HttpConfig;

/// The JSON body of a push.
fn encode_push(events: &[Event]) -> Result<Vec<u8>> {
    serde_json::to_vec(&PushRequest { events })
        .map_err(|e| Error::internal(format!("encoding a push: {e}")))
}

/// The rustls error somewhere in `error`'s sources, if the failure was TLS.
fn tls_failure<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's `source` skips the error it wraps, which may be the rustls one
        // (hyper-rustls wraps tokio-rustls' io::Error in another), so look inside first.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// A connection pool to one hub, for one token (so one tenant).
#[derive(Clone)]
pub struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    config: HttpConfig,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// A transport to the hub at `url` with default settings.
    pub fn new(url: &str, token: Option<String>) -> Result<HttpTransport> {
        HttpTransport::with_config(HttpConfig::new(url, token))
    }

    /// A transport with explicit settings.
    pub fn with_config(config: HttpConfig) -> Result<HttpTransport> {
        config.validate()?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let tls = crate::tls::client_config(config.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(8)
            .build(connector);
        Ok(HttpTransport {
            client,
            base: config.url.trim_end_matches('/').to_owned(),
            config,
        })
    }

    /// `POST /v1/events` with an encoded push body.
    async fn send_push(&self, body: Vec<u8>) -> Result<AppendReport> {
        let response: PushResponse = self
            .call(self.request(Method::POST, "/v1/events", Some(body))?)
            .await?;
        response.into_report()
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = &self.config.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(bytes) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(bytes))
            }
            None => Full::new(Bytes::new()),
        };
        builder
            .body(body)
            .map_err(|e| Error::invalid_input(format!("building a request to {path}: {e}")))
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let what = format!("{} {}", request.method(), request.uri().path());
        self.client
            .request(request)
            .await
            .map_err(|e| match tls_failure(&e) {
                // A certificate the node does not trust stays untrusted: retrying cannot help.
                Some(tls) => Error::config(format!(
                    "{what}: the hub's TLS certificate is refused ({tls}); if a private CA signed \
                     it, give its certificate with --ca-file (HttpConfig::ca_file)"
                )),
                None => Error::unavailable(format!("{what}: cannot reach the hub: {}", chain(&e))),
            })
    }

    /// Send, wait for the whole answer within the request timeout, decode it.
    async fn call<T: DeserializeOwned>(&self, request: Request<Full<Bytes>>) -> Result<T> {
        let what = format!("{} {}", request.method(), request.uri().path());
        let timeout = self.config.request_timeout;
        let exchange = async {
            let response = self.send(request).await?;
            let status = response.status();
            let body = Limited::new(response.into_body(), self.config.max_response)
                .collect()
                .await
                .map_err(|e| Error::unavailable(format!("{what}: reading the answer failed: {e}")))?
                .to_bytes();
            Ok::<_, Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| {
                Error::new(
                    synckit_types::ErrorKind::Timeout,
                    format!("{what}: no answer within {timeout:?}"),
                )
            })??;
        if !status.is_success() {
            return Err(error_from(status, &body).context(&what));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::protocol(format!("{what}: the hub's answer is not valid: {e}")))
    }
}

/// An error and its sources on one line, without repeats.
fn chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

fn error_from(status: StatusCode, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => error.into_error(status.as_u16()),
        Err(_) => ErrorBody::new(
            "unknown",
            String::from_utf8_lossy(body)
                .chars()
                .take(200)
                .collect::<String>(),
        )
        .into_error(status.as_u16()),
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn push(&self, events: &[Event]) -> Result<AppendReport> {
        let body = encode_push(events)?;
        self.send_push(body).await
    }

    fn prepare_push(&self, events: &[Event]) -> Result<Option<PreparedPush>> {
        Ok(Some(PreparedPush::new(encode_push(events)?, events.len())))
    }

    async fn push_prepared(
        &self,
        events: &[Event],
        prepared: &PreparedPush,
    ) -> Result<AppendReport> {
        if prepared.events() != events.len() {
            return Err(Error::internal(format!(
                "a push of {} events was prepared for {}",
                events.len(),
                prepared.events()
            )));
        }
        self.send_push(prepared.body().to_vec()).await
    }

    async fn pull(&self, request: &ReadRequest) -> Result<Page> {
        request.validate()?;
        let path = format!("/v1/events?{}", pull_query_string(request));
        self.call(self.request(Method::GET, &path, None)?).await
    }

    async fn head(&self) -> Result<Seq> {
        let answer: HeadResponse = self
            .call(self.request(Method::GET, "/v1/head", None)?)
            .await?;
        Ok(answer.head)
    }

    async fn subscribe(&self, after: Seq) -> Result<Subscription> {
        let mut request = self.request(Method::GET, &format!("/v1/stream?after={after}"), None)?;
        request.headers_mut().insert(
            header::ACCEPT,
            header::HeaderValue::from_static("text/event-stream"),
        );
        let response = tokio::time::timeout(self.config.request_timeout, self.send(request))
            .await
            .map_err(|_| {
                Error::new(
                    synckit_types::ErrorKind::Timeout,
                    "opening the event stream timed out",
                )
            })??;
        let status = response.status();
        if !status.is_success() {
            let body = Limited::new(response.into_body(), 64 << 10)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(error_from(status, &body).context("opening the event stream"));
        }
        let state = StreamState {
            body: response.into_body(),
            parser: Parser::new(self.config.max_frame),
            ready: VecDeque::new(),
            last: after,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, next_event)))
    }
}

struct StreamState {
    body: Incoming,
    parser: Parser,
    ready: VecDeque<StoredEvent>,
    last: Seq,
    done: bool,
}

async fn next_event(mut s: StreamState) -> Option<(Result<StoredEvent>, StreamState)> {
    loop {
        if s.done {
            return None;
        }
        if let Some(event) = s.ready.pop_front() {
            s.last = event.seq;
            return Some((Ok(event), s));
        }
        let frame = match s.body.frame().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                s.done = true;
                let err =
                    Error::unavailable(format!("event stream broke after seq {}: {e}", s.last));
                return Some((Err(err), s));
            }
            None => {
                s.done = true;
                let err = Error::unavailable(format!("event stream ended after seq {}", s.last));
                return Some((Err(err), s));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let frames = match s.parser.feed(&data) {
            Ok(frames) => frames,
            Err(e) => {
                s.done = true;
                return Some((Err(e), s));
            }
        };
        for f in frames {
            match f.event.as_str() {
                "event" => match serde_json::from_str::<StoredEvent>(&f.data) {
                    Ok(event) => s.ready.push_back(event),
                    Err(e) => {
                        s.done = true;
                        return Some((Err(Error::protocol(format!("bad event frame: {e}"))), s));
                    }
                },
                "close" => {
                    s.done = true;
                    let err =
                        Error::unavailable(format!("the hub closed the event stream: {}", f.data));
                    return Some((Err(err), s));
                }
                _ => {}
            }
        }
    }
}
