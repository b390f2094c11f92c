//! Damage and bad input: a newer schema, a foreign or garbage file, damaged pages and rows, a
//! missing permission (ENOTDIR, and an unprivileged child process), a full disk (a child under
//! RLIMIT_FSIZE), and an invalid configuration. Each gives a clear error of a fitting kind,
//! never a panic, and loses nothing already stored.
//!
//! The child processes are this test binary run again with `--exact <child test>`; the child
//! tests do nothing unless their environment variable is set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit_store_sqlite::{SCHEMA_VERSION, SqliteConfig, SqliteStore, rusqlite};
use synckit_types::{
    AppendOutcome, Error, ErrorKind, Event, EventStore, EventStoreExt, Hlc, NodeStore,
    NodeStoreExt, NodeWrite, ReadRequest, Seq, TenantId,
};

const PERM_CHILD: &str = "SYNCKIT_SQLITE_PERMISSION_CHILD";
const FULL_CHILD: &str = "SYNCKIT_SQLITE_FULL_DISK_CHILD";
/// Longest a child process may run.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);

fn tenant() -> TenantId {
    TenantId::new("t1").unwrap()
}

fn event(id: &str, aggregate: &str, payload: usize) -> Event {
    Event::builder("TaskRenamed", aggregate)
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_700_000_000_000, 0))
        .data(json!({ "id": id, "pad": "p".repeat(payload) }))
        .build()
        .unwrap()
}

fn batch(prefix: &str, n: usize, payload: usize) -> Vec<Event> {
    (0..n)
        .map(|i| event(&format!("{prefix}-{i:05}"), &format!("a{}", i % 7), payload))
        .collect()
}

/// A store at `path` holding `n` events of tenant t1, closed again.
async fn stored(path: &Path, n: usize) -> Vec<Event> {
    let store = SqliteStore::open(path).unwrap();
    let events = batch("e", n, 20);
    for chunk in events.chunks(100) {
        store.append(&tenant(), chunk).await.unwrap();
    }
    store.close().await.unwrap();
    events
}

/// Reopen `path` and check it holds exactly `events`, in order, with seqs 1..=n.
async fn intact(path: &Path, events: &[Event]) {
    let store = SqliteStore::open(path).unwrap();
    let log = store.read_all(&tenant()).await.unwrap();
    let ids: Vec<&str> = log.iter().map(|e| e.event.id.as_str()).collect();
    let expected: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, expected, "the stored events survived");
    assert!(log.iter().zip(1..).all(|(e, s)| e.seq == Seq(s)));
    assert_eq!(
        log.iter().map(|e| &e.event).collect::<Vec<_>>(),
        events.iter().collect::<Vec<_>>()
    );
    store.integrity_check().await.unwrap();
    store.close().await.unwrap();
}

fn expect_err<T: std::fmt::Debug>(result: synckit_types::Result<T>, kind: ErrorKind) -> Error {
    match result {
        Ok(v) => panic!("expected a {kind} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "wrong kind: {e}");
            e
        }
    }
}

