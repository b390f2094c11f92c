//! The audit trail end to end: decisions made by a rules file on a sled node survive a restart
//! with their rule, group, context and before/after state, and answer queries by aggregate,
//! time range and rule, and the rollback analysis.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use synckit::prelude::*;
use synckit::resolve::audit::{self, AuditFilter, Dependency};
use synckit::resolve::{Format, RulesLoader, StrategyRegistry};
use synckit::{Clock, DecisionKind, DynNodeStore, DynResolver, ManualClock, SledStore};
use synckit_tests::{TestHub, node, quick_retry};

const RULES: &str = r#"
version: 1
name: audit-test
settings:
  default_fallback: lww
groups:
  - name: tasks
    conditions:
      aggregate_ids: ["task-*"]
    rules:
      - name: titles
        conditions:
          changed_fields: [title]
        strategy: lww
"#;

fn rules() -> DynResolver {
    let loader = RulesLoader::new(StrategyRegistry::new());
    Arc::new(loader.load_str(RULES, Format::Yaml).unwrap())
}

async fn sled_node(hub: &TestHub, dir: &Path, clock: &ManualClock) -> (Node, DynNodeStore) {
    let store: DynNodeStore = Arc::new(SledStore::open(dir).unwrap());
    let node = Node::builder()
        .store(store.clone())
        .transport(Arc::new(hub.transport()))
        .resolver(rules())
        .clock(Arc::new(clock.clone()))
        .config(
            Config::builder()
                .node_id(NodeId::new("b").unwrap())
                .retry(quick_retry())
                .identity(Some("ada".into()), Some("session-7".into()))
                .origin("audit-test")
                .build()
                .unwrap(),
        )
        .open()
        .await
        .unwrap();
    (node, store)
}

fn rename(aggregate: &str, title: &str) -> EventBuilder {
    Event::builder("Renamed", aggregate).data(json!({ "title": title, "owner": "same" }))
}

#[tokio::test(start_paused = true)]
async fn decisions_survive_a_restart_and_answer_queries() {
    let hub = TestHub::new();
    let dir = tempfile::tempdir().unwrap();
    let a = node(&hub, "a", 1_000).await;
    let clock = ManualClock::new(1_000);
    let (b, _) = sled_node(&hub, dir.path(), &clock).await;

    // Two rounds of concurrent renames of task-1 (b writes later each time: b's edit wins and
    // is rebased), and one of note-1, which only the global fallback covers.
    let mut decided_at = Vec::new();
    for (round, aggregate) in [(1, "task-1"), (2, "task-1"), (3, "note-1")] {
        a.node
            .append(rename(aggregate, &format!("a{round}")))
            .await
            .unwrap();
        a.node.sync().await.unwrap();
        b.sync().await.unwrap();
        a.clock.advance(1_000);
        clock.advance(5_000);
        a.node
            .append(rename(aggregate, &format!("a{round}'")))
            .await
            .unwrap();
        b.append(rename(aggregate, &format!("b{round}")))
            .await
            .unwrap();
        a.node.sync().await.unwrap();
        decided_at.push(clock.now_ms());
        let r = b.sync().await.unwrap();
        assert_eq!(r.conflicts, 1, "round {round}");
    }
    b.close().await.unwrap();
    drop(b);

    // Reopen the store as a fresh process would.
    let (b, store) = sled_node(&hub, dir.path(), &clock).await;
    let all = audit::query(&*store, &AuditFilter::default(), None, 0)
        .await
        .unwrap();
    assert_eq!(all.records.len(), 3);
    assert_eq!(all.next, None);

    let first = &all.records[0];
    assert_eq!(first.decision, DecisionKind::KeepLocal);
    assert_eq!(first.strategy, "last_write_wins");
    assert_eq!(first.rule.as_deref(), Some("tasks.titles"));
    assert_eq!(first.group.as_deref(), Some("tasks"));
    assert_eq!(first.kind, "Renamed");
    assert_eq!(first.changed_fields, ["title"]);
    assert_eq!(first.context.user.as_deref(), Some("ada"));
    assert_eq!(first.context.session.as_deref(), Some("session-7"));
    assert_eq!(first.context.origin.as_deref(), Some("audit-test"));
    assert_eq!(first.context.node_id.as_ref().unwrap().as_str(), "b");
    assert_eq!(first.at, decided_at[0]);
    // Before: both sides; after: b's edit rebased.
    assert_eq!(first.conflict.local[0].data["title"], "b1");
    assert_eq!(first.conflict.remote[0].event.data["title"], "a1'");
    assert_eq!(first.result.len(), 1);
    assert_eq!(first.result[0].data["title"], "b1");

    let fallback = &all.records[2];
    assert_eq!(fallback.rule, None);
    assert_eq!(fallback.group, None);
    assert!(
        fallback.reason.starts_with("global fallback:"),
        "{}",
        fallback.reason
    );

    // By aggregate, by rule, by time range.
    let by_aggregate = AuditFilter {
        aggregate_id: Some(AggregateId::new("task-1").unwrap()),
        ..AuditFilter::default()
    };
    let page = audit::query(&*store, &by_aggregate, None, 1).await.unwrap();
    assert_eq!(page.records[0].id, first.id);
    let page = audit::query(&*store, &by_aggregate, page.next, 1)
        .await
        .unwrap();
    assert_eq!(page.records[0].id, all.records[1].id);
    let by_rule = AuditFilter {
        rule: Some("tasks.titles".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        audit::query(&*store, &by_rule, None, 0)
            .await
            .unwrap()
            .records
            .len(),
        2
    );
    let last_round = AuditFilter {
        from_ms: Some(decided_at[2]),
        ..AuditFilter::default()
    };
    let page = audit::query(&*store, &last_round, None, 0).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].conflict.aggregate_id.as_str(), "note-1");

    // Round 2 decided on task-1 after round 1, from the state it left; its conflict holds
    // only round 2's edits, so it depends by state. note-1's decision is not a dependent.
    let analysis = audit::rollback_analysis(&*store, &first.id).await.unwrap();
    assert_eq!(analysis.dependents.len(), 1);
    assert_eq!(analysis.dependents[0].record.id, all.records[1].id);
    assert_eq!(analysis.dependents[0].dependency, Dependency::State);
    b.close().await.unwrap();
}
