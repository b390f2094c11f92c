//! `synckit-bench`: the benchmarks `cargo xtask bench <name>` runs, in release mode.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark driver: a panic is a failed run.

mod stats;
mod stores;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(name) = args.first() else {
        bail!("usage: synckit-bench <benchmark> [--quick]; benchmarks: stores");
    };
    let quick = args.iter().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match name.as_str() {
        "stores" => runtime.block_on(stores::run(quick)),
        other => bail!("no benchmark named {other:?}; available: stores"),
    }
}
