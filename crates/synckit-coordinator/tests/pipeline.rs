//! The watermarked pipeline over real files: only new lines are sent; a crash between the sink
//! write and the watermark save (a fault-injected stop) leaves exactly one copy once a fresh
//! pipeline runs again; raising the format version resyncs everything under new ids;
//! `force_resync` re-sends under the same ids; a rewritten file becomes a new generation read
//! from line 1; malformed lines are counted and skipped; redaction counts reach the status.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use synckit_coordinator::{
    BoxError, Checkpoint, DirSource, MemorySink, Pipeline, PipelineConfig, PipelineError, Record,
    Redactor, SecretKind, Sink, Source, SourceItem, WatermarkStore, record_id,
};

struct Fixture {
    _tmp: tempfile::TempDir,
    logs: PathBuf,
    watermarks: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let watermarks = tmp.path().join("state").join("watermarks.json");
        std::fs::create_dir(watermarks.parent().unwrap()).unwrap();
        Fixture {
            _tmp: tmp,
            logs,
            watermarks,
        }
    }

    fn write(&self, name: &str, content: &str) {
        std::fs::write(self.logs.join(name), content).unwrap();
    }

    fn append(&self, name: &str, content: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.logs.join(name))
            .unwrap();
        file.write_all(content.as_bytes()).unwrap();
    }

    fn pipeline(&self, sink: Arc<dyn Sink>, config: PipelineConfig) -> Pipeline {
        Pipeline::builder(
            Arc::new(DirSource::new(&self.logs).extension("jsonl")),
            sink,
            &self.watermarks,
        )
        .config(config)
        .open()
        .unwrap()
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        namespace: "node-1".into(),
        ..PipelineConfig::default()
    }
}

fn lines(n: std::ops::Range<u32>, tag: &str) -> String {
    n.map(|i| format!("{{\"n\":{i},\"tag\":\"{tag}\"}}\n"))
        .collect()
}

/// (item, ordinal, value) of every record held, in order.
fn held(sink: &MemorySink) -> Vec<(String, u64, Value)> {
    sink.records()
        .into_iter()
        .map(|r| (r.source, r.ordinal, r.value))
        .collect()
}

fn assert_unique_ids(sink: &MemorySink) {
    let records = sink.records();
    let ids: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "duplicate ids in {records:?}");
}

#[tokio::test]
async fn each_run_sends_only_the_lines_added_since_the_last() {
    let f = Fixture::new();
    f.write("a.jsonl", &lines(0..3, "a"));
    f.write("b.jsonl", &lines(0..2, "b"));
    f.write("ignored.txt", "not a jsonl file\n");
    let sink = Arc::new(MemorySink::new());
    let pipeline = f.pipeline(sink.clone(), config());

    let first = pipeline.run().await.unwrap();
    assert_eq!((first.items, first.records, first.lines), (2, 5, 5));
    let again = pipeline.run().await.unwrap();
    assert_eq!(again.records, 0);
    assert_eq!(again.items_read, 0, "unchanged files are skipped");
    assert_eq!(sink.offered(), 5);

    f.append("a.jsonl", &lines(3..5, "a"));
    let third = pipeline.run().await.unwrap();
    assert_eq!((third.items_read, third.records), (1, 2));
    let records = held(&sink);
    assert_eq!(records.len(), 7);
    assert_eq!(
        records[5],
        ("a.jsonl".into(), 4, json!({"n": 3, "tag": "a"}))
    );
    assert_eq!(
        records[6],
        ("a.jsonl".into(), 5, json!({"n": 4, "tag": "a"}))
    );
    assert_eq!(sink.duplicates(), 0);
    assert_unique_ids(&sink);

    // The watermark file says how far each file was read, and survives a reopen.
    let store = WatermarkStore::open(&f.watermarks).unwrap();
    let a = store.get("a.jsonl").unwrap();
    assert_eq!((a.ordinal, a.generation), (5, 0));
    assert_eq!(
        a.offset,
        std::fs::metadata(f.logs.join("a.jsonl")).unwrap().len()
    );
    let reopened = f.pipeline(sink.clone(), config());
    assert_eq!(reopened.run().await.unwrap().records, 0);
    assert_eq!(pipeline.status().records, 7);
    assert_eq!(pipeline.status().runs, 3);
}

#[tokio::test]
async fn record_ids_are_the_documented_deterministic_ids() {
    let f = Fixture::new();
    f.write("a.jsonl", "{\"x\":1}\r\n");
    let sink = Arc::new(MemorySink::new());
    f.pipeline(sink.clone(), config()).run().await.unwrap();
    let record = sink.records().remove(0);
    assert_eq!(
        record.id,
        record_id("node-1", "a.jsonl", 1, 0, 1, b"{\"x\":1}")
    );
}

