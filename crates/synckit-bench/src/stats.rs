//! Measurement helpers: medians of repeated runs and a figure table.

use std::time::Duration;

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Items per second for `items` in `elapsed`.
pub fn rate(items: usize, elapsed: Duration) -> f64 {
    items as f64 / elapsed.as_secs_f64()
}

/// One line of a benchmark report.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What was measured, e.g. `sled: append`.
    pub name: String,
    /// The median, in `unit`.
    pub value: f64,
    /// The unit, e.g. `events/s` or `µs`.
    pub unit: &'static str,
    /// The baseline measured in the same run, in the same unit, if any.
    pub baseline: Option<f64>,
    /// A target the value must meet, as text (e.g. `>= 0.5x baseline`), checked by `ok`.
    pub target: Option<String>,
    /// Whether the target is met (`None` without a target).
    pub ok: Option<bool>,
}

/// Print figures as an aligned table; returns whether every target was met.
pub fn print_table(title: &str, figures: &[Figure]) -> bool {
    println!("\n{title}");
    println!(
        "{:<44} {:>14} {:<9} {:>14} {:>7}  target",
        "measure", "median", "unit", "baseline", "ratio"
    );
    let mut all_ok = true;
    for f in figures {
        let baseline = f.baseline.map_or(String::from("-"), |b| format!("{b:.0}"));
        let ratio = f
            .baseline
            .map_or(String::from("-"), |b| format!("{:.2}", f.value / b));
        let target = match (&f.target, f.ok) {
            (Some(t), Some(true)) => format!("{t} ok"),
            (Some(t), Some(false)) => {
                all_ok = false;
                format!("{t} MISSED")
            }
            _ => String::new(),
        };
        println!(
            "{:<44} {:>14.1} {:<9} {:>14} {:>7}  {target}",
            f.name, f.value, f.unit, baseline, ratio
        );
    }
    all_ok
}
