//! The provided sinks: an event store (idempotent by event id), a function, and (with the
//! `node` feature) a node's outbox.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::sync::{Arc, Mutex};

use serde_json::json;
use synckit_buffer::{Batch, BufferedStore, DynSink, EventStoreSink, FnSink, Sink};
use synckit_store_memory::MemoryStore;
use synckit_types::{DynEventStore, Event, EventStoreExt, Hlc, TenantId};

fn event(id: &str, data: u64) -> Event {
    Event::builder("Measured", "agg")
        .id(id)
        .origin("agent")
        .hlc(Hlc::new(1, 0))
        .data(json!(data))
        .build()
        .unwrap()
}

#[tokio::test]
async fn events_reach_the_store_once_even_when_a_batch_is_written_again() {
    let store: DynEventStore = Arc::new(MemoryStore::new());
    let tenant = TenantId::new("t").unwrap();
    let sink = EventStoreSink::new(store.clone(), tenant.clone());
    let first = Batch::new(1, vec![event("e1", 1), event("e2", 2)]);
    sink.write(&first).await.unwrap();
    // A replay of the same batch (after a crash before the marker) stores nothing twice.
    sink.write(&first).await.unwrap();

    let buffered = BufferedStore::builder("events", Arc::new(sink.clone()))
        .max_batch(2)
        .start()
        .unwrap();
    buffered
        .write_many(vec![event("e3", 3), event("e4", 4), event("e5", 5)])
        .await
        .unwrap();
    assert!(buffered.close().await.is_clean());
    let ids: Vec<String> = store
        .read_all(&tenant)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.id.to_string())
        .collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4", "e5"]);

    // The same id with other content is refused for good.
    let error = sink
        .write(&Batch::new(9, vec![event("e1", 99)]))
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("e1"), "{error}");
}

#[tokio::test]
async fn a_function_sink_receives_each_batch() {
    type Seen = Vec<(u64, Vec<u32>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let seen_by_sink = seen.clone();
    let sink: DynSink<u32> = Arc::new(FnSink::new(move |batch: Batch<u32>| {
        let seen = seen_by_sink.clone();
        async move {
            seen.lock()
                .unwrap()
                .push((batch.first_seq(), batch.into_items()));
            Ok(())
        }
    }));
    let store = BufferedStore::builder("fn", sink)
        .max_batch(2)
        .start()
        .unwrap();
    store.write_many(vec![1, 2, 3]).await.unwrap();
    assert!(store.close().await.is_clean());
    assert_eq!(*seen.lock().unwrap(), [(1, vec![1, 2]), (3, vec![3])]);
}

#[cfg(feature = "node")]
#[tokio::test]
async fn agents_buffer_into_a_nodes_outbox() {
    use synckit_buffer::OutboxSink;
    use synckit_node::Node;
    use synckit_transport_memory::MemoryHub;
    use synckit_types::{EventBuilder, NodeStoreExt};

    let hub = MemoryHub::new(Arc::new(MemoryStore::new()));
    let node = Node::builder()
        .store(Arc::new(MemoryStore::new()))
        .transport(Arc::new(hub.transport(TenantId::new("t").unwrap())))
        .open()
        .await
        .unwrap();
    let store = BufferedStore::builder("outbox", Arc::new(OutboxSink::new(node.clone())))
        .max_batch(2)
        .start()
        .unwrap();
    let events: Vec<EventBuilder> = (0..3)
        .map(|i| EventBuilder::new("Sampled", "sensor").id(format!("s{i}")))
        .collect();
    store.write_many(events).await.unwrap();
    assert!(store.close().await.is_clean());
    let pending: Vec<String> = node
        .store()
        .pending_all()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.id.to_string())
        .collect();
    assert_eq!(pending, ["s0", "s1", "s2"]);
    let result = node.sync().await.unwrap();
    assert_eq!(result.pushed, 3);
}
