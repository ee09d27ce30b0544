//! Validation across sizes: one scenario measured at several node counts (4, 8, 16, 24 nodes),
//! each run modelled again (`model --against A --against B ...`), and one table that sets the
//! model's error per target and metric side by side across the sizes, so a reader sees whether
//! the model holds as the fleet grows, not just at one size. Cells and tolerances are
//! [`against`](super::against)'s; this file only lays them out, with the measured host's CPU
//! share per size (a host near 100 % busy measured this machine, not the links).

use std::fmt::Write as _;

use crate::result::RunResult;

use super::against::{self, Row};
use super::Profile;

/// File the table is written to, in the `--out` directory.
pub const FILE_NAME: &str = "scaling.md";

/// One measured run and its model.
#[derive(Debug, Clone)]
pub struct Column {
    /// Nodes of the measured run.
    pub nodes: u32,
    /// Model against measurement, per (variant, target, metric).
    pub rows: Vec<Row>,
    /// Mean share of the host's CPUs busy during the measured bursts, 0..=1.
    pub host_busy: Option<f64>,
    /// When the measured run started, and its machine.
    pub measured_on: String,
}

impl Column {
    /// The column for `measured` and the model of its scenario.
    pub fn new(measured: &RunResult, modelled: &RunResult) -> Self {
        let busy: Vec<f64> = measured
            .series
            .iter()
            .flat_map(|s| s.registry.values())
            .filter_map(|t| t.cpu.map(|c| c.host_busy))
            .collect();
        Self {
            nodes: measured.scenario.total_nodes(),
            rows: against::rows(modelled, measured),
            host_busy: (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64),
            measured_on: format!(
                "{}, {}",
                against::machine(measured),
                humantime::format_rfc3339_seconds(measured.started_at)
            ),
        }
    }
}

/// The table: one line per (variant, target, metric), one column per size; each cell
/// `model / measured (error)`, marked beyond the metric's tolerance.
pub fn markdown(columns: &[Column], profile: &Profile) -> String {
    let mut out = String::new();
    let sizes: Vec<String> = columns
        .iter()
        .map(|c| format!("{} nodes", c.nodes))
        .collect();
    let _ = writeln!(
        out,
        "# Model against measurement at {}\n\nModel profile: `{}`. Each cell: model / measured (error = (model - measured) / measured); beyond ±{:.0} % (registry bytes: ±{:.0} %) marked **!**. Measured runs:\n",
        sizes.join(", "),
        profile.name,
        against::TOLERANCE_PERCENT,
        against::BYTES_TOLERANCE_PERCENT,
    );
    for c in columns {
        let busy = c
            .host_busy
            .map_or_else(|| "-".to_owned(), |b| format!("{:.0} %", b * 100.0));
        let _ = writeln!(
            out,
            "- {} nodes: {}; host CPUs busy during the bursts: {busy}",
            c.nodes, c.measured_on
        );
    }
    let _ = writeln!(
        out,
        "\n| variant | target | metric | {} |",
        sizes.join(" | ")
    );
    let _ = writeln!(out, "| --- | --- | --- |{}", " --: |".repeat(columns.len()));
    let (mut within, mut cells) = (0, 0);
    let Some(first) = columns.first() else {
        return out;
    };
    for (k, r) in first.rows.iter().enumerate() {
        let mut line = format!("| {} | {} | {} |", r.variant, r.target, r.metric.name());
        for c in columns {
            let cell = c
                .rows
                .get(k)
                .filter(|x| x.variant == r.variant && x.target == r.target && x.metric == r.metric);
            let text = cell.map_or_else(|| "-".to_owned(), cell_text);
            if let Some(e) = cell.and_then(Row::error_percent) {
                cells += 1;
                within += usize::from(!r.metric.misses(e));
            }
            let _ = write!(line, " {text} |");
        }
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "\n{within} of {cells} cells within tolerance.");
    out
}

fn cell_text(r: &Row) -> String {
    let error = r
        .error_text()
        .map_or_else(String::new, |e| format!(" ({e})"));
    format!("{} / {}{error}", r.show(r.model), r.show(r.measured))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::against::Metric;

    fn row(target: &str, metric: Metric, model: f64, measured: f64) -> Row {
        Row {
            variant: "app".into(),
            target: target.into(),
            metric,
            model: Some(model),
            measured: Some(measured),
        }
    }

    #[test]
    fn cells_line_up_by_size_and_count_misses_by_each_metrics_tolerance() {
        let profile = Profile::parse(
            "name = \"p\"\n[node]\ncores = 2\nhash_rate = \"1GB/s\"\ndisk_write = \"1GB/s\"\nrequest_overhead = \"1ms\"\nstream_rate = \"1GB/s\"\n[unpack]\ngzip_decompress = \"1GB/s\"\nzstd_decompress = \"1GB/s\"\napply = \"1GB/s\"\n[cache]\nrequest_overhead = \"1ms\"\nstream_rate = \"1GB/s\"\nserve_rate = \"1GB/s\"\n",
            std::path::Path::new("p.toml"),
        )
        .unwrap();
        let column = |nodes, p50: f64, bytes: f64| Column {
            nodes,
            rows: vec![
                row("direct", Metric::PullP50, p50, 10.0),
                row("direct", Metric::RegistryBytes, bytes, 100.0),
            ],
            host_busy: Some(0.5),
            measured_on: "2 cores".into(),
        };
        let table = markdown(&[column(4, 11.0, 101.0), column(8, 12.0, 103.0)], &profile);
        assert!(
            table.contains("| variant | target | metric | 4 nodes | 8 nodes |"),
            "{table}"
        );
        // +10 % on a time is within 15 %; +20 % is not; +3 % on bytes is beyond 2 %.
        assert!(table.contains("(+10.0 %) | "), "{table}");
        assert!(table.contains("(+20.0 % **!**)"), "{table}");
        assert!(table.contains("(+3.0 % **!**)"), "{table}");
        assert!(table.contains("2 of 4 cells within tolerance"), "{table}");
        assert!(
            table.contains("host CPUs busy during the bursts: 50 %"),
            "{table}"
        );
    }
}
