//! Crash safety: a child process appends and commits in a loop, printing every acknowledged
//! write, and is killed with SIGKILL at random moments; after each kill the store must open
//! with no repair and hold every acknowledged write exactly once, with contiguous seqs and a
//! node cursor, confirmed log and outbox that agree.
//!
//! The child is this test binary run again (`crash_child`, a no-op unless
//! `SYNCKIT_CRASH_CHILD_DIR` is set). Kill moments come from a seeded RNG (the seed is printed;
//! set `SYNCKIT_CRASH_SEED` to replay one) and the number of acknowledgement lines read first.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit_store_sled::SledStore;
use synckit_types::{
    AppendOutcome, Event, EventStore, EventStoreExt, Hlc, NodeStore, NodeStoreExt, NodeWrite, Seq,
    StoredEvent, TenantId,
};

const DIR_ENV: &str = "SYNCKIT_CRASH_CHILD_DIR";
const ROUND_ENV: &str = "SYNCKIT_CRASH_ROUND";
const ROUNDS: usize = 40;
/// Longest wait for one line of the child.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

fn tenant() -> TenantId {
    TenantId::new("crash").unwrap()
}

fn event(id: &str, aggregate: &str) -> Event {
    Event::builder("Crashed", aggregate)
        .id(id)
        .origin("child")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id, "pad": "c".repeat(120) }))
        .build()
        .unwrap()
}

/// The child: append and commit until killed, printing what was acknowledged.
///
/// `HUB <id> <seq>` per accepted event, `PENDING <id>` per event put in the outbox,
/// `CONFIRMED <cursor> <id>...` per commit that confirmed pending events and moved the cursor.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let round: usize = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = SledStore::open(Path::new(&dir)).unwrap();
        let t = tenant();
        let mut cursor = store.state().await.unwrap().cursor.get();
        let mut n = 0usize;
        loop {
            let size = 1 + n % 5;
            let batch: Vec<Event> = (n..n + size)
                .map(|i| event(&format!("r{round}-e{i}"), &format!("a{}", i % 7)))
                .collect();
            let report = store.append(&t, &batch).await.unwrap();
            for r in &report.results {
                match r.outcome {
                    AppendOutcome::Accepted { seq, .. } => println!("HUB {} {seq}", r.id),
                    ref other => panic!("{}: {other:?}", r.id),
                }
            }
            n += size;

            let pending: Vec<Event> = (0..2)
                .map(|k| event(&format!("r{round}-p{n}-{k}"), &format!("n{round}-{n}-{k}")))
                .collect();
            store
                .commit(NodeWrite {
                    put_pending: pending.clone(),
                    ..NodeWrite::default()
                })
                .await
                .unwrap();
            for p in &pending {
                println!("PENDING {}", p.id);
            }
            let confirm: Vec<StoredEvent> = pending
                .iter()
                .enumerate()
                .map(|(k, e)| StoredEvent {
                    event: e.clone(),
                    seq: Seq(cursor + 1 + k as u64),
                    aggregate_version: 1,
                    recorded_at: 0,
                })
                .collect();
            let new_cursor = cursor + confirm.len() as u64;
            store
                .commit(NodeWrite {
                    confirm,
                    cursor: Some(Seq(new_cursor)),
                    ..NodeWrite::default()
                })
                .await
                .unwrap();
            cursor = new_cursor;
            let ids: Vec<String> = pending.iter().map(|e| e.id.to_string()).collect();
            println!("CONFIRMED {cursor} {}", ids.join(" "));
        }
    });
}

/// What the parent saw acknowledged, over every round.
#[derive(Default)]
struct Acked {
    hub: BTreeMap<String, u64>,
    pending: BTreeSet<String>,
    confirmed: BTreeSet<String>,
    cursor: u64,
}

impl Acked {
    /// Record one line; whether it was an acknowledgement.
    fn record(&mut self, line: &str) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        // The test harness may print its own text before the child's first line.
        let Some(at) = words
            .iter()
            .position(|w| matches!(*w, "HUB" | "PENDING" | "CONFIRMED"))
        else {
            return false;
        };
        match &words[at..] {
            ["HUB", id, seq] => {
                let seq: u64 = seq.parse().unwrap();
                let previous = self.hub.insert((*id).to_owned(), seq);
                assert!(previous.is_none(), "{id} acknowledged twice");
            }
            ["PENDING", id] => {
                self.pending.insert((*id).to_owned());
            }
            ["CONFIRMED", cursor, ids @ ..] => {
                self.cursor = cursor.parse().unwrap();
                self.confirmed.extend(ids.iter().map(|id| (*id).to_owned()));
            }
            other => panic!("malformed child line {other:?}"),
        }
        true
    }
}

