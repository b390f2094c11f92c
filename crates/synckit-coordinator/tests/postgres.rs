//! The PostgreSQL status store: leases that exclude and expire, statuses that survive a
//! restart, a crashed holder's job recovered after its lease expires, and two processes (this
//! test binary run twice as children) that never run one job at the same time.
//!
//! Needs `SYNCKIT_TEST_POSTGRES_URL` (for example postgres://postgres@127.0.0.1:5432/test);
//! without it the tests print a loud SKIPPED line, or fail when `CI` is set. Each test uses a
//! fresh random schema and drops it at the end.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod coord_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use coord_support::{Scripted, wait_until};
use synckit_coordinator::{
    BoxError, Coordinator, INTERRUPTED_ERROR, Job, JobConfig, JobContext, JobStatus, Phase,
    PostgresStatusConfig, PostgresStatusStore, Report, RunTrigger, ShouldSync, StatusStore,
};
use synckit_testkit::services::postgres_url;
use synckit_types::{DynClock, SystemClock};

/// Set (to the schema) in the child processes of the two-process test.
const CHILD_SCHEMA_VAR: &str = "SYNCKIT_COORDINATOR_CHILD_SCHEMA";
/// Jobs the child processes run: two quick ones and one that outlives several lease renewals.
const CHILD_JOBS: [&str; 3] = ["quick-a", "quick-b", "slow"];
/// Longest wait for a condition in real time.
const LIMIT: Duration = Duration::from_secs(120);

/// One test's database: its schemas are dropped when it is dropped.
struct TestDb {
    url: String,
    schemas: Mutex<Vec<String>>,
}

impl TestDb {
    fn new(test: &str) -> Option<TestDb> {
        Some(TestDb {
            url: postgres_url(test)?,
            schemas: Mutex::new(Vec::new()),
        })
    }

