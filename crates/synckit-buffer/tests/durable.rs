//! The durable spool: acknowledged writes survive a reopen and a SIGKILL, only unflushed items
//! are replayed, and a sink that skips sequence numbers it has stored gets each item once.
//!
//! The crash test runs this test binary again as the child (`crash_child`, a no-op unless
//! `SYNCKIT_BUFFER_CRASH_DIR` is set), which writes ids into a durable store and prints each
//! acknowledged one; the parent kills it with SIGKILL at random moments (seeded; the seed is
//! printed, `SYNCKIT_CRASH_SEED` replays one), reopens the store, drains it, and checks the
//! sink's file: every acknowledged id exactly once, no id twice.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use synckit_buffer::{Batch, BufferError, BufferedStore, RetryPolicy, Sink, SinkError};
use synckit_types::Error;

/// A sink that appends `seq id` lines to a file and syncs it, and skips items whose sequence
/// number it already holds: idempotent by design, as the spool's contract asks.
struct FileSink {
    path: PathBuf,
    state: Mutex<(File, u64)>,
    fail: AtomicBool,
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileSink({})", self.path.display())
    }
}

impl FileSink {
    /// Open the file, cut a line torn by a crash, and find the last sequence number stored.
    fn open(path: &Path) -> FileSink {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        if complete < text.len() {
            file.set_len(complete as u64).unwrap();
            file.sync_all().unwrap();
        }
        let last = parse(&text[..complete]).last().map_or(0, |(seq, _)| *seq);
        FileSink {
            path: path.to_owned(),
            state: Mutex::new((file, last)),
            fail: AtomicBool::new(false),
        }
    }
}

/// The `(seq, id)` lines of a sink file.
fn parse(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .map(|line| {
            let (seq, id) = line.split_once(' ').unwrap();
            (seq.parse().unwrap(), id.parse().unwrap())
        })
        .collect()
}

#[async_trait]
impl Sink<u64> for FileSink {
    async fn write(&self, batch: &Batch<u64>) -> Result<(), SinkError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::unavailable("sink down"));
        }
        let mut state = self.state.lock().unwrap();
        let (file, last) = &mut *state;
        let new = batch.items_after(*last);
        if new.is_empty() {
            return Ok(());
        }
        let first = batch.last_seq() + 1 - new.len() as u64;
        let mut text = String::new();
        for (seq, id) in (first..).zip(new) {
            text.push_str(&format!("{seq} {id}\n"));
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::storage("sink file").with_source(e))?;
        *last = batch.last_seq();
        Ok(())
    }
}

fn durable_store(dir: &Path, sink: Arc<FileSink>) -> synckit_buffer::BufferBuilder<u64> {
    let mut retry = RetryPolicy::default();
    retry.initial_backoff = Duration::from_millis(1);
    retry.max_backoff = Duration::from_millis(5);
    BufferedStore::builder("spooled", sink)
        .durable(dir.join("spool"))
        .max_batch(50)
        .flush_interval(Duration::from_millis(5))
        .retry(retry)
}

#[tokio::test]
async fn a_reopened_store_replays_only_what_was_not_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(FileSink::open(&dir.path().join("sink")));
    let store = durable_store(dir.path(), sink.clone()).start().unwrap();
    store.write_many(vec![10, 11, 12]).await.unwrap();
    store.flush().await.unwrap();
    sink.fail.store(true, Ordering::SeqCst);
    store.write_many(vec![13, 14]).await.unwrap();
    let report = store.close_within(Duration::from_millis(50)).await;
    assert_eq!(report.unflushed, [13, 14]);

    // Reopen with a working sink: the two unflushed items come back with their numbers.
    sink.fail.store(false, Ordering::SeqCst);
    let store = durable_store(dir.path(), sink.clone()).start().unwrap();
    assert_eq!(store.stats().held_items, 2);
    store.write(15).await.unwrap();
    assert!(store.close().await.is_clean());
    let text = std::fs::read_to_string(dir.path().join("sink")).unwrap();
    assert_eq!(
        parse(&text),
        [(1, 10), (2, 11), (3, 12), (4, 13), (5, 14), (6, 15)]
    );

    // Nothing is left to replay.
    let store = durable_store(dir.path(), sink).build().unwrap();
    assert_eq!(store.stats().held_items, 0);
    store.write(16).await.unwrap();
    assert!(store.close().await.is_clean());
    let text = std::fs::read_to_string(dir.path().join("sink")).unwrap();
    assert_eq!(parse(&text).last(), Some(&(7, 16)));
}

