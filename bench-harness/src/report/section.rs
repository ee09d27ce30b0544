//! The run report's summary, SLO, capacity and side-by-side tables and the sentences that say
//! how to read them, as format-neutral [`Table`]s and strings; `run.rs` places them in the
//! document, so both formats show the same numbers, each with its unit.
//!
//! Percentiles come from the stored histograms, SLO outcomes from
//! [`RunResult::evaluate_slo`], capacity answers from [`Capacity`]; nothing is re-sampled.
//! The header's facts are in `facts.rs`, each series' details in `series.rs`.

use std::time::Duration;

use super::capacity::{Capacity, Egress, ReadyTimes, Traffic, WaveCapacity};
use super::human;
use super::side_by_side::{ratio, TargetRow, VariantRows, WaveRow};
use super::table::{Align, Cell, Emphasis, Table};
use crate::result::{RunResult, SeriesResult, SloCheck};
use crate::run::recorder::{Phase, Summary};

/// Pods ready of scheduled, over all repetitions of a series (`15/16`).
pub fn ready_fraction(s: &SeriesResult) -> String {
    let ready: u64 = s.data.repetitions().map(|(_, r)| r.ready_pods()).sum();
    format!("{ready}/{}", scheduled_pods(s))
}

pub(super) fn scheduled_pods(s: &SeriesResult) -> u64 {
    s.data
        .repetitions()
        .map(|(_, r)| r.timeline(s.pods_per_repetition).pods())
        .sum()
}

/// One row per (variant, target): pods ready, end-to-end p50 and p95, pull p95, failures.
pub fn summary(r: &RunResult) -> Table {
    let mut t = Table::text_then_numbers(
        &["variant", "target"],
        &[
            "ready",
            "end-to-end p50",
            "end-to-end p95",
            "pull p95",
            "failures",
        ],
    );
    for s in &r.series {
        let e2e = Summary::of(&s.data.merged(Phase::EndToEnd));
        let pull = Summary::of(&s.data.merged(Phase::Pull));
        let failed = s.data.failed_pods();
        t.row([
            s.variant.as_str().into(),
            s.target.as_str().into(),
            ready_fraction(s).into(),
            human::us_if(e2e.count, e2e.p50_us).into(),
            human::us_if(e2e.count, e2e.p95_us).into(),
            human::us_if(pull.count, pull.p95_us).into(),
            if failed > 0 {
                Cell::with(failed.to_string(), Emphasis::Fail)
            } else {
                Cell::from("0")
            },
        ]);
    }
    t
}

/// SLO outcomes per (variant, target), or `None` when the scenario sets no SLO.
pub fn slo(r: &RunResult) -> Option<Table> {
    if r.slo.is_empty() {
        return None;
    }
    let mut t = Table::new(&[
        ("objective", Align::Left),
        ("variant", Align::Left),
        ("target", Align::Left),
        ("limit", Align::Right),
        ("observed", Align::Right),
        ("result", Align::Left),
    ]);
    for o in &r.slo {
        let (name, limit, observed) = slo_parts(&o.check);
        t.row([
            name.into(),
            o.variant.as_str().into(),
            o.target.as_str().into(),
            limit.into(),
            observed.into(),
            if o.pass {
                Cell::with("pass", Emphasis::Pass)
            } else {
                Cell::with("FAIL", Emphasis::Fail)
            },
        ]);
    }
    Some(t)
}

/// An objective's name, limit and observation as the reader sees them.
fn slo_parts(check: &SloCheck) -> (&'static str, String, String) {
    let not_reached = || "not reached (failures)".to_owned();
    match check {
        SloCheck::P95Ready { limit, observed } => (
            "p95 ready",
            human::duration(*limit),
            observed.map_or_else(not_reached, human::duration),
        ),
        SloCheck::P99Pull { limit, observed } => (
            "p99 pull",
            human::duration(*limit),
            observed.map_or_else(not_reached, human::duration),
        ),
        SloCheck::MaxRegistryEgress {
            limit_bytes,
            observed_bytes,
        } => (
            "max registry egress",
            human::bytes(*limit_bytes),
            human::bytes(*observed_bytes),
        ),
    }
}

