//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

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
    Ok(())
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
    if nextest_available(root) {
        run_cargo(
            root,
            &[
                "nextest",
                "run",
                "--workspace",
                "--all-features",
                "--locked",
            ],
        )?;
        run_cargo(
            root,
            &["test", "--doc", "--workspace", "--all-features", "--locked"],
        )
    } else {
        println!("    (cargo-nextest not found; using cargo test)");
        run_cargo(root, &["test", "--workspace", "--all-features", "--locked"])
    }
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
