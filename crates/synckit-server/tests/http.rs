//! The hub over real loopback HTTP: every error row of protocol v1, push and pull semantics,
//! tenancy, compression, health and metrics, and SSE resume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use synckit_server::{Hub, HubConfig, Limits, RunningHub};
use synckit_store_memory::MemoryStore;

struct TestHub {
    hub: RunningHub,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }
}

async fn start(limits: Limits) -> TestHub {
    let config = HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec![
            "wa=a:write".parse().unwrap(),
            "ra=a:read".parse().unwrap(),
            "wb=b:write".parse().unwrap(),
        ],
        limits,
        ..HubConfig::default()
    };
    let hub = Hub::new(Arc::new(MemoryStore::new()), config)
        .unwrap()
        .start()
        .await
        .unwrap();
    TestHub {
        hub,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl TestHub {
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.hub.url()));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn push(&self, token: &str, body: Value) -> Answer {
        let auth = format!("Bearer {token}");
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

    async fn get(&self, token: &str, path: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.call(Method::GET, path, &[("authorization", &auth)], Bytes::new())
            .await
    }
}

fn event(id: &str, aggregate: &str) -> Value {
    json!({"id": id, "kind": "Noted", "aggregate_id": aggregate, "data": {"n": id}})
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn push_outcomes_and_exact_resend_is_duplicate() {
    let t = start(Limits::default()).await;
    let body = json!({"events": [event("e1", "x"), {"id": "e2", "kind": "K", "aggregate_id": "x", "expected_version": 1}]});
    let first = t.push("wa", body.clone()).await;
    assert_eq!(first.status, StatusCode::OK);
    let v = first.json();
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][0]["seq"], 1);
    assert_eq!(v["results"][1]["aggregate_version"], 2);
    assert_eq!(v["head"], 2);
    // The very same request again (no hlc, no origin sent): duplicates with the original seqs.
    let again = t.push("wa", body).await.json();
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(again["results"][0]["seq"], 1);
    assert_eq!(again["head"], 2);

    let mixed = t
        .push(
            "wa",
            json!({"events": [
                {"id": "e1", "kind": "Other", "aggregate_id": "x"},
                {"id": "e3", "kind": "K", "aggregate_id": "x", "expected_version": 0},
                {"id": "e4", "kind": "", "aggregate_id": "y"},
                event("e5", "y"),
            ]}),
        )
        .await
        .json();
    let statuses: Vec<_> = mixed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["rejected", "conflict", "rejected", "accepted"]);
    assert_eq!(mixed["results"][0]["error"]["code"], "id_conflict");
    assert_eq!(mixed["results"][1]["current_version"], 2);
    assert_eq!(mixed["results"][2]["error"]["code"], "invalid_event");
}