fn set_user_version(path: &Path, version: i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_update(None, "user_version", version).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_version_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let events = stored(&path, 30).await;
    let newer = SCHEMA_VERSION + 6;
    set_user_version(&path, newer);
    let before = std::fs::read(&path).unwrap();

    let err = expect_err(SqliteStore::open(&path), ErrorKind::Corrupted);
    let text = err.to_string();
    assert!(
        text.contains(&format!("schema version {newer}"))
            && text.contains(&format!("up to {SCHEMA_VERSION}")),
        "the message names both versions: {text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the file is untouched"
    );

    // An older build's data is intact once the marker is back.
    set_user_version(&path, SCHEMA_VERSION);
    intact(&path, &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada');")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let err = expect_err(SqliteStore::open(&path), ErrorKind::Config);
    assert!(err.to_string().contains("not a synckit store"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the app's file is untouched"
    );
    let conn = rusqlite::Connection::open(&path).unwrap();
    let name: String = conn
        .query_row("SELECT name FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_file_is_corrupted_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let garbage: Vec<u8> = b"this is not a database, only text. "
        .iter()
        .copied()
        .cycle()
        .take(16 * 1024)
        .collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = expect_err(SqliteStore::open(&path), ErrorKind::Corrupted);
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_pages_are_reported_as_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    stored(&path, 3_000).await;
    // Smash the B-tree page headers of every page after the schema page.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 8 * page, "a file of many pages");
    for start in (page..bytes.len()).step_by(page) {
        bytes[start..start + 12].fill(0xA5);
    }
    std::fs::write(&path, &bytes).unwrap();

    // Opening may succeed (the schema page is intact), but nothing that touches the damage
    // gets through, and nothing panics.
    let store = match SqliteStore::open(&path) {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
            return;
        }
        Ok(store) => store,
    };
    let err = expect_err(store.read_all(&tenant()).await, ErrorKind::Corrupted);
    assert!(err.to_string().contains("damaged"), "{err}");
    expect_err(store.integrity_check().await, ErrorKind::Corrupted);
    let append = store.append(&tenant(), &[event("new", "a0", 1)]).await;
    expect_err(append, ErrorKind::Corrupted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_event_rows_are_reported_and_the_rest_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let events = stored(&path, 10).await;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // seq 5: a body that is not JSON; seq 7: an id that is not a valid id.
        conn.execute_batch(
            "UPDATE events SET body = x'7b6e6f74206a736f6e' WHERE position & 1099511627775 = 5;
             UPDATE events SET id = '' WHERE position & 1099511627775 = 7;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let t = tenant();
    let err = expect_err(
        store.read(&t, &ReadRequest::after(Seq::ZERO, 10)).await,
        ErrorKind::Corrupted,
    );
    assert!(err.to_string().contains("seq 5"), "names the row: {err}");
    let err = expect_err(
        store.read(&t, &ReadRequest::after(Seq(6), 10)).await,
        ErrorKind::Corrupted,
    );
    assert!(err.to_string().contains("seq 7"), "names the row: {err}");
    // Pages that avoid the damage still read.
    let page = store
        .read(&t, &ReadRequest::after(Seq::ZERO, 4))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 4);
    let page = store
        .read(&t, &ReadRequest::after(Seq(7), 10))
        .await
        .unwrap();
    assert_eq!(page.events.len(), 3);
    // Retrying the damaged event cannot tell duplicate from conflict: refused, not guessed.
    expect_err(
        store.append(&t, &[events[4].clone()]).await,
        ErrorKind::Corrupted,
    );
    // New events still append after the damage, at the next seq.
    let report = store.append(&t, &[event("new", "a9", 1)]).await.unwrap();
    assert!(matches!(
        report.results[0].outcome,
        AppendOutcome::Accepted { seq: Seq(11), .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_node_rows_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .commit(NodeWrite {
            put_pending: vec![event("p1", "a", 1), event("p2", "a", 1)],
            ..NodeWrite::default()
        })
        .await
        .unwrap();
    store.close().await.unwrap();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "UPDATE outbox SET body = 'garbage' WHERE id = 'p2';
             UPDATE node_state SET hlc = 'yesterday';",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let err = expect_err(store.pending_all().await, ErrorKind::Corrupted);
    assert!(err.to_string().contains("p2"), "{err}");
    let err = expect_err(store.state().await, ErrorKind::Corrupted);
    assert!(err.to_string().contains("clock"), "{err}");
    // A commit must not build on a damaged state.
    expect_err(
        store
            .commit(NodeWrite {
                cursor: Some(Seq(1)),
                ..NodeWrite::default()
            })
            .await,
        ErrorKind::Corrupted,
    );
    assert_eq!(
        store.pending(0, 1).await.unwrap().len(),
        1,
        "p1 still reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_under_a_regular_file_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("store.db");
    let err = expect_err(SqliteStore::open(&path), ErrorKind::Storage);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(!err.is_retryable());
    let missing = dir.path().join("no-such-dir").join("store.db");
    let err = expect_err(SqliteStore::open(&missing), ErrorKind::Storage);
    assert!(err.to_string().contains("cannot open"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_is_refused_before_touching_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let err = expect_err(
        SqliteStore::open_with(SqliteConfig::new(&path).readers(0)),
        ErrorKind::Config,
    );
    assert!(err.to_string().contains("readers"), "{err}");
    assert!(!path.exists(), "no file was created");
}

/// Whether this process runs as root (which chmod alone cannot stop).
fn running_as_root(dir: &Path) -> bool {
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    std::fs::metadata(&probe).unwrap().uid() == 0
}

/// Run this test binary again as `child` (a test name) with `env` set; as user `nobody`
/// through setpriv when `drop_privileges`; under a shell prefix when given. Returns the
/// child's stdout lines and whether it exited successfully. Every wait is bounded.
fn run_child(
    child: &str,
    env: (&str, &str),
    wrapper: &[&str],
) -> (Vec<String>, std::process::ExitStatus) {
    let exe = std::env::current_exe().unwrap();
    let mut argv: Vec<String> = wrapper.iter().map(|s| (*s).to_owned()).collect();
    argv.push(exe.display().to_string());
    argv.extend(["--exact", child, "--nocapture", "--test-threads=1"].map(str::to_owned));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut process = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {argv:?}: {e}"));
    let stdout = process.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + CHILD_DEADLINE;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                process.kill().ok();
                panic!("child {child} ran longer than {CHILD_DEADLINE:?}; output: {lines:?}");
            }
        }
    }
    let status = process.wait().unwrap();
    (lines, status)
}

/// The rest of a child's output line after `marker` (libtest may print its own text first).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// `RESULT <kind> <message>` lines of a child.
fn results(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| after(l, "RESULT "))
        .map(|r| {
            let (kind, message) = r.split_once(' ').unwrap_or((r, ""));
            (kind.to_owned(), message.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_process_gets_a_storage_error_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A store the child can reach but not write (file 0644 in a 0755 directory), and one it
    // cannot reach at all (in a 0700 directory).
    let readable = dir.path().join("readable.db");
    let events = stored(&readable, 20).await;
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let closed_dir = dir.path().join("private");
    std::fs::create_dir(&closed_dir).unwrap();
    std::fs::set_permissions(&closed_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = closed_dir.join("hidden.db");
    let hidden_events = stored(&hidden, 5).await;

    let wrapper: &[&str] = if running_as_root(dir.path()) {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    let paths = format!("{}\n{}", readable.display(), hidden.display());
    let (lines, status) = run_child(
        "child_opens_without_permission",
        (PERM_CHILD, &paths),
        wrapper,
    );
    assert!(
        status.success(),
        "the child must not crash: {status}, {lines:?}"
    );
    let results = results(&lines);
    assert_eq!(results.len(), 2, "one result per path: {lines:?}");
    for ((kind, message), path) in results.iter().zip([&readable, &hidden]) {
        assert_eq!(kind, "storage", "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.contains("read-only") || message.contains("cannot open"),
            "says what is wrong: {message}"
        );
    }
    intact(&readable, &events).await;
    intact(&hidden, &hidden_events).await;
}

/// Child: try to open each path of `PERM_CHILD` and print the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_opens_without_permission() {
    let Ok(paths) = std::env::var(PERM_CHILD) else {
        return;
    };
    for path in paths.lines() {
        match SqliteStore::open(path) {
            Ok(store) => {
                // Opening should have failed; report what an append does instead.
                let outcome = store.append(&tenant(), &[event("x", "a", 1)]).await;
                println!("RESULT opened {outcome:?}");
            }
            Err(e) => println!("RESULT {} {}", e.kind(), e.message().replace('\n', " ")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_is_a_storage_error_and_acknowledged_events_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let first = stored(&path, 200).await;
    let size = std::fs::metadata(&path).unwrap().len();
    // Any file may grow to 256 KiB past the database's size: the WAL fills up first.
    let limit = size + 256 * 1024;
    let script = "trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\"";
    let limit_arg = limit.to_string();
    let (lines, status) = run_child(
        "child_fills_the_disk",
        (FULL_CHILD, &path.display().to_string()),
        &["sh", "-c", script, &limit_arg],
    );
    assert!(
        status.success(),
        "no crash, no SIGXFSZ: {status}, {lines:?}"
    );
    let acked: Vec<String> = lines
        .iter()
        .filter_map(|l| after(l, "ACK "))
        .map(str::to_owned)
        .collect();
    let failures = results(&lines);
    assert!(!acked.is_empty(), "some appends fit: {lines:?}");
    let (kind, message) = failures.first().expect("an append failed");
    assert_eq!(kind, "storage", "{message}");
    assert!(
        message.contains("disk is full") || message.contains("I/O error"),
        "says what is wrong: {message}"
    );

    // Everything acknowledged is there, exactly once and gap-free, and the store works on.
    let store = SqliteStore::open(&path).unwrap();
    let log = store.read_all(&tenant()).await.unwrap();
    assert!(
        log.iter().zip(1..).all(|(e, s)| e.seq == Seq(s)),
        "gap-free"
    );
    let ids: std::collections::HashSet<&str> = log.iter().map(|e| e.event.id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "each event once");
    for e in &first {
        assert!(
            ids.contains(e.id.as_str()),
            "{} from before the child",
            e.id
        );
    }
    for id in &acked {
        assert!(ids.contains(id.as_str()), "acknowledged {id} survived");
    }
    store.integrity_check().await.unwrap();
    let report = store
        .append(&tenant(), &[event("after", "a0", 1)])
        .await
        .unwrap();
    assert!(matches!(
        report.results[0].outcome,
        AppendOutcome::Accepted { .. }
    ));
    store.close().await.unwrap();
}

/// Child: append until a write fails, printing each acknowledged event and the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_fills_the_disk() {
    let Ok(path) = std::env::var(FULL_CHILD) else {
        return;
    };
    let store = SqliteStore::open(PathBuf::from(path)).unwrap();
    for round in 0..10_000 {
        let events = batch(&format!("fill{round}"), 20, 2_000);
        match store.append(&tenant(), &events).await {
            Ok(_) => {
                for e in &events {
                    println!("ACK {}", e.id);
                }
            }
            Err(e) => {
                println!("RESULT {} {}", e.kind(), e.message().replace('\n', " "));
                break;
            }
        }
    }
    // Closing may fail too (its checkpoint needs room); it must not panic.
    let closed = store.close().await;
    println!("CLOSED {closed:?}");
}
