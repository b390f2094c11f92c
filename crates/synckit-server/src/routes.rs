//! The HTTP routes of protocol v1 and the metrics middleware around them.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use synckit_protocol::{AggregateResponse, HeadResponse, PushResponse, parse_pull_query};
use synckit_types::{AggregateId, ErrorKind, Filter, Page, ReadRequest, Seq};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};

use crate::auth::Principal;
use crate::body::read_json;
use crate::config::Role;
use crate::error::ApiError;
use crate::hub::SharedHub;
use crate::{stream, ws};

/// Largest aggregate `GET /v1/aggregates/{id}` returns whole.
const MAX_AGGREGATE_EVENTS: usize = 10_000;

/// The hub's router.
pub fn router(hub: SharedHub) -> Router {
    let compress = CompressionLayer::new()
        .gzip(true)
        .zstd(true)
        .compress_when(SizeAbove::new(1024).and(NotForContentType::SSE));
    Router::new()
        .route(
            "/v1/events",
            post(push).get(pull).fallback(not_allowed("GET, POST")),
        )
        .route("/v1/head", only(get(head), "GET"))
        .route("/v1/aggregates/{id}", only(get(aggregate), "GET"))
        .route("/v1/stream", only(get(stream::sse), "GET"))
        .route("/v1/ws", only(get(ws::upgrade), "GET"))
        .route("/healthz", only(get(healthz), "GET"))
        .route("/readyz", only(get(readyz), "GET"))
        .route("/metrics", only(get(metrics), "GET"))
        .fallback(|| async { ApiError::not_found("no such path") })
        .layer(compress)
        .layer(middleware::from_fn_with_state(hub.clone(), observe))
        .with_state(hub)
}

fn only(route: MethodRouter<SharedHub>, allow: &'static str) -> MethodRouter<SharedHub> {
    route.fallback(not_allowed(allow))
}

fn not_allowed(allow: &'static str) -> impl Fn() -> std::future::Ready<ApiError> + Clone {
    move || std::future::ready(ApiError::method_not_allowed(allow))
}

/// Count every request by route and status, and time it.
async fn observe(State(hub): State<SharedHub>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    hub.metrics
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    hub.metrics
        .duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Authenticate, check the role and any tenant the request names.
pub(crate) fn principal(
    hub: &SharedHub,
    headers: &HeaderMap,
    query: &str,
    role: Role,
) -> Result<Principal, ApiError> {
    let principal = hub.auth.authenticate(headers)?;
    principal.check_named_tenant(headers, query)?;
    principal.require(role)?;
    if let Some(grant) = principal.grant {
        hub.rate.admit(grant)?;
    }
    Ok(principal)
}

async fn push(
    State(hub): State<SharedHub>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PushResponse>, ApiError> {
    let who = principal(&hub, &headers, query.as_deref().unwrap_or(""), Role::Write)?;
    let bytes = read_json(&headers, body, &hub.limits).await?;
    match hub.push_body(&who.tenant, &bytes).await {
        Ok(response) => Ok(Json(response)),
        Err(e) if e.kind() == ErrorKind::InvalidInput => Err(ApiError::invalid_body(e.message())),
        Err(e) => Err(e.into()),
    }
}

async fn pull(
    State(hub): State<SharedHub>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Page>, ApiError> {
    let query = query.unwrap_or_default();
    let who = principal(&hub, &headers, &query, Role::Read)?;
    let request = parse_pull_query(&query).map_err(|e| ApiError::invalid_query(&e))?;
    Ok(Json(hub.store.read(&who.tenant, &request).await?))
}

async fn head(
    State(hub): State<SharedHub>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<HeadResponse>, ApiError> {
    let who = principal(&hub, &headers, query.as_deref().unwrap_or(""), Role::Read)?;
    Ok(Json(HeadResponse {
        head: hub.store.head(&who.tenant).await?,
    }))
}

async fn aggregate(
    State(hub): State<SharedHub>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<AggregateResponse>, ApiError> {
    let who = principal(&hub, &headers, query.as_deref().unwrap_or(""), Role::Read)?;
    let aggregate_id = AggregateId::new(id).map_err(|e| ApiError::invalid_query(&e))?;
    let filter = Filter::aggregate(aggregate_id.clone());
    let mut after = Seq::ZERO;
    let mut events = Vec::new();
    loop {
        let request =
            ReadRequest::after(after, synckit_types::MAX_PAGE_SIZE).with_filter(filter.clone());
        let page = hub.store.read(&who.tenant, &request).await?;
        events.extend(page.events);
        if events.len() > MAX_AGGREGATE_EVENTS {
            return Err(ApiError::too_large(format!(
                "aggregate {aggregate_id} has more than {MAX_AGGREGATE_EVENTS} events; page \
                 through GET /v1/events?aggregate_id=..."
            )));
        }
        after = page.next;
        if !page.has_more {
            break;
        }
    }
    let version = hub
        .store
        .aggregate_version(&who.tenant, &aggregate_id)
        .await?;
    Ok(Json(AggregateResponse {
        aggregate_id,
        version,
        events,
    }))
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(hub): State<SharedHub>) -> Response {
    if hub.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the hub is shutting down",
        )
        .into_response();
    }
    match hub
        .store
        .head(&synckit_types::TenantId::default_tenant())
        .await
    {
        Ok(_) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

async fn metrics(State(hub): State<SharedHub>) -> Result<Response, ApiError> {
    let text = hub.metrics.render()?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
