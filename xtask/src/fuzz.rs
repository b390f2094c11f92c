//! `cargo xtask fuzz`: run every cargo-fuzz target of `fuzz/` in turn on its corpus, for a set
//! time each, and fail with the artifact and the command that reproduces it if one finds a
//! crash, a hang or an oversized allocation. docs/FUZZING.md describes the targets.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;

/// libFuzzer limits: a run over 2 GiB of memory (or one allocation that large) and an input
/// that takes over 10 s are findings, like a panic.
const LIBFUZZER_LIMITS: &[&str] = &["-rss_limit_mb=2048", "-timeout=10"];

/// What one target's run gave.
struct Outcome {
    target: String,
    passed: bool,
    /// Executions libFuzzer reported (`Done N runs`), when it got that far.
    runs: Option<u64>,
    /// The input that failed, as libFuzzer wrote it.
    artifact: Option<String>,
    log: PathBuf,
}

/// `cargo xtask fuzz [--seconds N] [--target NAME]`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let (seconds, only) = parse_args(args)?;
    let fuzz_dir = root.join("fuzz");
    let mut targets = targets(&fuzz_dir)?;
    if let Some(name) = &only {
        if !targets.contains(name) {
            bail!(
                "no fuzz target {name:?}; the targets are: {}",
                targets.join(", ")
            );
        }
        targets = vec![name.clone()];
    }
    check_tools()?;
    let logs = fuzz_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let mut outcomes = Vec::new();
    for target in &targets {
        println!("\n== fuzz {target}: {seconds} s");
        outcomes.push(run_target(root, &fuzz_dir, &logs, target, seconds)?);
    }

    println!("\n== fuzz summary ({seconds} s per target)");
    for o in &outcomes {
        let runs = o.runs.map_or_else(|| "?".to_owned(), |n| n.to_string());
        let verdict = if o.passed { "pass" } else { "FAIL" };
        println!("  {verdict}  {:<12} {runs:>12} runs", o.target);
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    if failed.is_empty() {
        println!(
            "\nNew inputs were added to fuzz/corpus/<target>/; minimise with \
             `cargo +nightly fuzz cmin <target>` before committing them."
        );
        return Ok(());
    }
    let mut report = String::new();
    for o in failed {
        report.push_str(&format!("\n  {}: log {}", o.target, o.log.display()));
        match &o.artifact {
            Some(artifact) => report.push_str(&format!(
                "\n    artifact:  {artifact}\n    reproduce: cargo +nightly fuzz run {} {artifact}",
                o.target
            )),
            None => report.push_str("\n    (no artifact written: see the log)"),
        }
    }
    bail!("fuzzing found a problem:{report}")
}

fn parse_args(args: &[String]) -> Result<(u64, Option<String>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut only = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let mut value = |flag: &str| {
            rest.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "--seconds" => {
                let text = value("--seconds")?;
                seconds = text
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("--seconds {text:?} is not a positive integer"))?;
            }
            "--target" => only = Some(value("--target")?),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask fuzz [--seconds N] [--target NAME]"
            ),
        }
    }
    Ok((seconds, only))
}

/// The target names: the files of `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(target) = name.strip_suffix(".rs") {
            names.push(target.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("{} holds no fuzz target", dir.display());
    }
    Ok(names)
}

/// `cargo +nightly fuzz`, through the rustup proxy: `$CARGO` is the stable cargo running xtask,
/// which does not understand `+nightly`.
fn nightly() -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdin(Stdio::null());
    command
}

fn check_tools() -> Result<()> {
    let works = |command: &mut Command| {
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works(nightly().arg("--version")) {
        bail!(
            "cargo-fuzz needs a nightly toolchain (sanitizer flags): install it with \
             `rustup toolchain install nightly`"
        );
    }
    if !works(nightly().args(["fuzz", "--version"])) {
        bail!("cargo-fuzz is not installed: install it with `cargo install cargo-fuzz`");
    }
    Ok(())
}

fn run_target(
    root: &Path,
    fuzz_dir: &Path,
    logs: &Path,
    target: &str,
    seconds: u64,
) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;

    let mut command = nightly();
    command
        .current_dir(root)
        .args(["fuzz", "run", target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(LIBFUZZER_LIMITS)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A dictionary of the format's keywords, where there is one, gets past the syntax sooner.
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    let mut dict_flag = String::new();
    if dict.is_file() {
        command.arg(format!("-dict={}", dict.display()));
        let shown = dict.strip_prefix(root).unwrap_or(&dict);
        dict_flag = format!(" -dict={}", shown.display());
    }
    println!(
        "   cargo +nightly fuzz run {target} {} -- -max_total_time={seconds} {}{dict_flag}",
        corpus.strip_prefix(root).unwrap_or(&corpus).display(),
        LIBFUZZER_LIMITS.join(" "),
    );
    let mut child = command
        .spawn()
        .context("could not start `cargo +nightly fuzz run`")?;

    // libFuzzer reports on stderr; cargo's build output goes there too. Everything goes to
    // the log; progress lines are echoed.
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let copier = std::thread::spawn(move || -> Vec<String> {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    let mut runs = None;
    let mut artifact = None;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading cargo fuzz output")?;
        writeln!(log, "{line}").context("writing the fuzz log")?;
        if let Some(n) = done_runs(&line) {
            runs = Some(n);
        }
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            artifact = Some(path.trim().to_owned());
        }
        if echo(&line) {
            println!("   {line}");
        }
    }
    let status = child.wait().context("waiting for cargo fuzz")?;
    for line in copier.join().unwrap_or_default() {
        writeln!(log, "{line}").context("writing the fuzz log")?;
    }
    Ok(Outcome {
        target: target.to_owned(),
        passed: status.success() && artifact.is_none(),
        runs,
        artifact,
        log: log_path,
    })
}

/// `N` of libFuzzer's closing line `Done N runs in S second(s)`.
fn done_runs(line: &str) -> Option<u64> {
    line.strip_prefix("Done ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a line is worth showing live: build errors, libFuzzer's periodic and final status,
/// and anything about a finding.
fn echo(line: &str) -> bool {
    [
        "error:",
        "error[",
        "pulse",
        "DONE",
        "Done ",
        "INITED",
        "ERROR",
        "panicked",
        "ALARM",
        "SUMMARY",
        "Test unit",
        "out-of-memory",
    ]
    .iter()
    .any(|needle| line.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let args = |s: &[&str]| s.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&[])).unwrap(), (DEFAULT_SECONDS, None));
        assert_eq!(
            parse_args(&args(&["--seconds", "5", "--target", "hlc"])).unwrap(),
            (5, Some("hlc".to_owned()))
        );
        assert!(parse_args(&args(&["--seconds", "0"])).is_err());
        assert!(parse_args(&args(&["--seconds"])).is_err());
        assert!(parse_args(&args(&["--jobs", "2"])).is_err());
    }

    #[test]
    fn libfuzzer_lines() {
        assert_eq!(
            done_runs("Done 1234567 runs in 61 second(s)"),
            Some(1_234_567)
        );
        assert_eq!(done_runs("#1024 pulse cov: 1 ft: 2"), None);
    }
}
