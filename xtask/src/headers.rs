//! The file-header rule: every Rust file opens with a `//!` line saying what it is for.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Directories searched for `.rs` files, relative to the workspace root.
const ROOTS: &[&str] = &["crates", "xtask", "tests", "fuzz"];

/// Check every `.rs` file under [`ROOTS`]; list the offenders.
pub fn check(root: &Path) -> Result<()> {
    let mut files = Vec::new();
    for dir in ROOTS {
        collect_rust_files(&root.join(dir), &mut files)?;
    }
    files.sort();
    let mut offenders = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        if !has_header(&text) {
            offenders.push(
                file.strip_prefix(root)
                    .unwrap_or(file)
                    .display()
                    .to_string(),
            );
        }
    }
    if !offenders.is_empty() {
        bail!(
            "{} of {} .rs files do not start with a `//!` line saying what they are for:\n  {}",
            offenders.len(),
            files.len(),
            offenders.join("\n  ")
        );
    }
    println!("  {} .rs files, each starts with `//!`", files.len());
    Ok(())
}

/// Whether the first non-blank line of `text` is an inner doc comment.
fn has_header(text: &str) -> bool {
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .is_some_and(|line| line.starts_with("//!"))
}

/// Every `.rs` file below `dir`, skipping build output (`target`) and hidden directories.
fn collect_rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if name != "target" && !name.starts_with('.') {
                collect_rust_files(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_the_first_non_blank_line() {
        assert!(has_header("//! What this is.\nfn main() {}\n"));
        assert!(has_header("\n  \n//! After blank lines.\n"));
        assert!(!has_header("// A plain comment.\n//! Too late.\n"));
        assert!(!has_header("#![allow(dead_code)]\n//! Too late.\n"));
        assert!(!has_header("/// An outer doc comment.\nfn f() {}\n"));
        assert!(!has_header(""));
    }
}
