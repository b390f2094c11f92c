//! `synckit-bench`: the benchmarks `cargo xtask bench <name>` runs, in release mode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark driver: a panic is a failed run.

mod buffer;
mod load;
mod net;
mod resolve;
mod stats;
mod stores;

use anyhow::{Result, bail};

/// mimalloc instead of the system allocator: the hub and nodes allocate many short-lived
/// buffers (request bodies, decoded events), where glibc's malloc spends its time in page
/// faults and free-list upkeep.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with its causes; a missed target is not a crash, so no backtrace.
            eprintln!("synckit-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        bail!(
            "usage: synckit-bench <benchmark> [--quick] [parts...]; benchmarks: stores, net, load, buffer, resolve"
        );
    };
    let quick = args.iter().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let only: Vec<&str> = args[1..]
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    match name.as_str() {
        "stores" => runtime.block_on(stores::run(quick, &only)),
        "buffer" => runtime.block_on(buffer::run(quick, &only)),
        "net" => runtime.block_on(net::run(quick, &only)),
        "load" => runtime.block_on(load::run(quick)),
        // Its own current-thread runtime: it measures one core.
        "resolve" => resolve::run(quick),
        other => {
            bail!("no benchmark named {other:?}; available: stores, net, load, buffer, resolve")
        }
    }
}
