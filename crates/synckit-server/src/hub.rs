//! `Hub`: the shared state behind every route, and the push logic HTTP and WebSocket share.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use synckit_protocol::{DecodedEvent, PushResponse, WireResult, decode_push};
use synckit_types::{
    AppendOutcome, Clock, DEFAULT_MAX_DRIFT_MS, DynEventStore, Error, ErrorKind, HlcState, NodeId,
    Result, StoredEvent, SystemClock, TenantId,
};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{HubConfig, Limits};
use crate::metrics::HubMetrics;
use crate::notify::Notifier;

/// The state every request sees.
#[derive(Debug)]
pub struct HubState {
    /// The log store.
    pub store: DynEventStore,
    /// Token checks.
    pub auth: Authenticator,
    /// Per-tenant change notification.
    pub notifier: Notifier,
    /// Metrics.
    pub metrics: HubMetrics,
    /// Limits.
    pub limits: Limits,
    /// Cancelled when the hub shuts down; ends every stream.
    pub shutdown: CancellationToken,
    hlc: Mutex<HlcState>,
    clock: SystemClock,
    origin: NodeId,
}

impl HubState {
    /// State for a hub over `store`.
    pub fn new(store: DynEventStore, config: &HubConfig) -> Result<HubState> {
        Ok(HubState {
            store,
            auth: Authenticator::new(config.tokens.clone()),
            notifier: Notifier::default(),
            metrics: HubMetrics::new()?,
            limits: config.limits.clone(),
            shutdown: CancellationToken::new(),
            hlc: Mutex::new(HlcState::new(Default::default(), DEFAULT_MAX_DRIFT_MS)),
            clock: SystemClock,
            origin: NodeId::new("hub")?,
        })
    }

    /// Append a decoded push for `tenant`: stamp what the client left out, answer per event.
    pub async fn push(
        &self,
        tenant: &TenantId,
        decoded: Vec<DecodedEvent>,
    ) -> Result<PushResponse> {
        let now = self.clock.now_ms();
        let mut hlc = self
            .hlc
            .lock()
            .map_err(|_| Error::internal("hub clock lock poisoned"))?
            .clone();
        let mut events = Vec::with_capacity(decoded.len());
        let mut slots = Vec::with_capacity(decoded.len());
        for item in decoded {
            match item {
                DecodedEvent::Valid(wire) => {
                    let stamp = if wire.hlc.is_none() {
                        Some(hlc.tick(now)?)
                    } else {
                        None
                    };
                    let event =
                        wire.into_event(|| self.origin.clone(), || stamp.unwrap_or_default());
                    slots.push(None);
                    events.push(event);
                }
                DecodedEvent::Invalid { id, message } => {
                    slots.push(Some(WireResult::invalid(id, message)));
                }
            }
        }
        if let Ok(mut shared) = self.hlc.lock()
            && hlc.last() > shared.last()
        {
            *shared = hlc;
        }
        let report = if events.is_empty() {
            synckit_types::AppendReport {
                results: Vec::new(),
                head: self.store.head(tenant).await?,
            }
        } else {
            self.store.append(tenant, &events).await?
        };
        if report.results.len() != events.len() {
            return Err(Error::internal(
                "the store answered a different number of results",
            ));
        }
        let accepted: Vec<StoredEvent> = events
            .into_iter()
            .zip(&report.results)
            .filter_map(|(event, result)| match result.outcome {
                AppendOutcome::Accepted {
                    seq,
                    aggregate_version,
                    recorded_at,
                } => Some(StoredEvent {
                    event,
                    seq,
                    aggregate_version,
                    recorded_at,
                }),
                _ => None,
            })
            .collect();
        if !accepted.is_empty() {
            self.metrics.events_appended.inc_by(accepted.len() as u64);
            self.notifier.notify(tenant, accepted);
        }
        let mut stored = report.results.iter();
        let results = slots
            .into_iter()
            .map(|slot| match slot {
                Some(invalid) => Ok(invalid),
                None => stored
                    .next()
                    .map(WireResult::from)
                    .ok_or_else(|| Error::internal("missing store result")),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(PushResponse {
            results,
            head: report.head,
        })
    }

    /// Decode a push body and append it (HTTP).
    pub async fn push_body(&self, tenant: &TenantId, body: &[u8]) -> Result<PushResponse> {
        let decoded = decode_push(body)?;
        self.check_batch(decoded.len())?;
        self.push(tenant, decoded).await
    }

    /// Decode pushed event objects and append them (WebSocket).
    pub async fn push_values(&self, tenant: &TenantId, events: Vec<Value>) -> Result<PushResponse> {
        self.check_batch(events.len())?;
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
            .map_err(|e| Error::internal(format!("re-encoding a push: {e}")))?;
        self.push_body(tenant, &body).await
    }

    fn check_batch(&self, len: usize) -> Result<()> {
        if len > self.limits.max_batch {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a push holds {len} events; the limit is {}",
                    self.limits.max_batch
                ),
            ));
        }
        Ok(())
    }
}

/// Shared handle to the state.
pub type SharedHub = Arc<HubState>;
