//! `WsTransport`: the `Transport` contract over protocol v1 WebSocket messages.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use synckit_protocol::ws::{ClientMessage, ServerMessage};
use synckit_protocol::{ErrorObject, PushResponse};
use synckit_types::{
    AppendReport, Error, ErrorKind, Event, Page, ReadRequest, Result, Seq, StoredEvent,
    Subscription, Transport,
};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Reply = oneshot::Sender<Result<ServerMessage>>;

/// How to reach a hub over WebSocket.
#[derive(Clone, PartialEq, Eq)]
pub struct WsConfig {
    /// `http://HOST:PORT` or `ws://HOST:PORT` of the hub.
    pub url: String,
    /// Bearer token; none for an anonymous hub.
    pub token: Option<String>,
    /// Deadline of one request, connecting included (default 30 s).
    pub request_timeout: Duration,
}

impl std::fmt::Debug for WsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl WsConfig {
    fn endpoint(&self) -> Result<String> {
        let base = self.url.trim_end_matches('/');
        let rest = if let Some(rest) = base.strip_prefix("http://") {
            rest
        } else if let Some(rest) = base.strip_prefix("ws://") {
            rest
        } else {
            return Err(Error::config(format!(
                "hub URL {:?} must start with http:// or ws://",
                self.url
            )));
        };
        if rest.is_empty() {
            return Err(Error::config(format!("hub URL {:?} has no host", self.url)));
        }
        Ok(format!("ws://{rest}/v1/ws"))
    }
}

/// A WebSocket client of one hub, for one token.
#[derive(Debug)]
pub struct WsTransport {
    config: WsConfig,
    endpoint: String,
    connection: Mutex<Option<Connection>>,
}

#[derive(Debug)]
struct Connection {
    requests: mpsc::Sender<(ClientMessage, Reply)>,
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsTransport {
    /// A transport to the hub at `url` (connects on first use).
    pub fn new(url: &str, token: Option<String>) -> Result<WsTransport> {
        WsTransport::with_config(WsConfig {
            url: url.to_owned(),
            token,
            request_timeout: Duration::from_secs(30),
        })
    }

    /// A transport with explicit settings.
    pub fn with_config(config: WsConfig) -> Result<WsTransport> {
        let endpoint = config.endpoint()?;
        if config.request_timeout.is_zero() {
            return Err(Error::config("request_timeout must be greater than zero"));
        }
        Ok(WsTransport {
            config,
            endpoint,
            connection: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<Socket> {
        let mut request = self
            .endpoint
            .as_str()
            .into_client_request()
            .map_err(|e| Error::config(format!("hub URL {}: {e}", self.endpoint)))?;
        if let Some(token) = &self.config.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| Error::config("the token is not a valid header value"))?;
            request.headers_mut().insert("authorization", value);
        }
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| connect_error(&self.endpoint, e))?;
        Ok(socket)
    }

    /// Send one request on the shared connection and wait for its answer.
    async fn request(&self, make: impl FnOnce(u64) -> ClientMessage) -> Result<ServerMessage> {
        let exchange = async {
            let (reply, answer) = oneshot::channel();
            {
                let mut slot = self.connection.lock().await;
                let usable = slot.as_ref().is_some_and(|c| !c.task.is_finished());
                if !usable {
                    let socket = self.connect().await?;
                    let (requests, incoming) = mpsc::channel(64);
                    *slot = Some(Connection {
                        requests,
                        task: tokio::spawn(drive(socket, incoming)),
                    });
                }
                let connection = slot
                    .as_ref()
                    .ok_or_else(|| Error::internal("no connection"))?;
                connection
                    .requests
                    .send((make(0), reply))
                    .await
                    .map_err(|_| Error::unavailable("the hub connection closed"))?;
            }
            answer
                .await
                .map_err(|_| Error::unavailable("the hub connection closed before answering"))?
        };
        tokio::time::timeout(self.config.request_timeout, exchange)
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!("no answer within {:?}", self.config.request_timeout),
                )
            })?
    }
}

fn connect_error(endpoint: &str, e: tokio_tungstenite::tungstenite::Error) -> Error {
    use tokio_tungstenite::tungstenite::Error as WsError;
    match e {
        WsError::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<synckit_protocol::ErrorBody>(b).ok())
                .unwrap_or_else(|| synckit_protocol::ErrorBody::new("unknown", "no error body"));
            body.into_error(status)
                .context(format!("opening {endpoint}"))
        }
        other => Error::unavailable(format!("cannot reach {endpoint}: {other}")),
    }
}

fn hub_error(error: ErrorObject) -> Error {
    let kind = match error.code.as_str() {
        "invalid_input" | "invalid_query" | "invalid_body" => ErrorKind::InvalidInput,
        "forbidden" => ErrorKind::Forbidden,
        "unauthorized" => ErrorKind::Unauthorized,
        "payload_too_large" => ErrorKind::LimitExceeded,
        "unavailable" | "shutting_down" | "slow_subscriber" => ErrorKind::Unavailable,
        _ => ErrorKind::Protocol,
    };
    Error::new(
        kind,
        format!("hub answered {}: {}", error.code, error.message),
    )
}

