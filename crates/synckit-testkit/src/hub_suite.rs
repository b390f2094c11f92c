//! The hub conformance suite: protocol v1's HTTP contract checked over raw loopback HTTP
//! against any running hub, the in-process `synckit_server::Hub` or the real `synckit serve`.
//!
//! Each check is a public `async fn` taking the hub's base URL (`http://127.0.0.1:PORT`), the
//! tokens it needs and, where it depends on them, the limits the hub was configured with. The
//! checks do not assume an empty hub: they work after the head they find, with ids unique to
//! the run, so several checks may share one hub. Their own pushes hold at most a few small
//! events, so they also run under small configured limits. Every request is bounded by
//! [`WAIT`]; nothing waits for time to pass to synchronise.
//!
//! The suite speaks HTTP itself (hyper, no synckit client code) and parses Server-Sent Events
//! itself, so a bug in the transports or the protocol crate cannot hide one in the hub.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use synckit_types::MAX_PAGE_SIZE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request, or one frame of a stream, may take before the check fails.
///
/// A guard against a hung hub only; no check waits for time to pass.
pub const WAIT: Duration = Duration::from_secs(20);

/// The header a client may send to name its tenant.
pub const TENANT_HEADER: &str = "x-synckit-tenant";

/// One tenant's tokens, one per role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTokens {
    /// The tenant every token below belongs to.
    pub tenant: String,
    /// A token with the `read` role.
    pub read: String,
    /// A token with the `write` role.
    pub write: String,
    /// A token with the `admin` role.
    pub admin: String,
}

impl TenantTokens {
    /// Tokens for `tenant` with secrets derived from its name.
    pub fn for_tenant(tenant: &str) -> TenantTokens {
        TenantTokens {
            tenant: tenant.to_owned(),
            read: format!("{tenant}-read-secret"),
            write: format!("{tenant}-write-secret"),
            admin: format!("{tenant}-admin-secret"),
        }
    }

    /// The grants as `SECRET=TENANT:ROLE`, the form `synckit serve --token` takes.
    pub fn grants(&self) -> Vec<String> {
        self.by_role()
            .iter()
            .map(|(role, secret)| format!("{secret}={}:{role}", self.tenant))
            .collect()
    }

    fn by_role(&self) -> [(&'static str, &str); 3] {
        [
            ("read", &self.read),
            ("write", &self.write),
            ("admin", &self.admin),
        ]
    }
}

/// The request-size limits a hub was configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Events per push.
    pub max_batch: usize,
    /// Bytes of a request body as sent.
    pub max_body: usize,
    /// Bytes of a request body after decompression.
    pub max_decompressed: usize,
}

impl BodyLimits {
    /// The limits protocol v1 states for a hub with default settings: 1,000 events, 16 MiB
    /// sent, 64 MiB decompressed.
    pub const STATED: BodyLimits = BodyLimits {
        max_batch: 1_000,
        max_body: 16 << 20,
        max_decompressed: 64 << 20,
    };
}

/// Run every check against one hub. `a` and `b` are two tenants of it.
pub async fn hub_suite(url: &str, a: &TenantTokens, b: &TenantTokens, limits: BodyLimits) {
    eprintln!("hub suite: check_error_rows");
    check_error_rows(url, a, b, limits).await;
    eprintln!("hub suite: check_tenant_isolation");
    check_tenant_isolation(url, a, b).await;
    eprintln!("hub suite: check_sse_resume");
    check_sse_resume(url, a).await;
    eprintln!("hub suite: check_compression");
    check_compression(url, a).await;
}

// ---------------------------------------------------------------------------------------------
// The HTTP client.
// ---------------------------------------------------------------------------------------------

type RequestBody = BoxBody<Bytes, Infallible>;

/// A raw HTTP client for one hub: every call is bounded by [`WAIT`] and panics on a transport
/// failure, since a check cannot go on without an answer.
#[derive(Debug, Clone)]
pub struct HubClient {
    url: String,
    client: Client<HttpConnector, RequestBody>,
}

/// A complete answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as received (not decompressed).
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of an error answer, or `<none>`.
    pub fn code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "<none>".to_owned())
    }

    /// Panic unless this is an error answer with `status` and `code`, of the documented shape:
    /// a JSON body `{"error": {"code", "message"}}` with a non-empty message.
    pub fn assert_error(&self, status: u16, code: &str, what: &str) {
        assert_eq!(
            self.status.as_u16(),
            status,
            "{what}: expected {status} {code}, got {}: {}",
            self.status,
            self.text()
        );
        let content_type = self
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: an error answer has content type {content_type:?}"
        );
        let body = self.json();
        let keys: Vec<_> = body
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .collect();
        assert_eq!(keys, ["error"], "{what}: error body {body}");
        assert_eq!(body["error"]["code"], code, "{what}: error body {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{what}: no message in {body}");
    }

    /// Panic unless the status is 200; returns the JSON body.
    pub fn ok_json(&self, what: &str) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{what}: {}", self.text());
        self.json()
    }
}

impl HubClient {
    /// A client for the hub at `url` (`http://HOST:PORT`, no trailing slash).
    pub fn new(url: &str) -> HubClient {
        HubClient {
            url: url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The hub's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send a request for `path` and return the response head with its body still streaming.
    pub async fn open(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: RequestBody,
    ) -> Response<Incoming> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(body)
            .unwrap_or_else(|e| panic!("{method} {path}: cannot build the request: {e}"));
        tokio::time::timeout(WAIT, self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    async fn complete(&self, what: &str, response: Response<Incoming>) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let body = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .unwrap_or_else(|_| panic!("{what}: the body did not end within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"))
            .to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Send a request with a body of known length and read the whole answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let what = format!("{method} {path}");
        let response = self
            .open(method, path, headers, Full::new(body.into()).boxed())
            .await;
        self.complete(&what, response).await
    }

    /// Send one request on a fresh connection, writing the body while reading the answer and
    /// ignoring write errors once the hub stops reading.
    ///
    /// For bodies over a limit: the hub may answer before it has read the whole body and then
    /// close the connection, and a client that stops at the failed write (as hyper's does) never
    /// sees the answer. Chunked (no `Content-Length`) when `chunked`, else sized.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        chunked: bool,
    ) -> Answer {
        let what = format!("{method} {path} (raw)");
        let authority = self
            .url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("{what}: the hub URL {} is not http://", self.url));
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(authority)
                .await
                .unwrap_or_else(|e| panic!("{what}: connect: {e}"));
            let (mut reader, mut writer) = stream.into_split();
            let mut head =
                format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            if chunked {
                head.push_str("transfer-encoding: chunked\r\n\r\n");
            } else {
                head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
            }
            let write = async {
                writer.write_all(head.as_bytes()).await?;
                if chunked {
                    for chunk in body.chunks(64 << 10) {
                        writer
                            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                            .await?;
                        writer.write_all(chunk).await?;
                        writer.write_all(b"\r\n").await?;
                    }
                    writer.write_all(b"0\r\n\r\n").await?;
                } else {
                    writer.write_all(&body).await?;
                }
                writer.flush().await
            };
            let read = async {
                let mut received = Vec::new();
                let mut buffer = vec![0; 64 << 10];
                // Until the hub closes (connection: close); a reset after its answer is fine.
                while let Ok(n) = reader.read(&mut buffer).await {
                    if n == 0 {
                        break;
                    }
                    received.extend_from_slice(&buffer[..n]);
                }
                received
            };
            let (_written, received) = tokio::join!(write, read);
            received
        };
        let received = tokio::time::timeout(WAIT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{what}: no answer within {WAIT:?}"));
        parse_response(&what, &received)
    }

