//! Hot reload: a valid new file replaces the rule set, an invalid one keeps it and is reported,
//! and concurrent resolutions always see one whole rule set. Tests wait on the report channel
//! with a bounded timeout; they never sleep to synchronise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::C;
use serde_json::json;
use synckit_resolve::{
    Conflict, ConflictResolver, Decision, Position, ReloadReport, ReloadingResolver,
    ResolutionContext, RulesErrorKind, RulesLoader,
};

/// Generous: inotify answers in milliseconds, but CI machines can be slow.
const WAIT: Duration = Duration::from_secs(20);

fn rules(name: &str, rule: &str, strategy: &str) -> String {
    format!("version: 1\nname: {name}\nrules:\n  - name: {rule}\n    strategy: {strategy}\n")
}

/// Replace the file in one step, as editors do (write a temporary file, rename it over).
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Local wrote first, remote last: last-write-wins keeps remote, first-write-wins keeps local.
fn conflict() -> Conflict {
    C::on("a")
        .local("K", json!({}), &[])
        .remote("K", json!({}))
        .build()
}

async fn decide(resolver: &ReloadingResolver) -> (Option<String>, Decision) {
    let r = resolver
        .resolve(&conflict(), &ResolutionContext::default())
        .await
        .unwrap();
    (r.rule, r.decision)
}

fn next(reports: &mpsc::Receiver<ReloadReport>) -> ReloadReport {
    reports
        .recv_timeout(WAIT)
        .expect("a reload report within the timeout")
}

#[tokio::test]
async fn a_valid_file_replaces_the_rules_and_an_invalid_one_is_reported_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, rules("v1", "first", "lww")).unwrap();
    let (tx, reports) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let resolver = ReloadingResolver::builder(RulesLoader::default(), &path)
        .debounce(Duration::from_millis(20))
        .on_report(move |r| {
            let _ = tx.lock().unwrap().send(r.clone());
        })
        .build()
        .unwrap();
    assert!(resolver.is_watching());
    assert_eq!(
        decide(&resolver).await,
        (Some("first".into()), Decision::KeepRemote)
    );

    replace(&path, &rules("v2", "second", "fww"));
    match next(&reports) {
        ReloadReport::Reloaded {
            name,
            rules,
            path: p,
        } => {
            assert_eq!((name.as_str(), rules), ("v2", 1));
            assert_eq!(p, path);
        }
        other => panic!("expected a reload, got {other:?}"),
    }
    assert_eq!(resolver.current().name(), "v2");
    assert_eq!(
        decide(&resolver).await,
        (Some("second".into()), Decision::KeepLocal)
    );

    // An unknown strategy: rejected with its position, the v2 rules stay.
    replace(&path, &rules("v3", "third", "lwww"));
    match next(&reports) {
        ReloadReport::Rejected { error, .. } => {
            assert_eq!(error.kind(), RulesErrorKind::UnknownStrategy);
            assert_eq!(error.position(), Some(Position::new(5, 15)));
            assert_eq!(error.file(), Some(path.as_path()));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(resolver.current().name(), "v2");
    assert_eq!(
        decide(&resolver).await,
        (Some("second".into()), Decision::KeepLocal)
    );

    // Broken YAML is no different.
    replace(&path, "version: 1\nname: [\n");
    assert!(matches!(
        next(&reports),
        ReloadReport::Rejected { error, .. } if error.kind() == RulesErrorKind::Syntax
    ));
    assert_eq!(resolver.current().name(), "v2");

    // Fixed again: reloaded.
    replace(&path, &rules("v4", "fourth", "merge"));
    assert!(matches!(
        next(&reports),
        ReloadReport::Reloaded { name, .. } if name == "v4"
    ));
    assert!(matches!(decide(&resolver).await.1, Decision::Merge(_)));

    resolver.stop_watching();
    assert!(!resolver.is_watching());
}

#[test]
fn the_first_load_must_be_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.json");
    std::fs::write(
        &path,
        r#"{"version": 1, "name": "t", "rules": [{"name": "a"}]}"#,
    )
    .unwrap();
    let e = ReloadingResolver::builder(RulesLoader::default(), &path)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), RulesErrorKind::MissingField);
    assert_eq!(e.file(), Some(path.as_path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_resolutions_never_see_a_half_loaded_rule_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    let set_a = rules("A", "lww-rule", "lww");
    // Set B has two rules; a resolution mixing sets would show a B rule with an A decision.
    let set_b = "version: 1\nname: B\nrules:\n  - name: fww-rule\n    conditions: {event_types: [K]}\n    strategy: fww\n  - name: lww-rule\n    strategy: review\n";
    std::fs::write(&path, &set_a).unwrap();
    let resolver = Arc::new(
        ReloadingResolver::builder(RulesLoader::default(), &path)
            .watch(false)
            .build()
            .unwrap(),
    );
    assert!(!resolver.is_watching());

    let workers: Vec<_> = (0..3)
        .map(|_| {
            let resolver = Arc::clone(&resolver);
            tokio::spawn(async move {
                for _ in 0..2_000 {
                    match decide(&resolver).await {
                        (Some(rule), Decision::KeepRemote) if rule == "lww-rule" => {}
                        (Some(rule), Decision::KeepLocal) if rule == "fww-rule" => {}
                        other => panic!("a mixed rule set answered {other:?}"),
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for i in 0..100 {
        let (text, name) = if i % 2 == 0 {
            (set_b, "B")
        } else {
            (set_a.as_str(), "A")
        };
        std::fs::write(&path, text).unwrap();
        assert!(matches!(resolver.reload(), ReloadReport::Reloaded { .. }));
        assert_eq!(resolver.current().name(), name);
    }
    for worker in workers {
        worker.await.unwrap();
    }
}
