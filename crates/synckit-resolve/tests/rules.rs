//! Rule engine behaviour through the public API: dispatch order, construction errors, groups,
//! priorities, hooks, statistics, timeouts and limits.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{C, Call, Recorder};
use serde_json::json;
use synckit_resolve::{
    AdditiveMerge, CompositeResolver, Conflict, ConflictResolver, Decision, DynResolver,
    DynamicResolver, FirstWriteWins, LastWriteWins, ManualReview, Resolution, ResolutionContext,
    Rule, RuleGroup, RulesErrorKind, spec,
};
use synckit_types::{Error, ErrorKind};

/// Wraps a strategy and counts its calls.
#[derive(Debug)]
struct Counting {
    inner: DynResolver,
    calls: AtomicUsize,
}

impl Counting {
    fn new(inner: impl ConflictResolver) -> Arc<Self> {
        Arc::new(Counting {
            inner: Arc::new(inner),
            calls: AtomicUsize::new(0),
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ConflictResolver for Counting {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> synckit_types::Result<Resolution> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.resolve(conflict, context).await
    }
}

fn panicking_spec() -> synckit_resolve::DynSpec {
    spec::from_fn("must-not-run", |_| {
        panic!("a later rule's spec was evaluated")
    })
}

fn ctx() -> ResolutionContext {
    ResolutionContext::default()
}

#[tokio::test]
async fn each_conflict_reaches_the_first_matching_rule_only() {
    let users = Counting::new(LastWriteWins);
    let orders = Counting::new(AdditiveMerge);
    let admins = Counting::new(ManualReview);
    let fallback = Counting::new(FirstWriteWins);
    let resolver = DynamicResolver::builder()
        .rule(Rule::new(
            "users",
            spec::kind_is(["UserUpdated"]),
            users.clone(),
        ))
        .rule(Rule::new(
            "orders",
            spec::kind_is(["OrderCreated"]),
            orders.clone(),
        ))
        .rule(Rule::new(
            "admins",
            spec::metadata_eq("role", json!("admin")),
            admins.clone(),
        ))
        .fallback(fallback.clone())
        .build()
        .unwrap();
    let counts = || {
        [
            users.calls(),
            orders.calls(),
            admins.calls(),
            fallback.calls(),
        ]
    };

    // (conflict, expected rule, expected decision kind, expected counters afterwards)
    let user = C::on("user-1")
        .local("UserUpdated", json!({"name": "a"}), &[])
        .remote("UserUpdated", json!({"name": "b"}))
        .build();
    let r = resolver.resolve(&user, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("users"));
    assert_eq!(r.decision, Decision::KeepRemote, "remote is later");
    assert_eq!(counts(), [1, 0, 0, 0]);

    // An admin creating an order: `orders` comes before `admins`.
    let order = C::on("order-1")
        .local("OrderCreated", json!({}), &[("role", json!("admin"))])
        .remote("OrderPaid", json!({}))
        .build();
    let r = resolver.resolve(&order, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("orders"));
    assert_eq!(r.decision, Decision::Merge(order.local.clone()));
    assert_eq!(counts(), [1, 1, 0, 0]);

    let admin = C::on("doc-1")
        .local("DocEdited", json!({}), &[("role", json!("admin"))])
        .build();
    let r = resolver.resolve(&admin, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("admins"));
    assert_eq!(r.decision, Decision::Review);
    assert_eq!(counts(), [1, 1, 1, 0]);

    // role "Admin" is not "admin", and a numeric role is not a string one.
    for role in [json!("Admin"), json!(1)] {
        let other = C::on("doc-2")
            .local("DocEdited", json!({}), &[("role", role)])
            .remote("DocEdited", json!({}))
            .build();
        let r = resolver.resolve(&other, &ctx()).await.unwrap();
        assert_eq!(r.rule, None);
        assert!(r.reason.starts_with("global fallback: "), "{}", r.reason);
        assert_eq!(r.decision, Decision::KeepLocal, "local is earlier");
    }
    assert_eq!(counts(), [1, 1, 1, 2]);
    let stats = resolver.stats();
    assert_eq!((stats.rule_matches, stats.fallbacks), (3, 2));
}

#[tokio::test]
async fn later_specs_are_not_evaluated_after_a_match() {
    let resolver = DynamicResolver::builder()
        .rule(Rule::new("first", spec::always(), Arc::new(LastWriteWins)))
        .rule(Rule::new(
            "second",
            panicking_spec(),
            Arc::new(LastWriteWins),
        ))
        .build()
        .unwrap();
    let c = C::on("a").local("K", json!({}), &[]).build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("first"));
}

#[test]
fn construction_fails_without_rule_or_fallback_and_on_duplicate_names() {
    let e = DynamicResolver::builder().build().unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::Empty);
    assert!(
        e.message().contains("no enabled rule and no fallback"),
        "{e}"
    );

    // A disabled rule cannot decide either.
    let e = DynamicResolver::new(
        [Rule::new("off", spec::always(), Arc::new(LastWriteWins)).enabled(false)],
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::Empty);

    // A fallback alone is enough; so is one rule.
    assert!(DynamicResolver::new([], Some(Arc::new(LastWriteWins))).is_ok());
    assert!(
        DynamicResolver::new(
            [Rule::new("r", spec::always(), Arc::new(LastWriteWins))],
            None
        )
        .is_ok()
    );

    let e = DynamicResolver::new(
        [
            Rule::new("same", spec::kind_is(["A"]), Arc::new(LastWriteWins)),
            Rule::new("same", spec::kind_is(["B"]), Arc::new(FirstWriteWins)),
        ],
        Some(Arc::new(LastWriteWins)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::DuplicateName);
    assert!(e.message().contains("\"same\""), "{e}");

    let e = DynamicResolver::new(
        [Rule::new("a.b", spec::always(), Arc::new(LastWriteWins))],
        None,
    )
    .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::InvalidValue);

    // The same rule name in two groups is fine; the same group twice is not.
    let group = |name: &str| {
        RuleGroup::new(name).rule(Rule::new("r", spec::always(), Arc::new(LastWriteWins)))
    };
    assert!(
        CompositeResolver::builder()
            .group(group("a"))
            .group(group("b"))
            .build()
            .is_ok()
    );
    let e = CompositeResolver::builder()
        .group(group("a"))
        .group(group("a"))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::DuplicateName);
    let e = CompositeResolver::builder()
        .group(RuleGroup::new("").fallback(Arc::new(LastWriteWins)))
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::InvalidValue);
}

