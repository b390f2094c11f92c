//! `cargo xtask bench resolve`: decisions per second of a 100-rule resolver on one core, and
//! the time to load a 1,000-rule file, in YAML and in JSON.
//!
//! The rules are built from a rules file, as applications write them, with a mix of the
//! condition kinds (event type; event type and aggregate glob; metadata; changed field). Each
//! conflict is aimed at one rule, uniformly, so on average half the rules are evaluated before
//! the one that matches; one in ten conflicts matches nothing and takes the global fallback.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use synckit_resolve::{CompositeResolver, Format, RulesLoader, StrategyRegistry};
use synckit_types::{Conflict, ConflictResolver, Event, Hlc, ResolutionContext, Seq, StoredEvent};

use crate::stats::{Figure, median, print_table};

/// Rules of the decision benchmark.
const DECISION_RULES: usize = 100;
/// Rules of the load benchmark.
const LOAD_RULES: usize = 1_000;
/// Distinct conflicts cycled through (built up front, so only deciding is timed).
const CONFLICTS: usize = 1_000;

/// The rules file with `rules` rules, ten per group, in YAML.
fn rules_yaml(rules: usize) -> String {
    let mut out =
        String::from("version: 1\nname: bench\nsettings:\n  default_fallback: lww\ngroups:\n");
    for group in 0..rules.div_ceil(10) {
        let _ = write!(out, "  - name: g{group}\n    rules:\n");
        for i in group * 10..((group + 1) * 10).min(rules) {
            let _ = write!(out, "      - name: r{i}\n        conditions:\n");
            match i % 4 {
                0 => {
                    let _ = writeln!(out, "          event_types: [K{i}, Other{i}]");
                }
                1 => {
                    let _ = writeln!(out, "          event_types: [K{i}]");
                    let _ = writeln!(out, "          aggregate_ids: [\"agg-{i}-*\"]");
                }
                2 => {
                    let _ = writeln!(out, "          metadata:\n            role: [\"r{i}\"]");
                }
                _ => {
                    let _ = writeln!(out, "          changed_fields: [f{i}]");
                }
            }
            let strategy = ["lww", "fww", "merge", "review"][i % 4];
            let _ = writeln!(out, "        strategy: {strategy}");
        }
    }
    out
}

/// The same rules as [`rules_yaml`], in JSON.
fn rules_json(rules: usize) -> String {
    let groups: Vec<_> = (0..rules.div_ceil(10))
        .map(|group| {
            let rules: Vec<_> = (group * 10..((group + 1) * 10).min(rules))
                .map(|i| {
                    let conditions = match i % 4 {
                        0 => json!({ "event_types": [format!("K{i}"), format!("Other{i}")] }),
                        1 => json!({
                            "event_types": [format!("K{i}")],
                            "aggregate_ids": [format!("agg-{i}-*")],
                        }),
                        2 => json!({ "metadata": { "role": [format!("r{i}")] } }),
                        _ => json!({ "changed_fields": [format!("f{i}")] }),
                    };
                    let strategy = ["lww", "fww", "merge", "review"][i % 4];
                    json!({ "name": format!("r{i}"), "conditions": conditions, "strategy": strategy })
                })
                .collect();
            json!({ "name": format!("g{group}"), "rules": rules })
        })
        .collect();
    json!({
        "version": 1,
        "name": "bench",
        "settings": { "default_fallback": "lww" },
        "groups": groups,
    })
    .to_string()
}

fn event(
    id: String,
    kind: String,
    aggregate: &str,
    data: serde_json::Value,
    role: &str,
    hlc: u64,
) -> Event {
    Event::builder(kind, aggregate)
        .id(id)
        .origin(if hlc.is_multiple_of(2) { "a" } else { "b" })
        .hlc(Hlc::new(hlc, 0))
        .data(data)
        .metadata("role", json!(role))
        .build()
        .expect("a valid benchmark event")
}