/// One line per missed SLO: `p95 ready of full/direct: 6.20 s, limit 5.00 s`.
pub fn slo_misses(r: &RunResult) -> Vec<String> {
    r.slo
        .iter()
        .filter(|o| !o.pass)
        .map(|o| {
            let (name, limit, observed) = slo_parts(&o.check);
            format!(
                "{name} of {}/{}: {observed}, limit {limit}",
                o.variant, o.target
            )
        })
        .collect()
}

/// How the summary's percentiles are taken, and why `compare` shows other p50s for the same
/// run.
pub fn summary_how() -> &'static str {
    "Percentiles here (and in the per-series latency tables) are over every pod of every repetition pooled, from the merged histograms. bench-harness compare takes each repetition's own percentile instead and averages them (it needs one observation per repetition for its intervals), so its p50 of the same run differs from this one whenever repetitions differ; each repetition's own figures are in the series' per-repetition table."
}

/// "N of M passed."
pub fn slo_line(r: &RunResult) -> String {
    let passed = r.slo.iter().filter(|o| o.pass).count();
    format!("{passed} of {} passed.", r.slo.len())
}

fn per_wave(c: &Capacity) -> bool {
    c.series.iter().any(|s| !s.waves.is_empty())
}

/// A table of `text` columns and, when `waves`, a `wave` column, then `numbers` columns.
fn with_waves(text: &[&str], waves: bool, numbers: &[&str]) -> Table {
    let mut text = text.to_vec();
    if waves {
        text.push("wave");
    }
    Table::text_then_numbers(&text, numbers)
}

/// The wave cell of a whole-burst row in a per-wave table.
fn whole_burst() -> String {
    "all (from the epoch)".to_owned()
}

/// `1 at 0 ms`: a wave's number (from 1) and start.
fn wave_at(wave: u32, at: Duration) -> String {
    format!("{} at {}", wave + 1, human::duration(at))
}

/// How the capacity tables read: time to ready, egress (with the peak window), savings.
pub fn capacity_how(c: &Capacity) -> [String; 3] {
    let window = peak_window(c).map_or_else(
        || "no time series recorded".to_owned(),
        |w| format!("averaged over {} windows", human::duration(w)),
    );
    if per_wave(c) {
        [
            "Per arrival wave: from the wave's start until that share of the wave's pods was ready; median over repetitions, worst repetition in brackets. Failed pods never count as ready.".to_owned(),
            format!("Per arrival wave: bytes the registry sent from the wave's start until the next wave's (mean per repetition, max in brackets), per pod of the wave and in copies of the compressed image. Peak bandwidth and requests are {window}; mean bandwidth is over the wave's start to its last byte."),
            "Per arrival wave, direct \u{2192} through the target, same variant: the wave's registry egress (mean per repetition) and its times to ready from the wave's start (median over repetitions).".to_owned(),
        ]
    } else {
        [
            "From the burst epoch until that share of the scheduled pods was ready; median over repetitions, worst repetition in brackets. Failed pods never count as ready.".to_owned(),
            format!("Bytes the registry sent per repetition (mean, max in brackets), per scheduled pod and in copies of the compressed image. Peak bandwidth and requests are {window}; mean bandwidth is over the epoch to the last byte."),
            "Direct \u{2192} through the target, same variant; registry egress is the mean per repetition, times the median over repetitions.".to_owned(),
        ]
    }
}

/// Time to 50 / 95 / 100 % ready per (variant, target), per wave when the scenario has waves:
/// median over repetitions, and the worst repetition when there are several.
pub fn time_to_ready(c: &Capacity) -> Table {
    let t = with_waves(
        &["variant", "target"],
        per_wave(c),
        &["50 % ready", "95 % ready", "100 % ready"],
    );
    capacity_rows(c, t, |ready, _| ready.iter().map(ready_cell).collect())
}

