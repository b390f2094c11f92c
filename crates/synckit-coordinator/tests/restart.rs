//! Statuses survive a restart: a new coordinator over the same file or sled store reloads each
//! job's last success, last error, report and counters, and continues counting from them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod coord_support;

use std::sync::Arc;
use std::time::Duration;

use coord_support::{Scripted, Step, TokioClock};
use synckit_coordinator::{
    Coordinator, DynStatusStore, FileStatusStore, JobConfig, Phase, RunOutcome, StatusSnapshot,
};
use synckit_types::DynClock;

const HOUR: Duration = Duration::from_secs(3600);

/// A coordinator whose jobs run only when asked: "orders" fails once then succeeds, "audit"
/// always fails.
fn coordinator(store: DynStatusStore, clock: DynClock) -> Coordinator {
    let orders = Scripted::new(clock.clone(), |n| {
        if n == 0 {
            Step::Fail("remote unavailable")
        } else {
            Step::Succeed
        }
    });
    let audit = Scripted::new(clock.clone(), |_| Step::Fail("audit log locked"));
    Coordinator::builder(store)
        .clock(clock)
        .job(
            JobConfig::new("orders", HOUR).with_run_on_start(false),
            Arc::new(orders),
        )
        .job(
            JobConfig::new("audit", HOUR).with_run_on_start(false),
            Arc::new(audit),
        )
        .build()
        .unwrap()
}

/// Run the jobs, restart over `reopen()`, and check the statuses came back.
async fn survives_restart(open: impl Fn() -> DynStatusStore) {
    let clock: DynClock = TokioClock::shared();
    let before: StatusSnapshot = {
        let first = coordinator(open(), clock.clone());
        first.start().await.unwrap();
        for _ in 0..3 {
            first.sync_now("orders").await.unwrap();
        }
        for _ in 0..2 {
            first.sync_now("audit").await.unwrap();
        }
        first.stop(Duration::from_secs(5)).await.unwrap();
        first.status()
    };
    let orders = &before["orders"];
    assert_eq!(orders.phase, Phase::Complete);
    assert_eq!((orders.runs, orders.failures), (3, 1));
    assert!(orders.last_success_ms.is_some());
    assert_eq!(orders.last_error.as_deref(), Some("remote unavailable"));
    assert_eq!(orders.last_report.as_ref().unwrap().counts["call"], 2);
    let audit = &before["audit"];
    assert_eq!(audit.phase, Phase::Failed);
    assert_eq!(audit.consecutive_failures, 2);

    // Everything the first coordinator (and its store) held is gone: only the files remain.
    let second = coordinator(open(), clock.clone());
    second.start().await.unwrap();
    assert_eq!(second.status(), before, "statuses reloaded at start");

    let outcome = second.sync_now("audit").await.unwrap();
    assert!(matches!(outcome, RunOutcome::Failed { .. }), "{outcome:?}");
    let audit = second.job_status("audit").unwrap();
    assert_eq!(audit.consecutive_failures, 3, "counting goes on");
    assert_eq!(audit.runs, 3);
    let orders = second.job_status("orders").unwrap();
    assert_eq!(orders.last_success_ms, before["orders"].last_success_ms);
    second.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn status_survives_a_restart_with_the_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("coordinator").join("status.json");
    survives_restart(|| Arc::new(FileStatusStore::open(&path).unwrap())).await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"audit log locked\""), "{text}");
}

#[cfg(feature = "sled")]
#[tokio::test]
async fn status_survives_a_restart_with_the_sled_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.sled");
    survives_restart(|| {
        Arc::new(synckit_coordinator::SledStatusStore::open(&path).unwrap()) as DynStatusStore
    })
    .await;
}