#[tokio::test]
async fn a_stop_between_sink_write_and_watermark_save_leaves_exactly_one_copy() {
    let f = Fixture::new();
    f.write("a.jsonl", &lines(0..10, "a"));
    let sink = Arc::new(MemorySink::new());
    let crashed = Arc::new(AtomicBool::new(false));
    let small_batches = PipelineConfig {
        batch_records: 4,
        ..config()
    };
    // The "crash": the second batch reaches the sink, then the run stops before its
    // watermark is saved.
    let writes = Arc::new(AtomicUsize::new(0));
    let pipeline = Pipeline::builder(
        Arc::new(DirSource::new(&f.logs)),
        sink.clone(),
        &f.watermarks,
    )
    .config(small_batches.clone())
    .checkpoint_hook({
        let (writes, crashed) = (writes.clone(), crashed.clone());
        Arc::new(move |at: &Checkpoint<'_>| {
            if matches!(at, Checkpoint::SinkWritten { .. })
                && writes.fetch_add(1, Ordering::SeqCst) == 1
            {
                crashed.store(true, Ordering::SeqCst);
                return Err("simulated crash".into());
            }
            Ok(())
        })
    })
    .open()
    .unwrap();
    let err = pipeline.run().await.unwrap_err();
    assert!(matches!(err, PipelineError::Interrupted(_)), "{err}");
    assert!(crashed.load(Ordering::SeqCst));
    assert_eq!(sink.records().len(), 8, "two batches reached the sink");
    let saved = WatermarkStore::open(&f.watermarks).unwrap();
    assert_eq!(
        saved.get("a.jsonl").unwrap().ordinal,
        4,
        "only the first batch's watermark was saved"
    );
    drop(pipeline);

    // A fresh pipeline (as after a restart) sends the unsaved batch again under the same ids;
    // the idempotent sink drops them, so each line is held exactly once.
    let fresh = f.pipeline(sink.clone(), small_batches);
    let report = fresh.run().await.unwrap();
    assert_eq!(
        report.records, 6,
        "lines 5..=10 were sent again or for the first time"
    );
    assert_eq!(sink.duplicates(), 4, "the replayed batch had the same ids");
    let ordinals: Vec<u64> = held(&sink).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(ordinals, (1..=10).collect::<Vec<_>>());
    assert_unique_ids(&sink);
}

#[tokio::test]
async fn raising_the_format_version_resyncs_everything_under_new_ids() {
    let f = Fixture::new();
    f.write("a.jsonl", &lines(0..3, "a"));
    f.write("b.jsonl", &lines(0..2, "b"));
    let sink = Arc::new(MemorySink::new());
    f.pipeline(sink.clone(), config()).run().await.unwrap();
    assert_eq!(sink.records().len(), 5);

    let v2 = PipelineConfig {
        format_version: 2,
        ..config()
    };
    let upgraded = f.pipeline(sink.clone(), v2.clone());
    let report = upgraded.run().await.unwrap();
    assert!(report.resynced);
    assert_eq!(report.records, 5, "every line is sent again");
    assert_eq!(
        sink.duplicates(),
        0,
        "under new ids: new records, not dropped duplicates"
    );
    assert_eq!(sink.records().len(), 10);
    assert_unique_ids(&sink);
    assert_eq!(upgraded.status().resyncs, 1);

    // After the resync the new version's watermarks hold: nothing is sent twice.
    let report = f.pipeline(sink.clone(), v2).run().await.unwrap();
    assert!(!report.resynced);
    assert_eq!(report.records, 0);
    let saved = WatermarkStore::open(&f.watermarks).unwrap();
    assert_eq!(saved.set().unwrap().format_version, 2);

    // A changed namespace is a resync too.
    let moved = PipelineConfig {
        namespace: "node-2".into(),
        format_version: 2,
        ..config()
    };
    let report = f.pipeline(sink.clone(), moved).run().await.unwrap();
    assert!(report.resynced);
    assert_eq!(report.records, 5);
}

#[tokio::test]
async fn force_resync_resends_everything_under_the_same_ids() {
    let f = Fixture::new();
    f.write("a.jsonl", &lines(0..4, "a"));
    let sink = Arc::new(MemorySink::new());
    let pipeline = f.pipeline(sink.clone(), config());
    pipeline.run().await.unwrap();
    pipeline.force_resync().await.unwrap();
    // Saved at once: a fresh pipeline resyncs too.
    let fresh = f.pipeline(sink.clone(), config());
    let report = fresh.run().await.unwrap();
    assert_eq!(report.records, 4);
    assert_eq!(sink.offered(), 8);
    assert_eq!(sink.duplicates(), 4, "same ids: the sink keeps one copy");
    assert_eq!(sink.records().len(), 4);
    assert_eq!(pipeline.status().resyncs, 1);
}