#[tokio::test]
async fn pull_head_aggregate_and_paging() {
    let t = start(Limits::default()).await;
    let events: Vec<_> = (0..25)
        .map(|i| event(&format!("e{i}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    t.push("wa", json!({"events": events})).await;
    let page = t.get("ra", "/v1/events?after=10&limit=10").await.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    assert_eq!(page["events"][0]["seq"], 11);
    assert!(page["events"][0]["recorded_at"].is_u64());
    assert_eq!(
        (
            page["next"].clone(),
            page["has_more"].clone(),
            page["head"].clone()
        ),
        (json!(20), json!(true), json!(25))
    );
    let default = t.get("ra", "/v1/events").await.json();
    assert_eq!(default["events"].as_array().unwrap().len(), 25);
    let odd = t
        .get("ra", "/v1/events?aggregate_id=odd&limit=100")
        .await
        .json();
    assert_eq!(odd["events"].as_array().unwrap().len(), 12);
    assert_eq!(t.get("ra", "/v1/head").await.json(), json!({"head": 25}));
    let agg = t.get("ra", "/v1/aggregates/even").await.json();
    assert_eq!(
        (
            agg["version"].clone(),
            agg["events"].as_array().unwrap().len()
        ),
        (json!(13), 13)
    );
}

#[tokio::test]
async fn every_error_row_answers_as_stated() {
    let limits = Limits {
        max_body: 4_096,
        max_decompressed: 8_192,
        ..Limits::default()
    };
    let t = start(limits).await;
    let json_ct = ("content-type", "application/json");
    let auth = ("authorization", "Bearer wa");
    let cases: Vec<(&str, Answer, u16, &str)> = vec![
        (
            "malformed json",
            t.call(Method::POST, "/v1/events", &[auth, json_ct], "{")
                .await,
            400,
            "invalid_body",
        ),
        (
            "wrong shape",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, json_ct],
                "{\"events\": 3}",
            )
            .await,
            400,
            "invalid_body",
        ),
        (
            "event without id",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, json_ct],
                "{\"events\": [{}]}",
            )
            .await,
            400,
            "invalid_body",
        ),
        (
            "negative after",
            t.get("wa", "/v1/events?after=-1").await,
            400,
            "invalid_query",
        ),
        (
            "fractional after",
            t.get("wa", "/v1/events?after=1.5").await,
            400,
            "invalid_query",
        ),
        (
            "after past u64",
            t.get("wa", "/v1/events?after=18446744073709551616").await,
            400,
            "invalid_query",
        ),
        (
            "limit zero",
            t.get("wa", "/v1/events?limit=0").await,
            400,
            "invalid_query",
        ),
        (
            "limit too big",
            t.get("wa", "/v1/events?limit=5001").await,
            400,
            "invalid_query",
        ),
        (
            "limit not a number",
            t.get("wa", "/v1/events?limit=ten").await,
            400,
            "invalid_query",
        ),
        (
            "missing token",
            t.call(Method::GET, "/v1/head", &[], Bytes::new()).await,
            401,
            "unauthorized",
        ),
        (
            "unknown token",
            t.get("nope", "/v1/head").await,
            401,
            "unauthorized",
        ),
        (
            "read token pushing",
            t.push("ra", json!({"events": [event("r", "x")]})).await,
            403,
            "forbidden",
        ),
        (
            "other tenant by header",
            t.call(
                Method::GET,
                "/v1/head",
                &[auth, ("x-synckit-tenant", "b")],
                Bytes::new(),
            )
            .await,
            403,
            "forbidden",
        ),
        (
            "other tenant by query",
            t.get("wa", "/v1/events?tenant=b").await,
            403,
            "forbidden",
        ),
        (
            "unknown path",
            t.get("wa", "/v2/nothing").await,
            404,
            "not_found",
        ),
        (
            "wrong method",
            t.call(Method::DELETE, "/v1/events", &[auth], Bytes::new())
                .await,
            405,
            "method_not_allowed",
        ),
        (
            "body too large",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, json_ct],
                vec![b' '; 5_000],
            )
            .await,
            413,
            "payload_too_large",
        ),
        (
            "not json",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, ("content-type", "text/plain")],
                "{}",
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (
            "unknown encoding",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, json_ct, ("content-encoding", "br")],
                "{}",
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (
            "invalid gzip",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, json_ct, ("content-encoding", "gzip")],
                "nope",
            )
            .await,
            400,
            "invalid_body",
        ),
        (
            "gzip bomb",
            t.call(
                Method::POST,
                "/v1/events",
                &[auth, json_ct, ("content-encoding", "gzip")],
                gzip(&vec![b' '; 100_000]),
            )
            .await,
            413,
            "payload_too_large",
        ),
    ];
    for (name, answer, status, code) in cases {
        assert_eq!(
            answer.status.as_u16(),
            status,
            "{name}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.code(), code, "{name}");
    }
    let wrong = t.call(Method::PUT, "/v1/head", &[auth], Bytes::new()).await;
    assert_eq!(wrong.headers.get("allow").unwrap(), "GET");
    let too_many: Vec<_> = (0..1001).map(|i| event(&format!("m{i}"), "x")).collect();
    let big = start(Limits::default()).await;
    let answer = big.push("wa", json!({"events": too_many})).await;
    assert_eq!(
        (answer.status.as_u16(), answer.code()),
        (413, "payload_too_large".to_owned())
    );
    assert_eq!(
        t.get("wa", "/v1/head").await.json()["head"],
        0,
        "nothing was stored"
    );
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let t = start(Limits::default()).await;
    t.push("wa", json!({"events": [event("same-id", "x")]}))
        .await;
    let b = t
        .push(
            "wb",
            json!({"events": [{"id": "same-id", "kind": "Else", "aggregate_id": "z"}]}),
        )
        .await
        .json();
    assert_eq!(b["results"][0]["status"], "accepted", "ids are per tenant");
    assert_eq!(b["results"][0]["seq"], 1);
    let seen_by_b = t.get("wb", "/v1/events").await.json();
    assert_eq!(seen_by_b["events"].as_array().unwrap().len(), 1);
    assert_eq!(seen_by_b["events"][0]["kind"], "Else");
    assert_eq!(t.get("wb", "/v1/aggregates/x").await.json()["version"], 0);
}