    fn fresh_schema(&self) -> String {
        let schema = format!(
            "synckit_coord_test_{}_{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        self.schemas.lock().unwrap().push(schema.clone());
        schema
    }

    async fn open(&self, schema: &str) -> PostgresStatusStore {
        open(&self.url, schema).await
    }

    async fn raw(&self) -> tokio_postgres::Client {
        raw_client(&self.url).await
    }
}

async fn open(url: &str, schema: &str) -> PostgresStatusStore {
    PostgresStatusStore::connect(
        PostgresStatusConfig::new(url)
            .with_schema(schema)
            .with_pool_size(4),
    )
    .await
    .unwrap_or_else(|e| panic!("opening schema {schema}: {e}"))
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut *self.schemas.lock().unwrap_or_else(|e| e.into_inner()));
        if schemas.is_empty() {
            return;
        }
        let url = self.url.clone();
        // Drop runs inside the test's runtime: clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let client = raw_client(&url).await;
                let _ = client.batch_execute("SET lock_timeout = '10s'").await;
                let list: Vec<String> = schemas.iter().map(|s| format!("\"{s}\"")).collect();
                let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", list.join(", "));
                if let Err(e) = client.batch_execute(&sql).await {
                    eprintln!("could not drop test schemas {schemas:?}: {e}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_excludes_others_and_expires_when_its_holder_never_releases() {
    let Some(db) =
        TestDb::new("a_lease_excludes_others_and_expires_when_its_holder_never_releases")
    else {
        return;
    };
    let schema = db.fresh_schema();
    // Two stores with their own pools, as two processes would have.
    let (a, b) = (db.open(&schema).await, db.open(&schema).await);
    let ttl = Duration::from_secs(3);
    let long = Duration::from_secs(600);

    assert!(a.try_acquire("job", "A", ttl).await.unwrap());
    assert!(
        !b.try_acquire("job", "B", long).await.unwrap(),
        "A holds it"
    );
    assert!(
        b.try_acquire("other", "B", long).await.unwrap(),
        "other jobs are free"
    );
    assert!(a.renew("job", "A", ttl).await.unwrap());
    assert!(!b.renew("job", "B", long).await.unwrap());
    b.release("job", "B").await.unwrap();
    assert!(
        !b.try_acquire("job", "B", long).await.unwrap(),
        "B cannot release A's lease"
    );

    // A never releases: its lease must free itself after the TTL (waited for by polling the
    // lease itself, never by a fixed sleep).
    let started = std::time::Instant::now();
    while !b.try_acquire("job", "B", long).await.unwrap() {
        assert!(
            started.elapsed() < LIMIT,
            "the lease of a holder that never releases did not expire"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !a.renew("job", "A", ttl).await.unwrap(),
        "an expired holder cannot renew"
    );
    assert!(!a.try_acquire("job", "A", ttl).await.unwrap());
    a.release("job", "A").await.unwrap();
    assert!(
        b.renew("job", "B", long).await.unwrap(),
        "A's release did not touch B's lease"
    );
    b.release("job", "B").await.unwrap();
    assert!(
        a.try_acquire("job", "A", ttl).await.unwrap(),
        "released leases are free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_racing_holders_exactly_one_takes_a_free_lease() {
    let Some(db) = TestDb::new("of_many_racing_holders_exactly_one_takes_a_free_lease") else {
        return;
    };
    let schema = db.fresh_schema();
    let store = Arc::new(db.open(&schema).await);
    for round in 0..20 {
        let job = format!("job-{round}");
        let mut racers = tokio::task::JoinSet::new();
        for holder in 0..8 {
            let store = Arc::clone(&store);
            let job = job.clone();
            racers.spawn(async move {
                store
                    .try_acquire(&job, &format!("holder-{holder}"), Duration::from_secs(60))
                    .await
                    .unwrap()
            });
        }
        let mut winners = 0;
        while let Some(won) = racers.join_next().await {
            winners += usize::from(won.unwrap());
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_persist_and_a_crashed_holders_job_is_recovered_after_its_lease_expires() {
    let Some(db) = TestDb::new(
        "statuses_persist_and_a_crashed_holders_job_is_recovered_after_its_lease_expires",
    ) else {
        return;
    };
    let schema = db.fresh_schema();
    let store = db.open(&schema).await;
    assert!(store.load_all().await.unwrap().is_empty());

    // A holder died mid-run: its status says syncing and its lease is still live.
    let mut crashed = JobStatus::new("orders");
    crashed.phase = Phase::Syncing;
    crashed.holder = Some("dead".into());
    crashed.revision = 3;
    crashed.runs = 2;
    store.save(&crashed).await.unwrap();
    assert_eq!(store.load("orders").await.unwrap(), Some(crashed.clone()));
    assert!(
        store
            .try_acquire("orders", "dead", Duration::from_secs(600))
            .await
            .unwrap()
    );

    let clock: DynClock = Arc::new(SystemClock);
    let job = Arc::new(Scripted::succeeding(clock.clone()));
    let coordinator = Coordinator::builder(Arc::new(db.open(&schema).await))
        .holder("alive")
        .lease_ttl(Duration::from_secs(2))
        .job(
            JobConfig::new("orders", Duration::from_secs(3600)).with_run_on_start(false),
            job.clone(),
        )
        .build()
        .unwrap();
    let mut changes = coordinator.subscribe();
    coordinator.start().await.unwrap();
    // While the dead holder's lease is live, every attempt finds the job busy (and publishes
    // its next try); the job must not run, and its status must stay as the crash left it.
    for _ in 0..4 {
        tokio::time::timeout(LIMIT, changes.changed())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        job.call_count(),
        0,
        "ran while another holder had the lease"
    );
    assert_eq!(
        coordinator.job_status("orders").unwrap().phase,
        Phase::Syncing
    );
    // The dead holder's TTL runs out (brought forward here; expiry itself is tested above).
    db.raw()
        .await
        .execute(
            &format!(
                "UPDATE \"{schema}\".coordinator_leases SET expires_at = clock_timestamp() \
                 WHERE job = 'orders' AND holder = 'dead'"
            ),
            &[],
        )
        .await
        .unwrap();
    let status = wait_until(&coordinator, "the recovered run", LIMIT, |s| {
        s["orders"].phase == Phase::Complete
    })
    .await;
    let calls = job.calls();
    assert_eq!(
        calls.len(),
        1,
        "the job ran once, after the dead holder's lease expired"
    );
    assert_eq!(calls[0].trigger, RunTrigger::Recovery);
    assert_eq!(
        calls[0].before.last_error.as_deref(),
        Some(INTERRUPTED_ERROR)
    );
    assert_eq!((status["orders"].runs, status["orders"].failures), (4, 1));
    coordinator.stop(Duration::from_secs(10)).await.unwrap();

    // A new coordinator over a new connection pool reloads it.
    let again = Coordinator::builder(Arc::new(db.open(&schema).await))
        .job(
            JobConfig::new("orders", Duration::from_secs(3600)).with_run_on_start(false),
            job.clone(),
        )
        .build()
        .unwrap();
    again.start().await.unwrap();
    assert_eq!(again.job_status("orders").as_ref(), Some(&status["orders"]));
    again.stop(Duration::from_secs(10)).await.unwrap();
}

/// A job that records each run as a `(job, pid, started, ended)` row, moving `ended` forward
/// after every step of work, so that a row spans everything the run did.
#[derive(Debug)]
struct IntervalJob {
    name: &'static str,
    client: Arc<tokio_postgres::Client>,
    schema: String,
    steps: u32,
    step: Duration,
}

#[async_trait]
impl Job for IntervalJob {
    async fn should_sync(&self, _ctx: &JobContext) -> Result<ShouldSync, BoxError> {
        Ok(ShouldSync::yes("always"))
    }

    async fn perform_sync(&self, _ctx: &JobContext) -> Result<Report, BoxError> {
        let s = &self.schema;
        let pid = i32::try_from(std::process::id())?;
        let row = self
            .client
            .query_one(
                &format!(
                    "INSERT INTO \"{s}\".intervals (job, pid, started, ended) \
                     VALUES ($1, $2, clock_timestamp(), clock_timestamp()) RETURNING id"
                ),
                &[&self.name, &pid],
            )
            .await?;
        let id: i64 = row.get(0);
        let heartbeat =
            format!("UPDATE \"{s}\".intervals SET ended = clock_timestamp() WHERE id = $1");
        for _ in 0..self.steps {
            // Simulated work: its length is what makes the runs of two processes collide.
            tokio::time::sleep(self.step).await;
            self.client.execute(&heartbeat, &[&id]).await?;
        }
        Ok(Report::new().count("steps", u64::from(self.steps)))
    }
}

/// The child: a coordinator over the parent's schema that runs the jobs for a while (with
/// manual triggers on top of the schedule, for contention), then stops. A no-op unless
/// started by `two_processes_never_run_one_job_at_once`.
#[test]
fn coordinator_child_process() {
    let Some(schema) = std::env::var_os(CHILD_SCHEMA_VAR) else {
        return;
    };
    let schema = schema.into_string().unwrap();
    let url = std::env::var(synckit_testkit::services::POSTGRES_URL_VAR).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let client = Arc::new(raw_client(&url).await);
        let store = Arc::new(open(&url, &schema).await);
        let job = |name: &'static str, steps: u32, step_ms: u64| {
            Arc::new(IntervalJob {
                name,
                client: Arc::clone(&client),
                schema: schema.clone(),
                steps,
                step: Duration::from_millis(step_ms),
            })
        };
        let quick = |name| {
            JobConfig::new(name, Duration::from_millis(40)).with_jitter(Duration::from_millis(40))
        };
        let coordinator = Coordinator::builder(store)
            .holder(format!("child-{}", std::process::id()))
            .lease_ttl(Duration::from_millis(1_500))
            .job(quick("quick-a"), job("quick-a", 3, 15))
            .job(quick("quick-b"), job("quick-b", 3, 15))
            .job(
                // Each run lasts about twice the lease TTL: it needs its renewals.
                JobConfig::new("slow", Duration::from_millis(100))
                    .with_jitter(Duration::from_millis(100)),
                job("slow", 30, 100),
            )
            .build()
            .unwrap();
        coordinator.start().await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < until {
            coordinator
                .trigger(CHILD_JOBS[fastrand::usize(..CHILD_JOBS.len())])
                .unwrap();
            tokio::time::sleep(Duration::from_millis(fastrand::u64(20..80))).await;
        }
        coordinator.stop(Duration::from_secs(10)).await.unwrap();
        for (name, status) in coordinator.status() {
            println!(
                "CHILD {} {name} runs={} failures={} error={:?}",
                std::process::id(),
                status.runs,
                status.failures,
                status.last_error
            );
        }
    });
}

#[test]
fn two_processes_never_run_one_job_at_once() {
    if std::env::var_os(CHILD_SCHEMA_VAR).is_some() {
        return; // this process is a child
    }
    let Some(db) = TestDb::new("two_processes_never_run_one_job_at_once") else {
        return;
    };
    let schema = db.fresh_schema();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = db.raw().await;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA \"{schema}\";
                 CREATE TABLE \"{schema}\".intervals (
                     id BIGSERIAL PRIMARY KEY,
                     job TEXT NOT NULL,
                     pid INTEGER NOT NULL,
                     started TIMESTAMPTZ NOT NULL,
                     ended TIMESTAMPTZ NOT NULL
                 );"
            ))
            .await
            .unwrap();
    });

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "coordinator_child_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_SCHEMA_VAR, &schema)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pids = Vec::new();
    for mut child in children {
        pids.push(i32::try_from(child.id()).unwrap());
        let (sender, receiver) = std::sync::mpsc::channel();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let waiter = std::thread::spawn(move || {
            let mut out = String::new();
            let mut err = String::new();
            let _ = stdout.read_to_string(&mut out);
            let _ = stderr.read_to_string(&mut err);
            let _ = sender.send(());
            (out, err)
        });
        if receiver.recv_timeout(LIMIT).is_err() {
            let _ = child.kill();
            panic!("a child coordinator did not finish in {LIMIT:?}");
        }
        let status = child.wait().unwrap();
        let (out, err) = waiter.join().unwrap();
        assert!(status.success(), "child failed ({status}):\n{out}\n{err}");
        for line in out.lines().filter(|l| l.contains("CHILD ")) {
            eprintln!("{line}");
        }
    }

    runtime.block_on(async {
        let client = db.raw().await;
        let rows = client
            .query(
                &format!(
                    "SELECT job, pid, (extract(epoch FROM started) * 1000000)::bigint, \
                            (extract(epoch FROM ended) * 1000000)::bigint \
                     FROM \"{schema}\".intervals ORDER BY job, started, id"
                ),
                &[],
            )
            .await
            .unwrap();
        let mut by_job: BTreeMap<String, Vec<(i32, i64, i64)>> = BTreeMap::new();
        for row in &rows {
            by_job
                .entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2), row.get(3)));
        }
        let mut ran_in = BTreeSet::new();
        for job in CHILD_JOBS {
            let runs = by_job.get(job).map(Vec::as_slice).unwrap_or_default();
            assert!(!runs.is_empty(), "job {job} never ran");
            for pair in runs.windows(2) {
                let ((pid_a, start_a, end_a), (pid_b, start_b, _)) = (pair[0], pair[1]);
                assert!(
                    start_b >= end_a,
                    "job {job}: a run by {pid_b} started at {start_b} while the run by \
                     {pid_a} from {start_a} went on until {end_a}"
                );
            }
            let pids_of_job: BTreeSet<i32> = runs.iter().map(|r| r.0).collect();
            eprintln!(
                "job {job}: {} runs, by {} of the 2 processes",
                runs.len(),
                pids_of_job.len()
            );
            ran_in.extend(pids_of_job);
        }
        assert_eq!(
            ran_in,
            pids.iter().copied().collect::<BTreeSet<_>>(),
            "both processes got turns"
        );
        // Both stopped cleanly: no job is left syncing, no lease is left held.
        let store = db.open(&schema).await;
        for status in store.load_all().await.unwrap() {
            assert_ne!(status.phase, Phase::Syncing, "{status:?}");
        }
        let held: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM \"{schema}\".coordinator_leases"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(held, 0, "leases released at stop");
    });
}
