//! One (variant, target) series in detail: latency per phase (pod and layer phases), per
//! repetition figures, pods ready over time, the registry's accounting and failures by kind,
//! each a [`Table`].
//!
//! Percentiles come from the stored histograms, merged over repetitions; nothing is re-sampled.

use std::time::Duration;

use super::human;
use super::table::{Align, Cell, Table};
use crate::result::{RegistryTotals, RunResult, SeriesResult, READY_FRACTIONS};
use crate::run::recorder::{LayerPhase, Phase, Summary};

/// Rows of the "ready % over time" table, at most.
const TIMELINE_ROWS: u64 = 10;

/// Percentiles of every pod phase and layer phase of a series, over all repetitions.
pub fn latency(s: &SeriesResult) -> Table {
    let mut t = Table::text_then_numbers(&["phase"], &["n", "p50", "p90", "p95", "p99", "max"]);
    let rows = Phase::ALL
        .iter()
        .map(|p| (p.name().to_owned(), s.data.merged(*p)))
        .chain(LayerPhase::ALL.iter().map(|p| {
            let what = if *p == LayerPhase::FirstByte {
                "blob"
            } else {
                "layer"
            };
            (format!("{what} {}", p.name()), s.data.merged_layer(*p))
        }));
    for (name, h) in rows {
        let sum = Summary::of(&h);
        let cell = |us| Cell::from(human::us_if(sum.count, us));
        t.row([
            name.into(),
            sum.count.to_string().into(),
            cell(sum.p50_us),
            cell(sum.p90_us),
            cell(sum.p95_us),
            cell(sum.p99_us),
            cell(sum.max_us),
        ]);
    }
    t
}

/// Per repetition of a series: ready and failed pods, end-to-end percentiles, pull p95.
pub fn repetitions(s: &SeriesResult) -> Table {
    let mut t = Table::text_then_numbers(
        &[],
        &[
            "repetition",
            "ready",
            "failed",
            "end-to-end p50",
            "end-to-end p95",
            "end-to-end p99",
            "pull p95",
        ],
    );
    for (rep, data) in s.data.repetitions() {
        let e2e = Summary::of(data.phase(Phase::EndToEnd));
        let pull = Summary::of(data.phase(Phase::Pull));
        t.row([
            rep.to_string().into(),
            data.ready_pods().to_string().into(),
            data.failed_pods().to_string().into(),
            human::us_if(e2e.count, e2e.p50_us).into(),
            human::us_if(e2e.count, e2e.p95_us).into(),
            human::us_if(e2e.count, e2e.p99_us).into(),
            human::us_if(pull.count, pull.p95_us).into(),
        ]);
    }
    t
}

/// Per repetition of a series: when 50, 95, 100 % of its pods were ready.
pub fn ready_times(s: &SeriesResult) -> Table {
    let mut t = Table::text_then_numbers(
        &[],
        &["repetition", "50 % ready", "95 % ready", "100 % ready"],
    );
    for (rep, data) in s.data.repetitions() {
        let timeline = data.timeline(s.pods_per_repetition);
        let [a, b, c] = READY_FRACTIONS.map(|f| {
            timeline
                .time_to(f)
                .map_or_else(|| "never".to_owned(), human::duration)
        });
        t.row([rep.to_string().into(), a.into(), b.into(), c.into()]);
    }
    t
}

/// Percentage of a series' pods ready at round times since the epoch, one column per
/// repetition; `None` when no pod became ready.
pub fn ready_over_time(s: &SeriesResult) -> Option<Table> {
    let last_us = s
        .data
        .repetitions()
        .filter_map(|(_, d)| d.ready_offsets_us().last().copied())
        .max()
        .unwrap_or(0);
    if last_us == 0 {
        return None;
    }
    let step_us = nice_step(last_us.div_ceil(TIMELINE_ROWS));
    let reps: Vec<_> = s.data.repetitions().collect();
    let names: Vec<String> = reps.iter().map(|(r, _)| format!("rep {r}")).collect();
    let mut columns = vec!["since epoch"];
    columns.extend(names.iter().map(String::as_str));
    let mut t = Table::text_then_numbers(&[], &columns);
    let mut at = step_us;
    loop {
        let mut row = vec![Cell::from(human::us(at))];
        for (_, d) in &reps {
            let f = d
                .timeline(s.pods_per_repetition)
                .fraction_at(Duration::from_micros(at));
            row.push(human::percent(f).into());
        }
        t.row(row);
        if at >= last_us {
            break;
        }
        at += step_us;
    }
    Some(t)
}

