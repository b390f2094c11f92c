//! Where the workspace is, how to call cargo, and which crates it holds.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The workspace root: the parent of this crate's directory.
pub fn root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// A `cargo` command run in the workspace root, with the caller's environment.
///
/// Uses the cargo that runs the xtask (`$CARGO`) so every step uses the same toolchain.
/// Standard input is closed: cargo probes the compiler with `rustc -`, and a CI harness that
/// leaves text on our stdin once fed it to that probe and failed the build.
pub fn cargo(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(root).stdin(Stdio::null());
    command
}

/// Render a command as a shell-like line for headers and error messages.
pub fn display(command: &Command) -> String {
    let mut line = String::from("cargo");
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Run `command` with inherited stdio; fail with the command line and its status.
pub fn run(command: &mut Command) -> Result<()> {
    let line = display(command);
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Run `command` and return its standard output; fail with its standard error.
pub fn output(command: &mut Command) -> Result<String> {
    let line = display(command);
    let out = command
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed invalid UTF-8"))
}

/// The package names of the crates under `crates/`, sorted.
///
/// Read from each `crates/*/Cargo.toml` (the `name` of its `[package]` table), so crates that do
/// not compile yet still count.
pub fn crate_names(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("crates");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let manifest = entry?.path().join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        let name = package_name(&text)
            .with_context(|| format!("{} has no [package] name", manifest.display()))?;
        names.push(name);
    }
    names.sort();
    Ok(names)
}

/// The `name` of the `[package]` table of a manifest, read line by line (no TOML parser needed
/// for the one-line form every crate here uses).
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
            continue;
        }
        if !in_package {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim() == "name"
        {
            return Some(value.trim().trim_matches('"').to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_package_name() {
        let manifest = "[workspace]\nname = \"no\"\n\n[package]\nversion = \"1\"\nname = \"synckit-x\"\n\n[dependencies]\nname = \"no\"\n";
        assert_eq!(package_name(manifest).as_deref(), Some("synckit-x"));
        assert_eq!(package_name("[dependencies]\nname = \"x\"\n"), None);
    }
}
