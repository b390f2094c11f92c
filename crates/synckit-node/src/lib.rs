//! The synckit node engine: applications append events locally and keep working offline; `sync`
//! pushes the outbox to the hub, pulls what others wrote, and hands conflicts to a resolver.
//!
//! ```no_run
//! # async fn demo(store: synckit_types::DynNodeStore, hub: synckit_types::DynTransport)
//! # -> synckit_types::Result<()> {
//! use synckit_node::Node;
//! use synckit_types::Event;
//!
//! let node = Node::builder().store(store).transport(hub).open().await?;
//! node.append(Event::builder("TaskCreated", "task-1").data(serde_json::json!({"title": "x"})))
//!     .await?;
//! let result = node.sync().await?;
//! println!("pushed {}, pulled {}", result.pushed, result.pulled);
//! node.close().await?;
//! # Ok(()) }
//! ```
//!
//! How it converges: the pull cursor is always a hub `seq`; pushed events become confirmed at the
//! `seq` the hub gave them; pulled pages are applied atomically with the cursor; conflicting
//! events are decided once, by the node that owns them, and the decision is recorded.

mod config;
mod node;
mod plan;
mod report;

pub use config::{Config, ConfigBuilder, MAX_BATCH_SIZE, RetryPolicy};
pub use node::{Node, NodeBuilder, ReviewChoice};
pub use report::{DecisionSummary, SyncOutcome, SyncProgress, SyncResult, SyncState};
