//! The coordinator's scheduling contract, under tokio's paused clock: jobs that say no,
//! failures and backoff, no overlapping runs, timeouts, panics, `sync_now`, crash recovery,
//! `stop` deadlines, and two coordinators sharing one status store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod coord_support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use coord_support::{Scripted, SlowSaves, Step, TokioClock, wait_until};
use synckit_coordinator::{
    ABANDONED_ERROR, Backoff, Coordinator, CoordinatorError, FileStatusStore, INTERRUPTED_ERROR,
    JobConfig, JobStatus, MemoryStatusStore, Phase, RunOutcome, RunTrigger, StatusStore,
};
use synckit_types::{Clock, DynClock};
use tokio::task::JoinSet;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);
/// Longest logical wait for a condition (time is paused: this costs nothing when met).
const LIMIT: Duration = Duration::from_secs(24 * 3600);

fn every(name: &str, interval: Duration) -> JobConfig {
    JobConfig::new(name, interval).with_jitter(Duration::ZERO)
}

#[tokio::test(start_paused = true)]
async fn three_jobs_due_and_one_says_unchanged_the_other_two_still_run() {
    let clock = TokioClock::shared();
    let a = Arc::new(Scripted::succeeding(clock.clone()));
    let b = Arc::new(Scripted::succeeding(clock.clone()));
    // c takes ten minutes to decide there is nothing to do: a and b must not wait for it.
    let c = Arc::new(
        Scripted::succeeding(clock.clone())
            .skipping("unchanged")
            .checking_for(Duration::from_secs(600)),
    );
    let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
        .clock(clock.clone())
        .job(every("a", HOUR), a.clone())
        .job(every("b", HOUR), b.clone())
        .job(every("c", HOUR).with_timeout(HOUR), c.clone())
        .build()
        .unwrap();
    coordinator.start().await.unwrap();

    let status = wait_until(&coordinator, "a and b run, c skips", LIMIT, |s| {
        s["a"].runs == 1 && s["b"].runs == 1 && s["c"].skips == 1
    })
    .await;
    for name in ["a", "b"] {
        assert_eq!(status[name].phase, Phase::Complete, "{name}");
        assert_eq!(status[name].failures, 0, "{name}");
    }
    let skip = status["c"].last_skip.clone().unwrap();
    assert_eq!(skip.reason, "unchanged");
    assert_eq!(status["c"].runs, 0);
    assert_eq!(status["c"].phase, Phase::Idle);
    assert_eq!(c.call_count(), 0, "a job that says no is not run");
    assert!(
        status["a"].last_success_ms.unwrap() < skip.at_ms
            && status["b"].last_success_ms.unwrap() < skip.at_ms,
        "a and b finished while c was still deciding"
    );
    assert_eq!(a.checks.load(Ordering::SeqCst), 1);
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_backs_off_exponentially_and_starves_nobody() {
    let clock = TokioClock::shared();
    let failing = Arc::new(Scripted::new(clock.clone(), |_| Step::Fail("source down")));
    let steady = Arc::new(Scripted::succeeding(clock.clone()));
    let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
    let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
        .clock(clock.clone())
        .job(
            every("failing", HOUR).with_backoff(backoff),
            failing.clone(),
        )
        .job(every("steady", Duration::from_secs(1)), steady.clone())
        .build()
        .unwrap();
    let mut changes = coordinator.subscribe();
    coordinator.start().await.unwrap();

    // Every failure's planned retry, as published.
    let mut planned = Vec::new();
    let mut seen = 0;
    while seen < 6 {
        tokio::time::timeout(LIMIT, changes.changed())
            .await
            .unwrap()
            .unwrap();
        let status = changes.borrow_and_update()["failing"].clone();
        if status.phase == Phase::Failed && status.consecutive_failures > seen {
            seen = status.consecutive_failures;
            planned.push(status.next_run_ms.unwrap() - status.last_failure_ms.unwrap());
        }
    }
    assert_eq!(planned, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    let status = coordinator.job_status("failing").unwrap();
    assert_eq!(status.consecutive_failures, 6);
    assert_eq!(status.failures, 6);
    assert_eq!(status.last_error.as_deref(), Some("source down"));

    let attempts: Vec<u64> = failing.calls().iter().map(|c| c.at_ms).collect();
    let gaps: Vec<u64> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [1_000, 2_000, 4_000, 8_000, 8_000]);
    assert!(
        failing.calls()[1..]
            .iter()
            .all(|c| c.trigger == RunTrigger::Retry)
    );

    // The steady job ran every second all along.
    let first = attempts[0];
    let last = *attempts.last().unwrap();
    let steady_runs: Vec<u64> = steady
        .calls()
        .iter()
        .map(|c| c.at_ms)
        .filter(|t| (first..=last).contains(t))
        .collect();
    assert!(steady_runs.len() >= 23, "{} steady runs", steady_runs.len());
    assert!(
        steady_runs.windows(2).all(|w| w[1] - w[0] == 1_000),
        "steady stays on schedule: {steady_runs:?}"
    );
    assert_eq!(coordinator.job_status("steady").unwrap().failures, 0);
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_backoff() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::new(clock.clone(), |n| {
        if n < 3 {
            Step::Fail("flaky")
        } else {
            Step::Succeed
        }
    }));
    let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
        .clock(clock.clone())
        .job(every("j", Duration::from_secs(60)), job.clone())
        .build()
        .unwrap();
    coordinator.start().await.unwrap();
    let status = wait_until(&coordinator, "a success", LIMIT, |s| s["j"].runs == 4).await;
    let j = &status["j"];
    assert_eq!(j.phase, Phase::Complete);
    assert_eq!(
        (j.consecutive_failures, j.failures, j.successes()),
        (0, 3, 1)
    );
    assert_eq!(j.next_run_ms.unwrap() - j.last_success_ms.unwrap(), 60_000);
    assert_eq!(j.last_error.as_deref(), Some("flaky"), "kept as history");
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_longer_than_the_interval_never_overlaps_the_next() {
    let clock = TokioClock::shared();
    // Each run takes 50 ms; the job is due every 10 ms and is also asked for constantly.
    let job = Arc::new(Scripted::new(clock.clone(), |_| {
        Step::Sleep(Duration::from_millis(50))
    }));
    let coordinator = Arc::new(
        Coordinator::builder(Arc::new(MemoryStatusStore::new()))
            .clock(clock.clone())
            .job(every("slow", Duration::from_millis(10)), job.clone())
            .build()
            .unwrap(),
    );
    coordinator.start().await.unwrap();
    let mut callers = JoinSet::new();
    for _ in 0..4 {
        let coordinator = Arc::clone(&coordinator);
        callers.spawn(async move {
            for _ in 0..5 {
                let outcome = coordinator.sync_now("slow").await.unwrap();
                assert!(matches!(outcome, RunOutcome::Completed(_)), "{outcome:?}");
            }
        });
    }
    while let Some(caller) = callers.join_next().await {
        caller.unwrap();
    }
    wait_until(&coordinator, "20 runs", LIMIT, |s| s["slow"].runs >= 20).await;
    assert_eq!(job.max_in_flight(), 1, "runs of one job overlapped");
    let calls = job.calls();
    assert!(calls.len() >= 20);
    assert!(
        calls.windows(2).all(|w| w[1].at_ms - w[0].at_ms >= 50),
        "each run starts after the previous one ended"
    );
    assert!(calls.iter().any(|c| c.trigger == RunTrigger::Manual));
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_timeout_is_abandoned_and_recorded_failed() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::new(clock.clone(), |n| {
        if n == 0 { Step::Hang } else { Step::Succeed }
    }));
    let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
        .clock(clock.clone())
        .job(
            every("hangs", HOUR).with_timeout(Duration::from_secs(5)),
            job.clone(),
        )
        .build()
        .unwrap();
    coordinator.start().await.unwrap();
    let status = wait_until(&coordinator, "the timeout", LIMIT, |s| {
        s["hangs"].phase == Phase::Failed
    })
    .await;
    let error = status["hangs"].last_error.clone().unwrap();
    assert!(error.contains("timed out after 5s"), "{error}");
    assert_eq!(status["hangs"].consecutive_failures, 1);
    assert_eq!(
        job.abandoned.load(Ordering::SeqCst),
        1,
        "the call was dropped"
    );

    // The runner is free for the next run.
    let outcome = coordinator.sync_now("hangs").await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed(_)), "{outcome:?}");
    assert_eq!(
        coordinator.job_status("hangs").unwrap().phase,
        Phase::Complete
    );
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_recorded_failed_and_runs_again() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::new(clock.clone(), |n| {
        if n == 0 { Step::Panic } else { Step::Succeed }
    }));
    let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
        .clock(clock.clone())
        .job(every("p", HOUR).with_run_on_start(false), job.clone())
        .build()
        .unwrap();
    coordinator.start().await.unwrap();
    match coordinator.sync_now("p").await.unwrap() {
        RunOutcome::Failed { error } => assert!(error.contains("scripted panic"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        coordinator.sync_now("p").await.unwrap(),
        RunOutcome::Completed(_)
    ));
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn sync_now_runs_without_asking_and_bad_calls_are_clear_errors() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::succeeding(clock.clone()).skipping("unchanged"));
    let coordinator = Coordinator::builder(Arc::new(MemoryStatusStore::new()))
        .clock(clock.clone())
        .job(every("j", HOUR).with_run_on_start(false), job.clone())
        .build()
        .unwrap();
    assert!(matches!(
        coordinator.trigger("j"),
        Err(CoordinatorError::NotStarted)
    ));
    coordinator.start().await.unwrap();
    assert!(matches!(
        coordinator.start().await,
        Err(CoordinatorError::AlreadyStarted)
    ));
    assert!(matches!(
        coordinator.sync_now("nope").await,
        Err(CoordinatorError::UnknownJob { .. })
    ));
    let outcome = coordinator.sync_now("j").await.unwrap();
    assert!(matches!(outcome, RunOutcome::Completed(_)), "{outcome:?}");
    assert_eq!(
        job.checks.load(Ordering::SeqCst),
        0,
        "sync_now does not ask"
    );
    assert_eq!(job.calls()[0].trigger, RunTrigger::Manual);
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
    assert!(matches!(
        coordinator.sync_now("j").await,
        Err(CoordinatorError::Stopped)
    ));
    assert!(matches!(
        coordinator.start().await,
        Err(CoordinatorError::Stopped)
    ));
}

