//! The hub's Prometheus metrics, in a registry of its own (several hubs may share a process).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use synckit_types::{Error, Result};

/// Counters, histogram and gauge of one hub.
#[derive(Debug, Clone)]
pub struct HubMetrics {
    registry: Registry,
    /// Events accepted by pushes.
    pub events_appended: IntCounter,
    /// Requests by route and status.
    pub requests: IntCounterVec,
    /// Request duration by route.
    pub duration: HistogramVec,
    /// Live SSE and WebSocket subscribers.
    pub subscribers: IntGauge,
    /// Connections answered 503 because the hub was at its connection limit.
    pub connections_refused: IntCounter,
}

fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: std::result::Result<T, prometheus::Error>,
) -> Result<T> {
    let metric = metric.map_err(|e| Error::internal(format!("defining a metric: {e}")))?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|e| Error::internal(format!("registering a metric: {e}")))?;
    Ok(metric)
}

impl HubMetrics {
    /// A fresh registry with every metric of the hub.
    pub fn new() -> Result<HubMetrics> {
        let registry = Registry::new();
        Ok(HubMetrics {
            events_appended: registered(
                &registry,
                IntCounter::new(
                    "synckit_events_appended_total",
                    "Events accepted by pushes.",
                ),
            )?,
            requests: registered(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "synckit_http_requests_total",
                        "HTTP requests by route and status.",
                    ),
                    &["route", "status"],
                ),
            )?,
            duration: registered(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "synckit_http_request_duration_seconds",
                        "HTTP request duration by route (streams: until the response starts).",
                    ),
                    &["route"],
                ),
            )?,
            subscribers: registered(
                &registry,
                IntGauge::new("synckit_subscribers", "Live SSE and WebSocket subscribers."),
            )?,
            connections_refused: registered(
                &registry,
                IntCounter::new(
                    "synckit_connections_refused_total",
                    "Connections answered 503 at the connection limit.",
                ),
            )?,
            registry,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| Error::internal(format!("encoding metrics: {e}")))?;
        String::from_utf8(out).map_err(|e| Error::internal(format!("metrics text: {e}")))
    }
}

/// Decrements the subscriber gauge when dropped.
#[derive(Debug)]
pub struct SubscriberGuard(IntGauge);

impl SubscriberGuard {
    /// Count one more live subscriber until the guard is dropped.
    pub fn new(gauge: &IntGauge) -> SubscriberGuard {
        gauge.inc();
        SubscriberGuard(gauge.clone())
    }
}

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