/// `t` with one row per series of `c` (per wave when `c` is per wave): variant, target, wave,
/// then `cells` of the series' (or wave's) times to ready and egress.
fn capacity_rows(
    c: &Capacity,
    mut t: Table,
    cells: impl Fn(&[ReadyTimes; 3], Option<&Egress>) -> Vec<Cell>,
) -> Table {
    for s in &c.series {
        // A series without wave records (a result written before they were) keeps its
        // whole-burst row among per-wave ones.
        let rows: Vec<(Option<String>, &[ReadyTimes; 3], Option<&Egress>)> = if s.waves.is_empty() {
            let wave = per_wave(c).then(whole_burst);
            vec![(wave, &s.time_to_ready, s.egress.as_ref())]
        } else {
            let at = |w: &WaveCapacity| Some(wave_at(w.wave, w.at));
            s.waves
                .iter()
                .map(|w| (at(w), &w.time_to_ready, w.egress.as_ref()))
                .collect()
        };
        for (wave, ready, egress) in rows {
            let mut row = vec![s.variant.as_str().into(), s.target.as_str().into()];
            row.extend(wave.map(Cell::from));
            row.extend(cells(ready, egress));
            t.row(row);
        }
    }
    t
}

fn ready_cell(t: &ReadyTimes) -> Cell {
    let n = t.per_repetition.len();
    let never = format!("{} of {}", t.never(), human::count(n as u64, "repetition"));
    match (t.median(), t.worst()) {
        (Some(median), Some(worst)) if n > 1 && worst != median => {
            let (median, worst) = (human::duration(median), human::duration(worst));
            format!("{median} (worst {worst})").into()
        }
        (Some(median), Some(_)) => human::duration(median).into(),
        (Some(median), None) => {
            let median = human::duration(median);
            Cell::with(format!("{median} (never in {never})"), Emphasis::Fail)
        }
        (None, _) => Cell::with(format!("never (in {never})"), Emphasis::Fail),
    }
}

/// Registry egress per (variant, target), per wave when the scenario has waves: per
/// repetition, per pod, in image copies, and the bandwidth and request rate it took.
pub fn egress(c: &Capacity) -> Table {
    let egress_column = if per_wave(c) {
        "egress per wave"
    } else {
        "egress per repetition"
    };
    let t = with_waves(
        &["variant", "target"],
        per_wave(c),
        &[
            egress_column,
            "per pod",
            "image copies",
            "peak bandwidth",
            "mean bandwidth",
            "peak requests",
            "throttled",
        ],
    );
    capacity_rows(c, t, |_, egress| egress_cells(egress))
}

/// The egress columns of one row; "not recorded" alone without egress.
fn egress_cells(e: Option<&Egress>) -> Vec<Cell> {
    let Some(e) = e else {
        return vec!["not recorded".into()];
    };
    let (mean, max) = (
        human::bytes(e.mean_bytes().round() as u64),
        human::bytes(e.max_bytes()),
    );
    let per_rep = if mean == max {
        max
    } else {
        format!("{mean} (max {max})")
    };
    let dash = || "-".to_owned();
    let traffic = |f: fn(&Traffic) -> String| Cell::from(e.traffic.as_ref().map_or_else(dash, f));
    vec![
        per_rep.into(),
        human::bytes(e.per_pod_bytes().round() as u64).into(),
        e.image_copies()
            .map_or_else(dash, |x| format!("{x:.2} x"))
            .into(),
        traffic(|t| human::bandwidth(t.peak_bytes_per_sec)),
        traffic(|t| human::bandwidth(t.mean_bytes_per_sec)),
        traffic(|t| human::requests_per_second(t.peak_requests_per_sec)),
        traffic(|t| t.throttled.to_string()),
    ]
}

/// The window peaks are averaged over, if any series recorded a time series.
pub fn peak_window(c: &Capacity) -> Option<Duration> {
    c.series
        .iter()
        .filter_map(|s| s.egress.as_ref()?.traffic.map(|t| t.bucket))
        .max()
}

