//! The WebSocket transport passes the transport conformance suite against a real hub on
//! loopback.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use synckit_server::{Hub, HubConfig};
use synckit_store_memory::MemoryStore;
use synckit_testkit::transport_suite::{TransportFixture, transport_suite};
use synckit_transport_ws::WsTransport;

async fn fixture() -> TransportFixture {
    let config = HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec!["ta=a:write".parse().unwrap(), "tb=b:write".parse().unwrap()],
        ..HubConfig::default()
    };
    // The hub keeps serving for the rest of the test process.
    let hub = Hub::new(Arc::new(MemoryStore::new()), config)
        .unwrap()
        .start()
        .await
        .unwrap();
    let url = hub.url();
    let connect = |token: &str| Arc::new(WsTransport::new(&url, Some(token.to_owned())).unwrap());
    TransportFixture {
        a: connect("ta"),
        a_again: connect("ta"),
        b: connect("tb"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_transport_passes_the_suite() {
    transport_suite(fixture).await;
}

#[tokio::test]
async fn bad_tokens_and_urls_are_clear_errors() {
    let config = HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: vec!["ta=a:read".parse().unwrap()],
        ..HubConfig::default()
    };
    let hub = Hub::new(Arc::new(MemoryStore::new()), config)
        .unwrap()
        .start()
        .await
        .unwrap();
    use synckit_types::{ErrorKind, Transport};
    let wrong = WsTransport::new(&hub.url(), Some("nope".into())).unwrap();
    assert_eq!(
        wrong.head().await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    let reader = WsTransport::new(&hub.url(), Some("ta".into())).unwrap();
    let event = synckit_types::Event::builder("K", "a")
        .origin("n")
        .hlc(synckit_types::Hlc::new(1, 0))
        .build()
        .unwrap();
    assert_eq!(
        reader.push(&[event]).await.unwrap_err().kind(),
        ErrorKind::Forbidden
    );
    assert!(WsTransport::new("ftp://x", None).is_err());
    let closed = WsTransport::new("http://127.0.0.1:9", None).unwrap();
    let err = closed.head().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    hub.shutdown().await.unwrap();
}
