//! Validation as a feature: a modelled run beside the measured run whose scenario it re-ran,
//! per (variant, target): pull p50 and p95, time until all pods were ready, registry bytes per
//! burst and peak registry egress (100 ms buckets), with the model's error in percent of the
//! measurement. Measured values over several repetitions are their median (bytes: mean).
//!
//! Only reads results; the model is never tuned from here.

use std::fmt::Write as _;
use std::time::Duration;

use crate::report::capacity::registry_series;
use crate::report::human;
use crate::result::{quantile_with_failures, RunResult, SeriesResult};
use crate::run::recorder::Phase;

use super::Profile;

/// File the table is written to next to the modelled result.
pub const FILE_NAME: &str = "against.md";

/// Errors above this many percent are flagged in the table (times and peak egress).
pub const TOLERANCE_PERCENT: f64 = 15.0;
/// Errors above this many percent of registry bytes are flagged: the bar for bytes,
/// which the model counts rather than times.
pub const BYTES_TOLERANCE_PERCENT: f64 = 2.0;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    PullP50,
    PullP95,
    /// Time until every pod was ready.
    AllReady,
    /// Registry body bytes per burst.
    RegistryBytes,
    /// Highest registry egress over one 100 ms bucket.
    PeakEgress,
}

impl Metric {
    /// As the table names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PullP50 => "pull p50",
            Self::PullP95 => "pull p95",
            Self::AllReady => "all ready",
            Self::RegistryBytes => "registry bytes",
            Self::PeakEgress => "peak egress",
        }
    }

    /// Whether an error of `percent` is beyond this metric's tolerance.
    pub fn misses(self, percent: f64) -> bool {
        let tolerance = match self {
            Self::RegistryBytes => BYTES_TOLERANCE_PERCENT,
            _ => TOLERANCE_PERCENT,
        };
        percent.abs() > tolerance
    }

    /// A value of this metric, with its unit.
    pub fn show(self, v: f64) -> String {
        match self {
            Self::PullP50 | Self::PullP95 | Self::AllReady => {
                human::duration(Duration::from_secs_f64(v.max(0.0)))
            }
            Self::RegistryBytes => human::bytes(v.max(0.0) as u64),
            Self::PeakEgress => human::bandwidth(v),
        }
    }
}

/// One comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub variant: String,
    pub target: String,
    pub metric: Metric,
    /// The model's value (seconds, bytes, or bytes per second).
    pub model: Option<f64>,
    pub measured: Option<f64>,
}

impl Row {
    /// `(model - measured) / measured`, in percent.
    pub fn error_percent(&self) -> Option<f64> {
        let (m, x) = (self.model?, self.measured?);
        (x > 0.0).then(|| (m - x) / x * 100.0)
    }

    /// A value of this row with its unit, `-` when there is none.
    pub fn show(&self, v: Option<f64>) -> String {
        v.map_or_else(|| "-".to_owned(), |v| self.metric.show(v))
    }

    /// The error (`+3.0 %`), marked `**!**` beyond the metric's tolerance.
    pub fn error_text(&self) -> Option<String> {
        self.error_percent().map(|e| {
            let mark = if self.metric.misses(e) { " **!**" } else { "" };
            format!("{e:+.1} %{mark}")
        })
    }
}

/// The measured run's machine: `2 cores, AMD EPYC`.
pub fn machine(measured: &RunResult) -> String {
    let m = &measured.machine;
    let cpu = m.cpu_model.as_deref().unwrap_or("unknown CPU");
    format!("{} cores, {cpu}", m.cores)
}

/// Every row for the series both results have.
pub fn rows(model: &RunResult, measured: &RunResult) -> Vec<Row> {
    let mut out = Vec::new();
    for s in &measured.series {
        let Some(m) = model.series(&s.variant, &s.target) else {
            continue;
        };
        for metric in [
            Metric::PullP50,
            Metric::PullP95,
            Metric::AllReady,
            Metric::RegistryBytes,
            Metric::PeakEgress,
        ] {
            out.push(Row {
                variant: s.variant.clone(),
                target: s.target.clone(),
                metric,
                model: value(m, metric),
                measured: value(s, metric),
            });
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn value(s: &SeriesResult, metric: Metric) -> Option<f64> {
    let reps = s.data.repetitions();
    match metric {
        Metric::PullP50 | Metric::PullP95 => {
            let q = if metric == Metric::PullP50 { 0.5 } else { 0.95 };
            median(
                reps.filter_map(|(_, r)| {
                    quantile_with_failures(r.phase(Phase::Pull), r.failed_pods(), q)
                })
                .map(|d| d.as_secs_f64())
                .collect(),
            )
        }
        Metric::AllReady => median(
            reps.filter_map(|(_, r)| r.timeline(s.pods_per_repetition).time_to(1.0))
                .map(|d| d.as_secs_f64())
                .collect(),
        ),
        Metric::RegistryBytes => {
            let n = s.registry.len();
            (n > 0).then(|| s.registry.values().map(|t| t.bytes_out as f64).sum::<f64>() / n as f64)
        }
        Metric::PeakEgress => median(
            s.registry
                .values()
                .filter_map(registry_series)
                .map(|t| {
                    let peak = t.bytes_out.iter().copied().max().unwrap_or(0);
                    peak as f64 * 1000.0 / t.bucket_ms.max(1) as f64
                })
                .collect(),
        ),
    }
}

/// The side-by-side table, with the profile and the measured run's machine named above it.
pub fn markdown(rows: &[Row], measured: &RunResult, profile: &Profile) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {}: model against measurement\n\nModel profile: `{}`. Measured on: {}, started {}. Error = (model - measured) / measured; rows beyond ±{TOLERANCE_PERCENT:.0} % (registry bytes: ±{BYTES_TOLERANCE_PERCENT:.0} %) are marked.\n",
        measured.scenario.name,
        profile.name,
        machine(measured),
        humantime::format_rfc3339_seconds(measured.started_at),
    );
    out.push_str("| variant | target | metric | model | measured | error |\n");
    out.push_str("| --- | --- | --- | --: | --: | --: |\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.variant,
            r.target,
            r.metric.name(),
            r.show(r.model),
            r.show(r.measured),
            r.error_text().unwrap_or_else(|| "-".to_owned())
        );
    }
    out
}
