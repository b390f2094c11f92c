//! Damage and bad input: a newer schema, foreign or damaged files, damaged records, a path
//! under a file, missing permissions and a full disk each give a clear error, never a panic,
//! and lose nothing already stored.
//!
//! The permission and full-disk cases run this test binary again as a child process (the
//! `damage_child` test, a no-op unless `SYNCKIT_DAMAGE_CHILD` is set): once as an unprivileged
//! user through `setpriv`, once under a file size limit (`prlimit --fsize`, with SIGXFSZ
//! ignored so an oversized write fails with EFBIG instead of killing the process).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use synckit_store_sled::{SCHEMA_VERSION, SledStore, sled};
use synckit_types::{
    ErrorKind, Event, EventStore, EventStoreExt, Hlc, NodeStore, NodeWrite, ReadRequest, Seq,
    TenantId,
};

const CHILD_ENV: &str = "SYNCKIT_DAMAGE_CHILD";
const DIR_ENV: &str = "SYNCKIT_DAMAGE_DIR";

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn event(id: &str, pad: usize) -> Event {
    Event::builder("Damage", "agg")
        .id(id)
        .origin("n1")
        .hlc(Hlc::new(1_000, 0))
        .data(json!({ "id": id, "pad": "p".repeat(pad) }))
        .build()
        .unwrap()
}

fn batch(prefix: &str, n: usize, pad: usize) -> Vec<Event> {
    (0..n)
        .map(|i| event(&format!("{prefix}-{i}"), pad))
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A closed store in a fresh directory holding `events` events of tenant `t`.
fn store_with(events: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .append(&tenant("t"), &batch("old", events, 100))
            .await
            .unwrap();
        EventStore::close(&store).await.unwrap();
    });
    dir
}

/// The ids of tenant `t`, read through a freshly opened store.
fn stored_ids(dir: &Path) -> Vec<String> {
    runtime().block_on(async {
        let store = SledStore::open(dir).unwrap();
        let ids = store
            .read_all(&tenant("t"))
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.id.to_string())
            .collect();
        EventStore::close(&store).await.unwrap();
        ids
    })
}

fn expected_ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every file of the store, for "nothing was changed" checks.
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Open sled directly on a closed store's directory.
fn raw(dir: &Path) -> sled::Db {
    sled::Config::new().path(dir).open().unwrap()
}

#[track_caller]
fn refused(dir: &Path, kind: ErrorKind, words: &[&str]) -> String {
    let err = SledStore::open(dir).expect_err("the store must refuse to open");
    assert_eq!(err.kind(), kind, "{err}");
    let text = err.to_string();
    for word in words {
        assert!(text.contains(word), "{word:?} missing from: {text}");
    }
    text
}

#[test]
fn newer_schema_in_the_marker_file_is_refused_before_sled_opens() {
    let dir = store_with(3);
    let marker = dir.path().join("synckit-store.json");
    let text = std::fs::read_to_string(&marker).unwrap();
    let newer = SCHEMA_VERSION + 1;
    let bumped = text.replace(
        &format!("\"schema_version\": {SCHEMA_VERSION}"),
        &format!("\"schema_version\": {newer}"),
    );
    assert_ne!(bumped, text, "the marker names its schema version");
    std::fs::write(&marker, &bumped).unwrap();
    let before = snapshot_files(dir.path());
    refused(
        dir.path(),
        ErrorKind::Corrupted,
        &[
            &format!("schema version {newer}"),
            &format!("up to {SCHEMA_VERSION}"),
        ],
    );
    assert_eq!(snapshot_files(dir.path()), before, "no file was touched");
    std::fs::write(&marker, &text).unwrap();
    assert_eq!(stored_ids(dir.path()), expected_ids("old", 3));
}