/// Own the shared socket: number requests, match answers, fail everything when it breaks.
async fn drive(mut socket: Socket, mut incoming: mpsc::Receiver<(ClientMessage, Reply)>) {
    let mut pending: HashMap<u64, Reply> = HashMap::new();
    let mut next_id: u64 = 1;
    let failure = loop {
        tokio::select! {
            request = incoming.recv() => {
                let Some((mut message, reply)) = request else { break None };
                let id = next_id;
                next_id += 1;
                set_id(&mut message, id);
                let text = match serde_json::to_string(&message) {
                    Ok(text) => text,
                    Err(e) => { let _ = reply.send(Err(Error::internal(format!("encoding: {e}")))); continue; }
                };
                pending.insert(id, reply);
                if let Err(e) = socket.send(Message::Text(text.into())).await {
                    break Some(format!("sending failed: {e}"));
                }
            }
            message = socket.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None => break Some("the hub closed the connection".to_owned()),
                    Some(Err(e)) => break Some(format!("connection failed: {e}")),
                    Some(Ok(_)) => continue,
                };
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(answer) => {
                        let id = answer_id(&answer);
                        match id.and_then(|id| pending.remove(&id)) {
                            Some(reply) => { let _ = reply.send(Ok(answer)); }
                            None => if let ServerMessage::Error { error, .. } = answer {
                                break Some(format!("{}: {}", error.code, error.message));
                            },
                        }
                    }
                    Err(e) => break Some(format!("the hub sent an invalid message: {e}")),
                }
            }
        }
    };
    let reason = failure.unwrap_or_else(|| "the transport was dropped".to_owned());
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err(Error::unavailable(reason.clone())));
    }
}

fn set_id(message: &mut ClientMessage, new: u64) {
    match message {
        ClientMessage::Push { id, .. }
        | ClientMessage::Pull { id, .. }
        | ClientMessage::Head { id }
        | ClientMessage::Subscribe { id, .. } => *id = new,
    }
}

fn answer_id(message: &ServerMessage) -> Option<u64> {
    match message {
        ServerMessage::Pushed { id, .. }
        | ServerMessage::Page { id, .. }
        | ServerMessage::Head { id, .. }
        | ServerMessage::Subscribed { id } => Some(*id),
        ServerMessage::Error { id, .. } => *id,
        ServerMessage::Event { .. } => None,
    }
}

fn unexpected(message: ServerMessage) -> Error {
    match message {
        ServerMessage::Error { error, .. } => hub_error(error),
        other => Error::protocol(format!("unexpected answer: {other:?}")),
    }
}

#[async_trait]
impl Transport for WsTransport {
    async fn push(&self, events: &[Event]) -> Result<AppendReport> {
        let values: Vec<Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).map_err(|e| Error::internal(format!("encoding: {e}"))))
            .collect::<Result<_>>()?;
        match self
            .request(|id| ClientMessage::Push { id, events: values })
            .await?
        {
            ServerMessage::Pushed { results, head, .. } => {
                PushResponse { results, head }.into_report()
            }
            other => Err(unexpected(other)),
        }
    }

    async fn pull(&self, request: &ReadRequest) -> Result<Page> {
        request.validate()?;
        let message = |id| ClientMessage::Pull {
            id,
            after: request.after,
            limit: request.limit,
            filter: request.filter.clone(),
        };
        match self.request(message).await? {
            ServerMessage::Page { page, .. } => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    async fn head(&self) -> Result<Seq> {
        match self.request(|id| ClientMessage::Head { id }).await? {
            ServerMessage::Head { head, .. } => Ok(head),
            other => Err(unexpected(other)),
        }
    }

    async fn subscribe(&self, after: Seq) -> Result<Subscription> {
        let open = async {
            let mut socket = self.connect().await?;
            let text = serde_json::to_string(&ClientMessage::Subscribe { id: 1, after })
                .map_err(|e| Error::internal(format!("encoding: {e}")))?;
            socket
                .send(Message::Text(text.into()))
                .await
                .map_err(|e| Error::unavailable(format!("subscribing failed: {e}")))?;
            // Wait for the confirmation, so a refused subscription fails here.
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(text))) => {
                        match serde_json::from_str::<ServerMessage>(text.as_str()) {
                            Ok(ServerMessage::Subscribed { .. }) => return Ok(socket),
                            Ok(other) => return Err(unexpected(other)),
                            Err(e) => return Err(Error::protocol(format!("invalid message: {e}"))),
                        }
                    }
                    Some(Ok(_)) => continue,
                    _ => return Err(Error::unavailable("the hub closed the subscription")),
                }
            }
        };
        let socket = tokio::time::timeout(self.config.request_timeout, open)
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "subscribing timed out"))??;
        Ok(Box::pin(futures::stream::unfold(
            Some((socket, after)),
            next_event,
        )))
    }
}

async fn next_event(
    state: Option<(Socket, Seq)>,
) -> Option<(Result<StoredEvent>, Option<(Socket, Seq)>)> {
    let (mut socket, last) = state?;
    loop {
        let failure = match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<ServerMessage>(text.as_str()) {
                    Ok(ServerMessage::Event { event }) => {
                        let seq = event.seq;
                        return Some((Ok(event), Some((socket, seq))));
                    }
                    Ok(ServerMessage::Error { error, .. }) => hub_error(error),
                    Ok(_) => continue,
                    Err(e) => Error::protocol(format!("invalid message: {e}")),
                }
            }
            Some(Ok(Message::Close(_))) | None => {
                Error::unavailable(format!("the subscription ended after seq {last}"))
            }
            Some(Err(e)) => {
                Error::unavailable(format!("the subscription broke after seq {last}: {e}"))
            }
            Some(Ok(_)) => continue,
        };
        return Some((Err(failure), None));
    }
}
