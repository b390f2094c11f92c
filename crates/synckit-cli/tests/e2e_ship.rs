//! End-to-end tests of `synckit ship` against a real `synckit serve` process: new lines of
//! `*.jsonl` files reach the hub as events with secrets redacted, a second `--once` ships only
//! what was appended, a lost watermark save (the crash window) ships no duplicate, and the
//! daemon mode ships on file changes until SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};
use support::{BIN, Hub, PROCESS_WAIT, output_within};

const TOKEN: &str = "s3cret";

fn hub() -> Hub {
    Hub::start(&[
        "--store",
        "memory",
        "--token",
        &format!("{TOKEN}=acme:write"),
    ])
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// `synckit ship --once`, which must succeed; returns (stdout, stderr).
fn ship_once(watch: &Path, node: &Path, hub: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "ship",
        "--watch",
        s(watch),
        "--hub",
        hub,
        "--token",
        TOKEN,
        "--data",
        s(node),
        "--once",
    ];
    args.extend(extra);
    let out = output_within(&args);
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "ship failed: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout, stderr)
}

/// Every event the hub holds, read through a fresh node.
fn hub_events(reader: &Path, hub: &str) -> Vec<Value> {
    let pull = output_within(&["pull", "--data", s(reader), "--hub", hub, "--token", TOKEN]);
    assert!(
        pull.status.success(),
        "pull failed: {}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let log = output_within(&["log", "--data", s(reader), "--json"]);
    assert!(log.status.success());
    let rows: Vec<Value> = serde_json::from_slice(&log.stdout).unwrap();
    rows.into_iter()
        .filter(|r| r["status"] == "confirmed")
        .collect()
}

#[test]
fn ship_once_sends_new_lines_as_events_with_secrets_redacted() {
    let tmp = tempfile::tempdir().unwrap();
    let (logs, node) = (tmp.path().join("logs"), tmp.path().join("node"));
    std::fs::create_dir(&logs).unwrap();
    append(
        &logs.join("a.jsonl"),
        "{\"msg\":\"login\",\"user\":\"ann\"}\n{\"msg\":\"key AKIAIOSFODNN7EXAMPLE in use\"}\n",
    );
    append(
        &logs.join("b.jsonl"),
        "{\"msg\":\"b1\"}\nnot json at all\n\
         {\"headers\":{\"Authorization\":\"Bearer 0123456789abcdefghij\"}}\n",
    );
    append(&logs.join("notes.txt"), "not shipped\n");
    let hub = hub();

    let (stdout, stderr) = ship_once(&logs, &node, &hub.url, &[]);
    assert!(
        stdout.contains("shipped 4 new line(s) from 2 file(s), pushed 4 event(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("redacted 2 secret(s)"), "{stdout}");
    assert!(stdout.contains("skipped 1 malformed line(s)"), "{stdout}");
    assert!(
        stderr.contains("not JSON"),
        "a warning names the bad line: {stderr}"
    );

    let reader = tmp.path().join("reader");
    let events = hub_events(&reader, &hub.url);
    assert_eq!(events.len(), 4, "{events:#?}");
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains("AKIAIOSFODNN7EXAMPLE"),
        "secret reached the hub"
    );
    assert!(
        !text.contains("0123456789abcdefghij"),
        "secret reached the hub"
    );
    for e in &events {
        assert_eq!(e["kind"], "LogLine");
    }
    let summary: Vec<(String, u64, Value)> = events
        .iter()
        .map(|e| {
            (
                e["aggregate_id"].as_str().unwrap().to_owned(),
                e["metadata"]["line"].as_u64().unwrap(),
                e["data"].clone(),
            )
        })
        .collect();
    let want = vec![
        ("a.jsonl".into(), 1, json!({"msg": "login", "user": "ann"})),
        (
            "a.jsonl".into(),
            2,
            json!({"msg": "key [REDACTED:aws_access_key_id] in use"}),
        ),
        ("b.jsonl".into(), 1, json!({"msg": "b1"})),
        (
            "b.jsonl".into(),
            3,
            json!({"headers": {"Authorization": "Bearer [REDACTED:bearer_token]"}}),
        ),
    ];
    assert_eq!(summary, want);

    // One more line: exactly one more event.
    append(&logs.join("a.jsonl"), "{\"msg\":\"logout\"}\n");
    let (stdout, _) = ship_once(&logs, &node, &hub.url, &["--json"]);
    let pass: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        (pass["shipped"].as_u64(), pass["pushed"].as_u64()),
        (Some(1), Some(1))
    );
    let events = hub_events(&reader, &hub.url);
    assert_eq!(events.len(), 5);
    let last = events.last().unwrap();
    assert_eq!(last["data"], json!({"msg": "logout"}));
    assert_eq!(last["metadata"]["line"], 3);

    // Nothing new: nothing shipped.
    let (stdout, _) = ship_once(&logs, &node, &hub.url, &[]);
    assert!(stdout.contains("shipped 0 new line(s)"), "{stdout}");
    assert_eq!(hub_events(&reader, &hub.url).len(), 5);
}

#[test]
fn a_lost_watermark_save_ships_no_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let (logs, node) = (tmp.path().join("logs"), tmp.path().join("node"));
    std::fs::create_dir(&logs).unwrap();
    let state = tmp.path().join("state.json");
    let file = logs.join("app.jsonl");
    append(&file, "{\"n\":1}\n{\"n\":2}\n");
    let hub = hub();
    let state_args = ["--state", s(&state)];
    ship_once(&logs, &node, &hub.url, &state_args);
    let before = std::fs::read(&state).unwrap();

    // Lines 3 and 4 reach the hub, then the watermark goes back to before them: exactly what
    // a crash between the node append and the watermark save leaves behind.
    append(&file, "{\"n\":3}\n{\"n\":4}\n");
    ship_once(&logs, &node, &hub.url, &state_args);
    std::fs::write(&state, &before).unwrap();
    let (stdout, _) = ship_once(&logs, &node, &hub.url, &state_args);
    assert!(
        stdout.contains("shipped 2 new line(s)"),
        "replayed: {stdout}"
    );

    // The same with the hub unreachable: the replayed lines are still in the outbox.
    append(&file, "{\"n\":5}\n");
    let before = std::fs::read(&state).unwrap();
    append(&file, "{\"n\":6}\n");
    let offline = output_within(&[
        "ship",
        "--watch",
        s(&logs),
        "--hub",
        "http://127.0.0.1:9",
        "--data",
        s(&node),
        "--state",
        s(&state),
        "--once",
    ]);
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert_eq!(offline.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().starts_with("error: "),
        "{stderr}"
    );
    std::fs::write(&state, &before).unwrap();
    ship_once(&logs, &node, &hub.url, &state_args);

    let events = hub_events(&tmp.path().join("reader"), &hub.url);
    let ns: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2, 3, 4, 5, 6], "every line exactly once");
}