#[test]
fn newer_schema_in_the_database_is_refused() {
    let dir = store_with(3);
    let newer = SCHEMA_VERSION + 7;
    {
        let db = raw(dir.path());
        let meta = db.open_tree("synckit_meta").unwrap();
        meta.insert("schema_version", &newer.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    refused(
        dir.path(),
        ErrorKind::Corrupted,
        &[
            &format!("schema version {newer}"),
            &format!("up to {SCHEMA_VERSION}"),
        ],
    );
    {
        let db = raw(dir.path());
        let meta = db.open_tree("synckit_meta").unwrap();
        assert_eq!(
            meta.get("schema_version").unwrap().unwrap().as_ref(),
            newer.to_be_bytes(),
            "the marker was left as found"
        );
        meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes()[..])
            .unwrap();
        db.flush().unwrap();
    }
    assert_eq!(stored_ids(dir.path()), expected_ids("old", 3));
}

#[test]
fn a_foreign_sled_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = raw(dir.path());
        db.open_tree("someone_else")
            .unwrap()
            .insert("k", "v")
            .unwrap();
        db.flush().unwrap();
    }
    refused(dir.path(), ErrorKind::Corrupted, &["not a synckit store"]);
    let db = raw(dir.path());
    assert!(
        db.open_tree("someone_else")
            .unwrap()
            .get("k")
            .unwrap()
            .is_some(),
        "their data is untouched"
    );
}

#[test]
fn damaged_files_are_reported_not_silently_recovered() {
    // sled recovers up to the first record that fails its checksum and drops the rest; the
    // marker file's record of the last clean close turns that into an error.
    type Damage = fn(&mut Vec<u8>);
    // (name, damage, words of the error, whether the damage can miss every live record)
    let cases: [(&str, Damage, &[&str], bool); 4] = [
        (
            "flipped bytes in the middle",
            |b| {
                let mid = b.len() / 2;
                b[mid..mid + 4096].iter_mut().for_each(|x| *x ^= 0x5a);
            },
            // Depending on where the damage lands, sled either recovers a shorter log (the
            // marker refuses it) or panics while recovering (caught and reported); where it
            // lands in space sled no longer uses, nothing is damaged at all.
            &["damaged"],
            true,
        ),
        ("truncated", |b| b.truncate(b.len() / 2), &["damaged"], true),
        (
            "zeroed",
            |b| b.iter_mut().for_each(|x| *x = 0),
            &["sled recovered an empty database"],
            false,
        ),
        (
            "emptied",
            Vec::clear,
            &["sled recovered an empty database"],
            false,
        ),
    ];
    let appended: Vec<Event> = (0..10)
        .flat_map(|b| batch(&format!("b{b}"), 100, 200))
        .collect();
    for (name, damage, words, may_miss) in cases {
        let dir = tempfile::tempdir().unwrap();
        runtime().block_on(async {
            let store = SledStore::open(dir.path()).unwrap();
            for chunk in appended.chunks(100) {
                store.append(&tenant("t"), chunk).await.unwrap();
            }
            EventStore::close(&store).await.unwrap();
        });
        let db = dir.path().join("db");
        let mut bytes = std::fs::read(&db).unwrap();
        damage(&mut bytes);
        std::fs::write(&db, &bytes).unwrap();
        if may_miss && let Ok(store) = SledStore::open(dir.path()) {
            // The store opened: then the damage hit only space sled no longer reads, and
            // every event must be there, unchanged, in order.
            let stored = runtime().block_on(async {
                let stored = store.read_all(&tenant("t")).await;
                EventStore::close(&store).await.unwrap();
                stored
            });
            let stored: Vec<Event> = stored
                .unwrap_or_else(|e| panic!("{name}: opened, then failed to read: {e}"))
                .into_iter()
                .map(|e| e.event)
                .collect();
            assert!(stored == appended, "{name}: opened with a different log");
            continue;
        }
        let text = refused(dir.path(), ErrorKind::Corrupted, words);
        assert!(
            text.contains("was not opened and wrote nothing")
                || text.contains("sled panicked while recovering"),
            "{name}: {text}"
        );
        // Refusing again gives the same answer: the store never heals into a shorter log.
        // (After sled panics in recovery it keeps its file lock for the rest of this process,
        // so a second open here would only report the lock.)
        if !text.contains("sled panicked while recovering") {
            refused(dir.path(), ErrorKind::Corrupted, words);
        }
    }
}

#[test]
fn a_damaged_sled_config_file_is_reported() {
    let dir = store_with(3);
    std::fs::write(dir.path().join("conf"), b"not a sled config at all").unwrap();
    refused(dir.path(), ErrorKind::Corrupted, &["corrupted"]);
}

