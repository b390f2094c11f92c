//! The sled backend's figures: store append and scan beside the raw sled baseline, page and head cost.

use anyhow::Result;

use super::Workload;
use crate::stats::Figure;

/// Measure the sled store against raw sled.
pub async fn bench(workload: &Workload) -> Result<Vec<Figure>> {
    let _ = workload;
    anyhow::bail!("the sled benchmark is not written yet")
}
