//! `GET /v1/ws`: push, pull, head and subscribe over one WebSocket (see `synckit_protocol::ws`).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use synckit_protocol::ErrorObject;
use synckit_protocol::ws::{ClientMessage, ServerMessage};
use synckit_types::{Error, ReadRequest, Seq, TenantId};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::Principal;
use crate::config::Role;
use crate::error::ApiError;
use crate::guard::SubscriberSlot;
use crate::hub::SharedHub;
use crate::metrics::SubscriberGuard;
use crate::routes::principal;

pub(crate) async fn upgrade(
    State(hub): State<SharedHub>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let who = principal(&hub, &headers, query.as_deref().unwrap_or(""), Role::Read)?;
    let max = hub.limits.max_body;
    Ok(ws
        .max_message_size(max)
        .on_upgrade(move |socket| session(hub, who, socket)))
}

fn error_message(id: Option<u64>, code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        id,
        error: ErrorObject {
            code: code.to_owned(),
            message: message.into(),
        },
    }
}

fn full_message(hub: &SharedHub) -> String {
    format!(
        "the tenant already has {} live subscriptions, the limit",
        hub.limits.max_subscribers_per_tenant
    )
}

fn from_error(id: u64, error: &Error) -> ServerMessage {
    let code = match error.kind() {
        synckit_types::ErrorKind::InvalidInput => "invalid_input",
        synckit_types::ErrorKind::LimitExceeded => "payload_too_large",
        synckit_types::ErrorKind::Unavailable => "unavailable",
        _ => "internal",
    };
    error_message(Some(id), code, error.to_string())
}

async fn session(hub: SharedHub, who: Principal, socket: WebSocket) {
    let (mut sink, mut source) = socket.split();
    let (out, mut outbox) = mpsc::channel::<ServerMessage>(hub.limits.subscriber_queue);
    let (kill, mut killed) = oneshot::channel::<ServerMessage>();
    let writer = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                biased;
                last = &mut killed => match last {
                    Ok(last) => { let _ = send(&mut sink, &last).await; break; }
                    Err(_) => match outbox.recv().await { Some(m) => m, None => break },
                },
                next = outbox.recv() => match next { Some(m) => m, None => break },
            };
            if send(&mut sink, &message).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut kill = Some(kill);
    let mut subscription: Option<JoinHandle<()>> = None;
    let mut slot: Option<SubscriberSlot> = None;
    loop {
        let incoming = tokio::select! {
            _ = hub.shutdown.cancelled() => {
                if let Some(k) = kill.take() {
                    let _ = k.send(error_message(None, "shutting_down", "the hub is shutting down"));
                }
                break;
            }
            incoming = source.next() => incoming,
        };
        let text = match incoming {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                let _ = out
                    .send(error_message(
                        None,
                        "invalid_input",
                        "send JSON text frames",
                    ))
                    .await;
                continue;
            }
        };
        let request: ClientMessage = match serde_json::from_str(text.as_str()) {
            Ok(request) => request,
            Err(e) => {
                let _ = out
                    .send(error_message(
                        None,
                        "invalid_input",
                        format!("not a request: {e}"),
                    ))
                    .await;
                continue;
            }
        };
        if let Some(grant) = who.grant
            && let Err(limited) = hub.rate.admit(grant)
        {
            let id = match &request {
                ClientMessage::Push { id, .. }
                | ClientMessage::Pull { id, .. }
                | ClientMessage::Head { id }
                | ClientMessage::Subscribe { id, .. } => *id,
            };
            if out
                .send(error_message(
                    Some(id),
                    limited.code(),
                    "this token is over its request rate",
                ))
                .await
                .is_err()
            {
                break;
            }
            continue;
        }
        let answer = match request {
            ClientMessage::Push { id, events } => match who.require(Role::Write) {
                Err(_) => error_message(Some(id), "forbidden", "this token may not push"),
                Ok(()) => match hub.push_values(&who.tenant, events).await {
                    Ok(r) => ServerMessage::Pushed {
                        id,
                        results: r.results,
                        head: r.head,
                    },
                    Err(e) => from_error(id, &e),
                },
            },
            ClientMessage::Pull {
                id,
                after,
                limit,
                filter,
            } => {
                let request = ReadRequest {
                    after,
                    limit,
                    filter,
                };
                match hub.store.read(&who.tenant, &request).await {
                    Ok(page) => ServerMessage::Page { id, page },
                    Err(e) => from_error(id, &e),
                }
            }
            ClientMessage::Head { id } => match hub.store.head(&who.tenant).await {
                Ok(head) => ServerMessage::Head { id, head },
                Err(e) => from_error(id, &e),
            },
            ClientMessage::Subscribe { id, after } => {
                if let Some(previous) = subscription.take() {
                    previous.abort();
                }
                // The old subscription's slot is freed first, so re-subscribing never counts
                // twice against the tenant's limit.
                drop(slot.take());
                slot = match hub.subscribers.acquire(&who.tenant) {
                    Ok(acquired) => Some(acquired),
                    Err(full) => {
                        let refused = error_message(Some(id), full.code(), full_message(&hub));
                        if out.send(refused).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let (done, slow) = oneshot::channel();
                subscription = Some(tokio::spawn(subscribe(
                    hub.clone(),
                    who.tenant.clone(),
                    id,
                    after,
                    out.clone(),
                    done,
                )));
                // A subscriber that cannot keep up ends the connection with a reason.
                if let Some(k) = kill.take() {
                    let hub = hub.clone();
                    tokio::spawn(async move {
                        if let Ok(message) = slow.await {
                            tracing::warn!(tenant = ?hub.metrics.subscribers.get(), "disconnecting a slow WebSocket subscriber");
                            let _ = k.send(message);
                        }
                    });
                }
                continue;
            }
        };
        if out.send(answer).await.is_err() {
            break;
        }
    }
    if let Some(s) = subscription {
        s.abort();
    }
    drop(slot);
    drop(out);
    let _ = writer.await;
}

async fn send(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    message: &ServerMessage,
) -> Result<(), ()> {
    let text = serde_json::to_string(message).map_err(|_| ())?;
    sink.send(Message::Text(text.into())).await.map_err(|_| ())
}

async fn subscribe(
    hub: SharedHub,
    tenant: TenantId,
    id: u64,
    after: Seq,
    out: mpsc::Sender<ServerMessage>,
    slow: oneshot::Sender<ServerMessage>,
) {
    let _live = SubscriberGuard::new(&hub.metrics.subscribers);
    // Any announcement (or a lag) wakes the reader, which reads the store after its cursor.
    let mut announcements = hub.notifier.subscribe(&tenant);
    if out.send(ServerMessage::Subscribed { id }).await.is_err() {
        return;
    }
    let mut request = ReadRequest::after(after, 500);
    loop {
        let page = match hub.store.read(&tenant, &request).await {
            Ok(page) => page,
            Err(e) => {
                let _ = out.send(from_error(id, &e)).await;
                return;
            }
        };
        for event in page.events {
            let message = ServerMessage::Event { event };
            match tokio::time::timeout(hub.limits.slow_subscriber, out.send(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    let _ = slow.send(error_message(
                        None,
                        "slow_subscriber",
                        "the subscriber did not keep up; reconnect and subscribe after the last seq",
                    ));
                    return;
                }
            }
        }
        request.after = page.next;
        if page.has_more {
            continue;
        }
        tokio::select! {
            received = announcements.recv() => {
                if matches!(received, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            _ = out.closed() => return,
        }
    }
}
