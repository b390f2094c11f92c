//! Shared test helpers: building events and conflicts, and a recording hook.

#![allow(dead_code)] // each test binary uses a different part of it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use synckit_resolve::{Conflict, Resolution, ResolverHooks};
use synckit_types::{AggregateId, Error, Event, Hlc, Seq, StoredEvent};

/// An event of `kind` on `aggregate` from `origin` at wall time `wall`.
pub fn event(kind: &str, aggregate: &str, origin: &str, wall: u64) -> Event {
    Event::builder(kind, aggregate)
        .origin(origin)
        .hlc(Hlc::new(wall, 0))
        .build()
        .unwrap()
}

/// A conflict builder.
#[derive(Debug, Clone)]
pub struct C {
    pub aggregate: String,
    pub local: Vec<Event>,
    pub remote: Vec<Event>,
}

impl C {
    pub fn on(aggregate: &str) -> Self {
        C {
            aggregate: aggregate.to_owned(),
            local: Vec::new(),
            remote: Vec::new(),
        }
    }

    /// Add a local event of `kind` with `data` and `metadata` pairs.
    pub fn local(mut self, kind: &str, data: Value, metadata: &[(&str, Value)]) -> Self {
        let mut e = event(
            kind,
            &self.aggregate,
            "local-node",
            10 + self.local.len() as u64,
        );
        e.data = data;
        for (k, v) in metadata {
            e.metadata.insert((*k).to_owned(), v.clone());
        }
        self.local.push(e);
        self
    }

    /// Add a remote event of `kind` with `data`.
    pub fn remote(mut self, kind: &str, data: Value) -> Self {
        let mut e = event(
            kind,
            &self.aggregate,
            "remote-node",
            20 + self.remote.len() as u64,
        );
        e.data = data;
        self.remote.push(e);
        self
    }

    pub fn build(self) -> Conflict {
        let remote: Vec<StoredEvent> = self
            .remote
            .into_iter()
            .enumerate()
            .map(|(i, event)| StoredEvent {
                event,
                seq: Seq(i as u64 + 1),
                aggregate_version: i as u64 + 1,
                recorded_at: 0,
            })
            .collect();
        Conflict {
            aggregate_id: AggregateId::new(self.aggregate).unwrap(),
            base_version: 0,
            current_version: remote.len() as u64,
            local: self.local,
            remote,
        }
    }
}

/// One hook call, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Matched(String),
    Fallback(Option<String>),
    Resolved(Option<String>, String),
    Error(String),
}

/// A hook that records every call.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<Call>>);

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl ResolverHooks for Recorder {
    fn rule_matched(&self, _: &Conflict, rule: &str) {
        self.0.lock().unwrap().push(Call::Matched(rule.to_owned()));
    }

    fn fallback_used(&self, _: &Conflict, group: Option<&str>) {
        self.0
            .lock()
            .unwrap()
            .push(Call::Fallback(group.map(str::to_owned)));
    }

    fn resolved(&self, _: &Conflict, resolution: &Resolution, _: Duration) {
        self.0.lock().unwrap().push(Call::Resolved(
            resolution.rule.clone(),
            resolution.decision.kind().as_str().to_owned(),
        ));
    }

    fn error(&self, _: &Conflict, error: &Error) {
        self.0
            .lock()
            .unwrap()
            .push(Call::Error(error.kind().as_str().to_owned()));
    }
}
