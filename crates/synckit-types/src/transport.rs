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

/// A push already in its wire form, made by [`Transport::prepare_push`] of one transport for
/// one batch, so that the encoding of a batch can overlap the push before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPush {
    body: Vec<u8>,
    events: usize,
}

impl PreparedPush {
    /// Wrap the encoded `body` of a push of `events` events.
    pub fn new(body: Vec<u8>, events: usize) -> PreparedPush {
        PreparedPush { body, events }
    }

    /// The encoded body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// How many events the body holds.
    pub fn events(&self) -> usize {
        self.events
    }
}

/// The client side of the hub protocol. The tenant is fixed by the transport's credentials, never
/// by the request.
#[async_trait]
pub trait Transport: Send + Sync + Debug + 'static {
    /// Append `events` at the hub; one result per event, in order.
    async fn push(&self, events: &[Event]) -> Result<AppendReport>;

    /// Encode a push of `events` ahead of [`Transport::push_prepared`]. `None`, the default,
    /// when the transport has no wire form to prepare.
    fn prepare_push(&self, events: &[Event]) -> Result<Option<PreparedPush>> {
        let _ = events;
        Ok(None)
    }

    /// [`Transport::push`] of `events`, sending `prepared`, which this transport's
    /// [`Transport::prepare_push`] made from exactly these events. The default ignores it.
    async fn push_prepared(
        &self,
        events: &[Event],
        prepared: &PreparedPush,
    ) -> Result<AppendReport> {
        let _ = prepared;
        self.push(events).await
    }

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
            fn prepare_push(&self, events: &[Event]) -> Result<Option<PreparedPush>> {
                (**self).prepare_push(events)
            }
            async fn push_prepared(
                &self,
                events: &[Event],
                prepared: &PreparedPush,
            ) -> Result<AppendReport> {
                (**self).push_prepared(events, prepared).await
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