#[test]
fn a_damaged_event_record_fails_its_reads_only() {
    let dir = store_with(10);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .append(&tenant("other"), &batch("o", 2, 10))
            .await
            .unwrap();
        EventStore::close(&store).await.unwrap();
    });
    {
        // Damage the JSON of the first chunk of tenant `t` (the header stays valid).
        let db = raw(dir.path());
        let hub = db.open_tree("synckit_hub").unwrap();
        let prefix = [&[b'E', 1][..], b"t"].concat();
        let (key, value) = hub.scan_prefix(&prefix).next().unwrap().unwrap();
        let mut value = value.to_vec();
        let last = value.len() - 1;
        value[last] = b'!';
        hub.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        let err = store
            .read(&tenant("t"), &ReadRequest::after(Seq::ZERO, 100))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert!(err.to_string().contains("tenant t"), "{err}");
        assert!(err.to_string().contains("does not decode"), "{err}");
        // The rest of the store works: head, other tenants, new appends.
        assert_eq!(store.head(&tenant("t")).await.unwrap(), Seq(10));
        assert_eq!(store.read_all(&tenant("other")).await.unwrap().len(), 2);
        let report = store
            .append(&tenant("t"), &batch("new", 1, 10))
            .await
            .unwrap();
        assert_eq!(report.head, Seq(11));
        EventStore::close(&store).await.unwrap();
    });
}

#[test]
fn a_damaged_head_or_node_record_is_refused_at_open() {
    let dir = store_with(10);
    {
        let db = raw(dir.path());
        let hub = db.open_tree("synckit_hub").unwrap();
        hub.insert(b"Ht", &25u64.to_be_bytes()[..]).unwrap();
        db.flush().unwrap();
    }
    refused(
        dir.path(),
        ErrorKind::Corrupted,
        &["tenant t", "head record says 25", "ends at 10"],
    );

    let dir = store_with(1);
    runtime().block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .commit(NodeWrite {
                cursor: Some(Seq(4)),
                ..NodeWrite::default()
            })
            .await
            .unwrap();
        NodeStore::close(&store).await.unwrap();
    });
    {
        let db = raw(dir.path());
        db.open_tree("synckit_node")
            .unwrap()
            .insert(b"M", &b"{garbage"[..])
            .unwrap();
        db.flush().unwrap();
    }
    refused(dir.path(), ErrorKind::Corrupted, &["node state record"]);
}

#[test]
fn a_path_under_a_regular_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = SledStore::open(file.join("store")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("not a directory"), "{err}");
    assert!(
        err.to_string().contains("plain-file"),
        "names the path: {err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "the file is untouched");
}

// ---------------------------------------------------------------------------------------------
// Child processes: missing permission and a full disk.
// ---------------------------------------------------------------------------------------------

/// The child side; a no-op in a normal test run.
#[test]
fn damage_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let report = |label: &str, result: Result<(), synckit_types::Error>| match result {
        Ok(()) => println!("{label} ok"),
        Err(e) => println!("{label} {} {e}", e.kind()),
    };
    match mode.as_str() {
        "open" => report("RESULT", SledStore::open(&dir).map(drop)),
        "fill" => runtime().block_on(async {
            let store = match SledStore::open(&dir) {
                Ok(store) => store,
                Err(e) => return report("RESULT", Err(e)),
            };
            for round in 0..10_000 {
                let events = batch(&format!("full-{round}"), 100, 1_000);
                match store.append(&tenant("t"), &events).await {
                    Ok(r) => println!("ACK {}", r.head),
                    Err(e) => {
                        report("RESULT", Err(e));
                        let again = store.append(&tenant("t"), &batch("after", 1, 10)).await;
                        report("AFTER", again.map(drop));
                        return;
                    }
                }
            }
            println!("RESULT never failed");
        }),
        other => panic!("unknown child mode {other}"),
    }
}

