//! The hub over real loopback HTTP, in process: push and pull semantics, health and metrics,
//! heartbeats and slow subscribers; and the hub suite of `synckit-testkit` (every error row of
//! protocol v1, tenancy, SSE resume, compression), which `synckit-cli`'s `e2e_http` also runs
//! against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestHub, start};
use synckit_server::Limits;
use synckit_testkit::hub_suite::{self, BodyLimits};

fn event(id: &str, aggregate: &str) -> Value {
    hub_suite::event(id, aggregate, json!({"n": id}))
}

#[tokio::test]
async fn every_error_row_answers_as_stated() {
    // Small limits, so each row is cheap; the stated defaults have their own test.
    let limits = Limits {
        max_batch: 10,
        max_body: 4_096,
        max_decompressed: 8_192,
        ..Limits::default()
    };
    let t = start(limits.clone()).await;
    let body_limits = BodyLimits {
        max_batch: limits.max_batch,
        max_body: limits.max_body,
        max_decompressed: limits.max_decompressed,
    };
    hub_suite::check_error_rows(&t.hub.url(), &t.a, &t.b, body_limits).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stated_limits_are_the_defaults() {
    let defaults = Limits::default();
    assert_eq!(
        (
            defaults.max_batch,
            defaults.max_body,
            defaults.max_decompressed
        ),
        (
            BodyLimits::STATED.max_batch,
            BodyLimits::STATED.max_body,
            BodyLimits::STATED.max_decompressed
        )
    );
    let t = start(defaults).await;
    hub_suite::check_error_rows(&t.hub.url(), &t.a, &t.b, BodyLimits::STATED).await;
}

#[tokio::test]
async fn tenants_never_see_each_other() {
    let t = start(Limits::default()).await;
    hub_suite::check_tenant_isolation(&t.hub.url(), &t.a, &t.b).await;
}

#[tokio::test]
async fn sse_delivers_in_order_and_resumes_from_last_event_id() {
    let t = start(Limits::default()).await;
    hub_suite::check_sse_resume(&t.hub.url(), &t.a).await;
}

#[tokio::test]
async fn large_answers_are_compressed_when_accepted() {
    let t = start(Limits::default()).await;
    hub_suite::check_compression(&t.hub.url(), &t.a).await;
}

#[tokio::test]
async fn the_whole_suite_runs_on_one_shared_hub() {
    // The checks make no assumption of an empty hub: run them all, twice, on one.
    let t = start(Limits {
        max_batch: 10,
        max_body: 4_096,
        max_decompressed: 8_192,
        ..Limits::default()
    })
    .await;
    let limits = BodyLimits {
        max_batch: 10,
        max_body: 4_096,
        max_decompressed: 8_192,
    };
    for _ in 0..2 {
        hub_suite::hub_suite(&t.hub.url(), &t.a, &t.b, limits).await;
    }
}

#[tokio::test]
async fn push_outcomes_and_exact_resend_is_duplicate() {
    let t = start(Limits::default()).await;
    let w = &t.a.write;
    let body = json!({"events": [event("e1", "x"), {"id": "e2", "kind": "K", "aggregate_id": "x", "expected_version": 1}]});
    let first = t.client.push(w, &body).await;
    assert_eq!(first.status, StatusCode::OK);
    let v = first.json();
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][0]["seq"], 1);
    assert_eq!(v["results"][1]["aggregate_version"], 2);
    assert_eq!(v["head"], 2);
    // The very same request again (no hlc, no origin sent): duplicates with the original seqs.
    let again = t.client.push(w, &body).await.json();
    assert_eq!(again["results"][0]["status"], "duplicate");
    assert_eq!(again["results"][0]["seq"], 1);
    assert_eq!(again["head"], 2);

    let mixed = t
        .client
        .push(
            w,
            &json!({"events": [
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
    let r = &t.a.read;
    let events: Vec<_> = (0..25)
        .map(|i| event(&format!("e{i}"), if i % 2 == 0 { "even" } else { "odd" }))
        .collect();
    t.client.push_accepted(&t.a.write, events).await;
    let page = t.client.get(r, "/v1/events?after=10&limit=10").await.json();
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
    let default = t.client.get(r, "/v1/events").await.json();
    assert_eq!(default["events"].as_array().unwrap().len(), 25);
    let odd = t
        .client
        .get(r, "/v1/events?aggregate_id=odd&limit=100")
        .await
        .json();
    assert_eq!(odd["events"].as_array().unwrap().len(), 12);
    assert_eq!(
        t.client.get(r, "/v1/head").await.json(),
        json!({"head": 25})
    );
    let agg = t.client.get(r, "/v1/aggregates/even").await.json();
    assert_eq!(
        (
            agg["version"].clone(),
            agg["events"].as_array().unwrap().len()
        ),
        (json!(13), 13)
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let t = start(Limits::default()).await;
    let plain = |path: &'static str| t.client.call(Method::GET, path, &[], Bytes::new());
    assert_eq!(plain("/healthz").await.status, StatusCode::OK);
    assert_eq!(plain("/readyz").await.status, StatusCode::OK);
    t.client
        .push_accepted(&t.a.write, vec![event("e1", "x"), event("e2", "x")])
        .await;
    t.client.get("nope", "/v1/head").await;
    let text = plain("/metrics").await.text();
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

/// Open `GET /v1/stream` with tenant a's read token; the body still streaming.
async fn open_stream(t: &TestHub) -> hyper::body::Incoming {
    let auth = hub_suite::bearer(&t.a.read);
    let response = t
        .client
        .open(
            Method::GET,
            "/v1/stream",
            &[("authorization", &auth)],
            Full::new(Bytes::new()).boxed(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_get_heartbeats() {
    let t = start(Limits {
        heartbeat: Duration::from_millis(50),
        ..Limits::default()
    })
    .await;
    let mut body = open_stream(&t).await;
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
        t.client.push_accepted(&t.a.write, events).await;
    }
    let mut body = open_stream(&t).await;
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
