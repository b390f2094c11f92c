//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{headers, layering, workspace};

/// One CI step: a name for the header and the work.
struct Step {
    name: &'static str,
    run: fn(&Path) -> Result<()>,
}

const STEPS: &[Step] = &[
    Step {
        name: "format",
        run: format,
    },
    Step {
        name: "clippy",
        run: clippy,
    },
    Step {
        name: "tests",
        run: tests,
    },
    Step {
        name: "docs",
        run: docs,
    },
    Step {
        name: "layering",
        run: layering::check,
    },
    Step {
        name: "file headers",
        run: headers::check,
    },
    Step {
        name: "quickstart example",
        run: quickstart,
    },
];

/// Run every step; on failure, name the step and return its error.
pub fn run(root: &Path) -> Result<()> {
    let started = Instant::now();
    for (index, step) in STEPS.iter().enumerate() {
        let number = index + 1;
        println!("\n==> [{number}/{}] {}", STEPS.len(), step.name);
        let step_started = Instant::now();
        if let Err(error) = (step.run)(root) {
            println!(
                "\n==> ci FAILED at step {number}/{} ({}) after {}",
                STEPS.len(),
                step.name,
                elapsed(started.elapsed())
            );
            return Err(error.context(format!("ci step {number} ({}) failed", step.name)));
        }
        println!(
            "    {} ok in {}",
            step.name,
            elapsed(step_started.elapsed())
        );
    }
    println!(
        "\n==> ci passed: {} steps in {}",
        STEPS.len(),
        elapsed(started.elapsed())
    );
    // The plain closing line that CI reads to know tests ran.
    println!(
        "tests: {} passed, 0 failed",
        TESTS_PASSED.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Tests passed in the tests step (nextest or libtest, plus doctests).
static TESTS_PASSED: AtomicU64 = AtomicU64::new(0);

/// Run a command, echoing its output as it comes, and return everything it printed.
fn run_tee(mut command: Command) -> Result<String> {
    println!("    $ {}", workspace::display(&command));
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {}", workspace::display(&command)))?;
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let echo_err = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let mut seen = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            seen.push_str(&line);
            seen.push('\n');
        }
    }
    std::io::stdout().flush().ok();
    let status = child.wait()?;
    seen.push_str(&echo_err.join().unwrap_or_default());
    if !status.success() {
        bail!("{} failed with {status}", workspace::display(&command));
    }
    Ok(seen)
}

/// Sum the passed tests of libtest (`test result: ok. N passed; ...`) and nextest
/// (`Summary [...] N tests run: N passed`) closing lines.
fn count_passed(output: &str) -> u64 {
    output
        .lines()
        .filter(|line| line.contains("test result:") || line.contains("tests run:"))
        .filter_map(|line| {
            let before = line.split(" passed").next()?;
            before
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn elapsed(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// Print the command, then run it.
fn run_cargo(root: &Path, args: &[&str]) -> Result<()> {
    let mut command = workspace::cargo(root);
    command.args(args);
    run_command(command)
}

fn run_command(mut command: Command) -> Result<()> {
    println!("    $ {}", workspace::display(&command));
    workspace::run(&mut command)
}

fn format(root: &Path) -> Result<()> {
    run_cargo(root, &["fmt", "--all", "--", "--check"])
        .map_err(|e| e.context("formatting differs; run `cargo fmt --all`"))
}

fn clippy(root: &Path) -> Result<()> {
    run_cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )
}

/// Tests with cargo-nextest when it is installed (then doctests, which nextest does not run),
/// otherwise with `cargo test`, which runs both.
fn tests(root: &Path) -> Result<()> {
    let mut runs = Vec::new();
    if nextest_available(root) {
        runs.push(vec![
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--locked",
        ]);
        runs.push(vec![
            "test",
            "--doc",
            "--workspace",
            "--all-features",
            "--locked",
        ]);
    } else {
        println!("    (cargo-nextest not found; using cargo test)");
        runs.push(vec!["test", "--workspace", "--all-features", "--locked"]);
    }
    for args in runs {
        let mut command = workspace::cargo(root);
        command.args(&args);
        let output = run_tee(command)?;
        TESTS_PASSED.fetch_add(count_passed(&output), Ordering::SeqCst);
    }
    if TESTS_PASSED.load(Ordering::SeqCst) == 0 {
        bail!("the test runners reported no passed test");
    }
    Ok(())
}

fn nextest_available(root: &Path) -> bool {
    workspace::cargo(root)
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn docs(root: &Path) -> Result<()> {
    let mut flags = std::env::var("RUSTDOCFLAGS").unwrap_or_default();
    if !flags.is_empty() {
        flags.push(' ');
    }
    flags.push_str("-D warnings");
    let mut command = workspace::cargo(root);
    command
        .args([
            "doc",
            "--workspace",
            "--no-deps",
            "--all-features",
            "--locked",
        ])
        .env("RUSTDOCFLAGS", &flags);
    println!("    RUSTDOCFLAGS={flags:?}");
    run_command(command)
}

fn quickstart(root: &Path) -> Result<()> {
    let example = root.join("crates/synckit/examples/quickstart.rs");
    if !example.is_file() {
        println!("    skipped: crates/synckit/examples/quickstart.rs does not exist yet");
        return Ok(());
    }
    run_cargo(
        root,
        &[
            "run",
            "--locked",
            "--package",
            "synckit",
            "--example",
            "quickstart",
        ],
    )
    .map_err(|e| e.context("the facade's quickstart example failed"))
}

#[cfg(test)]
mod tests {
    use super::count_passed;

    #[test]
    fn counts_libtest_and_nextest_summaries() {
        let out = "test result: ok. 12 passed; 0 failed; 0 ignored\n\
                   Summary [   3.178s] 105 tests run: 105 passed, 0 skipped\n\
                   test result: ok. 0 passed; 0 failed\nrandom line with 7 passed\n";
        assert_eq!(count_passed(out), 117);
    }
}
