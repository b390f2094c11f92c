//! The sqlite backend's figures: store append and scan beside the raw sqlite baseline, page and head cost.

use anyhow::Result;

use super::Workload;
use crate::stats::Figure;

/// Measure the sqlite store against raw sqlite.
pub async fn bench(workload: &Workload) -> Result<Vec<Figure>> {
    let _ = workload;
    anyhow::bail!("the sqlite benchmark is not written yet")
}