/// Run `damage_child` in `mode` on `dir`, behind `wrapper` (a command and its arguments that
/// end by running the program named after them).
fn run_child(mode: &str, dir: &Path, wrapper: &[&str]) -> Output {
    let exe = std::env::current_exe().unwrap();
    let (program, args) = wrapper.split_first().unwrap();
    Command::new(program)
        .args(args)
        .arg(&exe)
        .args(["--exact", "damage_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(DIR_ENV, dir)
        .output()
        .unwrap()
}

/// The text after `label` on the first line that has it (the test harness may print its own
/// text before the child's first line).
fn line<'a>(stdout: &'a str, label: &'a str) -> Option<&'a str> {
    lines(stdout, label).next()
}

fn lines<'a>(stdout: &'a str, label: &'a str) -> impl Iterator<Item = &'a str> {
    stdout
        .lines()
        .filter_map(move |l| l.split_once(label)?.1.strip_prefix(' '))
}

/// Whether `tool` runs here; if not, fail under CI and skip loudly elsewhere.
fn have(tool: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} (util-linux) is required for this test under CI"
        );
        eprintln!("SKIPPED: {tool} is not installed; the test needs util-linux");
    }
    found
}

/// Whether this process runs as root (files it creates are owned by uid 0).
#[cfg(unix)]
fn running_as_root(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::remove_file(&probe).unwrap();
    uid == 0
}

#[cfg(target_os = "linux")]
#[test]
fn missing_permission_is_a_clear_error_and_loses_nothing() {
    let dir = store_with(5);
    let before = snapshot_files(dir.path());
    let result = if running_as_root(dir.path()) {
        // Permission bits do not stop root: the child drops to `nobody`, who may not enter
        // the root-owned 0700 temporary directory.
        if !have("setpriv") {
            return;
        }
        let out = run_child(
            "open",
            dir.path(),
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "the child did not panic: {out:?}");
        line(&stdout, "RESULT")
            .unwrap_or_else(|| {
                panic!(
                    "no result from the child: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_owned()
    } else {
        use std::os::unix::fs::PermissionsExt;
        let locked = std::fs::Permissions::from_mode(0o000);
        std::fs::set_permissions(dir.path(), locked).unwrap();
        let err = SledStore::open(dir.path()).unwrap_err();
        let open = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(dir.path(), open).unwrap();
        format!("{} {err}", err.kind())
    };
    assert!(result.starts_with("storage "), "{result}");
    assert!(result.contains("permission denied"), "{result}");
    assert_eq!(snapshot_files(dir.path()), before, "nothing was touched");
    assert_eq!(stored_ids(dir.path()), expected_ids("old", 5));
}

#[cfg(target_os = "linux")]
#[test]
fn full_disk_is_a_clear_error_and_loses_nothing() {
    if !have("prlimit") {
        return;
    }
    let dir = store_with(50);
    let size: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    // Each file may grow by 1 MiB; the child writes ~100 KiB per append until a write fails.
    let limit = format!("--fsize={}", size + 1024 * 1024);
    let out = run_child(
        "fill",
        dir.path(),
        &[
            "sh",
            "-c",
            r#"trap '' XFSZ; exec prlimit "$0" -- "$@""#,
            &limit,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child crashed: {stdout}\n{stderr}"
    );
    let result = line(&stdout, "RESULT")
        .unwrap_or_else(|| panic!("no result from the child: {stdout}\n{stderr}"));
    assert!(result.starts_with("storage "), "{result}");
    assert!(
        result.contains("disk is full or a file size limit was reached"),
        "{result}"
    );
    // Once a write failed half-way, the store refuses further writes until it is reopened.
    let after = line(&stdout, "AFTER").unwrap();
    assert!(after.starts_with("storage "), "{after}");
    // Every acknowledged append is there after a reopen, and nothing else.
    let acked: Vec<u64> = lines(&stdout, "ACK").map(|h| h.parse().unwrap()).collect();
    let heads: Vec<u64> = (1..=acked.len() as u64).map(|i| 50 + 100 * i).collect();
    assert_eq!(acked, heads, "every acknowledged append was seen");
    assert!(
        !acked.is_empty(),
        "some appends fit under the limit: {stdout}"
    );
    let ids = stored_ids(dir.path());
    let mut expected = expected_ids("old", 50);
    for round in 0..acked.len() {
        expected.extend(expected_ids(&format!("full-{round}"), 100));
    }
    assert!(
        ids.len() == expected.len() || ids.len() == expected.len() + 100,
        "acknowledged {} events, found {} (at most the failed batch more)",
        expected.len(),
        ids.len()
    );
    assert_eq!(
        ids[..expected.len()],
        expected[..],
        "acknowledged events, in order"
    );
}
