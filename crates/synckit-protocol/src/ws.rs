//! WebSocket messages of `GET /v1/ws`: push, pull, head and subscribe over one connection.
//!
//! Every message is one JSON text frame with a `type`. Requests carry a client-chosen `id`;
//! the answer to a request carries the same `id`. Subscribed events arrive as `event` messages
//! at any time, in `seq` order.

use serde_json::Value;
use synckit_types::{Filter, Page, Seq, StoredEvent};

use crate::error::ErrorObject;
use crate::push::WireResult;

/// A message from client to hub.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Append events (the same event objects as `POST /v1/events`).
    Push {
        /// Request id.
        id: u64,
        /// The events.
        events: Vec<Value>,
    },
    /// Read a page.
    Pull {
        /// Request id.
        id: u64,
        /// Cursor.
        after: Seq,
        /// Page size (1 to 5,000).
        limit: usize,
        /// Optional filter.
        #[serde(default)]
        filter: Filter,
    },
    /// Ask for the head.
    Head {
        /// Request id.
        id: u64,
    },
    /// Start receiving every event with `seq > after`, then live ones. One subscription per
    /// connection; subscribing again replaces it.
    Subscribe {
        /// Request id.
        id: u64,
        /// Cursor.
        after: Seq,
    },
}

/// A message from hub to client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to `push`.
    Pushed {
        /// Request id.
        id: u64,
        /// One result per event.
        results: Vec<WireResult>,
        /// Head after the push.
        head: Seq,
    },
    /// The answer to `pull`.
    Page {
        /// Request id.
        id: u64,
        /// The page.
        #[serde(flatten)]
        page: Page,
    },
    /// The answer to `head`.
    Head {
        /// Request id.
        id: u64,
        /// The head.
        head: Seq,
    },
    /// The subscription is live (sent before its first event).
    Subscribed {
        /// Request id.
        id: u64,
    },
    /// A subscribed event.
    Event {
        /// The event.
        event: StoredEvent,
    },
    /// A request failed, or the hub closes the connection (`id` absent).
    Error {
        /// Request id, when the error answers one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// What went wrong.
        error: ErrorObject,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_a_type_tag() {
        let m = ClientMessage::Head { id: 3 };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type": "head", "id": 3})
        );
        let page = ServerMessage::Page {
            id: 1,
            page: Page {
                events: vec![],
                next: Seq(4),
                has_more: false,
                head: Seq(4),
            },
        };
        let v = serde_json::to_value(&page).unwrap();
        assert_eq!(v["type"], "page");
        assert_eq!(v["next"], 4);
        let back: ServerMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, page);
    }
}
