//! `Hub`: the shared state behind every route, and the push logic HTTP and WebSocket share.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use synckit_protocol::{DecodedEvent, PushLimits, PushResponse, WireResult, decode_push_with};
use synckit_types::{
    AppendOutcome, Clock, DEFAULT_MAX_DRIFT_MS, DynEventStore, Error, ErrorKind, HlcState, NodeId,
    RejectCode, Result, StoredEvent, SystemClock, TenantId,
};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{HubConfig, Limits};
use crate::guard::{RateLimiter, SubscriberSlots};
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
    /// Per-token request budgets.
    pub rate: RateLimiter,
    /// Live subscriptions per tenant.
    pub subscribers: SubscriberSlots,
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
            rate: RateLimiter::new(config.limits.rate_limit, config.tokens.len()),
            subscribers: SubscriberSlots::new(config.limits.max_subscribers_per_tenant),
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
        let horizon = now.saturating_add(
            u64::try_from(self.limits.max_clock_drift.as_millis()).unwrap_or(u64::MAX),
        );
        for item in decoded {
            match item {
                DecodedEvent::Valid(wire) if wire.hlc.is_some_and(|h| h.wall_ms > horizon) => {
                    let ahead = wire.hlc.map_or(0, |h| h.wall_ms.saturating_sub(now));
                    slots.push(Some(WireResult::invalid(
                        wire.id.as_str().to_owned(),
                        RejectCode::ClockDrift,
                        format!(
                            "hlc is {ahead} ms ahead of the hub's clock; the allowed drift is {} ms",
                            self.limits.max_clock_drift.as_millis()
                        ),
                    )));
                }
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
                DecodedEvent::Invalid { id, code, message } => {
                    slots.push(Some(WireResult::invalid(id, code, message)));
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
        let limits = PushLimits {
            max_metadata_bytes: self.limits.max_metadata_bytes,
            max_depth: self.limits.max_json_depth,
        };
        let decoded = decode_push_with(body, &limits)?;
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
