//! `cargo xtask bench <name> [--quick]`: runs a benchmark of `synckit-bench` in release mode.

use anyhow::{Result, bail};

use crate::workspace;

/// One benchmark of the `synckit-bench` binary.
struct Bench {
    /// The name given to `cargo xtask bench` and to `synckit-bench`.
    name: &'static str,
    /// One line on what it measures.
    about: &'static str,
}

/// Every benchmark; each is described in docs/BENCHMARKS.md.
const BENCHES: &[Bench] = &[
    Bench {
        name: "stores",
        about: "append and scan throughput of each store beside its raw backend; page and head \
                cost with a large log",
    },
    Bench {
        name: "buffer",
        about: "a buffered store: items/s from 4 producers into a no-op sink, into a sled event \
                store beside raw sled, and writer p99 latency while the sink is slow",
    },
    Bench {
        name: "net",
        about: "a `synckit serve` process on loopback: push and pull of 1M events beside raw \
                sled, memory push, subscriber latency and memory",
    },
    Bench {
        name: "load",
        about: "1,000 concurrent clients pushing and pulling for 60 s against one `synckit serve` \
                process: answers by status, request latency p50/p99, hub memory over time",
    },
    Bench {
        name: "resolve",
        about: "decisions per second of a 100-rule resolver on one core; loading a 1,000-rule \
                file in YAML and JSON",
    },
];

/// Run the benchmark named by the first argument; `--quick` runs a small smoke version.
pub fn run(args: &[String]) -> Result<()> {
    let Some(name) = args.first() else {
        bail!(
            "usage: cargo xtask bench <name> [--quick]; available: {}",
            available()
        );
    };
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        bail!("no benchmark named {name}; available: {}", available());
    };
    println!("==> bench {}: {}", bench.name, bench.about);
    let root = workspace::root();
    if bench.name == "net" || bench.name == "load" {
        // The hub runs as the real binary, built the same way.
        let mut build = workspace::cargo(&root);
        build.args(["build", "--release", "--locked", "--package", "synckit-cli"]);
        workspace::run(&mut build)?;
    }
    let mut command = workspace::cargo(&root);
    command.args([
        "run",
        "--release",
        "--locked",
        "--package",
        "synckit-bench",
        "--",
        bench.name,
    ]);
    command.args(&args[1..]);
    if std::env::var_os("SYNCKIT_TEST_POSTGRES_URL").is_none() {
        command.env(
            "SYNCKIT_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/test",
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), std::path::PathBuf::from);
    command.env("SYNCKIT_BIN", target.join("release").join("synckit"));
    workspace::run(&mut command)
}

fn available() -> String {
    BENCHES
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}
