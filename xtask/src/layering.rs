//! The crate layering rules of DESIGN.md, checked on `cargo tree` output.
//!
//! Only normal dependencies count (dev-dependencies may cross layers: a transport's tests may use
//! a store), transitively, on every target platform and with every feature enabled.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, bail};

use crate::workspace;

/// What `synckit-types` must never pull in: async runtimes, network and database crates.
const TYPES_FORBIDDEN: &[&str] = &[
    "tokio",
    "mio",
    "hyper",
    "reqwest",
    "sled",
    "rusqlite",
    "libsqlite3-sys",
    "tokio-postgres",
    "postgres",
    "sqlx",
    "tungstenite",
    "async-std",
    "smol",
];

/// Engine crates that see stores and transports only as `Arc<dyn Trait>`.
const ENGINES: &[&str] = &[
    "synckit-node",
    "synckit-resolve",
    "synckit-buffer",
    "synckit-coordinator",
];

const STORE_PREFIX: &str = "synckit-store-";
const TRANSPORT_PREFIX: &str = "synckit-transport-";

/// Check every rule on the crates that exist; print one line per crate checked.
pub fn check(root: &Path) -> Result<()> {
    let names = workspace::crate_names(root)?;
    for engine in ENGINES {
        if !names.iter().any(|n| n == engine) {
            println!("  {engine}: not in the workspace yet, skipped");
        }
    }
    let mut problems = Vec::new();
    for name in &names {
        if !has_rules(name) {
            continue;
        }
        let deps = normal_dependencies(root, name)?;
        let found = violations(name, &deps);
        if found.is_empty() {
            println!("  {name}: ok ({} normal dependencies)", deps.len());
        } else {
            println!("  {name}: {} problem(s)", found.len());
        }
        problems.extend(found);
    }
    if !problems.is_empty() {
        bail!(
            "layering rules broken (see DESIGN.md, crate map):\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

fn has_rules(name: &str) -> bool {
    name == "synckit-types"
        || name.starts_with(STORE_PREFIX)
        || name.starts_with(TRANSPORT_PREFIX)
        || ENGINES.contains(&name)
}

/// The names of every crate `package` depends on through normal edges, transitively.
fn normal_dependencies(root: &Path, package: &str) -> Result<BTreeSet<String>> {
    let mut command = workspace::cargo(root);
    command.args([
        "tree",
        "--quiet",
        "--edges",
        "normal",
        "--prefix",
        "none",
        "--all-features",
        "--target",
        "all",
        "--package",
        package,
    ]);
    let text = workspace::output(&mut command)?;
    Ok(parse_tree(&text, package))
}

/// Crate names from `cargo tree --prefix none` lines (`name vX.Y.Z (path) (*)`), without `root`.
fn parse_tree(text: &str, root: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != root)
        .map(str::to_owned)
        .collect()
}

/// The rules `package` breaks with its dependency set `deps`, one message each.
fn violations(package: &str, deps: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for dep in deps {
        let reason = if package == "synckit-types" && TYPES_FORBIDDEN.contains(&dep.as_str()) {
            Some("synckit-types has no runtime, network or database dependency")
        } else if (package.starts_with(STORE_PREFIX) && dep.starts_with(TRANSPORT_PREFIX))
            || (package.starts_with(TRANSPORT_PREFIX) && dep.starts_with(STORE_PREFIX))
        {
            Some("stores and transports never depend on each other")
        } else if ENGINES.contains(&package)
            && (dep.starts_with(STORE_PREFIX) || dep.starts_with(TRANSPORT_PREFIX))
        {
            Some("engines see stores and transports only as Arc<dyn Trait>")
        } else {
            None
        };
        if let Some(reason) = reason {
            found.push(format!("{package} depends on {dep}: {reason}"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn parses_cargo_tree_lines() {
        let text = "synckit-types v0.1.0 (/w/crates/synckit-types)\nserde v1.0.1\nserde_derive v1.0.1 (proc-macro)\nserde v1.0.1 (*)\n";
        assert_eq!(
            parse_tree(text, "synckit-types"),
            set(&["serde", "serde_derive"])
        );
    }

    #[test]
    fn each_rule_can_fail() {
        assert_eq!(
            violations("synckit-types", &set(&["serde", "mio"])).len(),
            1
        );
        assert!(violations("synckit-types", &set(&["serde", "uuid"])).is_empty());
        assert_eq!(
            violations(
                "synckit-store-sled",
                &set(&["sled", "synckit-transport-http"])
            )
            .len(),
            1
        );
        assert_eq!(
            violations("synckit-transport-memory", &set(&["synckit-store-memory"])).len(),
            1
        );
        assert!(
            violations(
                "synckit-transport-memory",
                &set(&["tokio", "synckit-types"])
            )
            .is_empty()
        );
        assert_eq!(
            violations(
                "synckit-node",
                &set(&[
                    "synckit-store-memory",
                    "synckit-transport-memory",
                    "synckit-resolve"
                ])
            )
            .len(),
            2
        );
        // Crates without rules (the facade, the testkit) may depend on anything.
        assert!(violations("synckit", &set(&["synckit-store-memory", "tokio"])).is_empty());
    }
}