#[tokio::test]
async fn builder_refuses_bad_settings() {
    let store = Arc::new(MemoryStatusStore::new());
    let job = || Arc::new(Scripted::succeeding(TokioClock::shared()));
    let twice = Coordinator::builder(store.clone())
        .job(every("a", HOUR), job())
        .job(every("a", HOUR), job())
        .build();
    assert!(matches!(twice, Err(CoordinatorError::Config { .. })));
    let ttl = Coordinator::builder(store.clone())
        .lease_ttl(Duration::ZERO)
        .build();
    assert!(matches!(ttl, Err(CoordinatorError::Config { .. })));
    let holder = Coordinator::builder(store.clone()).holder("").build();
    assert!(matches!(holder, Err(CoordinatorError::Config { .. })));
    let bad_job = Coordinator::builder(store)
        .job(every("", HOUR), job())
        .build();
    assert!(matches!(bad_job, Err(CoordinatorError::Config { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_status_left_syncing_by_a_crash_is_recovered_at_start_and_runs_promptly() {
    let clock = TokioClock::shared();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("status.json");
    {
        // What a process killed in the middle of a run leaves behind.
        let store = FileStatusStore::open(&path).unwrap();
        let mut crashed = JobStatus::new("orders");
        crashed.phase = Phase::Syncing;
        crashed.holder = Some("coordinator-that-died".into());
        crashed.revision = 9;
        crashed.runs = 4;
        crashed.last_attempt_ms = Some(clock.now_ms() - 60_000);
        crashed.last_success_ms = Some(clock.now_ms() - 120_000);
        crashed.next_run_ms = Some(clock.now_ms() + 3_000_000);
        store.save(&crashed).await.unwrap();
    }

    let store = Arc::new(FileStatusStore::open(&path).unwrap());
    let job = Arc::new(Scripted::succeeding(clock.clone()));
    // Neither an initial run nor the interval would run it within the hour.
    let coordinator = Coordinator::builder(store.clone())
        .clock(clock.clone())
        .job(every("orders", HOUR).with_run_on_start(false), job.clone())
        .build()
        .unwrap();
    let started_ms = clock.now_ms();
    coordinator.start().await.unwrap();
    let status = wait_until(&coordinator, "the recovered run", LIMIT, |s| {
        s["orders"].phase == Phase::Complete
    })
    .await;

    let calls = job.calls();
    assert_eq!(calls.len(), 1);
    let seen = &calls[0];
    assert_eq!(seen.trigger, RunTrigger::Recovery);
    assert_eq!(seen.before.phase, Phase::Failed);
    assert_eq!(seen.before.last_error.as_deref(), Some(INTERRUPTED_ERROR));
    assert_eq!(seen.before.consecutive_failures, 1);
    assert!(
        seen.at_ms - started_ms < 3_600_000,
        "recovered runs do not wait for the interval"
    );

    let orders = &status["orders"];
    assert_eq!(
        (orders.runs, orders.failures),
        (6, 1),
        "crash counted, then a run"
    );
    assert_eq!(orders.consecutive_failures, 0);
    assert_eq!(orders.last_error.as_deref(), Some(INTERRUPTED_ERROR));
    assert!(orders.revision > 9);
    coordinator.stop(Duration::from_secs(1)).await.unwrap();
    assert_eq!(store.load("orders").await.unwrap().as_ref(), Some(orders));
}

#[tokio::test(start_paused = true)]
async fn stop_lets_a_run_finish_before_its_deadline() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::new(clock.clone(), |_| {
        Step::Sleep(Duration::from_secs(20))
    }));
    let store = Arc::new(MemoryStatusStore::new());
    let coordinator = Coordinator::builder(store.clone())
        .clock(clock.clone())
        .job(every("j", HOUR), job.clone())
        .build()
        .unwrap();
    coordinator.start().await.unwrap();
    job.started.notified().await;
    let report = coordinator.stop(Duration::from_secs(60)).await.unwrap();
    assert!(report.abandoned.is_empty());
    assert_eq!(job.abandoned.load(Ordering::SeqCst), 0);
    let saved = store.load("j").await.unwrap().unwrap();
    assert_eq!(saved.phase, Phase::Complete);
    assert_eq!(coordinator.job_status("j").unwrap(), saved);
}

#[tokio::test(start_paused = true)]
async fn stop_writes_the_final_status_even_when_its_deadline_has_passed() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::new(clock.clone(), |_| Step::Hang));
    // Every save takes a while, as over a network: a write bounded by the passed deadline
    // would fail.
    let store = Arc::new(SlowSaves {
        inner: MemoryStatusStore::new(),
        delay: Duration::from_millis(200),
    });
    let coordinator = Coordinator::builder(store.clone())
        .clock(clock.clone())
        .store_timeout(Duration::from_secs(5))
        .job(every("j", HOUR), job.clone())
        .build()
        .unwrap();
    coordinator.start().await.unwrap();
    job.started.notified().await;
    assert_eq!(
        store.inner.load("j").await.unwrap().unwrap().phase,
        Phase::Syncing
    );

    let passed = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    let report = coordinator.stop_by(passed).await.unwrap();
    assert_eq!(report.abandoned, ["j"]);
    assert_eq!(job.abandoned.load(Ordering::SeqCst), 1);
    let saved = store.inner.load("j").await.unwrap().unwrap();
    assert_eq!(saved.phase, Phase::Failed);
    assert_eq!(saved.last_error.as_deref(), Some(ABANDONED_ERROR));
    assert_eq!(
        saved.next_run_ms,
        coordinator.job_status("j").unwrap().next_run_ms
    );
    // The lease was released: another holder can take the job at once.
    assert!(
        store
            .try_acquire("j", "next", Duration::from_secs(1))
            .await
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_dropped_by_its_callers_timeout_can_be_finished_by_another() {
    let clock = TokioClock::shared();
    let job = Arc::new(Scripted::new(clock.clone(), |_| Step::Hang));
    let store = Arc::new(MemoryStatusStore::new());
    let coordinator = Coordinator::builder(store.clone())
        .clock(clock.clone())
        .job(every("j", HOUR), job.clone())
        .build()
        .unwrap();
    coordinator.start().await.unwrap();
    job.started.notified().await;
    let first = tokio::time::timeout(Duration::ZERO, coordinator.stop(HOUR)).await;
    assert!(first.is_err(), "the caller gave up");
    let report = coordinator.stop(Duration::ZERO).await.unwrap();
    assert_eq!(report.abandoned, ["j"]);
    let saved = store.load("j").await.unwrap().unwrap();
    assert_eq!(saved.last_error.as_deref(), Some(ABANDONED_ERROR));
}

#[tokio::test(start_paused = true)]
async fn two_coordinators_on_one_store_never_run_a_job_at_once() {
    let clock = TokioClock::shared();
    let store = Arc::new(MemoryStatusStore::new());
    let job = Arc::new(Scripted::new(clock.clone(), |_| {
        Step::Sleep(Duration::from_millis(300))
    }));
    let other = Arc::new(Scripted::succeeding(clock.clone()));
    let build = |holder: &str| {
        Coordinator::builder(store.clone())
            .clock(clock.clone() as DynClock)
            .holder(holder)
            .lease_ttl(Duration::from_millis(200))
            .job(
                JobConfig::new("shared", Duration::from_millis(100))
                    .with_jitter(Duration::from_millis(100)),
                job.clone(),
            )
            .job(every("other", Duration::from_millis(500)), other.clone())
            .build()
            .unwrap()
    };
    let (first, second) = (Arc::new(build("first")), Arc::new(build("second")));
    first.start().await.unwrap();
    second.start().await.unwrap();
    let mut callers = JoinSet::new();
    for coordinator in [&first, &second] {
        let coordinator = Arc::clone(coordinator);
        callers.spawn(async move {
            let mut busy = 0;
            for _ in 0..10 {
                if coordinator.sync_now("shared").await.unwrap() == RunOutcome::Busy {
                    busy += 1;
                }
            }
            busy
        });
    }
    let mut busy = 0;
    while let Some(caller) = callers.join_next().await {
        busy += caller.unwrap();
    }
    wait_until(&first, "30 shared runs", LIMIT, |s| s["shared"].runs >= 30).await;
    assert_eq!(job.max_in_flight(), 1, "two holders ran the job at once");
    assert!(busy > 0, "the holders did contend for the lease");
    let holders: std::collections::BTreeSet<_> = job
        .calls()
        .iter()
        .filter_map(|c| c.before.holder.clone())
        .collect();
    assert!(holders.len() == 2, "both coordinators ran it: {holders:?}");
    first.stop(Duration::from_secs(1)).await.unwrap();
    second.stop(Duration::from_secs(1)).await.unwrap();
}