#[tokio::test]
async fn unmatched_without_fallback_is_an_error_for_review() {
    let hooks = Recorder::new();
    let resolver = DynamicResolver::builder()
        .rule(Rule::new(
            "orders",
            spec::kind_is(["OrderCreated"]),
            Arc::new(AdditiveMerge),
        ))
        .hook(hooks.clone())
        .build()
        .unwrap();
    let c = C::on("user-1").local("UserUpdated", json!({}), &[]).build();
    let e = resolver.resolve(&c, &ctx()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("no rule"), "{e}");
    assert!(e.message().contains("user-1"), "{e}");
    assert_eq!(hooks.take(), [Call::Error("config".into())]);

    let c = C::on("order-1")
        .local("OrderCreated", json!({}), &[])
        .build();
    resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(
        hooks.take(),
        [
            Call::Matched("orders".into()),
            Call::Resolved(Some("orders".into()), "merge".into())
        ]
    );
}

#[derive(Debug)]
struct Failing;

#[async_trait]
impl ConflictResolver for Failing {
    async fn resolve(
        &self,
        _: &Conflict,
        _: &ResolutionContext,
    ) -> synckit_types::Result<Resolution> {
        Err(Error::unavailable("the pricing service is down"))
    }
}

#[tokio::test]
async fn a_failing_strategy_is_an_error_with_context() {
    let hooks = Recorder::new();
    let resolver = CompositeResolver::builder()
        .group(RuleGroup::new("pricing").rule(Rule::new(
            "reprice",
            spec::always(),
            Arc::new(Failing),
        )))
        .hook(hooks.clone())
        .build()
        .unwrap();
    let c = C::on("a").local("K", json!({}), &[]).build();
    let e = resolver.resolve(&c, &ctx()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("pricing.reprice"), "{e}");
    assert!(e.message().contains("service is down"), "{e}");
    assert_eq!(
        hooks.take(),
        [
            Call::Matched("pricing.reprice".into()),
            Call::Error("unavailable".into())
        ]
    );
    let stats = resolver.group_stats();
    assert_eq!(stats[1].0, "pricing");
    assert_eq!(stats[1].1.errors, 1);
}