#[tokio::test]
async fn one_spool_directory_serves_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(FileSink::open(&dir.path().join("sink")));
    let first = durable_store(dir.path(), sink.clone()).build().unwrap();
    let error = durable_store(dir.path(), sink.clone()).build().unwrap_err();
    assert!(matches!(error, BufferError::Spool { .. }), "{error}");
    assert!(first.close().await.is_clean());
    // Closing releases the directory.
    let again = durable_store(dir.path(), sink).build().unwrap();
    assert!(again.close().await.is_clean());
}

#[tokio::test]
async fn the_spool_is_compacted_while_the_store_runs() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(FileSink::open(&dir.path().join("sink")));
    let store = durable_store(dir.path(), sink.clone())
        .spool_compact_bytes(4_096)
        .start()
        .unwrap();
    for chunk in 0..40u64 {
        store
            .write_many((chunk * 100..chunk * 100 + 100).collect())
            .await
            .unwrap();
    }
    assert!(store.close().await.is_clean());
    let spool = std::fs::metadata(dir.path().join("spool").join("spool.log")).unwrap();
    // 4,000 records of about 22 bytes were written; compaction keeps far fewer.
    assert!(spool.len() < 8_192, "spool is {} bytes", spool.len());
    let text = std::fs::read_to_string(dir.path().join("sink")).unwrap();
    let ids: Vec<u64> = parse(&text).into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids, (0..4_000).collect::<Vec<_>>());
}

const DIR_ENV: &str = "SYNCKIT_BUFFER_CRASH_DIR";
const ROUND_ENV: &str = "SYNCKIT_BUFFER_CRASH_ROUND";
const ROUNDS: u64 = 12;
const PRODUCERS: u64 = 3;
/// Longest wait for one line of the child.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// The child: write ids from a few producers until killed, printing `ACK <id>` for each write
/// that returned.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sink = Arc::new(FileSink::open(&dir.join("sink")));
        let store = durable_store(&dir, sink)
            .spool_compact_bytes(16 << 10)
            .start()
            .unwrap();
        let mut producers = Vec::new();
        for p in 0..PRODUCERS {
            let store = store.clone();
            producers.push(tokio::spawn(async move {
                for n in 0u64.. {
                    let id = round << 40 | p << 32 | n;
                    if n % 7 == 0 {
                        let ids = vec![id, id | 1 << 31];
                        store.write_many(ids.clone()).await.unwrap();
                        println!("ACK {}\nACK {}", ids[0], ids[1]);
                    } else {
                        store.write(id).await.unwrap();
                        println!("ACK {id}");
                    }
                }
            }));
        }
        for p in producers {
            p.await.unwrap();
        }
    });
}

#[test]
fn killed_at_random_moments_loses_and_repeats_nothing_acknowledged() {
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
    let mut acked: Vec<u64> = Vec::new();

    for round in 0..ROUNDS {
        let target = if rng.u8(..8) == 0 {
            0 // kill while the child may still be opening and replaying the spool
        } else {
            rng.usize(1..=400)
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
                    if let Some(id) = ack(&line) {
                        acked.push(id);
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
        // Lines printed before the kill were acknowledged too.
        reader.join().unwrap();
        acked.extend(rx.try_iter().filter_map(|line| ack(&line)));
        drop(errors);

        runtime.block_on(verify(dir.path(), &acked, round));
    }
    eprintln!(
        "crash test: {ROUNDS} rounds, {} writes acknowledged",
        acked.len()
    );
    assert!(acked.len() as u64 >= ROUNDS, "the child made progress");
}

/// The id of an `ACK <id>` line; the harness may print its own text before the child's.
fn ack(line: &str) -> Option<u64> {
    let at = line.find("ACK ")?;
    Some(line[at + 4..].trim().parse().unwrap())
}

/// Reopen after a kill, drain what the spool replays, and check the sink's file.
async fn verify(dir: &Path, acked: &[u64], round: u64) {
    let sink = Arc::new(FileSink::open(&dir.join("sink")));
    let store = durable_store(dir, sink)
        .build()
        .unwrap_or_else(|e| panic!("round {round}: the spool must reopen: {e}"));
    let report = store.close().await;
    assert!(report.is_clean(), "round {round}: {:?}", report.error);

    let text = std::fs::read_to_string(dir.join("sink")).unwrap();
    let lines = parse(&text);
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last_seq = 0;
    for (seq, id) in &lines {
        assert!(*seq > last_seq, "round {round}: seq {seq} after {last_seq}");
        last_seq = *seq;
        *count.entry(*id).or_default() += 1;
    }
    for (id, n) in &count {
        assert_eq!(*n, 1, "round {round}: id {id:#x} delivered {n} times");
    }
    for id in acked {
        assert!(
            count.contains_key(id),
            "round {round}: acknowledged id {id:#x} lost"
        );
    }
}
