//! Crash test: a child process appends to the hub and runs node commits (put pending, push,
//! confirm with a cursor move), printing each acknowledged id; it is killed with SIGKILL at
//! random moments, 24 rounds on one database. After every kill the store must open with no
//! repair, hold every acknowledged event exactly once with hub seqs contiguous from 1, and
//! keep the node's cursor and outbox consistent with its confirmed log.
//!
//! The child is this test binary run again with `--exact child_appends_until_killed`; that
//! test does nothing unless `SYNCKIT_CRASH_CHILD_DIR` is set. The seed is printed; set
//! `SYNCKIT_CRASH_SEED` to replay one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit_store_sqlite::SqliteStore;
use synckit_types::{
    AggregateId, AppendOutcome, AuditRecord, Conflict, DecisionKind, Event, EventStore,
    EventStoreExt, Hlc, NodeStore, NodeStoreExt, NodeWrite, ReviewEntry, Seq, StoredEvent,
    TenantId,
};

const CHILD_DIR: &str = "SYNCKIT_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "SYNCKIT_CRASH_ROUND";
const SEED: &str = "SYNCKIT_CRASH_SEED";
const ROUNDS: u32 = 24;
/// Longest wait for one line of the child's output.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a whole round may take.
const ROUND_DEADLINE: Duration = Duration::from_secs(40);

fn hub_tenant() -> TenantId {
    TenantId::new("hub").unwrap()
}

/// The hub tenant the node pushes its pending events to.
fn push_tenant() -> TenantId {
    TenantId::new("pushes").unwrap()
}

fn event(id: &str, aggregate: &str) -> Event {
    Event::builder("Measured", aggregate)
        .id(id)
        .origin("crash-child")
        .hlc(Hlc::new(1_700_000_000_000, 0))
        .data(json!({ "id": id, "pad": "x".repeat(64) }))
        .build()
        .unwrap()
}

/// What the child acknowledged over all rounds.
#[derive(Debug, Default)]
struct Acked {
    hub: BTreeMap<String, u64>,
    pending: BTreeSet<String>,
    confirmed: BTreeMap<String, u64>,
}

