//! End-to-end tests of the real `synckit` binary: a hub and nodes as separate processes on
//! loopback, including processes killed with SIGKILL mid-push and mid-pull.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{BIN, Hub};

fn synckit(dir: &Path, args: &[&str]) -> std::process::Output {
    support::node(dir, None, args)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    support::node_ok(dir, None, args)
}

fn log(dir: &Path) -> Vec<Value> {
    serde_json::from_str(&ok(dir, &["log", "--json"])).unwrap()
}

fn confirmed_ids(dir: &Path) -> Vec<String> {
    log(dir)
        .into_iter()
        .filter(|e| e["status"] == "confirmed")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn two_nodes_work_offline_conflict_and_converge() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let hub = Hub::start(&["--store", "memory"]);
    let sync = |dir: &Path| ok(dir, &["sync", "--hub", &hub.url, "--json"]);
    ok(
        &a,
        &[
            "append",
            "--aggregate",
            "task-1",
            "--kind",
            "Created",
            "--payload",
            r#"{"title":"docs"}"#,
        ],
    );
    sync(&a);
    sync(&b);
    // Offline edits on both, one of the same task.
    ok(
        &a,
        &[
            "append",
            "--aggregate",
            "task-1",
            "--kind",
            "Renamed",
            "--payload",
            r#"{"title":"by a"}"#,
        ],
    );
    ok(
        &b,
        &[
            "append",
            "--aggregate",
            "task-1",
            "--kind",
            "Renamed",
            "--payload",
            r#"{"title":"by b"}"#,
        ],
    );
    ok(
        &b,
        &[
            "append",
            "--aggregate",
            "task-2",
            "--kind",
            "Created",
            "--no-expect",
        ],
    );
    sync(&a);
    let result: Value = serde_json::from_str(&sync(&b)).unwrap();
    assert_eq!(result["conflicts"], 1);
    assert_eq!(result["decisions"][0]["strategy"], "last_write_wins");
    sync(&a);
    let (la, lb) = (log(&a), log(&b));
    assert_eq!(la, lb, "both nodes hold the same log");
    assert_eq!(la.len(), 4);
    assert!(la.iter().all(|e| e["status"] == "confirmed"));
    let status: Value = serde_json::from_str(&ok(&a, &["status", "--json"])).unwrap();
    assert_eq!(
        (status["cursor"].clone(), status["pending"].clone()),
        (4.into(), 0.into())
    );
    assert!(hub.terminate().success(), "SIGTERM stops the hub cleanly");
}