/// The smallest of 1, 2, 5 x 10^k microseconds (at least 1 ms) that is >= `us`.
fn nice_step(us: u64) -> u64 {
    let mut base = 1_000;
    loop {
        for m in [1, 2, 5] {
            if base * m >= us {
                return base * m;
            }
        }
        base *= 10;
    }
}

/// Registry accounting per repetition of a series, or `None` when none was recorded.
pub fn registry(r: &RunResult, s: &SeriesResult) -> Option<Table> {
    if s.registry.is_empty() {
        return None;
    }
    let image_bytes = r.pod_image_bytes(&s.variant);
    let mut t = Table::new(&[
        ("repetition", Align::Right),
        ("egress", Align::Right),
        ("egress / image size", Align::Right),
        ("requests", Align::Left),
        ("blob GETs per blob", Align::Left),
    ]);
    for (rep, totals) in &s.registry {
        let ratio = image_bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.2} x", totals.bytes_out as f64 / b as f64),
        );
        t.row([
            rep.to_string().into(),
            human::bytes(totals.bytes_out).into(),
            ratio.into(),
            requests_line(totals).into(),
            blob_gets_line(totals.blob_gets.values().copied().collect()).into(),
        ]);
    }
    Some(t)
}

/// `28 (blob_get 20, manifest_get 8)`: the total, then the non-zero kinds.
fn requests_line(totals: &RegistryTotals) -> String {
    let kinds: Vec<String> = totals
        .requests
        .iter()
        .filter(|(k, n)| **n > 0 && k.as_str() != "total")
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let total = totals.total_requests();
    if kinds.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", kinds.join(", "))
    }
}

fn blob_gets_line(mut gets: Vec<u64>) -> String {
    if gets.is_empty() {
        return "-".to_owned();
    }
    gets.sort_unstable();
    let (min, max) = (gets[0], gets[gets.len() - 1]);
    let median = gets[(gets.len() - 1) / 2];
    let blobs = human::count(gets.len() as u64, "blob");
    if min == max {
        format!("{blobs} x {min}")
    } else {
        format!("{blobs}, {min} to {max} (median {median})")
    }
}

/// Failed pods of a series by kind, or `None` when every pod became ready.
pub fn failures(s: &SeriesResult) -> Option<Table> {
    let failures = s.data.failures();
    if failures.is_empty() {
        return None;
    }
    let mut t = Table::text_then_numbers(&["kind"], &["pods"]);
    for (kind, n) in failures {
        t.row([kind.name().into(), n.to_string().into()]);
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_steps_are_round() {
        let cases = [
            (1, 1_000),
            (1_001, 2_000),
            (2_500, 5_000),
            (120_000, 200_000),
            (5_000_000, 5_000_000),
        ];
        for (us, want) in cases {
            assert_eq!(nice_step(us), want, "{us}");
        }
    }

    #[test]
    fn blob_gets_summarised() {
        assert_eq!(blob_gets_line(vec![]), "-");
        assert_eq!(blob_gets_line(vec![4, 4, 4]), "3 blobs x 4");
        assert_eq!(
            blob_gets_line(vec![1, 8, 4, 4]),
            "4 blobs, 1 to 8 (median 4)"
        );
    }

    #[test]
    fn requests_show_total_then_non_zero_kinds() {
        let m = |pairs: &[(&str, u64)]| RegistryTotals {
            requests: pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect(),
            ..RegistryTotals::default()
        };
        assert_eq!(
            requests_line(&m(&[
                ("total", 28),
                ("blob_get", 20),
                ("manifest_get", 8),
                ("ping", 0)
            ])),
            "28 (blob_get 20, manifest_get 8)"
        );
        assert_eq!(
            requests_line(&m(&[("blob", 8), ("manifest", 8)])),
            "16 (blob 8, manifest 8)"
        );
        assert_eq!(requests_line(&m(&[])), "0");
    }
}
