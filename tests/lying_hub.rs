//! A node against a broken or lying hub: garbage and truncated bodies, bodies cut mid-way, seqs
//! out of order or repeated, cursors that move backwards or past the head, an endless
//! `has_more`, and push answers for the wrong events or at impossible positions. Each sync must
//! fail with a clear error and leave the node's SQLite file byte-for-byte as it was.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use synckit::prelude::*;
use synckit::server::{Hub, HubConfig};
use synckit::{HttpTransport, MemoryStore, RetryPolicy, SqliteStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A bound on each sync; reaching it fails the test.
const BOUND: Duration = Duration::from_secs(30);

/// What the fake hub sends back: a whole HTTP response, after which it may close.
#[derive(Clone)]
struct Reply {
    bytes: Vec<u8>,
    close: bool,
    /// Instead of `bytes`: build a JSON answer from the ids of the pushed events.
    echo: Option<fn(&[String]) -> Value>,
}

impl Reply {
    /// 200 with `body` as `content_type`.
    fn with_type(content_type: &str, body: &str) -> Reply {
        Reply {
            bytes: format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            close: false,
            echo: None,
        }
    }

    /// A push answer built from the pushed ids by `answer`.
    fn echo(answer: fn(&[String]) -> Value) -> Reply {
        Reply {
            echo: Some(answer),
            ..Reply::json("")
        }
    }

    fn json(body: impl ToString) -> Reply {
        Reply::with_type("application/json", &body.to_string())
    }

    /// A 200 that promises more body than it sends, then closes.
    fn cut(body: &str) -> Reply {
        Reply {
            bytes: format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                body.len(),
                &body[..body.len() / 2]
            )
            .into_bytes(),
            close: true,
            echo: None,
        }
    }
}

/// A hub that answers every push with `push` and every pull with `pull`, over raw HTTP/1.1.
async fn fake_hub(push: Reply, pull: Reply) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, push.clone(), pull.clone()));
        }
    });
    url
}

async fn serve(mut stream: TcpStream, push: Reply, pull: Reply) {
    let mut buffer = Vec::new();
    loop {
        // Read one request head and its sized body.
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
        let reply = if head.starts_with("post /v1/events") {
            &push
        } else if head.starts_with("get /v1/events") {
            &pull
        } else {
            &Reply {
                bytes: b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_vec(),
                close: false,
                echo: None,
            }
        };
        let body: Vec<u8> = buffer.drain(..head_end + length).skip(head_end).collect();
        let bytes = match reply.echo {
            Some(answer) => {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let ids: Vec<String> = request["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["id"].as_str().map(str::to_owned))
                    .collect();
                Reply::json(answer(&ids)).bytes
            }
            None => reply.bytes.clone(),
        };
        if stream.write_all(&bytes).await.is_err() || reply.close {
            return;
        }
    }
}

async fn open_node(path: &Path, url: &str) -> Node {
    let config = Config::builder()
        .retry(RetryPolicy::none())
        .sync_timeout(BOUND)
        .build()
        .unwrap();
    Node::builder()
        .store(Arc::new(SqliteStore::open(path).unwrap()))
        .transport(Arc::new(HttpTransport::new(url, None).unwrap()))
        .resolver(Arc::new(LastWriteWins))
        .config(config)
        .open()
        .await
        .unwrap()
}

/// Every file of the node's directory, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A node that synced three events with a real hub (cursor 3), and then appended `pending`
/// events it has not pushed. Returns its directory and store path.
async fn seasoned_node(pending: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.sqlite3");
    let config = HubConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..HubConfig::default()
    };
    let hub = Hub::new(Arc::new(MemoryStore::new()), config)
        .unwrap()
        .start()
        .await
        .unwrap();
    let node = open_node(&path, &hub.url()).await;
    for n in 0..3 {
        node.append(Event::builder("Noted", "a").data(json!({ "n": n })))
            .await
            .unwrap();
    }
    node.sync().await.unwrap();
    assert_eq!(node.status().await.unwrap().cursor, Seq(3));
    for n in 0..pending {
        node.append(Event::builder("Noted", "b").data(json!({ "p": n })))
            .await
            .unwrap();
    }
    node.close().await.unwrap();
    hub.shutdown().await.unwrap();
    (dir, path)
}

/// A push answer accepting each pushed id at `seq(index)`, with `head`.
fn answers(ids: &[String], seq: fn(usize) -> u64, head: u64) -> Value {
    let results: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            json!({"id": id, "status": "accepted", "seq": seq(n), "aggregate_version": n + 1,
                   "recorded_at": 1})
        })
        .collect();
    json!({"results": results, "head": head})
}

fn stored(id: &str, seq: u64, version: u64) -> Value {
    json!({"id": id, "kind": "Noted", "aggregate_id": "c", "data": null, "metadata": {},
           "origin": "other", "hlc": "0000000000000001-00000000",
           "seq": seq, "aggregate_version": version, "recorded_at": 1})
}

fn page(events: Vec<Value>, next: u64, has_more: bool, head: u64) -> Value {
    json!({"events": events, "next": next, "has_more": has_more, "head": head})
}

