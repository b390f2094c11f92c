//! Shared by the hub's integration tests: an in-process hub over a memory store with tokens
//! for two tenants.
// Each test binary includes this module and uses its own part of it.
#![allow(dead_code)]

use std::sync::Arc;

use synckit_server::{Hub, HubConfig, Limits, RunningHub};
use synckit_store_memory::MemoryStore;
use synckit_testkit::hub_suite::{HubClient, TenantTokens};

/// A running hub, a client for it, and the tokens of tenants `a` and `b`.
pub struct TestHub {
    pub hub: RunningHub,
    pub client: HubClient,
    pub a: TenantTokens,
    pub b: TenantTokens,
}

/// A hub over a memory store with read, write and admin tokens for tenants `a` and `b`.
pub async fn start(limits: Limits) -> TestHub {
    let (a, b) = (TenantTokens::for_tenant("a"), TenantTokens::for_tenant("b"));
    let config = HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        tokens: a
            .grants()
            .iter()
            .chain(&b.grants())
            .map(|g| g.parse().unwrap())
            .collect(),
        limits,
        ..HubConfig::default()
    };
    let hub = Hub::new(Arc::new(MemoryStore::new()), config)
        .unwrap()
        .start()
        .await
        .unwrap();
    TestHub {
        client: HubClient::new(&hub.url()),
        hub,
        a,
        b,
    }
}