#[tokio::test]
async fn a_rewritten_file_is_a_new_generation_read_from_line_1() {
    let f = Fixture::new();
    f.write("a.jsonl", &lines(0..3, "old"));
    let sink = Arc::new(MemorySink::new());
    // Every run reads the file, whatever the file system's timestamp resolution: this test is
    // about the prefix hash, not about skipping unchanged files.
    let always_read = PipelineConfig {
        skip_unchanged: false,
        ..config()
    };
    let pipeline = f.pipeline(sink.clone(), always_read);
    pipeline.run().await.unwrap();

    // Rewritten with fewer lines, and a first line identical to the old first line: it is a
    // new line of a new generation, not a duplicate of the old one.
    let same_first = lines(0..1, "old");
    f.write(
        "a.jsonl",
        &format!("{same_first}{{\"n\":1,\"tag\":\"new\"}}\n"),
    );
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.rewrites, 1);
    assert_eq!(report.records, 2);
    let records = sink.records();
    assert_eq!(records.len(), 5);
    let gen1: Vec<&Record> = records.iter().filter(|r| r.generation == 1).collect();
    assert_eq!(
        gen1.iter()
            .map(|r| (r.ordinal, r.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, json!({"n": 0, "tag": "old"})),
            (2, json!({"n": 1, "tag": "new"}))
        ]
    );
    assert_ne!(
        gen1[0].id, records[0].id,
        "the generation is part of the id"
    );
    assert_eq!(sink.duplicates(), 0);

    // The new generation then grows like any file.
    f.append("a.jsonl", &lines(2..3, "new"));
    let report = pipeline.run().await.unwrap();
    assert_eq!((report.rewrites, report.records), (0, 1));
    let last = sink.records().pop().unwrap();
    assert_eq!((last.generation, last.ordinal), (1, 3));

    // A same-length rewrite of the consumed prefix is caught by its hash.
    let content = std::fs::read_to_string(f.logs.join("a.jsonl")).unwrap();
    f.write("a.jsonl", &content.replace("new", "NEW"));
    let report = pipeline.run().await.unwrap();
    assert_eq!((report.rewrites, report.records), (1, 3));
    assert_eq!(
        WatermarkStore::open(&f.watermarks)
            .unwrap()
            .get("a.jsonl")
            .unwrap()
            .generation,
        2
    );
    assert_unique_ids(&sink);
}

#[tokio::test]
async fn malformed_and_partial_lines_are_handled_without_failing_the_run() {
    let f = Fixture::new();
    f.write(
        "a.jsonl",
        "{\"ok\":1}\nnot json\n\n   \n{\"ok\":2}\n{\"truncated\":\n{\"ok\":3}\n{\"partial\":",
    );
    let sink = Arc::new(MemorySink::new());
    let pipeline = f.pipeline(sink.clone(), config());
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.records, 3);
    assert_eq!(report.malformed, 2);
    assert_eq!(
        report.lines, 7,
        "the unterminated last line is not consumed"
    );
    let ordinals: Vec<u64> = held(&sink).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(ordinals, vec![1, 5, 7], "line numbers count every line");
    assert_eq!(pipeline.status().malformed, 2);
    assert!(pipeline.status().last_error.is_none());

    // Malformed lines were consumed: not retried. The partial line is read once complete.
    f.append("a.jsonl", "\"yes\"}\n");
    let report = pipeline.run().await.unwrap();
    assert_eq!((report.records, report.malformed), (1, 0));
    assert_eq!(
        held(&sink)[3],
        ("a.jsonl".into(), 8, json!({"partial": "yes"}))
    );
}

#[tokio::test]
async fn lines_longer_than_the_limit_are_skipped_as_malformed() {
    let f = Fixture::new();
    let long = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(5_000));
    f.write("a.jsonl", &format!("{{\"ok\":1}}\n{long}{{\"ok\":2}}\n"));
    let sink = Arc::new(MemorySink::new());
    let limited = PipelineConfig {
        max_line_bytes: 1_000,
        ..config()
    };
    let report = f.pipeline(sink.clone(), limited).run().await.unwrap();
    assert_eq!((report.records, report.malformed), (2, 1));
}