#[test]
fn killed_at_random_moments_loses_no_acknowledged_write() {
    if std::env::var_os(DIR_ENV).is_some() {
        return; // this process is a child
    }
    let seed = std::env::var("SYNCKIT_CRASH_SEED")
        .map(|s| s.parse().unwrap())
        .unwrap_or_else(|_| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (replay with SYNCKIT_CRASH_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut acked = Acked::default();

    for round in 0..ROUNDS {
        // Sometimes kill at once, while the child may still be opening (and recovering) the
        // store; otherwise after a random number of acknowledgements.
        let target = if rng.u8(..10) == 0 {
            0
        } else {
            rng.usize(1..=60)
        };
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        let mut seen = 0;
        while seen < target {
            match rx.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => {
                    if acked.record(&line) {
                        seen += 1;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!("round {round}: no line from the child in {LINE_TIMEOUT:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    panic!(
                        "round {round}: the child stopped on its own ({status}):\n{}",
                        errors.join().unwrap()
                    );
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines the child printed before it died were acknowledged too.
        reader.join().unwrap();
        for line in rx.try_iter() {
            acked.record(&line);
        }
        drop(errors);

        runtime.block_on(verify(dir.path(), &acked, round));
    }
    eprintln!(
        "crash test: {ROUNDS} rounds, {} hub events and {} node commits acknowledged, {:?}",
        acked.hub.len(),
        acked.confirmed.len() / 2,
        started.elapsed()
    );
    assert!(
        acked.hub.len() >= ROUNDS,
        "the child made progress: {} events",
        acked.hub.len()
    );
}

/// Reopen the store after a kill and check it against what was acknowledged.
async fn verify(dir: &Path, acked: &Acked, round: usize) {
    let store = SledStore::open(dir)
        .unwrap_or_else(|e| panic!("round {round}: the store must open without repair: {e}"));
    let t = tenant();

    // Hub: contiguous seqs from 1, each id once, every acknowledged id at its seq.
    let log = store.read_all(&t).await.unwrap();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(
            e.seq,
            Seq(i as u64 + 1),
            "round {round}: seqs are contiguous"
        );
    }
    let mut ids = BTreeMap::new();
    for e in &log {
        let previous = ids.insert(e.event.id.to_string(), e.seq.get());
        assert!(
            previous.is_none(),
            "round {round}: {} stored twice",
            e.event.id
        );
    }
    for (id, seq) in &acked.hub {
        assert_eq!(
            ids.get(id),
            Some(seq),
            "round {round}: acknowledged {id} at {seq}"
        );
    }
    assert_eq!(store.head(&t).await.unwrap(), Seq(log.len() as u64));

    // Node: the cursor is the last confirmed seq, no id is both pending and confirmed, and
    // everything acknowledged is where it was acknowledged (or further along).
    let state = store.state().await.unwrap();
    let confirmed = store.confirmed_all().await.unwrap();
    let pending = store.pending_all().await.unwrap();
    assert_eq!(
        state.cursor, state.confirmed_head,
        "round {round}: the cursor equals the seq of the last confirmed commit"
    );
    assert!(
        state.cursor.get() >= acked.cursor,
        "round {round}: cursor went back"
    );
    for (i, e) in confirmed.iter().enumerate() {
        assert_eq!(e.seq, Seq(i as u64 + 1), "round {round}: confirmed seqs");
    }
    assert_eq!(
        state.pending,
        pending.len() as u64,
        "round {round}: pending count"
    );
    let confirmed_ids: BTreeSet<String> =
        confirmed.iter().map(|e| e.event.id.to_string()).collect();
    let pending_ids: BTreeSet<String> = pending.iter().map(|p| p.event.id.to_string()).collect();
    assert!(
        confirmed_ids.is_disjoint(&pending_ids),
        "round {round}: an id is both pending and confirmed"
    );
    for id in &acked.confirmed {
        assert!(
            confirmed_ids.contains(id),
            "round {round}: confirmed {id} lost"
        );
    }
    for id in &acked.pending {
        assert!(
            pending_ids.contains(id) || confirmed_ids.contains(id),
            "round {round}: pending {id} lost"
        );
    }
    EventStore::close(&store).await.unwrap();
}
