//! `cargo xtask bench <name>`: the list of benchmarks and how each one runs.

use anyhow::{Result, bail};

use crate::workspace;

/// One benchmark: a `[[bench]]` target of a workspace package.
struct Bench {
    /// The name given to `cargo xtask bench`.
    name: &'static str,
    /// The package that holds the bench target.
    package: &'static str,
    /// The `[[bench]]` target name.
    target: &'static str,
    /// One line on what it measures.
    about: &'static str,
}

/// Every benchmark; later work adds entries here and describes them in docs/BENCHMARKS.md.
const BENCHES: &[Bench] = &[];

/// Run the benchmark named by the single argument.
pub fn run(args: &[String]) -> Result<()> {
    let [name] = args else {
        bail!(
            "usage: cargo xtask bench <name>; available: {}",
            available()
        );
    };
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        bail!("no benchmark named {name} yet; available: {}", available());
    };
    println!("==> bench {}: {}", bench.name, bench.about);
    let root = workspace::root();
    let mut command = workspace::cargo(&root);
    command.args([
        "bench",
        "--locked",
        "--package",
        bench.package,
        "--bench",
        bench.target,
    ]);
    workspace::run(&mut command)
}

fn available() -> String {
    if BENCHES.is_empty() {
        return "(none)".to_owned();
    }
    BENCHES
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}
