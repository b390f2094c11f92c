//! Partition and heal with the real binary: a sled hub and three nodes, each node a series of
//! `synckit append` and `synckit sync` processes, exchange events through the fault proxy of
//! `synckit-testkit` under random resets, drops, cut responses, delays and blackholes; then the
//! network heals, every node syncs in a quiet round, and the invariants of DESIGN.md hold on
//! every node: convergence, no silent loss, no duplicates, gap-free order.
//!
//! `SYNCKIT_PARTITION_SECS` sets how long the faults last (default 10); `SYNCKIT_FAULT_SEED`
//! replays the proxy's printed seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Hub;
use synckit_testkit::fault_proxy::{Fault, FaultProxy, Schedule};

/// Node settings for a faulty network: a blackholed call gives up after a second.
const NODE_CONFIG: &str = "[node]\nrequest_timeout_ms = 1000\n";

/// Run a node command with [`NODE_CONFIG`] (written beside the node's directory).
fn synckit(dir: &Path, args: &[&str]) -> std::process::Output {
    support::node(dir, Some(&node_config(dir)), args)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    support::node_ok(dir, Some(&node_config(dir)), args)
}

fn node_config(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.with_extension("toml");
    if !config.exists() {
        std::fs::write(&config, NODE_CONFIG).unwrap();
    }
    config
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).unwrap()
}

/// What one node did while the network was faulty.
struct Work {
    dir: PathBuf,
    /// Ids of events appended to aggregates only this node writes.
    own: Vec<String>,
    /// Ids appended to aggregates every node writes (these may lose a conflict).
    shared: Vec<String>,
    syncs: (u32, u32),
}

/// Append and sync in a loop until `until`, syncing through `hub`.
fn node_loop(dir: PathBuf, name: &str, hub: &str, until: Instant) -> Work {
    let mut work = Work {
        dir,
        own: Vec::new(),
        shared: Vec::new(),
        syncs: (0, 0),
    };
    let mut n = 0u32;
    while Instant::now() < until {
        for aggregate in [format!("own-{name}"), format!("shared-{}", n % 3)] {
            let data = format!(r#"{{"node": "{name}", "n": {n}}}"#);
            let args = [
                "append",
                "--aggregate",
                &aggregate,
                "--kind",
                "Noted",
                "--payload",
                &data,
            ];
            let id = ok(&work.dir, &args).trim().to_owned();
            if aggregate.starts_with("own-") {
                work.own.push(id);
            } else {
                work.shared.push(id);
            }
        }
        // A failed sync is expected under faults; what it stored must still be sound.
        let synced = synckit(&work.dir, &["sync", "--hub", hub]).status.success();
        if synced {
            work.syncs.0 += 1;
        } else {
            work.syncs.1 += 1;
        }
        n += 1;
    }
    work
}

fn confirmed(dir: &Path) -> Vec<Value> {
    json(dir, &["log", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "confirmed")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_after_a_faulty_network_heals() {
    let seconds: u64 = std::env::var("SYNCKIT_PARTITION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = tmp.path().join("hub");
    let hub = Hub::start(&["--store", "sled", "--data", hub_dir.to_str().unwrap()]);
    let upstream = hub.url.strip_prefix("http://").unwrap().parse().unwrap();
    let faults = vec![
        Fault::Reset,
        Fault::Drop,
        Fault::CutResponse { after_bytes: 40 },
        Fault::CutResponse { after_bytes: 400 },
        Fault::Delay(Duration::from_millis(30)),
        Fault::Blackhole,
    ];
    let proxy = FaultProxy::start(upstream, Schedule::random_from_env(0.5, faults))
        .await
        .unwrap();
    let url = proxy.url();
    let until = Instant::now() + Duration::from_secs(seconds);
    let loops: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let dir = tmp.path().join(name);
            let url = url.clone();
            tokio::task::spawn_blocking(move || node_loop(dir, name, &url, until))
        })
        .collect();
    let mut work = Vec::new();
    for handle in loops {
        work.push(handle.await.unwrap());
    }
    let counts = proxy.counts();
    eprintln!("faults dealt: {counts:?}");
    assert!(
        counts.iter().any(|(name, n)| *name != "pass" && *n > 0),
        "the proxy dealt no fault: {counts:?}"
    );
    for w in &work {
        eprintln!(
            "{}: syncs ok {} failed {}",
            w.dir.display(),
            w.syncs.0,
            w.syncs.1
        );
    }

    // Heal, then a quiet round: everyone pushes, then everyone pulls what the others pushed.
    proxy.heal();
    for _round in 0..2 {
        for w in &work {
            ok(&w.dir, &["sync", "--hub", &url]);
        }
    }

    // The hub's log, read directly.
    let reader = tmp.path().join("reader");
    ok(&reader, &["sync", "--hub", &hub.url]);
    let hub_log = confirmed(&reader);
    let hub_ids: Vec<&str> = hub_log.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let seqs: Vec<u64> = hub_log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    // Gap-free order: seqs 1..=N, each once, ascending.
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    // No duplicates.
    let unique: BTreeSet<&str> = hub_ids.iter().copied().collect();
    assert_eq!(unique.len(), hub_ids.len(), "an id is in the hub log twice");
    // Aggregate versions count up from 1 in log order.
    let mut versions: BTreeMap<&str, u64> = BTreeMap::new();
    for e in &hub_log {
        let v = versions
            .entry(e["aggregate_id"].as_str().unwrap())
            .or_default();
        *v += 1;
        assert_eq!(e["aggregate_version"].as_u64(), Some(*v), "{e}");
    }

    for w in &work {
        let dir = w.dir.display();
        // Convergence: event for event, in the same order.
        let log = confirmed(&w.dir);
        let ids: Vec<&str> = log.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids, hub_ids,
            "{dir}: the confirmed log differs from the hub's"
        );
        let status = json(&w.dir, &["status", "--json"]);
        assert_eq!(status["pending"], 0, "{dir}: {status}");
        assert_eq!(
            status["cursor"].as_u64(),
            seqs.last().copied(),
            "{dir}: {status}"
        );
        // No silent loss: events on the node's own aggregates are all in the log; events on
        // shared aggregates are in the log or were decided by a recorded resolver decision.
        for id in &w.own {
            assert!(
                unique.contains(id.as_str()),
                "{dir}: own event {id} was lost"
            );
        }
        let audit = ok(&w.dir, &["audit", "--json"]);
        let reviews = ok(&w.dir, &["conflicts", "list", "--json"]);
        for id in &w.shared {
            assert!(
                unique.contains(id.as_str()) || audit.contains(id) || reviews.contains(id),
                "{dir}: shared event {id} is neither stored, decided nor parked"
            );
        }
    }
    proxy.stop().await;
    drop(hub);
}
