//! Replays the fuzz corpora kept in `fuzz/corpus/<target>/` through the same target bodies
//! cargo-fuzz runs (`synckit_testkit::fuzz`), so every input fuzzing found interesting, and every
//! fixed crash, is checked on stable in CI without cargo-fuzz.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed test.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use synckit_testkit::fuzz::{TARGETS, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The file names in `dir`, sorted; panics if it is missing.
fn names_in(dir: &Path) -> Vec<String> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{} cannot be read: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// Run `target` on every file of its corpus; fail if there is none, and name the file that
/// panics.
fn replay(name: &str, target: Target) {
    let dir = fuzz_dir().join("corpus").join(name);
    let files = names_in(&dir);
    assert!(
        !files.is_empty(),
        "the corpus {} is empty: a replay of nothing proves nothing",
        dir.display()
    );
    let mut failed = Vec::new();
    for file in &files {
        let path = dir.join(file);
        let data = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
        if panic::catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {name} panicked on (reproduce with `cargo +nightly fuzz run {name} <file>` \
         in fuzz/):\n  {}",
        failed.join("\n  ")
    );
    println!("{name}: {} inputs replayed", files.len());
}

fn target(name: &str) -> Target {
    TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("synckit_testkit::fuzz::TARGETS has no {name}"))
}

#[test]
fn push_body() {
    replay("push_body", target("push_body"));
}

#[test]
fn pull_query() {
    replay("pull_query", target("pull_query"));
}

#[test]
fn cursor() {
    replay("cursor", target("cursor"));
}

#[test]
fn hlc() {
    replay("hlc", target("hlc"));
}

#[test]
fn version() {
    replay("version", target("version"));
}

#[test]
fn rules_file() {
    replay("rules_file", target("rules_file"));
}

#[test]
fn sse_frames() {
    replay("sse_frames", target("sse_frames"));
}

/// The target list, the cargo-fuzz binaries, the corpus directories and the tests above name
/// the same targets, so a new target cannot be fuzzed without being replayed, or the reverse.
#[test]
fn targets_binaries_and_corpora_agree() {
    let mut targets: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    targets.sort();
    let binaries: Vec<String> = names_in(&fuzz_dir().join("fuzz_targets"))
        .into_iter()
        .filter_map(|f| f.strip_suffix(".rs").map(str::to_owned))
        .collect();
    assert_eq!(binaries, targets, "fuzz/fuzz_targets/*.rs against TARGETS");
    assert_eq!(
        names_in(&fuzz_dir().join("corpus")),
        targets,
        "fuzz/corpus/* against TARGETS"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in &targets {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
    let replayed = [
        "push_body",
        "pull_query",
        "cursor",
        "hlc",
        "version",
        "rules_file",
        "sse_frames",
    ];
    let mut replayed: Vec<String> = replayed.iter().map(|n| (*n).to_owned()).collect();
    replayed.sort();
    assert_eq!(
        replayed, targets,
        "the #[test]s of this file against TARGETS"
    );
}
