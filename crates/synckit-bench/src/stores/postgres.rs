//! The postgres backend's figures: store append and scan beside the raw postgres baseline, page and head cost.

use anyhow::Result;

use super::Workload;
use crate::stats::Figure;

/// Measure the postgres store against raw postgres.
pub async fn bench(workload: &Workload) -> Result<Vec<Figure>> {
    let _ = workload;
    anyhow::bail!("the postgres benchmark is not written yet")
}