#[tokio::test]
async fn large_answers_are_compressed_when_accepted() {
    let t = start(Limits::default()).await;
    let events: Vec<_> = (0..50).map(|i| event(&format!("e{i}"), "x")).collect();
    t.push("wa", json!({"events": events})).await;
    let plain = t.get("ra", "/v1/events").await;
    assert!(plain.body.len() > 1024 && plain.headers.get("content-encoding").is_none());
    let zipped = t
        .call(
            Method::GET,
            "/v1/events",
            &[("authorization", "Bearer ra"), ("accept-encoding", "gzip")],
            Bytes::new(),
        )
        .await;
    assert_eq!(zipped.headers.get("content-encoding").unwrap(), "gzip");
    let small = t
        .call(
            Method::GET,
            "/v1/head",
            &[("authorization", "Bearer ra"), ("accept-encoding", "gzip")],
            Bytes::new(),
        )
        .await;
    assert!(
        small.headers.get("content-encoding").is_none(),
        "small answers stay plain"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let t = start(Limits::default()).await;
    assert_eq!(
        t.call(Method::GET, "/healthz", &[], Bytes::new())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        t.call(Method::GET, "/readyz", &[], Bytes::new())
            .await
            .status,
        StatusCode::OK
    );
    t.push(
        "wa",
        json!({"events": [event("e1", "x"), event("e2", "x")]}),
    )
    .await;
    t.get("nope", "/v1/head").await;
    let text = String::from_utf8(
        t.call(Method::GET, "/metrics", &[], Bytes::new())
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("synckit_events_appended_total 2"), "{text}");
    assert!(
        text.contains("synckit_http_requests_total{route=\"/v1/events\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("synckit_http_requests_total{route=\"/v1/head\",status=\"401\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("synckit_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("synckit_subscribers 0"), "{text}");
}

/// Read SSE frames from a streaming GET until `count` event frames arrived.
async fn read_stream(
    t: &TestHub,
    headers: &[(&str, &str)],
    path: &str,
    count: usize,
) -> Vec<(String, Value)> {
    let mut request = Request::builder().uri(format!("{}{path}", t.hub.url()));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = t
        .client
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut parser = synckit_protocol::sse::Parser::new(1 << 20);
    let mut out = Vec::new();
    while out.len() < count {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("stream stalled")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            for f in parser.feed(&data).unwrap() {
                if f.event == "event" {
                    out.push((f.id.unwrap(), serde_json::from_str(&f.data).unwrap()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_delivers_in_order_and_resumes_from_last_event_id() {
    let t = start(Limits::default()).await;
    let first: Vec<_> = (0..5).map(|i| event(&format!("e{i}"), "x")).collect();
    t.push("wa", json!({"events": first})).await;
    let auth = ("authorization", "Bearer ra");
    let frames = read_stream(&t, &[auth], "/v1/stream?after=2", 3).await;
    let ids: Vec<_> = frames.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, ["3", "4", "5"]);
    assert_eq!(frames[0].1["id"], "e2");
    // Resume: Last-Event-ID wins over the query, then live events follow.
    let resume = [auth, ("last-event-id", "4")];
    let reader = read_stream(&t, &resume, "/v1/stream?after=0", 3);
    let writer = async {
        let more: Vec<_> = (5..7).map(|i| event(&format!("e{i}"), "x")).collect();
        t.push("wa", json!({"events": more})).await;
    };
    let (frames, ()) = tokio::join!(reader, writer);
    let ids: Vec<_> = frames.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, ["5", "6", "7"]);
    let bad = t
        .call(
            Method::GET,
            "/v1/stream",
            &[auth, ("last-event-id", "x1")],
            Bytes::new(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats() {
    let t = start(Limits {
        heartbeat: Duration::from_millis(50),
        ..Limits::default()
    })
    .await;
    let request = Request::builder()
        .uri(format!("{}/v1/stream", t.hub.url()))
        .header("authorization", "Bearer ra")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = t.client.request(request).await.unwrap().into_body();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(": keep-alive") {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no heartbeat on an idle stream")
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&frame.into_data().unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_with_a_reason() {
    let limits = Limits {
        subscriber_queue: 4,
        slow_subscriber: Duration::from_millis(200),
        ..Limits::default()
    };
    let t = start(limits).await;
    let filler = "x".repeat(4_000);
    for batch in 0..5 {
        let events: Vec<_> = (0..1000)
            .map(|i| json!({"id": format!("e{batch}-{i}"), "kind": "K", "aggregate_id": "x", "data": filler}))
            .collect();
        assert_eq!(
            t.push("wa", json!({"events": events})).await.status,
            StatusCode::OK
        );
    }
    let request = Request::builder()
        .uri(format!("{}/v1/stream", t.hub.url()))
        .header("authorization", "Bearer ra")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = t.client.request(request).await.unwrap().into_body();
    let gauge = t.hub.state().metrics.subscribers.clone();
    // Read nothing until the hub gives up on this subscriber (its producer ends).
    tokio::time::timeout(Duration::from_secs(20), async {
        while gauge.get() == 0 {
            tokio::task::yield_now().await;
        }
        while gauge.get() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slow subscriber was never cut off");
    let mut parser = synckit_protocol::sse::Parser::new(1 << 20);
    let mut events = 0;
    let mut close = None;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("stream stalled")
    {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            for f in parser.feed(&data).unwrap() {
                match f.event.as_str() {
                    "event" => events += 1,
                    "close" => close = Some(f.data),
                    _ => {}
                }
            }
        }
    }
    assert!(events < 5_000, "the stream ended early: {events} events");
    let close: Value =
        serde_json::from_str(&close.expect("a close frame with the reason")).unwrap();
    assert_eq!(close["code"], "slow_subscriber");
}
