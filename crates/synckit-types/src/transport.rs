//! The transport contract: how a node talks to its hub (push, pull, head, subscribe).

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures_core::Stream;

use crate::error::Result;
use crate::event::{Event, StoredEvent};
use crate::outcome::AppendReport;
use crate::query::{Page, ReadRequest};
use crate::seq::Seq;

/// A live stream of a tenant's events in `seq` order. It ends with an error when the connection
/// drops; resume by subscribing again after the last `seq` received.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<StoredEvent>> + Send>>;

/// The client side of the hub protocol. The tenant is fixed by the transport's credentials, never
/// by the request.
#[async_trait]
pub trait Transport: Send + Sync + Debug + 'static {
    /// Append `events` at the hub; one result per event, in order.
    async fn push(&self, events: &[Event]) -> Result<AppendReport>;

    /// Read one page of the hub's log.
    async fn pull(&self, request: &ReadRequest) -> Result<Page>;

    /// The hub's head.
    async fn head(&self) -> Result<Seq>;

    /// Every event with `seq > after`, exactly once and in order, then live events as they are
    /// committed.
    async fn subscribe(&self, after: Seq) -> Result<Subscription>;
}

/// A shared transport.
pub type DynTransport = Arc<dyn Transport>;

macro_rules! forward_transport {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: Transport + ?Sized> Transport for $ptr<T> {
            async fn push(&self, events: &[Event]) -> Result<AppendReport> {
                (**self).push(events).await
            }
            async fn pull(&self, request: &ReadRequest) -> Result<Page> {
                (**self).pull(request).await
            }
            async fn head(&self) -> Result<Seq> {
                (**self).head().await
            }
            async fn subscribe(&self, after: Seq) -> Result<Subscription> {
                (**self).subscribe(after).await
            }
        }
    };
}

forward_transport!(Arc);
forward_transport!(Box);
