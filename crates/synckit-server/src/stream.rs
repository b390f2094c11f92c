//! `GET /v1/stream`: Server-Sent Events. Every event after the cursor exactly once, in order,
//! then live ones; `id:` is the seq and `Last-Event-ID` resumes. Idle streams get heartbeats;
//! a subscriber that stops reading is disconnected with a reason once its queue stays full.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use synckit_protocol::parse_pull_query;
use synckit_protocol::sse::{HEARTBEAT, encode_close, encode_event};
use synckit_types::{ReadRequest, Seq, TenantId, parse_u64};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Role;
use crate::error::ApiError;
use crate::hub::SharedHub;
use crate::metrics::SubscriberGuard;
use crate::routes::principal;

/// Events read per page while catching up.
const PAGE: usize = 500;

pub(crate) async fn sse(
    State(hub): State<SharedHub>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query.unwrap_or_default();
    let who = principal(&hub, &headers, &query, Role::Read)?;
    let mut request = parse_pull_query(&query).map_err(|e| ApiError::invalid_query(&e))?;
    request.limit = PAGE;
    if let Some(last) = headers.get("last-event-id") {
        let text = last.to_str().map_err(|_| {
            ApiError::invalid_query(&synckit_types::Error::invalid_input(
                "Last-Event-ID is not text",
            ))
        })?;
        request.after =
            Seq(parse_u64("Last-Event-ID", text).map_err(|e| ApiError::invalid_query(&e))?);
    }
    let (frames, receiver) = mpsc::channel(hub.limits.subscriber_queue);
    let (close, closed) = oneshot::channel();
    // Watch before the first read, so an event committed meanwhile is not missed.
    let generation = hub.notifier.subscribe(&who.tenant);
    tokio::spawn(produce(
        hub.clone(),
        who.tenant,
        request,
        generation,
        frames,
        close,
    ));
    let body = Body::from_stream(futures::stream::unfold(
        BodyState::Live(receiver, closed),
        next_frame,
    ));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

enum BodyState {
    Live(mpsc::Receiver<Bytes>, oneshot::Receiver<String>),
    Drain(mpsc::Receiver<Bytes>),
    Done,
}

async fn next_frame(state: BodyState) -> Option<(Result<Bytes, Infallible>, BodyState)> {
    match state {
        BodyState::Done => None,
        BodyState::Drain(mut rx) => rx.recv().await.map(|b| (Ok(b), BodyState::Drain(rx))),
        BodyState::Live(mut rx, mut closed) => {
            tokio::select! {
                biased;
                reason = &mut closed => match reason {
                    Ok(frame) => Some((Ok(Bytes::from(frame)), BodyState::Done)),
                    Err(_) => rx.recv().await.map(|b| (Ok(b), BodyState::Drain(rx))),
                },
                frame = rx.recv() => match frame {
                    Some(b) => Some((Ok(b), BodyState::Live(rx, closed))),
                    None => closed.await.ok().map(|f| (Ok(Bytes::from(f)), BodyState::Done)),
                },
            }
        }
    }
}

/// Read pages after the cursor into the subscriber's queue, then wait for new events.
async fn produce(
    hub: SharedHub,
    tenant: TenantId,
    mut request: ReadRequest,
    mut generation: watch::Receiver<u64>,
    frames: mpsc::Sender<Bytes>,
    close: oneshot::Sender<String>,
) {
    let _live = SubscriberGuard::new(&hub.metrics.subscribers);
    let limits = hub.limits.clone();
    loop {
        let page = match hub.store.read(&tenant, &request).await {
            Ok(page) => page,
            Err(e) => {
                let _ = close.send(encode_close("store_error", &e.to_string()));
                return;
            }
        };
        for event in &page.events {
            let frame = match encode_event(event) {
                Ok(frame) => Bytes::from(frame),
                Err(e) => {
                    let _ = close.send(encode_close("internal", &e.to_string()));
                    return;
                }
            };
            match tokio::time::timeout(limits.slow_subscriber, frames.send(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(%tenant, "disconnecting a slow subscriber");
                    let _ = close.send(encode_close(
                        "slow_subscriber",
                        "the subscriber did not keep up; resume with Last-Event-ID",
                    ));
                    return;
                }
            }
        }
        request.after = page.next;
        if page.has_more {
            continue;
        }
        loop {
            tokio::select! {
                _ = hub.shutdown.cancelled() => {
                    let _ = close.send(encode_close("shutting_down", "the hub is shutting down"));
                    return;
                }
                _ = frames.closed() => return,
                changed = generation.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep(limits.heartbeat) => {
                    // A full queue already keeps the stream busy; no heartbeat needed then.
                    let _ = frames.try_send(Bytes::from_static(HEARTBEAT.as_bytes()));
                }
            }
        }
    }
}
