//! `GET /v1/stream`: Server-Sent Events. Every event after the cursor exactly once, in order,
//! then live ones; `id:` is the seq and `Last-Event-ID` resumes. Idle streams get heartbeats;
//! a subscriber that stops reading is disconnected with a reason once its queue stays full.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use std::sync::Arc;
use synckit_protocol::parse_pull_query;
use synckit_protocol::sse::{HEARTBEAT, encode_close, encode_event};
use synckit_types::{ReadRequest, Seq, TenantId, parse_u64};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::Role;
use crate::error::ApiError;
use crate::guard::SubscriberSlot;
use crate::hub::SharedHub;
use crate::metrics::SubscriberGuard;
use crate::notify::Committed;
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
    let slot = hub.subscribers.acquire(&who.tenant)?;
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
    let announcements = hub.notifier.subscribe(&who.tenant);
    tokio::spawn(produce(
        hub.clone(),
        who.tenant,
        request,
        announcements,
        frames,
        close,
        slot,
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

/// What the live phase of a stream ended with.
enum Live {
    /// Events may have been missed (a gap, a lag, or an append announced without its
    /// events): read the store from the cursor.
    CatchUp,
    /// The stream is over (closed by either side, or the hub shuts down).
    Done,
}

/// Read pages after the cursor into the subscriber's queue, then forward live appends as they
/// are announced, falling back to the store whenever an announcement does not follow on.
async fn produce(
    hub: SharedHub,
    tenant: TenantId,
    mut request: ReadRequest,
    mut announcements: broadcast::Receiver<Arc<Committed>>,
    frames: mpsc::Sender<Bytes>,
    close: oneshot::Sender<String>,
    _slot: SubscriberSlot,
) {
    let _live = SubscriberGuard::new(&hub.metrics.subscribers);
    let mut close = Some(close);
    let mut shut = |code: &str, message: &str| {
        if let Some(close) = close.take() {
            let _ = close.send(encode_close(code, message));
        }
    };
    loop {
        // Catch up from the store.
        loop {
            let page = match hub.store.read(&tenant, &request).await {
                Ok(page) => page,
                Err(e) => return shut("store_error", &e.to_string()),
            };
            for event in &page.events {
                let frame = match encode_event(event) {
                    Ok(frame) => Bytes::from(frame),
                    Err(e) => return shut("internal", &e.to_string()),
                };
                if !forward(&hub, &tenant, &frames, frame, &mut shut).await {
                    return;
                }
            }
            request.after = page.next;
            if !page.has_more {
                break;
            }
        }
        // Live: announcements that follow on from the cursor are forwarded as they are.
        match live(
            &hub,
            &tenant,
            &mut request,
            &mut announcements,
            &frames,
            &mut shut,
        )
        .await
        {
            Live::CatchUp => continue,
            Live::Done => return,
        }
    }
}

async fn live(
    hub: &SharedHub,
    tenant: &TenantId,
    request: &mut ReadRequest,
    announcements: &mut broadcast::Receiver<Arc<Committed>>,
    frames: &mpsc::Sender<Bytes>,
    shut: &mut impl FnMut(&str, &str),
) -> Live {
    let every = hub.limits.heartbeat;
    // One timer for the whole live phase rather than one per announcement: a tick sends a
    // heartbeat unless a frame went out since the previous tick, so an idle stream hears
    // from the hub within two intervals.
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut busy = false;
    loop {
        let committed = tokio::select! {
            _ = hub.shutdown.cancelled() => {
                shut("shutting_down", "the hub is shutting down");
                return Live::Done;
            }
            _ = frames.closed() => return Live::Done,
            received = announcements.recv() => match received {
                Ok(committed) => committed,
                Err(broadcast::error::RecvError::Lagged(_)) => return Live::CatchUp,
                Err(broadcast::error::RecvError::Closed) => return Live::Done,
            },
            _ = beat.tick() => {
                if !busy {
                    // A full queue already keeps the stream busy; no heartbeat needed then.
                    let _ = frames.try_send(Bytes::from_static(HEARTBEAT.as_bytes()));
                }
                busy = false;
                continue;
            }
        };
        let cursor = request.after;
        if committed.last <= cursor {
            continue; // already sent from the store
        }
        if committed.first.get() > cursor.get().saturating_add(1) {
            return Live::CatchUp; // an append in between is not announced yet, or was missed
        }
        let (Some(events), Some(encoded)) = (committed.events.as_ref(), committed.frames()) else {
            return Live::CatchUp;
        };
        for (event, frame) in events.iter().zip(encoded) {
            if event.seq <= cursor {
                continue;
            }
            if request.filter.matches(&event.event) {
                if !forward(hub, tenant, frames, frame.clone(), shut).await {
                    return Live::Done;
                }
                busy = true;
            }
            request.after = event.seq;
        }
    }
}

/// Queue one frame, waiting at most the slow-subscriber limit. `false`: the stream is over.
async fn forward(
    hub: &SharedHub,
    tenant: &TenantId,
    frames: &mpsc::Sender<Bytes>,
    frame: Bytes,
    shut: &mut impl FnMut(&str, &str),
) -> bool {
    // The common case, room in the queue, needs no timer.
    let frame = match frames.try_send(frame) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(frame)) => frame,
    };
    match tokio::time::timeout(hub.limits.slow_subscriber, frames.send(frame)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            tracing::warn!(%tenant, "disconnecting a slow subscriber");
            shut(
                "slow_subscriber",
                "the subscriber did not keep up; resume with Last-Event-ID",
            );
            false
        }
    }
}
