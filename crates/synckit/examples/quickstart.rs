//! A hub and two nodes in one process: they work offline, edit the same task, and converge.
//!
//! Run with `cargo run -p synckit --example quickstart`.

use std::sync::Arc;

use serde_json::json;
use synckit::prelude::*;
use synckit::{EventStoreExt, NodeStoreExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    // The hub: one authoritative order per tenant, here over an in-memory store.
    let hub_store = Arc::new(MemoryStore::new());
    let hub = MemoryHub::new(hub_store.clone());
    let tenant = TenantId::new("acme")?;

    // Two nodes, each with its own local store; last-write-wins decides conflicts.
    let open = |name: &str| {
        let transport = Arc::new(hub.transport(tenant.clone()));
        let config = Config::builder().node_id(NodeId::new(name)?).build();
        Ok::<_, Error>(async move {
            Node::builder()
                .store(Arc::new(MemoryStore::new()))
                .transport(transport)
                .resolver(Arc::new(LastWriteWins))
                .config(config?)
                .open()
                .await
        })
    };
    let alice = open("alice")?.await?;
    let bob = open("bob")?.await?;

    // Alice creates a task and syncs; Bob pulls it.
    alice
        .append(Event::builder("TaskCreated", "task-1").data(json!({"title": "Write docs"})))
        .await?;
    alice.sync().await?;
    bob.sync().await?;

    // Both go offline and rename the same task; each also adds a task of their own.
    alice
        .append(Event::builder("TaskRenamed", "task-1").data(json!({"title": "Write the docs"})))
        .await?;
    alice
        .append(Event::builder("TaskCreated", "task-2").data(json!({"title": "Alice's task"})))
        .await?;
    bob.append(Event::builder("TaskRenamed", "task-1").data(json!({"title": "Docs: write them"})))
        .await?;
    bob.append(Event::builder("TaskCreated", "task-3").data(json!({"title": "Bob's task"})))
        .await?;

    // Back online. Alice syncs first; Bob's rename conflicts with hers and is resolved by
    // last-write-wins (Bob wrote last, so his rename is rebased after Alice's).
    let a = alice.sync().await?;
    let b = bob.sync().await?;
    let a2 = alice.sync().await?;
    println!(
        "alice pushed {}; bob pushed {} with {} conflict(s): {:?}; alice then pulled {}",
        a.pushed,
        b.pushed,
        b.conflicts,
        b.decisions
            .iter()
            .map(|d| format!("{} -> {}", d.aggregate_id, d.decision.as_str()))
            .collect::<Vec<_>>(),
        a2.pulled
    );

    // Everyone holds the hub's log, event for event, in the same order.
    let hub_log = hub_store.read_all(&tenant).await?;
    let alice_log = alice.store().confirmed_all().await?;
    let bob_log = bob.store().confirmed_all().await?;
    anyhow::ensure!(alice_log == hub_log && bob_log == hub_log, "nodes diverged");
    for event in &hub_log {
        println!(
            "  seq {:>2}  {:<12} {:<7} by {:<5} {}",
            event.seq,
            event.event.kind,
            event.event.aggregate_id,
            event.event.origin,
            event.event.data
        );
    }
    println!(
        "converged: {} events on the hub, alice and bob",
        hub_log.len()
    );
    alice.close().await?;
    bob.close().await?;
    Ok(())
}
