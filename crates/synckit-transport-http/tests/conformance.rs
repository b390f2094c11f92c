//! The HTTP transport passes the transport conformance suite against a real hub on loopback.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use synckit_server::{Hub, HubConfig};
use synckit_store_memory::MemoryStore;
use synckit_testkit::transport_suite::{TransportFixture, transport_suite};
use synckit_transport_http::HttpTransport;

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
    let connect = |token: &str| Arc::new(HttpTransport::new(&url, Some(token.to_owned())).unwrap());
    TransportFixture {
        a: connect("ta"),
        a_again: connect("ta"),
        b: connect("tb"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_transport_passes_the_suite() {
    transport_suite(fixture).await;
}