/// What each cache or mirror target saves against direct pulls of the same variant, or `None`
/// when no variant ran both direct and through another target.
pub fn savings(c: &Capacity) -> Option<Table> {
    if c.savings.is_empty() {
        return None;
    }
    let waves = c.savings.iter().any(|s| s.wave.is_some());
    let mut t = with_waves(
        &["variant", "target"],
        waves,
        &[
            "registry egress",
            "time to 95 % ready",
            "time to 100 % ready",
        ],
    );
    for s in &c.savings {
        let bytes = |b: f64| human::bytes(b.round() as u64);
        let egress = s.egress_bytes.map_or_else(
            || "-".to_owned(),
            |(d, o)| change(bytes(d), bytes(o), Some((d, o))),
        );
        let time = |i: usize| {
            let (d, o) = s.time_to_ready[i];
            let show = |t: Option<Duration>| t.map_or_else(|| "never".to_owned(), human::duration);
            let secs = d.zip(o).map(|(d, o)| (d.as_secs_f64(), o.as_secs_f64()));
            change(show(d), show(o), secs)
        };
        let mut cells = vec![
            s.variant.as_str().into(),
            format!("{} vs {}", s.target, s.direct).into(),
        ];
        let wave = s.wave.map_or_else(whole_burst, |(w, at)| wave_at(w, at));
        cells.extend(waves.then(|| wave.into()));
        cells.extend([egress.into(), time(1).into(), time(2).into()]);
        t.row(cells);
    }
    Some(t)
}

/// `from → to`, with the relative change of `values` when they are known and the first is
/// positive.
fn change(from: String, to: String, values: Option<(f64, f64)>) -> String {
    match values {
        Some((a, b)) if a > 0.0 => {
            let change = human::signed_percent((b - a) / a);
            format!("{from} \u{2192} {to} ({change})")
        }
        _ => format!("{from} \u{2192} {to}"),
    }
}

/// How the side-by-side tables read: one paragraph per table kind.
pub fn side_by_side_how() -> [String; 3] {
    [
        "Pulls: pull and TTFB are per pod, from its node's pull start (TTFB: to the first byte of the first blob), every repetition merged. First-byte lag is, for every blob (config and layers) and every node of the wave that fetched it, how long after that blob's first bytes reached the first of them this node got its own (or after its own request, if it asked later); the column shows the longest: a cache that streams one upstream fetch to every waiter keeps it near zero, one that holds waiters until its fill is complete makes it the leader's whole download. All ready after is from the wave's start until its last pod was ready. Lag and all-ready are medians over repetitions. A real client (skopeo, ctr) reports neither first bytes nor per-layer times: those read \"not observed\".".to_owned(),
        "Registry, per burst: the registry's own counts for the whole burst (every wave), medians over repetitions: blob GETs per blob (mean, then smallest to largest over every blob and repetition), bytes it sent in copies of the compressed image, requests it answered, with a shaped link the bytes the kernel's tbf qdisc carried (in image copies), and the time from the epoch until every pod of the burst was ready.".to_owned(),
        "Against cache-daemon: each target's figure divided by cache-daemon's for the same wave; above 1.00 x it is slower, or lags first bytes more.".to_owned(),
    ]
}

fn never_or(d: Option<Duration>) -> Cell {
    match d {
        Some(d) => human::duration(d).into(),
        None => Cell::with("never", Emphasis::Fail),
    }
}

fn observed(count: u64, us: u64) -> Cell {
    if count == 0 {
        Cell::from("not observed")
    } else {
        human::us(us).into()
    }
}

/// One row per target (and wave, when `waves`): pull and TTFB p50 / p95 / p99, the longest
/// first-byte lag, time until the wave's pods were all ready.
pub fn side_by_side(v: &VariantRows, waves: bool) -> Table {
    let mut t = with_waves(
        &["target"],
        waves,
        &[
            "pull p50",
            "pull p95",
            "pull p99",
            "TTFB p50",
            "TTFB p95",
            "TTFB p99",
            "first-byte lag",
            "all ready after",
        ],
    );
    for row in &v.targets {
        for w in &row.waves {
            let mut cells = vec![Cell::from(row.target.as_str())];
            cells.extend(waves.then(|| wave_at(w.wave, w.at).into()));
            cells.extend([
                human::us_if(w.pull.count, w.pull.p50_us).into(),
                human::us_if(w.pull.count, w.pull.p95_us).into(),
                human::us_if(w.pull.count, w.pull.p99_us).into(),
                observed(w.ttfb.count, w.ttfb.p50_us),
                observed(w.ttfb.count, w.ttfb.p95_us),
                observed(w.ttfb.count, w.ttfb.p99_us),
                w.first_byte_lag
                    .map_or_else(|| Cell::from("not observed"), |d| human::duration(d).into()),
                never_or(w.all_ready),
            ]);
            t.row(cells);
        }
    }
    t
}

