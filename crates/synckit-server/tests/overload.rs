//! Protection against overload and slow or hostile clients, over real loopback TCP: the header
//! read timeout cuts off a slowloris while others are served, a slow body answers 408, large
//! headers 431, the connection limit 503, the per-token rate limit 429 with `Retry-After`, the
//! subscriber limit per tenant 429; and the hostile-input tables of `synckit-testkit`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use support::{TestHub, start};
use synckit_server::{Limits, RateLimit};
use synckit_testkit::hostile::{EventLimits, check_hostile_events};
use synckit_testkit::hub_suite::{self, BodyLimits, HubClient, bearer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A bound on every wait of these tests; reaching it fails the test. No test waits for time to
/// pass to synchronise: each waits for the hub to act.
const BOUND: Duration = Duration::from_secs(20);

/// Read until the hub closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, async {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .expect("the hub did not close the connection");
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_is_cut_off_while_others_are_served() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let TestHub { hub, a, .. } = start(limits).await;
    let client = HubClient::new(&hub.url());
    let mut slow = TcpStream::connect(hub.addr()).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    // Trickle a header that would take far longer than the bound to finish: one byte each
    // 50 ms of a 10,000-byte value. The hub must close the connection before it is complete.
    let trickle = async {
        slow.write_all(b"x-slow: ").await?;
        for _ in 0..10_000 {
            slow.write_all(b"a").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::io::Result::Ok(())
    };
    let served = async {
        // Meanwhile a normal client is served, more than once.
        for _ in 0..3 {
            assert_eq!(client.head(&a.read).await, 0);
        }
    };
    let (trickled, ()) = tokio::time::timeout(BOUND, async { tokio::join!(trickle, served) })
        .await
        .expect("the slowloris connection was not cut off");
    assert!(
        trickled.is_err(),
        "the hub read the whole slow header instead of cutting the client off"
    );
    // An idle keep-alive connection is closed the same way.
    let mut idle = TcpStream::connect(hub.addr()).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_body_answers_408_and_large_headers_431() {
    let limits = Limits {
        body_read_timeout: Duration::from_millis(300),
        max_header_bytes: 8 << 10,
        ..Limits::default()
    };
    let TestHub { hub, a, .. } = start(limits).await;
    let mut stream = TcpStream::connect(hub.addr()).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"events\": [",
        bearer(&a.write)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The rest of the body never comes; the hub answers on its own.
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(BOUND, stream.read(&mut buffer))
        .await
        .expect("no answer to a body that never arrives")
        .unwrap();
    let text = String::from_utf8_lossy(&buffer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");

    let mut stream = TcpStream::connect(hub.addr()).await.unwrap();
    let huge = format!(
        "GET /v1/head HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n\r\n",
        "p".repeat(10 << 10)
    );
    stream.write_all(huge.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    let client = HubClient::new(&hub.url());
    assert_eq!(client.head(&a.read).await, 0, "normal requests still work");
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_limit_answer_503() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let TestHub { hub, a, .. } = start(limits).await;
    // Two connections that have sent a request and been answered hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(hub.addr()).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buffer = [0u8; 1024];
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(buffer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let mut third = TcpStream::connect(hub.addr()).await.unwrap();
    let answer = read_to_close(&mut third).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("too_many_connections"), "{text}");
    // Closing one frees its slot: a new client is served once the hub has seen the close.
    drop(held.pop());
    let client = HubClient::new(&hub.url());
    let served = tokio::time::timeout(BOUND, async {
        loop {
            let mut stream = TcpStream::connect(hub.addr()).await.unwrap();
            let request = format!(
                "GET /v1/head HTTP/1.1\r\nhost: x\r\nauthorization: {}\r\nconnection: close\r\n\r\n",
                bearer(&a.read)
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let answer = read_to_close(&mut stream).await;
            if answer.starts_with(b"HTTP/1.1 200") {
                break;
            }
            assert!(answer.starts_with(b"HTTP/1.1 503"), "{answer:?}");
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(served.is_ok(), "the freed slot was never reused");
    let metrics = client
        .call(Method::GET, "/metrics", &[], Bytes::new())
        .await;
    assert!(metrics.text().contains("synckit_connections_refused_total"));
    drop(held);
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_token_has_a_rate_limit_answered_429_with_retry_after() {
    let limits = Limits {
        // A bucket of 3 that refills once a minute: the fourth request is over it.
        rate_limit: Some(RateLimit {
            per_second: 1.0 / 60.0,
            burst: 3,
        }),
        ..Limits::default()
    };
    let TestHub { hub, a, b, .. } = start(limits).await;
    let client = HubClient::new(&hub.url());
    for n in 0..3 {
        let answer = client.get(&a.read, "/v1/head").await;
        assert_eq!(
            answer.status.as_u16(),
            200,
            "request {n}: {}",
            answer.text()
        );
    }
    let limited = client.get(&a.read, "/v1/head").await;
    limited.assert_error(429, "rate_limited", "the fourth request");
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // The other tokens, of this tenant and of another, have their own budgets.
    assert_eq!(client.get(&a.write, "/v1/head").await.status.as_u16(), 200);
    assert_eq!(client.get(&b.read, "/v1/head").await.status.as_u16(), 200);
    // Health checks carry no token and are not limited.
    for _ in 0..5 {
        let health = client
            .call(Method::GET, "/healthz", &[], Bytes::new())
            .await;
        assert_eq!(health.status.as_u16(), 200);
    }
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn subscribers_per_tenant_are_bounded() {
    let limits = Limits {
        max_subscribers_per_tenant: 2,
        ..Limits::default()
    };
    let TestHub { hub, a, b, .. } = start(limits).await;
    let client = HubClient::new(&hub.url());
    let auth_a = bearer(&a.read);
    let first = client
        .stream("/v1/stream", &[("authorization", &auth_a)])
        .await;
    let _second = client
        .stream("/v1/stream", &[("authorization", &auth_a)])
        .await;
    let refused = client.get(&a.read, "/v1/stream").await;
    refused.assert_error(429, "too_many_subscribers", "a third subscriber");
    assert!(refused.headers.contains_key("retry-after"));
    // Another tenant is not affected.
    let auth_b = bearer(&b.read);
    let _other = client
        .stream("/v1/stream", &[("authorization", &auth_b)])
        .await;
    // A closed stream frees its slot once the hub notices.
    drop(first);
    let reopened = tokio::time::timeout(BOUND, async {
        loop {
            let answer = client
                .open(
                    Method::GET,
                    "/v1/stream",
                    &[("authorization", &auth_a)],
                    http_body_util::BodyExt::boxed(http_body_util::Full::new(Bytes::new())),
                )
                .await;
            if answer.status().as_u16() == 200 {
                return answer;
            }
            assert_eq!(answer.status().as_u16(), 429);
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the closed stream's slot was never freed");
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn hostile_input_table() {
    let limits = Limits {
        max_batch: 40,
        max_body: 16_384,
        max_decompressed: 32_768,
        max_metadata_bytes: 1_024,
        max_json_depth: 16,
        ..Limits::default()
    };
    let TestHub { hub, a, b, .. } = start(limits.clone()).await;
    let url = hub.url();
    // Malformed, oversized, wrong-tenant, wrong-role, wrong-path and wrong-type requests: each
    // answers its status with the head of both tenants unchanged.
    let body_limits = BodyLimits {
        max_batch: limits.max_batch,
        max_body: limits.max_body,
        max_decompressed: limits.max_decompressed,
    };
    hub_suite::check_error_rows(&url, &a, &b, body_limits).await;
    // Control characters, oversized and nested fields, future clocks: each event rejected with
    // its code and nothing stored.
    let event_limits = EventLimits {
        max_metadata_bytes: limits.max_metadata_bytes,
        max_json_depth: limits.max_json_depth,
        max_clock_drift_ms: 5 * 60 * 1000,
    };
    let cases = check_hostile_events(&url, &a, event_limits).await;
    assert!(cases >= 30, "{cases} hostile events");
    hub.shutdown().await.unwrap();
}