#[test]
fn errors_are_one_line_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["sync", "--hub", "http://127.0.0.1:9"],
        vec!["sync"],
        vec![
            "append",
            "--aggregate",
            "x",
            "--kind",
            "K",
            "--payload",
            "{bad",
        ],
        vec!["append", "--aggregate", "", "--kind", "K"],
        vec!["conflicts", "resolve", "nope", "--keep", "local"],
        vec!["--config", "/does/not/exist", "status"],
        vec!["serve", "--listen", "0.0.0.0:0", "--store", "memory"],
        vec!["serve", "--store", "nope"],
        vec!["serve", "--listen", "127.0.0.1:0", "--token", "broken"],
    ];
    for args in cases {
        let out = synckit(tmp.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let bad_file = tmp.path().join("bad.toml");
    std::fs::write(&bad_file, "[node]\nunknown = 1\n").unwrap();
    let out = synckit(
        tmp.path(),
        &["--config", bad_file.to_str().unwrap(), "status"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown"));
}

const RULES: &str = r#"
version: 1
name: cli
settings:
  default_fallback: lww
groups:
  - name: tasks
    conditions:
      aggregate_ids: ["task-*"]
    rules:
      - name: hold
        conditions:
          event_types: [Renamed]
        strategy: review
"#;

#[test]
fn a_rules_file_decides_and_audit_lists_the_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let rules = tmp.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let rules = rules.to_str().unwrap();
    let hub = Hub::start(&["--store", "memory"]);
    let rename = |dir: &Path, title: &str| {
        let payload = format!(r#"{{"title":"{title}"}}"#);
        ok(
            dir,
            &[
                "append",
                "--aggregate",
                "task-1",
                "--kind",
                "Renamed",
                "--payload",
                &payload,
            ],
        );
    };
    rename(&a, "first");
    ok(&a, &["sync", "--hub", &hub.url]);
    ok(&b, &["sync", "--hub", &hub.url]);
    rename(&a, "by a");
    rename(&b, "by b");
    ok(&a, &["sync", "--hub", &hub.url]);
    let result: Value = serde_json::from_str(&ok(
        &b,
        &["sync", "--hub", &hub.url, "--rules", rules, "--json"],
    ))
    .unwrap();
    assert_eq!(result["conflicts"], 1);
    assert_eq!(result["decisions"][0]["rule"], "tasks.hold");

    // The parked conflict names the rule that parked it.
    let listed = ok(&b, &["conflicts", "list"]);
    assert!(listed.contains("rule tasks.hold"), "{listed}");
    let reviews: Value = serde_json::from_str(&ok(&b, &["conflicts", "list", "--json"])).unwrap();
    let review_id = reviews[0]["id"].as_str().unwrap().to_owned();
    ok(&b, &["conflicts", "resolve", &review_id, "--keep", "local"]);

    // Two decisions on task-1: the rule's, then the application's.
    let trail: Value =
        serde_json::from_str(&ok(&b, &["audit", "--aggregate", "task-1", "--json"])).unwrap();
    let records = trail["records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "{trail}");
    assert_eq!(records[0]["decision"], "review");
    assert_eq!(records[0]["rule"], "tasks.hold");
    assert_eq!(records[0]["group"], "tasks");
    assert_eq!(records[0]["context"]["origin"], "cli");
    assert_eq!(records[0]["changed_fields"], serde_json::json!(["title"]));
    assert_eq!(records[1]["strategy"], "application");
    let text = ok(&b, &["audit", "--rule", "tasks.hold"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("review by manual_review rule tasks.hold"),
        "{text}"
    );
    assert!(ok(&b, &["audit", "--aggregate", "other"]).contains("no decisions recorded"));
    let first = records[0]["id"].as_str().unwrap();
    let dependents = ok(&b, &["audit", "--dependents", first]);
    assert!(
        dependents.contains(&format!("depends: {}", records[1]["id"].as_str().unwrap())),
        "{dependents}"
    );

    // A rules file with a typo is one clear line naming its position, and nothing syncs.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, RULES.replace("strategy: review", "strategy: reveiw")).unwrap();
    let out = synckit(
        &b,
        &["sync", "--hub", &hub.url, "--rules", bad.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bad.yaml:14:"), "{stderr}");
    assert!(stderr.contains("reveiw"), "{stderr}");
    assert!(hub.terminate().success());
}

/// Run `synckit <args>` with debug logs of the node engine, kill it with SIGKILL once `count`
/// lines containing `marker` appeared on stderr. Returns whether it was killed before finishing.
fn kill_after(dir: &Path, args: &[&str], marker: &str, count: usize) -> bool {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data")
        .arg(dir)
        .env("RUST_LOG", "synckit_node=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = 0;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains(marker) {
            seen += 1;
            if seen == count {
                child.kill().unwrap();
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    !status.success()
}

#[test]
fn a_node_killed_mid_pull_resumes_with_no_loss_and_no_duplicate() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, r) = (tmp.path().join("w"), tmp.path().join("r"));
    let hub = Hub::start(&["--store", "memory"]);
    ok(
        &w,
        &[
            "append",
            "--aggregate",
            "bulk",
            "--kind",
            "Seeded",
            "--no-expect",
            "--repeat",
            "3000",
        ],
    );
    ok(&w, &["push", "--hub", &hub.url]);
    let config = tmp.path().join("small-pages.toml");
    std::fs::write(&config, "[node]\npage_size = 50\n").unwrap();
    let config = config.to_str().unwrap();
    let seed = std::process::id() as usize;
    for round in 0..3 {
        let killed = kill_after(
            &r,
            &["--config", config, "pull", "--hub", &hub.url],
            "pulled",
            3 + (seed + round * 7) % 20,
        );
        assert!(killed, "round {round}: the pull was not interrupted");
    }
    ok(&r, &["--config", config, "pull", "--hub", &hub.url]);
    let ids = confirmed_ids(&r);
    assert_eq!(ids.len(), 3000);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        3000,
        "no duplicates"
    );
    assert_eq!(ids, confirmed_ids(&w), "same log, same order");
}

#[test]
fn the_hub_killed_mid_push_and_restarted_loses_no_acknowledged_event() {
    let tmp = tempfile::tempdir().unwrap();
    let (n, hub_dir) = (tmp.path().join("n"), tmp.path().join("hub"));
    let hub_dir = hub_dir.to_str().unwrap().to_owned();
    ok(
        &n,
        &[
            "append",
            "--aggregate",
            "bulk",
            "--kind",
            "Seeded",
            "--no-expect",
            "--repeat",
            "2000",
        ],
    );
    let config = tmp.path().join("small-batches.toml");
    std::fs::write(&config, "[node]\nbatch_size = 20\n").unwrap();
    let config = config.to_str().unwrap();
    let hub = Hub::start(&["--store", "sled", "--data", &hub_dir]);
    // Kill the hub while the node pushes: watch the node's log for acknowledged batches.
    let mut child = Command::new(BIN)
        .args(["--config", config, "push", "--hub", &hub.url, "--data"])
        .arg(&n)
        .env("RUST_LOG", "synckit_node=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut acknowledged = 0;
    let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
    for line in lines.by_ref() {
        if line.contains("pushed") {
            acknowledged += 1;
            if acknowledged == 10 {
                break;
            }
        }
    }
    hub.kill();
    for _ in lines {}
    assert!(
        !child.wait().unwrap().success(),
        "the push failed when the hub died"
    );
    let acked_before_restart = confirmed_ids(&n);
    assert!(
        acked_before_restart.len() >= 200,
        "{} acknowledged",
        acked_before_restart.len()
    );

    let hub = Hub::start(&["--store", "sled", "--data", &hub_dir]);
    ok(&n, &["--config", config, "sync", "--hub", &hub.url]);
    let fresh = tmp.path().join("fresh");
    ok(&fresh, &["pull", "--hub", &hub.url]);
    let on_hub = confirmed_ids(&fresh);
    assert_eq!(on_hub.len(), 2000, "every event once");
    let set: HashSet<_> = on_hub.iter().collect();
    assert_eq!(set.len(), 2000, "no duplicates");
    assert!(
        acked_before_restart.iter().all(|id| set.contains(id)),
        "acknowledged events survived"
    );
    assert_eq!(confirmed_ids(&n), on_hub);
    assert!(hub.terminate().success());
}

#[test]
fn serve_over_tls_and_sync_with_a_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = synckit_testkit::tls::TestCerts::write(tmp.path());
    let (cert, key, ca) = (
        certs.cert.to_str().unwrap(),
        certs.key.to_str().unwrap(),
        certs.ca.to_str().unwrap(),
    );
    let hub = Hub::start(&["--store", "memory", "--tls-cert", cert, "--tls-key", key]);
    assert!(hub.url.starts_with("https://127.0.0.1:"), "{}", hub.url);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(&a, &["append", "--aggregate", "t", "--kind", "Created"]);
    ok(&a, &["sync", "--hub", &hub.url, "--ca-file", ca, "--json"]);
    ok(&b, &["sync", "--hub", &hub.url, "--ca-file", ca, "--json"]);
    assert_eq!(confirmed_ids(&a), confirmed_ids(&b));
    assert_eq!(confirmed_ids(&b).len(), 1);
    // Without the CA the node refuses the hub's certificate, in one line.
    let refused = synckit(&b, &["sync", "--hub", &hub.url]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // Half a TLS configuration is an error before anything starts.
    let half = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert])
        .output()
        .unwrap();
    assert!(!half.status.success());
}