impl Acked {
    fn record(&mut self, line: &str) {
        let Some(ack) = line.find("ACK ").map(|i| &line[i + 4..]) else {
            return;
        };
        let parts: Vec<&str> = ack.split_whitespace().collect();
        match parts.as_slice() {
            ["hub", id, seq] => {
                let seq = seq.parse().unwrap();
                if let Some(old) = self.hub.insert((*id).to_owned(), seq) {
                    assert_eq!(old, seq, "{id} acknowledged at two seqs");
                }
            }
            ["pending", id] => {
                self.pending.insert((*id).to_owned());
            }
            ["confirmed", id, seq] => {
                let seq = seq.parse().unwrap();
                if let Some(old) = self.confirmed.insert((*id).to_owned(), seq) {
                    assert_eq!(old, seq, "{id} confirmed at two seqs");
                }
            }
            other => panic!("unexpected ack line {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_at_random_moments_loses_nothing_acknowledged() {
    let seed: u64 = std::env::var(SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (replay with {SEED}={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut acked = Acked::default();

    for round in 0..ROUNDS {
        let kill_after = rng.usize(1..=150);
        let log = dir.path().join(format!("child-{round}.log"));
        let child_log = || std::fs::read_to_string(&log).unwrap_or_default();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_appends_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, &path)
            .env(CHILD_ROUND, round.to_string())
            .env(SEED, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Wait for `kill_after` acknowledgements, then kill; keep what was printed before.
        let deadline = Instant::now() + ROUND_DEADLINE;
        let mut seen = 0;
        let mut killed = false;
        loop {
            let wait = LINE_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    if line.contains("ACK ") {
                        acked.record(&line);
                        seen += 1;
                    }
                    if seen >= kill_after && !killed {
                        child.kill().unwrap(); // SIGKILL
                        killed = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    child.kill().ok();
                    panic!(
                        "round {round}: the child printed nothing for {wait:?}; its stderr:\n{}",
                        child_log()
                    );
                }
            }
        }
        let status = child.wait().unwrap();
        assert!(
            killed,
            "round {round}: the child exited by itself: {status}; its stderr:\n{}",
            child_log()
        );

        verify(&path, &acked, round).await;
    }
    eprintln!(
        "crash test: {ROUNDS} rounds, {} hub and {} confirmed acknowledgements, {:?}",
        acked.hub.len(),
        acked.confirmed.len(),
        started.elapsed()
    );
    assert!(acked.hub.len() + acked.confirmed.len() > usize::try_from(ROUNDS).unwrap());
}

/// Reopen after a kill and check every promise.
async fn verify(path: &Path, acked: &Acked, round: u32) {
    let what = |s: &str| format!("round {round}: {s}");
    let store = SqliteStore::open(path).unwrap_or_else(|e| panic!("{}: {e}", what("reopen")));
    store.integrity_check().await.unwrap();

    // Hub logs: seqs 1..=head, each id once, head in step.
    let mut hub_seqs: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for t in [hub_tenant(), push_tenant()] {
        let log = store.read_all(&t).await.unwrap();
        let seqs: Vec<u64> = log.iter().map(|e| e.seq.get()).collect();
        let expected: Vec<u64> = (1..=log.len() as u64).collect();
        assert_eq!(
            seqs,
            expected,
            "{}",
            what(&format!("{t} seqs are contiguous from 1"))
        );
        assert_eq!(
            store.head(&t).await.unwrap(),
            Seq(log.len() as u64),
            "{}",
            what("head")
        );
        let ids: HashMap<String, u64> = log
            .iter()
            .map(|e| (e.event.id.to_string(), e.seq.get()))
            .collect();
        assert_eq!(
            ids.len(),
            log.len(),
            "{}",
            what(&format!("{t} ids are unique"))
        );
        hub_seqs.insert(t.to_string(), ids);
    }
    let hub = &hub_seqs["hub"];
    for (id, seq) in &acked.hub {
        assert_eq!(
            hub.get(id),
            Some(seq),
            "{}",
            what(&format!("acknowledged {id}"))
        );
    }

    // Node: confirmed log, outbox and cursor agree.
    let state = store.state().await.unwrap();
    let confirmed = store.confirmed_all().await.unwrap();
    let pending = store.pending_all().await.unwrap();
    let confirmed_ids: HashMap<String, u64> = confirmed
        .iter()
        .map(|e| (e.event.id.to_string(), e.seq.get()))
        .collect();
    let pending_ids: BTreeSet<String> = pending.iter().map(|p| p.event.id.to_string()).collect();
    assert_eq!(
        confirmed_ids.len(),
        confirmed.len(),
        "{}",
        what("confirmed once")
    );
    assert_eq!(pending_ids.len(), pending.len(), "{}", what("pending once"));
    assert_eq!(
        state.pending,
        pending.len() as u64,
        "{}",
        what("pending count")
    );
    assert_eq!(
        state.reviews,
        store.reviews(10_000).await.unwrap().len() as u64
    );
    assert_eq!(
        state.confirmed_head,
        confirmed.last().map_or(Seq::ZERO, |e| e.seq),
        "{}",
        what("confirmed head")
    );
    assert_eq!(
        state.cursor,
        state.confirmed_head,
        "{}",
        what("the cursor is the seq of the last confirmed commit")
    );
    for id in &pending_ids {
        assert!(
            !confirmed_ids.contains_key(id),
            "{}",
            what(&format!("{id} both pending and confirmed"))
        );
    }
    for (id, seq) in &acked.confirmed {
        assert_eq!(
            confirmed_ids.get(id),
            Some(seq),
            "{}",
            what(&format!("confirmed {id}"))
        );
    }
    for id in &acked.pending {
        assert!(
            pending_ids.contains(id) || confirmed_ids.contains_key(id),
            "{}",
            what(&format!("acknowledged pending {id} was lost"))
        );
    }
    // Every confirmed event is the hub's event at that seq.
    let pushes = &hub_seqs["pushes"];
    for (id, seq) in &confirmed_ids {
        assert_eq!(
            pushes.get(id),
            Some(seq),
            "{}",
            what(&format!("confirmed {id} matches the hub"))
        );
    }
    store.close().await.unwrap();
}

/// Child: append and commit until killed, printing `ACK` lines only after a call returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_appends_until_killed() {
    let Ok(path) = std::env::var(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let seed: u64 = std::env::var(SEED).unwrap().parse().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let store = SqliteStore::open(&path).unwrap();

    // A restarted node first pushes what its outbox still holds.
    push_and_confirm(&store, &mut rng, &format!("{round}-restart")).await;

    let mut n = 0u64;
    let mut acked_hub: Vec<Event> = Vec::new();
    for op in 0..100_000u64 {
        if rng.u8(0..3) < 2 {
            let mut batch: Vec<Event> = (0..rng.usize(1..6))
                .map(|_| {
                    n += 1;
                    event(&format!("r{round}-h{n}"), &format!("agg-{}", rng.u8(0..5)))
                })
                .collect();
            // Now and then a retry of an acknowledged event: a duplicate, never a second copy.
            if !acked_hub.is_empty() && rng.u8(0..4) == 0 {
                batch.push(acked_hub[rng.usize(0..acked_hub.len())].clone());
            }
            let report = store.append(&hub_tenant(), &batch).await.unwrap();
            for (r, e) in report.results.iter().zip(&batch) {
                let seq = r.outcome.seq().expect("hub events are stored");
                println!("ACK hub {} {seq}", r.id);
                acked_hub.push(e.clone());
            }
        } else {
            let events: Vec<Event> = (0..rng.usize(1..4))
                .map(|i| {
                    event(
                        &format!("r{round}-p{op}-{i}"),
                        &format!("agg-{}", rng.u8(0..5)),
                    )
                })
                .collect();
            store
                .commit(NodeWrite {
                    put_pending: events.clone(),
                    ..NodeWrite::default()
                })
                .await
                .unwrap();
            for e in &events {
                println!("ACK pending {}", e.id);
            }
            push_and_confirm(&store, &mut rng, &format!("{round}-{op}")).await;
        }
    }
}

/// Push the whole outbox to the hub, then confirm it with the cursor at its last seq.
async fn push_and_confirm(store: &SqliteStore, rng: &mut fastrand::Rng, label: &str) {
    let pending: Vec<Event> = store
        .pending_all()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event)
        .collect();
    if pending.is_empty() {
        return;
    }
    let report = store.append(&push_tenant(), &pending).await.unwrap();
    let mut confirm = Vec::new();
    for (r, e) in report.results.iter().zip(&pending) {
        let (seq, aggregate_version, recorded_at) = match r.outcome {
            AppendOutcome::Accepted {
                seq,
                aggregate_version,
                recorded_at,
            }
            | AppendOutcome::Duplicate {
                seq,
                aggregate_version,
                recorded_at,
            } => (seq, aggregate_version, recorded_at),
            ref other => panic!("push of {} gave {other:?}", e.id),
        };
        confirm.push(StoredEvent {
            event: e.clone(),
            seq,
            aggregate_version,
            recorded_at,
        });
    }
    let cursor = confirm.iter().map(|c| c.seq).max();
    let mut write = NodeWrite {
        confirm: confirm.clone(),
        cursor,
        ..NodeWrite::default()
    };
    if rng.u8(0..4) == 0 {
        // Some commits also touch the review queue and audit trail.
        let aggregate = AggregateId::new("agg-0").unwrap();
        let conflict = Conflict {
            aggregate_id: aggregate,
            base_version: 0,
            current_version: 1,
            local: Vec::new(),
            remote: Vec::new(),
        };
        write.put_reviews.push(ReviewEntry {
            id: format!("review-{label}"),
            conflict: conflict.clone(),
            reason: "crash test".into(),
            strategy: "manual".into(),
            rule: None,
            created_at: 0,
        });
        write.audit.push(AuditRecord {
            id: format!("audit-{label}"),
            at: 0,
            decision: DecisionKind::Review,
            strategy: "manual".into(),
            rule: None,
            group: None,
            reason: "crash test".into(),
            kind: String::new(),
            changed_fields: Vec::new(),
            context: Default::default(),
            conflict,
            result: Vec::new(),
            decided_by: "resolver".into(),
            duration_us: 0,
        });
    }
    store.commit(write).await.unwrap();
    for c in &confirm {
        println!("ACK confirmed {} {}", c.event.id, c.seq);
    }
}