#[test]
fn bad_arguments_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let node = tmp.path().join("node");
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "not a directory",
            vec![
                "ship",
                "--watch",
                s(&missing),
                "--hub",
                "http://127.0.0.1:9",
                "--once",
            ],
        ),
        (
            "bad kind",
            vec![
                "ship",
                "--watch",
                s(tmp.path()),
                "--hub",
                "http://127.0.0.1:9",
                "--kind",
                "",
                "--once",
            ],
        ),
        (
            "no hub",
            vec![
                "ship",
                "--watch",
                s(tmp.path()),
                "--data",
                s(&node),
                "--once",
            ],
        ),
    ];
    for (what, args) in cases {
        let out = output_within(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.lines().last().unwrap().starts_with("error: "),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}

/// Kills the process with this pid on drop, unless disarmed.
struct KillOnDrop(Option<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = &self.0 {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// Wait for a JSON pass line of the daemon; fails after [`PROCESS_WAIT`].
fn next_pass(lines: &mpsc::Receiver<String>) -> Value {
    loop {
        let line = lines
            .recv_timeout(PROCESS_WAIT)
            .expect("ship printed no pass in time");
        if let Ok(pass) = serde_json::from_str::<Value>(&line) {
            return pass;
        }
    }
}

#[test]
fn the_daemon_ships_file_changes_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let (logs, node) = (tmp.path().join("logs"), tmp.path().join("node"));
    std::fs::create_dir(&logs).unwrap();
    append(&logs.join("a.jsonl"), "{\"n\":1}\n");
    let hub = hub();
    let mut child = Command::new(BIN)
        .args([
            "ship",
            "--watch",
            s(&logs),
            "--hub",
            &hub.url,
            "--token",
            TOKEN,
            "--data",
            s(&node),
            "--debounce-ms",
            "50",
            "--json",
        ])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let pid = child.id().to_string();
    // SIGKILL if the test fails before the child ended, so no process is left behind.
    let mut guard = KillOnDrop(Some(pid.clone()));
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The start-up pass ships what is there.
    let first = next_pass(&rx);
    assert_eq!(first["shipped"], 1, "{first}");
    // A change is seen (by the file watcher, or at worst by the rescan) and shipped.
    append(&logs.join("a.jsonl"), "{\"n\":2}\n{\"n\":3}\n");
    let mut shipped = 0;
    while shipped < 2 {
        shipped += next_pass(&rx)["shipped"].as_u64().unwrap();
    }
    assert_eq!(shipped, 2);

    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = exit_rx
        .recv_timeout(PROCESS_WAIT)
        .expect("ship did not stop on SIGTERM")
        .unwrap();
    // Reaped: its pid may belong to another process now.
    guard.0 = None;
    assert!(
        status.success(),
        "ship exits cleanly on SIGTERM: {status:?}"
    );

    let events = hub_events(&tmp.path().join("reader"), &hub.url);
    let ns: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2, 3]);
}
