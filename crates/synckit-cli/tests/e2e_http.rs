//! The hub suite of `synckit-testkit` against the real `synckit serve` binary, a separate
//! process on loopback: every error row, tenant isolation under every naming of the other
//! tenant, SSE resume across dropped connections, compression; and the `[serve]` limits of the
//! config file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::path::Path;

use support::{Hub, output_within};
use synckit_testkit::hub_suite::{self, BodyLimits, TenantTokens};

fn tenants() -> (TenantTokens, TenantTokens) {
    (
        TenantTokens::for_tenant("acme"),
        TenantTokens::for_tenant("globex"),
    )
}

/// `synckit serve <args>` with read, write and admin tokens of both tenants as `--token` flags.
fn serve(a: &TenantTokens, b: &TenantTokens, args: &[&str]) -> Hub {
    let grants: Vec<String> = a.grants().into_iter().chain(b.grants()).collect();
    let mut all: Vec<&str> = args.to_vec();
    for grant in &grants {
        all.extend(["--token", grant]);
    }
    Hub::start(&all)
}

/// A config file in `dir` whose `[serve]` section sets `limits`.
fn limits_file(dir: &Path, limits: BodyLimits) -> String {
    let path = dir.join("limits.toml");
    let BodyLimits {
        max_batch,
        max_body,
        max_decompressed,
    } = limits;
    std::fs::write(
        &path,
        format!(
            "[serve]\nmax_batch = {max_batch}\nmax_body = {max_body}\n\
             max_decompressed = {max_decompressed}\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Drive a check on a runtime of this test (the hub is another process).
fn block_on<F: Future>(check: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(check)
}

#[test]
fn every_error_row_answers_as_stated_by_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    // Small limits from the config file, so each row is cheap and the file is shown to apply.
    let limits = BodyLimits {
        max_batch: 10,
        max_body: 4_096,
        max_decompressed: 8_192,
    };
    let config = limits_file(tmp.path(), limits);
    let (a, b) = tenants();
    let hub = serve(&a, &b, &["--store", "memory", "--config", &config]);
    block_on(hub_suite::check_error_rows(&hub.url, &a, &b, limits));
}

#[test]
fn the_binary_holds_the_stated_limits_by_default() {
    let (a, b) = tenants();
    let hub = serve(&a, &b, &["--store", "memory"]);
    block_on(hub_suite::check_error_rows(
        &hub.url,
        &a,
        &b,
        BodyLimits::STATED,
    ));
    let cases = block_on(synckit_testkit::hostile::check_hostile_events(
        &hub.url,
        &a,
        synckit_testkit::hostile::EventLimits::STATED,
    ));
    assert!(cases >= 30);
}

#[test]
fn tenants_never_see_each_other_through_the_binary() {
    let (a, b) = tenants();
    let hub = serve(&a, &b, &["--store", "memory"]);
    block_on(hub_suite::check_tenant_isolation(&hub.url, &a, &b));
}

#[test]
fn sse_resume_after_a_dropped_connection_delivers_exactly_the_missed_events() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("hub");
    let (a, b) = tenants();
    // The default store, on disk.
    let hub = serve(
        &a,
        &b,
        &["--store", "sled", "--data", data.to_str().unwrap()],
    );
    block_on(hub_suite::check_sse_resume(&hub.url, &a));
    block_on(hub_suite::check_sse_resume(&hub.url, &b));
    assert!(
        hub.terminate().success(),
        "SIGTERM stops the hub cleanly after streams were dropped"
    );
}

#[test]
fn large_answers_are_compressed_by_the_binary() {
    let (a, b) = tenants();
    let hub = serve(&a, &b, &["--store", "memory"]);
    block_on(hub_suite::check_compression(&hub.url, &a));
}

#[test]
fn bad_limits_in_the_config_file_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("zero body", "max_body = 0"),
        ("zero batch", "max_batch = 0"),
        (
            "decompressed below body",
            "max_body = 4096\nmax_decompressed = 1024",
        ),
        ("negative", "max_batch = -1"),
        ("not a number", "max_body = \"16 MiB\""),
    ];
    for (what, body) in cases {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, format!("[serve]\n{body}\n")).unwrap();
        let out = output_within(&[
            "--config",
            path.to_str().unwrap(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "memory",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
}