/// Conflict `n`, aimed at rule `n % (rules + rules / 9)`: indexes past the last rule match
/// nothing and take the fallback.
fn conflict(n: usize, rules: usize) -> Conflict {
    let target = n % (rules + rules / 9);
    let aggregate = format!("agg-{target}-{n}");
    let kind = format!("K{target}");
    let role = format!("r{target}");
    let field = format!("f{target}");
    let local = event(
        format!("l{n}"),
        kind.clone(),
        &aggregate,
        json!({ field.clone(): 1, "same": true }),
        &role,
        1_000 + n as u64,
    );
    let remote = event(
        format!("r{n}"),
        kind,
        &aggregate,
        json!({ field: 2, "same": true }),
        &role,
        2_000 + (n as u64 * 7) % 1_000,
    );
    Conflict {
        aggregate_id: local.aggregate_id.clone(),
        base_version: 1,
        current_version: 2,
        local: vec![local],
        remote: vec![StoredEvent {
            event: remote,
            seq: Seq(2),
            aggregate_version: 2,
            recorded_at: 0,
        }],
    }
}

/// Decisions per second of `resolver` over `conflicts` for `budget`, on this one thread.
async fn decisions_per_second(
    resolver: &CompositeResolver,
    conflicts: &[Conflict],
    budget: Duration,
) -> Result<f64> {
    let context = ResolutionContext::default();
    let started = Instant::now();
    let mut decided = 0usize;
    while started.elapsed() < budget {
        for conflict in conflicts {
            resolver.resolve(conflict, &context).await?;
        }
        decided += conflicts.len();
    }
    Ok(decided as f64 / started.elapsed().as_secs_f64())
}

/// Run the benchmark: decisions on one core, then file loads.
pub fn run(quick: bool) -> Result<()> {
    let loader = RulesLoader::new(StrategyRegistry::new());
    let resolver = loader
        .load_str(&rules_yaml(DECISION_RULES), Format::Yaml)
        .context("building the 100-rule resolver")?;
    let conflicts: Vec<Conflict> = (0..CONFLICTS)
        .map(|n| conflict(n, DECISION_RULES))
        .collect();

    // One core: a current-thread runtime on this thread, nothing else scheduled on it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let budget = Duration::from_millis(if quick { 200 } else { 2_000 });
    let runs = if quick { 1 } else { 3 };
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(runtime.block_on(decisions_per_second(&resolver, &conflicts, budget))?);
    }
    let stats = resolver.group_stats();
    let fallbacks: u64 = stats.iter().map(|(_, s)| s.fallbacks).sum();
    let matched: u64 = stats.iter().map(|(_, s)| s.rule_matches).sum();
    println!("decisions: {matched} by a rule, {fallbacks} by the fallback");

    // Loading: the whole path from text to a resolver, as a node does at start.
    let yaml = rules_yaml(LOAD_RULES);
    let json = rules_json(LOAD_RULES);
    let loads = if quick { 3 } else { 9 };
    let load_ms = |text: &str, format: Format| -> Result<f64> {
        let mut times = Vec::new();
        for _ in 0..loads {
            let started = Instant::now();
            let loaded = loader.load_str(text, format)?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(
                loaded.rule_names().len() == LOAD_RULES,
                "rules went missing"
            );
        }
        Ok(median(&times))
    };
    let yaml_ms = load_ms(&yaml, Format::Yaml)?;
    let json_ms = load_ms(&json, Format::Json)?;
    // Both formats build the same rule set.
    let (a, b) = (
        loader.load_str(&yaml, Format::Yaml)?,
        loader.load_str(&json, Format::Json)?,
    );
    anyhow::ensure!(
        a.describe() == b.describe(),
        "YAML and JSON built different resolvers"
    );

    let per_second = median(&rates);
    let figures = vec![
        Figure {
            name: format!("{DECISION_RULES}-rule resolver, one core"),
            value: per_second,
            unit: "dec/s",
            baseline: None,
            target: Some(">= 1000000".into()),
            ok: Some(per_second >= 1_000_000.0),
        },
        Figure {
            name: format!(
                "load {LOAD_RULES}-rule file (YAML, {} KiB)",
                yaml.len() / 1024
            ),
            value: yaml_ms,
            unit: "ms",
            baseline: None,
            target: Some("< 50".into()),
            ok: Some(yaml_ms < 50.0),
        },
        Figure {
            name: format!(
                "load {LOAD_RULES}-rule file (JSON, {} KiB)",
                json.len() / 1024
            ),
            value: json_ms,
            unit: "ms",
            baseline: None,
            target: Some("< 50".into()),
            ok: Some(json_ms < 50.0),
        },
    ];
    if !print_table("resolve", &figures) {
        anyhow::bail!("a target was missed");
    }
    Ok(())
}