    /// `GET path` with a bearer token.
    pub async fn get(&self, token: &str, path: &str) -> Answer {
        let auth = bearer(token);
        self.call(Method::GET, path, &[("authorization", &auth)], Bytes::new())
            .await
    }

    /// `POST /v1/events` with a bearer token and a JSON body.
    pub async fn push(&self, token: &str, body: &Value) -> Answer {
        let auth = bearer(token);
        self.call(
            Method::POST,
            "/v1/events",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string(),
        )
        .await
    }

    /// Push `events`; panics unless every one is accepted. Returns their seqs.
    pub async fn push_accepted(&self, token: &str, events: Vec<Value>) -> Vec<u64> {
        let count = events.len();
        let answer = self.push(token, &json!({ "events": events })).await;
        let body = answer.ok_json("push");
        let results = body["results"].as_array().cloned().unwrap_or_default();
        assert_eq!(results.len(), count, "one result per event: {body}");
        results
            .iter()
            .map(|r| {
                assert_eq!(r["status"], "accepted", "push: {body}");
                r["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("no seq: {body}"))
            })
            .collect()
    }

    /// The tenant's head as `GET /v1/head` answers it for `token`.
    pub async fn head(&self, token: &str) -> u64 {
        let body = self.get(token, "/v1/head").await.ok_json("GET /v1/head");
        body["head"]
            .as_u64()
            .unwrap_or_else(|| panic!("GET /v1/head: {body}"))
    }

    /// Every event after `after`, paging through `GET /v1/events`.
    pub async fn events_after(&self, token: &str, after: u64) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = after;
        loop {
            let path = format!("/v1/events?after={cursor}&limit={MAX_PAGE_SIZE}");
            let page = self.get(token, &path).await.ok_json(&path);
            out.extend(page["events"].as_array().cloned().unwrap_or_default());
            if page["has_more"] != true {
                return out;
            }
            cursor = page["next"]
                .as_u64()
                .unwrap_or_else(|| panic!("{path}: {page}"));
        }
    }

    /// Open `GET path` as an event stream; panics unless it answers 200 `text/event-stream`.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let response = self
            .open(Method::GET, path, headers, Full::new(Bytes::new()).boxed())
            .await;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let answer = self.complete(path, response).await;
            panic!("GET {path}: {status}: {}", answer.text());
        }
        let content_type = response.headers().get(CONTENT_TYPE).cloned();
        assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("text/event-stream"),
            "GET {path}"
        );
        EventStream::new(format!("GET {path}"), response.into_body())
    }
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A string unique to this process and call, for event ids that no earlier run used.
pub fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:x}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Parse an HTTP/1.1 answer received in full (the body sized, chunked or up to the close).
fn parse_response(what: &str, received: &[u8]) -> Answer {
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "{what}: no complete answer before the connection closed: {:?}",
                String::from_utf8_lossy(received)
            )
        });
    let head = std::str::from_utf8(&received[..end])
        .unwrap_or_else(|e| panic!("{what}: the answer head is not UTF-8: {e}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("{what}: bad header line {line:?}"));
        let name = hyper::header::HeaderName::from_bytes(name.trim().as_bytes())
            .unwrap_or_else(|e| panic!("{what}: header name {name:?}: {e}"));
        let value = hyper::header::HeaderValue::from_str(value.trim())
            .unwrap_or_else(|e| panic!("{what}: header value {value:?}: {e}"));
        headers.append(name, value);
    }
    let rest = &received[end + 4..];
    let body = if let Some(length) = headers.get(hyper::header::CONTENT_LENGTH) {
        let length: usize = length
            .to_str()
            .ok()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| panic!("{what}: bad content-length {length:?}"));
        assert!(
            rest.len() >= length,
            "{what}: the answer body was cut short"
        );
        Bytes::copy_from_slice(&rest[..length])
    } else if headers
        .get(hyper::header::TRANSFER_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        let mut body = Vec::new();
        let mut rest = rest;
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap_or_else(|| panic!("{what}: the chunked answer was cut short"));
            let size = std::str::from_utf8(&rest[..line_end])
                .ok()
                .and_then(|s| {
                    usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok()
                })
                .unwrap_or_else(|| panic!("{what}: bad chunk size line"));
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            assert!(
                rest.len() >= size + 2,
                "{what}: the chunked answer was cut short"
            );
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        Bytes::from(body)
    } else {
        Bytes::copy_from_slice(rest)
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// An event object as a client pushes it, with no expected version.
pub fn event(id: &str, aggregate: &str, data: Value) -> Value {
    json!({"id": id, "kind": "Noted", "aggregate_id": aggregate, "data": data})
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events.
// ---------------------------------------------------------------------------------------------

/// One dispatched SSE frame (comment-only frames such as heartbeats are not dispatched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The `id:` field, if any.
    pub id: Option<String>,
    /// The `event:` field, `message` when absent.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// A minimal SSE parser after the WHATWG rules: lines end in LF or CRLF, a blank line
/// dispatches, `:` starts a comment, one space after the colon is dropped.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseFrame> {
        self.buffer.extend_from_slice(bytes);
        let mut frames = Vec::new();
        let mut start = 0;
        while let Some(end) = self.buffer[start..].iter().position(|&b| b == b'\n') {
            let line = &self.buffer[start..start + end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)
                .unwrap_or_else(|e| panic!("an event-stream line is not UTF-8: {e}"))
                .to_owned();
            start += end + 1;
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    frames.push(SseFrame {
                        id: self.id.take(),
                        event: self.event.take().unwrap_or_else(|| "message".to_owned()),
                        data,
                    });
                }
                self.id = None;
                self.event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => self.id = Some(value),
                "event" => self.event = Some(value),
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(&value);
                    }
                    None => self.data = Some(value),
                },
                _ => {}
            }
        }
        self.buffer.drain(..start);
        frames
    }
}