fn groups_resolver(hooks: Arc<Recorder>) -> CompositeResolver {
    let lww: DynResolver = Arc::new(LastWriteWins);
    CompositeResolver::builder()
        .name("shop")
        .rule(Rule::new(
            "vip",
            spec::metadata_eq("tier", json!("vip")),
            Arc::new(ManualReview),
        ))
        .group(RuleGroup::new("users").enabled(false).rule(Rule::new(
            "all",
            spec::always(),
            Arc::new(FirstWriteWins),
        )))
        .group(
            RuleGroup::new("orders")
                .when(spec::aggregate_matches("order-*").unwrap())
                .rule(Rule::new(
                    "created",
                    spec::kind_is(["OrderCreated"]),
                    Arc::new(AdditiveMerge),
                ))
                .group(RuleGroup::new("bulk").enabled(false).rule(Rule::new(
                    "any",
                    spec::always(),
                    Arc::new(FirstWriteWins),
                )))
                .group(
                    RuleGroup::new("rush")
                        .when(spec::metadata_eq("rush", json!(true)))
                        .rule(Rule::new(
                            "price",
                            spec::field_changed("price").unwrap(),
                            Arc::new(FirstWriteWins),
                        )),
                )
                .fallback(Arc::new(ManualReview)),
        )
        .group(
            RuleGroup::new("docs")
                .when(spec::aggregate_matches("doc-*").unwrap())
                .rule(Rule::new(
                    "title",
                    spec::field_changed("title").unwrap(),
                    Arc::new(FirstWriteWins),
                )),
        )
        .fallback(lww)
        .hook(hooks)
        .build()
        .unwrap()
}

#[tokio::test]
async fn groups_scopes_disabled_groups_and_fallbacks() {
    let hooks = Recorder::new();
    let resolver = groups_resolver(hooks.clone());
    assert_eq!(
        resolver.rule_names(),
        [
            "vip",
            "users.all",
            "orders.created",
            "orders.bulk.any",
            "orders.rush.price",
            "docs.title"
        ]
    );

    // The top-level rule comes first.
    let c = C::on("order-1")
        .local("OrderCreated", json!({}), &[("tier", json!("vip"))])
        .build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("vip"));
    hooks.take();

    // `users` is disabled: its catch-all never fires; `orders.created` decides.
    let c = C::on("order-1")
        .local("OrderCreated", json!({}), &[])
        .build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("orders.created"));
    assert!(matches!(r.decision, Decision::Merge(_)));

    // A nested group whose scope holds: full name `orders.rush.price`.
    let c = C::on("order-2")
        .local("OrderPriced", json!({"price": 3}), &[("rush", json!(true))])
        .remote("OrderPriced", json!({"price": 4}))
        .build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.rule.as_deref(), Some("orders.rush.price"));
    assert_eq!(r.decision, Decision::KeepLocal, "first write wins");
    hooks.take();

    // In scope of `orders`, no rule matches: the group's fallback decides, not the global one;
    // the disabled `orders.bulk` catch-all is skipped.
    let c = C::on("order-3")
        .local("OrderPriced", json!({"price": 3}), &[])
        .remote("OrderPriced", json!({"price": 4}))
        .build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.rule, None);
    assert_eq!(r.decision, Decision::Review);
    assert!(
        r.reason.starts_with("fallback of group orders: "),
        "{}",
        r.reason
    );
    assert_eq!(
        hooks.take(),
        [
            Call::Fallback(Some("orders".into())),
            Call::Resolved(None, "review".into())
        ]
    );

    // `docs` is entered but nothing matches and it has no fallback: the global one decides.
    let c = C::on("doc-1")
        .local("DocEdited", json!({"title": "same"}), &[])
        .remote("DocEdited", json!({"title": "same"}))
        .build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.rule, None);
    assert_eq!(r.decision, Decision::KeepRemote, "last write wins");
    assert_eq!(
        hooks.take(),
        [
            Call::Fallback(None),
            Call::Resolved(None, "keep_remote".into())
        ]
    );

    let stats: std::collections::BTreeMap<_, _> = resolver.group_stats().into_iter().collect();
    let root = stats[""];
    assert_eq!(root.entered, 5);
    assert_eq!((root.rule_matches, root.fallbacks), (1, 1));
    assert_eq!(stats["users"].entered, 0);
    assert_eq!(stats["users"].skipped_disabled, 4);
    let orders = stats["orders"];
    assert_eq!(
        (orders.entered, orders.rule_matches, orders.fallbacks),
        (3, 1, 1)
    );
    assert_eq!(stats["orders.bulk"].skipped_disabled, 2);
    assert_eq!(stats["orders.bulk"].entered, 0);
    assert_eq!(stats["orders.rush"].rule_matches, 1);
    assert_eq!(stats["docs"].entered, 1);
}

