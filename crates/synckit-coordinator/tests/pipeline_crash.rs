//! Crash safety of the pipeline with a real kill: a child process runs the pipeline into a
//! file sink and is killed with SIGKILL right after a batch reached the sink and before its
//! watermark was saved; a fresh pipeline then leaves every line in the sink exactly once.
//!
//! The child is this test binary run again (`crash_child`, a no-op unless
//! `SYNCKIT_PIPELINE_CRASH_DIR` is set). The first child is killed at its first sink write;
//! every later child first replays the batch the previous one wrote without saving its
//! watermark (which the sink must drop by id), saves that watermark, writes one new batch, and
//! is killed there. So each round gets one batch further.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use synckit_coordinator::{
    BoxError, Checkpoint, DirSource, Pipeline, PipelineConfig, Record, Sink, WatermarkStore,
};

const DIR_ENV: &str = "SYNCKIT_PIPELINE_CRASH_DIR";
const ROUND_ENV: &str = "SYNCKIT_PIPELINE_CRASH_ROUND";
const BATCH: usize = 3;
const ROUNDS: usize = 3;
/// Longest wait for the child to reach its kill point.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Appends records as JSON lines to a file, fsynced before `write` returns; keeps one copy per
/// id (the ids already in the file are read at open).
#[derive(Debug)]
struct FileSink {
    path: PathBuf,
    state: Mutex<(HashSet<String>, usize)>,
}

impl FileSink {
    fn open(path: &Path) -> FileSink {
        let ids = FileSink::read(path).into_iter().map(|r| r.id).collect();
        FileSink {
            path: path.to_path_buf(),
            state: Mutex::new((ids, 0)),
        }
    }

    fn read(path: &Path) -> Vec<Record> {
        match std::fs::read_to_string(path) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn duplicates(&self) -> usize {
        self.state.lock().unwrap().1
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&self, records: &[Record]) -> Result<(), BoxError> {
        let mut state = self.state.lock().unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        for record in records {
            if state.0.insert(record.id.clone()) {
                writeln!(file, "{}", serde_json::to_string(record)?)?;
            } else {
                state.1 += 1;
            }
        }
        file.sync_all()?;
        Ok(())
    }
}

fn pipeline(dir: &Path, sink: Arc<FileSink>) -> synckit_coordinator::PipelineBuilder {
    Pipeline::builder(
        Arc::new(DirSource::new(dir.join("logs")).extension("jsonl")),
        sink,
        dir.join("watermarks.json"),
    )
    .config(PipelineConfig {
        namespace: "crash".into(),
        batch_records: BATCH,
        ..PipelineConfig::default()
    })
}

/// The child: run the pipeline; at the chosen sink write, say so and wait to be killed.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let round: usize = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    // The replay of the previous child's batch is the first write of every round but the first.
    let stop_at = if round == 0 { 1 } else { 2 };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let sink = Arc::new(FileSink::open(&dir.join("sink.jsonl")));
        let writes = AtomicUsize::new(0);
        let probe = Arc::clone(&sink);
        let pipeline = pipeline(&dir, Arc::clone(&sink))
            .checkpoint_hook(Arc::new(move |at: &Checkpoint<'_>| {
                if let Checkpoint::SinkWritten { ordinal, .. } = at
                    && writes.fetch_add(1, Ordering::SeqCst) + 1 == stop_at
                {
                    println!("SINK_WRITTEN {ordinal} {}", probe.duplicates());
                    std::io::stdout().flush().unwrap();
                    // The watermark of this batch is never saved: the parent kills us here.
                    loop {
                        std::thread::park();
                    }
                }
                Ok(())
            }))
            .open()
            .unwrap();
        pipeline.run().await.unwrap();
        println!("RUN_ENDED");
    });
}

/// Run one child for `round`; returns (ordinal, duplicates) from its kill-point line.
fn run_child_until_killed(dir: &Path, round: usize) -> (u64, usize) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let found = loop {
        match rx.recv_timeout(CHILD_TIMEOUT) {
            // The harness may print its own text on the same line first.
            Ok(line) => {
                if let Some(at) = line.find("SINK_WRITTEN") {
                    break Some(line[at..].to_owned());
                }
                assert!(
                    !line.contains("RUN_ENDED"),
                    "round {round} ended without a write"
                );
            }
            Err(_) => break None,
        }
    };
    // SIGKILL: no destructor, no flush, no watermark save.
    child.kill().unwrap();
    child.wait().unwrap();
    let line = found.unwrap_or_else(|| panic!("round {round}: the child never reached the sink"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[1].parse().unwrap(), words[2].parse().unwrap())
}

#[test]
fn killed_between_sink_write_and_watermark_save_leaves_exactly_one_copy() {
    if std::env::var_os(DIR_ENV).is_some() {
        return; // this process is a child
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("logs")).unwrap();
    let line = |item: &str, n: u32| format!("{{\"item\":\"{item}\",\"n\":{n}}}\n");
    let a: String = (1..=10).map(|n| line("a", n)).collect();
    let b: String = (1..=4).map(|n| line("b", n)).collect();
    std::fs::write(dir.join("logs/a.jsonl"), a).unwrap();
    std::fs::write(dir.join("logs/b.jsonl"), b).unwrap();
    let sink_path = dir.join("sink.jsonl");

    for round in 0..ROUNDS {
        let (ordinal, duplicates) = run_child_until_killed(dir, round);
        // Round k wrote batch k+1 of a.jsonl, and (after the first) began by replaying the
        // batch the previous child wrote but never saved: dropped by id, not stored twice.
        assert_eq!(ordinal, ((round + 1) * BATCH) as u64, "round {round}");
        assert_eq!(
            duplicates,
            if round == 0 { 0 } else { BATCH },
            "round {round}"
        );
        let held = FileSink::read(&sink_path);
        assert_eq!(held.len(), (round + 1) * BATCH, "round {round}");
        let saved = WatermarkStore::open(dir.join("watermarks.json")).unwrap();
        let saved_ordinal = saved.get("a.jsonl").map_or(0, |w| w.ordinal);
        assert_eq!(
            saved_ordinal,
            (round * BATCH) as u64,
            "round {round}: the watermark is one batch behind the sink"
        );
    }

    // A fresh pipeline (the restart) replays the unsaved batch and finishes.
    let sink = Arc::new(FileSink::open(&sink_path));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(pipeline(dir, Arc::clone(&sink)).open().unwrap().run())
        .unwrap();
    assert_eq!(
        sink.duplicates(),
        BATCH,
        "the last child's unsaved batch came again"
    );
    assert_eq!(report.records, (10 - (ROUNDS - 1) * BATCH + 4) as u64);

    let held = FileSink::read(&sink_path);
    let got: Vec<(String, u64, serde_json::Value)> = held
        .into_iter()
        .map(|r| (r.source, r.ordinal, r.value))
        .collect();
    let mut want = Vec::new();
    for n in 1..=10u32 {
        want.push((
            "a.jsonl".to_owned(),
            u64::from(n),
            json!({"item": "a", "n": n}),
        ));
    }
    for n in 1..=4u32 {
        want.push((
            "b.jsonl".to_owned(),
            u64::from(n),
            json!({"item": "b", "n": n}),
        ));
    }
    assert_eq!(got, want, "every line exactly once, in order");
}