/// An open `GET /v1/stream`. Dropping it drops the connection.
#[derive(Debug)]
pub struct EventStream {
    what: String,
    body: Incoming,
    parser: SseParser,
    ready: VecDeque<SseFrame>,
}

/// One event frame of a stream: the `id:` as a seq and the stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamedEvent {
    /// The frame's `id:`, parsed.
    pub seq: u64,
    /// The frame's data, the stored event.
    pub event: Value,
}

impl EventStream {
    fn new(what: String, body: Incoming) -> EventStream {
        EventStream {
            what,
            body,
            parser: SseParser::default(),
            ready: VecDeque::new(),
        }
    }

    /// The next dispatched frame, or `None` when the hub ended the stream. Panics when nothing
    /// arrives within [`WAIT`].
    pub async fn next_frame(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("{}: no frame within {WAIT:?}", self.what))?;
            let frame = frame.unwrap_or_else(|e| panic!("{}: {e}", self.what));
            if let Ok(data) = frame.into_data() {
                self.ready.extend(self.parser.feed(&data));
            }
        }
    }

    /// The next event frame; panics on a `close` frame, the end of the stream, or a frame whose
    /// `id:` is not the seq of the event it carries.
    pub async fn next_event(&mut self) -> StreamedEvent {
        loop {
            let frame = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("{}: the stream ended", self.what));
            match frame.event.as_str() {
                "event" => {
                    let event: Value = serde_json::from_str(&frame.data).unwrap_or_else(|e| {
                        panic!("{}: frame data ({e}): {}", self.what, frame.data)
                    });
                    let id = frame
                        .id
                        .unwrap_or_else(|| panic!("{}: an event frame without id", self.what));
                    let seq: u64 = id
                        .parse()
                        .unwrap_or_else(|_| panic!("{}: id {id:?} is not a seq", self.what));
                    assert_eq!(
                        event["seq"], seq,
                        "{}: the id of a frame is the seq of its event",
                        self.what
                    );
                    return StreamedEvent { seq, event };
                }
                "close" => panic!("{}: the hub closed the stream: {}", self.what, frame.data),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Body builders.
// ---------------------------------------------------------------------------------------------

/// gzip `data` as one member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// zstd `data` as one frame.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 1).expect("zstd into memory")
}

/// `prefix` followed by spaces up to `total` bytes in all (JSON stays valid: trailing
/// whitespace is allowed).
fn padded(prefix: &[u8], total: usize) -> Vec<u8> {
    assert!(
        prefix.len() <= total,
        "the padded body is shorter than its JSON"
    );
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(prefix);
    out.resize(total, b' ');
    out
}

/// A compressed body that decompresses to `prefix` and then `total - prefix.len()` spaces,
/// built from repeated members (gzip) or frames (zstd) so that it stays small without
/// compressing the whole thing.
fn bomb(prefix: &[u8], total: usize, compress: fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    const CHUNK: usize = 1 << 20;
    let mut out = compress(prefix);
    let mut left = total.saturating_sub(prefix.len());
    let chunk = compress(&vec![b' '; CHUNK.min(left.max(1))]);
    let chunk_len = CHUNK.min(left.max(1));
    while left >= chunk_len {
        out.extend_from_slice(&chunk);
        left -= chunk_len;
    }
    if left > 0 {
        out.extend_from_slice(&compress(&vec![b' '; left]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Check: every error row.
// ---------------------------------------------------------------------------------------------

/// How a raw row frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Sized,
    Chunked,
}

/// One request of the error table.
struct Row {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    raw: Option<Framing>,
    status: u16,
    code: &'static str,
    allow: Option<&'static str>,
}

impl Row {
    fn new(what: &'static str, method: Method, path: impl Into<String>) -> Row {
        Row {
            what,
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
            raw: None,
            status: 0,
            code: "",
            allow: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Row {
        self.headers.push((name, value.into()));
        self
    }

    fn token(self, token: &str) -> Row {
        self.header("authorization", bearer(token))
    }

    fn json(self, body: impl Into<Bytes>) -> Row {
        self.header("content-type", "application/json").body(body)
    }

    fn body(mut self, body: impl Into<Bytes>) -> Row {
        self.body = body.into();
        self
    }

    /// Send on a raw connection that reads the answer while writing (a body over a limit).
    fn raw(mut self, framing: Framing) -> Row {
        self.raw = Some(framing);
        self
    }

    fn answers(mut self, status: u16, code: &'static str) -> Row {
        self.status = status;
        self.code = code;
        self
    }

    fn allow(mut self, allow: &'static str) -> Row {
        self.allow = Some(allow);
        self
    }

    async fn send(&self, hub: &HubClient) -> Answer {
        let headers: Vec<(&str, &str)> =
            self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        match self.raw {
            Some(framing) => {
                hub.call_raw(
                    self.method.clone(),
                    &self.path,
                    &headers,
                    self.body.clone(),
                    framing == Framing::Chunked,
                )
                .await
            }
            None => {
                hub.call(self.method.clone(), &self.path, &headers, self.body.clone())
                    .await
            }
        }
    }
}

/// Every error row of protocol v1, each with its status, `error.code` and JSON error body, and
/// the store unchanged after each (both tenants' heads):
///
/// - 400 `invalid_body`: malformed JSON, a body of the wrong shape, invalid gzip or zstd;
/// - 400 `invalid_query`: `after`, `limit` or `Last-Event-ID` negative, not a number, past
///   u64, out of range, empty or repeated;
/// - 401 `unauthorized`: a missing, malformed or unknown token;
/// - 403 `forbidden`: a read token pushing; any token naming the other tenant;
/// - 404 `not_found`: an unknown path; 405 `method_not_allowed` with `Allow`;
/// - 413 `payload_too_large`: a batch over `max_batch`, a body over `max_body` (declared or
///   chunked), a gzip or zstd body decompressing past `max_decompressed`;
/// - 415 `unsupported_media_type`: a content type other than JSON, an encoding other than gzip
///   or zstd.
///
/// Most refused requests carry an otherwise valid push, so a hub that wrongly accepted one would
/// change the head. Then, as the contrast that shows each limit is where it is stated: a batch
/// of exactly `max_batch` events, a body of exactly `max_body` bytes, gzip, zstd and a
/// `charset` parameter are accepted.
pub async fn check_error_rows(url: &str, a: &TenantTokens, b: &TenantTokens, limits: BodyLimits) {
    assert_ne!(a.tenant, b.tenant, "two different tenants");
    let hub = HubClient::new(url);
    let run = nonce();
    let valid_event = |n: usize| {
        event(
            &format!("{run}-row-{n}"),
            &format!("rows-{run}"),
            json!({"n": n}),
        )
    };
    let valid = |n: usize| json!({ "events": [valid_event(n)] }).to_string();
    let batch = |len: usize| {
        let events: Vec<Value> = (0..len)
            .map(|n| {
                event(
                    &format!("{run}-batch-{len}-{n}"),
                    &format!("rows-{run}"),
                    json!({}),
                )
            })
            .collect();
        json!({ "events": events }).to_string()
    };
    let over_batch = batch(limits.max_batch + 1);
    assert!(
        over_batch.len() <= limits.max_body,
        "max_body {} is too small to tell a batch of {} events ({} bytes) from a large body",
        limits.max_body,
        limits.max_batch + 1,
        over_batch.len()
    );
    let bomb_size = limits.max_decompressed.saturating_mul(4);
    let gzip_bomb = bomb(valid(1).as_bytes(), bomb_size, gzip);
    let zstd_bomb = bomb(valid(2).as_bytes(), bomb_size, zstd);
    for (name, body) in [("gzip", &gzip_bomb), ("zstd", &zstd_bomb)] {
        assert!(
            body.len() <= limits.max_body,
            "max_body {} is too small for a {name} body of {} bytes that decompresses past \
             max_decompressed",
            limits.max_body,
            body.len()
        );
    }
    let too_big = padded(valid(3).as_bytes(), limits.max_body + 1);
    let truncated_gzip = {
        let full = gzip(valid(4).as_bytes());
        full[..full.len() / 2].to_vec()
    };
    let other = b.tenant.as_str();
    let (w, r) = (a.write.as_str(), a.read.as_str());
    let post = |what| Row::new(what, Method::POST, "/v1/events");
    let get = |what, path: &str| Row::new(what, Method::GET, path).token(w);
    let past_u64 = "18446744073709551616";
    let rows = vec![
        // 400 invalid_body.
        post("malformed json")
            .token(w)
            .json("{")
            .answers(400, "invalid_body"),
        post("truncated json")
            .token(w)
            .json(valid(5)[..20].to_owned())
            .answers(400, "invalid_body"),
        post("empty body")
            .token(w)
            .json("")
            .answers(400, "invalid_body"),
        post("events not an array")
            .token(w)
            .json(r#"{"events": 3}"#)
            .answers(400, "invalid_body"),
        post("no events field")
            .token(w)
            .json("{}")
            .answers(400, "invalid_body"),
        post("body an array")
            .token(w)
            .json(json!([valid_event(6)]).to_string())
            .answers(400, "invalid_body"),
        post("event without id")
            .token(w)
            .json(r#"{"events": [{}]}"#)
            .answers(400, "invalid_body"),
        post("invalid gzip")
            .token(w)
            .json("nope")
            .header("content-encoding", "gzip")
            .answers(400, "invalid_body"),
        post("truncated gzip")
            .token(w)
            .json(truncated_gzip)
            .header("content-encoding", "gzip")
            .answers(400, "invalid_body"),
        post("invalid zstd")
            .token(w)
            .json("nope")
            .header("content-encoding", "zstd")
            .answers(400, "invalid_body"),
        // 400 invalid_query.
        get("negative after", "/v1/events?after=-1").answers(400, "invalid_query"),
        get("fractional after", "/v1/events?after=1.5").answers(400, "invalid_query"),
        get("after not a number", "/v1/events?after=ten").answers(400, "invalid_query"),
        get("after past u64", &format!("/v1/events?after={past_u64}"))
            .answers(400, "invalid_query"),
        get("after empty", "/v1/events?after=").answers(400, "invalid_query"),
        get("after twice", "/v1/events?after=1&after=2").answers(400, "invalid_query"),
        get("limit zero", "/v1/events?limit=0").answers(400, "invalid_query"),
        get("negative limit", "/v1/events?limit=-5").answers(400, "invalid_query"),
        get(
            "limit too big",
            &format!("/v1/events?limit={}", MAX_PAGE_SIZE + 1),
        )
        .answers(400, "invalid_query"),
        get("limit past u64", &format!("/v1/events?limit={past_u64}"))
            .answers(400, "invalid_query"),
        get("limit not a number", "/v1/events?limit=ten").answers(400, "invalid_query"),
        get("stream: negative after", "/v1/stream?after=-1").answers(400, "invalid_query"),
        get("stream: limit zero", "/v1/stream?limit=0").answers(400, "invalid_query"),
        get("stream: Last-Event-ID not a number", "/v1/stream")
            .header("last-event-id", "x1")
            .answers(400, "invalid_query"),
        get("stream: negative Last-Event-ID", "/v1/stream")
            .header("last-event-id", "-1")
            .answers(400, "invalid_query"),
        get("stream: Last-Event-ID past u64", "/v1/stream")
            .header("last-event-id", past_u64)
            .answers(400, "invalid_query"),
        // 401 unauthorized.
        Row::new("missing token", Method::GET, "/v1/head").answers(401, "unauthorized"),
        post("missing token pushing")
            .json(valid(7))
            .answers(401, "unauthorized"),
        Row::new("unknown token", Method::GET, "/v1/head")
            .token("nope")
            .answers(401, "unauthorized"),
        post("unknown token pushing")
            .token("nope")
            .json(valid(8))
            .answers(401, "unauthorized"),
        Row::new("not a bearer token", Method::GET, "/v1/head")
            .header("authorization", format!("Basic {w}"))
            .answers(401, "unauthorized"),
        Row::new("empty bearer token", Method::GET, "/v1/events")
            .header("authorization", "Bearer ")
            .answers(401, "unauthorized"),
        Row::new("unknown token streaming", Method::GET, "/v1/stream")
            .token("nope")
            .answers(401, "unauthorized"),
        // 403 forbidden.
        post("read token pushing")
            .token(r)
            .json(valid(9))
            .answers(403, "forbidden"),
        post("other tenant by header, pushing")
            .token(w)
            .header(TENANT_HEADER, other)
            .json(valid(10))
            .answers(403, "forbidden"),
        Row::new(
            "other tenant by query, pushing",
            Method::POST,
            format!("/v1/events?tenant={other}"),
        )
        .token(w)
        .json(valid(11))
        .answers(403, "forbidden"),
        get("other tenant by header", "/v1/head")
            .header(TENANT_HEADER, other)
            .answers(403, "forbidden"),
        get(
            "other tenant by query",
            &format!("/v1/events?tenant={other}"),
        )
        .answers(403, "forbidden"),
        get(
            "other tenant, stream",
            &format!("/v1/stream?tenant={other}"),
        )
        .answers(403, "forbidden"),
        get("other tenant, aggregate", "/v1/aggregates/x")
            .header(TENANT_HEADER, other)
            .answers(403, "forbidden"),
        // 404 not_found.
        get("unknown path", "/v2/nothing").answers(404, "not_found"),
        get("unknown path under v1", "/v1/event").answers(404, "not_found"),
        Row::new("unknown path, pushing", Method::POST, "/v1/push")
            .token(w)
            .json(valid(12))
            .answers(404, "not_found"),
        // 405 method_not_allowed, with Allow.
        Row::new("DELETE /v1/events", Method::DELETE, "/v1/events")
            .token(w)
            .answers(405, "method_not_allowed")
            .allow("GET, POST"),
        Row::new("PUT /v1/events", Method::PUT, "/v1/events")
            .token(w)
            .json(valid(13))
            .answers(405, "method_not_allowed")
            .allow("GET, POST"),
        Row::new("PUT /v1/head", Method::PUT, "/v1/head")
            .token(w)
            .answers(405, "method_not_allowed")
            .allow("GET"),
        Row::new("POST /v1/head", Method::POST, "/v1/head")
            .token(w)
            .json(valid(14))
            .answers(405, "method_not_allowed")
            .allow("GET"),
        Row::new("POST /v1/stream", Method::POST, "/v1/stream")
            .token(w)
            .json(valid(15))
            .answers(405, "method_not_allowed")
            .allow("GET"),
        Row::new("PATCH /v1/aggregates/x", Method::PATCH, "/v1/aggregates/x")
            .token(w)
            .answers(405, "method_not_allowed")
            .allow("GET"),
        // 413 payload_too_large.
        post("batch over max_batch")
            .token(w)
            .json(over_batch)
            .answers(413, "payload_too_large"),
        post("body over max_body")
            .token(w)
            .json(too_big.clone())
            .raw(Framing::Sized)
            .answers(413, "payload_too_large"),
        post("chunked body over max_body")
            .token(w)
            .json(too_big)
            .raw(Framing::Chunked)
            .answers(413, "payload_too_large"),
        post("gzip past max_decompressed")
            .token(w)
            .json(gzip_bomb)
            .header("content-encoding", "gzip")
            .answers(413, "payload_too_large"),
        post("zstd past max_decompressed")
            .token(w)
            .json(zstd_bomb)
            .header("content-encoding", "zstd")
            .answers(413, "payload_too_large"),
        // 415 unsupported_media_type.
        post("text/plain")
            .token(w)
            .header("content-type", "text/plain")
            .body(valid(16))
            .answers(415, "unsupported_media_type"),
        post("no content type")
            .token(w)
            .body(valid(17))
            .answers(415, "unsupported_media_type"),
        post("form content type")
            .token(w)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(valid(18))
            .answers(415, "unsupported_media_type"),
        post("br encoding")
            .token(w)
            .json(valid(19))
            .header("content-encoding", "br")
            .answers(415, "unsupported_media_type"),
        post("deflate encoding")
            .token(w)
            .json(valid(20))
            .header("content-encoding", "deflate")
            .answers(415, "unsupported_media_type"),
    ];
    let heads = |hub: &HubClient| {
        let hub = hub.clone();
        async move { (hub.head(&a.read).await, hub.head(&b.read).await) }
    };
    let before = heads(&hub).await;
    for row in &rows {
        let answer = row.send(&hub).await;
        answer.assert_error(row.status, row.code, row.what);
        if let Some(allow) = row.allow {
            let got = answer.headers.get(ALLOW).and_then(|v| v.to_str().ok());
            assert_eq!(got, Some(allow), "{}: the Allow header", row.what);
        }
        assert_eq!(
            heads(&hub).await,
            before,
            "{}: a refused request changed a head",
            row.what
        );
    }

    // The contrast: right at each limit, and in each accepted form, a push is stored.
    let auth = bearer(w);
    let json_type = "application/json";
    let accepted = [
        (
            "a batch of exactly max_batch events",
            json_type,
            None,
            Bytes::from(batch(limits.max_batch)),
        ),
        (
            "a body of exactly max_body bytes",
            json_type,
            None,
            Bytes::from(padded(valid(21).as_bytes(), limits.max_body)),
        ),
        (
            "a gzip body",
            json_type,
            Some("gzip"),
            Bytes::from(gzip(valid(22).as_bytes())),
        ),
        (
            "a zstd body",
            json_type,
            Some("zstd"),
            Bytes::from(zstd(valid(23).as_bytes())),
        ),
        (
            "a charset parameter",
            "application/json; charset=utf-8",
            None,
            Bytes::from(valid(24)),
        ),
    ];
    let mut head = before.0;
    for (what, content_type, encoding, body) in accepted {
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", content_type),
        ];
        headers.extend(encoding.map(|e| ("content-encoding", e)));
        let answer = hub.call(Method::POST, "/v1/events", &headers, body).await;
        let body = answer.ok_json(what);
        let results = body["results"].as_array().cloned().unwrap_or_default();
        assert!(!results.is_empty(), "{what}: {body}");
        assert!(
            results.iter().all(|r| r["status"] == "accepted"),
            "{what}: {body}"
        );
        let now = hub.head(&a.read).await;
        assert!(now > head, "{what}: the head did not move");
        head = now;
    }
    assert_eq!(
        hub.head(&b.read).await,
        before.1,
        "the other tenant is untouched"
    );
}

// ---------------------------------------------------------------------------------------------
// Check: tenant isolation.
// ---------------------------------------------------------------------------------------------

/// How a request names a tenant: `tenant=` query values and `x-synckit-tenant` header values.
#[derive(Debug, Clone)]
struct Naming {
    query: Vec<String>,
    headers: Vec<String>,
    /// Whether each tenant is named plainly, at most once per place. An odd naming may be
    /// refused or served from the token's own tenant.
    plain: bool,
    /// Whether the hub must refuse with 403: it plainly names the other tenant.
    must_refuse: bool,
}

impl Naming {
    fn plain(query: Option<&str>, header: Option<&str>, other: &str) -> Naming {
        Naming {
            query: query.into_iter().map(str::to_owned).collect(),
            headers: header.into_iter().map(str::to_owned).collect(),
            plain: true,
            must_refuse: query == Some(other) || header == Some(other),
        }
    }

    fn odd(query: &[&str], headers: &[&str]) -> Naming {
        Naming {
            query: query.iter().map(|s| (*s).to_owned()).collect(),
            headers: headers.iter().map(|s| (*s).to_owned()).collect(),
            plain: false,
            must_refuse: false,
        }
    }

    /// `&tenant=...` for each query value, percent-encoded values passed as given.
    fn query_suffix(&self) -> String {
        self.query.iter().map(|t| format!("&tenant={t}")).collect()
    }

    fn path(&self, path: &str) -> String {
        let suffix = self.query_suffix();
        match (path.contains('?'), suffix.strip_prefix('&')) {
            (_, None) => path.to_owned(),
            (true, Some(_)) => format!("{path}{suffix}"),
            (false, Some(rest)) => format!("{path}?{rest}"),
        }
    }
}

/// The ways a request may name a tenant, for a token of `me`.
fn namings(me: &str, other: &str) -> Vec<Naming> {
    let mut out = Vec::new();
    for query in [None, Some(me), Some(other)] {
        for header in [None, Some(me), Some(other)] {
            out.push(Naming::plain(query, header, other));
        }
    }
    let encoded: String = other.bytes().map(|b| format!("%{b:02X}")).collect();
    let upper = other.to_uppercase();
    let padded = format!(" {other} ");
    out.extend([
        Naming::odd(&[], &[me, other]),
        Naming::odd(&[], &[other, me]),
        Naming::odd(&[me, other], &[]),
        Naming::odd(&[other, me], &[]),
        Naming::odd(&[&encoded], &[]),
        Naming::odd(&[&upper], &[&upper]),
        Naming::odd(&[], &[&padded]),
        Naming::odd(&[""], &[""]),
    ]);
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Push,
    Pull,
    Head,
    Aggregate,
    Stream,
}

/// What one tenant holds, as its own clean read token sees it.
struct View {
    head: u64,
    /// Every event after the check started, in order.
    events: Vec<Value>,
}

/// Send one request of the isolation check: a push when `body` is given, else a `GET`. A
/// stream that is served is read for `count` events, then dropped.
async fn probe(
    hub: &HubClient,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
    count: usize,
    what: &str,
) -> (Answer, Vec<Value>) {
    if let Some(body) = body {
        let mut headers = headers.to_vec();
        headers.push(("content-type", "application/json"));
        return (
            hub.call(Method::POST, path, &headers, body).await,
            Vec::new(),
        );
    }
    if !path.starts_with("/v1/stream") {
        return (
            hub.call(Method::GET, path, headers, Bytes::new()).await,
            Vec::new(),
        );
    }
    let response = hub
        .open(Method::GET, path, headers, Full::new(Bytes::new()).boxed())
        .await;
    if response.status() != StatusCode::OK {
        return (hub.complete(what, response).await, Vec::new());
    }
    let head = Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: Bytes::new(),
    };
    let mut stream = EventStream::new(what.to_owned(), response.into_body());
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(stream.next_event().await.event);
    }
    (head, events)
}

/// Tenant A can neither read nor write tenant B, and B not A, with any combination of token
/// (read, write, admin), `tenant=` query parameter and `x-synckit-tenant` header, for push,
/// pull, head, aggregate and stream. A request that plainly names the other tenant is refused
/// with 403 and changes nothing; one that names it oddly (twice, percent-encoded, in another
/// case, padded, empty) is refused or served from the token's own tenant only. Both tenants hold
/// events with the same id and on the same aggregate, and no answer to one tenant ever contains
/// the other's private marker.
pub async fn check_tenant_isolation(url: &str, a: &TenantTokens, b: &TenantTokens) {
    assert_ne!(a.tenant, b.tenant, "two different tenants");
    for t in [a, b] {
        assert!(
            t.tenant
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "tenant {:?}: the check puts tenant names in URLs as they are",
            t.tenant
        );
    }
    let hub = HubClient::new(url);
    let run = nonce();
    let shared = format!("shared-{run}");
    let marker = |t: &TenantTokens| format!("private-{}-{run}", t.tenant);
    let only = |t: &TenantTokens| format!("only-{}-{run}", t.tenant);
    let mut base = [0; 2];
    for (i, (t, count)) in [(a, 3), (b, 5)].into_iter().enumerate() {
        base[i] = hub.head(&t.read).await;
        // The same ids in both tenants: ids are per tenant, so each is accepted.
        let mut events: Vec<Value> = (0..count)
            .map(|n| event(&format!("{run}-{n}"), &shared, json!({"marker": marker(t)})))
            .collect();
        events.push(event(
            &format!("{run}-only"),
            &only(t),
            json!({"marker": marker(t)}),
        ));
        hub.push_accepted(&t.write, events).await;
    }
    let view = |t: &TenantTokens, after: u64| {
        let hub = hub.clone();
        let read = t.read.clone();
        async move {
            View {
                head: hub.head(&read).await,
                events: hub.events_after(&read, after).await,
            }
        }
    };
    let mut views = [view(a, base[0]).await, view(b, base[1]).await];
    for (i, t) in [a, b].into_iter().enumerate() {
        assert_eq!(
            views[i].events.len(),
            if i == 0 { 4 } else { 6 },
            "seeded {}",
            t.tenant
        );
        assert!(
            views[i]
                .events
                .iter()
                .all(|e| e["data"]["marker"] == marker(t)),
            "{} sees events it did not push",
            t.tenant
        );
    }

    let mut pushed = 0;
    for (me, other, mine) in [(a, b, 0), (b, a, 1)] {
        let theirs = 1 - mine;
        let leaked = marker(other);
        for (role, token) in me.by_role() {
            let auth = bearer(token);
            for naming in namings(&me.tenant, &other.tenant) {
                for op in [Op::Push, Op::Pull, Op::Head, Op::Aggregate, Op::Stream] {
                    let what = format!(
                        "{role} token of {} {op:?} with query {:?} and headers {:?}",
                        me.tenant, naming.query, naming.headers
                    );
                    let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth)];
                    headers.extend(naming.headers.iter().map(|h| (TENANT_HEADER, h.as_str())));
                    let refused_by_role = op == Op::Push && role == "read";
                    let must_serve = naming.plain && !naming.must_refuse && !refused_by_role;
                    let before_other = hub.head(&other.read).await;
                    let (path, body) = match op {
                        Op::Push => {
                            pushed += 1;
                            let id = format!("{run}-push-{pushed}");
                            let new = event(&id, &shared, json!({"marker": marker(me)}));
                            let body = json!({ "events": [new] }).to_string();
                            ("/v1/events".to_owned(), Some(body))
                        }
                        Op::Pull => {
                            let after = base[mine];
                            (
                                format!("/v1/events?after={after}&limit={MAX_PAGE_SIZE}"),
                                None,
                            )
                        }
                        Op::Head => ("/v1/head".to_owned(), None),
                        Op::Aggregate => (format!("/v1/aggregates/{shared}"), None),
                        Op::Stream => (format!("/v1/stream?after={}", base[mine]), None),
                    };
                    if op == Op::Aggregate {
                        // The other tenant's own aggregate is empty, or the request refused.
                        let path = naming.path(&format!("/v1/aggregates/{}", only(other)));
                        let theirs_only =
                            hub.call(Method::GET, &path, &headers, Bytes::new()).await;
                        assert!(
                            !theirs_only.text().contains(&leaked),
                            "{what}: {}",
                            theirs_only.text()
                        );
                        if must_serve
                            || (theirs_only.status == StatusCode::OK && !naming.must_refuse)
                        {
                            let v = theirs_only.ok_json(&what);
                            let got = (v["version"].clone(), v["events"].clone());
                            assert_eq!(got, (json!(0), json!([])), "{what}: {v}");
                        } else {
                            theirs_only.assert_error(403, "forbidden", &what);
                        }
                    }
                    let count = views[mine].events.len();
                    let path = naming.path(&path);
                    let (answer, frames) = probe(&hub, &path, &headers, body, count, &what).await;
                    assert!(
                        !answer.text().contains(&leaked)
                            && frames.iter().all(|f| !f.to_string().contains(&leaked)),
                        "{what}: the other tenant's data leaked: {}",
                        answer.text()
                    );
                    if naming.must_refuse || refused_by_role || answer.status != StatusCode::OK {
                        assert!(
                            !must_serve,
                            "{what}: refused, though it names only its own tenant: {}",
                            answer.text()
                        );
                        answer.assert_error(403, "forbidden", &what);
                        assert_eq!(
                            hub.head(&me.read).await,
                            views[mine].head,
                            "{what}: a refused request changed its tenant"
                        );
                        assert_eq!(
                            hub.head(&other.read).await,
                            before_other,
                            "{what}: a refused request changed the other tenant"
                        );
                        continue;
                    }
                    let own = &views[mine];
                    match op {
                        Op::Push => {
                            let body = answer.json();
                            assert_eq!(body["results"][0]["status"], "accepted", "{what}: {body}");
                            let after = view(me, base[mine]).await;
                            assert_eq!(
                                after.events.len(),
                                own.events.len() + 1,
                                "{what}: stored once, in its own tenant"
                            );
                            assert_eq!(
                                after.events.last().map(|e| e["seq"].clone()),
                                Some(body["results"][0]["seq"].clone()),
                                "{what}"
                            );
                            views[mine] = after;
                        }
                        Op::Pull => {
                            let body = answer.json();
                            assert_eq!(
                                body["events"],
                                json!(own.events),
                                "{what}: its own events, all of them"
                            );
                            assert_eq!(body["head"], own.head, "{what}");
                        }
                        Op::Head => assert_eq!(answer.json(), json!({"head": own.head}), "{what}"),
                        Op::Aggregate => {
                            let body = answer.json();
                            let expected: Vec<&Value> = own
                                .events
                                .iter()
                                .filter(|e| e["aggregate_id"] == shared.as_str())
                                .collect();
                            assert_eq!(
                                body["events"],
                                json!(expected),
                                "{what}: its own aggregate"
                            );
                            assert_eq!(body["version"], expected.len(), "{what}");
                        }
                        Op::Stream => {
                            assert_eq!(frames, own.events, "{what}: its own events, in order")
                        }
                    }
                    assert_eq!(
                        hub.head(&other.read).await,
                        before_other,
                        "{what}: the other tenant changed"
                    );
                    assert_eq!(
                        views[theirs].head, before_other,
                        "{what}: the other tenant changed"
                    );
                }
            }
        }
    }
    for (i, (t, other)) in [(a, b), (b, a)].into_iter().enumerate() {
        let now = view(t, base[i]).await;
        assert_eq!(
            now.events, views[i].events,
            "{} changed behind the check",
            t.tenant
        );
        assert!(
            now.events.iter().all(|e| e["data"]["marker"] == marker(t)),
            "{} holds an event of {}",
            t.tenant,
            other.tenant
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Check: SSE resume.
// ---------------------------------------------------------------------------------------------

/// `GET /v1/stream` delivers every event after its cursor exactly once, in order, with `id:`
/// the seq; after a dropped connection, a new request with `Last-Event-ID` (which wins over an
/// `after=` query) delivers exactly the events missed meanwhile, including those appended while
/// no one was connected, then live ones, with no duplicate: a sentinel pushed after the
/// expected events is the very next frame. A `Last-Event-ID` at the head delivers only new
/// events.
pub async fn check_sse_resume(url: &str, tenant: &TenantTokens) {
    let hub = HubClient::new(url);
    let run = nonce();
    let auth = bearer(&tenant.read);
    let aggregate = format!("sse-{run}");
    let mut pushed: Vec<(u64, String)> = Vec::new();
    let mut next = 0;
    let mut push = |count: usize| {
        let hub = hub.clone();
        let events: Vec<(Value, String)> = (0..count)
            .map(|_| {
                next += 1;
                let id = format!("{run}-sse-{next}");
                (event(&id, &aggregate, json!({"n": next})), id)
            })
            .collect();
        let write = tenant.write.clone();
        async move {
            let ids: Vec<String> = events.iter().map(|(_, id)| id.clone()).collect();
            let seqs = hub
                .push_accepted(&write, events.into_iter().map(|(e, _)| e).collect())
                .await;
            seqs.into_iter().zip(ids).collect::<Vec<_>>()
        }
    };
    let expect = |got: &StreamedEvent, want: &(u64, String), what: &str| {
        assert_eq!(
            (got.seq, got.event["id"].as_str().unwrap_or("")),
            (want.0, want.1.as_str()),
            "{what}: got {}",
            got.event
        );
    };

    pushed.extend(push(5).await);
    // First connection: a cursor in the query; read two events, then drop the connection with
    // the third unread.
    let mut stream = hub
        .stream(
            &format!("/v1/stream?after={}", pushed[1].0),
            &[("authorization", &auth)],
        )
        .await;
    for want in &pushed[2..4] {
        expect(&stream.next_event().await, want, "first connection");
    }
    let mut last_seen = pushed[3].0;
    let mut delivered = 4;
    drop(stream);

    // Twice: append while disconnected, resume from the last seen id, read part of what was
    // missed, drop again. Then resume once more and read everything that is left.
    for (round, (appended, read)) in [(4, 3), (2, 0)].into_iter().enumerate() {
        pushed.extend(push(appended).await);
        let last = last_seen.to_string();
        // `after=0` would replay everything: Last-Event-ID must win.
        let mut stream = hub
            .stream(
                "/v1/stream?after=0",
                &[("authorization", &auth), ("last-event-id", &last)],
            )
            .await;
        let upto = if read == 0 {
            pushed.len()
        } else {
            delivered + read
        };
        for want in &pushed[delivered..upto] {
            expect(&stream.next_event().await, want, &format!("resume {round}"));
        }
        delivered = upto;
        last_seen = pushed[delivered - 1].0;
        if read == 0 {
            // Everything missed arrived; nothing else may: the sentinel is next, then live ones.
            for live in 0..2 {
                let sentinel = push(1).await;
                expect(
                    &stream.next_event().await,
                    &sentinel[0],
                    &format!("live event {live} after the missed ones"),
                );
                pushed.extend(sentinel);
            }
            delivered = pushed.len();
            last_seen = pushed[delivered - 1].0;
        }
    }

    // Resuming at the head delivers only what comes next.
    let last = last_seen.to_string();
    let mut stream = hub
        .stream(
            "/v1/stream",
            &[("authorization", &auth), ("last-event-id", &last)],
        )
        .await;
    let sentinel = push(1).await;
    expect(
        &stream.next_event().await,
        &sentinel[0],
        "resumed at the head",
    );
    drop(stream);

    let bad = hub
        .call(
            Method::GET,
            "/v1/stream",
            &[("authorization", &auth), ("last-event-id", "x1")],
            Bytes::new(),
        )
        .await;
    bad.assert_error(400, "invalid_query", "Last-Event-ID x1");
}

// ---------------------------------------------------------------------------------------------
// Check: compression.
// ---------------------------------------------------------------------------------------------

/// Answers over 1 KiB are compressed with gzip or zstd when the client accepts it, to the same
/// JSON as the plain answer; small answers and clients that accept nothing stay plain.
pub async fn check_compression(url: &str, tenant: &TenantTokens) {
    let hub = HubClient::new(url);
    let run = nonce();
    let aggregate = format!("zip-{run}");
    // One event per push, so the check fits any configured batch and body limit.
    for n in 0..50 {
        let text = "compressible ".repeat(4);
        let event = event(
            &format!("{run}-zip-{n}"),
            &aggregate,
            json!({ "text": text }),
        );
        hub.push_accepted(&tenant.write, vec![event]).await;
    }
    let auth = bearer(&tenant.read);
    let path = format!("/v1/events?aggregate_id={aggregate}");
    let plain = hub
        .call(
            Method::GET,
            &path,
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert!(
        plain.body.len() > 1024,
        "the answer is large: {} bytes",
        plain.body.len()
    );
    assert!(
        plain.headers.get(CONTENT_ENCODING).is_none(),
        "not compressed unless accepted"
    );
    let expected = plain.ok_json(&path);
    for encoding in ["gzip", "zstd"] {
        let answer = hub
            .call(
                Method::GET,
                &path,
                &[
                    ("authorization", &auth),
                    (ACCEPT_ENCODING.as_str(), encoding),
                ],
                Bytes::new(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{encoding}: {}",
            answer.text()
        );
        let got = answer
            .headers
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            got,
            Some(encoding),
            "a large answer is compressed with {encoding}"
        );
        assert!(
            answer.body.len() < plain.body.len(),
            "{encoding} made it smaller"
        );
        let decoded = match encoding {
            "gzip" => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&answer.body[..]),
                    &mut out,
                )
                .expect("valid gzip");
                out
            }
            _ => zstd::decode_all(&answer.body[..]).expect("valid zstd"),
        };
        let decoded: Value = serde_json::from_slice(&decoded).expect("JSON inside");
        assert_eq!(decoded, expected, "{encoding}: the same answer");
    }
    let small = hub
        .call(
            Method::GET,
            "/v1/head",
            &[("authorization", &auth), (ACCEPT_ENCODING.as_str(), "gzip")],
            Bytes::new(),
        )
        .await;
    assert_eq!(small.status, StatusCode::OK);
    assert!(
        small.headers.get(CONTENT_ENCODING).is_none(),
        "small answers stay plain"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sse_parser_follows_the_framing_rules() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nid: 7\nevent: ev").is_empty());
        let frames = p.feed(b"ent\r\ndata: {\"a\":\ndata:1}\n\nevent: close\ndata: x\n\n");
        assert_eq!(
            frames,
            [
                SseFrame {
                    id: Some("7".into()),
                    event: "event".into(),
                    data: "{\"a\":\n1}".into()
                },
                SseFrame {
                    id: None,
                    event: "close".into(),
                    data: "x".into()
                },
            ]
        );
    }

    #[test]
    fn bombs_decompress_to_the_size_asked_for() {
        let prefix = br#"{"events": []}"#;
        for total in [prefix.len(), 100, (1 << 20) + 17, 3 << 20] {
            let body = bomb(prefix, total, gzip);
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut out)
                .unwrap();
            assert_eq!(out.len(), total);
            assert!(out.starts_with(prefix));
            let out = zstd::decode_all(&bomb(prefix, total, zstd)[..]).unwrap();
            assert_eq!(out.len(), total);
        }
    }

    #[test]
    fn naming_paths() {
        let n = Naming::odd(&["a", "b"], &[]);
        assert_eq!(n.path("/v1/head"), "/v1/head?tenant=a&tenant=b");
        assert_eq!(
            n.path("/v1/events?after=1"),
            "/v1/events?after=1&tenant=a&tenant=b"
        );
        assert_eq!(Naming::odd(&[], &["x"]).path("/v1/head"), "/v1/head");
        assert_eq!(
            namings("a", "b").iter().filter(|n| n.must_refuse).count(),
            5
        );
    }
}
