//! Metric names and recording: what rule-based resolvers report through the `metrics` facade.
//!
//! Every metric carries the label `resolver` (the resolver's name). Decision metrics add
//! `group` (full group path, `-` for none), `rule` (full rule name, `-` for a fallback or a
//! limit), `decision` (`keep_local`, `keep_remote`, `merge`, `review`) and `via` (`rule`,
//! `group_fallback`, `fallback` or `limit`).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | [`DECISIONS`] | counter | resolver, group, rule, decision, via |
//! | [`DURATION`] | histogram (seconds) | resolver, group, rule, decision, via |
//! | [`FALLBACKS`] | counter | resolver, group |
//! | [`REVIEWS`] | counter | resolver, cause (`decision`, `timeout`, `limit`) |
//! | [`TIMEOUTS`] | counter | resolver, group, rule |
//! | [`ERRORS`] | counter | resolver, group, rule, cause (`unmatched`, `strategy`) |
//!
//! Nothing is recorded unless the application installs a `metrics` recorder (for example a
//! Prometheus exporter); without one the calls cost a few nanoseconds.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Key, Label, Level, Metadata};
use synckit_types::DecisionKind;

/// Decisions made, by rule, group and decision.
pub const DECISIONS: &str = "synckit_resolve_decisions_total";
/// Time from receiving a conflict to answering it, in seconds.
pub const DURATION: &str = "synckit_resolve_duration_seconds";
/// Decisions taken by a group fallback (`group` = its path) or the global fallback (`-`).
pub const FALLBACKS: &str = "synckit_resolve_fallbacks_total";
/// Conflicts answered with a review decision, by cause.
pub const REVIEWS: &str = "synckit_resolve_reviews_total";
/// Strategies abandoned because they ran past the resolution timeout.
pub const TIMEOUTS: &str = "synckit_resolve_timeouts_total";
/// Resolutions that failed (the node parks those conflicts for review).
pub const ERRORS: &str = "synckit_resolve_errors_total";

/// The label value for "no group" and "no rule".
pub const NONE: &str = "-";

/// Register descriptions and units of every metric above with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        DECISIONS,
        "Conflict decisions, by rule, group and decision."
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "Time to resolve one conflict."
    );
    metrics::describe_counter!(FALLBACKS, "Decisions taken by a fallback strategy.");
    metrics::describe_counter!(REVIEWS, "Conflicts sent to the review queue, by cause.");
    metrics::describe_counter!(
        TIMEOUTS,
        "Strategies abandoned after the resolution timeout."
    );
    metrics::describe_counter!(ERRORS, "Resolutions that failed, by cause.");
}

/// How a decision was reached, for the `via` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    Rule,
    GroupFallback,
    Fallback,
    Limit,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Rule => "rule",
            Via::GroupFallback => "group_fallback",
            Via::Fallback => "fallback",
            Via::Limit => "limit",
        }
    }
}

/// The labels shared by one resolution's metrics; cheap to clone (shared strings).
#[derive(Debug, Clone)]
pub(crate) struct Labels {
    pub resolver: Arc<str>,
    pub group: Arc<str>,
    pub rule: Arc<str>,
    pub via: Via,
}

impl Labels {
    pub fn review(&self, cause: &'static str) {
        metrics::counter!(REVIEWS, "resolver" => self.resolver.clone(), "cause" => cause)
            .increment(1);
    }

    pub fn timeout(&self) {
        metrics::counter!(TIMEOUTS, "resolver" => self.resolver.clone(), "group" => self.group.clone(), "rule" => self.rule.clone())
            .increment(1);
    }

    pub fn error(&self, cause: &'static str) {
        metrics::counter!(ERRORS, "resolver" => self.resolver.clone(), "group" => self.group.clone(), "rule" => self.rule.clone(), "cause" => cause)
            .increment(1);
    }
}

/// What the `metrics` macros would attach: this module, at the default level.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The labels and metric keys of one decider (a rule, a group's fallback, the global fallback,
/// the event-count limit), built with the resolver. A decision then records its metrics with
/// keys made once, instead of allocating and hashing labels every time: with 100 rules and a
/// million decisions a second, that was a tenth of the work.
///
/// Keys are registered with whichever recorder is current at each decision, as the macros do,
/// so a recorder installed after the resolver was built still sees every decision.
#[derive(Debug)]
pub(crate) struct Decider {
    pub labels: Labels,
    /// [`DECISIONS`] by [`DecisionKind`], in declaration order.
    decisions: [Key; 4],
    /// [`DURATION`] by [`DecisionKind`].
    durations: [Key; 4],
    /// [`FALLBACKS`], for the fallbacks.
    fallbacks: Option<Key>,
    /// [`REVIEWS`] with cause `decision`.
    reviews: Key,
}

const KINDS: [DecisionKind; 4] = [
    DecisionKind::KeepLocal,
    DecisionKind::KeepRemote,
    DecisionKind::Merge,
    DecisionKind::Review,
];

fn slot(kind: DecisionKind) -> usize {
    match kind {
        DecisionKind::KeepLocal => 0,
        DecisionKind::KeepRemote => 1,
        DecisionKind::Merge => 2,
        DecisionKind::Review => 3,
    }
}

impl Decider {
    pub fn new(labels: Labels) -> Self {
        let decision_key = |name: &'static str, kind: DecisionKind| {
            Key::from_parts(
                name,
                vec![
                    Label::new("resolver", labels.resolver.clone()),
                    Label::new("group", labels.group.clone()),
                    Label::new("rule", labels.rule.clone()),
                    Label::new("decision", kind.as_str()),
                    Label::new("via", labels.via.as_str()),
                ],
            )
        };
        Decider {
            decisions: KINDS.map(|kind| decision_key(DECISIONS, kind)),
            durations: KINDS.map(|kind| decision_key(DURATION, kind)),
            fallbacks: matches!(labels.via, Via::GroupFallback | Via::Fallback).then(|| {
                Key::from_parts(
                    FALLBACKS,
                    vec![
                        Label::new("resolver", labels.resolver.clone()),
                        Label::new("group", labels.group.clone()),
                    ],
                )
            }),
            reviews: Key::from_parts(
                REVIEWS,
                vec![
                    Label::new("resolver", labels.resolver.clone()),
                    Label::new("cause", "decision"),
                ],
            ),
            labels,
        }
    }

    /// Count a decision and its duration (and the fallback, for a fallback).
    pub fn decision(&self, decision: DecisionKind, elapsed: Duration) {
        let slot = slot(decision);
        metrics::with_recorder(|recorder| {
            recorder
                .register_counter(&self.decisions[slot], &METADATA)
                .increment(1);
            recorder
                .register_histogram(&self.durations[slot], &METADATA)
                .record(elapsed.as_secs_f64());
            if let Some(key) = &self.fallbacks {
                recorder.register_counter(key, &METADATA).increment(1);
            }
        });
    }

    /// Count a review decision made by the strategy itself.
    pub fn review_decision(&self) {
        metrics::with_recorder(|recorder| {
            recorder
                .register_counter(&self.reviews, &METADATA)
                .increment(1);
        });
    }
}