/// Run one sync against the fake hub and check it failed and changed nothing.
async fn lie(what: &str, push: Reply, pull: Reply, pending: usize) {
    let (dir, path) = seasoned_node(pending).await;
    let url = fake_hub(push, pull).await;
    // Opening and closing alone is the baseline, so only the sync itself is compared.
    open_node(&path, &url).await.close().await.unwrap();
    let before = snapshot(dir.path());
    let node = open_node(&path, &url).await;
    let outcome = tokio::time::timeout(BOUND, node.sync())
        .await
        .unwrap_or_else(|_| panic!("{what}: the sync did not end"));
    let error = match outcome {
        Ok(result) => panic!("{what}: the sync succeeded: {result:?}"),
        Err(error) => error,
    };
    assert!(
        matches!(
            error.kind(),
            ErrorKind::Protocol | ErrorKind::Unavailable | ErrorKind::InvalidInput
        ),
        "{what}: unexpected error kind {:?}: {error}",
        error.kind()
    );
    assert!(!error.to_string().is_empty(), "{what}: no message");
    let state = node.status().await.unwrap();
    assert_eq!(state.cursor, Seq(3), "{what}: the cursor moved");
    node.close().await.unwrap();
    let after = snapshot(dir.path());
    assert!(
        before == after,
        "{what}: the node's files changed ({error})"
    );
    eprintln!("{what}: refused with {:?}: {error}", error.kind());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_pulls_change_nothing() {
    let push = Reply::json(json!({"results": [], "head": 3}));
    let valid = page(vec![stored("e4", 4, 1)], 4, false, 4).to_string();
    let cases: Vec<(&str, Reply)> = vec![
        ("garbage", Reply::json("this is not json")),
        ("empty body", Reply::json("")),
        ("truncated json", Reply::json(&valid[..valid.len() / 2])),
        ("body cut mid-way", Reply::cut(&valid)),
        ("html", Reply::with_type("text/html", "<html>hello</html>")),
        ("an array", Reply::json("[]")),
        (
            "seqs out of order",
            Reply::json(page(
                vec![stored("e5", 5, 2), stored("e4", 4, 1)],
                5,
                false,
                5,
            )),
        ),
        (
            "seq repeated",
            Reply::json(page(
                vec![stored("e4", 4, 1), stored("e4b", 4, 2)],
                4,
                false,
                4,
            )),
        ),
        (
            "event at the cursor",
            Reply::json(page(vec![stored("e3", 3, 1)], 3, false, 3)),
        ),
        (
            "event past next",
            Reply::json(page(vec![stored("e6", 6, 1)], 5, false, 6)),
        ),
        ("endless has_more", Reply::json(page(vec![], 3, true, 10))),
        ("cursor backwards", Reply::json(page(vec![], 1, false, 3))),
        ("next past head", Reply::json(page(vec![], 20, false, 10))),
        (
            "event with a control character in its id",
            Reply::json(page(vec![stored("e\u{1}", 4, 1)], 4, false, 4)),
        ),
        (
            "event at seq 0",
            Reply::json(page(vec![stored("z", 0, 1)], 4, false, 4)),
        ),
    ];
    for (what, pull) in cases {
        lie(what, push.clone(), pull, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_push_answers_change_nothing() {
    // The pull side is honest (nothing new), so only the push answer lies.
    let pull = Reply::json(page(vec![], 3, false, 3));
    let result = |id: &str, seq: u64| {
        json!({"id": id, "status": "accepted", "seq": seq, "aggregate_version": 1,
               "recorded_at": 1})
    };
    // The node's two pending events have ids the fake hub cannot know, so answers that name
    // ids at all name the wrong ones, except where the result count is the lie.
    let valid = json!({"results": [result("x", 4), result("y", 5)], "head": 5}).to_string();
    let cases: Vec<(&str, Reply)> = vec![
        ("garbage", Reply::json("<<<>>>")),
        ("truncated json", Reply::json(&valid[..valid.len() / 2])),
        ("body cut mid-way", Reply::cut(&valid)),
        ("no results", Reply::json(json!({"results": [], "head": 5}))),
        ("results for other events", Reply::json(&valid)),
        (
            "one result too many",
            Reply::json(
                json!({"results": [result("x", 4), result("y", 5), result("z", 6)],
                               "head": 6}),
            ),
        ),
        ("no head", Reply::json(json!({"results": []}))),
        (
            "unknown status",
            Reply::json(json!({"results": [{"id": "x", "status": "maybe"}],
                                              "head": 3})),
        ),
        (
            "both events accepted at one seq",
            Reply::echo(|ids| answers(ids, |_| 4, 5)),
        ),
        (
            "seqs going backwards",
            Reply::echo(|ids| answers(ids, |n| 5 - n as u64, 5)),
        ),
        (
            "a seq past the head",
            Reply::echo(|ids| answers(ids, |n| 9 + n as u64, 5)),
        ),
        ("seq zero", Reply::echo(|ids| answers(ids, |_| 0, 5))),
        (
            "seqs the node already holds",
            Reply::echo(|ids| answers(ids, |n| 2 + n as u64, 5)),
        ),
    ];
    for (what, push) in cases {
        lie(what, push, pull.clone(), 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_sees_an_honest_sync() {
    // The control: the same comparison notices when an honest page is stored.
    let (dir, path) = seasoned_node(0).await;
    let push = Reply::json(json!({"results": [], "head": 4}));
    let url = fake_hub(
        push,
        Reply::json(page(vec![stored("e4", 4, 1)], 4, false, 4)),
    )
    .await;
    open_node(&path, &url).await.close().await.unwrap();
    let before = snapshot(dir.path());
    let node = open_node(&path, &url).await;
    node.sync().await.unwrap();
    assert_eq!(node.status().await.unwrap().cursor, Seq(4));
    node.close().await.unwrap();
    assert!(
        before != snapshot(dir.path()),
        "an honest sync changed no byte"
    );
}
