//! One table for `./build.sh bench`. Besides its own report, every benchmark prints its headline
//! figures as lines of tab-separated fields:
//!
//! `FIGURE <bench> <figure> <value> <unit> <baseline> <baseline value>`
//!
//! (the API's sync benchmark and discovery's re-announce benchmark, which live with their
//! crates, print the same lines). `clinicbox-bench table LOG` reads them back from the run's
//! log and prints them together, each with its ratio to the baseline measured in the same run.

use std::path::Path;

/// The first field of a figure line.
const PREFIX: &str = "FIGURE";

/// Prints one figure line.
pub fn figure(bench: &str, name: &str, value: f64, unit: &str, baseline: &str, base: f64) {
    println!("{PREFIX}\t{bench}\t{name}\t{value:.3}\t{unit}\t{baseline}\t{base:.3}");
}

/// One figure read back.
#[derive(Debug, PartialEq)]
struct Row {
    bench: String,
    name: String,
    value: f64,
    unit: String,
    baseline: String,
    base: f64,
}

fn parse(line: &str) -> Option<Row> {
    let f: Vec<&str> = line.trim_end().split('\t').collect();
    match f.as_slice() {
        [PREFIX, bench, name, value, unit, baseline, base] => Some(Row {
            bench: bench.to_string(),
            name: name.to_string(),
            value: value.parse().ok()?,
            unit: unit.to_string(),
            baseline: baseline.to_string(),
            base: base.parse().ok()?,
        }),
        _ => None,
    }
}

/// Prints every figure line of `log` as one table.
pub fn table(log: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(log)?;
    let rows: Vec<Row> = text.lines().filter_map(parse).collect();
    anyhow::ensure!(!rows.is_empty(), "no figures in {}", log.display());
    println!("\nAll benchmarks: each figure next to its baseline, measured in the same run");
    println!(
        "{:<10} {:<46} {:>12} {:<8} {:<34} {:>12} {:>7}",
        "bench", "figure", "value", "unit", "baseline", "baseline", "ratio"
    );
    for r in rows {
        println!(
            "{:<10} {:<46} {:>12.2} {:<8} {:<34} {:>12.2} {:>7.2}",
            r.bench,
            r.name,
            r.value,
            r.unit,
            r.baseline,
            r.base,
            r.value / r.base.max(f64::MIN_POSITIVE)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_lines_are_read_back_and_other_lines_ignored() {
        let line = "FIGURE\tstore\twrites, 16 writers\t1500.000\trec/s\tSQLite (WAL)\t1000.000";
        assert_eq!(
            parse(line),
            Some(Row {
                bench: "store".into(),
                name: "writes, 16 writers".into(),
                value: 1500.0,
                unit: "rec/s".into(),
                baseline: "SQLite (WAL)".into(),
                base: 1000.0,
            })
        );
        assert_eq!(parse("ratio clinicbox-store / SQLite: 1.50"), None);
        assert_eq!(parse("FIGURE\tstore\tx\tnot a number\tu\tb\t1"), None);
    }
}