#[tokio::test]
async fn priority_orders_rules_and_ties_keep_insertion_order() {
    let rule = |name: &str, priority: i64| {
        Rule::new(name, spec::always(), Arc::new(LastWriteWins)).priority(priority)
    };
    let resolver = DynamicResolver::builder()
        .rule(rule("low", -1))
        .rule(rule("tie-a", 5))
        .rule(rule("zero", 0))
        .rule(rule("tie-b", 5))
        .rule(rule("top", 10))
        .build()
        .unwrap();
    assert_eq!(
        resolver.rule_names(),
        ["top", "tie-a", "tie-b", "zero", "low"]
    );
    let c = C::on("a").local("K", json!({}), &[]).build();
    assert_eq!(
        resolver.resolve(&c, &ctx()).await.unwrap().rule.as_deref(),
        Some("top")
    );

    let group = |name: &str, priority: i64| {
        RuleGroup::new(name).priority(priority).rule(Rule::new(
            "r",
            spec::always(),
            Arc::new(LastWriteWins),
        ))
    };
    let composite = CompositeResolver::builder()
        .group(group("a", 0))
        .group(group("b", 1))
        .group(group("c", 1))
        .build()
        .unwrap();
    assert_eq!(composite.rule_names(), ["b.r", "c.r", "a.r"]);
    assert_eq!(
        composite.resolve(&c, &ctx()).await.unwrap().rule.as_deref(),
        Some("b.r")
    );
}

/// Never answers in time: sleeps for an hour (on the paused test clock).
#[derive(Debug)]
struct Slow;

#[async_trait]
impl ConflictResolver for Slow {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> synckit_types::Result<Resolution> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        LastWriteWins.resolve(conflict, context).await
    }
}

/// Answers after yielding once: pending on the first poll, quick all the same.
#[derive(Debug)]
struct Yielding;

#[async_trait]
impl ConflictResolver for Yielding {
    async fn resolve(
        &self,
        conflict: &Conflict,
        context: &ResolutionContext,
    ) -> synckit_types::Result<Resolution> {
        tokio::task::yield_now().await;
        AdditiveMerge.resolve(conflict, context).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_strategy_slower_than_the_timeout_is_abandoned_for_review() {
    let hooks = Recorder::new();
    let resolver = CompositeResolver::builder()
        .group(
            RuleGroup::new("remote")
                .rule(Rule::new("slow", spec::kind_is(["Slow"]), Arc::new(Slow)))
                .rule(Rule::new("yields", spec::always(), Arc::new(Yielding))),
        )
        .timeout(Duration::from_millis(250))
        .hook(hooks.clone())
        .build()
        .unwrap();
    assert_eq!(resolver.timeout(), Some(Duration::from_millis(250)));

    let started = tokio::time::Instant::now();
    let c = C::on("a").local("Slow", json!({}), &[]).build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.decision, Decision::Review);
    assert_eq!(r.strategy, "timeout");
    assert_eq!(r.rule.as_deref(), Some("remote.slow"));
    assert!(r.reason.contains("250 ms"), "{}", r.reason);
    // Abandoned at the deadline, not after the strategy's hour.
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    assert_eq!(
        hooks.take(),
        [
            Call::Matched("remote.slow".into()),
            Call::Error("timeout".into()),
            Call::Resolved(Some("remote.slow".into()), "review".into()),
        ]
    );
    assert_eq!(resolver.group_stats()[1].1.timeouts, 1);

    let c = C::on("a").local("Quick", json!({}), &[]).build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert!(matches!(r.decision, Decision::Merge(_)));
    assert_eq!(r.rule.as_deref(), Some("remote.yields"));
}

#[test]
fn a_zero_timeout_is_refused() {
    let e = DynamicResolver::builder()
        .fallback(Arc::new(LastWriteWins))
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::InvalidValue);
}

#[tokio::test]
async fn conflicts_over_the_event_limit_go_to_review_unevaluated() {
    let resolver = DynamicResolver::builder()
        .rule(Rule::new(
            "never",
            panicking_spec(),
            Arc::new(LastWriteWins),
        ))
        .max_events(2)
        .build()
        .unwrap();
    let c = C::on("a")
        .local("K", json!({}), &[])
        .local("K", json!({}), &[])
        .remote("K", json!({}))
        .build();
    let r = resolver.resolve(&c, &ctx()).await.unwrap();
    assert_eq!(r.decision, Decision::Review);
    assert_eq!(r.strategy, "limit");
    assert!(r.reason.contains("3 events"), "{}", r.reason);
}

#[test]
fn describe_outlines_the_compiled_rule_set() {
    let text = groups_resolver(Recorder::new()).describe();
    let expected = [
        "resolver \"shop\"",
        "  rule vip when MetadataEquals",
        "  group users (disabled) when Always",
        "    rule users.all when Always => FirstWriteWins",
        "  group orders when AggregateMatches { globs: [Glob(\"order-*\")] }",
        "    group orders.bulk (disabled)",
        "    fallback => ManualReview",
        "      rule orders.rush.price when FieldChanged { path: JsonPath(\"price\") } => FirstWriteWins",
        "  fallback => LastWriteWins",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}
