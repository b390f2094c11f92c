//! Project automation: `cargo xtask ci` is the one thing CI runs; `cargo xtask bench` runs
//! benchmarks; `cargo xtask fuzz` runs the fuzz targets.

mod bench;
mod ci;
mod fuzz;
mod headers;
mod layering;
mod workspace;

use std::process::ExitCode;

const HELP: &str = "\
cargo xtask <command>

Commands:
  ci              Run every CI step in order and stop at the first failure:
                  fmt, clippy, tests (+ doctests), docs, layering, file headers, quickstart.
  bench <name>    Run one benchmark (see the list it prints).
  fuzz [--seconds N] [--target NAME]
                  Run each cargo-fuzz target of fuzz/ on its corpus for N seconds (default 60)
                  and fail on a crash, hang or oversized allocation, printing the artifact and
                  the command that reproduces it. Needs nightly and cargo-fuzz (docs/FUZZING.md).
  help            Show this help.

Single CI steps (for local use; `ci` runs them all):
  check-layering  Check the crate dependency rules of DESIGN.md with `cargo tree`.
  check-headers   Check that every .rs file starts with a `//!` line.
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace::root();
    let result = match args.first().map(String::as_str) {
        Some("ci") if args.len() == 1 => ci::run(&root),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("check-layering") if args.len() == 1 => layering::check(&root),
        Some("check-headers") if args.len() == 1 => headers::check(&root),
        Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(())
        }
        None => {
            eprint!("{HELP}");
            return ExitCode::FAILURE;
        }
        Some(_) => {
            eprintln!("xtask: unknown command or arguments {:?}\n", args.join(" "));
            eprint!("{HELP}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nxtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
