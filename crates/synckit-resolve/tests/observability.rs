//! Metrics through the `metrics` facade (captured with metrics-util's debugging recorder) and
//! the `resolve` tracing span.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::C;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use synckit_resolve::{
    CompositeResolver, Conflict, ConflictResolver, DynamicResolver, LastWriteWins, ManualReview,
    Resolution, ResolutionContext, Rule, RuleGroup, observe, spec,
};

#[derive(Debug)]
struct Slow;

#[async_trait]
impl ConflictResolver for Slow {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> synckit_types::Result<Resolution> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        LastWriteWins.resolve(conflict, context).await
    }
}

fn resolver() -> CompositeResolver {
    CompositeResolver::builder()
        .name("shop")
        .rule(Rule::new(
            "users",
            spec::kind_is(["UserUpdated"]),
            Arc::new(LastWriteWins),
        ))
        .rule(Rule::new("slow", spec::kind_is(["Slow"]), Arc::new(Slow)))
        .group(
            RuleGroup::new("orders")
                .when(spec::aggregate_matches("order-*").unwrap())
                .fallback(Arc::new(ManualReview)),
        )
        .fallback(Arc::new(LastWriteWins))
        .timeout(Duration::from_millis(100))
        .max_events(3)
        .build()
        .unwrap()
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut l: Labels = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    l
}

#[test]
fn counters_and_histograms_per_rule_group_decision_fallback_and_review() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let resolver = resolver();
    let unmatched = DynamicResolver::builder()
        .name("strict")
        .rule(Rule::new(
            "none",
            spec::kind_is(["Nothing"]),
            Arc::new(LastWriteWins),
        ))
        .build()
        .unwrap();
    let ctx = ResolutionContext::default();
    let user = C::on("user-1")
        .local("UserUpdated", json!({}), &[])
        .remote("UserUpdated", json!({}))
        .build();
    let order = C::on("order-1").local("OrderPaid", json!({}), &[]).build();
    let other = C::on("doc-1").local("DocEdited", json!({}), &[]).build();
    let slow = C::on("doc-1").local("Slow", json!({}), &[]).build();
    let big = C::on("doc-1")
        .local("DocEdited", json!({}), &[])
        .local("DocEdited", json!({}), &[])
        .remote("DocEdited", json!({}))
        .remote("DocEdited", json!({}))
        .build();
    metrics::with_local_recorder(&recorder, || {
        observe::describe_metrics();
        runtime.block_on(async {
            for _ in 0..2 {
                resolver.resolve(&user, &ctx).await.unwrap();
            }
            resolver.resolve(&order, &ctx).await.unwrap();
            resolver.resolve(&other, &ctx).await.unwrap();
            resolver.resolve(&slow, &ctx).await.unwrap();
            resolver.resolve(&big, &ctx).await.unwrap();
            assert!(unmatched.resolve(&other, &ctx).await.is_err());
        });
    });

    let mut counters = Vec::new();
    let mut histograms = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut l: Labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        l.sort();
        match value {
            DebugValue::Counter(n) => counters.push((key.name().to_owned(), l, n)),
            DebugValue::Histogram(values) => {
                histograms.push((key.name().to_owned(), l, values.len()))
            }
            DebugValue::Gauge(_) => {}
        }
    }
    let counter = |name: &str, l: &[(&str, &str)]| {
        let l = labels(l);
        counters
            .iter()
            .find(|(n, ls, _)| n == name && *ls == l)
            .map(|(_, _, v)| *v)
    };
    fn decision<'a>(
        group: &'a str,
        rule: &'a str,
        decision: &'a str,
        via: &'a str,
    ) -> [(&'a str, &'a str); 5] {
        [
            ("resolver", "shop"),
            ("group", group),
            ("rule", rule),
            ("decision", decision),
            ("via", via),
        ]
    }

    let users = decision("-", "users", "keep_remote", "rule");
    assert_eq!(counter(observe::DECISIONS, &users), Some(2));
    let h = labels(&users);
    assert!(
        histograms
            .iter()
            .any(|(n, l, count)| n == observe::DURATION && *l == h && *count == 2),
        "{histograms:?}"
    );
    assert_eq!(
        counter(
            observe::DECISIONS,
            &decision("orders", "-", "review", "group_fallback")
        ),
        Some(1)
    );
    assert_eq!(
        counter(
            observe::DECISIONS,
            &decision("-", "-", "keep_local", "fallback")
        ),
        Some(1)
    );
    assert_eq!(
        counter(observe::DECISIONS, &decision("-", "slow", "review", "rule")),
        Some(1)
    );
    assert_eq!(
        counter(observe::DECISIONS, &decision("-", "-", "review", "limit")),
        Some(1)
    );
    assert_eq!(
        counter(
            observe::FALLBACKS,
            &[("resolver", "shop"), ("group", "orders")]
        ),
        Some(1)
    );
    assert_eq!(
        counter(observe::FALLBACKS, &[("resolver", "shop"), ("group", "-")]),
        Some(1)
    );
    for (cause, n) in [("decision", 1), ("timeout", 1), ("limit", 1)] {
        assert_eq!(
            counter(observe::REVIEWS, &[("resolver", "shop"), ("cause", cause)]),
            Some(n),
            "{cause}"
        );
    }
    assert_eq!(
        counter(
            observe::TIMEOUTS,
            &[("resolver", "shop"), ("group", "-"), ("rule", "slow")]
        ),
        Some(1)
    );
    assert_eq!(
        counter(
            observe::ERRORS,
            &[
                ("resolver", "strict"),
                ("group", "-"),
                ("rule", "-"),
                ("cause", "unmatched")
            ]
        ),
        Some(1)
    );
}

/// Collects formatted tracing output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn each_resolution_runs_in_a_resolve_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let resolver = resolver();
    let user = C::on("user-1").local("UserUpdated", json!({}), &[]).build();
    tracing::subscriber::with_default(subscriber, || {
        runtime
            .block_on(resolver.resolve(&user, &ResolutionContext::default()))
            .unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains(
            "resolve{resolver=shop aggregate=user-1 rule=users group=- decision=keep_local}"
        ),
        "{text}"
    );
    assert!(text.contains("resolved"), "{text}");
}
