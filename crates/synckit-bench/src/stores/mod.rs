//! `stores`: append and full-scan throughput of each storage backend beside its raw baseline,
//! and page-read and head cost with a large log.

mod postgres;
mod sled;
mod sqlite;

pub(crate) use sled::raw_sled;

use anyhow::Result;
use serde_json::json;
use synckit_types::{Event, Hlc};

use crate::stats::{Figure, print_table};

/// The shape of the workload, shared by every backend.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    /// Events appended per measured run.
    pub events: usize,
    /// Events per append batch.
    pub batch: usize,
    /// Bytes of payload per event (a JSON string of this length).
    pub payload: usize,
    /// Measured runs per figure (the median is reported).
    pub runs: usize,
    /// Log size for the page-read and head measurements.
    pub scale_events: usize,
}

impl Workload {
    /// The full workload, or a small one for a smoke run.
    pub fn new(quick: bool) -> Workload {
        if quick {
            Workload {
                events: 20_000,
                batch: 1_000,
                payload: 200,
                runs: 1,
                scale_events: 50_000,
            }
        } else {
            Workload {
                events: 200_000,
                batch: 1_000,
                payload: 200,
                runs: 5,
                scale_events: 1_000_000,
            }
        }
    }

    /// The events of batch `index`: unique ids, 10 aggregates, append-only.
    pub fn batch(&self, index: usize) -> Vec<Event> {
        let filler = "x".repeat(self.payload);
        (0..self.batch)
            .map(|i| {
                let n = index * self.batch + i;
                Event::builder("Measured", format!("agg-{}", n % 10))
                    .id(format!("evt-{n:012}"))
                    .origin("bench")
                    .hlc(Hlc::new(1_700_000_000_000 + n as u64, 0))
                    .data(json!(filler))
                    .build()
                    .expect("benchmark events are valid")
            })
            .collect()
    }

    /// Number of batches in one run.
    pub fn batches(&self) -> usize {
        self.events.div_ceil(self.batch)
    }
}

/// The backends, by the names `cargo xtask bench stores [name...]` selects them with.
const BACKENDS: &[&str] = &["sled", "sqlite", "postgres"];

/// Run the benchmark of each backend in `only` (every backend when empty) and print the figures.
pub async fn run(quick: bool, only: &[&str]) -> Result<()> {
    if let Some(unknown) = only.iter().find(|n| !BACKENDS.contains(n)) {
        anyhow::bail!(
            "no store named {unknown:?}; available: {}",
            BACKENDS.join(", ")
        );
    }
    let wanted = |name: &str| only.is_empty() || only.contains(&name);
    let workload = Workload::new(quick);
    println!(
        "stores: {} events per run in batches of {}, {}-byte payloads, {} run(s), median reported",
        workload.events, workload.batch, workload.payload, workload.runs
    );
    let mut figures: Vec<Figure> = Vec::new();
    if wanted("sled") {
        figures.extend(sled::bench(&workload).await?);
    }
    if wanted("sqlite") {
        figures.extend(sqlite::bench(&workload).await?);
    }
    if wanted("postgres") {
        figures.extend(postgres::bench(&workload).await?);
    }
    let ok = print_table("stores", &figures);
    if !ok {
        anyhow::bail!("a target was missed");
    }
    Ok(())
}