/// One row per target: the registry's own counts per burst, the bytes against the baseline's
/// (cache-daemon), and when every pod of the burst was ready.
pub fn side_by_side_upstream(v: &VariantRows) -> Table {
    let vs = v.baseline.as_deref().unwrap_or("cache-daemon");
    let bytes_vs = format!("bytes vs {vs}");
    let mut t = Table::new(&[
        ("target", Align::Left),
        ("upstream GETs per blob", Align::Right),
        ("upstream bytes / image", Align::Right),
        ("upstream requests", Align::Right),
        ("shaped link bytes / image", Align::Right),
        (bytes_vs.as_str(), Align::Right),
        ("all pods ready", Align::Right),
    ]);
    let base = v
        .baseline
        .as_deref()
        .and_then(|b| v.targets.iter().find(|r| r.target == b));
    let dash = || Cell::from("-");
    for row in &v.targets {
        let (gets, copies, requests, link) = match &row.upstream {
            None => (Cell::from("not recorded"), dash(), dash(), dash()),
            Some(u) => {
                let (mean, min, max) = u.gets_per_blob;
                let gets = if min == max {
                    format!("{min}")
                } else {
                    format!("{mean:.2} ({min} to {max})")
                };
                let requests = u.requests.to_string().into();
                let link = ratio_cell(u.link_image_copies);
                (gets.into(), ratio_cell(u.image_copies), requests, link)
            }
        };
        let bytes = |r: &TargetRow| r.upstream.as_ref().map(|u| u.bytes as f64);
        let bytes_vs = match base {
            Some(b) if b.target != row.target => ratio_cell(ratio(bytes(row), bytes(b))),
            _ => dash(),
        };
        t.row([
            row.target.as_str().into(),
            gets,
            copies,
            requests,
            link,
            bytes_vs,
            never_or(row.all_ready),
        ]);
    }
    t
}

fn ratio_cell(r: Option<f64>) -> Cell {
    r.map_or_else(|| Cell::from("-"), |r| format!("{r:.2} x").into())
}

/// Each target's figures divided by the baseline's (cache-daemon) for the same wave: above
/// 1.00 x it is slower (or lags first bytes more) than our cache. `None` without a baseline
/// or another target.
pub fn side_by_side_ratios(v: &VariantRows, waves: bool) -> Option<Table> {
    let base = v
        .targets
        .iter()
        .find(|r| Some(&r.target) == v.baseline.as_ref())?;
    let others: Vec<&TargetRow> = v
        .targets
        .iter()
        .filter(|r| r.target != base.target)
        .collect();
    if others.is_empty() {
        return None;
    }
    let mut t = with_waves(
        &["target"],
        waves,
        &[
            "pull p50",
            "pull p95",
            "pull p99",
            "TTFB p50",
            "TTFB p95",
            "first-byte lag",
            "all ready after",
        ],
    );
    let us = |count: u64, v: u64| (count > 0).then_some(v as f64);
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    for row in others {
        for w in &row.waves {
            let Some(b) = base.waves.iter().find(|b| b.wave == w.wave) else {
                continue;
            };
            let mut cells = vec![Cell::from(row.target.as_str())];
            cells.extend(waves.then(|| wave_at(w.wave, w.at).into()));
            // Each figure of this wave's row against the baseline's: p50, p95, p99 of pull,
            // p50, p95 of TTFB (microseconds), then lag and all-ready (seconds).
            let figures = |x: &WaveRow| {
                let (p, t) = (&x.pull, &x.ttfb);
                [
                    us(p.count, p.p50_us),
                    us(p.count, p.p95_us),
                    us(p.count, p.p99_us),
                    us(t.count, t.p50_us),
                    us(t.count, t.p95_us),
                    secs(x.first_byte_lag),
                    secs(x.all_ready),
                ]
            };
            let ratios = figures(w).into_iter().zip(figures(b));
            cells.extend(ratios.map(|(a, b)| ratio_cell(ratio(a, b))));
            t.row(cells);
        }
    }
    Some(t)
}