#[tokio::test]
async fn redaction_counts_reach_the_pipeline_status() {
    let f = Fixture::new();
    f.write(
        "a.jsonl",
        "{\"msg\":\"key AKIAIOSFODNN7EXAMPLE\"}\n{\"msg\":\"clean\"}\n\
         {\"headers\":[\"Authorization: Bearer 0123456789abcdef\"],\"password\":\"hunter2hunter2\"}\n",
    );
    let sink = Arc::new(MemorySink::new());
    let pipeline = Pipeline::builder(
        Arc::new(DirSource::new(&f.logs)),
        sink.clone(),
        &f.watermarks,
    )
    .transform(Arc::new(Redactor::new()))
    .config(config())
    .open()
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.redactions.total(), 3);
    let status = pipeline.status();
    assert_eq!(status.redactions.get(SecretKind::AwsAccessKeyId), 1);
    assert_eq!(status.redactions.get(SecretKind::BearerToken), 1);
    assert_eq!(status.redactions.get(SecretKind::GenericSecret), 1);
    let values: Vec<Value> = held(&sink).into_iter().map(|(_, _, v)| v).collect();
    assert_eq!(
        values,
        vec![
            json!({"msg": "key [REDACTED:aws_access_key_id]"}),
            json!({"msg": "clean"}),
            json!({
                "headers": ["Authorization: Bearer [REDACTED:bearer_token]"],
                "password": "[REDACTED:generic_secret]"
            }),
        ]
    );
    // The status serializes the counts by kind name.
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["redactions"]["aws_access_key_id"], 1);
}

/// A sink that fails while `down` is set.
#[derive(Debug, Default)]
struct FlakySink {
    down: AtomicBool,
    inner: MemorySink,
}

#[async_trait]
impl Sink for FlakySink {
    async fn write(&self, records: &[Record]) -> Result<(), BoxError> {
        if self.down.load(Ordering::SeqCst) {
            return Err("hub unreachable".into());
        }
        self.inner.write(records).await
    }
}

#[tokio::test]
async fn a_failing_sink_moves_no_watermark() {
    let f = Fixture::new();
    f.write("a.jsonl", &lines(0..3, "a"));
    let sink = Arc::new(FlakySink::default());
    sink.down.store(true, Ordering::SeqCst);
    let pipeline = f.pipeline(sink.clone(), config());
    let err = pipeline.run().await.unwrap_err();
    assert!(
        matches!(err, PipelineError::Sink { records: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("hub unreachable"));
    assert_eq!(pipeline.status().failed_runs, 1);
    assert!(
        pipeline
            .status()
            .last_error
            .unwrap()
            .contains("hub unreachable")
    );
    assert!(
        WatermarkStore::open(&f.watermarks)
            .unwrap()
            .get("a.jsonl")
            .is_none()
    );

    sink.down.store(false, Ordering::SeqCst);
    assert_eq!(pipeline.run().await.unwrap().records, 3);
    assert_eq!(sink.inner.records().len(), 3);
}

/// Two items, one of which cannot be opened.
#[derive(Debug)]
struct HalfBroken(PathBuf);

impl Source for HalfBroken {
    fn items(&self) -> io::Result<Vec<SourceItem>> {
        Ok(["broken", "good"]
            .into_iter()
            .map(|id| SourceItem {
                id: id.into(),
                size: None,
                modified_ns: None,
            })
            .collect())
    }

    fn open(&self, item: &SourceItem) -> io::Result<Box<dyn Read + Send>> {
        if item.id == "broken" {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "no access"));
        }
        Ok(Box::new(std::fs::File::open(self.0.join("good.jsonl"))?))
    }
}

#[tokio::test]
async fn an_unreadable_item_does_not_hold_up_the_others() {
    let f = Fixture::new();
    f.write("good.jsonl", &lines(0..2, "g"));
    let sink = Arc::new(MemorySink::new());
    let pipeline = Pipeline::builder(
        Arc::new(HalfBroken(f.logs.clone())),
        sink.clone(),
        &f.watermarks,
    )
    .open()
    .unwrap();
    let report = pipeline.run().await.unwrap();
    assert_eq!(report.records, 2);
    assert_eq!(report.item_errors.len(), 1);
    assert!(report.item_errors[0].contains("no access"), "{report:?}");
    assert!(pipeline.status().last_error.is_some());
}

#[tokio::test]
async fn a_damaged_watermark_file_is_refused_not_overwritten() {
    let f = Fixture::new();
    std::fs::write(&f.watermarks, b"{ damaged").unwrap();
    let err = Pipeline::builder(
        Arc::new(DirSource::new(&f.logs)),
        Arc::new(MemorySink::new()),
        &f.watermarks,
    )
    .open()
    .unwrap_err();
    assert!(matches!(err, PipelineError::Watermark(_)), "{err}");
    assert_eq!(std::fs::read(&f.watermarks).unwrap(), b"{ damaged");
}
